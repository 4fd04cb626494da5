//! End-to-end tests of the pooler against real PostgreSQL 15, with tokio-postgres, raw protocol bytes, psql and
//! pgbench as clients.

mod common;

use std::time::Duration;

use common::*;
use futures_util::{SinkExt, StreamExt, TryStreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_postgres::types::Type;

/// Backends Ocelot holds on the server (everything but our own admin session).
fn server_backends(pg: &Postgres) -> usize {
    pg.psql_admin(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = 'app' AND pid <> pg_backend_pid()",
    )
    .parse()
    .unwrap_or(0)
}

#[tokio::test]
async fn simple_and_extended_queries() {
    let pg = Postgres::start();
    let proxy = start_proxy(&config_toml(pg.port, 2, "", "")).await;
    let c = connect(proxy.local_addr().port(), "postgres", None, "app")
        .await
        .unwrap();
    assert_eq!(first_value(&c, "SELECT 40 + 2").await, "42");
    let r = c
        .query_typed(
            "SELECT $1::int4 * 2, $2::text",
            &[(&21i32, Type::INT4), (&"hé", Type::TEXT)],
        )
        .await
        .unwrap();
    assert_eq!(r[0].get::<_, i32>(0), 42);
    assert_eq!(r[0].get::<_, &str>(1), "hé");
    // Several statements in one Query, and an empty query.
    let r = c.simple_query("SELECT 1; SELECT 2;").await.unwrap();
    assert_eq!(rows_of(&r).len(), 2);
    c.simple_query("").await.unwrap();
    // Errors keep their SQLSTATE and the session goes on.
    let e = c
        .simple_query("SELECT * FROM missing_table")
        .await
        .unwrap_err();
    assert_eq!(e.code().unwrap().code(), "42P01");
    let e = c.query_typed("SELEC 1", &[]).await.unwrap_err();
    assert_eq!(e.code().unwrap().code(), "42601");
    assert_eq!(first_value(&c, "SELECT 'still here'").await, "still here");
    // Notices pass through.
    c.simple_query("DO $$ BEGIN RAISE NOTICE 'hello'; END $$")
        .await
        .unwrap();
}

#[tokio::test]
async fn transactions_and_errors_mid_transaction() {
    let pg = Postgres::start();
    let proxy = start_proxy(&config_toml(pg.port, 3, "", "")).await;
    let port = proxy.local_addr().port();
    let mut c = connect(port, "postgres", None, "app").await.unwrap();
    c.simple_query("CREATE TABLE t (id int primary key)")
        .await
        .unwrap();
    {
        let tx = c.transaction().await.unwrap();
        tx.simple_query("INSERT INTO t VALUES (1)").await.unwrap();
        // Another client does not see the uncommitted row, and gets another server.
        let other = connect(port, "postgres", None, "app").await.unwrap();
        assert_eq!(first_value(&other, "SELECT count(*) FROM t").await, "0");
        let e = tx
            .simple_query("INSERT INTO t VALUES (1)")
            .await
            .unwrap_err();
        assert_eq!(e.code().unwrap().code(), "23505");
        let e = tx.simple_query("SELECT 1").await.unwrap_err();
        assert_eq!(e.code().unwrap().code(), "25P02");
        tx.rollback().await.unwrap();
    }
    assert_eq!(first_value(&c, "SELECT count(*) FROM t").await, "0");
    let tx = c.transaction().await.unwrap();
    tx.simple_query("INSERT INTO t VALUES (2)").await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!(first_value(&c, "SELECT count(*) FROM t").await, "1");
}

#[tokio::test]
async fn copy_in_and_out() {
    let pg = Postgres::start();
    let proxy = start_proxy(&config_toml(pg.port, 2, "", "")).await;
    let mut c = connect(proxy.local_addr().port(), "postgres", None, "app")
        .await
        .unwrap();
    c.simple_query("CREATE TABLE c (a int, b text)")
        .await
        .unwrap();
    // tokio-postgres prepares COPY as a named statement, so it runs inside a transaction (see issue 3 for
    // named statements across transactions).
    let tx = c.transaction().await.unwrap();
    let sink = tx.copy_in("COPY c FROM STDIN").await.unwrap();
    futures_util::pin_mut!(sink);
    for chunk in 0..50 {
        let data: String = (0..1000)
            .map(|i| format!("{}\trow {}\n", chunk * 1000 + i, i))
            .collect();
        sink.send(bytes::Bytes::from(data)).await.unwrap();
    }
    assert_eq!(sink.finish().await.unwrap(), 50_000);
    let stream = tx
        .copy_out("COPY (SELECT a FROM c ORDER BY a) TO STDOUT")
        .await
        .unwrap();
    let chunks: Vec<bytes::Bytes> = stream.try_collect().await.unwrap();
    let text: Vec<u8> = chunks.concat();
    assert_eq!(text.iter().filter(|&&b| b == b'\n').count(), 50_000);
    tx.commit().await.unwrap();
    assert_eq!(
        first_value(&c, "SELECT sum(a) FROM c").await,
        (0..50_000i64).sum::<i64>().to_string()
    );
    // A failing COPY leaves the session usable.
    let e = c
        .simple_query("COPY c FROM STDIN WITH (FORMAT nonsense)")
        .await
        .unwrap_err();
    assert_eq!(e.code().unwrap().code(), "22023");
    assert_eq!(first_value(&c, "SELECT 1").await, "1");
}

#[tokio::test]
async fn cancel_reaches_the_right_server() {
    let pg = Postgres::start();
    let proxy = start_proxy(&config_toml(pg.port, 4, "", "")).await;
    let port = proxy.local_addr().port();
    let a = connect(port, "postgres", None, "app").await.unwrap();
    let b = connect(port, "postgres", None, "app").await.unwrap();
    let token = a.cancel_token();
    let bystander =
        tokio::spawn(async move { b.simple_query("SELECT pg_sleep(1.5), 'b done'").await });
    let slow = tokio::spawn(async move { a.simple_query("SELECT pg_sleep(30)").await });
    tokio::time::sleep(Duration::from_millis(500)).await;
    token.cancel_query(tokio_postgres::NoTls).await.unwrap();
    let r = tokio::time::timeout(Duration::from_secs(10), slow)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(r.unwrap_err().code().unwrap().code(), "57014");
    let b = bystander.await.unwrap().unwrap();
    assert_eq!(rows_of(&b)[0][1].as_deref(), Some("b done"));
    // A cancel with a wrong key does nothing.
    let c = connect(port, "postgres", None, "app").await.unwrap();
    let mut raw = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let mut pkt = vec![0, 0, 0, 16, 0x04, 0xd2, 0x16, 0x2e];
    pkt.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 2]);
    raw.write_all(&pkt).await.unwrap();
    assert_eq!(first_value(&c, "SELECT 'fine'").await, "fine");
}

#[tokio::test]
async fn many_clients_share_few_servers() {
    let pg = Postgres::start();
    let proxy = start_proxy(&config_toml(pg.port, 5, "", "")).await;
    let port = proxy.local_addr().port();
    let setup = connect(port, "postgres", None, "app").await.unwrap();
    setup
        .simple_query("CREATE TABLE counter (n int); INSERT INTO counter VALUES (0)")
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for i in 0..50 {
        tasks.push(tokio::spawn(async move {
            let mut c = connect(port, "postgres", None, "app").await.unwrap();
            for j in 0..20 {
                let tx = c.transaction().await.unwrap();
                tx.simple_query("UPDATE counter SET n = n + 1")
                    .await
                    .unwrap();
                let r = tx
                    .query_typed("SELECT $1::int", &[(&(i * 100 + j), Type::INT4)])
                    .await
                    .unwrap();
                assert_eq!(r[0].get::<_, i32>(0), i * 100 + j);
                tx.commit().await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(first_value(&setup, "SELECT n FROM counter").await, "1000");
    assert!(
        server_backends(&pg) <= 5,
        "at most pool_size server connections"
    );
}

#[tokio::test]
async fn authentication_methods_and_failures() {
    let pg = Postgres::start();
    let proxy = start_proxy(&config_toml(pg.port, 2, "", "")).await;
    let port = proxy.local_addr().port();
    // Clients authenticate to Ocelot with md5, SCRAM or trust; Ocelot logs in to PostgreSQL the same way.
    for (user, pw) in [MD5_USER, SCRAM_USER] {
        let c = connect(port, user, Some(pw), "app").await.unwrap();
        assert_eq!(first_value(&c, "SELECT current_user").await, user);
        let e = connect(port, user, Some("wrong"), "app").await.unwrap_err();
        assert_eq!(e.code().unwrap().code(), "28P01", "{user}: {e}");
    }
    let c = connect(port, "postgres", None, "app").await.unwrap();
    assert_eq!(first_value(&c, "SELECT current_user").await, "postgres");
    let e = connect(port, "postgres", None, "nodb").await.unwrap_err();
    assert_eq!(e.code().unwrap().code(), "3D000");
    let e = connect(port, "nobody", Some("x"), "app").await.unwrap_err();
    assert_eq!(e.code().unwrap().code(), "28000");
}

#[tokio::test]
async fn server_credentials_differ_from_client_credentials() {
    let pg = Postgres::start();
    let toml = config_toml(pg.port, 2, "", "").replace(
        "username = \"postgres\"\nauth_type = \"trust\"",
        &format!(
            "username = \"postgres\"\nauth_type = \"trust\"\nserver_username = \"{}\"\nserver_password = \"{}\"",
            SCRAM_USER.0, SCRAM_USER.1
        ),
    );
    let proxy = start_proxy(&toml).await;
    let c = connect(proxy.local_addr().port(), "postgres", None, "app")
        .await
        .unwrap();
    assert_eq!(first_value(&c, "SELECT current_user").await, SCRAM_USER.0);
}

/// Reads until EOF and returns the SQLSTATE of the first ErrorResponse.
async fn read_error_code(s: &mut TcpStream) -> Option<String> {
    let mut got = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut got)).await;
    let pos = got.iter().position(|&b| b == b'E')?;
    let body = &got[pos + 5..];
    let c = body.windows(1).position(|w| w[0] == b'C')?;
    let end = body[c..].iter().position(|&b| b == 0)?;
    Some(String::from_utf8_lossy(&body[c + 1..c + end]).into_owned())
}

#[tokio::test]
async fn bad_input_gets_protocol_violation_and_others_keep_working() {
    let pg = Postgres::start();
    let proxy = start_proxy(&config_toml(
        pg.port,
        2,
        "client_login_timeout = 300\nmax_message_size = 65536",
        "",
    ))
    .await;
    let port = proxy.local_addr().port();
    let bystander = connect(port, "postgres", None, "app").await.unwrap();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("length below 4", vec![b'Q', 0, 0, 0, 2]),
        ("length above the limit", vec![b'Q', 0x7f, 0xff, 0xff, 0xff]),
        ("unknown message type", vec![b'y', 0, 0, 0, 4]),
    ];
    for (what, bytes) in cases {
        let mut s = raw_login(port).await;
        s.write_all(&bytes).await.unwrap();
        assert_eq!(
            read_error_code(&mut s).await.as_deref(),
            Some("08P01"),
            "{what}"
        );
    }
    // A startup packet that never completes runs into client_login_timeout.
    let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    s.write_all(&[0, 0, 0, 40, 0, 3, 0, 0]).await.unwrap();
    assert_eq!(
        read_error_code(&mut s).await.as_deref(),
        Some("08P01"),
        "login timeout"
    );
    // Invalid UTF-8 in the startup packet, and a bad startup length.
    let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    s.write_all(&[0, 0, 0, 15, 0, 3, 0, 0, b'u', b's', 0, 0xff, 0])
        .await
        .unwrap();
    s.write_all(&[0, 0]).await.unwrap();
    assert_eq!(
        read_error_code(&mut s).await.as_deref(),
        Some("08P01"),
        "invalid utf-8"
    );
    let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    s.write_all(&[0xff, 0, 0, 0, 0, 3, 0, 0]).await.unwrap();
    assert_eq!(
        read_error_code(&mut s).await.as_deref(),
        Some("08P01"),
        "startup length"
    );
    // Protocol 2.0 is refused with feature_not_supported, as PostgreSQL does.
    let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    s.write_all(&[0, 0, 0, 8, 0, 2, 0, 0]).await.unwrap();
    assert_eq!(
        read_error_code(&mut s).await.as_deref(),
        Some("0A000"),
        "protocol 2"
    );
    // SSLRequest is declined with 'N' and the login continues in plaintext.
    let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    s.write_all(&[0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f])
        .await
        .unwrap();
    let mut n = [0u8; 1];
    s.read_exact(&mut n).await.unwrap();
    assert_eq!(&n, b"N");
    assert_eq!(
        first_value(&bystander, "SELECT 'unaffected'").await,
        "unaffected"
    );
}

#[tokio::test]
async fn client_killed_mid_transaction_is_rolled_back() {
    let pg = Postgres::start();
    let proxy = start_proxy(&config_toml(pg.port, 1, "", "")).await;
    let port = proxy.local_addr().port();
    let setup = connect(port, "postgres", None, "app").await.unwrap();
    setup.simple_query("CREATE TABLE k (id int)").await.unwrap();
    // Raw client: BEGIN; INSERT; then the socket closes without COMMIT or Terminate.
    let mut s = raw_login(port).await;
    for sql in ["BEGIN", "INSERT INTO k VALUES (1)"] {
        let mut m = vec![b'Q'];
        m.extend_from_slice(&((sql.len() + 5) as u32).to_be_bytes());
        m.extend_from_slice(sql.as_bytes());
        m.push(0);
        s.write_all(&m).await.unwrap();
        let mut got = Vec::new();
        while !got.windows(6).any(|w| w == b"Z\0\0\0\x05T") {
            let mut b = [0u8; 1024];
            let n = s.read(&mut b).await.unwrap();
            got.extend_from_slice(&b[..n]);
        }
    }
    drop(s);
    // With a pool of one, the next client gets the same server: rolled back, idle, usable.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(first_value(&setup, "SELECT count(*) FROM k").await, "0");
    assert_eq!(
        first_value(&setup, "SELECT now() = statement_timestamp()").await,
        "t",
        "not inside a transaction"
    );
}

#[tokio::test]
async fn server_terminated_while_idle_is_replaced() {
    let pg = Postgres::start();
    let proxy = start_proxy(&config_toml(pg.port, 2, "", "")).await;
    let c = connect(proxy.local_addr().port(), "postgres", None, "app")
        .await
        .unwrap();
    let before = first_value(&c, "SELECT pg_backend_pid()").await;
    pg.psql_admin("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = 'app'");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let after = first_value(&c, "SELECT pg_backend_pid()").await;
    assert_ne!(before, after, "a fresh server connection was used");
}

#[tokio::test]
async fn checkout_timeout_names_the_pool_and_keeps_the_client() {
    let pg = Postgres::start();
    let proxy = start_proxy(&config_toml(pg.port, 1, "", "connect_timeout = 300")).await;
    let port = proxy.local_addr().port();
    let mut holder = connect(port, "postgres", None, "app").await.unwrap();
    let waiter = connect(port, "postgres", None, "app").await.unwrap();
    let tx = holder.transaction().await.unwrap();
    tx.simple_query("SELECT 1").await.unwrap();
    let e = waiter.simple_query("SELECT 2").await.unwrap_err();
    let msg = e
        .as_db_error()
        .map(|d| d.message().to_owned())
        .unwrap_or_default();
    assert_eq!(e.code().unwrap().code(), "58000");
    assert!(msg.contains("\"app\"") && msg.contains("ms"), "{msg}");
    let e = waiter
        .query_typed("SELECT $1::int", &[(&1i32, Type::INT4)])
        .await
        .unwrap_err();
    assert_eq!(e.code().unwrap().code(), "58000");
    tx.commit().await.unwrap();
    assert_eq!(first_value(&waiter, "SELECT 'served'").await, "served");
}

#[tokio::test]
async fn session_parameters_follow_the_client_and_do_not_leak() {
    let pg = Postgres::start();
    let proxy = start_proxy(&config_toml(pg.port, 1, "", "")).await;
    let port = proxy.local_addr().port();
    let mut cfg = tokio_postgres::Config::new();
    cfg.host("127.0.0.1")
        .port(port)
        .user("postgres")
        .dbname("app")
        .application_name("alpha")
        .options("-c statement_timeout=1234");
    let (a, conn) = cfg.connect(tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(conn);
    let b = connect(port, "postgres", None, "app").await.unwrap();
    // One server shared by both clients: each sees its own settings on every transaction.
    for _ in 0..3 {
        assert_eq!(first_value(&a, "SHOW application_name").await, "alpha");
        assert_eq!(first_value(&a, "SHOW statement_timeout").await, "1234ms");
        assert_eq!(first_value(&b, "SHOW application_name").await, "");
        assert_eq!(first_value(&b, "SHOW statement_timeout").await, "0");
    }
    // SET of a tracked parameter persists for its client; SET of anything else is reset before another client.
    a.simple_query("SET application_name = 'beta'")
        .await
        .unwrap();
    a.simple_query("SET TimeZone = 'Asia/Tokyo'").await.unwrap();
    b.simple_query("SET work_mem = '7MB'").await.unwrap();
    assert_eq!(first_value(&a, "SHOW application_name").await, "beta");
    assert_eq!(first_value(&a, "SHOW TimeZone").await, "Asia/Tokyo");
    assert_eq!(first_value(&a, "SHOW work_mem").await, "4MB");
    assert_eq!(
        first_value(&b, "SHOW TimeZone").await,
        first_value(
            &b,
            "SELECT reset_val FROM pg_settings WHERE name = 'TimeZone'"
        )
        .await
    );
    assert_eq!(first_value(&b, "SHOW application_name").await, "");
}

#[tokio::test]
async fn session_mode_keeps_one_server() {
    let pg = Postgres::start();
    let proxy = start_proxy(&config_toml(pg.port, 2, "", "pool_mode = \"session\"")).await;
    let c = connect(proxy.local_addr().port(), "postgres", None, "app")
        .await
        .unwrap();
    c.simple_query("SET work_mem = '9MB'").await.unwrap();
    let pid = first_value(&c, "SELECT pg_backend_pid()").await;
    for _ in 0..5 {
        assert_eq!(first_value(&c, "SELECT pg_backend_pid()").await, pid);
    }
    assert_eq!(first_value(&c, "SHOW work_mem").await, "9MB");
    drop(c);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let d = connect(proxy.local_addr().port(), "postgres", None, "app")
        .await
        .unwrap();
    assert_eq!(
        first_value(&d, "SHOW work_mem").await,
        "4MB",
        "state reset before the next client"
    );
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

#[tokio::test]
async fn large_results_stream_with_bounded_memory() {
    let pg = Postgres::start();
    let proxy = start_proxy(&config_toml(pg.port, 1, "", "")).await;
    let c = connect(proxy.local_addr().port(), "postgres", None, "app")
        .await
        .unwrap();
    let before = rss_kib();
    // About 300 MB of rows, consumed one at a time.
    let stream = c
        .query_raw(
            "SELECT repeat('x', 3000) FROM generate_series(1, 100000)",
            Vec::<i32>::new(),
        )
        .await
        .unwrap();
    futures_util::pin_mut!(stream);
    let mut bytes = 0usize;
    let mut peak = 0;
    while let Some(row) = stream.next().await {
        bytes += row.unwrap().get::<_, &str>(0).len();
        peak = peak.max(rss_kib());
    }
    assert_eq!(bytes, 300_000_000);
    assert!(
        peak.saturating_sub(before) < 100 * 1024,
        "RSS grew by {} KiB",
        peak - before
    );
    // A single row larger than the streaming threshold also passes through.
    let r = c
        .query_typed("SELECT repeat('y', 5000000)", &[])
        .await
        .unwrap();
    assert_eq!(r[0].get::<_, &str>(0).len(), 5_000_000);
}

#[tokio::test]
async fn psql_script_through_ocelot() {
    let pg = Postgres::start();
    let proxy = start_proxy(&config_toml(pg.port, 2, "", "")).await;
    let port = proxy.local_addr().port();
    let script = "CREATE TABLE p (id int, name text);
\\copy p FROM STDIN
1\tone
2\ttwo
\\.
INSERT INTO p VALUES (3, 'three');
BEGIN;
UPDATE p SET name = upper(name) WHERE id = 1;
COMMIT;
SELECT id, name FROM p ORDER BY id;
\\copy (SELECT count(*) FROM p) TO STDOUT
";
    let out = tokio::task::spawn_blocking(move || {
        let mut c = psql_command(port, "app");
        c.stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let mut child = c.spawn().unwrap();
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(script.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "1|ONE\n2|two\n3|three\n3\n"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgbench_more_clients_than_servers() {
    let pg = Postgres::start();
    let proxy = start_proxy(&config_toml(pg.port, 5, "", "")).await;
    let port = proxy.local_addr().port();
    pgbench_init(port).await;
    for mode in ["simple", "extended"] {
        for select_only in [true, false] {
            let (ok, out, err) = tokio::task::spawn_blocking(move || {
                let mut args = vec!["-c", "50", "-j", "2", "-t", "40", "-M", mode, "-n"];
                if select_only {
                    args.push("-S");
                }
                pgbench(port, &args)
            })
            .await
            .unwrap();
            assert!(ok, "pgbench {mode} -S={select_only}: {out}{err}");
            assert!(
                out.contains("number of transactions actually processed: 2000/2000"),
                "{out}"
            );
            assert!(out.contains("number of failed transactions: 0"), "{out}");
        }
    }
    assert!(server_backends(&pg) <= 5);
}

#[tokio::test]
async fn min_pool_size_is_kept_warm_and_idle_connections_expire() {
    let pg = Postgres::start();
    let toml = config_toml(pg.port, 3, "idle_timeout = 300", "").replacen(
        "pool_size = 3",
        "pool_size = 3\nmin_pool_size = 2",
        1,
    );
    let proxy = start_proxy(&toml).await;
    // The trust user (users.0) keeps two connections open without any client.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while server_backends(&pg) < 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "min_pool_size connections were not opened"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The md5 user has no minimum: its connections close after idle_timeout.
    let c = connect(
        proxy.local_addr().port(),
        MD5_USER.0,
        Some(MD5_USER.1),
        "app",
    )
    .await
    .unwrap();
    assert_eq!(first_value(&c, "SELECT 1").await, "1");
    assert_eq!(server_backends(&pg), 3);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while server_backends(&pg) > 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "idle connection was not closed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        first_value(&c, "SELECT 2").await,
        "2",
        "a new connection is opened on demand"
    );
}
