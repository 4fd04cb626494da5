//! A session's bookkeeping between messages: the counters `SHOW STATS`, `SHOW CLIENTS` and `SHOW SERVERS`
//! report, updated once per request, and moving to the user's pool of a reloaded config between transactions.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Instant;

use super::Session;
use crate::protocol::codes::txn;
use crate::stats::ClientInfo;

impl Session {
    /// Between transactions, moves to the user's pool of a reloaded config. A pool that was removed is kept until
    /// the client leaves; one whose pool mode or statement handling changed is kept too, since the client's
    /// session state was built for the old one (it reconnects to get the new).
    pub(super) fn follow_reload(&mut self) {
        let generation = self
            .shared
            .generation
            .load(std::sync::atomic::Ordering::Acquire);
        if generation == self.generation
            || !self.parked.is_empty()
            || self.pending_begin.is_some()
            || self.core.tracker.in_copy()
        {
            return;
        }
        self.generation = generation;
        let snapshot = self.shared.snapshot();
        let Some(new) = snapshot.cluster.get(&self.pool.database, &self.pool.user) else {
            return;
        };
        if Arc::ptr_eq(new, &self.pool) {
            return;
        }
        if new.settings.pool_mode != self.core.mode
            || (new.prepared_cache > 0) != self.core.stmts.is_some()
        {
            tracing::info!(pool = %new.database, user = %new.user, "the reloaded pool changed pool_mode or prepared statement handling: this client keeps the old pool until it reconnects");
            return;
        }
        self.pool = new.clone();
        self.analyzer.clear();
    }

    /// Counts a request answered with ReadyForQuery(`status`) for the client, the server pool and the connection.
    pub(super) fn count_request(
        client: &ClientInfo,
        pool: &crate::pool::ServerPool,
        conn: &crate::stats::ConnInfo,
        request_started: &mut Option<Instant>,
        xact_started: &mut Option<Instant>,
        status: u8,
    ) {
        let now = Instant::now();
        let us = |t: Option<Instant>| t.map_or(0, |t| now.duration_since(t).as_micros() as u64);
        pool.stats.query(us(request_started.take()));
        client.query_count.fetch_add(1, Relaxed);
        client.request_since.store(0, Relaxed);
        let ended = status == txn::IDLE;
        client.in_transaction.store(!ended, Relaxed);
        if ended {
            pool.stats.xact(us(xact_started.take()));
            client.xact_count.fetch_add(1, Relaxed);
        }
        conn.request(ended);
    }
}
