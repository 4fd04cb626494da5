//! A real primary with two real streaming replicas behind Ocelot: read/write splitting, PgCat's routing
//! commands, the three balancing modes, failover when a replica dies under load, its return after the ban, and
//! reads surviving a dead primary.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::common::*;
use tokio_postgres::types::Type;
use tokio_postgres::SimpleQueryMessage;

struct Cluster {
    primary: Postgres,
    replicas: Vec<Postgres>,
}

impl Cluster {
    fn start() -> Cluster {
        let primary = Postgres::start();
        let replicas = vec![
            Postgres::replica_of(&primary),
            Postgres::replica_of(&primary),
        ];
        Cluster { primary, replicas }
    }

    fn config(&self, pool_extra: &str, general_extra: &str) -> String {
        let servers = format!(
            "[\"127.0.0.1\", {}, \"primary\"], [\"127.0.0.1\", {}, \"replica\"], [\"127.0.0.1\", {}, \"replica\"]",
            self.primary.port, self.replicas[0].port, self.replicas[1].port
        );
        format!(
            r#"
[general]
host = "127.0.0.1"
port = 0
admin_username = "admin"
admin_password = "admin"
connect_timeout = 3000
ban_time = 2
{general_extra}

[pools.app]
query_parser_enabled = true
query_parser_read_write_splitting = true
{pool_extra}

[pools.app.users.0]
username = "postgres"
auth_type = "trust"
pool_size = 5

[pools.app.shards.0]
database = "app"
servers = [{servers}]
"#
        )
    }
}

#[tokio::test]
async fn reads_go_to_replicas_and_writes_to_the_primary() {
    let cl = Cluster::start();
    let proxy = start_proxy(&cl.config("", "")).await;
    let c = connect(proxy.local_addr().port(), "postgres", None, "app")
        .await
        .unwrap();
    c.simple_query("CREATE TABLE rw (id int); CREATE SEQUENCE seq")
        .await
        .unwrap();
    for _ in 0..5 {
        assert_eq!(
            first_value(&c, "SELECT pg_is_in_recovery()").await,
            "t",
            "plain SELECT on a replica"
        );
        let r = c
            .query_typed("SELECT pg_is_in_recovery()", &[])
            .await
            .unwrap();
        assert!(r[0].get::<_, bool>(0), "extended SELECT on a replica");
    }
    assert_eq!(
        first_value(
            &c,
            "INSERT INTO rw VALUES (1) RETURNING pg_is_in_recovery()"
        )
        .await,
        "f"
    );
    assert_eq!(
        first_value(
            &c,
            "SELECT nextval('seq')::text || pg_is_in_recovery()::text"
        )
        .await,
        "1false"
    );
    assert_eq!(
        first_value(&c, "SELECT pg_is_in_recovery() FROM rw FOR UPDATE").await,
        "f"
    );
    assert_eq!(
        first_value(
            &c,
            "WITH d AS (DELETE FROM rw RETURNING 1) SELECT pg_is_in_recovery()"
        )
        .await,
        "f"
    );
    // An explicit transaction runs on the primary; a READ ONLY one may use a replica.
    let r = c
        .simple_query("BEGIN; SELECT pg_is_in_recovery(); COMMIT")
        .await
        .unwrap();
    assert!(r
        .iter()
        .any(|m| matches!(m, SimpleQueryMessage::Row(row) if row.get(0) == Some("f"))));
    c.simple_query("BEGIN READ ONLY").await.unwrap();
    assert_eq!(first_value(&c, "SELECT pg_is_in_recovery()").await, "t");
    c.simple_query("COMMIT").await.unwrap();
    // Pipelined requests (one connection, no waiting between them) are each routed on their own.
    for _ in 0..5 {
        let (read, write) = tokio::join!(
            c.query_typed("SELECT pg_is_in_recovery()", &[]),
            c.query_typed(
                "INSERT INTO rw VALUES (5) RETURNING pg_is_in_recovery()",
                &[]
            )
        );
        assert!(
            read.unwrap()[0].get::<_, bool>(0),
            "pipelined read on a replica"
        );
        assert!(
            !write.unwrap()[0].get::<_, bool>(0),
            "pipelined write on the primary"
        );
    }
    c.simple_query("DELETE FROM rw").await.unwrap();
    // Unparsable goes to the primary (and fails there, as it would directly).
    assert!(c.simple_query("SELEC pg_is_in_recovery()").await.is_err());
    // Written rows are readable from the replicas once replayed: routing never changes what a query returns.
    c.simple_query("INSERT INTO rw SELECT generate_series(1, 100)")
        .await
        .unwrap();
    cl.primary
        .wait_replicated(&[&cl.replicas[0], &cl.replicas[1]]);
    for _ in 0..4 {
        assert_eq!(first_value(&c, "SELECT count(*) FROM rw").await, "100");
    }
}

#[tokio::test]
async fn pgcat_routing_commands() {
    let cl = Cluster::start();
    let proxy = start_proxy(&cl.config("", "")).await;
    let c = connect(proxy.local_addr().port(), "postgres", None, "app")
        .await
        .unwrap();
    let show = |r: Vec<SimpleQueryMessage>| -> (String, String) {
        let name = r
            .iter()
            .find_map(|m| match m {
                SimpleQueryMessage::RowDescription(d) => Some(d[0].name().to_owned()),
                _ => None,
            })
            .unwrap_or_default();
        let value = r
            .iter()
            .find_map(|m| match m {
                SimpleQueryMessage::Row(row) => row.get(0).map(str::to_owned),
                _ => None,
            })
            .unwrap_or_default();
        (name, value)
    };
    assert_eq!(
        show(c.simple_query("SHOW SERVER ROLE").await.unwrap()),
        ("server role".into(), "auto".into())
    );
    c.simple_query("SET SERVER ROLE TO 'primary'")
        .await
        .unwrap();
    assert_eq!(
        show(c.simple_query("SHOW SERVER ROLE").await.unwrap()).1,
        "primary"
    );
    assert_eq!(first_value(&c, "SELECT pg_is_in_recovery()").await, "f");
    c.simple_query("SET SERVER ROLE TO 'replica'")
        .await
        .unwrap();
    assert_eq!(first_value(&c, "SELECT pg_is_in_recovery()").await, "t");
    c.simple_query("SET SERVER ROLE TO 'auto'").await.unwrap();
    assert_eq!(
        show(c.simple_query("SHOW PRIMARY READS").await.unwrap()),
        ("primary reads".into(), "off".into())
    );
    c.simple_query("SET PRIMARY READS TO on").await.unwrap();
    assert_eq!(
        show(c.simple_query("SHOW PRIMARY READS").await.unwrap()).1,
        "on"
    );
    // With primary reads on, the primary serves a share of the reads.
    let mut primary = 0;
    for _ in 0..60 {
        if first_value(&c, "SELECT pg_is_in_recovery()").await == "f" {
            primary += 1;
        }
    }
    assert!(
        (5..55).contains(&primary),
        "primary served {primary} of 60 reads"
    );
    assert!(
        c.simple_query("SET SERVER ROLE TO 'boss'").await.is_err(),
        "not a routing command: goes to PostgreSQL"
    );
}

/// Runs `n` reads and counts them per server port.
async fn distribution(c: &tokio_postgres::Client, n: usize) -> HashMap<String, usize> {
    let mut m = HashMap::new();
    for _ in 0..n {
        *m.entry(first_value(c, "SELECT inet_server_port()").await)
            .or_insert(0) += 1;
    }
    m
}

#[tokio::test]
async fn balancing_modes_distribute_as_promised() {
    let cl = Cluster::start();
    let ports: Vec<String> = cl.replicas.iter().map(|r| r.port.to_string()).collect();
    // Random: both replicas get a fair share.
    let proxy = start_proxy(&cl.config("load_balancing_mode = \"random\"", "")).await;
    let c = connect(proxy.local_addr().port(), "postgres", None, "app")
        .await
        .unwrap();
    let d = distribution(&c, 2000).await;
    assert_eq!(d.len(), 2, "{d:?}");
    for p in &ports {
        let share = d[p] as f64 / 2000.0;
        assert!(
            (0.42..0.58).contains(&share),
            "random share {share} for {p}: {d:?}"
        );
    }
    // Round robin: strictly alternating.
    let proxy = start_proxy(&cl.config("load_balancing_mode = \"round_robin\"", "")).await;
    let c = connect(proxy.local_addr().port(), "postgres", None, "app")
        .await
        .unwrap();
    let mut last = String::new();
    for _ in 0..200 {
        let p = first_value(&c, "SELECT inet_server_port()").await;
        assert_ne!(p, last, "round robin alternates");
        last = p;
    }
    // Least outstanding connections: with one replica busy, reads go to the other.
    let proxy = start_proxy(&cl.config("load_balancing_mode = \"loc\"", "")).await;
    let port = proxy.local_addr().port();
    let mut sleepers = Vec::new();
    for _ in 0..3 {
        let s = connect(port, "postgres", None, "app").await.unwrap();
        sleepers.push(tokio::spawn(async move {
            s.simple_query("SELECT pg_sleep(3)").await.map(|_| ())
        }));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let busy: Vec<usize> = cl
        .replicas
        .iter()
        .map(|r| {
            r.psql_admin("SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'SELECT pg_sleep%' AND state = 'active'")
                .parse()
                .unwrap_or(0)
        })
        .collect();
    let idler = if busy[0] < busy[1] {
        &ports[0]
    } else {
        &ports[1]
    };
    assert_ne!(busy[0], busy[1], "sleepers spread 2/1: {busy:?}");
    let c = connect(port, "postgres", None, "app").await.unwrap();
    let d = distribution(&c, 100).await;
    assert_eq!(
        d.get(idler),
        Some(&100),
        "all reads to the less busy replica: {d:?}"
    );
    for s in sleepers {
        s.await.unwrap().unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replica_dies_under_load_and_comes_back() {
    let cl = Cluster::start();
    let (ok, _, err) = pgbench(cl.primary.port, &["-i", "-s", "1", "-q"]);
    assert!(ok, "{err}");
    cl.primary
        .wait_replicated(&[&cl.replicas[0], &cl.replicas[1]]);
    let proxy = start_proxy(&cl.config("", "healthcheck_delay = 0")).await;
    let port = proxy.local_addr().port();
    let bench = tokio::task::spawn_blocking(move || {
        pgbench(port, &["-S", "-c", "20", "-j", "2", "-T", "6", "-n"])
    });
    tokio::time::sleep(Duration::from_secs(2)).await;
    cl.replicas[0].stop();
    let (_, out, err) = bench.await.unwrap();
    let processed: usize = out
        .lines()
        .find_map(|l| l.strip_prefix("number of transactions actually processed: "))
        .and_then(|v| v.split('/').next()?.parse().ok())
        .unwrap_or(0);
    let aborted = err.matches("aborted in command").count();
    assert!(processed > 1000, "the run went on: {out}\n{err}");
    // In-flight queries on the dying replica were retried elsewhere; at most those already answering fail.
    assert!(aborted <= 5, "{aborted} clients aborted: {err}");
    // Reads keep flowing, only to the surviving replica.
    let c = connect(port, "postgres", None, "app").await.unwrap();
    let d = distribution(&c, 50).await;
    assert_eq!(d.get(&cl.replicas[1].port.to_string()), Some(&50), "{d:?}");
    // Restarted, it gets traffic again after its ban (2 s) and a health check.
    cl.replicas[0].restart();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let d = distribution(&c, 20).await;
        if d.contains_key(&cl.replicas[0].port.to_string()) {
            break;
        }
        assert!(Instant::now() < deadline, "replica never came back: {d:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// `toml` (from `config_toml`) with `replica` added beside the primary of its one shard.
fn with_replica(toml: &str, primary: &Postgres, replica: &Postgres) -> String {
    toml.replace(
        &format!("[\"127.0.0.1\", {}, \"primary\"]", primary.port),
        &format!(
            "[\"127.0.0.1\", {}, \"primary\"], [\"127.0.0.1\", {}, \"replica\"]",
            primary.port, replica.port
        ),
    )
}

/// A shard of a primary and one replica (the demo's shard 1): while the replica is down, reads are served by the
/// primary instead of failing on the dead replica, and they move back once it returns.
#[tokio::test]
async fn reads_fall_back_to_the_primary_while_the_only_replica_is_down() {
    let primary = Postgres::start();
    let replica = Postgres::replica_of(&primary);
    let toml = config_toml(
        primary.port,
        5,
        "ban_time = 1\nhealthcheck_delay = 0",
        "query_parser_enabled = true\nquery_parser_read_write_splitting = true",
    );
    let toml = with_replica(&toml, &primary, &replica);
    let proxy = start_proxy(&toml).await;
    let port = proxy.local_addr().port();
    replica.stop();
    let c = connect(port, "postgres", None, "app").await.unwrap();
    let d = distribution(&c, 20).await;
    assert_eq!(d.get(&primary.port.to_string()), Some(&20), "{d:?}");
    replica.restart();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let d = distribution(&c, 10).await;
        if d.contains_key(&replica.port.to_string()) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "reads never returned to the replica: {d:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// `default_role = "replica"` asks for replicas only: while the only replica is down requests fail, as in PgCat
/// (its load_balancing_spec), rather than load the primary; they are served again once it is back, though banned.
#[tokio::test]
async fn replicas_only_never_falls_back_to_the_primary() {
    let primary = Postgres::start();
    let replica = Postgres::replica_of(&primary);
    let toml = config_toml(
        primary.port,
        5,
        "ban_time = 60",
        "default_role = \"replica\"",
    );
    let toml = with_replica(&toml, &primary, &replica);
    let proxy = start_proxy(&toml).await;
    let port = proxy.local_addr().port();
    let c = connect(port, "postgres", None, "app").await.unwrap();
    assert_eq!(first_value(&c, "SELECT pg_is_in_recovery()").await, "t");
    replica.stop();
    for _ in 0..3 {
        let served = c.simple_query("SELECT pg_is_in_recovery()").await;
        assert!(served.is_err(), "served without a replica: {served:?}");
    }
    replica.restart();
    // Banned for 60 s, but the only replica: unbanned as a likely false alarm.
    assert_eq!(first_value(&c, "SELECT pg_is_in_recovery()").await, "t");
}

#[tokio::test]
async fn reads_survive_a_dead_primary() {
    let cl = Cluster::start();
    cl.primary.psql_admin_db(
        "app",
        "CREATE TABLE kept (v int); INSERT INTO kept VALUES (7)",
    );
    cl.primary
        .wait_replicated(&[&cl.replicas[0], &cl.replicas[1]]);
    let proxy = start_proxy(&cl.config("", "")).await;
    let port = proxy.local_addr().port();
    cl.primary.stop();
    // Login works (parameters come from any healthy server) and reads are served by replicas.
    let c = connect(port, "postgres", None, "app").await.unwrap();
    for _ in 0..5 {
        assert_eq!(first_value(&c, "SELECT v FROM kept").await, "7");
    }
    let r = c
        .query_typed("SELECT v FROM kept WHERE v = $1", &[(&7i32, Type::INT4)])
        .await
        .unwrap();
    assert_eq!(r.len(), 1);
    // Writes fail with a clear error naming the primary; the session goes on.
    let e = c
        .simple_query("INSERT INTO kept VALUES (8)")
        .await
        .unwrap_err();
    let msg = e
        .as_db_error()
        .map(|d| d.message().to_owned())
        .unwrap_or_default();
    assert_eq!(e.code().unwrap().code(), "08006", "{msg}");
    assert!(msg.contains("primary"), "{msg}");
    assert_eq!(first_value(&c, "SELECT v FROM kept").await, "7");
}

#[tokio::test]
async fn lagging_replica_leaves_rotation_until_it_catches_up() {
    let cl = Cluster::start();
    let proxy = start_proxy(&cl.config(
        "",
        "ban_replica_lag = \"64kB\"\nreplica_lag_check_interval = 100",
    ))
    .await;
    let c = connect(proxy.local_addr().port(), "postgres", None, "app")
        .await
        .unwrap();
    let (paused, live) = (
        cl.replicas[0].port.to_string(),
        cl.replicas[1].port.to_string(),
    );
    cl.replicas[0].psql_admin("SELECT pg_wal_replay_pause()");
    cl.primary.psql_admin_db(
        "app",
        "CREATE TABLE big AS SELECT repeat('x', 1000) AS v FROM generate_series(1, 3000)",
    );
    tokio::time::sleep(Duration::from_millis(800)).await;
    let d = distribution(&c, 50).await;
    assert_eq!(
        d.get(&live),
        Some(&50),
        "the paused replica is out of rotation: {d:?}"
    );
    cl.replicas[0].psql_admin("SELECT pg_wal_replay_resume()");
    cl.primary.wait_replicated(&[&cl.replicas[0]]);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let d = distribution(&c, 20).await;
        if d.contains_key(&paused) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "caught-up replica never came back: {d:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn pgml_passthrough_predicts_on_replicas_and_trains_on_the_primary() {
    let cl = Cluster::start();
    // Stand-ins for the real extension: predict says which server answered; train writes.
    cl.primary.psql_admin_db(
        "app",
        "CREATE SCHEMA pgml;
         CREATE TABLE pgml.trained (project text);
         CREATE FUNCTION pgml.predict(p text, f real[]) RETURNS real
           AS $$ SELECT current_setting('port')::real $$ LANGUAGE sql;
         CREATE FUNCTION pgml.train(p text) RETURNS TABLE (project text)
           AS $$ INSERT INTO pgml.trained VALUES (p) RETURNING project $$ LANGUAGE sql;",
    );
    cl.primary
        .wait_replicated(&cl.replicas.iter().collect::<Vec<_>>());
    let config = format!(
        "{}\n[inference]\nmode = \"passthrough\"\n",
        cl.config(
            "primary_reads_enabled = true\nload_balancing_mode = \"random\"",
            ""
        )
    );
    let proxy = start_proxy(&config).await;
    let c = connect(proxy.local_addr().port(), "postgres", None, "app")
        .await
        .unwrap();
    let replicas: Vec<String> = cl.replicas.iter().map(|r| r.port.to_string()).collect();
    let mut seen = std::collections::HashSet::new();
    for _ in 0..20 {
        let port = first_value(&c, "SELECT pgml.predict('p', ARRAY[1]::real[])").await;
        assert!(replicas.contains(&port), "{port} is not a replica");
        seen.insert(port);
    }
    assert_eq!(seen.len(), 2, "both replicas serve predictions");
    // Training writes: the primary (a replica would refuse with 25006).
    assert_eq!(
        first_value(&c, "SELECT * FROM pgml.train('houses')").await,
        "houses"
    );
    assert_eq!(
        cl.primary
            .psql_admin_db("app", "SELECT count(*) FROM pgml.trained"),
        "1"
    );
}
