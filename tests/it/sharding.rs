//! Sharding functions against a real PostgreSQL: Ocelot's hashes must equal PostgreSQL's own hash functions and
//! put every key in the same partition as `PARTITION BY HASH`, for bigint, text and uuid keys, over thousands of
//! random keys and the edge values. PgCat's sha1 function is checked against Python's hashlib.

use std::process::Command;

use crate::common::*;
use ocelot::router::hash::{
    bigint_partition, hash_bytes_extended, hashint8extended, sha1_shard, text_partition,
    uuid_partition, HASH_PARTITION_SEED,
};

/// xorshift64*: deterministic keys without another dependency.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

fn bigint_keys() -> Vec<i64> {
    let mut rng = Rng(0x1234_5678_9abc_def1);
    let mut keys: Vec<i64> = vec![
        0,
        1,
        -1,
        2,
        -2,
        i64::MIN,
        i64::MAX,
        i64::MIN + 1,
        i64::MAX - 1,
        i32::MIN as i64,
        i32::MAX as i64,
        u32::MAX as i64,
        -(u32::MAX as i64),
        1 << 32,
        -(1 << 32),
    ];
    for i in 0..6000 {
        let v = rng.next() as i64;
        // Mix full-range keys with small ones, where most real ids live.
        keys.push(match i % 3 {
            0 => v,
            1 => v % 100_000,
            _ => (v >> 33) as i32 as i64,
        });
    }
    keys
}

async fn direct(pg: &Postgres) -> tokio_postgres::Client {
    let (c, conn) = tokio_postgres::connect(
        &format!("host=127.0.0.1 port={} user=postgres dbname=app", pg.port),
        tokio_postgres::NoTls,
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    c
}

/// Creates `name` hash-partitioned by a `ty` column into `modulus` partitions named `name_<remainder>`.
async fn partitioned(c: &tokio_postgres::Client, name: &str, ty: &str, modulus: u64) {
    c.batch_execute(&format!(
        "CREATE TABLE {name} (k {ty}) PARTITION BY HASH (k)"
    ))
    .await
    .unwrap();
    for r in 0..modulus {
        c.batch_execute(&format!(
            "CREATE TABLE {name}_{r} PARTITION OF {name} FOR VALUES WITH (MODULUS {modulus}, REMAINDER {r})"
        ))
        .await
        .unwrap();
    }
}

fn partition_of(relname: &str) -> u64 {
    relname
        .rsplit('_')
        .next()
        .and_then(|n| n.parse().ok())
        .expect("partition name")
}

#[tokio::test]
async fn bigint_hash_matches_postgresql() {
    let pg = Postgres::start();
    let c = direct(&pg).await;
    let keys = bigint_keys();
    let seed = HASH_PARTITION_SEED as i64;
    let rows = c
        .query(
            "SELECT k, hashint8extended(k, $2) FROM unnest($1::int8[]) k",
            &[&keys, &seed],
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), keys.len());
    for row in &rows {
        let (k, h): (i64, i64) = (row.get(0), row.get(1));
        assert_eq!(
            hashint8extended(k, HASH_PARTITION_SEED) as i64,
            h,
            "hashint8extended({k})"
        );
    }
    for modulus in [2u64, 3, 5, 8] {
        let t = format!("pb{modulus}");
        partitioned(&c, &t, "int8", modulus).await;
        c.execute(
            &format!("INSERT INTO {t} SELECT unnest($1::int8[])"),
            &[&keys],
        )
        .await
        .unwrap();
        let rows = c
            .query(&format!("SELECT k, tableoid::regclass::text FROM {t}"), &[])
            .await
            .unwrap();
        assert_eq!(rows.len(), keys.len());
        for row in rows {
            let (k, rel): (i64, String) = (row.get(0), row.get(1));
            assert_eq!(
                bigint_partition(k, modulus),
                partition_of(&rel),
                "key {k} modulus {modulus}"
            );
        }
    }
}

#[tokio::test]
async fn text_and_uuid_hashes_match_postgresql() {
    let pg = Postgres::start();
    let c = direct(&pg).await;
    let mut rng = Rng(0xfeed_beef_cafe_f00d);
    let alphabet: Vec<char> = "abcXYZ019 _-é漢😀".chars().collect();
    let mut texts: Vec<String> = vec![
        String::new(),
        "a".into(),
        "hello world".into(),
        "x".repeat(100),
    ];
    for _ in 0..4000 {
        let len = (rng.next() % 40) as usize;
        texts.push(
            (0..len)
                .map(|_| alphabet[(rng.next() % alphabet.len() as u64) as usize])
                .collect(),
        );
    }
    let seed = HASH_PARTITION_SEED as i64;
    let rows = c
        .query(
            "SELECT t, hashtextextended(t, $2) FROM unnest($1::text[]) t",
            &[&texts, &seed],
        )
        .await
        .unwrap();
    for row in &rows {
        let (t, h): (String, i64) = (row.get(0), row.get(1));
        assert_eq!(
            hash_bytes_extended(t.as_bytes(), HASH_PARTITION_SEED) as i64,
            h,
            "text {t:?}"
        );
    }
    partitioned(&c, "pt", "text", 3).await;
    c.execute("INSERT INTO pt SELECT unnest($1::text[])", &[&texts])
        .await
        .unwrap();
    for row in c
        .query("SELECT k, tableoid::regclass::text FROM pt", &[])
        .await
        .unwrap()
    {
        let (k, rel): (String, String) = (row.get(0), row.get(1));
        assert_eq!(
            text_partition(k.as_bytes(), 3),
            partition_of(&rel),
            "text {k:?}"
        );
    }
    // uuid: 16 random bytes each.
    let uuids: Vec<String> = (0..3000)
        .map(|_| {
            let (a, b) = (rng.next(), rng.next());
            format!("{:016x}{:016x}", a, b)
        })
        .collect();
    partitioned(&c, "pu", "uuid", 5).await;
    c.execute("INSERT INTO pu SELECT unnest($1::text[])::uuid", &[&uuids])
        .await
        .unwrap();
    let rows = c
        .query(
            "SELECT k::text, tableoid::regclass::text, uuid_hash_extended(k, $1) FROM pu",
            &[&seed],
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), uuids.len());
    for row in rows {
        let (k, rel, h): (String, String, i64) = (row.get(0), row.get(1), row.get(2));
        let bytes = ocelot::router::hash::parse_uuid(&k).unwrap();
        assert_eq!(
            hash_bytes_extended(&bytes, HASH_PARTITION_SEED) as i64,
            h,
            "uuid {k}"
        );
        assert_eq!(uuid_partition(&bytes, 5), partition_of(&rel), "uuid {k}");
    }
}

#[test]
fn sha1_matches_pgcat_definition() {
    let keys: Vec<i64> = bigint_keys().into_iter().take(2000).collect();
    let list = keys
        .iter()
        .map(|k| k.to_string())
        .collect::<Vec<_>>()
        .join(",");
    let script = format!(
        "import hashlib\nfor k in [{list}]:\n    print(int(hashlib.sha1(str(k).encode()).hexdigest()[-8:], 16) % 7)"
    );
    let (ok, out, err) = run_tool({
        let mut c = Command::new("python3");
        c.args(["-c", &script]);
        c
    });
    assert!(ok, "{err}");
    let expected: Vec<u64> = out.lines().map(|l| l.parse().unwrap()).collect();
    assert_eq!(expected.len(), keys.len());
    for (k, want) in keys.iter().zip(expected) {
        assert_eq!(sha1_shard(*k, 7), want, "sha1 key {k}");
    }
}

/// Three shards, each a primary whose `data` table only has the hash partition of its own shard, so a row
/// routed to the wrong shard fails to insert.
struct Shards(Vec<Postgres>);

impl Shards {
    async fn start() -> Shards {
        Self::start_with("id bigint, v text")
    }

    fn start_with(columns: &str) -> Shards {
        let shards: Vec<Postgres> = (0..3).map(|_| Postgres::start()).collect();
        for (i, pg) in shards.iter().enumerate() {
            pg.psql_admin_db(
                "app",
                &format!(
                    "CREATE TABLE data ({columns}) PARTITION BY HASH (id);
                     CREATE TABLE data_{i} PARTITION OF data FOR VALUES WITH (MODULUS 3, REMAINDER {i});"
                ),
            );
        }
        Shards(shards)
    }

    fn config(&self) -> String {
        let mut shards = String::new();
        for (i, pg) in self.0.iter().enumerate() {
            shards.push_str(&format!(
                "[pools.app.shards.{i}]\ndatabase = \"app\"\nservers = [[\"127.0.0.1\", {}, \"primary\"]]\n\n",
                pg.port
            ));
        }
        format!(
            r#"
[general]
host = "127.0.0.1"
port = 0
admin_username = "admin"
admin_password = "admin"

[pools.app]
automatic_sharding_key = "data.id"
sharding_key_regex = '/\* sharding_key: (\d+) \*/'
shard_id_regex = '/\* shard_id: (\d+) \*/'

[pools.app.users.0]
username = "postgres"
auth_type = "trust"
pool_size = 3

{shards}"#
        )
    }

    fn count(&self, shard: usize) -> i64 {
        self.0[shard]
            .psql_admin_db("app", "SELECT count(*) FROM data")
            .parse()
            .unwrap()
    }
}

#[tokio::test]
async fn every_routing_method_reaches_the_right_shard() {
    let shards = Shards::start().await;
    let proxy = start_proxy(&shards.config()).await;
    let c = connect(proxy.local_addr().port(), "postgres", None, "app")
        .await
        .unwrap();
    let keys: Vec<i64> = bigint_keys().into_iter().take(300).collect();
    // Automatic key from INSERT values, as literals and as Bind parameters (binary int8).
    for (i, k) in keys.iter().enumerate() {
        if i % 2 == 0 {
            c.simple_query(&format!("INSERT INTO data (id, v) VALUES ({k}, 'v{k}')"))
                .await
                .unwrap();
        } else {
            c.execute(
                "INSERT INTO data (v, id) VALUES ($1, $2)",
                &[&format!("v{k}"), k],
            )
            .await
            .unwrap();
        }
    }
    let mut expected = [0i64; 3];
    for k in &keys {
        expected[bigint_partition(*k, 3) as usize] += 1;
    }
    for (s, want) in expected.iter().enumerate() {
        assert_eq!(shards.count(s), *want, "rows on shard {s}");
    }
    // Point reads by key (WHERE equality, literal and parameter), UPDATE and DELETE by key.
    for k in keys.iter().take(40) {
        assert_eq!(
            first_value(&c, &format!("SELECT v FROM data WHERE id = {k}")).await,
            format!("v{k}")
        );
        let r = c
            .query_one("SELECT v FROM data WHERE id = $1", &[k])
            .await
            .unwrap();
        assert_eq!(r.get::<_, String>(0), format!("v{k}"));
    }
    let k = keys[3];
    assert_eq!(
        c.execute("UPDATE data SET v = 'changed' WHERE id = $1", &[&k])
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        first_value(&c, &format!("SELECT v FROM data WHERE id = {k}")).await,
        "changed"
    );
    assert_eq!(
        c.execute(&format!("DELETE FROM data WHERE id = {k}"), &[])
            .await
            .unwrap(),
        1
    );
    expected[bigint_partition(k, 3) as usize] -= 1;
    // An IN list whose keys share a shard is routed there.
    let same: Vec<i64> = keys
        .iter()
        .copied()
        .filter(|k| bigint_partition(*k, 3) == 1)
        .take(3)
        .collect();
    let list = same
        .iter()
        .map(i64::to_string)
        .collect::<Vec<_>>()
        .join(", ");
    assert_eq!(
        first_value(
            &c,
            &format!("SELECT count(*) FROM data WHERE id IN ({list})")
        )
        .await,
        "3"
    );
    // Comments choose the shard (by number or by key).
    for (s, want) in expected.iter().enumerate() {
        let n = first_value(
            &c,
            &format!("/* shard_id: {s} */ SELECT count(*) FROM data"),
        )
        .await;
        assert_eq!(n, want.to_string(), "shard_id comment {s}");
    }
    let k = keys[10];
    let n = first_value(
        &c,
        &format!("/* sharding_key: {k} */ SELECT count(*) FROM data WHERE id = {k}"),
    )
    .await;
    assert_eq!(n, "1");
    // A keyless read of the sharded table runs on every shard, rows concatenated.
    let r = c
        .simple_query("SELECT id, v FROM data WHERE v LIKE 'v%'")
        .await
        .unwrap();
    let mut got: Vec<i64> = r
        .iter()
        .filter_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(row) => row.get(0).map(|v| v.parse().unwrap()),
            _ => None,
        })
        .collect();
    let tag = r.iter().find_map(|m| match m {
        tokio_postgres::SimpleQueryMessage::CommandComplete(n) => Some(*n),
        _ => None,
    });
    let mut want: Vec<i64> = keys.iter().copied().filter(|k| *k != keys[3]).collect();
    got.sort_unstable();
    want.sort_unstable();
    assert_eq!(
        got, want,
        "every row of every shard, each once (the deleted one gone)"
    );
    assert_eq!(
        tag,
        Some(got.len() as u64),
        "CommandComplete counts all shards' rows"
    );
    // One that cannot be merged is refused with a clear error, never answered from one shard; without
    // two_phase_commit, so is a write on every shard.
    for sql in [
        "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY id) FROM data",
        "SELECT * FROM data UNION SELECT * FROM data",
        "UPDATE data SET v = 'x'",
    ] {
        let e = c.simple_query(sql).await.unwrap_err();
        let msg = e
            .as_db_error()
            .map(|d| d.message().to_owned())
            .unwrap_or_default();
        assert_eq!(e.code().unwrap().code(), "0A000", "{sql}: {msg}");
        assert!(
            msg.contains("SET SHARD") || msg.contains("two_phase_commit"),
            "{msg}"
        );
    }
    // Queries that do not touch the sharded table go to the default shard.
    assert_eq!(first_value(&c, "SELECT 40 + 2").await, "42");
    // SET SHARD, SHOW SHARD, SET SHARDING KEY.
    assert_eq!(first_value(&c, "SHOW SHARD").await, "0");
    c.simple_query("SET SHARD TO '2'").await.unwrap();
    assert_eq!(first_value(&c, "SHOW SHARD").await, "2");
    assert_eq!(
        first_value(&c, "SELECT count(*) FROM data").await,
        expected[2].to_string()
    );
    c.simple_query(&format!("SET SHARDING KEY TO '{k}'"))
        .await
        .unwrap();
    assert_eq!(
        first_value(&c, "SHOW SHARD").await,
        bigint_partition(k, 3).to_string()
    );
    assert_eq!(
        first_value(&c, "SELECT count(*) FROM data").await,
        expected[bigint_partition(k, 3) as usize].to_string()
    );
    let e = c.simple_query("SET SHARD TO '7'").await.unwrap_err();
    assert_eq!(e.code().unwrap().code(), "22023");
    c.simple_query("SET SHARD TO 'ANY'").await.unwrap();
    assert_eq!(first_value(&c, "SHOW SHARD").await, "any");
}

#[tokio::test]
async fn in_lists_over_shards_are_merged_and_spanning_inserts_refused() {
    let shards = Shards::start().await;
    let proxy = start_proxy(&shards.config()).await;
    let c = connect(proxy.local_addr().port(), "postgres", None, "app")
        .await
        .unwrap();
    let a = (0..).find(|k| bigint_partition(*k, 3) == 0).unwrap();
    let b = (0..).find(|k| bigint_partition(*k, 3) == 2).unwrap();
    // Without two_phase_commit, a multi-row INSERT over two shards is refused whole, before anything runs.
    let sql = format!("INSERT INTO data (id, v) VALUES ({a}, 'x'), ({b}, 'y')");
    let e = c.simple_query(&sql).await.unwrap_err();
    let msg = e
        .as_db_error()
        .map(|d| d.message().to_owned())
        .unwrap_or_default();
    assert_eq!(e.code().unwrap().code(), "0A000", "{sql}: {msg}");
    assert!(
        msg.contains("shards 0, 2") && msg.contains("two_phase_commit"),
        "{msg}"
    );
    assert_eq!(shards.count(0) + shards.count(2), 0, "nothing was written");
    // An IN list over two shards is read from exactly those shards and merged.
    c.simple_query(&format!("INSERT INTO data (id, v) VALUES ({a}, 'x')"))
        .await
        .unwrap();
    c.simple_query(&format!("INSERT INTO data (id, v) VALUES ({b}, 'y')"))
        .await
        .unwrap();
    let rows = rows_of(
        &c.simple_query(&format!(
            "SELECT id, v FROM data WHERE id IN ({a}, {b}) ORDER BY id"
        ))
        .await
        .unwrap(),
    );
    let want = vec![
        vec![
            Some(a.min(b).to_string()),
            Some(if a < b { "x" } else { "y" }.to_owned()),
        ],
        vec![
            Some(a.max(b).to_string()),
            Some(if a < b { "y" } else { "x" }.to_owned()),
        ],
    ];
    assert_eq!(rows, want);
    assert_eq!(
        first_value(
            &c,
            &format!("SELECT count(*) FROM data WHERE id = {a} OR id = {b}")
        )
        .await,
        "2"
    );
}

/// Any value's bytes, as the server sent them.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Raw(Vec<u8>);

impl<'a> tokio_postgres::types::FromSql<'a> for Raw {
    fn from_sql(
        _: &tokio_postgres::types::Type,
        raw: &'a [u8],
    ) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        Ok(Raw(raw.to_vec()))
    }
    fn accepts(_: &tokio_postgres::types::Type) -> bool {
        true
    }
}

/// Rows as (column name, type, bytes) lists.
fn raw_rows(rows: &[tokio_postgres::Row]) -> Vec<Vec<(String, u32, Option<Raw>)>> {
    rows.iter()
        .map(|r| {
            r.columns()
                .iter()
                .enumerate()
                .map(|(i, c)| {
                    (
                        c.name().to_owned(),
                        c.type_().oid(),
                        r.get::<_, Option<Raw>>(i),
                    )
                })
                .collect()
        })
        .collect()
}

/// One row of the differential dataset: (id, v, n, i, b), values as SQL text or None for NULL.
type Row = (i64, String, Option<String>, Option<i32>, Option<bool>);

fn dataset(n: usize) -> Vec<Row> {
    let mut rng = Rng(42);
    let mut seen = std::collections::HashSet::new();
    let mut keys: Vec<i64> = bigint_keys()
        .into_iter()
        .filter(|k| seen.insert(*k))
        .collect();
    while keys.len() < n {
        let k = (rng.next() >> 20) as i64 - (1 << 43);
        if seen.insert(k) {
            keys.push(k);
        }
    }
    keys.truncate(n);
    keys.into_iter()
        .map(|k| {
            let n = match rng.next() % 5 {
                0 => None,
                x => Some(format!(
                    "{}{}.{:02}",
                    if x == 1 { "-" } else { "" },
                    rng.next() % 100_000,
                    rng.next() % 100
                )),
            };
            let i = (!rng.next().is_multiple_of(7)).then(|| (rng.next() % 1001) as i32 - 500);
            let b = [Some(true), Some(false), None][(rng.next() % 3) as usize];
            // Tabs, quotes, commas, backslashes and newlines in text exercise COPY's escaping.
            let v = match k.rem_euclid(11) {
                0 => format!("v{k}\ttab\\"),
                1 => format!("v{k}, \"quoted\""),
                2 => format!("v{k}\nline"),
                _ => format!("v{k}"),
            };
            (k, v, n, i, b)
        })
        .collect()
}

fn sql_values(r: &Row) -> String {
    let lit = |s: &str| format!("'{}'", s.replace('\'', "''"));
    format!(
        "({}, {}, {}, {}, {})",
        r.0,
        lit(&r.1),
        r.2.clone().unwrap_or_else(|| "NULL".into()),
        r.3.map_or("NULL".into(), |i| i.to_string()),
        r.4.map_or("NULL".into(), |b| b.to_string())
    )
}

fn copy_text(rows: &[Row]) -> String {
    let esc = |s: &str| {
        s.replace('\\', "\\\\")
            .replace('\t', "\\t")
            .replace('\n', "\\n")
    };
    rows.iter()
        .map(|r| {
            format!(
                "{}\t{}\t{}\t{}\t{}\n",
                r.0,
                esc(&r.1),
                r.2.clone().unwrap_or_else(|| "\\N".into()),
                r.3.map_or("\\N".into(), |i| i.to_string()),
                r.4.map_or("\\N".into(), |b| b.to_string())
            )
        })
        .collect()
}

fn copy_csv(rows: &[Row]) -> String {
    let mut out = String::from("id,v,n,i,b\n");
    for r in rows {
        out.push_str(&format!(
            "\"{}\",\"{}\",{},{},{}\n",
            r.0,
            r.1.replace('"', "\"\""),
            r.2.clone().unwrap_or_default(),
            r.3.map_or(String::new(), |i| i.to_string()),
            r.4.map_or(String::new(), |b| b.to_string())
        ));
    }
    out
}

#[tokio::test]
async fn merged_results_equal_a_single_server() {
    use futures_util::SinkExt;
    let columns = "id bigint, v text, n numeric(12,2), i int, b bool";
    let shards = Shards::start_with(columns);
    let single = Postgres::start();
    single.psql_admin_db("app", &format!("CREATE TABLE data ({columns})"));
    let config = shards
        .config()
        .replace("[pools.app]\n", "[pools.app]\ntwo_phase_commit = true\n");
    let proxy = start_proxy(&config).await;
    let port = proxy.local_addr().port();
    let via = connect(port, "postgres", None, "app").await.unwrap();
    let direct = direct(&single).await;
    // 10,000 rows through Ocelot four ways: multi-row INSERTs, single INSERTs with Bind parameters, COPY in text
    // format (tokio-postgres) and COPY in CSV with a header (psql's \copy).
    let rows = dataset(10_000);
    let (multi, rest) = rows.split_at(3000);
    let (single_rows, rest) = rest.split_at(3000);
    let (text_rows, csv_rows) = rest.split_at(2000);
    for chunk in multi.chunks(250) {
        let values: Vec<String> = chunk.iter().map(sql_values).collect();
        let sql = format!(
            "INSERT INTO data (id, v, n, i, b) VALUES {}",
            values.join(", ")
        );
        via.simple_query(&sql).await.unwrap();
    }
    let ins = via
        .prepare("INSERT INTO data (id, v, n, i, b) VALUES ($1, $2, $3::text::numeric, $4, $5)")
        .await
        .unwrap();
    for r in single_rows {
        via.execute(&ins, &[&r.0, &r.1, &r.2, &r.3, &r.4])
            .await
            .unwrap();
    }
    let sink = via
        .copy_in("COPY data (id, v, n, i, b) FROM STDIN")
        .await
        .unwrap();
    futures_util::pin_mut!(sink);
    let text = copy_text(text_rows);
    // Uneven pieces, so rows straddle CopyData messages.
    for piece in text.as_bytes().chunks(1000) {
        sink.send(bytes::Bytes::copy_from_slice(piece))
            .await
            .unwrap();
    }
    assert_eq!(sink.finish().await.unwrap(), text_rows.len() as u64);
    let csv_path = std::env::temp_dir().join(format!("ocelot-copy-{}.csv", std::process::id()));
    std::fs::write(&csv_path, copy_csv(csv_rows)).unwrap();
    let mut psql = psql_command(port, "app");
    psql.arg("-c").arg(format!(
        "\\copy data (id, v, n, i, b) FROM '{}' WITH (FORMAT csv, HEADER)",
        csv_path.display()
    ));
    // psql talks to the proxy running on this test's runtime: it must not block it.
    let (ok, out, err) = tokio::task::spawn_blocking(move || run_tool(psql))
        .await
        .unwrap();
    let _ = std::fs::remove_file(&csv_path);
    assert!(ok, "{out}{err}");
    // The reference server gets the same rows in one COPY.
    let sink = direct
        .copy_in("COPY data (id, v, n, i, b) FROM STDIN")
        .await
        .unwrap();
    futures_util::pin_mut!(sink);
    sink.send(bytes::Bytes::from(copy_text(&rows)))
        .await
        .unwrap();
    sink.finish().await.unwrap();
    // Every row is on exactly the shard its key hashes to (each shard only has its own partition, so a row
    // anywhere else could not have been inserted) and nowhere else.
    let mut expected = [0i64; 3];
    for r in &rows {
        expected[bigint_partition(r.0, 3) as usize] += 1;
    }
    assert_eq!(
        [shards.count(0), shards.count(1), shards.count(2)],
        expected
    );
    assert_eq!(
        first_value(
            &via,
            "SELECT count(DISTINCT id) FROM data /* shard_id: 0 */"
        )
        .await,
        expected[0].to_string()
    );
    // Column values arrived intact, whichever way they were sent.
    for sql in ["SELECT id, v, n, i, b FROM data ORDER BY id"] {
        let got = rows_of(&via.simple_query(sql).await.unwrap());
        let want = rows_of(&direct.simple_query(sql).await.unwrap());
        assert_eq!(got.len(), 10_000);
        assert!(got == want, "{sql}: the rows differ from the reference");
    }
    // Keyless reads fan out: the metrics' ocelot_fanout_queries_total counts them.
    let pool = proxy
        .shared()
        .snapshot()
        .cluster
        .get("app", "postgres")
        .unwrap()
        .clone();
    let fanouts = pool.fanouts.load(std::sync::atomic::Ordering::Relaxed);
    via.simple_query("SELECT count(*) FROM data").await.unwrap();
    assert_eq!(
        pool.fanouts.load(std::sync::atomic::Ordering::Relaxed),
        fanouts + 1
    );
    // Aggregates combined, and ORDER BY merged with LIMIT/OFFSET after the merge: exactly what one server returns.
    for sql in [
        "SELECT count(*) FROM data",
        "SELECT count(n), sum(n), min(n), max(n) FROM data",
        "SELECT sum(i), min(i), max(i), count(i) FROM data WHERE i > 0",
        "SELECT bool_and(b), bool_or(b), count(b) FROM data",
        "SELECT count(*), sum(n), min(i) FROM data WHERE i < -495",
        "SELECT sum(n), max(i), bool_and(b) FROM data WHERE v = 'no such row'",
        "SELECT count(*) AS c FROM data WHERE b",
        "SELECT id, n FROM data ORDER BY n DESC NULLS LAST, id LIMIT 20 OFFSET 5",
        "SELECT id, i FROM data ORDER BY i, id",
        "SELECT id, i FROM data ORDER BY 2 DESC, 1 LIMIT 10",
        "SELECT id AS k FROM data ORDER BY k LIMIT 7",
        "SELECT id, b FROM data WHERE i > 0 ORDER BY b, id LIMIT 15",
        "SELECT * FROM data ORDER BY id LIMIT 0",
        "SELECT id, n FROM data ORDER BY n NULLS FIRST, id DESC OFFSET 990",
    ] {
        let got = rows_of(
            &via.simple_query(sql)
                .await
                .unwrap_or_else(|e| panic!("{sql}: {e}")),
        );
        let want = rows_of(&direct.simple_query(sql).await.unwrap());
        assert_eq!(got, want, "{sql}");
    }
    // Grouped merges: partial aggregates per group combined, avg from sum and count, DISTINCT, text ordered under
    // the C collation the test clusters use; ties compared on the sort keys only.
    for sql in [
        "SELECT avg(i), avg(n), count(*) FROM data",
        "SELECT avg(i) AS a FROM data WHERE i > 490",
        "SELECT avg(n) FROM data WHERE v = 'no such row'",
        "SELECT b, count(*), sum(i), avg(n), min(v), max(v) FROM data GROUP BY b ORDER BY b NULLS FIRST",
        "SELECT i % 7 AS m, count(*) FROM data GROUP BY 1 ORDER BY 1",
        "SELECT i % 5, avg(i), bool_or(b) FROM data GROUP BY i % 5 ORDER BY 2 DESC NULLS LAST LIMIT 3",
        "SELECT count(*) AS c, b FROM data WHERE i > 0 GROUP BY b ORDER BY c DESC, b",
        "SELECT DISTINCT b FROM data ORDER BY b",
        "SELECT DISTINCT i % 10 AS d FROM data ORDER BY d DESC LIMIT 4 OFFSET 1",
        "SELECT v FROM data ORDER BY v LIMIT 12",
        "SELECT v, id FROM data ORDER BY v DESC, id OFFSET 995",
        "SELECT b, i FROM data ORDER BY b, i DESC LIMIT 30",
        "SELECT i FROM data ORDER BY i NULLS FIRST LIMIT 25",
        // Sorted by what is not selected: hidden sort columns, dropped from the answer.
        "SELECT id FROM data ORDER BY abs(i - 40), id LIMIT 9",
        "SELECT v FROM data ORDER BY id DESC LIMIT 6 OFFSET 2",
        "SELECT min(v), max(v) FROM data WHERE i < 0",
    ] {
        let got = rows_of(
            &via.simple_query(sql)
                .await
                .unwrap_or_else(|e| panic!("{sql}: {e}")),
        );
        let want = rows_of(&direct.simple_query(sql).await.unwrap());
        assert_eq!(got, want, "{sql}");
    }
    // Without ORDER BY the order of rows is unspecified: compared as multisets.
    for sql in [
        "SELECT id, v, n FROM data WHERE i > 400",
        "SELECT b, count(*) FROM data GROUP BY b",
        "SELECT count(*) FROM data GROUP BY i % 3",
        "SELECT DISTINCT i % 4, b FROM data",
    ] {
        let mut got = rows_of(
            &via.simple_query(sql)
                .await
                .unwrap_or_else(|e| panic!("{sql}: {e}")),
        );
        let mut want = rows_of(&direct.simple_query(sql).await.unwrap());
        got.sort();
        want.sort();
        assert_eq!(got, want, "{sql}");
    }
    // The same merges over the extended protocol with binary results (tokio-postgres): the values' bytes equal
    // one server's, parameters included.
    for (sql, params) in [
        ("SELECT count(*), sum(i), min(n), max(v), avg(n), bool_or(b) FROM data", vec![]),
        ("SELECT b, count(*), avg(i), min(id) FROM data WHERE i > $1 GROUP BY b ORDER BY b", vec![100]),
        ("SELECT id, n, v FROM data WHERE i < $1 ORDER BY n DESC NULLS LAST, id LIMIT 20 OFFSET 3", vec![0]),
        ("SELECT DISTINCT i % 10 AS d FROM data ORDER BY d", vec![]),
        ("SELECT v FROM data WHERE i = $1 ORDER BY v", vec![7]),
        ("SELECT id, v FROM data ORDER BY abs(i - $1), id LIMIT 8", vec![30]),
    ] {
        let p: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> =
            params.iter().map(|v| v as &(dyn tokio_postgres::types::ToSql + Sync)).collect();
        let got = raw_rows(&via.query(sql, &p).await.unwrap_or_else(|e| panic!("{sql}: {e:?}")));
        let want = raw_rows(&direct.query(sql, &p).await.unwrap());
        assert_eq!(got, want, "{sql}");
    }
    // Concatenated rows over the extended protocol.
    let mut got = raw_rows(
        &via.query("SELECT id, v FROM data WHERE i = $1", &[&3i32])
            .await
            .unwrap(),
    );
    let mut want = raw_rows(
        &direct
            .query("SELECT id, v FROM data WHERE i = $1", &[&3i32])
            .await
            .unwrap(),
    );
    got.sort();
    want.sort();
    assert_eq!(got, want);
    // What cannot be merged exactly is refused with the reason and how to target a shard.
    for sql in [
        "SELECT id, row_number() OVER (ORDER BY id) FROM data",
        "SELECT b, count(*) FROM data GROUP BY b HAVING count(*) > 3",
        "SELECT count(DISTINCT i) FROM data",
        "SELECT stddev(i) FROM data",
        "SELECT d.id FROM data d JOIN data e ON e.i = d.i",
    ] {
        let e = via.simple_query(sql).await.unwrap_err();
        let msg = e
            .as_db_error()
            .map(|d| d.message().to_owned())
            .unwrap_or_default();
        assert_eq!(e.code().unwrap().code(), "0A000", "{sql}: {msg}");
        assert!(msg.contains("shard"), "{sql}: {msg}");
    }
}

#[tokio::test]
async fn transactions_run_on_the_shard_of_their_first_statement() {
    let shards = Shards::start().await;
    let proxy = start_proxy(&shards.config()).await;
    let c = connect(proxy.local_addr().port(), "postgres", None, "app")
        .await
        .unwrap();
    let a = (1..).find(|k| bigint_partition(*k, 3) == 2).unwrap();
    let b = (1..).find(|k| bigint_partition(*k, 3) == 1).unwrap();
    // A bare BEGIN waits for the first statement, whose key picks the shard.
    c.simple_query("BEGIN").await.unwrap();
    c.simple_query(&format!("INSERT INTO data (id, v) VALUES ({a}, 'in tx')"))
        .await
        .unwrap();
    c.simple_query(&format!("UPDATE data SET v = 'in tx 2' WHERE id = {a}"))
        .await
        .unwrap();
    c.simple_query("COMMIT").await.unwrap();
    assert_eq!((shards.count(1), shards.count(2)), (0, 1));
    // A statement for another shard inside the transaction is refused and aborts it, as on one server.
    c.simple_query("BEGIN").await.unwrap();
    c.simple_query(&format!("INSERT INTO data (id, v) VALUES ({a}, 'second')"))
        .await
        .unwrap();
    let e = c
        .simple_query(&format!(
            "INSERT INTO data (id, v) VALUES ({b}, 'wrong shard')"
        ))
        .await
        .unwrap_err();
    let msg = e
        .as_db_error()
        .map(|d| d.message().to_owned())
        .unwrap_or_default();
    assert_eq!(e.code().unwrap().code(), "0A000", "{msg}");
    assert!(
        msg.contains("shard 1") && msg.contains("two-phase commit"),
        "{msg}"
    );
    let e = c.simple_query("SELECT 1").await.unwrap_err();
    assert_eq!(e.code().unwrap().code(), "25P02");
    c.simple_query("ROLLBACK").await.unwrap();
    assert_eq!(
        (shards.count(1), shards.count(2)),
        (0, 1),
        "nothing of the failed transaction was kept"
    );
    // An empty transaction, then business as usual.
    c.simple_query("BEGIN").await.unwrap();
    c.simple_query("COMMIT").await.unwrap();
    assert_eq!(
        first_value(&c, &format!("SELECT v FROM data WHERE id = {a}")).await,
        "in tx 2"
    );
}

/// The rows of `data` on one shard, sorted.
fn rows_on(shards: &Shards, shard: usize) -> Vec<String> {
    let out = shards.0[shard].psql_admin_db("app", "SELECT id || ':' || v FROM data ORDER BY id");
    out.lines()
        .map(str::to_owned)
        .filter(|l| !l.is_empty())
        .collect()
}

fn prepared_left(shards: &Shards) -> Vec<String> {
    shards
        .0
        .iter()
        .flat_map(|pg| {
            pg.psql_admin_db("app", "SELECT gid FROM pg_prepared_xacts")
                .lines()
                .filter(|l| !l.is_empty())
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .collect()
}

fn key_on(shard: u64, skip: usize) -> i64 {
    (1..)
        .filter(|k| bigint_partition(*k, 3) == shard)
        .nth(skip)
        .unwrap()
}

#[tokio::test]
async fn writes_across_shards_commit_atomically_with_two_phase_commit() {
    let shards = Shards::start().await;
    // Shard 2 refuses 'boom' rows at commit time (a deferred constraint trigger), so its PREPARE fails.
    shards.0[2].psql_admin_db(
        "app",
        "CREATE FUNCTION no_boom() RETURNS trigger LANGUAGE plpgsql AS $$BEGIN IF NEW.v = 'boom' THEN RAISE EXCEPTION 'boom refused at commit'; END IF; RETURN NEW; END$$;
         CREATE CONSTRAINT TRIGGER no_boom AFTER INSERT OR UPDATE ON data_2 DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION no_boom();",
    );
    let config = shards
        .config()
        .replace("[pools.app]\n", "[pools.app]\ntwo_phase_commit = true\n");
    let proxy = start_proxy(&config).await;
    let c = connect(proxy.local_addr().port(), "postgres", None, "app")
        .await
        .unwrap();
    let (a0, a1, a2) = (key_on(0, 0), key_on(1, 0), key_on(2, 0));
    let (b0, b1, b2) = (key_on(0, 1), key_on(1, 1), key_on(2, 1));

    // A multi-row INSERT is split so each row lands on its shard; the count is the total.
    let msgs = c
        .simple_query(&format!(
            "INSERT INTO data (id, v) VALUES ({a0}, 'a0'), ({a1}, 'a1'), ({a2}, 'a2'), ({b0}, 'b0')"
        ))
        .await
        .unwrap();
    assert!(matches!(
        msgs.last(),
        Some(tokio_postgres::SimpleQueryMessage::CommandComplete(4))
    ));
    assert_eq!(rows_on(&shards, 0).len(), 2);
    assert_eq!(rows_on(&shards, 1), vec![format!("{a1}:a1")]);
    assert_eq!(rows_on(&shards, 2), vec![format!("{a2}:a2")]);
    // UPDATE and DELETE without the key run on every shard, counts summed, RETURNING rows merged.
    let msgs = c
        .simple_query("UPDATE data SET v = v || '+' WHERE v LIKE 'a%'")
        .await
        .unwrap();
    assert!(matches!(
        msgs.last(),
        Some(tokio_postgres::SimpleQueryMessage::CommandComplete(3))
    ));
    let mut returned = rows_of(
        &c.simple_query("DELETE FROM data WHERE v = 'b0' RETURNING id, v")
            .await
            .unwrap(),
    );
    returned.sort();
    assert_eq!(
        returned,
        vec![vec![Some(b0.to_string()), Some("b0".into())]]
    );
    assert_eq!(
        first_value(&c, "SELECT count(*) FROM data WHERE v LIKE '%+'").await,
        "3"
    );

    // One shard failing at PREPARE: nothing is kept anywhere.
    let e = c
        .simple_query(&format!(
            "INSERT INTO data (id, v) VALUES ({b1}, 'ok'), ({b2}, 'boom')"
        ))
        .await
        .unwrap_err();
    assert!(format!("{e:?}").contains("boom refused"), "{e:?}");
    assert_eq!(rows_on(&shards, 1), vec![format!("{a1}:a1+")]);
    assert_eq!(rows_on(&shards, 2), vec![format!("{a2}:a2+")]);

    // An explicit transaction moves between shards and commits on all of them together.
    c.simple_query("BEGIN").await.unwrap();
    c.simple_query(&format!("INSERT INTO data (id, v) VALUES ({b1}, 'tx')"))
        .await
        .unwrap();
    c.simple_query(&format!("INSERT INTO data (id, v) VALUES ({b2}, 'tx')"))
        .await
        .unwrap();
    // Inside it, reads see its own writes on every shard.
    assert_eq!(
        first_value(&c, "SELECT count(*) FROM data WHERE v = 'tx'").await,
        "2"
    );
    c.simple_query("UPDATE data SET v = 'tx2' WHERE v = 'tx'")
        .await
        .unwrap();
    c.simple_query("COMMIT").await.unwrap();
    assert_eq!(
        rows_on(&shards, 1),
        vec![format!("{a1}:a1+"), format!("{b1}:tx2")]
    );
    assert_eq!(
        rows_on(&shards, 2),
        vec![format!("{a2}:a2+"), format!("{b2}:tx2")]
    );

    // ROLLBACK undoes every shard.
    c.simple_query("BEGIN").await.unwrap();
    c.simple_query(&format!("DELETE FROM data WHERE id = {a1}"))
        .await
        .unwrap();
    c.simple_query(&format!("DELETE FROM data WHERE id = {a2}"))
        .await
        .unwrap();
    c.simple_query("ROLLBACK").await.unwrap();
    assert_eq!(first_value(&c, "SELECT count(*) FROM data").await, "5");

    // A transaction whose shard 2 part fails at PREPARE: COMMIT reports it and nothing is kept.
    c.simple_query("BEGIN").await.unwrap();
    c.simple_query(&format!("UPDATE data SET v = 'gone' WHERE id = {a0}"))
        .await
        .unwrap();
    c.simple_query(&format!("UPDATE data SET v = 'boom' WHERE id = {a2}"))
        .await
        .unwrap();
    let e = c.simple_query("COMMIT").await.unwrap_err();
    assert!(format!("{e:?}").contains("boom refused"), "{e:?}");
    assert_eq!(
        first_value(&c, "SELECT count(*) FROM data WHERE v IN ('gone', 'boom')").await,
        "0"
    );

    // The extended protocol with parameters, through a driver's transaction.
    let mut c2 = connect(proxy.local_addr().port(), "postgres", None, "app")
        .await
        .unwrap();
    let tx = c2.transaction().await.unwrap();
    let ins = tx
        .prepare("INSERT INTO data (id, v) VALUES ($1, $2)")
        .await
        .unwrap();
    let (c0, c1) = (key_on(0, 2), key_on(1, 2));
    tx.execute(&ins, &[&c0, &"ext"]).await.unwrap();
    tx.execute(&ins, &[&c1, &"ext"]).await.unwrap();
    tx.commit().await.unwrap();
    assert!(rows_on(&shards, 0).contains(&format!("{c0}:ext")));
    assert!(rows_on(&shards, 1).contains(&format!("{c1}:ext")));
    // A multi-row INSERT with parameters is split with its parameters; a keyless UPDATE with one runs everywhere.
    let (d0, d1, d2) = (key_on(0, 3), key_on(1, 3), key_on(2, 3));
    let n = c2
        .execute(
            "INSERT INTO data (id, v) VALUES ($1, $4), ($2, $4), ($3, $4)",
            &[&d0, &d1, &d2, &"multi"],
        )
        .await
        .unwrap();
    assert_eq!(n, 3);
    let n = c2
        .execute("UPDATE data SET v = $1 WHERE v = 'multi'", &[&"multi2"])
        .await
        .unwrap();
    assert_eq!(n, 3);
    for (shard, k) in [(0, d0), (1, d1), (2, d2)] {
        assert!(rows_on(&shards, shard).contains(&format!("{k}:multi2")));
    }

    assert!(prepared_left(&shards).is_empty());
    assert_eq!(
        shards.0[0].psql_admin_db("app", "SELECT count(*) FROM ocelot.two_phase_log"),
        "0"
    );
}

#[tokio::test]
async fn transactions_left_prepared_are_resolved_at_startup() {
    let shards = Shards::start().await;
    let (a0, a1, a2) = (key_on(0, 0), key_on(1, 0), key_on(2, 0));
    // "committed": the coordinator (shard 0) committed and logged it; shard 1's part was still prepared.
    shards.0[0].psql_admin_db(
        "app",
        &format!("CREATE SCHEMA ocelot; CREATE TABLE ocelot.two_phase_log (gid text PRIMARY KEY, committed_at timestamptz NOT NULL DEFAULT now());
         INSERT INTO data VALUES ({a0}, 'committed'); INSERT INTO ocelot.two_phase_log (gid) VALUES ('ocelot:0:committed')"),
    );
    shards.0[1].psql_admin_db(
        "app",
        &format!("BEGIN; INSERT INTO data VALUES ({a1}, 'committed'); PREPARE TRANSACTION 'ocelot:0:committed';"),
    );
    // "undecided": every part prepared, the coordinator's too, nothing logged: rolled back.
    shards.0[0].psql_admin_db(
        "app",
        &format!("BEGIN; INSERT INTO data VALUES ({}, 'undecided'); PREPARE TRANSACTION 'ocelot:0:undecided';", key_on(0, 1)),
    );
    shards.0[2].psql_admin_db(
        "app",
        &format!("BEGIN; INSERT INTO data VALUES ({a2}, 'undecided'); PREPARE TRANSACTION 'ocelot:0:undecided';"),
    );
    assert_eq!(prepared_left(&shards).len(), 3);
    let config = shards
        .config()
        .replace("[pools.app]\n", "[pools.app]\ntwo_phase_commit = true\n");
    let _proxy = start_proxy(&config).await;
    for _ in 0..100 {
        if prepared_left(&shards).is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(
        prepared_left(&shards).is_empty(),
        "{:?}",
        prepared_left(&shards)
    );
    assert_eq!(rows_on(&shards, 1), vec![format!("{a1}:committed")]);
    assert!(rows_on(&shards, 2).is_empty());
    assert_eq!(rows_on(&shards, 0), vec![format!("{a0}:committed")]);
}

#[tokio::test]
async fn copy_is_split_by_key_in_and_out_of_transactions() {
    use futures_util::SinkExt;
    let shards = Shards::start().await;
    let two_phase = shards
        .config()
        .replace("[pools.app]\n", "[pools.app]\ntwo_phase_commit = true\n");
    let proxy = start_proxy(&two_phase).await;
    let mut c = connect(proxy.local_addr().port(), "postgres", None, "app")
        .await
        .unwrap();
    async fn copy(
        c: &tokio_postgres::Client,
        sql: &str,
        data: &str,
    ) -> Result<u64, tokio_postgres::Error> {
        let sink = c.copy_in(sql).await?;
        futures_util::pin_mut!(sink);
        sink.send(bytes::Bytes::from(data.to_owned())).await?;
        sink.finish().await
    }
    let keys: Vec<i64> = (0..3)
        .flat_map(|s| (0..2).map(move |i| key_on(s, i)))
        .collect();
    // Bad data anywhere (a key that is not a bigint) aborts the COPY on every shard.
    let data = format!("{}\tok\nnot-a-number\tbad\n", keys[0]);
    let e = copy(&c, "COPY data (id, v) FROM STDIN", &data)
        .await
        .unwrap_err();
    assert_eq!(e.code().unwrap().code(), "22P04", "{e:?}");
    // A row without the key column cannot be routed: refused.
    let e = copy(&c, "COPY data (v) FROM STDIN", "x\n")
        .await
        .unwrap_err();
    assert_eq!(e.code().unwrap().code(), "0A000", "{e:?}");
    assert_eq!(first_value(&c, "SELECT count(*) FROM data").await, "0");
    // Inside a transaction, the COPY joins it on every shard and commits with it.
    let tx = c.transaction().await.unwrap();
    tx.execute(
        "INSERT INTO data (id, v) VALUES ($1, 'before')",
        &[&keys[2]],
    )
    .await
    .unwrap();
    let data: String = keys[3..].iter().map(|k| format!("{k},csv\n")).collect();
    let sink = tx
        .copy_in("COPY data (id, v) FROM STDIN (FORMAT csv)")
        .await
        .unwrap();
    futures_util::pin_mut!(sink);
    sink.send(bytes::Bytes::from(data)).await.unwrap();
    assert_eq!(sink.finish().await.unwrap(), 3);
    tx.commit().await.unwrap();
    assert_eq!(
        [shards.count(0), shards.count(1), shards.count(2)],
        [0, 2, 2]
    );
    // The table's column order is looked up when the COPY names no columns.
    let data = format!("{}\tall columns\n", keys[0]);
    assert_eq!(copy(&c, "COPY data FROM STDIN", &data).await.unwrap(), 1);
    assert_eq!(shards.count(0), 1);
    assert!(prepared_left(&shards).is_empty());
    // Without two_phase_commit a COPY into the sharded table is refused before any data moves.
    let plain = start_proxy(&shards.config()).await;
    let c2 = connect(plain.local_addr().port(), "postgres", None, "app")
        .await
        .unwrap();
    let e = copy(
        &c2,
        "COPY data (id, v) FROM STDIN",
        &format!("{}\tno\n", keys[1]),
    )
    .await
    .unwrap_err();
    assert_eq!(e.code().unwrap().code(), "0A000", "{e:?}");
    // tokio-postgres closes the COPY's statement in the background (Close, Sync): the query that follows must
    // wait for that answer and be routed afresh, not ride along to the shard that closed the statement.
    assert_eq!(first_value(&c2, "SELECT count(*) FROM data").await, "5");
}

/// The shipped pgcat.toml's layout: shards that are databases of one PostgreSQL server. Prepared transaction ids
/// are unique per server, so each shard's part needs an id of its own; recovery finds and resolves them too.
#[tokio::test]
async fn two_phase_commit_with_every_shard_on_one_server() {
    let pg = Postgres::start();
    let mut shards = String::new();
    for i in 0..3 {
        pg.psql_admin(&format!("CREATE DATABASE shard{i}"));
        pg.psql_admin_db(
            &format!("shard{i}"),
            &format!(
                "CREATE TABLE data (id bigint, v text) PARTITION BY HASH (id);
                 CREATE TABLE data_{i} PARTITION OF data FOR VALUES WITH (MODULUS 3, REMAINDER {i});"
            ),
        );
        shards.push_str(&format!(
            "[pools.app.shards.{i}]\ndatabase = \"shard{i}\"\nservers = [[\"127.0.0.1\", {}, \"primary\"]]\n\n",
            pg.port
        ));
    }
    let rows = |i: usize| {
        pg.psql_admin_db(
            &format!("shard{i}"),
            "SELECT id || ':' || v FROM data ORDER BY id",
        )
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect::<Vec<_>>()
    };
    let prepared = || pg.psql_admin("SELECT count(*) FROM pg_prepared_xacts");
    // Left by an earlier instance, in the per-shard form: "kept" committed on the coordinator (shard 0) and
    // logged, its shard-1 part still prepared; "dropped" prepared on shards 0 and 2 and never logged.
    let (k0, k1, k2) = (key_on(0, 5), key_on(1, 5), key_on(2, 5));
    pg.psql_admin_db(
        "shard0",
        &format!("CREATE SCHEMA ocelot; CREATE TABLE ocelot.two_phase_log (gid text PRIMARY KEY, committed_at timestamptz NOT NULL DEFAULT now());
         INSERT INTO data VALUES ({k0}, 'kept'); INSERT INTO ocelot.two_phase_log (gid) VALUES ('ocelot:0:kept')"),
    );
    pg.psql_admin_db(
        "shard1",
        &format!(
            "BEGIN; INSERT INTO data VALUES ({k1}, 'kept'); PREPARE TRANSACTION 'ocelot:0:kept:1';"
        ),
    );
    pg.psql_admin_db(
        "shard0",
        &format!("BEGIN; INSERT INTO data VALUES ({}, 'dropped'); PREPARE TRANSACTION 'ocelot:0:dropped:0';", key_on(0, 6)),
    );
    pg.psql_admin_db(
        "shard2",
        &format!("BEGIN; INSERT INTO data VALUES ({k2}, 'dropped'); PREPARE TRANSACTION 'ocelot:0:dropped:2';"),
    );
    assert_eq!(prepared(), "3");
    let config = format!(
        "[general]\nhost = \"127.0.0.1\"\nport = 0\nadmin_username = \"admin\"\nadmin_password = \"admin\"\n\n[pools.app]\nautomatic_sharding_key = \"data.id\"\ntwo_phase_commit = true\n\n[pools.app.users.0]\nusername = \"postgres\"\nauth_type = \"trust\"\npool_size = 3\n\n{shards}"
    );
    let proxy = start_proxy(&config).await;
    for _ in 0..100 {
        if prepared() == "0" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(prepared(), "0");
    assert_eq!(rows(0), vec![format!("{k0}:kept")]);
    assert_eq!(rows(1), vec![format!("{k1}:kept")]);
    assert!(rows(2).is_empty());

    let c = connect(proxy.local_addr().port(), "postgres", None, "app")
        .await
        .unwrap();
    let (a0, a1, a2) = (key_on(0, 0), key_on(1, 0), key_on(2, 0));
    let msgs = c
        .simple_query(&format!(
            "INSERT INTO data (id, v) VALUES ({a0}, 'a'), ({a1}, 'a'), ({a2}, 'a')"
        ))
        .await
        .unwrap();
    assert!(matches!(
        msgs.last(),
        Some(tokio_postgres::SimpleQueryMessage::CommandComplete(3))
    ));
    let n = c
        .execute("UPDATE data SET v = 'b' WHERE v = 'a'", &[])
        .await
        .unwrap();
    assert_eq!(n, 3);
    c.simple_query("BEGIN").await.unwrap();
    c.simple_query(&format!("UPDATE data SET v = 'c' WHERE id = {a0}"))
        .await
        .unwrap();
    c.simple_query(&format!("UPDATE data SET v = 'c' WHERE id = {a2}"))
        .await
        .unwrap();
    c.simple_query("COMMIT").await.unwrap();
    assert!(rows(0).contains(&format!("{a0}:c")));
    assert!(rows(1).contains(&format!("{a1}:b")));
    assert!(rows(2).contains(&format!("{a2}:c")));
    assert_eq!(prepared(), "0");
    assert_eq!(
        pg.psql_admin_db(
            "shard0",
            "SELECT count(*) FROM ocelot.two_phase_log WHERE gid <> 'ocelot:0:kept'"
        ),
        "0",
        "the commits' log entries are removed once every part committed"
    );
}

/// `default_shard = "random_healthy"` (PgCat's sharding_spec): queries that name no shard go to a random shard
/// whose server has not failed within `ban_time`; when the chosen one is down another is tried, and a query that
/// names the failed shard still goes there.
#[tokio::test]
async fn random_healthy_avoids_a_shard_that_is_down() {
    let shards = Shards::start().await;
    let config = shards
        .config()
        .replace(
            "[pools.app]\n",
            "[pools.app]\ndefault_shard = \"random_healthy\"\n",
        )
        .replace(
            "admin_password = \"admin\"\n",
            "admin_password = \"admin\"\nban_time = 60\nconnect_timeout = 1000\n",
        );
    let proxy = start_proxy(&config).await;
    let port = proxy.local_addr().port();
    let c = connect(port, "postgres", None, "app").await.unwrap();
    let ports: Vec<String> = shards.0.iter().map(|p| p.port.to_string()).collect();
    let mut seen = std::collections::HashSet::new();
    for _ in 0..40 {
        seen.insert(first_value(&c, "SELECT inet_server_port()::text").await);
    }
    assert_eq!(seen.len(), 3, "spread over every shard: {seen:?}");
    shards.0[1].stop();
    // As in PgCat's spec, a query may still meet a connection the stopped server closed (the pool learns from it).
    let mut c = connect(port, "postgres", None, "app").await.unwrap();
    let (mut served, mut failed) = (Vec::new(), 0);
    while served.len() < 40 {
        match c.simple_query("SELECT inet_server_port()::text").await {
            Ok(m) => served.push(rows_of(&m)[0][0].clone().unwrap_or_default()),
            Err(e) => {
                failed += 1;
                assert!(failed <= 3, "{failed} failures: {e:?}");
                if c.is_closed() {
                    c = connect(port, "postgres", None, "app").await.unwrap();
                }
            }
        }
    }
    assert!(!served.contains(&ports[1]), "{served:?}");
    assert!(
        served.contains(&ports[0]) && served.contains(&ports[2]),
        "{served:?}"
    );
    // Back up: a query naming it reaches it; the others keep avoiding it until its ban_time runs out.
    shards.0[1].restart();
    assert_eq!(
        first_value(&c, "/* shard_id: 1 */ SELECT inet_server_port()::text").await,
        ports[1]
    );
    for _ in 0..20 {
        assert_ne!(
            first_value(&c, "SELECT inet_server_port()::text").await,
            ports[1]
        );
    }
}
