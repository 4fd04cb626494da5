//! `SHOW ...` in the admin console, with PgCat's columns (PgBouncer's for STATS_TOTALS and STATS_AVERAGES, which
//! PgCat lacks), plus Ocelot's `SHOW MODELS`.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::BytesMut;

use super::AdminError;
use crate::admin::table::{t, Col, Table};
use crate::database::UserPool;
use crate::protocol::codes::sqlstate;
use crate::protocol::encode;
use crate::shared::Shared;
use crate::stats::{ClientState, ConnInfo, ConnState, Totals};

mod models;
use models::{ab, centroids, drift, models};

const HELP: &[&str] = &[
    "SHOW HELP|CONFIG|DATABASES|POOLS|STATS|STATS_TOTALS|STATS_AVERAGES|CLIENTS|SERVERS|LISTS|USERS|VERSION|BANS|MODELS|CENTROIDS|AB|MODEL DRIFT",
    "END AB <project>",
    "RELOAD",
    "PAUSE [<db>]",
    "RESUME [<db>]",
    "RECONNECT [<db>]",
    "KILL <db>",
    "BAN <host> <seconds>",
    "UNBAN <host>",
    "SHUTDOWN",
    "SET <anything> (accepted and ignored)",
];

pub(crate) fn run(
    shared: &Shared,
    args: &[String],
    out: &mut BytesMut,
    console: crate::admin::Console,
) -> Result<(), AdminError> {
    if args.first().is_some_and(|a| a.eq_ignore_ascii_case("help")) {
        for line in HELP {
            encode::notice_response(out, line);
        }
        encode::command_complete(out, "SHOW");
        return Ok(());
    }
    table(shared, args, console)?.write(out, "SHOW");
    Ok(())
}

/// The result of `SHOW <args>` (other than HELP), for the console and the dashboard.
pub(crate) fn table(
    shared: &Shared,
    args: &[String],
    console: crate::admin::Console,
) -> Result<Table, AdminError> {
    let what = args
        .first()
        .map(|s| s.to_ascii_lowercase())
        .unwrap_or_default();
    let snapshot = shared.snapshot();
    let all = snapshot.cluster.all_pools();
    let pools: Vec<&Arc<UserPool>> = all.iter().collect();
    let table = match what.as_str() {
        "config" => config(&snapshot.config),
        "databases" => databases(&pools),
        "pools" => pools_table(shared, &pools),
        "stats" => stats(&pools, console),
        "stats_totals" | "totals" => per_database(&pools, false),
        "stats_averages" => per_database(&pools, true),
        "clients" => clients(shared),
        "servers" => servers(&pools),
        "lists" => lists(shared, &pools),
        "users" => users(&pools),
        "version" => {
            let mut t = Table::new(&[Col::Text("version")]);
            t.row(vec![format!("Ocelot {}", env!("CARGO_PKG_VERSION"))]);
            t
        }
        "bans" => bans(&pools),
        "models" => models(&pools),
        "ab" => ab(&pools),
        "model" if args.get(1).is_some_and(|a| a.eq_ignore_ascii_case("drift")) => drift(&pools),
        "centroids" => centroids(&pools),
        _ => {
            return Err(AdminError {
                code: sqlstate::SYSTEM_ERROR,
                message: format!(
                    "Unsupported SHOW \"{}\"; SHOW HELP lists the commands",
                    args.join(" ")
                ),
            })
        }
    };
    Ok(table)
}

fn secret_key(key: &str) -> bool {
    key.contains("password")
}

fn config(config: &crate::config::Config) -> Table {
    let mut table = Table::new(&[
        Col::Text("key"),
        Col::Text("value"),
        Col::Text("default"),
        Col::Text("changeable"),
    ]);
    let mut rows: BTreeMap<String, String> = BTreeMap::new();
    let mut add = |prefix: &str, v: serde_json::Value| {
        if let serde_json::Value::Object(map) = v {
            for (k, v) in map {
                let value = match v {
                    serde_json::Value::Null => String::new(),
                    _ if secret_key(&k) => "********".into(),
                    serde_json::Value::String(s) => s,
                    v => v.to_string(),
                };
                rows.insert(format!("{prefix}{k}"), value);
            }
        }
    };
    add(
        "",
        serde_json::to_value(&config.general).unwrap_or_default(),
    );
    add(
        "inference.",
        serde_json::to_value(&config.inference).unwrap_or_default(),
    );
    for (k, v) in rows {
        let changeable = !matches!(k.as_str(), "host" | "port" | "worker_threads");
        table.row(vec![k, v, t("-"), t(if changeable { "yes" } else { "no" })]);
    }
    table
}

fn databases(pools: &[&Arc<UserPool>]) -> Table {
    let mut table = Table::new(&[
        Col::Text("name"),
        Col::Text("host"),
        Col::Int("port"),
        Col::Text("database"),
        Col::Text("force_user"),
        Col::Int("pool_size"),
        Col::Int("min_pool_size"),
        Col::Int("reserve_pool"),
        Col::Text("pool_mode"),
        Col::Int("max_connections"),
        Col::Int("current_connections"),
        Col::Int("paused"),
        Col::Int("disabled"),
    ]);
    for p in pools {
        for s in p.server_pools() {
            let a = &s.address;
            let st = s.settings();
            table.row(vec![
                a.name(),
                t(&a.host),
                t(a.port),
                t(&a.database),
                t(&a.user),
                t(st.pool_size),
                t(st.min_pool_size),
                t(0),
                t(p.settings.pool_mode),
                t(st.pool_size),
                t(s.open_count()),
                t(p.is_paused() as u8),
                t(0),
            ]);
        }
    }
    table
}

/// Server connections of a pool by state: (active, idle, used, tested, login).
fn server_states(p: &UserPool) -> [usize; 5] {
    let mut n = [0usize; 5];
    for s in p.server_pools() {
        for c in s.connections() {
            n[match c.state() {
                ConnState::Active => 0,
                ConnState::Idle => 1,
                ConnState::Used => 2,
                ConnState::Tested => 3,
            }] += 1;
        }
        n[4] += s.login_count();
    }
    n
}

fn pools_table(shared: &Shared, pools: &[&Arc<UserPool>]) -> Table {
    let mut table = Table::new(&[
        Col::Text("database"),
        Col::Text("user"),
        Col::Text("pool_mode"),
        Col::Int("cl_idle"),
        Col::Int("cl_active"),
        Col::Int("cl_waiting"),
        Col::Int("cl_cancel_req"),
        Col::Int("sv_active"),
        Col::Int("sv_idle"),
        Col::Int("sv_used"),
        Col::Int("sv_tested"),
        Col::Int("sv_login"),
        Col::Int("maxwait"),
        Col::Int("maxwait_us"),
    ]);
    let clients = shared.clients.list();
    for p in pools {
        let mut cl = [0usize; 3];
        let mut maxwait = 0u64;
        for c in clients
            .iter()
            .filter(|c| c.database == p.database && c.user == p.user)
        {
            cl[c.state() as usize] += 1;
            maxwait = maxwait.max(c.waiting_us());
        }
        let sv = server_states(p);
        table.row(vec![
            t(&p.database),
            t(&p.user),
            t(p.settings.pool_mode),
            t(cl[ClientState::Idle as usize]),
            t(cl[ClientState::Active as usize]),
            t(cl[ClientState::Waiting as usize]),
            t(0),
            t(sv[0]),
            t(sv[1]),
            t(sv[2]),
            t(sv[3]),
            t(sv[4]),
            t(maxwait / 1_000_000),
            t(maxwait % 1_000_000),
        ]);
    }
    table
}

const TOTAL_COLUMNS: [&str; 8] = [
    "total_xact_count",
    "total_query_count",
    "total_received",
    "total_sent",
    "total_xact_time",
    "total_query_time",
    "total_wait_time",
    "total_errors",
];

const AVG_COLUMNS: [&str; 8] = [
    "avg_xact_count",
    "avg_query_count",
    "avg_recv",
    "avg_sent",
    "avg_errors",
    "avg_xact_time",
    "avg_query_time",
    "avg_wait_time",
];

fn total_values(x: &Totals) -> [u64; 8] {
    [
        x.xact_count,
        x.query_count,
        x.bytes_received,
        x.bytes_sent,
        x.xact_time_us,
        x.query_time_us,
        x.wait_time_us,
        x.errors,
    ]
}

fn avg_values(x: &Totals) -> [u64; 8] {
    [
        x.xact_count,
        x.query_count,
        x.bytes_received,
        x.bytes_sent,
        x.errors,
        x.xact_time_us,
        x.query_time_us,
        x.wait_time_us,
    ]
}

/// PgCat's `SHOW STATS`. On the `pgcat` console query and transaction times are in milliseconds, as PgCat counts
/// them (its wait times are microseconds); on `pgbouncer` everything is in microseconds, as PgBouncer's.
fn stats(pools: &[&Arc<UserPool>], console: crate::admin::Console) -> Table {
    let mut cols = vec![
        Col::Text("instance"),
        Col::Text("database"),
        Col::Text("user"),
    ];
    cols.extend(TOTAL_COLUMNS.iter().map(|c| Col::Int(c)));
    cols.extend(AVG_COLUMNS.iter().map(|c| Col::Int(c)));
    let mut table = Table::new(&cols);
    for p in pools {
        for s in p.server_pools() {
            let mut row = vec![s.address.name(), t(&p.database), t(&p.user)];
            let (mut totals, mut averages) = (s.stats.totals(), s.stats.averages());
            if console == crate::admin::Console::PgCat {
                for x in [&mut totals, &mut averages] {
                    x.query_time_us /= 1000;
                    x.xact_time_us /= 1000;
                }
            }
            row.extend(total_values(&totals).iter().map(t));
            row.extend(avg_values(&averages).iter().map(t));
            table.row(row);
        }
    }
    table
}

/// PgBouncer's `SHOW STATS_TOTALS` / `SHOW STATS_AVERAGES`: one row per database.
fn per_database(pools: &[&Arc<UserPool>], averages: bool) -> Table {
    let names = [
        "xact_count",
        "query_count",
        "bytes_received",
        "bytes_sent",
        "xact_time",
        "query_time",
        "wait_time",
    ];
    let mut cols = vec![Col::Text("database")];
    cols.extend(names.iter().map(|c| Col::Int(c)));
    let mut table = Table::new(&cols);
    let mut by_db: BTreeMap<&str, (Totals, Totals)> = BTreeMap::new();
    for p in pools {
        let entry = by_db.entry(&p.database).or_default();
        for s in p.server_pools() {
            entry.0 += s.stats.totals();
            entry.1 += s.stats.averages();
        }
    }
    for (db, (totals, avgs)) in by_db {
        let x = if averages { avgs } else { totals };
        let mut row = vec![t(db)];
        row.extend(total_values(&x)[..7].iter().map(t));
        table.row(row);
    }
    table
}

fn clients(shared: &Shared) -> Table {
    let mut table = Table::new(&[
        Col::Text("client_id"),
        Col::Text("database"),
        Col::Text("user"),
        Col::Text("application_name"),
        Col::Text("state"),
        Col::Int("transaction_count"),
        Col::Int("query_count"),
        Col::Int("error_count"),
        Col::Int("age_seconds"),
        Col::Int("maxwait"),
        Col::Int("maxwait_us"),
    ]);
    for c in shared.clients.list() {
        let maxwait = ConnInfo::get(&c.max_wait_us).max(c.waiting_us());
        table.row(vec![
            format!("#c{}", c.id),
            t(&c.database),
            t(&c.user),
            t(&c.application_name),
            t(c.state().as_str()),
            t(ConnInfo::get(&c.xact_count)),
            t(ConnInfo::get(&c.query_count)),
            t(ConnInfo::get(&c.error_count)),
            t(c.connected.elapsed().as_secs()),
            t(maxwait / 1_000_000),
            t(maxwait % 1_000_000),
        ]);
    }
    table
}

fn servers(pools: &[&Arc<UserPool>]) -> Table {
    let mut table = Table::new(&[
        Col::Text("server_id"),
        Col::Text("database_name"),
        Col::Text("user"),
        Col::Text("address_id"),
        Col::Text("application_name"),
        Col::Text("state"),
        Col::Int("transaction_count"),
        Col::Int("query_count"),
        Col::Int("bytes_sent"),
        Col::Int("bytes_received"),
        Col::Int("age_seconds"),
        Col::Int("prepare_cache_hit"),
        Col::Int("prepare_cache_miss"),
        Col::Int("prepare_cache_eviction"),
        Col::Int("prepare_cache_size"),
    ]);
    for p in pools {
        for s in p.server_pools() {
            for c in s.connections() {
                let g = ConnInfo::get;
                table.row(vec![
                    format!("#s{}", c.id),
                    t(&s.address.database),
                    t(&p.user),
                    s.address.name(),
                    t("ocelot"),
                    t(c.state().as_str()),
                    t(g(&c.xact_count)),
                    t(g(&c.query_count)),
                    t(g(&c.bytes_sent)),
                    t(g(&c.bytes_received)),
                    t(c.created.elapsed().as_secs()),
                    t(g(&c.prepare_hits)),
                    t(g(&c.prepare_misses)),
                    t(g(&c.prepare_evictions)),
                    t(g(&c.prepare_size)),
                ]);
            }
        }
    }
    table
}

fn lists(shared: &Shared, pools: &[&Arc<UserPool>]) -> Table {
    let mut table = Table::new(&[Col::Text("list"), Col::Int("items")]);
    let mut dbs: Vec<&str> = pools.iter().map(|p| p.database.as_str()).collect();
    dbs.dedup();
    let mut users: Vec<&str> = pools.iter().map(|p| p.user.as_str()).collect();
    users.sort();
    users.dedup();
    let clients = shared.clients.list();
    let free_clients = clients
        .iter()
        .filter(|c| c.state() == ClientState::Idle)
        .count();
    let (mut free_servers, mut used_servers) = (0, 0);
    for p in pools {
        let sv = server_states(p);
        free_servers += sv[1];
        used_servers += sv[0] + sv[2] + sv[3];
    }
    let rows: [(&str, usize); 12] = [
        ("databases", dbs.len()),
        ("users", users.len()),
        ("pools", pools.len()),
        ("free_clients", free_clients),
        ("used_clients", clients.len() - free_clients),
        ("login_clients", 0),
        ("free_servers", free_servers),
        ("used_servers", used_servers),
        ("dns_names", 0),
        ("dns_zones", 0),
        ("dns_queries", 0),
        ("dns_pending", 0),
    ];
    for (k, v) in rows {
        table.row(vec![t(k), t(v)]);
    }
    table
}

fn users(pools: &[&Arc<UserPool>]) -> Table {
    let mut table = Table::new(&[Col::Text("name"), Col::Text("pool_mode")]);
    for p in pools {
        table.row(vec![t(&p.user), t(p.settings.pool_mode)]);
    }
    table
}

fn bans(pools: &[&Arc<UserPool>]) -> Table {
    let mut table = Table::new(&[
        Col::Text("db"),
        Col::Text("user"),
        Col::Text("role"),
        Col::Text("host"),
        Col::Text("reason"),
        Col::Int("ban_time"),
        Col::Int("ban_duration_seconds"),
        Col::Int("ban_remaining_seconds"),
    ]);
    for p in pools {
        for s in p.server_pools() {
            if let Some((ban, left_ms)) = s.ban_state() {
                let at = ban
                    .at
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or(0);
                let a = &s.address;
                table.row(vec![
                    t(&a.pool),
                    t(&a.user),
                    t(a.role),
                    t(&a.host),
                    ban.reason,
                    t(at),
                    t(ban.duration),
                    t(left_ms.div_ceil(1000)),
                ]);
            }
        }
    }
    table
}
