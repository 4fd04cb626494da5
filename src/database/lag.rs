//! Replica lag monitoring for `ban_replica_lag`: every `replica_lag_check_interval`, one dedicated connection per
//! server measures how far each replica's replay position (`pg_last_wal_replay_lsn()`) is behind the primary's
//! `pg_current_wal_lsn()`, in bytes or in time, and takes a lagging replica out of rotation until it catches up.

use std::sync::{Arc, Weak};
use std::time::Duration;

use super::UserPool;
use crate::config::{LagLimit, ServerRole};
use crate::pool::{ServerConn, ServerPool};

/// Starts the monitor of every shard of `pool`; it stops when the pool is dropped.
pub(crate) fn spawn(pool: &Arc<UserPool>, limit: LagLimit, interval: Duration) {
    for shard in 0..pool.shards.len() {
        let weak: Weak<UserPool> = Arc::downgrade(pool);
        tokio::spawn(async move {
            let mut conns: Vec<Option<ServerConn>> = Vec::new();
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(pool) = weak.upgrade() else { break };
                let servers = pool.shards[shard].clone();
                conns.resize_with(servers.len(), || None);
                check(&servers, &mut conns, limit).await;
            }
        });
    }
}

async fn value(server: &ServerPool, conn: &mut Option<ServerConn>, sql: &str) -> Option<String> {
    if conn.is_none() {
        *conn = server.connect_dedicated().await.ok();
    }
    let c = conn.as_mut()?;
    match tokio::time::timeout(Duration::from_secs(5), c.query_value(sql)).await {
        Ok(Ok(v)) => v,
        _ => {
            *conn = None;
            None
        }
    }
}

async fn check(servers: &[Arc<ServerPool>], conns: &mut [Option<ServerConn>], limit: LagLimit) {
    let Some(p) = servers
        .iter()
        .position(|s| s.address.role == ServerRole::Primary)
    else {
        return;
    };
    let Some(primary_lsn) = value(&servers[p], &mut conns[p], "SELECT pg_current_wal_lsn()").await
    else {
        return;
    };
    for (i, server) in servers.iter().enumerate() {
        if server.address.role != ServerRole::Replica {
            continue;
        }
        let sql = match limit {
            LagLimit::Bytes(_) => format!(
                "SELECT greatest(pg_wal_lsn_diff('{primary_lsn}', coalesce(pg_last_wal_replay_lsn(), '0/0')), 0)::bigint"
            ),
            LagLimit::Millis(_) => format!(
                "SELECT CASE WHEN pg_last_wal_replay_lsn() >= '{primary_lsn}' THEN 0 \
                 ELSE (extract(epoch FROM now() - pg_last_xact_replay_timestamp()) * 1000)::bigint END"
            ),
        };
        let Some(lag) = value(server, &mut conns[i], &sql)
            .await
            .and_then(|v| v.parse::<u64>().ok())
        else {
            continue;
        };
        let (over, detail) = match limit {
            LagLimit::Bytes(max) => (lag > max, format!("{lag} bytes behind, limit {max}")),
            LagLimit::Millis(max) => (lag > max, format!("{lag} ms behind, limit {max}")),
        };
        server.set_lagging(over, &detail);
    }
}
