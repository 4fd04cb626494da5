"""asyncpg through Ocelot: asyncpg prepares every query as a named statement and pipelines executemany.
Usage: python3 asyncpg_check.py PORT. Exits non-zero on the first wrong value."""
import asyncio
import sys

import asyncpg

PORT = int(sys.argv[1])
CLIENTS, ROUNDS = 8, 25


async def client(n: int) -> int:
    conn = await asyncpg.connect(host="127.0.0.1", port=PORT, user="postgres", database="app")
    checks = 0
    try:
        stmt = await conn.prepare("SELECT $1::int * 10 + $2::int")
        for i in range(ROUNDS):
            assert await conn.fetchval("SELECT $1::int + $2::int", i, n) == i + n
            assert await stmt.fetchval(i, n) == i * 10 + n
            rows = await conn.fetch("SELECT g, $1::text || g FROM generate_series(1, $2::int) g", f"c{n}-", i + 1)
            assert [(r[0], r[1]) for r in rows] == [(g, f"c{n}-{g}") for g in range(1, i + 2)]
            checks += 3
        await conn.executemany("INSERT INTO drv_asyncpg (client, i) VALUES ($1, $2)", [(n, i) for i in range(ROUNDS)])
        total = await conn.fetchval("SELECT sum(i) FROM drv_asyncpg WHERE client = $1", n)
        assert total == sum(range(ROUNDS)), total
        async with conn.transaction():
            await conn.execute("UPDATE drv_asyncpg SET i = i + 1 WHERE client = $1", n)
            assert await conn.fetchval("SELECT sum(i) FROM drv_asyncpg WHERE client = $1", n) == total + ROUNDS
        checks += 2
    finally:
        await conn.close()
    return checks


async def main() -> None:
    setup = await asyncpg.connect(host="127.0.0.1", port=PORT, user="postgres", database="app")
    await setup.execute("CREATE TABLE IF NOT EXISTS drv_asyncpg (client int, i int)")
    await setup.close()
    counts = await asyncio.gather(*(client(n) for n in range(CLIENTS)))
    print(f"asyncpg: {sum(counts)} checks passed")


asyncio.run(main())
