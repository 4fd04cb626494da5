//! State one client leaves on a server never reaches the next client of that server, in session and in
//! transaction mode: prepared statements (SQL and protocol), temporary tables, session advisory locks, GUCs set
//! with SET and with set_config, roles, WITH HOLD cursors and LISTEN. In transaction mode, state that cannot be
//! shared pins the client to its server until it is gone, and the client keeps using it across transactions.

use std::time::Duration;

use crate::common::*;

/// One kind of state: what client A runs, then what client B (on the same server) runs and must get.
struct Case {
    what: &'static str,
    leave: &'static str,
    check: &'static str,
    clean: &'static str,
}

const CASES: &[Case] = &[
    Case {
        what: "SQL PREPARE",
        leave: "PREPARE leak_q (int) AS SELECT $1",
        check: "SELECT count(*) FROM pg_prepared_statements WHERE name = 'leak_q'",
        clean: "0",
    },
    Case {
        what: "temporary table",
        leave: "CREATE TEMP TABLE trace (id int)",
        check: "SELECT count(*) FROM pg_class WHERE relname = 'trace' AND relpersistence = 't'",
        clean: "0",
    },
    Case {
        what: "session advisory lock",
        leave: "SELECT pg_advisory_lock(4242)",
        check: "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objid = 4242",
        clean: "0",
    },
    Case {
        what: "set_config outside a transaction",
        leave: "SELECT set_config('default_transaction_read_only', 'on', false)",
        check: "SHOW default_transaction_read_only",
        clean: "off",
    },
    Case {
        what: "set_config inside a transaction",
        leave: "BEGIN; SELECT set_config('default_transaction_read_only', 'on', false); COMMIT",
        check: "SHOW default_transaction_read_only",
        clean: "off",
    },
    Case {
        what: "SET",
        leave: "SET work_mem = '9MB'",
        check: "SHOW work_mem",
        clean: "4MB",
    },
    Case {
        what: "SET ROLE",
        leave: "SET ROLE ocelot_other",
        check: "SELECT current_user",
        clean: "postgres",
    },
    Case {
        what: "SET SESSION AUTHORIZATION",
        leave: "SET SESSION AUTHORIZATION ocelot_other",
        check: "SELECT session_user",
        clean: "postgres",
    },
    Case {
        what: "WITH HOLD cursor",
        leave: "DECLARE held CURSOR WITH HOLD FOR SELECT 1",
        check: "SELECT count(*) FROM pg_cursors WHERE name = 'held'",
        clean: "0",
    },
    Case {
        what: "LISTEN",
        leave: "LISTEN leak_channel",
        check: "SELECT count(*) FROM pg_listening_channels()",
        clean: "0",
    },
];

async fn every_kind_of_state_is_gone_for_the_next_client(mode: &str) {
    let pg = Postgres::start();
    pg.psql_admin("CREATE ROLE ocelot_other NOLOGIN");
    let extra = format!("pool_mode = \"{mode}\"");
    let proxy = start_proxy(&config_toml(pg.port, 1, "", &extra)).await;
    let port = proxy.local_addr().port();
    for case in CASES {
        let a = connect(port, "postgres", None, "app").await.unwrap();
        let pid = first_value(&a, "SELECT pg_backend_pid()").await;
        a.simple_query(case.leave)
            .await
            .unwrap_or_else(|e| panic!("{mode}, {}: {e}", case.what));
        drop(a);
        // The one server is reset (or in transaction mode: released) once A has left.
        tokio::time::sleep(Duration::from_millis(150)).await;
        let b = connect(port, "postgres", None, "app").await.unwrap();
        assert_eq!(
            first_value(&b, "SELECT pg_backend_pid()").await,
            pid,
            "{mode}, {}: the same server",
            case.what
        );
        assert_eq!(
            first_value(&b, case.check).await,
            case.clean,
            "{mode}, {}: the next client sees what the last one left",
            case.what
        );
        // Writes work: default_transaction_read_only did not follow.
        b.simple_query("CREATE TABLE IF NOT EXISTS writable (id int)")
            .await
            .unwrap_or_else(|e| panic!("{mode}, {}: {e}", case.what));
    }
}

#[tokio::test]
async fn session_mode_leaves_nothing_for_the_next_client() {
    every_kind_of_state_is_gone_for_the_next_client("session").await;
}

#[tokio::test]
async fn transaction_mode_leaves_nothing_for_the_next_client() {
    every_kind_of_state_is_gone_for_the_next_client("transaction").await;
}

/// psycopg's and libpq's named protocol statements: the next client prepares the same name and gets its own.
#[tokio::test]
async fn protocol_prepared_statements_do_not_reach_the_next_client() {
    let pg = Postgres::start();
    for mode in ["session", "transaction"] {
        for cache in ["", "prepared_statements_cache_size = 0"] {
            let extra = format!("pool_mode = \"{mode}\"\n{cache}");
            let proxy = start_proxy(&config_toml(pg.port, 1, "", &extra)).await;
            let port = proxy.local_addr().port();
            let a = connect(port, "postgres", None, "app").await.unwrap();
            let s = a.prepare("SELECT 1::int4").await.unwrap();
            assert_eq!(a.query_one(&s, &[]).await.unwrap().get::<_, i32>(0), 1);
            drop((s, a));
            tokio::time::sleep(Duration::from_millis(150)).await;
            let b = connect(port, "postgres", None, "app").await.unwrap();
            // tokio-postgres names statements s0, s1, ... per connection: B's first one is A's name.
            let s = b
                .prepare("SELECT 'mine'::text")
                .await
                .unwrap_or_else(|e| panic!("{mode} {cache}: {e}"));
            assert_eq!(
                b.query_one(&s, &[]).await.unwrap().get::<_, String>(0),
                "mine",
                "{mode} {cache}"
            );
            if mode == "session" {
                assert_eq!(
                    first_value(&b, "SELECT count(*) FROM pg_prepared_statements WHERE statement LIKE '%1::int4%'").await,
                    "0",
                    "{cache}"
                );
            }
        }
    }
}

/// Transaction mode: a client holding an advisory lock, a temporary table or a WITH HOLD cursor keeps its server
/// across transactions (so the state works for it), others wait for a server instead of getting that one, and it
/// is released as soon as the state is gone.
#[tokio::test]
async fn transaction_mode_pins_a_client_while_it_holds_session_state() {
    let pg = Postgres::start();
    let proxy = start_proxy(&config_toml(pg.port, 1, "", "")).await;
    let port = proxy.local_addr().port();
    let a = connect(port, "postgres", None, "app").await.unwrap();
    a.simple_query("CREATE TEMP TABLE mine (v int)")
        .await
        .unwrap();
    a.simple_query("INSERT INTO mine VALUES (1)").await.unwrap();
    a.simple_query("DECLARE c CURSOR WITH HOLD FOR SELECT g FROM generate_series(1, 3) g")
        .await
        .unwrap();
    assert_eq!(first_value(&a, "FETCH c").await, "1");
    assert_eq!(first_value(&a, "FETCH c").await, "2");
    assert_eq!(first_value(&a, "SELECT count(*) FROM mine").await, "1");
    a.simple_query("SELECT pg_advisory_lock(7)").await.unwrap();

    // B needs the only server, which A holds: it waits.
    let b = connect(port, "postgres", None, "app").await.unwrap();
    let waiting = tokio::spawn(async move {
        let v = first_value(
            &b,
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'",
        )
        .await;
        (b, v)
    });
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(!waiting.is_finished(), "B got A's pinned server");

    // Releasing the state one kind at a time: the client stays pinned until all of it is gone.
    a.simple_query("CLOSE ALL").await.unwrap();
    a.simple_query("DISCARD TEMP").await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!waiting.is_finished(), "released while the lock was held");
    a.simple_query("SELECT pg_advisory_unlock_all()")
        .await
        .unwrap();
    let (b, locks) = tokio::time::timeout(Duration::from_secs(5), waiting)
        .await
        .expect("B still waits after A let go")
        .unwrap();
    assert_eq!(locks, "0");
    // A is back to ordinary transaction pooling.
    assert_eq!(first_value(&a, "SELECT 'a'").await, "a");
    assert_eq!(first_value(&b, "SELECT 'b'").await, "b");
}

/// Transaction mode: `pg_prepared_statements` shows a client its own statements under its own names, never the
/// pool's shared `ocelot_<n>` statements or another client's query text.
#[tokio::test]
async fn pg_prepared_statements_shows_only_the_clients_own() {
    let pg = Postgres::start();
    let proxy = start_proxy(&config_toml(pg.port, 1, "", "")).await;
    let port = proxy.local_addr().port();
    let other = connect(port, "postgres", None, "app").await.unwrap();
    let s = other
        .prepare("SELECT 'secret of another client'::text")
        .await
        .unwrap();
    other.query_one(&s, &[]).await.unwrap();
    let me = connect(port, "postgres", None, "app").await.unwrap();
    assert_eq!(
        first_value(&me, "SELECT count(*) FROM pg_prepared_statements").await,
        "0"
    );
    let mine = me.prepare("SELECT $1::int4 + 1").await.unwrap();
    me.query_one(&mine, &[&1i32]).await.unwrap();
    me.simple_query("PREPARE by_sql AS SELECT 2").await.unwrap();
    let rows = rows_of(
        &me.simple_query(
            "SELECT name, statement, from_sql FROM pg_catalog.pg_prepared_statements p ORDER BY p.name",
        )
        .await
        .unwrap(),
    );
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert_eq!(rows[0][0].as_deref(), Some("by_sql"));
    assert_eq!(rows[0][2].as_deref(), Some("t"));
    // tokio-postgres's own name (s<n>), not the pool's ocelot_<n>.
    let name = rows[1][0].clone().unwrap_or_default();
    assert!(
        name.starts_with('s') && !name.starts_with("ocelot"),
        "{name}"
    );
    assert_eq!(rows[1][1].as_deref(), Some("SELECT $1::int4 + 1"));
    // Over the extended protocol too.
    let n: i64 = me
        .query_one(
            // Not LIKE '%secret%': as on PostgreSQL, the view lists this statement too, and its text would match.
            "SELECT count(*) FROM pg_prepared_statements WHERE statement = 'SELECT ''secret of another client''::text'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 0);
}
