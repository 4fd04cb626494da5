"""pgml.* calls through Ocelot with asyncpg (extended protocol always, binary results, named statements) and
psycopg 3 (server-side binding, prepared statements): training, predictions with bound features, per-row
predictions with a bound filter, and errors that leave the connection usable. Values are checked against the
exact linear relation the table holds. Usage: python3 pgml_check.py PORT."""
import asyncio
import sys

import asyncpg
import psycopg

PORT = int(sys.argv[1])
checks = 0


def ok(cond, what):
    global checks
    assert cond, what
    checks += 1


def price(size, rooms, age):
    return 50 + 3 * size + 10 * rooms - 0.5 * age


async def with_asyncpg() -> None:
    conn = await asyncpg.connect(host="127.0.0.1", port=PORT, user="postgres", database="app")
    row = await conn.fetchrow(
        "SELECT * FROM pgml.train($1, 'regression', 'house', 'price', test_sampling => 'last')", "houses"
    )
    ok(row["project"] == "houses" and row["deployed"] is True, row)
    p = await conn.fetchval("SELECT pgml.predict($1, $2::real[])", "houses", [100, 3, 10])
    ok(p == price(100, 3, 10), p)
    stmt = await conn.prepare("SELECT pgml.predict('houses', $1) AS score")
    ok([a.name for a in stmt.get_attributes()] == ["score"], stmt.get_attributes())
    for size in (60, 80, 120):
        ok(await stmt.fetchval([size, 2, 20]) == price(size, 2, 20), size)
    rows = await conn.fetch(
        "SELECT size, rooms, age, pgml.predict('houses', ARRAY[size, rooms, age]) AS p FROM house WHERE rooms = $1 ORDER BY p DESC LIMIT 3",
        4,
    )
    ok(len(rows) == 3 and all(abs(r["p"] - price(r["size"], r["rooms"], r["age"])) < 1e-2 for r in rows), rows)
    try:
        await conn.fetchval("SELECT pgml.predict($1, $2::real[])", "nobody", [1])
        ok(False, "no error")
    except asyncpg.PostgresError as e:
        ok(e.sqlstate == "22023", e)
    ok(await conn.fetchval("SELECT count(*) FROM house WHERE rooms = $1", 4) > 0, "ordinary query")
    async with conn.transaction():
        ok(await conn.fetchval("SELECT pgml.predict('houses', $1::real[])", [100, 3, 10]) == 375, "in transaction")
    await conn.close()


def with_psycopg() -> None:
    with psycopg.connect(f"host=127.0.0.1 port={PORT} user=postgres dbname=app", prepare_threshold=0) as conn:
        cur = conn.cursor()
        for size in (70, 90):
            cur.execute("SELECT pgml.predict(%s, %s::real[])", ("houses", [size, 3, 10]))
            ok(cur.fetchone()[0] == price(size, 3, 10), size)
        cur.execute(
            "SELECT pgml.predict('houses', ARRAY[size, rooms, age]) FROM house WHERE rooms = %s AND age < %s",
            (2, 30),
        )
        got = cur.fetchall()
        cur.execute("SELECT count(*) FROM house WHERE rooms = %s AND age < %s", (2, 30))
        ok(len(got) == cur.fetchone()[0] and len(got) > 0, got)
        try:
            cur.execute("SELECT pgml.predict(%s, %s::real[])", ("houses", [1, 2]))
            ok(False, "no error")
        except psycopg.Error as e:
            ok(e.sqlstate == "22023", e)
        conn.rollback()
        cur.execute("SELECT pgml.predict(%s, %s::real[])", ("houses", [100, 3, 10]))
        ok(cur.fetchone()[0] == 375, "after the error")


asyncio.run(with_asyncpg())
with_psycopg()
print(f"pgml: {checks} checks passed")
