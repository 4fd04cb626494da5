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
    // The admin connection asking is listed too, as PgCat lists it (its stats_spec counts it).
    let console = rows_where(&clients, "database", "pgcat");
    assert_eq!(console.len(), 1, "{:?}", clients.1);
    assert_eq!(admin_value(&clients, console[0], "user"), "admin");
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
    // As in PgCat, the rows are what changed: banning again or unbanning twice gives none.
    assert!(admin(port, "BAN localhost 60").1.is_empty());
    assert_eq!(admin(port, "UNBAN localhost").1.len(), 3);
    assert!(admin(port, "UNBAN localhost").1.is_empty());
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
    assert!(err.contains("Unsupported admin command"), "{err}");
    let err = admin_psql(port, "SHOW NOTHING").unwrap_err();
    assert!(err.contains("Unsupported SHOW"), "{err}");
    let err = admin_psql(port, "PAUSE nosuchdb").unwrap_err();
    assert!(err.contains("does not exist"), "{err}");
    let (ok, _, help) = run_tool(admin_psql_command(port, "pgbouncer", "admin", "SHOW HELP"));
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
    // PgCat's answers to bad commands (its specs expect PG::SystemError): SQLSTATE 58000, "Unsupported".
    for bad in [
        "SHOW ME THE MONEY",
        "SHOWTIME",
        "HAMMER TIME",
        "SHOW ",
        "SHOW 1",
        ";;;;;",
        "BAN",
        "BAN a",
        "BAN a a",
        "BAN a -5",
        "BAN a 0",
        "BAN a 1 a",
        "UNBAN",
        "PAUSE foo",
        "PAUSE foo,bar",
    ] {
        let e = a.simple_query(bad).await.unwrap_err();
        assert_eq!(e.code().map(|c| c.code()), Some("58000"), "{bad}: {e}");
        if bad.starts_with("SHOW") || !bad.contains(' ') && !bad.contains("BAN") {
            assert!(format!("{e:?}").contains("Unsupported"), "{bad}: {e:?}");
        }
    }
    assert_eq!(
        rows_of(&a.simple_query("SHOW VERSION").await.unwrap()).len(),
        1
    );
}

/// A config with pool `app` (users postgres and md5user, read/write splitting) and, when `extra`, pool `extra`.
fn reload_config(
    pg: &Postgres,
    replica: Option<&Postgres>,
    pool_size: u32,
    md5_password: &str,
    extra: bool,
) -> String {
    let mut servers = format!("[\"127.0.0.1\", {}, \"primary\"]", pg.port);
    if let Some(r) = replica {
        servers.push_str(&format!(", [\"127.0.0.1\", {}, \"replica\"]", r.port));
    }
    let mut text = format!(
        r#"
[general]
host = "127.0.0.1"
port = 0
admin_username = "admin"
admin_password = "admin"
connect_timeout = 5000

[pools.app]
query_parser_enabled = true
query_parser_read_write_splitting = true

[pools.app.users.0]
username = "postgres"
auth_type = "trust"
pool_size = {pool_size}

[pools.app.users.1]
username = "{md5u}"
password = "{md5_password}"
server_password = "{md5p}"
auth_type = "md5"
pool_size = 5

[pools.app.shards.0]
database = "app"
servers = [{servers}]
"#,
        md5u = MD5_USER.0,
        md5p = MD5_USER.1,
    );
    if extra {
        text.push_str(&format!(
            r#"
[pools.extra]
[pools.extra.users.0]
username = "postgres"
auth_type = "trust"
pool_size = 2
[pools.extra.shards.0]
database = "app"
servers = [["127.0.0.1", {}, "primary"]]
"#,
            pg.port
        ));
    }
    text
}

/// Server ids of `user`'s connections to the primary.
fn primary_server_ids(port: u16, user: &str) -> Vec<String> {
    let servers = admin(port, "SHOW SERVERS");
    servers
        .1
        .iter()
        .filter(|r| {
            admin_value(&servers, r, "user") == user
                && admin_value(&servers, r, "address_id").contains("primary")
        })
        .map(|r| r[0].clone())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_under_pgbench_load_drops_nothing() {
    let pg = Postgres::start();
    let replica = Postgres::replica_of(&pg);
    let dir = std::env::temp_dir().join(format!("ocelot-reload-{}", free_port()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("pgcat.toml");
    std::fs::write(&path, reload_config(&pg, None, 5, "md5pass", true)).unwrap();
    let loaded = ocelot::config::Config::load(&path).unwrap();
    let proxy = ocelot::app::Proxy::start_from(loaded.config, Some(path.clone()))
        .await
        .unwrap();
    let port = proxy.local_addr().port();
    pgbench_init(port).await;
    pg.wait_replicated(&[&replica]);

    let extra = connect(port, "postgres", None, "extra").await.unwrap();
    let md5 = connect(port, MD5_USER.0, Some("md5pass"), "app")
        .await
        .unwrap();
    md5.simple_query("SELECT 1").await.unwrap();
    let md5_servers = primary_server_ids(port, MD5_USER.0);
    assert_eq!(md5_servers.len(), 1);

    let bench = tokio::task::spawn_blocking(move || {
        pgbench(port, &["-c", "50", "-j", "2", "-T", "10", "-n"])
    });
    tokio::time::sleep(Duration::from_secs(3)).await;

    // Add a replica, grow pool_size, change md5user's password, remove pool `extra`.
    std::fs::write(
        &path,
        reload_config(&pg, Some(&replica), 8, "newpass", false),
    )
    .unwrap();
    admin(port, "RELOAD");
    let dbs = admin(port, "SHOW DATABASES");
    let app: Vec<_> = dbs
        .1
        .iter()
        .filter(|r| admin_value(&dbs, r, "force_user") == "postgres")
        .collect();
    assert_eq!(app.len(), 2, "{:?}", dbs.1);
    assert!(app.iter().all(|r| num(&dbs, r, "pool_size") == 8));
    assert!(app
        .iter()
        .any(|r| admin_value(&dbs, r, "name").contains("replica")));
    let pools = admin(port, "SHOW POOLS");
    assert!(rows_where(&pools, "database", "extra").is_empty());
    // md5user's server pool did not change: its connection was kept.
    assert_eq!(primary_server_ids(port, MD5_USER.0), md5_servers);
    // The new password logs in, the old one no longer does; clients already in keep going.
    connect(port, MD5_USER.0, Some("newpass"), "app")
        .await
        .unwrap();
    let e = connect(port, MD5_USER.0, Some("md5pass"), "app")
        .await
        .unwrap_err();
    assert_eq!(e.code().map(|c| c.code()), Some("28P01"));
    md5.simple_query("SELECT 1").await.unwrap();
    assert_eq!(first_value(&extra, "SELECT 41 + 1").await, "42");
    // Reads now go to the new replica.
    let reader = connect(port, "postgres", None, "app").await.unwrap();
    assert_eq!(
        first_value(&reader, "SELECT pg_is_in_recovery()::text").await,
        "true"
    );

    // An invalid file is refused and everything goes on with the config in force.
    tokio::time::sleep(Duration::from_secs(1)).await;
    std::fs::write(&path, "[general]\nport = \"not a number\"\n").unwrap();
    let err = admin_psql(port, "RELOAD").unwrap_err();
    assert!(err.contains("config not reloaded"), "{err}");
    assert_eq!(first_value(&reader, "SELECT 1").await, "1");

    let (ok, out, err) = bench.await.unwrap();
    assert!(ok, "pgbench failed: {out}\n{err}");
    assert!(out.contains("number of failed transactions: 0 "), "{out}");
    let processed: u64 = out
        .lines()
        .find_map(|l| l.strip_prefix("number of transactions actually processed: "))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    assert!(processed > 100, "{out}");
    eprintln!(
        "reload under load: {processed} transactions, 0 failed; {}",
        out.lines()
            .find(|l| l.starts_with("tps"))
            .unwrap_or_default()
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Server backends of user postgres on database app, by pid.
fn app_backends(pg: &Postgres) -> Vec<String> {
    pg.psql_admin(
        "SELECT pid FROM pg_stat_activity WHERE datname = 'app' AND usename = 'postgres' AND backend_type = 'client backend' ORDER BY pid",
    )
    .lines()
    .filter(|l| !l.is_empty())
    .map(str::to_owned)
    .collect()
}

/// A reload that changes only pool_size keeps the pool's connections and the server never sees more than the
/// larger size; after a shrink it comes down to the new size as clients return connections.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reloading_pool_size_keeps_connections_and_never_exceeds_it() {
    let pg = Postgres::start();
    let dir = std::env::temp_dir().join(format!("ocelot-resize-{}", free_port()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("pgcat.toml");
    std::fs::write(&path, reload_config(&pg, None, 5, "md5pass", false)).unwrap();
    let loaded = ocelot::config::Config::load(&path).unwrap();
    let proxy = ocelot::app::Proxy::start_from(loaded.config, Some(path.clone()))
        .await
        .unwrap();
    let port = proxy.local_addr().port();
    pgbench_init(port).await;
    let bench = tokio::task::spawn_blocking(move || {
        pgbench(port, &["-S", "-c", "20", "-j", "2", "-T", "9", "-n"])
    });
    // Sampling blocks: block_in_place hands this worker's other tasks (the proxy's) to another thread.
    let sample =
        |pg: &Postgres, until: Duration| tokio::task::block_in_place(|| sample_backends(pg, until));
    fn sample_backends(pg: &Postgres, until: Duration) -> usize {
        let end = std::time::Instant::now() + until;
        let mut max = 0;
        while std::time::Instant::now() < end {
            max = max.max(app_backends(pg).len());
            std::thread::sleep(Duration::from_millis(250));
        }
        max
    }
    let before_max = sample(&pg, Duration::from_secs(2));
    let before = app_backends(&pg);
    std::fs::write(&path, reload_config(&pg, None, 8, "md5pass", false)).unwrap();
    admin(port, "RELOAD");
    let grown_max = sample(&pg, Duration::from_secs(2));
    let grown = app_backends(&pg);
    assert!(
        before.iter().all(|pid| grown.contains(pid)),
        "connections were replaced: {before:?} then {grown:?}"
    );
    std::fs::write(&path, reload_config(&pg, None, 3, "md5pass", false)).unwrap();
    admin(port, "RELOAD");
    let shrinking_max = sample(&pg, Duration::from_secs(1));
    let shrunk_max = sample(&pg, Duration::from_secs(2));
    let (ok, out, err) = bench.await.unwrap();
    assert!(ok, "pgbench failed: {out}\n{err}");
    assert!(out.contains("number of failed transactions: 0 "), "{out}");
    eprintln!("server connections: at most {before_max} at 5, {grown_max} at 8, {shrinking_max} while shrinking, {shrunk_max} at 3");
    assert!(before_max <= 5, "{before_max} connections with pool_size 5");
    assert!(grown_max <= 8, "{grown_max} connections with pool_size 8");
    assert!(grown_max > 5, "the pool did not grow: {grown_max}");
    assert!(
        shrinking_max <= 8,
        "{shrinking_max} connections while shrinking"
    );
    assert!(shrunk_max <= 3, "{shrunk_max} connections with pool_size 3");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Scrapes `/metrics` and parses it with prometheus-client's parser: (family types, samples).
fn scrape(addr: std::net::SocketAddr) -> serde_json::Value {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/ops/prom_parse.py");
    let mut c = std::process::Command::new("python3");
    c.arg(script).arg(format!("http://{addr}/metrics"));
    let (ok, out, err) = run_tool(c);
    assert!(ok, "scrape failed: {err}");
    serde_json::from_str(&out).expect("parser output")
}

/// The sum of the samples of `name` whose labels include every (key, value) of `labels`. (The Python parser
/// names counter samples `<family>_total` whatever the exposition said.)
fn metric(scraped: &serde_json::Value, name: &str, labels: &[(&str, &str)]) -> f64 {
    let total = format!("{name}_total");
    scraped["samples"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s[0] == name || (!name.ends_with("_total") && s[0] == total.as_str()))
        .filter(|s| labels.iter().all(|(k, v)| s[1][*k] == *v))
        .map(|s| s[2].as_f64().unwrap())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_metrics_parse_and_follow_traffic() {
    let pg = Postgres::start();
    let toml = config_toml(
        pg.port,
        4,
        "enable_prometheus_exporter = true\nprometheus_exporter_port = 0",
        "query_parser_enabled = true\nquery_parser_read_write_splitting = true",
    );
    let proxy = start_proxy(&toml).await;
    let port = proxy.local_addr().port();
    let addr = *proxy.shared().metrics_addr.get().expect("exporter started");
    let c = connect(port, "postgres", None, "app").await.unwrap();
    c.simple_query(HOUSE_SQL).await.unwrap();
    c.simple_query(
        "SELECT * FROM pgml.train('houses', 'regression', 'house', 'price', algorithm => 'linear')",
    )
    .await
    .unwrap();

    let before = scrape(addr);
    for (family, kind) in [
        ("pgcat_stats_total_query_count", "counter"),
        ("pgcat_stats_avg_query_time", "gauge"),
        ("pgcat_pools_cl_idle", "gauge"),
        ("pgcat_servers_bytes_sent", "counter"),
        ("pgcat_databases_pool_size", "gauge"),
        ("ocelot_model_predictions", "counter"),
        ("ocelot_reloads", "counter"),
    ] {
        assert_eq!(before["families"][family], kind, "{family}");
    }
    let me = [("pool", "app"), ("username", "postgres")];
    let q0 = metric(&before, "pgcat_stats_total_query_count", &me);
    let sent0 = metric(&before, "pgcat_servers_bytes_sent", &me);
    assert_eq!(
        metric(&before, "pgcat_databases_pool_size", &me),
        4.0,
        "labels: host, shard, pool, role, index, database, username"
    );
    assert_eq!(
        metric(
            &before,
            "pgcat_pools_cl_idle",
            &[("pool", "app"), ("user", "postgres")]
        ),
        1.0
    );

    for _ in 0..25 {
        c.simple_query("SELECT 1").await.unwrap();
    }
    for _ in 0..10 {
        c.simple_query("SELECT pgml.predict('houses', ARRAY[100, 3, 10])")
            .await
            .unwrap();
    }
    let after = scrape(addr);
    assert_eq!(
        metric(&after, "pgcat_stats_total_query_count", &me) - q0,
        25.0
    );
    // The read/write router parsed `SELECT 1` once and took it from the client's cache afterwards.
    let pool_user = [("pool", "app"), ("user", "postgres")];
    assert!(
        metric(&after, "ocelot_route_cache_hits", &pool_user)
            - metric(&before, "ocelot_route_cache_hits", &pool_user)
            >= 24.0
    );
    assert_eq!(before["families"]["ocelot_fanout_queries"], "counter");
    assert!(metric(&after, "pgcat_servers_bytes_sent", &me) >= sent0 + 25.0 * 14.0);
    assert_eq!(
        metric(
            &after,
            "ocelot_model_predictions_total",
            &[("project", "houses")]
        ),
        10.0
    );
    assert_eq!(
        metric(&after, "ocelot_model_loaded", &[("project", "houses")]),
        1.0
    );
    // Every metric the Grafana dashboard in the repository plots is exported.
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/grafana_dashboard.json"
        ))
        .unwrap(),
    )
    .unwrap();
    let exported: Vec<String> = after["samples"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s[0].as_str().unwrap().to_owned())
        .collect();
    let mut used = 0;
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"].as_str().unwrap();
            for word in expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
                if word.starts_with("pgcat_") || word.starts_with("ocelot_") {
                    used += 1;
                    let plain = word.trim_end_matches("_total");
                    assert!(
                        exported
                            .iter()
                            .any(|e| e.trim_end_matches("_total") == plain),
                        "the dashboard uses {word}, which is not exported"
                    );
                }
            }
        }
    }
    assert!(used > 20, "{used}");
    // Paths other than /metrics and the dashboard's are 404.
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    s.write_all(b"GET /nothing HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).await.unwrap();
    assert!(resp.starts_with("HTTP/1.1 404"), "{resp}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_query_fetches_md5_and_scram_secrets_and_follows_rotation() {
    let pg = Postgres::start();
    // Only postgres is listed with credentials; scramuser is listed without a password; md5user is not listed.
    let toml = format!(
        r#"
[general]
host = "127.0.0.1"
port = 0
admin_username = "admin"
admin_password = "admin"
auth_query = "SELECT usename, passwd FROM pg_shadow WHERE usename='$1'"
auth_query_user = "postgres"
auth_query_password = "unused-with-trust"

[pools.app]
[pools.app.users.0]
username = "postgres"
auth_type = "trust"
pool_size = 2
[pools.app.users.1]
username = "{scu}"
pool_size = 3
[pools.app.shards.0]
database = "app"
servers = [["127.0.0.1", {port}, "primary"]]
"#,
        scu = SCRAM_USER.0,
        port = pg.port
    );
    let proxy = start_proxy(&toml).await;
    let port = proxy.local_addr().port();
    let who = "SELECT current_user::text";
    // The server asks md5 of md5user and SCRAM of scramuser: Ocelot logs in with the fetched hash and with the
    // keys from the client's own SCRAM exchange.
    let m = connect(port, MD5_USER.0, Some(MD5_USER.1), "app")
        .await
        .unwrap();
    assert_eq!(first_value(&m, who).await, MD5_USER.0);
    let s = connect(port, SCRAM_USER.0, Some(SCRAM_USER.1), "app")
        .await
        .unwrap();
    assert_eq!(first_value(&s, who).await, SCRAM_USER.0);
    for (user, pw) in [
        (MD5_USER.0, "wrong"),
        (SCRAM_USER.0, "wrong"),
        ("nobody", "x"),
    ] {
        let e = connect(port, user, Some(pw), "app")
            .await
            .map(|_| ())
            .unwrap_err();
        assert_eq!(e.code().map(|c| c.code()), Some("28P01"), "{user}: {e:?}");
    }
    let dbs = admin(port, "SHOW DATABASES");
    let size = |u: &str| {
        dbs.1
            .iter()
            .find(|r| admin_value(&dbs, r, "force_user") == u)
            .map(|r| num(&dbs, r, "pool_size"))
    };
    assert_eq!(
        size(MD5_USER.0),
        Some(10),
        "auth_query_pool_size for unlisted users"
    );
    assert_eq!(
        size(SCRAM_USER.0),
        Some(3),
        "a listed user keeps its settings"
    );

    // Rotation on the server: the next login needs the new password; connected clients carry on.
    pg.psql_admin(&format!(
        "SET password_encryption = 'md5'; ALTER ROLE {} PASSWORD 'rotated1';
         SET password_encryption = 'scram-sha-256'; ALTER ROLE {} PASSWORD 'rotated2';",
        MD5_USER.0, SCRAM_USER.0
    ));
    for (user, old, new) in [
        (MD5_USER.0, MD5_USER.1, "rotated1"),
        (SCRAM_USER.0, SCRAM_USER.1, "rotated2"),
    ] {
        let e = connect(port, user, Some(old), "app")
            .await
            .map(|_| ())
            .unwrap_err();
        assert_eq!(e.code().map(|c| c.code()), Some("28P01"), "{user}");
        let c = connect(port, user, Some(new), "app").await.unwrap();
        assert_eq!(first_value(&c, who).await, user);
    }
    assert_eq!(first_value(&m, "SELECT 1").await, "1");
    assert_eq!(first_value(&s, "SELECT 1").await, "1");
}

/// PgCat's auth_query_spec "with wrong parameters ... it uses local passwords": an auth_query that cannot work
/// does not stop users whose passwords are in the config.
#[tokio::test]
async fn a_broken_auth_query_leaves_local_passwords_working() {
    let pg = Postgres::start();
    let toml = config_toml(
        pg.port,
        2,
        "auth_query = \"SELECT 1\"\nauth_query_user = \"wrong_user\"\nauth_query_password = \"wrong\"",
        "",
    );
    let proxy = start_proxy(&toml).await;
    let port = proxy.local_addr().port();
    for (user, pw) in [MD5_USER, SCRAM_USER] {
        let c = connect(port, user, Some(pw), "app").await.unwrap();
        assert_eq!(first_value(&c, "SELECT 1 + 2").await, "3", "{user}");
    }
    let c = connect(port, "postgres", None, "app").await.unwrap();
    assert_eq!(first_value(&c, "SELECT 1 + 2").await, "3");
}

/// PgCat's auth_query_spec "allows passwords to be changed and that new password is needed when reconnecting": a
/// user with a password in the config whose password then changes on the server logs in with the new one, checked
/// against what auth_query fetches, and its queries run on servers logged in with the new secret.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_password_changed_on_the_server_is_the_one_that_works() {
    let pg = Postgres::start();
    let toml = config_toml(
        pg.port,
        2,
        "auth_query = \"SELECT usename, passwd FROM pg_shadow WHERE usename='$1'\"\nauth_query_user = \"postgres\"\nauth_query_password = \"unused-with-trust\"",
        "",
    );
    let proxy = start_proxy(&toml).await;
    let port = proxy.local_addr().port();
    let (user, configured) = MD5_USER;
    let c = connect(port, user, Some(configured), "app").await.unwrap();
    assert_eq!(first_value(&c, "SELECT 1 + 2").await, "3");
    tokio::task::block_in_place(|| {
        pg.psql_admin(&format!(
            "SET password_encryption = 'md5'; ALTER ROLE {user} PASSWORD 'changed-on-server'"
        ))
    });
    let n = connect(port, user, Some("changed-on-server"), "app")
        .await
        .unwrap();
    assert_eq!(first_value(&n, "SELECT current_user::text").await, user);
    let e = connect(port, user, Some("neither"), "app")
        .await
        .map(|_| ())
        .unwrap_err();
    assert_eq!(e.code().map(|c| c.code()), Some("28P01"), "{e:?}");
    // The connection made before the change carries on.
    assert_eq!(first_value(&c, "SELECT 1 + 4").await, "5");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgcat_plugins_intercept_deny_log_and_prewarm() {
    capture_logs("info");
    let pg = Postgres::start();
    pg.psql_admin_db(
        "app",
        "CREATE TABLE secrets (x int); CREATE TABLE prewarm_log (pid int); GRANT ALL ON prewarm_log TO PUBLIC;",
    );
    let plugins = r#"query_parser_enabled = true

[pools.app.plugins.query_logger]
enabled = true

[pools.app.plugins.intercept]
enabled = true
[pools.app.plugins.intercept.queries.0]
query = "select * from pg_catalog.ide_metadata"
schema = [["name", "text"], ["n", "int4"]]
result = [["${DATABASE}", "1"], ["${USER}", "2"]]

[pools.app.plugins.table_access]
enabled = true
tables = ["secrets"]

[pools.app.plugins.prewarmer]
enabled = true
queries = ["INSERT INTO prewarm_log VALUES (pg_backend_pid())"]
"#;
    let toml = config_toml(pg.port, 3, "", "")
        .replace("[pools.app]\n", &format!("[pools.app]\n{plugins}"));
    let proxy = start_proxy(&toml).await;
    let port = proxy.local_addr().port();
    let c = connect(port, "postgres", None, "app").await.unwrap();

    // intercept: answered from the config, matched case- and space-insensitively.
    let rows = rows_of(
        &c.simple_query("  SELECT * FROM pg_catalog.IDE_METADATA;")
            .await
            .unwrap(),
    );
    assert_eq!(
        rows,
        vec![
            vec![Some("app".into()), Some("1".into())],
            vec![Some("postgres".into()), Some("2".into())]
        ]
    );

    // table_access: refused in the simple and extended protocols, outside and inside a transaction.
    let code = |e: tokio_postgres::Error| e.code().map(|c| c.code().to_owned());
    let e = c.simple_query("SELECT * FROM secrets").await.unwrap_err();
    assert!(e
        .as_db_error()
        .unwrap()
        .message()
        .contains("permission for table \"secrets\" denied"));
    assert_eq!(code(e).as_deref(), Some("42501"));
    let e = c
        .query("SELECT x FROM public.secrets WHERE x = $1", &[&1i32])
        .await
        .unwrap_err();
    assert_eq!(code(e).as_deref(), Some("42501"));
    assert_eq!(first_value(&c, "SELECT 40 + 2").await, "42");
    c.simple_query("BEGIN").await.unwrap();
    let e = c
        .simple_query("SELECT count(*) FROM secrets")
        .await
        .unwrap_err();
    assert_eq!(code(e).as_deref(), Some("42501"));
    let e = c.simple_query("SELECT 1").await.unwrap_err();
    assert_eq!(
        code(e).as_deref(),
        Some("25P02"),
        "the transaction is aborted on the server too"
    );
    c.simple_query("ROLLBACK").await.unwrap();

    // prewarmer: one row per server connection opened.
    let others: Vec<_> =
        futures_util::future::join_all((0..3).map(|_| connect(port, "postgres", None, "app")))
            .await;
    let others: Vec<_> = others.into_iter().map(Result::unwrap).collect();
    futures_util::future::join_all(
        others
            .iter()
            .map(|o| o.simple_query("SELECT pg_sleep(0.2)")),
    )
    .await;
    let servers = admin(port, "SHOW SERVERS").1.len();
    let logged = pg.psql_admin_db("app", "SELECT count(DISTINCT pid) FROM prewarm_log");
    assert_eq!(logged, servers.to_string());
    assert!(servers >= 2, "{servers}");

    // query_logger
    let logs = captured_logs();
    assert!(logs.contains("query: SELECT 40 + 2"), "{logs}");
}

/// SHOW STATS in PgCat's units on the `pgcat` console (query time in ms, as PgCat's stats_spec expects) and in
/// PgBouncer's on `pgbouncer` (µs).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn show_stats_uses_each_consoles_units() {
    let pg = Postgres::start();
    let proxy = start_proxy(&config_toml(pg.port, 2, "", "")).await;
    let port = proxy.local_addr().port();
    let c = connect(port, "postgres", None, "app").await.unwrap();
    c.simple_query("SELECT pg_sleep(0.3)").await.unwrap();
    let total = |db: &str| -> u64 {
        let (ok, out, err) = run_tool(admin_psql_command(port, db, "admin", "SHOW STATS"));
        assert!(ok, "{err}");
        let mut lines = out.lines();
        let header: Vec<&str> = lines.next().unwrap_or_default().split('|').collect();
        let at = header
            .iter()
            .position(|h| *h == "total_query_time")
            .unwrap();
        lines
            .filter_map(|l| l.split('|').nth(at)?.parse::<u64>().ok())
            .sum()
    };
    let ms = tokio::task::block_in_place(|| total("pgcat"));
    let us = tokio::task::block_in_place(|| total("pgbouncer"));
    assert!((300..2000).contains(&ms), "pgcat: {ms} ms");
    assert!((300_000..2_000_000).contains(&us), "pgbouncer: {us} µs");
}
