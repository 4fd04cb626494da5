//! Server connections as `SHOW SERVERS` lists them. Each connection owns a [`ConnInfo`] it updates with relaxed
//! atomics; its server pool keeps the list of open ones (changed only when a connection opens or closes).

use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::time::Instant;

/// What a server connection is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum ConnState {
    Idle = 0,
    /// Checked out by a client.
    Active = 1,
    /// Being cleaned (ROLLBACK, RESET ALL, ...) after a client gave it back: PgBouncer's "used".
    Used = 2,
    /// Running a health check.
    Tested = 3,
}

impl ConnState {
    pub fn as_str(self) -> &'static str {
        match self {
            ConnState::Idle => "idle",
            ConnState::Active => "active",
            ConnState::Used => "used",
            ConnState::Tested => "tested",
        }
    }
}

/// One server connection's identity and counters.
#[derive(Debug)]
pub struct ConnInfo {
    pub id: u64,
    pub created: Instant,
    state: AtomicU8,
    pub xact_count: AtomicU64,
    pub query_count: AtomicU64,
    pub bytes_sent: AtomicU64,
    pub bytes_received: AtomicU64,
    pub prepare_hits: AtomicU64,
    pub prepare_misses: AtomicU64,
    pub prepare_evictions: AtomicU64,
    pub prepare_size: AtomicU64,
    /// A duplicate of the server socket's descriptor, so that the health watcher can cut a connection stuck
    /// on a server that stopped answering (see [`ConnInfo::abort`]).
    pub socket: std::sync::OnceLock<std::net::TcpStream>,
}

impl Default for ConnInfo {
    fn default() -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        ConnInfo {
            id: NEXT.fetch_add(1, Ordering::Relaxed),
            created: Instant::now(),
            state: AtomicU8::new(ConnState::Idle as u8),
            xact_count: AtomicU64::new(0),
            query_count: AtomicU64::new(0),
            bytes_sent: AtomicU64::new(0),
            bytes_received: AtomicU64::new(0),
            prepare_hits: AtomicU64::new(0),
            prepare_misses: AtomicU64::new(0),
            prepare_evictions: AtomicU64::new(0),
            prepare_size: AtomicU64::new(0),
            socket: std::sync::OnceLock::new(),
        }
    }
}

impl ConnInfo {
    /// Shuts the server socket down in both directions: whoever is waiting on the connection reads end of file
    /// and handles it as a lost server (a read fails over, anything else fails), instead of waiting for a server
    /// that does not answer.
    pub fn abort(&self) {
        if let Some(s) = self.socket.get() {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
    }

    pub fn state(&self) -> ConnState {
        match self.state.load(Ordering::Relaxed) {
            1 => ConnState::Active,
            2 => ConnState::Used,
            3 => ConnState::Tested,
            _ => ConnState::Idle,
        }
    }

    #[inline]
    pub fn set_state(&self, s: ConnState) {
        self.state.store(s as u8, Ordering::Relaxed);
    }

    /// A request answered on this connection; `xact_ended` when it also ended a transaction.
    #[inline]
    pub fn request(&self, xact_ended: bool) {
        self.query_count.fetch_add(1, Ordering::Relaxed);
        if xact_ended {
            self.xact_count.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Publishes the connection's prepared statement cache figures (kept unsynchronised by their owner).
    pub fn publish_prepared(&self, hits: u64, misses: u64, evictions: u64, size: usize) {
        self.prepare_hits.store(hits, Ordering::Relaxed);
        self.prepare_misses.store(misses, Ordering::Relaxed);
        self.prepare_evictions.store(evictions, Ordering::Relaxed);
        self.prepare_size.store(size as u64, Ordering::Relaxed);
    }

    pub fn get(a: &AtomicU64) -> u64 {
        a.load(Ordering::Relaxed)
    }
}
