"""Holds N idle client connections to Ocelot (trust login, then silence) and prints Ocelot's resident memory before
and after, per connection. Used by benches/idle_clients.sh."""
import asyncio, struct, sys

port, n, pid = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])

def rss_kib():
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])

async def client(sem, conns):
    async with sem:
        r, w = await asyncio.open_connection("127.0.0.1", port)
        body = struct.pack(">i", 3 << 16) + b"user\0postgres\0database\0app\0\0"
        w.write(struct.pack(">i", len(body) + 4) + body)
        await w.drain()
        while True:
            t = await r.readexactly(1)
            ln = struct.unpack(">i", await r.readexactly(4))[0]
            await r.readexactly(ln - 4)
            if t == b"Z":
                break
        conns.append((r, w))

async def main():
    conns = []
    # One login first so the pool's server defaults are known and cached.
    await client(asyncio.Semaphore(1), conns)
    await asyncio.sleep(0.5)
    before = rss_kib()
    sem = asyncio.Semaphore(200)
    await asyncio.gather(*(client(sem, conns) for _ in range(n)))
    await asyncio.sleep(1.0)
    after = rss_kib()
    print(f"{n} idle clients: RSS {before} KiB -> {after} KiB, {(after - before) / n:.1f} KiB per client")
    for _, w in conns:
        w.close()

asyncio.run(main())
