//! Finding replicas that stopped answering. A server that is frozen (SIGSTOP, a hung host, a network partition
//! that drops packets) accepts connections and requests and never replies, so nothing fails: requests just wait.
//! PgCat and PgBouncer only notice when a connection idle for `healthcheck_delay` is checked out again.
//!
//! Here a watcher per replica looks, every half `healthcheck_timeout` (at most every second), at the connections
//! its clients hold. When one has had nothing from the server for `healthcheck_timeout`, which is a slow query
//! or a dead server, the watcher asks the server itself with `;` on a connection of its own. No answer within
//! `healthcheck_timeout` bans the replica for `ban_time`, and the ban is renewed while it stays silent; an answer
//! lifts a ban the watcher set. The connections that were waiting on it are cut: their reads fail over to another
//! server, and anything else fails at once instead of hanging for as long as the server does. The watcher costs nothing while every server answers, and a probe of a single
//! `;` while a long query runs. Primaries are never banned: their requests wait for them (see
//! [`ServerPool::checkout`]).

use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use super::UserPool;
use crate::config::ServerRole;
use crate::pool::{ServerConn, ServerPool};
use crate::stats::{ConnInfo, ConnState};

/// Starts a watcher for every replica of `pool`; each stops when the pool is dropped (or replaced by a reload).
pub(crate) fn spawn(pool: &Arc<UserPool>) {
    for (shard, servers) in pool.shards.iter().enumerate() {
        for (i, server) in servers.iter().enumerate() {
            if server.address.role != ServerRole::Replica {
                continue;
            }
            let weak: Weak<UserPool> = Arc::downgrade(pool);
            let timeout = server.settings().healthcheck_timeout;
            let period = (timeout / 2).clamp(Duration::from_millis(50), Duration::from_secs(1));
            tokio::spawn(async move {
                let mut watch = Watch::default();
                let mut tick = tokio::time::interval(period);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tick.tick().await;
                    let Some(pool) = weak.upgrade() else { break };
                    let Some(server) = pool.shards[shard].get(i).cloned() else {
                        break;
                    };
                    let ban_time = pool.routing.ban_time;
                    drop(pool);
                    watch.check(&server, ban_time).await;
                }
            });
        }
    }
}

/// What the watcher of one server remembers between ticks.
#[derive(Default)]
struct Watch {
    /// Per checked-out connection: bytes received when last looked at, and since when that count stands.
    quiet_since: HashMap<u64, (u64, Instant)>,
    /// The connections quiet for `healthcheck_timeout` at the last look.
    quiet: Vec<Arc<ConnInfo>>,
    /// The watcher's own connection, kept between probes.
    probe: Option<ServerConn>,
    /// The last probe got no answer (and the watcher banned the server).
    failing: bool,
}

impl Watch {
    async fn check(&mut self, server: &ServerPool, ban_time: Duration) {
        let timeout = server.settings().healthcheck_timeout;
        self.look(server, timeout);
        if self.quiet.is_empty() && !self.failing {
            return;
        }
        match self.probe(server, timeout).await {
            Ok(()) => {
                if std::mem::take(&mut self.failing) {
                    tracing::info!(server = %server.address, "answers its health check again");
                    server.unban();
                }
            }
            Err(reason) => {
                self.failing = true;
                server.ban(
                    ban_time,
                    &format!(
                        "a request waits and the server does not answer a health check: {reason}"
                    ),
                );
                for c in self.quiet.drain(..) {
                    tracing::warn!(server = %server.address, "cutting a connection stuck on a server that does not answer");
                    c.abort();
                }
            }
        }
    }

    /// Finds the checked-out connections that have received nothing for `timeout`.
    fn look(&mut self, server: &ServerPool, timeout: Duration) {
        let now = Instant::now();
        self.quiet.clear();
        let mut seen = HashMap::new();
        for c in server.connections() {
            if c.state() != ConnState::Active {
                continue;
            }
            let received = c.bytes_received.load(std::sync::atomic::Ordering::Relaxed);
            let since = match self.quiet_since.get(&c.id) {
                Some(&(r, t)) if r == received => t,
                _ => now,
            };
            seen.insert(c.id, (received, since));
            if now.duration_since(since) >= timeout {
                self.quiet.push(c);
            }
        }
        self.quiet_since = seen;
    }

    /// `;` on the watcher's own connection (opened if needed), all within `timeout`.
    async fn probe(&mut self, server: &ServerPool, timeout: Duration) -> Result<(), String> {
        let attempt = async {
            if self.probe.is_none() {
                self.probe = Some(
                    server
                        .connect_dedicated()
                        .await
                        .map_err(|e| e.to_string())?,
                );
            }
            match self.probe.as_mut() {
                Some(conn) => conn.run(";").await.map(drop).map_err(|e| e.to_string()),
                None => Ok(()),
            }
        };
        let result = match tokio::time::timeout(timeout, attempt).await {
            Ok(r) => r,
            Err(_) => Err(format!("no answer within {} ms", timeout.as_millis())),
        };
        if result.is_err() {
            // The connection may be mid-exchange: never reuse it.
            self.probe = None;
        }
        result
    }
}
