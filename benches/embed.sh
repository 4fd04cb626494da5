#!/usr/bin/env bash
# Embedding and retrieval benchmark, on this machine's CPU, each pair measured in one run:
# - embeddings per second: `SELECT pgml.embed(...)` through Ocelot (pgbench, unique texts so the cache does not
#   answer) with 1 client and with 32 concurrent clients (Ocelot batches them), vs sentence-transformers in Python
#   encoding one text at a time and batches of 32;
# - RAG retrieval latency: embed a question and fetch the 10 most similar documents. Through Ocelot on 3 shards
#   (`ORDER BY pgml.cosine_similarity(emb, pgml.embed(..., question)) DESC LIMIT 10`, the embedding computed by
#   Ocelot and inlined, the search fanned out and merged), vs the client computing the embedding with
#   sentence-transformers and running the same search on one PostgreSQL holding every document.
#
#   benches/embed.sh          # DOCS=3000 SECONDS_PER_RUN=10 QUESTIONS=40 BATCH_WAIT_MS=0
# Needs sentence-transformers (pip install sentence-transformers: it pulls torch) and the model
# (scripts/fetch-models.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/ensure-postgres.sh
./scripts/fetch-models.sh
python3 -c "import sentence_transformers, psycopg" 2>/dev/null || python3 -m pip install -q --root-user-action=ignore sentence-transformers "psycopg[binary]"
cargo build --release -q
BIN="${CARGO_TARGET_DIR:-target}/release/ocelot"
DOCS=${DOCS:-3000}
SECONDS_PER_RUN=${SECONDS_PER_RUN:-10}
QUESTIONS=${QUESTIONS:-40}
P=${BASE_PORT:-47432}
MODEL="sentence-transformers/all-MiniLM-L6-v2"
. benches/lib.sh
bench_setup embedbench

i=0
for d in s0 s1 s2 one; do
  port=$((P + i)); i=$((i + 1))
  start_pg "$d" "$port" "-c max_connections=200 -c max_prepared_transactions=20"
  psql -X -q -h 127.0.0.1 -p "$port" -U postgres -c "CREATE DATABASE bench" postgres
  psql -X -q -h 127.0.0.1 -p "$port" -U postgres -d bench -c "CREATE TABLE docs (id bigint, body text, emb real[])"
done
cat > "$W/ocelot.toml" <<CONF
[general]
host = "127.0.0.1"
port = $((P + 4))
admin_username = "admin"
admin_password = "admin"
[inference]
models_dir = "$PWD/models"
batch_wait_ms = ${BATCH_WAIT_MS:-0}
[pools.bench]
automatic_sharding_key = "docs.id"
two_phase_commit = true
[pools.bench.users.0]
username = "postgres"
auth_type = "trust"
pool_size = 8
[pools.bench.shards.0]
database = "bench"
servers = [["127.0.0.1", $P, "primary"]]
[pools.bench.shards.1]
database = "bench"
servers = [["127.0.0.1", $((P + 1)), "primary"]]
[pools.bench.shards.2]
database = "bench"
servers = [["127.0.0.1", $((P + 2)), "primary"]]
[pools.one]
[pools.one.users.0]
username = "postgres"
auth_type = "trust"
pool_size = 4
[pools.one.shards.0]
database = "bench"
servers = [["127.0.0.1", $((P + 3)), "primary"]]
CONF
"$BIN" "$W/ocelot.toml" -l warn & PIDS+=($!)
sleep 1

cat > "$W/embed.sql" <<SQL
\set n random(1, 2000000000)
SELECT pgml.embed('$MODEL', 'benchmark sentence number :n about connection pooling and vector search');
SQL
ocelot_embed() { # CLIENTS -> embeddings/s
  pgbench -h 127.0.0.1 -p $((P + 4)) -U postgres -n -f "$W/embed.sql" -c "$1" -j "$(( $1 < 2 ? 1 : 2 ))" -T "$SECONDS_PER_RUN" bench 2>&1 \
    | awk '/^tps/ {print $3}'
}

/usr/bin/env python3 - "$P" "$DOCS" "$SECONDS_PER_RUN" "$QUESTIONS" "$MODEL" "$PWD/models/$MODEL" <<'PY' > "$W/python.out"
import random, statistics, sys, time
import psycopg
from sentence_transformers import SentenceTransformer

P, DOCS, SECS, QUESTIONS, NAME, PATH = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4]), sys.argv[5], sys.argv[6]
model = SentenceTransformer(PATH, device="cpu")
random.seed(1)
topics = ["databases", "connection pooling", "vector search", "gardening", "football", "cooking pasta",
          "the stock market", "mountain hiking", "jazz music", "machine learning", "old castles", "electric cars"]
words = ["fast", "reliable", "quiet", "surprising", "simple", "careful", "modern", "classic", "shared", "local"]
def sentence(i):
    t = random.choice(topics)
    return f"Document {i}: a {random.choice(words)} note about {t}, written for {random.choice(topics)} fans."
docs = [sentence(i) for i in range(DOCS)]
vecs = model.encode(docs, batch_size=64)
def copy_to(conn):
    with conn.cursor() as cur:
        with cur.copy("COPY docs (id, body, emb) FROM STDIN") as cp:
            for i, (d, v) in enumerate(zip(docs, vecs)):
                cp.write_row((i, d, "{" + ",".join(f"{x:.7g}" for x in v) + "}"))
    conn.commit()
ocelot = psycopg.connect(f"host=127.0.0.1 port={P + 4} user=postgres dbname=bench", cursor_factory=psycopg.ClientCursor)
single = psycopg.connect(f"host=127.0.0.1 port={P + 3} user=postgres dbname=bench")
copy_to(ocelot)
copy_to(single)
# The vector functions Ocelot installs on its servers, on the single server too (through its pool there).
one = psycopg.connect(f"host=127.0.0.1 port={P + 4} user=postgres dbname=one", cursor_factory=psycopg.ClientCursor)
one.execute("SELECT count(*) FROM docs WHERE pgml.cosine_similarity(emb, emb) > 0").fetchall()
one.close()

def rate(fn, secs):
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < secs:
        n += fn(n)
    return n / (time.perf_counter() - t0)
# The same sentences pgbench sends to Ocelot (token counts decide the cost).
text = lambda n: f"benchmark sentence number {n} about connection pooling and vector search"
st1 = rate(lambda n: len(model.encode([text(1000000000 + n)])), SECS)
st32 = rate(lambda n: len(model.encode([text(1000000000 + n + k) for k in range(32)], batch_size=32)), SECS)
print(f"st1 {st1:.1f}")
print(f"st32 {st32:.1f}")

qs = [f"question {q}: what is there about {random.choice(topics)} that is {random.choice(words)}?" for q in range(QUESTIONS)]
sql_o = "SELECT id FROM docs ORDER BY pgml.cosine_similarity(emb, pgml.embed(%s, %s)) DESC LIMIT 10"
sql_s = "SELECT id FROM docs ORDER BY pgml.cosine_similarity(emb, %s::real[]) DESC LIMIT 10"
lo, ls, same = [], [], 0
for q in qs:
    t0 = time.perf_counter()
    a = [r[0] for r in ocelot.execute(sql_o, (NAME, q)).fetchall()]
    t1 = time.perf_counter()
    v = [float(x) for x in model.encode([q])[0]]
    b = [r[0] for r in single.execute(sql_s, (v,)).fetchall()]
    t2 = time.perf_counter()
    lo.append((t1 - t0) * 1000); ls.append((t2 - t1) * 1000)
    same += len(set(a) & set(b))
print(f"rag_ocelot {statistics.median(lo):.2f}")
print(f"rag_single {statistics.median(ls):.2f}")
print(f"overlap {same / (10 * len(qs)):.4f}")
PY
st1=$(awk '/^st1/ {print $2}' "$W/python.out"); st32=$(awk '/^st32/ {print $2}' "$W/python.out")
o1=$(ocelot_embed 1); o32=$(ocelot_embed 32)
ro=$(awk '/^rag_ocelot/ {print $2}' "$W/python.out"); rs=$(awk '/^rag_single/ {print $2}' "$W/python.out")
ov=$(awk '/^overlap/ {print $2}' "$W/python.out")
printf "%s docs; %s s per rate; %s questions; %s cores\n\n" "$DOCS" "$SECONDS_PER_RUN" "$QUESTIONS" "$(nproc)"
printf "embeddings/s, 1 at a time:     Ocelot (1 client) %7.1f | sentence-transformers %7.1f | %.2fx\n" "$o1" "$st1" "$(echo "$o1 $st1" | awk '{print $1/$2}')"
printf "embeddings/s, concurrent:      Ocelot (32 clients) %5.1f | sentence-transformers batch 32 %7.1f | %.2fx\n" "$o32" "$st32" "$(echo "$o32 $st32" | awk '{print $1/$2}')"
printf "RAG retrieval (median ms):     Ocelot, 3 shards, embedding in the proxy %.2f | one PostgreSQL, embedding in the client %.2f\n" "$ro" "$rs"
printf "top-10 overlap between the two: %s\n" "$ov"
