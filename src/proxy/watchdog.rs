//! Time limits on clients, enforced by one task that looks at every client's timestamps a few times a second
//! (the sessions only store them; nothing on the hot path waits on a timer):
//! - `client_idle_timeout`: a client holding no server and silent for longer is disconnected (57P05);
//! - `idle_client_in_transaction_timeout`: a client silent inside a transaction block is disconnected (25P03) and
//!   its transaction rolled back;
//! - `statement_timeout` (per user): a request the server has been answering for longer is cancelled on the server,
//!   which answers 57014.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use crate::shared::Shared;
use crate::stats::{now_us, ClientState, Stop};

/// How often the limits are checked.
const TICK: Duration = Duration::from_millis(100);

/// Starts the watchdog for as long as the proxy lives.
pub(crate) fn spawn(shared: &Arc<Shared>) {
    let weak = Arc::downgrade(shared);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Some(shared) = weak.upgrade() else { return };
            check(&shared).await;
        }
    });
}

async fn check(shared: &Shared) {
    let g = &shared.snapshot().config.general;
    let (idle, in_txn) = (g.client_idle_timeout, g.idle_client_in_transaction_timeout);
    let now = now_us();
    let older = |t: u64, ms: u64| ms > 0 && t > 0 && now.saturating_sub(t) > ms * 1000;
    for c in shared.clients.list() {
        let silent = c.last_active.load(Relaxed);
        let request = c.request_since.load(Relaxed);
        match c.state() {
            ClientState::Idle if older(silent, idle) => c.time_out(Stop::IdleTimeout),
            ClientState::Active
                if request == 0 && c.in_transaction.load(Relaxed) && older(silent, in_txn) =>
            {
                c.time_out(Stop::IdleInTransaction)
            }
            // Once per request: the next one starts a new clock.
            ClientState::Active
                if older(request, c.statement_timeout_ms.load(Relaxed))
                    && c.request_since
                        .compare_exchange(request, 0, Relaxed, Relaxed)
                        .is_ok() =>
            {
                if let Some(target) = c
                    .cancel_key
                    .get()
                    .and_then(|(pid, secret)| shared.cancels.lookup(*pid, *secret))
                {
                    tracing::info!(client = c.id, "statement_timeout: cancelling the request");
                    let _ = crate::shared::cancel::send_cancel(&target).await;
                }
            }
            _ => {}
        }
    }
}
