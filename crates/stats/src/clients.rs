//! Live clients, for `SHOW CLIENTS`, `SHOW POOLS` (cl_* columns and maxwait) and `KILL`. A client is registered
//! once it has logged in and removed when its [`ClientHandle`] drops; the registry's lock is taken only then and
//! when an operator lists clients. Each client updates its own atomics.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::sync::watch;

use super::now_us;

/// What a client is doing, as `SHOW CLIENTS` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum ClientState {
    /// Logged in, no server held.
    Idle = 0,
    /// Holding a server.
    Active = 1,
    /// Waiting for a server.
    Waiting = 2,
}

impl ClientState {
    pub fn as_str(self) -> &'static str {
        match self {
            ClientState::Idle => "idle",
            ClientState::Active => "active",
            ClientState::Waiting => "waiting",
        }
    }
}

/// What the proxy wants a session to do: go on, end once it holds no server (shutdown), or end now (`KILL`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    Run,
    Drain,
    Kill,
    /// `client_idle_timeout`: idle with no server for too long.
    IdleTimeout,
    /// `idle_client_in_transaction_timeout`: idle inside a transaction for too long.
    IdleInTransaction,
}

/// One client's identity and counters.
#[derive(Debug)]
pub struct ClientInfo {
    pub id: u64,
    pub database: String,
    pub user: String,
    pub application_name: String,
    pub peer: Option<SocketAddr>,
    pub connected: Instant,
    state: AtomicU8,
    pub xact_count: AtomicU64,
    pub query_count: AtomicU64,
    pub error_count: AtomicU64,
    /// When the current wait for a server began ([`now_us`]), 0 when not waiting.
    wait_since: AtomicU64,
    /// The longest wait so far, in microseconds.
    pub max_wait_us: AtomicU64,
    /// Shutdown and `KILL` reach the session through this one channel, so its loop waits on a single signal.
    stop: watch::Sender<Stop>,
    /// When the client last sent something ([`now_us`]), for the idle timeouts.
    pub last_active: AtomicU64,
    /// When the request the server is answering was sent ([`now_us`]), 0 when none: `statement_timeout`.
    pub request_since: AtomicU64,
    /// Whether the client's server session is inside a transaction block.
    pub in_transaction: std::sync::atomic::AtomicBool,
    /// The client's BackendKeyData, to cancel its query at `statement_timeout`.
    pub cancel_key: std::sync::OnceLock<(i32, i32)>,
    /// The user's `statement_timeout` in milliseconds (0: none).
    pub statement_timeout_ms: AtomicU64,
}

impl ClientInfo {
    pub fn state(&self) -> ClientState {
        match self.state.load(Ordering::Relaxed) {
            1 => ClientState::Active,
            2 => ClientState::Waiting,
            _ => ClientState::Idle,
        }
    }

    #[inline]
    pub fn set_state(&self, s: ClientState) {
        self.state.store(s as u8, Ordering::Relaxed);
    }

    /// The client starts waiting for a server.
    pub fn wait_begins(&self) {
        self.wait_since.store(now_us(), Ordering::Relaxed);
        self.set_state(ClientState::Waiting);
    }

    /// The wait is over (a server was attached, or the checkout failed); returns how long it lasted.
    pub fn wait_ends(&self, attached: bool) -> u64 {
        let since = self.wait_since.swap(0, Ordering::Relaxed);
        let waited = if since == 0 {
            0
        } else {
            now_us().saturating_sub(since)
        };
        self.max_wait_us.fetch_max(waited, Ordering::Relaxed);
        self.set_state(if attached {
            ClientState::Active
        } else {
            ClientState::Idle
        });
        waited
    }

    /// The session's end of the stop signal.
    pub fn stop_signal(&self) -> watch::Receiver<Stop> {
        self.stop.subscribe()
    }

    /// Shutdown: the session ends once it holds no server.
    pub fn drain(&self) {
        self.stop.send_if_modified(|s| {
            let run = *s == Stop::Run;
            if run {
                *s = Stop::Drain;
            }
            run
        });
    }

    /// `KILL`: the session ends now.
    pub fn kill(&self) {
        self.stop.send_replace(Stop::Kill);
    }

    /// A timeout the session handled without ending (PgCat's idle transaction timeout): it runs on.
    pub fn clear_timeout(&self, why: Stop) {
        self.stop.send_if_modified(|s| {
            let was = *s == why;
            if was {
                *s = Stop::Run;
            }
            was
        });
    }

    /// An idle timeout: the session ends now, saying why.
    pub fn time_out(&self, why: Stop) {
        self.stop.send_if_modified(|s| {
            let running = matches!(*s, Stop::Run | Stop::Drain);
            if running {
                *s = why;
            }
            running
        });
    }

    /// How long the client has been waiting now, in microseconds (0 when it is not).
    pub fn waiting_us(&self) -> u64 {
        match self.wait_since.load(Ordering::Relaxed) {
            0 => 0,
            since => now_us().saturating_sub(since),
        }
    }
}

/// Every logged-in client.
#[derive(Debug, Default)]
pub struct ClientRegistry {
    next: AtomicU64,
    clients: Mutex<HashMap<u64, Arc<ClientInfo>>>,
}

/// Keeps a client listed for as long as it lives.
#[derive(Debug)]
pub struct ClientHandle {
    pub info: Arc<ClientInfo>,
    registry: Arc<ClientRegistry>,
}

impl Drop for ClientHandle {
    fn drop(&mut self) {
        self.registry.lock().remove(&self.info.id);
    }
}

impl ClientRegistry {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<ClientInfo>>> {
        // Insert and remove only: a poisoned map is still consistent.
        self.clients.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn register(
        self: &Arc<Self>,
        database: &str,
        user: &str,
        application_name: &str,
        peer: Option<SocketAddr>,
    ) -> ClientHandle {
        let id = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        let info = Arc::new(ClientInfo {
            id,
            database: database.to_owned(),
            user: user.to_owned(),
            application_name: application_name.to_owned(),
            peer,
            connected: Instant::now(),
            state: AtomicU8::new(ClientState::Idle as u8),
            xact_count: AtomicU64::new(0),
            query_count: AtomicU64::new(0),
            error_count: AtomicU64::new(0),
            wait_since: AtomicU64::new(0),
            max_wait_us: AtomicU64::new(0),
            stop: watch::channel(Stop::Run).0,
            last_active: AtomicU64::new(now_us()),
            request_since: AtomicU64::new(0),
            in_transaction: Default::default(),
            cancel_key: Default::default(),
            statement_timeout_ms: AtomicU64::new(0),
        });
        self.lock().insert(id, info.clone());
        ClientHandle {
            info,
            registry: self.clone(),
        }
    }

    /// The clients now, oldest first.
    pub fn list(&self) -> Vec<Arc<ClientInfo>> {
        let mut v: Vec<_> = self.lock().values().cloned().collect();
        v.sort_by_key(|c| c.id);
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clients_are_listed_while_they_live() {
        let r = Arc::new(ClientRegistry::default());
        let a = r.register("db", "u", "app", None);
        let b = r.register("db", "v", "", None);
        assert_eq!(r.list().len(), 2);
        a.info.wait_begins();
        assert_eq!(a.info.state(), ClientState::Waiting);
        a.info.wait_ends(true);
        assert_eq!(a.info.state(), ClientState::Active);
        drop(a);
        let left = r.list();
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].id, b.info.id);
    }
}
