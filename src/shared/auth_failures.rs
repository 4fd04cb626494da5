//! Throttling of failed logins: after `max_auth_failures` from one address, that address's logins are refused for
//! `auth_failure_block_ms`; other addresses are not affected.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Failed logins per source address.
#[derive(Debug, Default)]
pub(crate) struct AuthFailures {
    by_addr: Mutex<HashMap<IpAddr, (u32, Instant)>>,
}

impl AuthFailures {
    /// Whether `addr` may try to log in now.
    pub(crate) fn allowed(&self, addr: IpAddr, max: u32, block: Duration) -> bool {
        if max == 0 {
            return true;
        }
        let mut m = self.by_addr.lock().unwrap_or_else(|p| p.into_inner());
        match m.get(&addr) {
            Some((n, last)) if *n >= max => {
                if last.elapsed() < block {
                    return false;
                }
                m.remove(&addr);
                true
            }
            _ => true,
        }
    }

    /// Counts a failed login from `addr`; failures older than `block` are forgotten first.
    pub(crate) fn failed(&self, addr: IpAddr, block: Duration) {
        let mut m = self.by_addr.lock().unwrap_or_else(|p| p.into_inner());
        let e = m.entry(addr).or_insert((0, Instant::now()));
        if e.1.elapsed() >= block {
            *e = (0, Instant::now());
        }
        e.0 += 1;
        e.1 = Instant::now();
        // Bounded: an address scan cannot grow the map without limit.
        if m.len() > 100_000 {
            m.retain(|_, (_, t)| t.elapsed() < block);
        }
    }

    /// A successful login clears the address's count.
    pub(crate) fn succeeded(&self, addr: IpAddr) {
        self.by_addr
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&addr);
    }
}
