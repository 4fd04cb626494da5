//! `idle_client_in_transaction_timeout`, as PgCat enforces it: a client silent inside a transaction block for
//! longer has its transaction rolled back (on every shard it spans) and its server given back. The client stays
//! connected; its next request is answered with an ErrorResponse of class 58 ("idle transaction timeout", which
//! PgCat's clients see as `PG::SystemError`) instead of running, so no message reaches a client that did not ask,
//! and the request after that starts afresh.

use super::*;

impl Session {
    pub(super) async fn idle_in_transaction_timeout(&mut self) -> Result<(), ClientError> {
        self.info.clear_timeout(Stop::IdleInTransaction);
        // The client may have spoken since the watchdog looked.
        if self.server.is_none()
            || self.core.tracker.status() == txn::IDLE
            || self.core.tracker.pending_units() > 0
            || self.core.tracker.is_unsynced()
        {
            return Ok(());
        }
        tracing::warn!(pool = %self.pool.database, user = %self.pool.user, client = self.info.id, "idle in transaction for longer than idle_client_in_transaction_timeout: rolled back");
        self.rollback_all().await;
        self.core.tracker.set_status(txn::IDLE);
        self.info.in_transaction.store(false, Relaxed);
        self.xact_started = None;
        if let Some(fx) = self.core.effects.as_mut() {
            fx.rolled_back();
        }
        if self.core.mode == PoolMode::Transaction && self.core.pins.is_empty() {
            self.end_parts();
        } else {
            self.parked.clear();
        }
        self.txn_timed_out = true;
        Ok(())
    }

    /// Answers the client's first request after its transaction timed out.
    pub(super) async fn refuse_after_timeout(&mut self, piece: &Piece) -> Result<(), ClientError> {
        self.txn_timed_out = false;
        self.refuse_request(
            crate::protocol::codes::sqlstate::SYSTEM_ERROR,
            "idle transaction timeout: the transaction was idle for longer than idle_client_in_transaction_timeout and was rolled back",
            piece,
        )
        .await
    }
}
