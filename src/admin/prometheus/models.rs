//! The metric families of the query router and of in-proxy inference: route cache and fan-outs, models served,
//! A/B arms, drift, prediction logging and embeddings.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::{esc, Family};
use crate::database::UserPool;

/// The query router's families: read/write route cache, fan-out, centroid sharding.
pub(super) fn router_families(out: &mut String, pools: &[&Arc<UserPool>]) {
    for (name, kind, help, pick) in [
        (
            "ocelot_route_cache_hits_total",
            "counter",
            "read/write routes found in a client's cache (no parse)",
            (|p: &UserPool| p.route_hits.load(Ordering::Relaxed)) as fn(&UserPool) -> u64,
        ),
        (
            "ocelot_route_cache_misses_total",
            "counter",
            "queries parsed to route them",
            |p: &UserPool| p.route_misses.load(Ordering::Relaxed),
        ),
        (
            "ocelot_fanout_queries_total",
            "counter",
            "requests run on several shards and merged",
            |p: &UserPool| p.fanouts.load(Ordering::Relaxed),
        ),
    ] {
        let mut f = Family::new(out, name, kind, help);
        for p in pools {
            let labels = format!("pool=\"{}\",user=\"{}\"", esc(&p.database), esc(&p.user));
            f.sample(name, &labels, pick(p));
        }
    }
    type VectorPick = fn(&crate::router::vectors::VectorRouter) -> u64;
    let vector_families: [(&str, &str, VectorPick); 3] = [
        (
            "ocelot_vector_routing_lookups_total",
            "vectors looked up among the centroids to route a row or key",
            |v| v.routing_lookups.load(Ordering::Relaxed),
        ),
        (
            "ocelot_knn_queries_total",
            "nearest-neighbour queries routed by centroid probes",
            |v| v.knn_queries.load(Ordering::Relaxed),
        ),
        (
            "ocelot_knn_shards_touched_total",
            "shards those queries searched",
            |v| v.knn_shards.load(Ordering::Relaxed),
        ),
    ];
    for (name, help, pick) in vector_families {
        let mut f = Family::new(out, name, "counter", help);
        for p in pools {
            if let Some(v) = p.sharder.vectors.as_ref() {
                let labels = format!("pool=\"{}\",user=\"{}\"", esc(&p.database), esc(&p.user));
                f.sample(name, &labels, pick(v));
            }
        }
    }
}

type Stat = fn(&crate::inference::ops::drift::FeatureDrift) -> f64;

/// The drift gauges per model feature: name, help text, the figure.
const DRIFT_FAMILIES: [(&str, &str, Stat); 5] = [
    (
        "ocelot_model_feature_psi",
        "population stability index of a feature in the drift window against the training data",
        |f| f.psi,
    ),
    (
        "ocelot_model_feature_ks",
        "largest gap between the feature's cumulative histograms, window against training data",
        |f| f.ks,
    ),
    (
        "ocelot_model_feature_mean",
        "mean of the feature in the drift window",
        |f| f.mean,
    ),
    (
        "ocelot_model_feature_missing_ratio",
        "share of predictions with the feature missing in the drift window",
        |f| f.missing_rate,
    ),
    (
        "ocelot_model_feature_observations",
        "predictions in the drift window",
        |f| f.n as f64,
    ),
];

/// A/B arms and drift per feature.
pub(super) fn model_ops_families(out: &mut String, pools: &[&Arc<UserPool>]) {
    let mut arms = Vec::new();
    let mut drift = Vec::new();
    for p in pools {
        let pool = format!("pool=\"{}\",user=\"{}\"", esc(&p.database), esc(&p.user));
        for r in p.models.ab_rows() {
            for (arm, model, i) in [("a", r.model_a, 0), ("b", r.model_b, 1)] {
                let labels = format!(
                    "{pool},project=\"{}\",arm=\"{arm}\",model_id=\"{model}\"",
                    esc(&r.project)
                );
                arms.push((labels, r.predictions[i], r.mean_micros[i], r.share));
            }
        }
        for (project, id, features) in p.models.drift_rows() {
            for f in features {
                let labels = format!(
                    "{pool},project=\"{}\",model_id=\"{id}\",feature=\"{}\"",
                    esc(&project),
                    esc(&f.feature)
                );
                drift.push((labels, f));
            }
        }
    }
    let mut f = Family::new(
        out,
        "ocelot_ab_predictions_total",
        "counter",
        "predictions per arm of each active A/B test",
    );
    for (labels, n, _, _) in &arms {
        f.sample("ocelot_ab_predictions_total", labels, n);
    }
    let mut f = Family::new(
        out,
        "ocelot_ab_prediction_mean_seconds",
        "gauge",
        "mean time per prediction per arm",
    );
    for (labels, _, micros, _) in &arms {
        f.sample("ocelot_ab_prediction_mean_seconds", labels, micros / 1e6);
    }
    log_families(out, pools);
    for (name, help, get) in DRIFT_FAMILIES {
        let mut fam = Family::new(out, name, "gauge", help);
        for (labels, d) in &drift {
            fam.sample(name, labels, get(d));
        }
    }
}

pub(super) fn inference_families(out: &mut String, pools: &[&Arc<UserPool>]) {
    let mut rows = Vec::new();
    let mut usage = Vec::new();
    for p in pools {
        let pool = format!("pool=\"{}\",user=\"{}\"", esc(&p.database), esc(&p.user));
        for m in p.models.rows() {
            let labels = format!(
                "{pool},project=\"{}\",model_id=\"{}\",algorithm=\"{}\"",
                esc(&m.project),
                m.model_id,
                esc(&m.algorithm)
            );
            rows.push((labels, m));
        }
        usage.push((pool, p.models.usage()));
    }
    let mut f = Family::new(
        out,
        "ocelot_model_predictions_total",
        "counter",
        "predictions served by Ocelot per model",
    );
    for (labels, m) in &rows {
        f.sample("ocelot_model_predictions_total", labels, m.predictions);
    }
    let mut f = Family::new(
        out,
        "ocelot_model_prediction_seconds_total",
        "counter",
        "time spent predicting per model",
    );
    for (labels, m) in &rows {
        let secs = m.mean_micros * m.predictions as f64 / 1e6;
        f.sample("ocelot_model_prediction_seconds_total", labels, secs);
    }
    let mut f = Family::new(
        out,
        "ocelot_model_loaded",
        "gauge",
        "1 while the model is in the cache",
    );
    for (labels, m) in &rows {
        f.sample("ocelot_model_loaded", labels, m.loaded as u8);
    }
    let mut f = Family::new(
        out,
        "ocelot_model_cache_bytes",
        "gauge",
        "bytes of models cached",
    );
    for (labels, (bytes, _)) in &usage {
        f.sample("ocelot_model_cache_bytes", labels, bytes);
    }
    let mut f = Family::new(
        out,
        "ocelot_model_cache_evictions_total",
        "counter",
        "models evicted from the cache",
    );
    for (labels, (_, evictions)) in &usage {
        f.sample("ocelot_model_cache_evictions_total", labels, evictions);
    }
    model_ops_families(out, pools);
    embed_families(out);
}

/// The prediction log's rows by fate.
fn log_families(out: &mut String, pools: &[&Arc<UserPool>]) {
    let mut f = Family::new(
        out,
        "ocelot_prediction_log_rows_total",
        "counter",
        "sampled predictions by fate: queued for the registry, written, dropped (queue full) or failed (registry error)",
    );
    for p in pools {
        let pool = format!("pool=\"{}\",user=\"{}\"", esc(&p.database), esc(&p.user));
        let counts = p.models.log.counters.get();
        for (result, n) in ["queued", "written", "dropped", "failed"]
            .iter()
            .zip(counts)
        {
            f.sample(
                "ocelot_prediction_log_rows_total",
                &format!("{pool},result=\"{result}\""),
                n,
            );
        }
    }
}

/// The embedding cache and batcher counters (process-wide).
fn embed_families(out: &mut String) {
    let (hits, misses) = crate::inference::serving::embed_queue::cache_counts();
    let (requests, passes) = crate::inference::serving::embed_queue::batch_counts();
    for (name, help, v) in [
        (
            "ocelot_embed_cache_hits_total",
            "embeddings answered from the cache",
            hits,
        ),
        (
            "ocelot_embed_cache_misses_total",
            "embeddings computed",
            misses,
        ),
        (
            "ocelot_embed_requests_total",
            "embedding requests given to the batcher",
            requests,
        ),
        (
            "ocelot_embed_forward_passes_total",
            "model forward passes run for them",
            passes,
        ),
    ] {
        let mut f = Family::new(out, name, "counter", help);
        f.sample(name, "", v);
    }
}
