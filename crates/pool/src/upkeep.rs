//! Keeping a server pool in shape: periodic maintenance (idle and old connections closed, `min_pool_size` kept
//! warm), and settings changed by a reload. A reload that changes a server pool's settings but not where or as
//! whom it connects keeps the pool and its connections and applies the settings in place: a larger `pool_size`
//! adds permits at once; a smaller one closes idle connections beyond it now and takes the rest of the permits
//! back as clients return them, so the server never sees more connections than the larger of the two sizes, and
//! the new size as soon as clients allow.

use std::collections::VecDeque;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use super::pool::{PoolSettings, ServerPool};
use super::ServerConn;

impl ServerPool {
    /// Applies a reload's settings to this pool.
    pub fn reconfigure(self: &Arc<Self>, new: PoolSettings) {
        if **self.settings.load() == new {
            return;
        }
        let (to, old) = (new.pool_size as usize, self.settings.swap(Arc::new(new)));
        let from = old.pool_size as usize;
        if to > from {
            self.permits.add_permits(to - from);
        } else if to < from {
            let debt = (from - to) as u32;
            let permits = self.permits.clone();
            // The semaphore is fair: while the debt is open, clients queue behind it, as they should for a pool
            // that is over its new size.
            tokio::spawn(async move {
                if let Ok(p) = permits.acquire_many_owned(debt).await {
                    p.forget();
                }
            });
            let surplus: Vec<_> = {
                let mut idle = self.lock_idle();
                let extra = self.open_count().saturating_sub(to).min(idle.len());
                idle.drain(..extra).collect()
            };
            for conn in surplus {
                self.discard(conn);
            }
        }
        tracing::info!(server = %self.address, from, to, "pool settings changed by reload; connections kept");
    }

    /// Closes idle connections past `idle_timeout` (down to `min_pool_size`) or `server_lifetime`, then opens
    /// connections up to `min_pool_size`.
    pub(crate) async fn maintain(self: &Arc<Self>) {
        let now = Instant::now();
        let min = self.settings.load().min_pool_size as usize;
        let expired: Vec<ServerConn> = {
            let mut idle = self.lock_idle();
            let mut keep = VecDeque::with_capacity(idle.len());
            let mut out = Vec::new();
            let mut open = self.open_count();
            while let Some(c) = idle.pop_front() {
                let too_old = now.duration_since(c.created) >= self.settings.load().server_lifetime;
                let too_idle = now.duration_since(c.last_used) >= self.settings.load().idle_timeout
                    && open > min;
                if too_old || too_idle {
                    open -= 1;
                    out.push(c);
                } else {
                    keep.push_back(c);
                }
            }
            *idle = keep;
            out
        };
        for c in expired {
            self.discard(c);
        }
        while self.open_count() < min {
            let Ok(permit) = self.permits.clone().try_acquire_owned() else {
                break;
            };
            match self.open_new(self.settings.load().connect_timeout).await {
                Ok(conn) => self.checkin(conn, permit),
                Err(e) => {
                    tracing::warn!(server = %self.address, "cannot open min_pool_size connection: {e}");
                    break;
                }
            }
        }
    }

    /// Runs [`ServerPool::maintain`] periodically until the pool is dropped.
    pub fn spawn_maintenance(self: &Arc<Self>) {
        let weak: Weak<ServerPool> = Arc::downgrade(self);
        let s = self.settings.load();
        let period = (s.idle_timeout.min(s.server_lifetime) / 4)
            .clamp(Duration::from_millis(50), Duration::from_secs(1));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(pool) = weak.upgrade() else { break };
                pool.maintain().await;
            }
        });
    }
}
