"""psycopg 3 through Ocelot in session mode, checking what psycopg's own suite checks of a session: the process id
it was given is its server's (pg_backend_pid(), pg_stat_activity, pg_terminate_backend), a NOTIFY's sender is
reported under the sender's id, and startup parameters come back spelled as PostgreSQL spells them.
Usage: python3 psycopg_session_check.py PORT."""
import os
import sys

import psycopg
from psycopg import errors

PORT = int(sys.argv[1])
DSN = f"host=127.0.0.1 port={PORT} user=postgres dbname=app"
checks = 0


def check(cond, what):
    global checks
    if not cond:
        print(f"FAILED: {what}")
        sys.exit(1)
    checks += 1


with psycopg.connect(DSN, autocommit=True) as a, psycopg.connect(DSN, autocommit=True) as b:
    pid_a = a.execute("SELECT pg_backend_pid()").fetchone()[0]
    check(pid_a == a.info.backend_pid, f"pg_backend_pid() {pid_a} == backend_pid {a.info.backend_pid}")
    seen = b.execute("SELECT count(*) FROM pg_stat_activity WHERE pid = %s", [a.info.backend_pid]).fetchone()[0]
    check(seen == 1, "the other client finds this one in pg_stat_activity by its backend_pid")

    a.execute("LISTEN sess_events")
    a.execute("NOTIFY sess_events, 'own'")
    b.execute("NOTIFY sess_events, 'other'")
    got = [(n.payload, n.pid) for n in a.notifies(timeout=10, stop_after=2)]
    check(got == [("own", a.info.backend_pid), ("other", b.info.backend_pid)], f"notification senders {got}")

    # Terminating a session by the id it was given ends that session, with PostgreSQL's error.
    try:
        b.execute("SELECT pg_terminate_backend(%s)", [b.info.backend_pid])
        check(False, "pg_terminate_backend of one's own backend_pid raises")
    except errors.AdminShutdown:
        check(b.broken, "the terminated connection is broken")
    check(a.execute("SELECT 1").fetchone()[0] == 1, "the other client goes on")

for given, want, codec in [("utf-8", "UTF8", "utf-8"), ("euc-jp", "EUC_JP", "euc_jp"), ("latin1", "LATIN1", "iso8859-1")]:
    os.environ["PGCLIENTENCODING"] = given
    with psycopg.connect(DSN) as c:
        check(c.info.parameter_status("client_encoding") == want, f"client_encoding {given} reported as {want}")
        check(c.info.encoding == codec, f"codec for {given}")
        check(c.execute("SHOW client_encoding").fetchone()[0] == want, f"server's client_encoding for {given}")
del os.environ["PGCLIENTENCODING"]
with psycopg.connect(DSN, options="-c DateStyle=german") as c:
    check(c.info.parameter_status("DateStyle") == "German, DMY", "DateStyle as PostgreSQL spells it")
    check(c.execute("SHOW DateStyle").fetchone()[0] == "German, DMY", "the server agrees")

print(f"psycopg session: {checks} checks passed")
