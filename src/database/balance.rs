//! Choosing a server for a request: the candidates of the wanted role in a shard, in the order the pool's
//! `load_balancing_mode` gives (random, round robin, or least outstanding connections), skipping banned servers;
//! then checking one out, banning a replica that refuses connections or fails its health check and moving on to
//! the next candidate. The primary is never banned. Reads go to the primary while no replica can serve them (all
//! banned or lagging) and return to the replicas as their bans run out. Requests that asked for replicas only
//! (`default_role = "replica"`, `SET SERVER ROLE TO 'replica'`) never fall back, as in PgCat; when no primary may
//! serve a request and every replica is banned, the replicas are unbanned, since that is more likely a false alarm
//! than a total outage.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use rand::seq::{IndexedRandom, SliceRandom};
use rand::Rng;

use super::UserPool;
use crate::config::{LoadBalancingMode, ServerRole};
use crate::pool::{PoolError, Pooled, ServerPool};

/// Which servers of a shard may serve a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Want {
    Primary,
    /// Replicas, and the primary too when primary reads are enabled; the primary also serves while no replica
    /// can (reads the query parser routed).
    Replica,
    /// Replicas only, as the operator or the client asked (`default_role = "replica"`, `SET SERVER ROLE TO
    /// 'replica'`): while every replica is down the request fails, as in PgCat, rather than load the primary.
    ReplicaOnly,
    Any,
    /// `pgml.*` predictions passed to servers with the real extension: replicas by least outstanding
    /// connections whatever the pool's mode, the primary only when no replica is up.
    Predict,
}

impl Want {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Want::Primary => "primary",
            Want::Replica | Want::ReplicaOnly => "replica",
            Want::Any => "any",
            Want::Predict => "replica (pgml predictions)",
        }
    }
}

impl UserPool {
    /// A shard for a query that names none under `default_shard = "random"` / `"random_healthy"`: any shard, or
    /// (healthy) one whose servers did not fail within `ban_time`, any shard when every one did.
    pub(crate) fn random_shard(&self, healthy: bool) -> usize {
        let n = self.shards.len().max(1);
        if healthy {
            let ok: Vec<usize> = (0..self.shards.len())
                .filter(|&i| {
                    self.shards[i]
                        .iter()
                        .all(|s| s.is_healthy() || s.address.role == ServerRole::Mirror)
                })
                .collect();
            if let Some(&s) = ok.choose(&mut rand::rng()) {
                return s;
            }
        }
        rand::rng().random_range(0..n)
    }

    /// The servers of `shard` that may serve `want`, best first, banned ones left out.
    pub(crate) fn candidates(
        &self,
        shard: usize,
        want: Want,
        primary_reads: bool,
    ) -> Vec<Arc<ServerPool>> {
        let Some(servers) = self.shards.get(shard) else {
            return Vec::new();
        };
        let is = |s: &Arc<ServerPool>, r: ServerRole| s.address.role == r;
        let replicas: Vec<&Arc<ServerPool>> = servers
            .iter()
            .filter(|s| is(s, ServerRole::Replica))
            .collect();
        let mut list = eligible(servers, want, primary_reads, replicas.is_empty());
        list.retain(|s| !s.is_banned() && !s.is_lagging());
        // Reads the parser routed (and predictions) end with the primary, which has the freshest data: it serves
        // while every replica is lagging or down, and when the replicas tried first refuse (a replica that has just
        // died is not banned yet).
        let falls_back = matches!(want, Want::Replica | Want::Predict);
        let primaries = || {
            servers
                .iter()
                .filter(|s| is(s, ServerRole::Primary))
                .cloned()
        };
        let has_primary = primaries().next().is_some();
        if list.is_empty()
            && !replicas.is_empty()
            && want != Want::Primary
            && !(falls_back && has_primary)
        {
            tracing::warn!(pool = %self.database, shard, "every replica is banned and no primary can serve: unbanning all");
            replicas.iter().for_each(|s| s.unban());
            list = replicas.iter().map(|s| (*s).clone()).collect();
        }
        self.order(&mut list, want);
        if falls_back && !list.iter().any(|s| is(s, ServerRole::Primary)) {
            list.extend(primaries());
        }
        list
    }

    /// Puts the candidates in the order the pool's load balancing mode (least busy for predictions) tries them.
    fn order(&self, list: &mut [Arc<ServerPool>], want: Want) {
        let mode = match want {
            Want::Predict => LoadBalancingMode::LeastOutstandingConnections,
            _ => self.routing.load_balancing_mode,
        };
        match mode {
            LoadBalancingMode::Random => list.shuffle(&mut rand::rng()),
            LoadBalancingMode::RoundRobin => {
                let n = list.len().max(1);
                let k = self.round_robin.fetch_add(1, Ordering::Relaxed) % n;
                list.rotate_left(k);
            }
            LoadBalancingMode::LeastOutstandingConnections => {
                // Shuffle first so equally busy servers share the load.
                list.shuffle(&mut rand::rng());
                list.sort_by_key(|s| s.busy_count());
            }
        }
    }

    /// The one server every request of this pool goes to (one shard, one server, its primary), if there is one.
    pub(crate) fn sole_primary(&self) -> Option<&Arc<ServerPool>> {
        match self.shards.as_slice() {
            [servers] => {
                let mut live = servers
                    .iter()
                    .filter(|s| s.address.role != ServerRole::Mirror);
                match (live.next(), live.next()) {
                    (Some(s), None) if s.address.role == ServerRole::Primary => Some(s),
                    _ => None,
                }
            }
            _ => None,
        }
    }

    /// A connection of the pool's sole primary without waiting: an idle one or a new one while the pool has room,
    /// `None` when it has none (or is paused), or the connection fails. For a session-mode login, which must not
    /// be held up by a full pool: its client waits for a server at its first query instead, as with PgBouncer.
    pub(crate) async fn reserve(&self) -> Option<Pooled> {
        let server = self.sole_primary()?;
        if self.is_paused() {
            return None;
        }
        server.try_checkout().await
    }

    /// Checks out a connection for `want` in `shard`, trying candidates in order.
    pub(crate) async fn checkout(
        &self,
        shard: usize,
        want: Want,
        primary_reads: bool,
    ) -> Result<Pooled, PoolError> {
        self.wait_unpaused().await;
        let candidates = self.candidates(shard, want, primary_reads);
        let mut last = None;
        for server in candidates {
            match server.checkout().await {
                Ok(conn) => return Ok(conn),
                Err(e) => {
                    if e.is_retryable() {
                        server.mark_unhealthy(self.routing.ban_time);
                    }
                    if e.is_retryable() && server.address.role != ServerRole::Primary {
                        server.ban(self.routing.ban_time, &e.to_string());
                    }
                    if matches!(e, PoolError::CheckoutTimeout { .. }) {
                        return Err(e);
                    }
                    last = Some(e);
                }
            }
        }
        Err(last.unwrap_or_else(|| PoolError::AllServersDown {
            pool: self.database.clone(),
            shard,
            what: want.as_str().into(),
            reason: "no server of that role is configured or every one is banned".into(),
        }))
    }
}

/// The servers of one shard whose role can serve `want`, before bans and lag are looked at. Reads and predictions
/// go to the primary when the shard has no replica.
fn eligible(
    servers: &[Arc<ServerPool>],
    want: Want,
    primary_reads: bool,
    no_replicas: bool,
) -> Vec<Arc<ServerPool>> {
    let is = |s: &Arc<ServerPool>, r: ServerRole| s.address.role == r;
    let keep = |s: &Arc<ServerPool>| match want {
        Want::Primary => is(s, ServerRole::Primary),
        Want::Replica | Want::ReplicaOnly | Want::Predict if no_replicas => {
            is(s, ServerRole::Primary)
        }
        Want::Replica | Want::ReplicaOnly => {
            is(s, ServerRole::Replica) || (primary_reads && is(s, ServerRole::Primary))
        }
        Want::Predict => is(s, ServerRole::Replica),
        Want::Any => !is(s, ServerRole::Mirror),
    };
    servers.iter().filter(|s| keep(s)).cloned().collect()
}
