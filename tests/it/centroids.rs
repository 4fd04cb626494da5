//! Centroid sharding: rows of a vector column go to the shard of their nearest centroid (INSERT with ARRAY
//! literals, multi-row INSERT, binary Bind parameters, COPY), checked row by row on the shards; nearest-neighbour
//! queries probe the nearest centroids' shards, with recall@10 against exact search reported; centroids from a
//! kmeans model trained with pgml.train.

use crate::common::*;

const DIM: usize = 8;
const CLUSTERS: usize = 3;

/// A deterministic pseudo-random number in [0, 1).
fn rnd(seed: &mut u64) -> f32 {
    *seed = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    ((*seed >> 33) as f32) / (1u64 << 31) as f32
}

fn center(k: usize) -> Vec<f32> {
    (0..DIM).map(|d| if d == k { 10.0 } else { 0.0 }).collect()
}

/// `n` points around the three centers, with noise wide enough that some fall near the boundaries.
fn dataset(n: usize) -> Vec<(i32, usize, Vec<f32>)> {
    let mut seed = 7;
    (0..n)
        .map(|i| {
            let k = i % CLUSTERS;
            let v = center(k)
                .into_iter()
                .map(|x| x + (rnd(&mut seed) - 0.5) * 9.0)
                .collect();
            (i as i32, k, v)
        })
        .collect()
}

fn l2(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum()
}

fn nearest(v: &[f32], centroids: &[Vec<f32>]) -> usize {
    (0..centroids.len())
        .min_by(|&a, &b| l2(v, &centroids[a]).total_cmp(&l2(v, &centroids[b])))
        .unwrap()
}

fn array(v: &[f32]) -> String {
    let parts: Vec<String> = v.iter().map(|x| format!("{x}")).collect();
    format!("ARRAY[{}]::real[]", parts.join(", "))
}

fn vector_config(shards: &[Postgres], source: &str, probes: usize) -> String {
    sharded_config(shards, "docs.emb").replace(
        "two_phase_commit = true\n",
        &format!("two_phase_commit = true\nsharding_key_type = \"vector\"\n\n[pools.app.vector_sharding]\n{source}\nprobes = {probes}\n"),
    )
}

/// (id, shard) of every row, read from each shard directly.
fn placement(shards: &[Postgres]) -> Vec<(i32, usize)> {
    let mut out = Vec::new();
    for (s, pg) in shards.iter().enumerate() {
        let ids = pg.psql_admin_db("app", "SELECT id FROM docs ORDER BY id");
        out.extend(
            ids.lines()
                .filter(|l| !l.is_empty())
                .map(|l| (l.parse().unwrap(), s)),
        );
    }
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_follow_their_nearest_centroid_and_queries_probe_it() {
    let shards: Vec<Postgres> = (0..3).map(|_| Postgres::start()).collect();
    for pg in &shards {
        pg.psql_admin_db("app", "CREATE TABLE docs (id int, emb real[])");
    }
    // Centroids in another order than the clusters' numbering: centroid i is on shard i % 3.
    let centroids = vec![center(2), center(0), center(1)];
    let inline = format!(
        "centroids = [{}]",
        centroids
            .iter()
            .map(|c| format!("{c:?}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let proxy = start_proxy(&vector_config(&shards, &inline, 1)).await;
    let port = proxy.local_addr().port();
    let c = connect(port, "postgres", None, "app").await.unwrap();
    let data = dataset(300);
    // Four ways in: single INSERTs with ARRAY literals, a multi-row INSERT, binary real[] Bind parameters, COPY.
    for (id, _, v) in &data[..60] {
        c.simple_query(&format!(
            "INSERT INTO docs (id, emb) VALUES ({id}, {})",
            array(v)
        ))
        .await
        .unwrap();
    }
    let rows: Vec<String> = data[60..150]
        .iter()
        .map(|(id, _, v)| format!("({id}, {})", array(v)))
        .collect();
    c.simple_query(&format!(
        "INSERT INTO docs (id, emb) VALUES {}",
        rows.join(", ")
    ))
    .await
    .unwrap();
    let ins = c
        .prepare("INSERT INTO docs (id, emb) VALUES ($1, $2)")
        .await
        .unwrap();
    for (id, _, v) in &data[150..220] {
        c.execute(&ins, &[id, v]).await.unwrap();
    }
    let copy: String = data[220..]
        .iter()
        .map(|(id, _, v)| {
            let parts: Vec<String> = v.iter().map(|x| format!("{x}")).collect();
            format!("{id}\t{{{}}}\n", parts.join(","))
        })
        .collect();
    {
        use futures_util::SinkExt;
        let sink = c.copy_in("COPY docs (id, emb) FROM STDIN").await.unwrap();
        futures_util::pin_mut!(sink);
        sink.send(bytes::Bytes::from(copy)).await.unwrap();
        sink.finish().await.unwrap();
    }
    // Row by row: each is on the shard of its nearest centroid, exactly once.
    let placed = placement(&shards);
    assert_eq!(placed.len(), data.len());
    let mut per_shard = [0usize; 3];
    for ((id, shard), (want_id, _, v)) in placed.iter().zip(&data) {
        assert_eq!(id, want_id);
        assert_eq!(*shard, nearest(v, &centroids) % 3, "row {id}");
        per_shard[*shard] += 1;
    }
    assert!(per_shard.iter().all(|n| *n > 50), "{per_shard:?}");

    // Nearest-neighbour queries probe one shard; recall@10 against exact search over all rows.
    let mut seed = 99;
    let mut found = 0;
    let queries = 20;
    for q in 0..queries {
        let k = q % CLUSTERS;
        let v: Vec<f32> = center(k)
            .into_iter()
            .map(|x| x + (rnd(&mut seed) - 0.5) * 9.0)
            .collect();
        let sql = format!(
            "SELECT id FROM docs ORDER BY pgml.distance_l2(emb, {}) LIMIT 10",
            array(&v)
        );
        let got: Vec<i32> = rows_of(&c.simple_query(&sql).await.unwrap())
            .iter()
            .map(|r| r[0].as_deref().unwrap().parse().unwrap())
            .collect();
        let mut exact: Vec<(f32, i32)> = data.iter().map(|(id, _, d)| (l2(&v, d), *id)).collect();
        exact.sort_by(|a, b| a.0.total_cmp(&b.0));
        let exact: Vec<i32> = exact[..10].iter().map(|e| e.1).collect();
        assert_eq!(got.len(), 10);
        found += got.iter().filter(|id| exact.contains(id)).count();
    }
    let recall = found as f64 / (10 * queries) as f64;
    let res = admin_psql(port, "SHOW CENTROIDS").unwrap();
    let row = &res.1[0];
    eprintln!(
        "centroid sharding, probes = 1: recall@10 {recall:.3} over {queries} queries; SHOW CENTROIDS {:?}",
        row
    );
    assert!(recall >= 0.8, "recall@10 {recall}");
    assert_eq!(admin_value(&res, row, "knn_queries"), queries.to_string());
    assert_eq!(
        admin_value(&res, row, "shards_touched"),
        queries.to_string()
    );
    assert_eq!(admin_value(&res, row, "centroids"), "3");
    assert!(
        admin_value(&res, row, "routing_lookups")
            .parse::<usize>()
            .unwrap()
            >= data.len()
    );

    // With every centroid probed the search is exact, as a fan-out over all shards is.
    let all = start_proxy(&vector_config(&shards, &inline, 3)).await;
    let c3 = connect(all.local_addr().port(), "postgres", None, "app")
        .await
        .unwrap();
    let v = center(1);
    let sql = format!(
        "SELECT id FROM docs ORDER BY pgml.distance_l2(emb, {}) LIMIT 10",
        array(&v)
    );
    let got: Vec<i32> = rows_of(&c3.simple_query(&sql).await.unwrap())
        .iter()
        .map(|r| r[0].as_deref().unwrap().parse().unwrap())
        .collect();
    let mut exact: Vec<(f32, i32)> = data.iter().map(|(id, _, d)| (l2(&v, d), *id)).collect();
    exact.sort_by(|a, b| a.0.total_cmp(&b.0));
    assert_eq!(got, exact[..10].iter().map(|e| e.1).collect::<Vec<_>>());

    // pgvector's operator syntax: with `<->` defined on the servers (here over real[], as pgvector defines it over
    // vector, which Debian 12 does not package), the same search in pgvector's spelling gives the same rows.
    for pg in &shards {
        pg.psql_admin_db(
            "app",
            "CREATE FUNCTION l2(a real[], b real[]) RETURNS float8 IMMUTABLE LANGUAGE sql AS
               'SELECT sqrt(sum((x - y) ^ 2)) FROM unnest(a, b) AS t (x, y)';
             CREATE OPERATOR <-> (LEFTARG = real[], RIGHTARG = real[], FUNCTION = l2);",
        );
    }
    let parts: Vec<String> = v.iter().map(|x| format!("{x}")).collect();
    let sql = format!(
        "SELECT id FROM docs ORDER BY emb <-> '{{{}}}' LIMIT 10",
        parts.join(",")
    );
    let got: Vec<i32> = rows_of(&c3.simple_query(&sql).await.unwrap())
        .iter()
        .map(|r| r[0].as_deref().unwrap().parse().unwrap())
        .collect();
    assert_eq!(got, exact[..10].iter().map(|e| e.1).collect::<Vec<_>>());
    let got: Vec<i32> = rows_of(&c.simple_query(&sql).await.unwrap())
        .iter()
        .map(|r| r[0].as_deref().unwrap().parse().unwrap())
        .collect();
    assert_eq!(got.len(), 10, "probes = 1 searches one shard");
    let res = admin_psql(port, "SHOW CENTROIDS").unwrap();
    assert_eq!(
        admin_value(&res, &res.1[0], "knn_queries"),
        (queries + 1).to_string()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn centroids_from_a_kmeans_model_trained_with_pgml_train() {
    let shards: Vec<Postgres> = (0..3).map(|_| Postgres::start()).collect();
    let registry = Postgres::start();
    for pg in &shards {
        pg.psql_admin_db("app", "CREATE TABLE docs (id int, emb real[])");
    }
    let data = dataset(150);
    let values: Vec<String> = data
        .iter()
        .map(|(id, _, v)| format!("({id}, {})", array(v)))
        .collect();
    registry.psql_admin_db(
        "app",
        &format!("CREATE TABLE train_docs AS SELECT * FROM (VALUES {}) t (id, emb); ALTER TABLE train_docs DROP COLUMN id", values.join(", ")),
    );
    let config = format!(
        "{}\n[pools.reg]\n[pools.reg.users.0]\nusername = \"postgres\"\nauth_type = \"trust\"\npool_size = 2\n[pools.reg.shards.0]\ndatabase = \"app\"\nservers = [[\"127.0.0.1\", {}, \"primary\"]]\n\n[inference]\nregistry_pool = \"reg\"\n",
        vector_config(&shards, "centroids_model = \"doc_clusters\"", 1),
        registry.port
    );
    let proxy = start_proxy(&config).await;
    let port = proxy.local_addr().port();
    let reg = connect(port, "postgres", None, "reg").await.unwrap();
    reg.simple_query("SELECT * FROM pgml.train('doc_clusters', 'clustering', 'train_docs', hyperparams => '{\"n_clusters\": 3}')")
        .await
        .unwrap();
    // The loader retries until the model is deployed.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let res = admin_psql(port, "SHOW CENTROIDS").unwrap();
        if admin_value(&res, &res.1[0], "centroids") == "3" {
            assert_eq!(admin_value(&res, &res.1[0], "source"), "model doc_clusters");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "centroids never loaded"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let c = connect(port, "postgres", None, "app").await.unwrap();
    for (id, _, v) in &data {
        c.simple_query(&format!(
            "INSERT INTO docs (id, emb) VALUES ({id}, {})",
            array(v)
        ))
        .await
        .unwrap();
    }
    // kmeans found the three clusters: each cluster's rows share a shard, and the clusters use all three.
    let placed = placement(&shards);
    let mut shard_of_cluster = [None; CLUSTERS];
    let mut agree = 0;
    for ((_, shard), (_, k, _)) in placed.iter().zip(&data) {
        let s = *shard_of_cluster[*k].get_or_insert(*shard);
        agree += usize::from(s == *shard);
    }
    let distinct: std::collections::BTreeSet<_> = shard_of_cluster.iter().flatten().collect();
    eprintln!(
        "kmeans centroids: {agree} of {} rows on their cluster's shard",
        data.len()
    );
    assert_eq!(distinct.len(), 3);
    assert!(agree as f64 >= 0.9 * data.len() as f64, "{agree}");
}
