//! The admin console's model tables: `SHOW MODELS`, `SHOW AB TESTS`, `SHOW MODEL DRIFT` and `SHOW CENTROIDS`.

use std::sync::Arc;

use crate::admin::table::{t, Col, Table};
use crate::database::UserPool;

/// Active A/B tests of the projects each pool has served, with the predictions and mean latency of each arm.
pub(super) fn ab(pools: &[&Arc<UserPool>]) -> Table {
    let mut table = Table::new(&[
        Col::Text("database"),
        Col::Text("user"),
        Col::Text("project"),
        Col::Int("model_a"),
        Col::Int("model_b"),
        Col::Text("share"),
        Col::Int("a_predictions"),
        Col::Int("b_predictions"),
        Col::Text("a_mean_latency_us"),
        Col::Text("b_mean_latency_us"),
    ]);
    for p in pools {
        for r in p.models.ab_rows() {
            table.row(vec![
                t(&p.database),
                t(&p.user),
                r.project,
                t(r.model_a),
                t(r.model_b),
                t(r.share),
                t(r.predictions[0]),
                t(r.predictions[1]),
                format!("{:.2}", r.mean_micros[0]),
                format!("{:.2}", r.mean_micros[1]),
            ]);
        }
    }
    table
}

/// Per model and feature: the drift window's statistics beside the training data's, PSI and KS.
pub(super) fn drift(pools: &[&Arc<UserPool>]) -> Table {
    let mut table = Table::new(&[
        Col::Text("database"),
        Col::Text("user"),
        Col::Text("project"),
        Col::Int("model_id"),
        Col::Text("feature"),
        Col::Int("n"),
        Col::Text("mean"),
        Col::Text("stddev"),
        Col::Text("missing_rate"),
        Col::Text("train_mean"),
        Col::Text("train_stddev"),
        Col::Text("psi"),
        Col::Text("ks"),
    ]);
    for p in pools {
        for (project, id, features) in p.models.drift_rows() {
            for f in features {
                table.row(vec![
                    t(&p.database),
                    t(&p.user),
                    project.clone(),
                    t(id),
                    f.feature,
                    t(f.n),
                    format!("{:.6}", f.mean),
                    format!("{:.6}", f.std),
                    format!("{:.4}", f.missing_rate),
                    format!("{:.6}", f.train_mean),
                    format!("{:.6}", f.train_std),
                    format!("{:.4}", f.psi),
                    format!("{:.4}", f.ks),
                ]);
            }
        }
    }
    table
}

pub(super) fn models(pools: &[&Arc<UserPool>]) -> Table {
    let mut table = Table::new(&[
        Col::Text("database"),
        Col::Text("user"),
        Col::Text("project"),
        Col::Int("model_id"),
        Col::Text("algorithm"),
        Col::Int("bytes"),
        Col::Text("loaded"),
        Col::Int("predictions"),
        Col::Text("mean_latency_us"),
    ]);
    for p in pools {
        for m in p.models.rows() {
            table.row(vec![
                t(&p.database),
                t(&p.user),
                m.project,
                t(m.model_id),
                m.algorithm,
                t(m.bytes),
                t(if m.loaded { "t" } else { "f" }),
                t(m.predictions),
                format!("{:.2}", m.mean_micros),
            ]);
        }
    }
    table
}

/// Centroid sharding per pool: its centroids and what they routed.
pub(super) fn centroids(pools: &[&Arc<UserPool>]) -> Table {
    use std::sync::atomic::Ordering::Relaxed;
    let mut table = Table::new(&[
        Col::Text("database"),
        Col::Text("user"),
        Col::Text("key"),
        Col::Int("centroids"),
        Col::Text("source"),
        Col::Text("metric"),
        Col::Int("probes"),
        Col::Int("routing_lookups"),
        Col::Int("knn_queries"),
        Col::Int("shards_touched"),
        Col::Text("avg_shards_per_query"),
    ]);
    for p in pools {
        let Some(v) = p.sharder.vectors.as_ref() else {
            continue;
        };
        let key = p
            .sharder
            .key()
            .map(|k| format!("{}.{}", k.table, k.column))
            .unwrap_or_default();
        let (q, sh) = (v.knn_queries.load(Relaxed), v.knn_shards.load(Relaxed));
        table.row(vec![
            t(&p.database),
            t(&p.user),
            key,
            t(v.centroids().map_or(0, |c| c.len())),
            v.model
                .as_ref()
                .map_or_else(|| t("config"), |m| format!("model {m}")),
            format!("{:?}", v.metric).to_lowercase(),
            t(v.probes),
            t(v.routing_lookups.load(Relaxed)),
            t(q),
            t(sh),
            format!("{:.2}", if q == 0 { 0.0 } else { sh as f64 / q as f64 }),
        ]);
    }
    table
}
