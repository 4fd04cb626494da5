//! The admin console: a client that logs in to the database `pgcat` or `pgbouncer` as `admin_username` gets
//! PgBouncer's and PgCat's admin commands instead of a server (`SHOW POOLS`, `RELOAD`, `PAUSE`, ...), over the
//! simple query protocol, with PgCat's column names. Everything else gets an ErrorResponse and the console goes on.

mod commands;
pub(crate) mod dashboard;
pub(crate) mod prometheus;
mod show;
pub(crate) mod table;

use std::sync::Arc;

use bytes::{Buf, BytesMut};
use tokio::io::AsyncWriteExt;

use crate::net::read_message;
use crate::protocol::codes::{frontend, sqlstate, txn};
use crate::protocol::encode::{self, Severity};
use crate::shared::Shared;

/// Databases that lead to the admin console.
pub(crate) fn is_admin_database(db: &str) -> bool {
    db.eq_ignore_ascii_case("pgcat") || db.eq_ignore_ascii_case("pgbouncer")
}

/// The largest admin command accepted.
const MAX_COMMAND: u32 = 64 * 1024;

/// A failed admin command: its SQLSTATE and message.
#[derive(Debug)]
pub(crate) struct AdminError {
    pub(crate) code: &'static str,
    pub(crate) message: String,
}

impl AdminError {
    /// A command that is not understood, or whose arguments are wrong: SQLSTATE 58000, as PgCat answers.
    fn bad_command(message: impl Into<String>) -> Self {
        AdminError {
            code: sqlstate::SYSTEM_ERROR,
            message: message.into(),
        }
    }
}

/// The counters of every pool added up, for the history.
pub(crate) fn reading(shared: &Shared) -> crate::stats::history::Reading {
    let mut totals = crate::stats::Totals::default();
    let (mut predictions, mut nanos) = (0, 0);
    for p in shared.snapshot().cluster.all_pools() {
        for s in p.server_pools() {
            totals += s.stats.totals();
        }
        let (n, t) = p.models.served_totals();
        predictions += n;
        nanos += t;
    }
    crate::stats::history::Reading::now(totals, predictions, nanos)
}

/// Adds a point to the traffic history every [`crate::stats::history::STEP`], for as long as the proxy lives.
pub(crate) fn spawn_history(shared: &Arc<Shared>) {
    let weak = Arc::downgrade(shared);
    shared.history.record(reading(shared));
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(crate::stats::history::STEP);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tick.tick().await;
            let Some(shared) = weak.upgrade() else { return };
            shared.history.record(reading(&shared));
        }
    });
}

/// Rolls every server pool's averages each [`crate::stats::STATS_PERIOD`], for as long as the proxy lives.
pub(crate) fn spawn_stats_roller(shared: &Arc<Shared>) {
    let weak = Arc::downgrade(shared);
    tokio::spawn(async move {
        let period = crate::stats::STATS_PERIOD;
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tick.tick().await;
            let Some(shared) = weak.upgrade() else { return };
            for p in shared.snapshot().cluster.all_pools() {
                for s in p.server_pools() {
                    s.stats.roll(period);
                }
            }
        }
    });
}

/// Which console a client logged in to: its database name. They differ only in units: PgCat's `SHOW STATS`
/// reports query and transaction times in milliseconds, PgBouncer's in microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Console {
    PgCat,
    PgBouncer,
}

impl Console {
    pub(crate) fn of(database: &str) -> Console {
        if database.eq_ignore_ascii_case("pgcat") {
            Console::PgCat
        } else {
            Console::PgBouncer
        }
    }
}

/// Serves one admin client until it leaves.
pub(crate) async fn serve(
    mut stream: crate::net::Stream,
    mut buf: BytesMut,
    shared: Arc<Shared>,
    console: Console,
) -> Result<(), crate::net::NetError> {
    let mut out = BytesMut::with_capacity(4096);
    // After an extended-protocol message: drop the rest up to Sync, as a server does after an error.
    let mut skipping = false;
    loop {
        let (code, body) = match read_message(&mut stream, &mut buf, MAX_COMMAND).await {
            Ok(m) => m,
            Err(crate::net::NetError::Closed) => return Ok(()),
            Err(e) => return Err(e),
        };
        match code {
            frontend::TERMINATE => return Ok(()),
            frontend::QUERY => {
                skipping = false;
                let sql = body.chunk().strip_suffix(&[0]).unwrap_or(body.chunk());
                let sql = String::from_utf8_lossy(sql);
                commands::run(&shared, &sql, &mut out, console).await;
                encode::ready_for_query(&mut out, txn::IDLE);
            }
            frontend::SYNC => {
                skipping = false;
                encode::ready_for_query(&mut out, txn::IDLE);
            }
            frontend::FLUSH => {}
            _ if skipping => {}
            _ => {
                skipping = true;
                encode::error_response(
                    &mut out,
                    Severity::Error,
                    sqlstate::FEATURE_NOT_SUPPORTED,
                    "the admin console speaks the simple query protocol only",
                    None,
                );
            }
        }
        stream.write_all(&out).await?;
        out.clear();
    }
}
