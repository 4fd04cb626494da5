//! Work that spans shards on connections Ocelot drives itself: committing a transaction whose writes touched
//! several shards atomically with two-phase commit, and recovering the ones a crash left prepared.
//!
//! The commit decision is made durable on the coordinator (the lowest shard taking part): before PREPARE, its
//! transaction inserts the transaction's id into `ocelot.two_phase_log`, so the row exists exactly when the
//! coordinator's part committed. Every part is prepared; the coordinator commits first, then the others. A crash
//! leaves prepared parts behind, which [`recover`] resolves: it first rolls back the coordinator's part if that is
//! still prepared (which settles the outcome as abort even against a coordinator still running), then commits every
//! part whose id is in the log and rolls back the rest.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::future::join_all;

use crate::database::balance::Want;
use crate::database::UserPool;
use crate::pool::exec::{exec, exec_text};
use crate::pool::server::ServerConn;
use crate::pool::PoolError;
use crate::protocol::codes::txn;
use crate::router::session_sql::quote_literal;

/// Runs Ocelot's own statement, turning an ErrorResponse into an error.
async fn run(conn: &mut ServerConn, sql: &str) -> Result<(), Failure> {
    let mut q = BytesMut::new();
    crate::protocol::encode::query(&mut q, sql);
    let a = exec(conn, &q).await.map_err(Failure::from)?;
    match a.error {
        Some(e) => Err(Failure::Server(e)),
        None => Ok(()),
    }
}

/// Why a cross-shard commit failed.
#[derive(Debug)]
pub(crate) enum Failure {
    /// A server's ErrorResponse, as the client should see it.
    Server(Bytes),
    /// A connection failed.
    Pool(PoolError),
    /// The coordinator's commit was sent but its outcome is unknown: [`recover`] settles it.
    Unknown(String),
}

impl From<PoolError> for Failure {
    fn from(e: PoolError) -> Self {
        Failure::Pool(e)
    }
}

impl Failure {
    /// The ErrorResponse message for the client.
    pub(crate) fn error_response(&self) -> BytesMut {
        let mut out = BytesMut::new();
        match self {
            Failure::Server(e) => out.extend_from_slice(e),
            Failure::Pool(e) => crate::protocol::encode::error_response(
                &mut out,
                crate::protocol::encode::Severity::Error,
                e.sqlstate(),
                &e.to_string(),
                None,
            ),
            Failure::Unknown(why) => crate::protocol::encode::error_response(
                &mut out,
                crate::protocol::encode::Severity::Error,
                "08007",
                &format!("the outcome of a two-phase commit across shards is unknown ({why}); Ocelot resolves it from its commit log"),
                None,
            ),
        }
        out
    }
}

/// A new global transaction id: `ocelot:<coordinator shard>:<random>`. The commit log records it; each shard's
/// part is prepared as [`part_gid`].
fn new_gid(coordinator: usize) -> String {
    use rand::Rng;
    let r: u64 = rand::rng().random();
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros());
    format!("ocelot:{coordinator}:{t:x}{r:016x}")
}

/// Ids of the commits this process is running: recovery leaves them alone whatever their age (its first pass
/// after start resolves every prepared part, and one of this process's own commits may already be under way).
/// Locked once at the start and once at the end of a cross-shard commit, never per query.
static IN_FLIGHT: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

/// Marks a commit as this process's own while it runs.
struct InFlight(String);

impl InFlight {
    fn begin(gid: &str) -> InFlight {
        // A poisoned list is still a list of ids.
        IN_FLIGHT
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(gid.to_owned());
        InFlight(gid.to_owned())
    }

    fn running(gid: &str) -> bool {
        IN_FLIGHT
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .any(|g| g == gid)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut list = IN_FLIGHT.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(i) = list.iter().position(|g| *g == self.0) {
            list.swap_remove(i);
        }
    }
}

/// The id of one shard's part: PostgreSQL wants prepared transaction ids unique per server, and shards may be
/// databases of one server.
fn part_gid(gid: &str, shard: usize) -> String {
    format!("{gid}:{shard}")
}

/// The global id and coordinator shard of a prepared part's id. Ids of three fields are parts prepared by
/// earlier versions, which used the global id for every part.
fn parse_part_gid(part: &str) -> Option<(&str, usize)> {
    let mut fields = part.split(':');
    let (prefix, coordinator, _random) = (fields.next()?, fields.next()?, fields.next()?);
    if prefix != "ocelot" {
        return None;
    }
    let coordinator = coordinator.parse().ok()?;
    let global = match fields.next() {
        None => part,
        Some(_) => &part[..part.rfind(':')?],
    };
    Some((global, coordinator))
}

const LOG_DDL: &str = "CREATE SCHEMA IF NOT EXISTS ocelot; CREATE TABLE IF NOT EXISTS ocelot.two_phase_log (gid text PRIMARY KEY, committed_at timestamptz NOT NULL DEFAULT now())";

/// Makes sure the coordinator's commit log exists, once per pool and shard, on a connection of its own (creating
/// it inside the client's transaction could abort it).
async fn ensure_log(pool: &Arc<UserPool>, shard: usize) -> Result<(), Failure> {
    let Some(cell) = pool.two_phase_log.get(shard) else {
        return Ok(());
    };
    cell.get_or_try_init(|| async {
        let mut conn = pool.checkout(shard, Want::Primary, true).await?;
        // Two instances creating it at once can collide on the catalog: the second attempt sees it.
        match run(&mut conn, LOG_DDL).await {
            Err(Failure::Server(_)) => run(&mut conn, LOG_DDL).await,
            r => r,
        }
    })
    .await
    .map(|_| ())
}

/// Commits the open transactions of `parts` (shard, connection; at least one), atomically when there are several.
/// On failure every part is rolled back (or left for [`recover`] when the outcome is unknown).
pub(crate) async fn commit(
    pool: &Arc<UserPool>,
    parts: &mut [(usize, &mut ServerConn)],
) -> Result<(), Failure> {
    if parts.len() == 1 {
        return run(parts[0].1, "COMMIT").await;
    }
    parts.sort_by_key(|(s, _)| *s);
    let coordinator = parts[0].0;
    if let Err(e) = ensure_log(pool, coordinator).await {
        rollback(parts).await;
        return Err(e);
    }
    let gid = new_gid(coordinator);
    let _running = InFlight::begin(&gid);
    let literal = quote_literal(&gid);
    if let Err(e) = run(
        parts[0].1,
        &format!("INSERT INTO ocelot.two_phase_log (gid) VALUES ({literal})"),
    )
    .await
    {
        rollback(parts).await;
        return Err(e);
    }
    let part_literal = |shard: usize| quote_literal(&part_gid(&gid, shard));
    let prepared = join_all(parts.iter_mut().map(|(s, c)| {
        let sql = format!("PREPARE TRANSACTION {}", part_literal(*s));
        async move { run(c, &sql).await }
    }))
    .await;
    if let Some(pos) = prepared.iter().position(|r| r.is_err()) {
        for ((s, c), r) in parts.iter_mut().zip(&prepared) {
            if r.is_ok() {
                let rollback_prepared = format!("ROLLBACK PREPARED {}", part_literal(*s));
                if let Err(e) = run(c, &rollback_prepared).await {
                    tracing::warn!(server = %c.address, "rolling back a prepared part failed; recovery will: {e:?}");
                }
            } else if c.state.txn_status != txn::IDLE {
                let _ = run(c, "ROLLBACK").await;
            }
        }
        let mut results = prepared;
        return Err(results
            .swap_remove(pos)
            .err()
            .unwrap_or_else(|| Failure::Unknown("a part failed to prepare".into())));
    }
    let commit_prepared = |shard: usize| format!("COMMIT PREPARED {}", part_literal(shard));
    match run(parts[0].1, &commit_prepared(coordinator)).await {
        Ok(()) => {}
        Err(Failure::Server(e)) => {
            // Not committed (a recovery rolled it back): the outcome is abort everywhere.
            for (s, c) in parts[1..].iter_mut() {
                let _ = run(c, &format!("ROLLBACK PREPARED {}", part_literal(*s))).await;
            }
            return Err(Failure::Server(e));
        }
        Err(e) => return Err(Failure::Unknown(format!("{e:?}"))),
    }
    // Committed: the others follow; one that fails now is finished by recovery, which finds the id in the log.
    let done = join_all(parts[1..].iter_mut().map(|(s, c)| {
        let sql = commit_prepared(*s);
        async move { run(c, &sql).await }
    }))
    .await;
    if done.iter().all(Result::is_ok) {
        let _ = run(
            parts[0].1,
            &format!("DELETE FROM ocelot.two_phase_log WHERE gid = {literal}"),
        )
        .await;
    } else {
        tracing::warn!(
            gid,
            "a prepared part did not commit; recovery will commit it"
        );
    }
    Ok(())
}

/// Rolls back the open transactions of `parts`, ignoring failures (a broken connection is discarded anyway).
pub(crate) async fn rollback(parts: &mut [(usize, &mut ServerConn)]) {
    join_all(parts.iter_mut().map(|(_, c)| async move {
        if c.state.txn_status != txn::IDLE {
            let _ = run(c, "ROLLBACK").await;
        }
    }))
    .await;
}

/// Resolves transactions a previous Ocelot left prepared on the shards of `pool`: those older than `min_age`
/// (all of them at startup).
pub(crate) async fn recover(pool: &Arc<UserPool>, min_age: Duration) -> Result<usize, PoolError> {
    let age = format!("{} milliseconds", min_age.as_millis());
    let mut resolved = 0;
    for shard in 0..pool.shards.len() {
        let mut conn = pool.checkout(shard, Want::Primary, true).await?;
        let list = exec_text(
            &mut conn,
            &format!(
                "SELECT gid FROM pg_prepared_xacts WHERE gid LIKE 'ocelot:%' AND database = current_database() AND owner = current_user AND prepared < now() - interval '{age}'"
            ),
        )
        .await?;
        drop(conn);
        for part in list {
            let Some((gid, coordinator)) = parse_part_gid(&part)
                .filter(|(g, c)| *c < pool.shards.len() && !InFlight::running(g))
            else {
                continue;
            };
            let literal = quote_literal(&part);
            let mut coord = pool.checkout(coordinator, Want::Primary, true).await?;
            // Rolling back a coordinator part that is still prepared settles the outcome: abort.
            if coordinator == shard {
                let _ = run(&mut coord, &format!("ROLLBACK PREPARED {literal}")).await;
                resolved += 1;
                continue;
            }
            let coord_part = if gid == part {
                literal.clone()
            } else {
                quote_literal(&part_gid(gid, coordinator))
            };
            let still = exec_text(
                &mut coord,
                &format!("SELECT gid FROM pg_prepared_xacts WHERE gid = {coord_part} AND database = current_database()"),
            )
            .await?;
            if !still.is_empty() {
                let _ = run(&mut coord, &format!("ROLLBACK PREPARED {coord_part}")).await;
            }
            let committed = exec_text(
                &mut coord,
                &format!(
                    "SELECT gid FROM ocelot.two_phase_log WHERE gid = {}",
                    quote_literal(gid)
                ),
            )
            .await
            .map(|r| !r.is_empty())
            .unwrap_or(false);
            drop(coord);
            let mut conn = pool.checkout(shard, Want::Primary, true).await?;
            let verb = if committed { "COMMIT" } else { "ROLLBACK" };
            match run(&mut conn, &format!("{verb} PREPARED {literal}")).await {
                Ok(()) => {
                    tracing::info!(gid, shard, "recovered a prepared transaction: {verb}");
                    resolved += 1;
                }
                Err(e) => tracing::warn!(
                    gid,
                    shard,
                    "could not resolve a prepared transaction: {e:?}"
                ),
            }
        }
    }
    Ok(resolved)
}

/// Resolves what an earlier Ocelot left prepared as soon as the shards answer, then keeps resolving parts left
/// behind by failed commits (older than a minute, so commits in flight are left alone). Ends with the pool.
pub(crate) fn spawn_recovery(pool: &Arc<UserPool>) {
    let weak = Arc::downgrade(pool);
    tokio::spawn(async move {
        let mut min_age = Duration::ZERO;
        loop {
            let Some(pool) = weak.upgrade() else {
                return;
            };
            match recover(&pool, min_age).await {
                Ok(n) => {
                    if n > 0 {
                        tracing::info!(pool = %pool.database, "resolved {n} prepared transaction(s) left by an earlier commit");
                    }
                    min_age = Duration::from_secs(60);
                }
                Err(e) => {
                    tracing::warn!(pool = %pool.database, "resolving prepared transactions failed, will retry: {e}")
                }
            }
            drop(pool);
            tokio::time::sleep(Duration::from_secs(if min_age.is_zero() { 5 } else { 60 })).await;
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recovery_sees_this_processs_commits_only_while_they_run() {
        let gid = new_gid(0);
        let running = InFlight::begin(&gid);
        assert!(InFlight::running(&gid));
        assert_eq!(
            parse_part_gid(&part_gid(&gid, 2)).map(|(g, _)| g),
            Some(gid.as_str())
        );
        drop(running);
        assert!(!InFlight::running(&gid));
    }
}
