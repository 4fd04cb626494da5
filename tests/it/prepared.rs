//! Named prepared statements in transaction mode (issue 3): statements follow their client onto servers that
//! never saw them, errors keep their meaning, and the per-server cache evicts.

use crate::common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_postgres::types::Type;

#[tokio::test]
async fn statements_follow_clients_across_servers() {
    let pg = Postgres::start();
    let proxy = start_proxy(&config_toml(
        pg.port,
        2,
        "",
        "prepared_statements_cache_size = 3",
    ))
    .await;
    let port = proxy.local_addr().port();
    let setup = connect(port, "postgres", None, "app").await.unwrap();
    setup
        .simple_query("CREATE TABLE kv (k int primary key, v text); INSERT INTO kv SELECT g, 'v' || g FROM generate_series(1, 100) g")
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for client in 0..8i32 {
        tasks.push(tokio::spawn(async move {
            let c = connect(port, "postgres", None, "app").await.unwrap();
            // Five statements against a cache of three per server: some are evicted and prepared again.
            let get = c.prepare("SELECT v FROM kv WHERE k = $1").await.unwrap();
            let add = c
                .prepare_typed("SELECT $1::int8 + $2::int8", &[Type::INT8, Type::INT8])
                .await
                .unwrap();
            let cnt = c
                .prepare("SELECT count(*) FROM kv WHERE k <= $1")
                .await
                .unwrap();
            let echo = c.prepare("SELECT $1::text || '!'").await.unwrap();
            let mine = c
                .prepare(&format!("SELECT {client}::int + $1::int"))
                .await
                .unwrap();
            for i in 1..=40i32 {
                let k = (client * 40 + i) % 100 + 1;
                let v: String = c.query_one(&get, &[&k]).await.unwrap().get(0);
                assert_eq!(v, format!("v{k}"));
                let s: i64 = c
                    .query_one(&add, &[&(i as i64), &(client as i64)])
                    .await
                    .unwrap()
                    .get(0);
                assert_eq!(s, (i + client) as i64);
                let n: i64 = c.query_one(&cnt, &[&k]).await.unwrap().get(0);
                assert_eq!(n, k as i64);
                let e: String = c
                    .query_one(&echo, &[&format!("c{client}i{i}")])
                    .await
                    .unwrap()
                    .get(0);
                assert_eq!(e, format!("c{client}i{i}!"));
                let m: i32 = c.query_one(&mine, &[&i]).await.unwrap().get(0);
                assert_eq!(m, client + i);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    // Each server holds at most prepared_statements_cache_size of Ocelot's statements, under Ocelot's names.
    for _ in 0..4 {
        let r = setup
            .simple_query("SELECT count(*), count(*) FILTER (WHERE name LIKE 'ocelot_%') FROM pg_prepared_statements")
            .await
            .unwrap();
        let tokio_postgres::SimpleQueryMessage::Row(row) = &r[1] else {
            panic!("{r:?}")
        };
        let (all, ours): (u32, u32) = (
            row.get(0).unwrap().parse().unwrap(),
            row.get(1).unwrap().parse().unwrap(),
        );
        assert!(
            all <= 3 && all == ours,
            "{all} statements, {ours} of them Ocelot's"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgbench_prepared_with_more_clients_than_servers() {
    let pg = Postgres::start();
    let proxy = start_proxy(&config_toml(pg.port, 3, "", "")).await;
    let port = proxy.local_addr().port();
    pgbench_init(port).await;
    for select_only in [true, false] {
        let (ok, out, err) = tokio::task::spawn_blocking(move || {
            // Ten clients per thread: pgbench prepares with a blocking PQprepare, which stops its whole thread
            // while the other clients of that thread hold the servers mid-transaction. Ocelot answers the Parse
            // of a text the pool already knows without a server, so the thread goes on (before it did, this
            // took connect_timeout per prepare).
            let mut args = vec!["-c", "20", "-j", "2", "-t", "50", "-M", "prepared", "-n"];
            if select_only {
                args.push("-S");
            }
            pgbench(port, &args)
        })
        .await
        .unwrap();
        assert!(ok, "pgbench -M prepared -S={select_only}: {out}{err}");
        assert!(
            out.contains("number of transactions actually processed: 1000/1000"),
            "{out}"
        );
        assert!(out.contains("number of failed transactions: 0"), "{out}");
    }
}

/// A raw protocol client for exact error checks; the transaction status of the last ReadyForQuery beside it.
struct Raw(TcpStream, u8);

impl Raw {
    async fn login(port: u16) -> Raw {
        let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        let mut body = vec![0, 3, 0, 0];
        for kv in ["user", "postgres", "database", "app", ""] {
            body.extend_from_slice(kv.as_bytes());
            body.push(0);
        }
        let mut pkt = ((body.len() + 4) as u32).to_be_bytes().to_vec();
        pkt.extend(body);
        s.write_all(&pkt).await.unwrap();
        let mut r = Raw(s, 0);
        r.until_ready().await;
        r
    }

    fn msg(code: u8, body: &[u8]) -> Vec<u8> {
        let mut m = vec![code];
        m.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
        m.extend_from_slice(body);
        m
    }

    fn parse(name: &str, sql: &str) -> Vec<u8> {
        Self::msg(b'P', format!("{name}\0{sql}\0\0\0").as_bytes())
    }

    fn bind(stmt: &str) -> Vec<u8> {
        Self::msg(b'B', format!("\0{stmt}\0\0\0\0\0\0\0").as_bytes())
    }

    fn execute() -> Vec<u8> {
        Self::msg(b'E', b"\0\0\0\0\0")
    }

    fn sync() -> Vec<u8> {
        Self::msg(b'S', b"")
    }

    /// Sends messages and reads to ReadyForQuery: the message codes, with the SQLSTATE after each 'E'.
    async fn roundtrip(&mut self, msgs: &[Vec<u8>]) -> Vec<String> {
        self.0.write_all(&msgs.concat()).await.unwrap();
        self.until_ready().await
    }

    async fn until_ready(&mut self) -> Vec<String> {
        let mut out = Vec::new();
        loop {
            let mut h = [0u8; 5];
            self.0.read_exact(&mut h).await.unwrap();
            let len = u32::from_be_bytes([h[1], h[2], h[3], h[4]]) as usize - 4;
            let mut body = vec![0u8; len];
            self.0.read_exact(&mut body).await.unwrap();
            if h[0] == b'E' {
                let f = ocelot::protocol::decode::error_fields(&body).unwrap();
                out.push(format!("E{}", f.code));
            } else if h[0] != b'S' && h[0] != b'K' && h[0] != b'R' {
                out.push((h[0] as char).to_string());
            }
            if h[0] == b'Z' {
                self.1 = body.first().copied().unwrap_or_default();
                return out;
            }
        }
    }
}

/// Answers Ocelot gives without a server after a BEGIN it deferred (a known Parse, a lone Sync) report the
/// transaction the client is in, as the server would.
#[tokio::test]
async fn local_answers_inside_a_deferred_begin_say_in_transaction() {
    let pg = Postgres::start();
    let proxy = start_proxy(&config_toml(pg.port, 2, "", "")).await;
    let port = proxy.local_addr().port();
    let mut first = Raw::login(port).await;
    let r = first
        .roundtrip(&[Raw::parse("known", "SELECT 41 + 1"), Raw::sync()])
        .await;
    assert_eq!(r, ["1", "Z"]);
    let mut c = Raw::login(port).await;
    assert_eq!(c.roundtrip(&[Raw::msg(b'Q', b"BEGIN\0")]).await, ["C", "Z"]);
    assert_eq!(c.1, b'T');
    let r = c
        .roundtrip(&[Raw::parse("mine", "SELECT 41 + 1"), Raw::sync()])
        .await;
    assert_eq!((r, c.1), (vec!["1".to_owned(), "Z".to_owned()], b'T'));
    assert_eq!(
        (c.roundtrip(&[Raw::sync()]).await, c.1),
        (vec!["Z".to_owned()], b'T')
    );
    let r = c
        .roundtrip(&[Raw::bind("mine"), Raw::execute(), Raw::sync()])
        .await;
    assert_eq!(
        (r, c.1),
        (
            vec![
                "2".to_owned(),
                "D".to_owned(),
                "C".to_owned(),
                "Z".to_owned()
            ],
            b'T'
        )
    );
    assert_eq!(
        c.roundtrip(&[Raw::msg(b'Q', b"COMMIT\0")]).await,
        ["C", "Z"]
    );
    assert_eq!(c.1, b'I');
}

/// A table altered through Ocelot: a statement prepared afterwards, by another client on the server that holds the
/// old plan, returns the new shape (the pool does not hand it the old statement of the same text), while a client
/// that prepared before the change gets PostgreSQL's own error, as on a direct connection.
#[tokio::test]
async fn statements_prepared_after_ddl_see_the_new_schema() {
    let pg = Postgres::start();
    pg.psql_admin_db(
        "app",
        "CREATE TABLE reshaped (a int); INSERT INTO reshaped VALUES (1)",
    );
    let proxy = start_proxy(&config_toml(pg.port, 1, "", "")).await;
    let port = proxy.local_addr().port();
    let old = connect(port, "postgres", None, "app").await.unwrap();
    let before = old.prepare("SELECT * FROM reshaped").await.unwrap();
    assert_eq!(old.query(&before, &[]).await.unwrap()[0].len(), 1);
    let ddl = connect(port, "postgres", None, "app").await.unwrap();
    ddl.simple_query("ALTER TABLE reshaped ADD COLUMN b int DEFAULT 2")
        .await
        .unwrap();
    let new = connect(port, "postgres", None, "app").await.unwrap();
    let after = new.prepare("SELECT * FROM reshaped").await.unwrap();
    let rows = new.query(&after, &[]).await.unwrap();
    assert_eq!(rows[0].len(), 2);
    assert_eq!(rows[0].get::<_, i32>(1), 2);
    let e = old.query(&before, &[]).await.unwrap_err();
    assert_eq!(e.code().map(|c| c.code()), Some("0A000"), "{e:?}");
}

/// A table altered on the server directly, where Ocelot cannot see it: the shared statement prepared before the
/// change fails ("cached plan must not change result type") for the first client that uses it, and from then on
/// for no one: the text gets a statement of its own and the connection drops the stale one when it is given back.
#[tokio::test]
async fn a_schema_change_made_behind_ocelots_back_is_not_shown_to_clients() {
    let pg = Postgres::start();
    pg.psql_admin_db(
        "app",
        "CREATE TABLE behind (a int); INSERT INTO behind VALUES (1)",
    );
    let proxy = start_proxy(&config_toml(pg.port, 1, "", "")).await;
    let port = proxy.local_addr().port();
    let first = connect(port, "postgres", None, "app").await.unwrap();
    let st = first.prepare("SELECT * FROM behind").await.unwrap();
    assert_eq!(first.query(&st, &[]).await.unwrap()[0].len(), 1);
    pg.psql_admin_db("app", "ALTER TABLE behind ADD COLUMN b int DEFAULT 2");
    let mut stale_errors = 0;
    for _ in 0..3 {
        let c = connect(port, "postgres", None, "app").await.unwrap();
        // The stale statement shows as soon as it is described, so the error may come from the prepare.
        let answer = match c.prepare("SELECT * FROM behind").await {
            Ok(st) => c.query(&st, &[]).await,
            Err(e) => Err(e),
        };
        match answer {
            Ok(rows) => assert_eq!(rows[0].get::<_, i32>(1), 2),
            Err(e) => {
                assert_eq!(e.code().map(|c| c.code()), Some("0A000"), "{e:?}");
                stale_errors += 1;
            }
        }
    }
    // The first request to meet the stale plan is re-prepared and sent again; later ones find fresh statements.
    assert_eq!(stale_errors, 0, "{stale_errors} clients met the stale plan");
    let last = connect(port, "postgres", None, "app").await.unwrap();
    let st = last.prepare("SELECT * FROM behind").await.unwrap();
    let rows = last.query(&st, &[]).await.unwrap();
    assert_eq!((rows[0].len(), rows[0].get::<_, i32>(1)), (2, 2));
}

#[tokio::test]
async fn errors_keep_their_postgresql_meaning() {
    let pg = Postgres::start();
    let proxy = start_proxy(&config_toml(pg.port, 2, "", "")).await;
    let port = proxy.local_addr().port();
    let mut c = Raw::login(port).await;
    // A failed Parse reports the server's own error, not a proxy-made one.
    let r = c
        .roundtrip(&[Raw::parse("s1", "SELECT * FROM no_such_table"), Raw::sync()])
        .await;
    assert_eq!(r, ["E42P01", "Z"]);
    // Bind of an unknown statement: 26000. The failed name above is unknown too.
    let r = c
        .roundtrip(&[Raw::bind("nope"), Raw::execute(), Raw::sync()])
        .await;
    assert_eq!(r, ["E26000", "Z"]);
    let r = c
        .roundtrip(&[Raw::bind("s1"), Raw::execute(), Raw::sync()])
        .await;
    assert_eq!(
        r,
        ["E26000", "Z"],
        "a statement whose Parse failed does not exist"
    );
    // Parse, Bind, Execute in one pipeline; then a duplicate name: 42P05, rest skipped to Sync.
    let r = c
        .roundtrip(&[
            Raw::parse("s2", "SELECT 7"),
            Raw::bind("s2"),
            Raw::execute(),
            Raw::sync(),
        ])
        .await;
    assert_eq!(r, ["1", "2", "D", "C", "Z"]);
    let r = c
        .roundtrip(&[
            Raw::parse("s2", "SELECT 8"),
            Raw::bind("s2"),
            Raw::execute(),
            Raw::sync(),
        ])
        .await;
    assert_eq!(r, ["E42P05", "Z"]);
    // Execute of an unknown portal: 34000.
    let r = c
        .roundtrip(&[Raw::msg(b'E', b"ghost\0\0\0\0\0"), Raw::sync()])
        .await;
    assert_eq!(r, ["E34000", "Z"]);
    // Close of an unknown name is not an error; Close of a known one forgets it.
    let r = c
        .roundtrip(&[
            Raw::msg(b'C', b"Sghost\0"),
            Raw::msg(b'C', b"Ss2\0"),
            Raw::sync(),
        ])
        .await;
    assert_eq!(r, ["3", "3", "Z"]);
    let r = c
        .roundtrip(&[Raw::bind("s2"), Raw::execute(), Raw::sync()])
        .await;
    assert_eq!(r, ["E26000", "Z"]);
    // The session keeps working, and the name can be reused.
    let r = c
        .roundtrip(&[
            Raw::parse("s2", "SELECT 9"),
            Raw::bind("s2"),
            Raw::execute(),
            Raw::sync(),
        ])
        .await;
    assert_eq!(r, ["1", "2", "D", "C", "Z"]);
}

#[tokio::test]
async fn sql_prepare_and_set_follow_the_client() {
    let pg = Postgres::start();
    let proxy = start_proxy(&config_toml(pg.port, 2, "", "")).await;
    let port = proxy.local_addr().port();
    let mut tasks = Vec::new();
    for n in 0..5i32 {
        tasks.push(tokio::spawn(async move {
            let c = connect(port, "postgres", None, "app").await.unwrap();
            // Every client uses the same statement name with its own definition, and its own settings.
            c.simple_query(&format!("SET work_mem = '{}MB'", n + 1))
                .await
                .unwrap();
            c.simple_query(&format!("PREPARE q(int) AS SELECT $1 * {}", n + 10))
                .await
                .unwrap();
            c.simple_query(&format!(
                "SELECT set_config('app.tenant', 'tenant{n}', false)"
            ))
            .await
            .unwrap();
            for i in 0..20 {
                assert_eq!(
                    first_value(&c, "SHOW work_mem").await,
                    format!("{}MB", n + 1)
                );
                assert_eq!(
                    first_value(&c, &format!("EXECUTE q({i})")).await,
                    (i * (n + 10)).to_string()
                );
                assert_eq!(
                    first_value(&c, "SELECT current_setting('app.tenant')").await,
                    format!("tenant{n}")
                );
            }
            // SET LOCAL ends with its transaction; a rolled-back SET never happened.
            c.simple_query("BEGIN; SET LOCAL work_mem = '64MB'; COMMIT")
                .await
                .unwrap();
            c.simple_query("BEGIN; SET statement_timeout = 1234; ROLLBACK")
                .await
                .unwrap();
            for _ in 0..3 {
                assert_eq!(
                    first_value(&c, "SHOW work_mem").await,
                    format!("{}MB", n + 1)
                );
                assert_eq!(first_value(&c, "SHOW statement_timeout").await, "0");
            }
            // DEALLOCATE and RESET are carried too.
            c.simple_query("DEALLOCATE q").await.unwrap();
            c.simple_query("RESET work_mem").await.unwrap();
            for _ in 0..3 {
                let e = c.simple_query("EXECUTE q(1)").await.unwrap_err();
                assert_eq!(e.code().unwrap().code(), "26000");
                assert_eq!(first_value(&c, "SHOW work_mem").await, "4MB");
                assert_eq!(
                    first_value(&c, "SELECT current_setting('app.tenant')").await,
                    format!("tenant{n}")
                );
            }
            c.simple_query("DISCARD ALL").await.unwrap();
            for _ in 0..3 {
                assert_eq!(
                    first_value(&c, "SELECT current_setting('app.tenant', true)").await,
                    ""
                );
            }
        }));
    }
    // A client that never set anything sees defaults throughout.
    let plain = connect(port, "postgres", None, "app").await.unwrap();
    for _ in 0..20 {
        assert_eq!(first_value(&plain, "SHOW work_mem").await, "4MB");
        let e = plain.simple_query("EXECUTE q(1)").await.unwrap_err();
        assert_eq!(e.code().unwrap().code(), "26000");
    }
    for t in tasks {
        t.await.unwrap();
    }
}

#[tokio::test]
async fn listen_notify_without_holding_servers() {
    let pg = Postgres::start();
    let proxy = start_proxy(&config_toml(pg.port, 1, "", "")).await;
    let port = proxy.local_addr().port();
    // Three listeners on a pool of ONE server connection: none of them holds it.
    let mut listeners = Vec::new();
    for n in 0..3 {
        let mut cfg = tokio_postgres::Config::new();
        cfg.host("127.0.0.1")
            .port(port)
            .user("postgres")
            .dbname("app");
        let (client, mut conn) = cfg.connect(tokio_postgres::NoTls).await.unwrap();
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut stream = futures_util::stream::poll_fn(move |cx| conn.poll_message(cx));
            use futures_util::StreamExt;
            while let Some(Ok(msg)) = stream.next().await {
                if let tokio_postgres::AsyncMessage::Notification(n) = msg {
                    let _ = tx.send((n.channel().to_owned(), n.payload().to_owned()));
                }
            }
        });
        let chan = if n == 2 { "other" } else { "jobs" };
        client
            .simple_query(&format!("LISTEN {chan}"))
            .await
            .unwrap();
        listeners.push((client, rx, chan));
    }
    let sender = connect(port, "postgres", None, "app").await.unwrap();
    for i in 0..5 {
        sender
            .simple_query(&format!("NOTIFY jobs, 'job {i}'"))
            .await
            .unwrap();
    }
    sender.simple_query("NOTIFY other, 'x'").await.unwrap();
    // A notification sent inside a transaction arrives after COMMIT.
    sender
        .simple_query("BEGIN; NOTIFY jobs, 'job 5'; COMMIT")
        .await
        .unwrap();
    for (client, rx, chan) in listeners.iter_mut() {
        let want: Vec<String> = if *chan == "jobs" {
            (0..6).map(|i| format!("job {i}")).collect()
        } else {
            vec!["x".into()]
        };
        let mut got = Vec::new();
        while got.len() < want.len() {
            let (c, p) = tokio::time::timeout(std::time::Duration::from_secs(5), rx.recv())
                .await
                .expect("notification in time")
                .unwrap();
            assert_eq!(c, *chan);
            got.push(p);
        }
        assert_eq!(got, want, "in order, each exactly once");
        // The listener still runs queries on the single pooled server.
        assert_eq!(
            client.simple_query("SELECT 1").await.unwrap().len(),
            3,
            "row description, row, command complete"
        );
    }
    // UNLISTEN stops delivery.
    listeners[0].0.simple_query("UNLISTEN jobs").await.unwrap();
    sender.simple_query("NOTIFY jobs, 'late'").await.unwrap();
    let late = tokio::time::timeout(std::time::Duration::from_secs(5), listeners[1].1.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(late.1, "late");
    assert!(
        tokio::time::timeout(std::time::Duration::from_millis(300), listeners[0].1.recv())
            .await
            .is_err()
    );
}

#[tokio::test]
async fn sqlx_prepared_queries_across_servers() {
    use sqlx::{Connection, Row};
    let pg = Postgres::start();
    let proxy = start_proxy(&config_toml(pg.port, 2, "", "")).await;
    let url = format!(
        "postgres://postgres@127.0.0.1:{}/app",
        proxy.local_addr().port()
    );
    let mut tasks = Vec::new();
    for n in 0..6i64 {
        let url = url.clone();
        tasks.push(tokio::spawn(async move {
            // sqlx prepares every query as a named statement and caches it per connection.
            let mut c = sqlx::PgConnection::connect(&url).await.unwrap();
            for i in 0..25i64 {
                let row = sqlx::query("SELECT $1::int8 * 3 + $2::int8 AS v, $3::text AS t")
                    .bind(i)
                    .bind(n)
                    .bind(format!("sqlx-{n}-{i}"))
                    .fetch_one(&mut c)
                    .await
                    .unwrap();
                assert_eq!(row.get::<i64, _>("v"), i * 3 + n);
                assert_eq!(row.get::<String, _>("t"), format!("sqlx-{n}-{i}"));
                let total: i64 =
                    sqlx::query_scalar("SELECT count(*) FROM generate_series(1, $1::int)")
                        .bind(i as i32 + 1)
                        .fetch_one(&mut c)
                        .await
                        .unwrap();
                assert_eq!(total, i + 1);
            }
            c.close().await.unwrap();
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

#[tokio::test]
async fn set_config_is_carried_and_never_leaks() {
    let pg = Postgres::start();
    let proxy = start_proxy(&config_toml(pg.port, 1, "", "")).await;
    let port = proxy.local_addr().port();
    let a = connect(port, "postgres", None, "app").await.unwrap();
    let b = connect(port, "postgres", None, "app").await.unwrap();
    // Parameterised set_config through the extended protocol (PgDog issue 1055): carried for its client.
    a.query_typed(
        "SELECT set_config($1, $2, false)",
        &[(&"app.user", Type::TEXT), (&"u1", Type::TEXT)],
    )
    .await
    .unwrap();
    // A set_config inside a bigger query is not replayed, but it must not reach another client either.
    a.simple_query("SELECT 1, set_config('app.leak', 'yes', false)")
        .await
        .unwrap();
    for _ in 0..3 {
        assert_eq!(
            first_value(&b, "SELECT current_setting('app.leak', true)").await,
            ""
        );
        assert_eq!(
            first_value(&b, "SELECT current_setting('app.user', true)").await,
            ""
        );
        assert_eq!(
            first_value(&a, "SELECT current_setting('app.user', true)").await,
            "u1"
        );
    }
}
