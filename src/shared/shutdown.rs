//! Shutdown coordination. SIGINT or admin `SHUTDOWN` (through [`super::Proxy::shutdown`]) moves the proxy to
//! draining: new logins are refused, idle clients are told and disconnected, clients inside a transaction finish
//! it first; the process exits when every client is gone or `shutdown_timeout` has passed. SIGTERM exits at once
//! (handled by the binary).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::{watch, Notify};

/// Shared shutdown state.
#[derive(Debug)]
pub(crate) struct Shutdown {
    draining: watch::Sender<bool>,
    clients: AtomicUsize,
    all_gone: Notify,
    /// The admin `SHUTDOWN` command: the binary then shuts down as on SIGINT.
    requested: watch::Sender<bool>,
}

impl Default for Shutdown {
    fn default() -> Self {
        Shutdown {
            draining: watch::channel(false).0,
            clients: AtomicUsize::new(0),
            all_gone: Notify::new(),
            requested: watch::channel(false).0,
        }
    }
}

/// Counts a client for as long as it lives.
#[derive(Debug)]
pub(crate) struct ClientToken(Arc<Shutdown>);

impl Drop for ClientToken {
    fn drop(&mut self) {
        if self.0.clients.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.all_gone.notify_waiters();
        }
    }
}

impl Shutdown {
    pub(crate) fn begin(&self) {
        self.draining.send_replace(true);
    }

    /// Asks the process to shut down gracefully (admin `SHUTDOWN`).
    pub(crate) fn request(&self) {
        self.requested.send_replace(true);
    }

    /// Resolves once a shutdown was requested.
    pub(crate) async fn requested(&self) {
        let mut rx = self.requested.subscribe();
        let _ = rx.wait_for(|r| *r).await;
    }

    pub(crate) fn is_draining(&self) -> bool {
        *self.draining.borrow()
    }

    pub(crate) fn client_token(self: &Arc<Self>) -> ClientToken {
        self.clients.fetch_add(1, Ordering::AcqRel);
        ClientToken(self.clone())
    }

    pub(crate) fn client_count(&self) -> usize {
        self.clients.load(Ordering::Acquire)
    }

    /// Resolves when no client is left.
    pub(crate) async fn all_clients_gone(&self) {
        loop {
            let notified = self.all_gone.notified();
            if self.client_count() == 0 {
                return;
            }
            notified.await;
        }
    }
}
