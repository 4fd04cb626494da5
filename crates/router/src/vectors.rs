//! Centroid sharding (`sharding_key_type = "vector"`): a row goes to the shard of the centroid nearest its vector
//! (centroid `i` is on shard `i % shards`), and a nearest-neighbour query (`ORDER BY <distance between the key
//! column and a constant> LIMIT k`) searches only the shards of the `probes` centroids nearest that constant.
//! Vectors are read from PostgreSQL's array text (`{1,2,3}`), pgvector's text (`[1,2,3]`), `ARRAY[...]`
//! literals, and binary `real[]`/`float8[]` parameters.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use sqlparser::ast::{
    Expr, FunctionArg, FunctionArgExpr, FunctionArguments, OrderByKind, SetExpr, Statement,
};

use super::shard_key::{literal, KeySpec, KeyValue};
use ocelot_config::{VectorMetric, VectorSharding};

/// A pool's centroids and what they route.
#[derive(Debug)]
pub struct VectorRouter {
    centroids: OnceLock<Vec<Vec<f32>>>,
    pub probes: usize,
    pub metric: VectorMetric,
    /// The kmeans project the centroids come from, when they are not given in the config.
    pub model: Option<String>,
    pub(crate) shards: usize,
    /// Nearest-neighbour queries routed, and the shards they searched.
    pub knn_queries: AtomicU64,
    pub knn_shards: AtomicU64,
    /// Vectors looked up among the centroids to route a row or key (a row of a multi-row INSERT is looked up
    /// once to find its shards and once to split it).
    pub routing_lookups: AtomicU64,
}

impl VectorRouter {
    pub fn new(v: &VectorSharding, shards: usize) -> Arc<VectorRouter> {
        let r = VectorRouter {
            centroids: OnceLock::new(),
            probes: v.probes.max(1),
            metric: v.metric,
            model: v.centroids_model.clone(),
            shards: shards.max(1),
            knn_queries: AtomicU64::new(0),
            knn_shards: AtomicU64::new(0),
            routing_lookups: AtomicU64::new(0),
        };
        // Validation already read them once; a file that changed since is read again here.
        if let Ok(Some(c)) = v.read_centroids() {
            let _ = r.centroids.set(c);
        }
        Arc::new(r)
    }

    /// The centroids, once known (a model's are loaded in the background).
    pub fn centroids(&self) -> Option<&[Vec<f32>]> {
        self.centroids.get().map(Vec::as_slice)
    }

    /// Sets centroids loaded from a model; returns false when they were already set.
    pub fn set_centroids(&self, c: Vec<Vec<f32>>) -> bool {
        self.centroids.set(c).is_ok()
    }

    fn distance(&self, a: &[f32], b: &[f32]) -> f64 {
        let dot: f64 = a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum();
        match self.metric {
            VectorMetric::L2 => a
                .iter()
                .zip(b)
                .map(|(x, y)| (*x as f64 - *y as f64).powi(2))
                .sum::<f64>(),
            VectorMetric::Cosine => {
                let na: f64 = a.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
                let nb: f64 = b.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
                if na == 0.0 || nb == 0.0 {
                    1.0
                } else {
                    1.0 - dot / (na * nb)
                }
            }
            VectorMetric::Inner => -dot,
        }
    }

    /// Centroid indexes from nearest to farthest; `None` before centroids are known or on a dimension mismatch.
    fn ranked(&self, v: &[f32]) -> Option<Vec<usize>> {
        let c = self.centroids()?;
        if c.iter().any(|c| c.len() != v.len()) {
            return None;
        }
        let mut idx: Vec<(f64, usize)> = c
            .iter()
            .enumerate()
            .map(|(i, c)| (self.distance(v, c), i))
            .collect();
        idx.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        Some(idx.into_iter().map(|(_, i)| i).collect())
    }

    /// The shard of a row whose vector is `v`.
    pub(crate) fn shard_of(&self, v: &[f32]) -> Option<usize> {
        let nearest = *self.ranked(v)?.first()?;
        self.routing_lookups.fetch_add(1, Ordering::Relaxed);
        Some(nearest % self.shards)
    }

    /// The shards a nearest-neighbour query for `v` searches: those of its `probes` nearest centroids.
    pub fn probe(&self, v: &[f32]) -> Option<BTreeSet<usize>> {
        let shards: BTreeSet<usize> = self
            .ranked(v)?
            .into_iter()
            .take(self.probes)
            .map(|i| i % self.shards)
            .collect();
        self.knn_queries.fetch_add(1, Ordering::Relaxed);
        self.knn_shards
            .fetch_add(shards.len() as u64, Ordering::Relaxed);
        Some(shards)
    }
}

/// A vector written as PostgreSQL array text (`{1,2}`) or pgvector text (`[1,2]`).
pub fn parse_vector(text: &str) -> Option<Vec<f32>> {
    let t = text.trim();
    let inner = t
        .strip_prefix('{')
        .and_then(|s| s.strip_suffix('}'))
        .or_else(|| t.strip_prefix('[').and_then(|s| s.strip_suffix(']')))?;
    if inner.trim().is_empty() {
        return None;
    }
    inner.split(',').map(|x| x.trim().parse().ok()).collect()
}

/// A one-dimensional array in PostgreSQL's binary format, of float4, float8, int4 or int8, without NULLs.
pub fn decode_binary_array(raw: &[u8]) -> Option<Vec<f32>> {
    let i32_at =
        |o: usize| -> Option<i32> { Some(i32::from_be_bytes(raw.get(o..o + 4)?.try_into().ok()?)) };
    let (ndim, elem) = (i32_at(0)?, i32_at(8)? as u32);
    if ndim != 1 {
        return None;
    }
    let n = usize::try_from(i32_at(12)?).ok()?;
    // The count comes from the client: at most one element per 8 bytes that are really there.
    let mut out = Vec::with_capacity(n.min(raw.len() / 8));
    let mut o = 20;
    for _ in 0..n {
        let len = usize::try_from(i32_at(o)?).ok()?;
        let b = raw.get(o + 4..o + 4 + len)?;
        out.push(match (elem, len) {
            (700, 4) => f32::from_be_bytes(b.try_into().ok()?),
            (701, 8) => f64::from_be_bytes(b.try_into().ok()?) as f32,
            (23, 4) => i32::from_be_bytes(b.try_into().ok()?) as f32,
            (20, 8) => i64::from_be_bytes(b.try_into().ok()?) as f32,
            _ => return None,
        });
        o += 4 + len;
    }
    Some(out)
}

/// The constant a parsed nearest-neighbour query orders by its distance to the key column: the first ORDER BY item
/// is `pgml.distance_l2/cosine_similarity/dot_product(col, v)` (either order) or `col <-> v` (`<=>`, `<#>`), with
/// `v` a literal or a Bind parameter. The query must be a plain SELECT with a LIMIT.
pub fn knn_target_parsed(statements: &[Statement], spec: &KeySpec) -> Option<KeyValue> {
    let [Statement::Query(q)] = statements else {
        return None;
    };
    if !matches!(q.body.as_ref(), SetExpr::Select(_)) {
        return None;
    }
    q.limit_clause.as_ref()?;
    let OrderByKind::Expressions(items) = &q.order_by.as_ref()?.kind else {
        return None;
    };
    let first = &items.first()?.expr;
    let is_key = |e: &Expr| match strip(e) {
        Expr::Identifier(i) => i.value.to_lowercase() == spec.column,
        Expr::CompoundIdentifier(p) => p
            .last()
            .is_some_and(|i| i.value.to_lowercase() == spec.column),
        _ => false,
    };
    let pair = |a: &Expr, b: &Expr| -> Option<KeyValue> {
        if is_key(a) {
            literal(b)
        } else if is_key(b) {
            literal(a)
        } else {
            None
        }
    };
    match strip(first) {
        Expr::BinaryOp { left, op, right }
            if matches!(op.to_string().as_str(), "<->" | "<=>" | "<#>") =>
        {
            pair(left, right)
        }
        Expr::Function(f) => {
            let name = f.name.to_string().to_lowercase();
            let known = [
                "pgml.distance_l2",
                "pgml.cosine_similarity",
                "pgml.dot_product",
                "distance_l2",
                "cosine_similarity",
                "dot_product",
            ];
            if !known.contains(&name.as_str()) {
                return None;
            }
            let FunctionArguments::List(list) = &f.args else {
                return None;
            };
            let args: Vec<&Expr> = list
                .args
                .iter()
                .filter_map(|a| match a {
                    FunctionArg::Unnamed(FunctionArgExpr::Expr(e)) => Some(e),
                    _ => None,
                })
                .collect();
            match args.as_slice() {
                [a, b] => pair(a, b),
                _ => None,
            }
        }
        _ => None,
    }
}

/// [`knn_target_parsed`] of SQL text (for tests).
#[cfg(test)]
fn knn_target(sql: &str, spec: &KeySpec) -> Option<KeyValue> {
    knn_target_parsed(&super::route::parse(sql)?, spec)
}

fn strip(e: &Expr) -> &Expr {
    match e {
        Expr::Nested(i) | Expr::Cast { expr: i, .. } => strip(i),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn router(probes: usize) -> Arc<VectorRouter> {
        VectorRouter::new(
            &VectorSharding {
                centroids: Some(vec![vec![0.0, 0.0], vec![10.0, 0.0], vec![0.0, 10.0]]),
                probes,
                ..Default::default()
            },
            3,
        )
    }

    #[test]
    fn rows_go_to_the_nearest_centroid_and_queries_probe_the_nearest() {
        let r = router(2);
        assert_eq!(r.shard_of(&[9.0, 1.0]), Some(1));
        assert_eq!(r.shard_of(&[1.0, 8.0]), Some(2));
        assert_eq!(r.shard_of(&[1.0, 1.0, 1.0]), None, "dimension mismatch");
        assert_eq!(r.probe(&[6.0, 1.0]), Some([0, 1].into()));
        assert_eq!(r.knn_queries.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn centroids_from_a_file_route_rows() {
        let file = std::env::temp_dir().join(format!(
            "ocelot-router-centroids-{}.json",
            std::process::id()
        ));
        std::fs::write(&file, "[[1, 0], [0, 1]]").unwrap();
        let v = VectorSharding {
            centroids_file: Some(file.display().to_string()),
            ..Default::default()
        };
        let r = VectorRouter::new(&v, 1);
        std::fs::remove_file(&file).unwrap();
        assert_eq!(r.centroids().unwrap().len(), 2);
        assert_eq!(r.shard_of(&[0.1, 0.9]), Some(0), "centroid 1 % 1 shard");
    }

    #[test]
    fn vectors_are_read_in_every_spelling() {
        assert_eq!(parse_vector("{1, 2.5,-3}"), Some(vec![1.0, 2.5, -3.0]));
        assert_eq!(parse_vector("[1,2]"), Some(vec![1.0, 2.0]));
        assert_eq!(parse_vector("{}"), None);
        assert_eq!(parse_vector("12"), None);
        // float4[] {1.5, -2}
        let mut b = Vec::new();
        for x in [1i32, 0, 700, 2, 1] {
            b.extend_from_slice(&x.to_be_bytes());
        }
        for v in [1.5f32, -2.0] {
            b.extend_from_slice(&4i32.to_be_bytes());
            b.extend_from_slice(&v.to_be_bytes());
        }
        assert_eq!(decode_binary_array(&b), Some(vec![1.5, -2.0]));
        assert_eq!(decode_binary_array(&b[..10]), None);
        // Found by the backend fuzz target: a huge element count over a few bytes allocated it up front.
        let fuzzed = [
            0, 0, 0, 1, 10, 83, 67, 82, 65, 77, 45, 83, 72, 65, 45, 50, 53, 54, 0, 0,
        ];
        assert_eq!(decode_binary_array(&fuzzed), None);
    }

    #[test]
    fn nearest_neighbour_queries_are_recognised() {
        let spec = KeySpec::parse("docs.emb").unwrap();
        let lit = |s: &str| Some(KeyValue::Literal(s.into()));
        assert_eq!(
            knn_target(
                "SELECT id FROM docs ORDER BY pgml.distance_l2(emb, ARRAY[1, -2]::real[]) LIMIT 5",
                &spec
            ),
            lit("{1,-2}")
        );
        assert_eq!(
            knn_target(
                "SELECT id FROM docs ORDER BY emb <-> '[1,2]' LIMIT 5",
                &spec
            ),
            lit("[1,2]")
        );
        assert_eq!(
            knn_target(
                "SELECT id FROM docs d ORDER BY pgml.cosine_similarity($1, d.emb) DESC LIMIT 3",
                &spec
            ),
            Some(KeyValue::Param(0))
        );
        assert_eq!(
            knn_target("SELECT id FROM docs ORDER BY id LIMIT 5", &spec),
            None
        );
        assert_eq!(
            knn_target("SELECT id FROM docs ORDER BY emb <-> '[1,2]'", &spec),
            None,
            "no LIMIT: every row is wanted"
        );
    }
}
