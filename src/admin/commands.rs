//! Admin commands other than SHOW: RELOAD, PAUSE/RESUME, BAN/UNBAN, RECONNECT, KILL, SHUTDOWN, SET. Database
//! arguments name pools; without one, PAUSE, RESUME and RECONNECT apply to every pool.

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;

use super::table::{t, Col, Table};
use super::{show, AdminError};
use crate::database::UserPool;
use crate::protocol::codes::sqlstate;
use crate::protocol::encode::{self, Severity};
use crate::shared::Shared;

/// How long PAUSE waits for the pool's servers to be given back before it answers anyway.
const PAUSE_WAIT: Duration = Duration::from_secs(30);

/// Runs one console request (possibly several commands separated by `;`), writing results or an error.
pub(crate) async fn run(
    shared: &Arc<Shared>,
    sql: &str,
    out: &mut BytesMut,
    console: super::Console,
) {
    let commands: Vec<&str> = sql
        .split(';')
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .collect();
    if commands.is_empty() {
        if sql.trim().is_empty() {
            // An empty query is a client's ping: answered as PostgreSQL answers it.
            encode::empty(out, crate::protocol::codes::backend::EMPTY_QUERY_RESPONSE);
        } else {
            let e = AdminError::bad_command("Unsupported query against the admin database");
            encode::error_response(out, Severity::Error, e.code, &e.message, None);
        }
        return;
    }
    for c in commands {
        if let Err(e) = one(shared, c, out, console).await {
            encode::error_response(out, Severity::Error, e.code, &e.message, None);
            return;
        }
    }
}

async fn one(
    shared: &Arc<Shared>,
    cmd: &str,
    out: &mut BytesMut,
    console: super::Console,
) -> Result<(), AdminError> {
    let words: Vec<String> = cmd.split_whitespace().map(unquote).collect();
    let Some((verb, args)) = words.split_first() else {
        return Err(AdminError::bad_command("empty admin command"));
    };
    let verb = verb.to_ascii_lowercase();
    match verb.as_str() {
        "show" => show::run(shared, args, out, console),
        "set" => {
            encode::command_complete(out, "SET");
            Ok(())
        }
        "reload" => reload(shared, &verb, args, out).await,
        "pause" => pause(shared, args, out).await,
        "resume" => {
            for p in pools_named(shared, args.first())? {
                p.resume();
            }
            encode::command_complete(out, "RESUME");
            Ok(())
        }
        "reconnect" => {
            for p in pools_named(shared, args.first())? {
                p.server_pools().for_each(|s| s.reconnect());
            }
            encode::command_complete(out, "RECONNECT");
            Ok(())
        }
        "kill" => kill(shared, args, out),
        "ban" | "unban" => ban(shared, &verb, args, out),
        "end" => end_ab(shared, args, out).await,
        "shutdown" => {
            no_args(&verb, args)?;
            shared.shutdown.request();
            let mut table = Table::new(&[Col::Text("success")]);
            table.row(vec![t("t")]);
            table.write(out, "SHUTDOWN");
            Ok(())
        }
        _ => Err(AdminError::bad_command(format!(
            "Unsupported admin command \"{cmd}\"; SHOW HELP lists the commands"
        ))),
    }
}

/// `RELOAD`: reads the config file again; what it changed comes back as notices.
async fn reload(
    shared: &Arc<Shared>,
    verb: &str,
    args: &[String],
    out: &mut BytesMut,
) -> Result<(), AdminError> {
    no_args(verb, args)?;
    let report = crate::shared::reload::reload(shared)
        .await
        .map_err(|e| AdminError {
            code: sqlstate::CONFIG_FILE_ERROR,
            message: e.to_string(),
        })?;
    for n in report.notices() {
        encode::notice_response(out, &n);
    }
    encode::command_complete(out, "RELOAD");
    Ok(())
}

/// `PAUSE [db]`: stops handing out servers and answers once the pools' servers are all given back.
async fn pause(
    shared: &Arc<Shared>,
    args: &[String],
    out: &mut BytesMut,
) -> Result<(), AdminError> {
    let pools = pools_named(shared, args.first())?;
    for p in &pools {
        p.pause();
    }
    // PgBouncer answers PAUSE once the pools' servers are all given back.
    let deadline = tokio::time::Instant::now() + PAUSE_WAIT;
    while pools.iter().any(|p| p.busy_count() > 0) && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    encode::command_complete(out, "PAUSE");
    Ok(())
}

/// `KILL db`: drops the database's clients and server connections.
fn kill(shared: &Arc<Shared>, args: &[String], out: &mut BytesMut) -> Result<(), AdminError> {
    let Some(db) = args.first() else {
        return Err(AdminError::bad_command("KILL needs a database name"));
    };
    let pools = pools_named(shared, Some(db))?;
    for c in shared.clients.list() {
        if &c.database == db {
            c.kill();
        }
    }
    for p in pools {
        p.server_pools().for_each(|s| s.reconnect());
    }
    encode::command_complete(out, "KILL");
    Ok(())
}

/// `END AB <project>`: ends the project's A/B test in the registry of every pool that serves it; all its
/// predictions go to the deployed model again.
async fn end_ab(
    shared: &Arc<Shared>,
    args: &[String],
    out: &mut BytesMut,
) -> Result<(), AdminError> {
    let [what, project] = args else {
        return Err(AdminError::bad_command("END AB needs a project name"));
    };
    if !what.eq_ignore_ascii_case("ab") {
        return Err(AdminError::bad_command("END AB needs a project name"));
    }
    let snapshot = shared.snapshot();
    let pools = snapshot.cluster.all_pools();
    // The pools that served the test; if none has yet, any pool whose registry knows it.
    let serving: Vec<&Arc<UserPool>> = pools.iter().filter(|p| p.models.has_ab(project)).collect();
    let candidates: Vec<&Arc<UserPool>> = if serving.is_empty() {
        pools.iter().collect()
    } else {
        serving
    };
    let mut ended = false;
    let mut last_error = None;
    for p in candidates {
        let backend: Arc<dyn crate::inference::backend::Backend> = p.clone();
        match crate::inference::ops::ab::end(&backend, project).await {
            Ok(e) => ended |= e,
            Err(e) => last_error = Some(e),
        }
    }
    if !ended {
        return Err(AdminError {
            code: "22023",
            message: match last_error {
                Some(e) => format!("no A/B test of project {project:?} could be ended: {e}"),
                None => format!("project {project:?} has no A/B test"),
            },
        });
    }
    encode::command_complete(out, "END AB");
    Ok(())
}

fn unquote(w: &str) -> String {
    w.trim_matches(|c| c == '"' || c == '\'').to_owned()
}

fn no_args(verb: &str, args: &[String]) -> Result<(), AdminError> {
    if args.is_empty() {
        Ok(())
    } else {
        Err(AdminError::bad_command(format!(
            "{} takes no arguments",
            verb.to_uppercase()
        )))
    }
}

/// The pools of database `db` (all pools when `None`); an unknown database is an error.
fn pools_named(shared: &Shared, db: Option<&String>) -> Result<Vec<Arc<UserPool>>, AdminError> {
    let snapshot = shared.snapshot();
    let pools: Vec<Arc<UserPool>> = snapshot
        .cluster
        .all_pools()
        .into_iter()
        .filter(|p| db.is_none_or(|d| &p.database == d))
        .collect();
    match db {
        Some(d) if pools.is_empty() => Err(AdminError {
            code: sqlstate::SYSTEM_ERROR,
            message: format!("database \"{d}\" does not exist"),
        }),
        _ => Ok(pools),
    }
}

/// `BAN host seconds` / `UNBAN host`: every server address whose host matches, in every pool.
fn ban(shared: &Shared, verb: &str, args: &[String], out: &mut BytesMut) -> Result<(), AdminError> {
    let Some(host) = args.first() else {
        return Err(AdminError::bad_command(format!(
            "{} needs a host",
            verb.to_uppercase()
        )));
    };
    let secs = if verb == "ban" {
        match (args.get(1).map(|s| s.parse::<u64>()), args.len()) {
            (Some(Ok(secs)), 2) if secs > 0 => Some(secs),
            _ => {
                return Err(AdminError::bad_command(
                    "BAN needs a host and a duration in seconds (more than 0)",
                ))
            }
        }
    } else if args.len() > 1 {
        return Err(AdminError::bad_command("UNBAN needs a host only"));
    } else {
        None
    };
    let mut table = Table::new(&[
        Col::Text("db"),
        Col::Text("user"),
        Col::Text("role"),
        Col::Text("host"),
    ]);
    for p in shared.snapshot().cluster.all_pools() {
        // As in PgCat, a primary is never banned.
        for s in p.server_pools().filter(|s| {
            &s.address.host == host
                && (secs.is_none() || s.address.role != crate::config::ServerRole::Primary)
        }) {
            // As in PgCat, the rows are what changed: a server already banned (or not banned) is left out.
            if s.is_banned() == secs.is_some() {
                continue;
            }
            match secs {
                Some(secs) => s.ban(Duration::from_secs(secs), "admin ban"),
                None => s.unban(),
            }
            let a = &s.address;
            table.row(vec![t(&a.pool), t(&a.user), t(a.role), t(&a.host)]);
        }
    }
    table.write(out, &verb.to_uppercase());
    Ok(())
}
