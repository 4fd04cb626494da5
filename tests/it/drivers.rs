//! Real drivers through Ocelot in transaction mode with a pool of 2 and more concurrent clients than that, so
//! prepared statements land on servers that never saw them, and psycopg in session mode, where a client must see
//! its session as on a direct connection. Each driver's check script verifies every value.
//! The drivers are installed by `scripts/setup-drivers.sh` (run by `scripts/test.sh`).

use std::path::Path;
use std::process::Command;

use crate::common::*;

const DRIVERS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/drivers");

async fn check(program: &str, args: Vec<String>, expect: &str) {
    check_in(program, args, expect, "").await
}

/// [`check`] with more settings for the pool (`pool_mode = "session"`).
async fn check_in(program: &str, args: Vec<String>, expect: &str, pool: &str) {
    let pg = Postgres::start();
    let settings = format!("connect_timeout = 20000\n{pool}");
    let proxy = start_proxy(&config_toml(pg.port, 2, "", &settings)).await;
    let port = proxy.local_addr().port().to_string();
    let program = program.to_owned();
    let (ok, out, err) = tokio::task::spawn_blocking(move || {
        let mut c = Command::new(&program);
        c.args(&args).arg(&port);
        run_tool(c)
    })
    .await
    .unwrap();
    assert!(
        ok,
        "{expect}: {out}\n{err}\n(run scripts/setup-drivers.sh if a driver is missing)"
    );
    assert!(
        out.contains(&format!("{expect}:")) && out.contains("checks passed"),
        "{out}"
    );
}

#[tokio::test]
async fn asyncpg_named_and_pipelined_statements() {
    check(
        "python3",
        vec![format!("{DRIVERS}/asyncpg_check.py")],
        "asyncpg",
    )
    .await;
}

#[tokio::test]
async fn psycopg_prepare_threshold_zero_and_copy() {
    check(
        "python3",
        vec![format!("{DRIVERS}/psycopg_check.py")],
        "psycopg",
    )
    .await;
}

/// Session mode: the client's process id is its server's, NOTIFY senders and startup parameters as on a direct
/// connection.
#[tokio::test]
async fn psycopg_in_session_mode_sees_its_own_backend() {
    check_in(
        "python3",
        vec![format!("{DRIVERS}/psycopg_session_check.py")],
        "psycopg session",
        "pool_mode = \"session\"",
    )
    .await;
}

#[tokio::test]
async fn node_postgres_named_queries() {
    check(
        "node",
        vec![format!("{DRIVERS}/node/pg_check.js")],
        "node-postgres",
    )
    .await;
}

#[tokio::test]
async fn pgjdbc_prepare_threshold_one() {
    let jar = "/usr/share/java/postgresql.jar";
    assert!(
        Path::new(jar).exists(),
        "{jar} missing: run scripts/setup-drivers.sh"
    );
    let classes = std::env::temp_dir().join(format!("ocelot-jdbc-{}", std::process::id()));
    std::fs::create_dir_all(&classes).unwrap();
    let (ok, out, err) = run_tool({
        let mut c = Command::new("javac");
        c.arg("-d")
            .arg(&classes)
            .arg("-cp")
            .arg(jar)
            .arg(format!("{DRIVERS}/java/JdbcCheck.java"));
        c
    });
    assert!(ok, "javac: {out}{err}");
    let cp = format!("{jar}:{}", classes.display());
    check("java", vec!["-cp".into(), cp, "JdbcCheck".into()], "pgjdbc").await;
    let _ = std::fs::remove_dir_all(&classes);
}

#[tokio::test]
async fn asyncpg_and_psycopg_on_two_shards_with_two_phase_commit() {
    let shards: Vec<Postgres> = (0..2).map(|_| Postgres::start()).collect();
    let mut servers = String::new();
    for (i, pg) in shards.iter().enumerate() {
        pg.psql_admin_db(
            "app",
            &format!(
                "CREATE TABLE accounts (id bigint, owner text, balance numeric(12,2)) PARTITION BY HASH (id);
                 CREATE TABLE accounts_{i} PARTITION OF accounts FOR VALUES WITH (MODULUS 2, REMAINDER {i});"
            ),
        );
        servers.push_str(&format!(
            "[pools.app.shards.{i}]\ndatabase = \"app\"\nservers = [[\"127.0.0.1\", {}, \"primary\"]]\n\n",
            pg.port
        ));
    }
    let config = format!(
        r#"
[general]
host = "127.0.0.1"
port = 0
admin_username = "admin"
admin_password = "admin"

[pools.app]
automatic_sharding_key = "accounts.id"
two_phase_commit = true

[pools.app.users.0]
username = "postgres"
auth_type = "trust"
pool_size = 4

{servers}"#
    );
    let proxy = start_proxy(&config).await;
    let port = proxy.local_addr().port().to_string();
    let (ok, out, err) = tokio::task::spawn_blocking(move || {
        let mut c = Command::new("python3");
        c.arg(format!("{DRIVERS}/sharded_check.py")).arg(&port);
        run_tool(c)
    })
    .await
    .unwrap();
    assert!(ok && out.contains("checks passed"), "{out}\n{err}");
}

#[tokio::test]
async fn pgml_calls_with_asyncpg_and_psycopg() {
    let pg = Postgres::start();
    pg.psql_admin_db("app", HOUSE_SQL);
    let proxy = start_proxy(&config_toml(pg.port, 2, "", "")).await;
    let port = proxy.local_addr().port().to_string();
    let (ok, out, err) = tokio::task::spawn_blocking(move || {
        let mut c = Command::new("python3");
        c.arg(format!("{DRIVERS}/pgml_check.py")).arg(&port);
        run_tool(c)
    })
    .await
    .unwrap();
    assert!(ok && out.contains("checks passed"), "{out}\n{err}");
}
