"""asyncpg (binary results, named statements) and psycopg 3 (text, server-side prepares, COPY) against a pool of
two shards with two-phase commit, checking every merged answer against values computed here.
Usage: python3 sharded_check.py PORT."""
import asyncio
import decimal
import sys

import asyncpg
import psycopg

PORT = int(sys.argv[1])
ROWS = [(i, f"owner {i % 7}", decimal.Decimal(i * 25) / 10) for i in range(1, 401)]
checks = 0


def ok(cond, what):
    global checks
    assert cond, what
    checks += 1


async def with_asyncpg() -> None:
    conn = await asyncpg.connect(host="127.0.0.1", port=PORT, user="postgres", database="app")
    # Single-row inserts with parameters, routed by the key; a multi-row insert split across shards.
    await conn.executemany("INSERT INTO accounts (id, owner, balance) VALUES ($1, $2, $3)", ROWS[:200])
    await conn.execute(
        "INSERT INTO accounts (id, owner, balance) VALUES ($1, $2, $3), ($4, $5, $6)", *ROWS[200], *ROWS[201]
    )
    ok(await conn.fetchval("SELECT count(*) FROM accounts") == 202, "count")
    total = sum(r[2] for r in ROWS[:202])
    ok(await conn.fetchval("SELECT sum(balance) FROM accounts") == total, "sum")
    avg = await conn.fetchval("SELECT avg(balance) FROM accounts WHERE id > $1", 100)
    exp = sum(r[2] for r in ROWS[100:202]) / 102
    ok(abs(avg - exp) < decimal.Decimal("1e-12"), f"avg {avg} {exp}")
    top = await conn.fetch("SELECT id, balance FROM accounts ORDER BY balance DESC, id LIMIT 5")
    ok([r["id"] for r in top] == [202, 201, 200, 199, 198], top)
    groups = await conn.fetch("SELECT owner, count(*) AS n, max(id) FROM accounts GROUP BY owner ORDER BY owner")
    ok([(g["owner"], g["n"]) for g in groups] ==
       sorted({(o, sum(1 for r in ROWS[:202] if r[1] == o)) for o in {r[1] for r in ROWS[:202]}}), groups)
    # A transaction across both shards commits with two-phase commit.
    async with conn.transaction():
        await conn.execute("UPDATE accounts SET balance = balance + 1 WHERE id = $1", 1)
        await conn.execute("UPDATE accounts SET balance = balance + 1 WHERE id = $1", 2)
        ok(await conn.fetchval("SELECT count(*) FROM accounts WHERE id IN (1, 2)") == 2, "in tx")
    ok(await conn.fetchval("SELECT sum(balance) FROM accounts") == total + 2, "after tx")
    await conn.close()


def with_psycopg() -> None:
    with psycopg.connect(f"host=127.0.0.1 port={PORT} user=postgres dbname=app", prepare_threshold=0,
                         autocommit=True) as conn:
        with conn.cursor().copy("COPY accounts (id, owner, balance) FROM STDIN") as copy:
            for r in ROWS[202:]:
                copy.write_row(r)
        ok(conn.execute("SELECT count(*) FROM accounts").fetchone()[0] == len(ROWS), "copy count")
        rows = conn.execute("SELECT DISTINCT owner FROM accounts ORDER BY owner DESC").fetchall()
        ok([r[0] for r in rows] == sorted({r[1] for r in ROWS}, reverse=True), rows)
        n = conn.execute("DELETE FROM accounts WHERE id > %s", (390,)).rowcount
        ok(n == 10, n)
        try:
            conn.execute("SELECT id, row_number() OVER () FROM accounts")
            ok(False, "window function across shards should be refused")
        except psycopg.errors.FeatureNotSupported as e:
            ok("shard" in str(e), e)


asyncio.run(with_asyncpg())
with_psycopg()
print(f"sharded: {checks} checks passed")
