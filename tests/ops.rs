//! Operations: the admin console from psql (every command, its columns, its effects), live reload under load,
//! and the Prometheus exporter read with a Prometheus text-format parser.

mod common;

use std::time::{Duration, Instant};

use common::*;

const POOLS_COLUMNS: &str = "database,user,pool_mode,cl_idle,cl_active,cl_waiting,cl_cancel_req,sv_active,sv_idle,sv_used,sv_tested,sv_login,maxwait,maxwait_us";
const STATS_COLUMNS: &str = "instance,database,user,total_xact_count,total_query_count,total_received,total_sent,total_xact_time,total_query_time,total_wait_time,total_errors,avg_xact_count,avg_query_count,avg_recv,avg_sent,avg_errors,avg_xact_time,avg_query_time,avg_wait_time";

/// The columns PgCat (and PgBouncer, for what PgCat lacks) gives each command.
const COLUMNS: &[(&str, &str)] = &[
    ("SHOW CONFIG", "key,value,default,changeable"),
    ("SHOW DATABASES", "name,host,port,database,force_user,pool_size,min_pool_size,reserve_pool,pool_mode,max_connections,current_connections,paused,disabled"),
    ("SHOW POOLS", POOLS_COLUMNS),
    ("SHOW STATS", STATS_COLUMNS),
    ("SHOW CLIENTS", "client_id,database,user,application_name,state,transaction_count,query_count,error_count,age_seconds,maxwait,maxwait_us"),
    ("SHOW SERVERS", "server_id,database_name,user,address_id,application_name,state,transaction_count,query_count,bytes_sent,bytes_received,age_seconds,prepare_cache_hit,prepare_cache_miss,prepare_cache_eviction,prepare_cache_size"),
    ("SHOW LISTS", "list,items"),
    ("SHOW USERS", "name,pool_mode"),
    ("SHOW VERSION", "version"),
    ("SHOW BANS", "db,user,role,host,reason,ban_time,ban_duration_seconds,ban_remaining_seconds"),
    ("SHOW STATS_TOTALS", "database,xact_count,query_count,bytes_received,bytes_sent,xact_time,query_time,wait_time"),
    ("SHOW STATS_AVERAGES", "database,xact_count,query_count,bytes_received,bytes_sent,xact_time,query_time,wait_time"),
    ("SHOW MODELS", "database,user,project,model_id,algorithm,bytes,loaded,predictions,mean_latency_us"),
];

fn admin(port: u16, sql: &str) -> AdminResult {
    admin_psql(port, sql).unwrap_or_else(|e| panic!("{sql}: {e}"))
}

/// The rows of `res` whose column `col` is `value`.
fn rows_where<'a>(res: &'a AdminResult, col: &str, value: &str) -> Vec<&'a Vec<String>> {
    res.1
        .iter()
        .filter(|r| admin_value(res, r, col) == value)
        .collect()
}

fn num(res: &AdminResult, row: &[String], col: &str) -> u64 {
    admin_value(res, row, col)
        .parse()
        .unwrap_or_else(|e| panic!("{col}: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_console_shows_pgcat_columns_and_live_figures() {
    let pg = Postgres::start();
    // The same server twice: as the primary, and as a replica under another host name, so BAN has a target.
    let toml = config_toml(pg.port, 4, "", "").replace(
        &format!("servers = [[\"127.0.0.1\", {}, \"primary\"]]", pg.port),
        &format!(
            "servers = [[\"127.0.0.1\", {0}, \"primary\"], [\"localhost\", {0}, \"replica\"]]",
            pg.port
        ),
    );
    let proxy = start_proxy(&toml).await;
    let port = proxy.local_addr().port();
    let c = connect(port, "postgres", None, "app").await.unwrap();
    for _ in 0..20 {
        c.simple_query("SELECT 1").await.unwrap();
    }
    let _ = c.simple_query("SELECT 1/0").await;

    for (cmd, cols) in COLUMNS {
        let (got, _) = admin(port, cmd);
        assert_eq!(got.join(","), *cols, "{cmd}");
    }

    let stats = admin(port, "SHOW STATS");
    let mine = rows_where(&stats, "user", "postgres");
    let queries: u64 = mine
        .iter()
        .map(|r| num(&stats, r, "total_query_count"))
        .sum();
    let xacts: u64 = mine
        .iter()
        .map(|r| num(&stats, r, "total_xact_count"))
        .sum();
    let errors: u64 = mine.iter().map(|r| num(&stats, r, "total_errors")).sum();
    let sent: u64 = mine.iter().map(|r| num(&stats, r, "total_sent")).sum();
    assert!(queries >= 21 && xacts >= 21, "{queries} {xacts}");
    assert_eq!(errors, 1);
    assert!(sent >= 21 * 14, "{sent}");

    let clients = admin(port, "SHOW CLIENTS");
    let me = rows_where(&clients, "user", "postgres");
    assert_eq!(me.len(), 1, "{:?}", clients.1);
    assert_eq!(admin_value(&clients, me[0], "state"), "idle");
    assert!(num(&clients, me[0], "query_count") >= 21);
    assert_eq!(num(&clients, me[0], "error_count"), 1);

    let servers = admin(port, "SHOW SERVERS");
    let xact_sum: u64 = servers
        .1
        .iter()
        .map(|r| num(&servers, r, "transaction_count"))
        .sum();
    assert!(xact_sum >= 21, "{:?}", servers.1);
    assert!(servers
        .1
        .iter()
        .all(|r| admin_value(&servers, r, "state") == "idle"));

    let pools = admin(port, "SHOW POOLS");
    let app = rows_where(&pools, "user", "postgres");
    assert_eq!(num(&pools, app[0], "cl_idle"), 1);
    assert_eq!(num(&pools, app[0], "sv_idle") as usize, servers.1.len());
    assert_eq!(admin_value(&pools, app[0], "pool_mode"), "transaction");

    let dbs = admin(port, "SHOW DATABASES");
    assert_eq!(dbs.1.len(), 6, "two servers for each of three users");
    assert!(dbs.1.iter().all(|r| num(&dbs, r, "pool_size") == 4));
    let users = admin(port, "SHOW USERS");
    assert_eq!(users.1.len(), 3);
    assert!(admin(port, "SHOW VERSION").1[0][0].starts_with("Ocelot "));
    let lists = admin(port, "SHOW LISTS");
    assert_eq!(rows_where(&lists, "list", "pools")[0][1], "3");
    let totals = admin(port, "SHOW STATS_TOTALS");
    assert!(num(&totals, &totals.1[0], "query_count") >= 21);

    // Secrets never show.
    let config = admin(port, "SHOW CONFIG");
    let pw = rows_where(&config, "key", "admin_password");
    assert_eq!(admin_value(&config, pw[0], "value"), "********");
    let port_row = rows_where(&config, "key", "port");
    assert_eq!(admin_value(&config, port_row[0], "changeable"), "no");

    // BAN bans the replica address (never a primary), SHOW BANS lists it, UNBAN lifts it.
    let banned = admin(port, "BAN localhost 60");
    assert_eq!(banned.1.len(), 3, "{:?}", banned.1);
    assert!(banned.1.iter().all(|r| r[2] == "replica"));
    assert!(
        admin(port, "BAN 127.0.0.1 60").1.is_empty(),
        "primaries are never banned"
    );
    let bans = admin(port, "SHOW BANS");
    assert_eq!(bans.1.len(), 3);
    let left = num(&bans, &bans.1[0], "ban_remaining_seconds");
    assert!(left > 50 && left <= 60, "{left}");
    assert_eq!(admin_value(&bans, &bans.1[0], "reason"), "admin ban");
    admin(port, "UNBAN localhost");
    assert!(admin(port, "SHOW BANS").1.is_empty());

    // PAUSE holds new transactions until RESUME.
    admin(port, "PAUSE app");
    let dbs = admin(port, "SHOW DATABASES");
    assert!(dbs.1.iter().all(|r| num(&dbs, r, "paused") == 1));
    let waiting = tokio::spawn(async move {
        let started = Instant::now();
        c.simple_query("SELECT 2").await.unwrap();
        (c, started.elapsed())
    });
    tokio::time::sleep(Duration::from_millis(400)).await;
    let pools = admin(port, "SHOW POOLS");
    let app = rows_where(&pools, "user", "postgres");
    assert_eq!(num(&pools, app[0], "cl_waiting"), 1);
    admin(port, "RESUME app");
    let (c, waited) = waiting.await.unwrap();
    assert!(waited >= Duration::from_millis(400), "{waited:?}");

    // RECONNECT closes the idle server connections.
    admin(port, "RECONNECT app");
    assert!(admin(port, "SHOW SERVERS").1.is_empty());
    c.simple_query("SELECT 1").await.unwrap();
    assert_eq!(admin(port, "SHOW SERVERS").1.len(), 1);

    // KILL disconnects the database's clients.
    admin(port, "KILL app");
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(c.simple_query("SELECT 1").await.is_err());
    assert!(rows_where(&admin(port, "SHOW CLIENTS"), "user", "postgres").is_empty());

    // SET is accepted; anything else is refused with a clear error, and the console goes on.
    admin(port, "SET client_encoding = 'UTF8'");
    let err = admin_psql(port, "SELECT 1").unwrap_err();
    assert!(err.contains("unsupported admin command"), "{err}");
    let err = admin_psql(port, "SHOW NOTHING").unwrap_err();
    assert!(err.contains("unsupported SHOW"), "{err}");
    let err = admin_psql(port, "PAUSE nosuchdb").unwrap_err();
    assert!(err.contains("does not exist"), "{err}");
    let (ok, _, help) = run_tool({
        let mut c = std::process::Command::new("psql");
        c.args([
            "-X",
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-U",
            "admin",
            "-d",
            "pgbouncer",
        ])
        .args(["-c", "SHOW HELP"])
        .env("PGPASSWORD", "admin");
        c
    });
    assert!(
        ok && help.contains("RELOAD") && help.contains("SHOW HELP|CONFIG"),
        "{help}"
    );

    // Only the admin user reaches the console, with its password.
    let e = connect(port, "postgres", None, "pgcat").await.unwrap_err();
    assert_eq!(e.code().map(|c| c.code()), Some("3D000"), "{e:?}");
    let e = connect(port, "admin", Some("wrong"), "pgcat")
        .await
        .unwrap_err();
    assert_eq!(e.code().map(|c| c.code()), Some("28P01"), "{e}");
    // The extended protocol gets an error; the connection stays usable.
    let a = connect(port, "admin", Some("admin"), "pgcat")
        .await
        .unwrap();
    let e = a.query("SHOW POOLS", &[]).await.unwrap_err();
    assert_eq!(e.code().map(|c| c.code()), Some("0A000"), "{e}");
    let v = rows_of(&a.simple_query("SHOW VERSION").await.unwrap());
    assert!(v[0][0].as_deref().unwrap_or_default().starts_with("Ocelot"));
}
