//! Limits and secrets: client_idle_timeout, idle_client_in_transaction_timeout, statement_timeout,
//! max_client_conn, throttling of failed logins per address, and secrets that never show in logs, SHOW CONFIG,
//! metrics or error messages; memory that stays bounded under clients that send without reading.

mod chaos;
mod common;

use std::time::{Duration, Instant};

use common::*;

fn code(e: &tokio_postgres::Error) -> Option<String> {
    e.code().map(|c| c.code().to_owned())
}

/// A client whose connection task reports how the connection ended: the SQLSTATE of the FATAL message Ocelot
/// sent, if any.
async fn watched(
    port: u16,
) -> (
    tokio_postgres::Client,
    tokio::sync::oneshot::Receiver<String>,
) {
    let mut cfg = tokio_postgres::Config::new();
    cfg.host("127.0.0.1")
        .port(port)
        .user("postgres")
        .dbname("app");
    let (client, conn) = cfg.connect(tokio_postgres::NoTls).await.unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let end = match conn.await {
            Ok(()) => "closed cleanly".to_owned(),
            Err(e) => code(&e).unwrap_or_else(|| e.to_string()),
        };
        let _ = tx.send(end);
    });
    (client, rx)
}

/// How a watched connection ended, waiting up to 3 s.
async fn ended(rx: tokio::sync::oneshot::Receiver<String>) -> String {
    tokio::time::timeout(Duration::from_secs(3), rx)
        .await
        .map(|r| r.unwrap_or_default())
        .unwrap_or_else(|_| "still open".into())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_and_statement_timeouts() {
    let pg = Postgres::start();
    pg.psql_admin_db("app", "CREATE TABLE t (x int)");
    let toml = config_toml(
        pg.port,
        2,
        "client_idle_timeout = 400\nidle_client_in_transaction_timeout = 400",
        "",
    )
    .replace(
        "pool_size = 2\n",
        "pool_size = 2\nstatement_timeout = 500\n",
    );
    let proxy = start_proxy(&toml).await;
    let port = proxy.local_addr().port();

    // A busy client stays; an idle one is disconnected with 57P05.
    let busy = connect(port, "postgres", None, "app").await.unwrap();
    let (_idle, idle_end) = watched(port).await;
    for _ in 0..8 {
        busy.simple_query("SELECT 1").await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(ended(idle_end).await, "57P05");
    busy.simple_query("SELECT 1").await.unwrap();

    // Idle inside a transaction, as PgCat does it: the transaction is rolled back on the server, the client's next
    // request gets 58000 "idle transaction timeout", and the one after that runs.
    let only_txn = start_proxy(&config_toml(
        pg.port,
        1,
        "idle_client_in_transaction_timeout = 400",
        "",
    ))
    .await;
    let c = connect(only_txn.local_addr().port(), "postgres", None, "app")
        .await
        .unwrap();
    c.simple_query("BEGIN; INSERT INTO t VALUES (1)")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let e = c.simple_query("COMMIT").await.unwrap_err();
    assert_eq!(code(&e).as_deref(), Some("58000"), "{e:?}");
    assert!(
        format!("{e:?}").contains("idle transaction timeout"),
        "{e:?}"
    );
    assert_eq!(first_value(&c, "SELECT count(*) FROM t").await, "0");
    // Below the timeout nothing happens; the extended protocol gets the same answer.
    c.simple_query("BEGIN").await.unwrap();
    tokio::time::sleep(Duration::from_millis(150)).await;
    c.simple_query("COMMIT").await.unwrap();
    c.simple_query("BEGIN").await.unwrap();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let e = c.query("SELECT $1::int", &[&1i32]).await.unwrap_err();
    assert_eq!(code(&e).as_deref(), Some("58000"), "{e:?}");
    assert_eq!(
        c.query_one("SELECT $1::int", &[&2i32])
            .await
            .unwrap()
            .get::<_, i32>(0),
        2
    );
    let busy = connect(port, "postgres", None, "app").await.unwrap();

    // statement_timeout: the server cancels the request (57014) and the client goes on.
    let started = Instant::now();
    let e = busy.simple_query("SELECT pg_sleep(5)").await.unwrap_err();
    assert_eq!(code(&e).as_deref(), Some("57014"), "{e:?}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(first_value(&busy, "SELECT 7").await, "7");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_client_conn_and_failed_login_throttling() {
    let pg = Postgres::start();
    let sock = std::env::temp_dir().join(format!("ocelot-limits-{}", free_port()));
    std::fs::create_dir_all(&sock).unwrap();
    let toml = config_toml(
        pg.port,
        2,
        &format!(
            "max_client_conn = 3\nmax_auth_failures = 3\nauth_failure_block_ms = 1500\nunix_socket_dir = \"{}\"",
            sock.display()
        ),
        "",
    );
    let proxy = start_proxy(&toml).await;
    let port = proxy.local_addr().port();
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(connect(port, "postgres", None, "app").await.unwrap());
    }
    let e = connect(port, "postgres", None, "app")
        .await
        .map(|_| ())
        .unwrap_err();
    assert_eq!(code(&e).as_deref(), Some("53300"), "{e:?}");
    held.pop();
    tokio::time::sleep(Duration::from_millis(100)).await;
    held.push(connect(port, "postgres", None, "app").await.unwrap());
    drop(held);
    tokio::time::sleep(Duration::from_millis(100)).await;

    // Three wrong passwords from 127.0.0.1: its logins are refused for a while, even with the right password.
    for _ in 0..3 {
        let e = connect(port, MD5_USER.0, Some("wrong"), "app")
            .await
            .map(|_| ())
            .unwrap_err();
        assert_eq!(code(&e).as_deref(), Some("28P01"));
    }
    let e = connect(port, MD5_USER.0, Some(MD5_USER.1), "app")
        .await
        .map(|_| ())
        .unwrap_err();
    assert_eq!(code(&e).as_deref(), Some("28000"), "{e:?}");
    // Another source (the Unix socket) is not affected.
    let (ok, out, err) = run_tool({
        let mut c = std::process::Command::new("psql");
        c.args(["-X", "-A", "-t", "-h"]).arg(&sock).args([
            "-p",
            &port.to_string(),
            "-U",
            MD5_USER.0,
            "-d",
            "app",
            "-c",
            "SELECT 'via the socket'",
        ]);
        c.env("PGPASSWORD", MD5_USER.1);
        c
    });
    assert!(ok && out.contains("via the socket"), "{out} {err}");
    tokio::time::sleep(Duration::from_millis(1600)).await;
    connect(port, MD5_USER.0, Some(MD5_USER.1), "app")
        .await
        .unwrap();
    let _ = std::fs::remove_dir_all(&sock);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_never_show() {
    capture_logs("debug");
    let pg = Postgres::start();
    let secrets = [
        "AdminSecret4711",
        "ClientSecret4712",
        "md5pass",
        "AuthQuerySecret4713",
    ];
    let toml = config_toml(
        pg.port,
        2,
        "enable_prometheus_exporter = true\nprometheus_exporter_port = 0\nauth_query = \"SELECT usename, passwd FROM pg_shadow WHERE usename='$1'\"\nauth_query_user = \"postgres\"\nauth_query_password = \"AuthQuerySecret4713\"",
        "",
    )
    .replace("admin_password = \"admin\"", "admin_password = \"AdminSecret4711\"")
    .replace(
        &format!("password = \"{}\"\nauth_type = \"md5\"", MD5_USER.1),
        &format!(
            "password = \"ClientSecret4712\"\nserver_password = \"{}\"\nauth_type = \"md5\"",
            MD5_USER.1
        ),
    );
    assert!(toml.contains("ClientSecret4712"));
    let proxy = start_proxy(&toml).await;
    let port = proxy.local_addr().port();
    let mut seen = String::new();
    // Logins that fail and succeed, a query error, the admin console, the metrics.
    for pw in ["wrong", "ClientSecret4712"] {
        match connect(port, MD5_USER.0, Some(pw), "app").await {
            Ok(c) => {
                let e = c.simple_query("SELECT * FROM nowhere").await.unwrap_err();
                seen.push_str(&format!("{e:?}"));
            }
            Err(e) => seen.push_str(&format!("{e:?}")),
        }
    }
    for cmd in ["SHOW CONFIG", "SHOW USERS", "SHOW DATABASES", "SHOW POOLS"] {
        let c = admin_psql_command(port, "pgcat", "AdminSecret4711", cmd);
        let (ok, out, err) = run_tool(c);
        assert!(ok, "{err}");
        seen.push_str(&out);
        seen.push_str(&err);
    }
    seen.push_str(&metrics_text(&proxy).await);
    let logs = captured_logs();
    assert!(logs.contains("login refused"), "the logs were captured");
    for secret in secrets {
        assert!(!seen.contains(secret), "{secret} shown to a client");
        assert!(!logs.contains(secret), "{secret} in the logs");
    }
}

/// Clients that pipeline queries with large answers and never read: Ocelot stops reading from them once their
/// answers back up, so its memory stays bounded, everyone else is served, and each client still gets every
/// answer when it finally reads. With read/write splitting, where Ocelot holds pipelined requests back until the
/// previous one is answered, and without.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_that_send_without_reading_use_bounded_memory() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let cluster = chaos::Cluster::start();
    // tcp_user_timeout (10 s by default, as in PgCat) drops a client that reads nothing for that long.
    let ocelot = chaos::Ocelot::start_with(&cluster, 8, "tcp_user_timeout = 120000").await;
    let port = ocelot.port;
    let bystander = connect(port, "postgres", None, "app").await.unwrap();
    let rss_before = ocelot.rss_kib();

    // Each query is 16 KB (a comment pads it, so that requests outgrow the kernel's socket buffers) and is
    // answered with 64 KB: more than the kernel's socket buffers hold, in both directions.
    let sql = format!(
        "/* {} */ SELECT repeat('x', 65536)\0",
        "p".repeat(16 * 1024)
    );
    let sql = sql.as_bytes();
    let mut query = vec![b'Q'];
    query.extend_from_slice(&((sql.len() + 4) as u32).to_be_bytes());
    query.extend_from_slice(sql);
    const CLIENTS: usize = 4;
    let mut clients = Vec::new();
    let mut sent = Vec::new();
    let t_send = Instant::now();
    for _ in 0..CLIENTS {
        let mut s = raw_login(port).await;
        // Send until Ocelot stops taking the requests (one second without progress), or 4,000 queries (64 MB of
        // requests, 256 MB of answers) were sent.
        let mut n = 0usize;
        while n < 4000 {
            match tokio::time::timeout(Duration::from_secs(1), s.write_all(&query)).await {
                Ok(r) => r.unwrap(),
                Err(_) => break,
            }
            n += 1;
        }
        assert!(
            n < 4000,
            "Ocelot kept reading from a client that reads nothing"
        );
        sent.push(n);
        clients.push(s);
    }
    let rss_full = ocelot.rss_kib();
    println!("sent in {} ms", t_send.elapsed().as_millis());
    let started = Instant::now();
    bystander.simple_query("SELECT 1").await.unwrap();
    let bystander_ms = started.elapsed().as_millis();
    println!(
        "{CLIENTS} clients sent {sent:?} 16 KB queries with 64 KB answers without reading; Ocelot RSS {rss_before} -> {rss_full} KiB; a bystander's query took {bystander_ms} ms"
    );
    assert!(
        rss_full < rss_before + (CLIENTS as u64) * 4 * 1024,
        "Ocelot grew from {rss_before} KiB to {rss_full} KiB"
    );

    // Reading now, each client gets an answer to every query it sent.
    let mut readers = Vec::new();
    for (mut s, n) in clients.into_iter().zip(sent) {
        readers.push(tokio::spawn(async move {
            let mut ready = 0usize;
            let mut tail: Vec<u8> = Vec::new();
            let mut buf = vec![0u8; 1 << 16];
            while ready < n {
                let got = tokio::time::timeout(Duration::from_secs(30), s.read(&mut buf))
                    .await
                    .expect("answers keep coming")
                    .unwrap();
                assert!(got > 0, "closed after {ready} of {n} answers");
                // ReadyForQuery (idle) is Z 0 0 0 5 I: counted across read boundaries.
                tail.extend_from_slice(&buf[..got]);
                ready += tail.windows(6).filter(|w| *w == b"Z\0\0\0\x05I").count();
                let keep = tail.len().min(5);
                tail.drain(..tail.len() - keep);
            }
            assert_eq!(ready, n, "answers to every query sent");
            s.write_all(b"X\0\0\0\x04").await.unwrap();
        }));
    }
    for r in readers {
        r.await.unwrap();
    }
    println!("read all in {} ms", started.elapsed().as_millis());
    bystander.simple_query("SELECT 1").await.unwrap();
}

/// PgCat's `checkout_failure_limit`: after that many requests that could not get a server, the client is
/// disconnected with FATAL 58000; below it the client goes on.
#[tokio::test]
async fn checkout_failure_limit_disconnects_the_client() {
    let pg = Postgres::start();
    let toml = config_toml(
        pg.port,
        1,
        "",
        "checkout_failure_limit = 2\nconnect_timeout = 200",
    );
    let proxy = start_proxy(&toml).await;
    let port = proxy.local_addr().port();
    let holder = connect(port, "postgres", None, "app").await.unwrap();
    holder.simple_query("BEGIN").await.unwrap();
    let (c, c_end) = watched(port).await;
    let e = c.simple_query("SELECT 1").await.unwrap_err();
    assert_eq!(code(&e).as_deref(), Some("58000"), "{e:?}");
    let e = c.simple_query("SELECT 1").await.unwrap_err();
    assert_eq!(code(&e).as_deref(), Some("58000"), "{e:?}");
    assert_eq!(ended(c_end).await, "58000");
    holder.simple_query("COMMIT").await.unwrap();
    assert_eq!(
        first_value(&holder, "SELECT 'still here'").await,
        "still here"
    );
}
