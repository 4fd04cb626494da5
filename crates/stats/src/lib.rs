//! What the admin console (`SHOW STATS`, `SHOW CLIENTS`, `SHOW SERVERS`, ...) and the Prometheus exporter report:
//! traffic counters per server address, and a registry of live clients and server connections. Counting happens
//! on the hot path, so it is relaxed atomics owned by the thing counted (a server pool, a client, a connection);
//! nothing takes a lock per query. Averages are rolled by one background task every [`STATS_PERIOD`], as
//! PgBouncer does with `stats_period`.

#![deny(clippy::unwrap_used, clippy::todo, clippy::dbg_macro)]
#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod clients;
pub mod conns;
pub mod history;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

pub use clients::{ClientInfo, ClientRegistry, ClientState, Stop};
pub use conns::{ConnInfo, ConnState};

/// How often averages are recomputed (PgBouncer's default `stats_period` is 60 s; PgCat's is 15 s).
pub const STATS_PERIOD: Duration = Duration::from_secs(15);

/// Microseconds since the process-wide stats epoch, for lock-free "since when" fields.
pub fn now_us() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_micros() as u64 + 1
}

/// Traffic of one server address (one user's pool of connections to one server).
#[derive(Debug, Default)]
pub struct Counters {
    xact_count: AtomicU64,
    query_count: AtomicU64,
    bytes_received: AtomicU64,
    bytes_sent: AtomicU64,
    xact_time_us: AtomicU64,
    query_time_us: AtomicU64,
    wait_time_us: AtomicU64,
    errors: AtomicU64,
    /// Checkouts (clients assigned a server), to average wait times per assignment.
    waits: AtomicU64,
    /// The totals at the start of the last period and the averages computed then.
    rolled: Mutex<(Totals, Totals)>,
}

/// A snapshot of [`Counters`]. Also used for averages: counts and bytes per second, times per transaction,
/// query or wait, in microseconds (PgBouncer's definitions).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Totals {
    pub xact_count: u64,
    pub query_count: u64,
    pub bytes_received: u64,
    pub bytes_sent: u64,
    pub xact_time_us: u64,
    pub query_time_us: u64,
    pub wait_time_us: u64,
    pub errors: u64,
    pub(crate) waits: u64,
}

impl std::ops::AddAssign for Totals {
    fn add_assign(&mut self, o: Totals) {
        self.xact_count += o.xact_count;
        self.query_count += o.query_count;
        self.bytes_received += o.bytes_received;
        self.bytes_sent += o.bytes_sent;
        self.xact_time_us += o.xact_time_us;
        self.query_time_us += o.query_time_us;
        self.wait_time_us += o.wait_time_us;
        self.errors += o.errors;
        self.waits += o.waits;
    }
}

impl Counters {
    /// A request answered (a ReadyForQuery) after `us` microseconds.
    #[inline]
    pub fn query(&self, us: u64) {
        self.query_count.fetch_add(1, Ordering::Relaxed);
        self.query_time_us.fetch_add(us, Ordering::Relaxed);
    }

    /// A transaction ended after `us` microseconds.
    #[inline]
    pub fn xact(&self, us: u64) {
        self.xact_count.fetch_add(1, Ordering::Relaxed);
        self.xact_time_us.fetch_add(us, Ordering::Relaxed);
    }

    /// A client waited `us` microseconds for a connection of this server.
    #[inline]
    pub fn wait(&self, us: u64) {
        self.waits.fetch_add(1, Ordering::Relaxed);
        self.wait_time_us.fetch_add(us, Ordering::Relaxed);
    }

    /// Bytes Ocelot sent to the server.
    #[inline]
    pub fn sent(&self, n: usize) {
        self.bytes_sent.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// Bytes the server sent to Ocelot.
    #[inline]
    pub fn received(&self, n: usize) {
        self.bytes_received.fetch_add(n as u64, Ordering::Relaxed);
    }

    #[inline]
    pub fn error(&self) {
        self.errors.fetch_add(1, Ordering::Relaxed);
    }

    pub fn totals(&self) -> Totals {
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        Totals {
            xact_count: l(&self.xact_count),
            query_count: l(&self.query_count),
            bytes_received: l(&self.bytes_received),
            bytes_sent: l(&self.bytes_sent),
            xact_time_us: l(&self.xact_time_us),
            query_time_us: l(&self.query_time_us),
            wait_time_us: l(&self.wait_time_us),
            errors: l(&self.errors),
            waits: l(&self.waits),
        }
    }

    /// The averages of the last completed period.
    pub fn averages(&self) -> Totals {
        self.rolled.lock().unwrap_or_else(|p| p.into_inner()).1
    }

    /// Closes a period of `period` length: the averages become those of the traffic since the last roll.
    pub fn roll(&self, period: Duration) {
        let now = self.totals();
        let mut rolled = self.rolled.lock().unwrap_or_else(|p| p.into_inner());
        let prev = rolled.0;
        rolled.1 = averages(&prev, &now, period);
        rolled.0 = now;
    }
}

/// PgBouncer's averages between two snapshots: rates per second, and mean durations per event.
pub fn averages(prev: &Totals, now: &Totals, period: Duration) -> Totals {
    let secs = period.as_secs_f64().max(0.001);
    let d = |a: u64, b: u64| b.saturating_sub(a);
    let rate = |a: u64, b: u64| (d(a, b) as f64 / secs).round() as u64;
    let mean = |t0: u64, t1: u64, n0: u64, n1: u64| d(t0, t1).checked_div(d(n0, n1)).unwrap_or(0);
    Totals {
        xact_count: rate(prev.xact_count, now.xact_count),
        query_count: rate(prev.query_count, now.query_count),
        bytes_received: rate(prev.bytes_received, now.bytes_received),
        bytes_sent: rate(prev.bytes_sent, now.bytes_sent),
        errors: rate(prev.errors, now.errors),
        waits: rate(prev.waits, now.waits),
        xact_time_us: mean(
            prev.xact_time_us,
            now.xact_time_us,
            prev.xact_count,
            now.xact_count,
        ),
        query_time_us: mean(
            prev.query_time_us,
            now.query_time_us,
            prev.query_count,
            now.query_count,
        ),
        wait_time_us: mean(prev.wait_time_us, now.wait_time_us, prev.waits, now.waits),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn averages_are_rates_and_means() {
        let c = Counters::default();
        c.query(100);
        c.query(300);
        c.xact(400);
        c.sent(3000);
        c.wait(50);
        c.roll(Duration::from_secs(2));
        let a = c.averages();
        assert_eq!(a.query_count, 1);
        assert_eq!(a.query_time_us, 200);
        assert_eq!(a.xact_time_us, 400);
        assert_eq!(a.bytes_sent, 1500);
        assert_eq!(a.wait_time_us, 50);
        // A quiet period averages to zero.
        c.roll(Duration::from_secs(2));
        assert_eq!(c.averages(), Totals::default());
        assert_eq!(c.totals().query_count, 2);
    }
}
