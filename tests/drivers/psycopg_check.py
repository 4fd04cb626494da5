"""psycopg 3 through Ocelot with prepare_threshold=0 (server-side prepared statements from the first execution),
from several threads at once, plus COPY and LISTEN/notifies. Usage: python3 psycopg_check.py PORT."""
import sys
import threading

import psycopg

PORT = int(sys.argv[1])
CLIENTS, ROUNDS = 6, 25
DSN = f"host=127.0.0.1 port={PORT} user=postgres dbname=app"
errors: list = []
counts: list = []


def client(n: int) -> None:
    try:
        with psycopg.connect(DSN, prepare_threshold=0, autocommit=True) as conn:
            checks = 0
            for i in range(ROUNDS):
                assert conn.execute("SELECT %s::int + %s::int", (i, n)).fetchone()[0] == i + n
                rows = conn.execute("SELECT g, %s || g FROM generate_series(1, %s) g", (f"p{n}-", i + 1)).fetchall()
                assert rows == [(g, f"p{n}-{g}") for g in range(1, i + 2)], rows
                checks += 2
            with conn.transaction():
                with conn.cursor().copy("COPY drv_psycopg (client, i) FROM STDIN") as copy:
                    for i in range(ROUNDS):
                        copy.write_row((n, i))
            got = conn.execute("SELECT count(*), sum(i) FROM drv_psycopg WHERE client = %s", (n,)).fetchone()
            assert got == (ROUNDS, sum(range(ROUNDS))), got
            with conn.cursor().copy("COPY (SELECT i FROM drv_psycopg WHERE client = %s ORDER BY i) TO STDOUT", (n,)) as copy:
                out = [int(row[0]) for row in copy.rows()]
            assert out == list(range(ROUNDS)), out
            counts.append(checks + 2)
    except Exception as e:  # reported by the main thread
        errors.append(f"client {n}: {e!r}")


def listen_notify() -> int:
    """LISTEN through psycopg's API while other clients share the pool; NOTIFY from another connection."""
    with psycopg.connect(DSN, autocommit=True) as listener, psycopg.connect(DSN, autocommit=True) as sender:
        listener.execute("LISTEN psy_events")
        for i in range(5):
            sender.execute("SELECT pg_notify('psy_events', %s)", (f"event {i}",))
        got = [n.payload for n in listener.notifies(timeout=10, stop_after=5)]
        assert got == [f"event {i}" for i in range(5)], got
        assert listener.execute("SELECT 42").fetchone()[0] == 42
        return 2


def statements() -> int:
    """psycopg's own statement bookkeeping through the statement map: eviction by SQL DEALLOCATE of a protocol
    statement, pg_prepared_statements as psycopg's suite reads it, and an unnamed statement prepared in one request
    and described in the next (libpq's PQprepare / PQdescribePrepared)."""
    import datetime as dt

    from psycopg import pq

    with psycopg.connect(DSN) as conn:
        conn.prepared_max = 3
        conn.prepare_threshold = 0
        for i in range(6):
            assert conn.execute(f"select {i}").fetchone()[0] == i
        conn.execute("select %s", [None])
        conn.execute("select %s", [dt.date(2000, 1, 1)])
        conn.execute("select %s", [42])
        rows = conn.execute(
            "select statement, parameter_types from pg_prepared_statements where name != '' order by prepare_time",
            prepare=False,
        ).fetchall()
        assert rows == [("select $1", ["text"]), ("select $1", ["date"]), ("select $1", ["smallint"])], rows
    c = pq.PGconn.connect(DSN.encode())
    try:
        assert c.prepare(b"", b"select $1::int4, $2::text").status == pq.ExecStatus.COMMAND_OK
        d = c.describe_prepared(b"")
        assert d.status == pq.ExecStatus.COMMAND_OK, d.error_message
        assert (d.nparams, d.param_type(0), d.param_type(1)) == (2, 23, 25)
    finally:
        c.finish()
    return 3


with psycopg.connect(DSN, autocommit=True) as setup:
    setup.execute("CREATE TABLE IF NOT EXISTS drv_psycopg (client int, i int)")
counts.append(listen_notify())
counts.append(statements())
threads = [threading.Thread(target=client, args=(n,)) for n in range(CLIENTS)]
for t in threads:
    t.start()
for t in threads:
    t.join()
if errors:
    print("\n".join(errors))
    sys.exit(1)
print(f"psycopg: {sum(counts)} checks passed")
