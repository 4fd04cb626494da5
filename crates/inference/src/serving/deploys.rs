//! What a pool's model cache asks of the registry: a project's deployment (model, A/B test, logging rate), the
//! deploys other clients and instances announce by NOTIFY, and a kmeans model's centers for centroid sharding.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use crate::backend::Backend;
use crate::registry::models::{refuse, registry_conn, Refusal};
use ocelot_router::session_sql::quote_literal;

use super::cache::{DEPLOY_CHANNEL, LISTENER_IDS};

/// An active A/B test as read from the registry: its id, model B and share.
pub(super) type AbFound = (i64, i64, f64);

/// A project's deployment as read from the registry.
pub(super) struct Found {
    pub(super) model: i64,
    pub(super) ab: Option<AbFound>,
    pub(super) log_rate: Option<f64>,
}

/// The project's deployed model id, active A/B test and logging rate, from the registry.
pub(super) async fn ask_registry(pool: &Arc<dyn Backend>, project: &str) -> Result<Found, Refusal> {
    let mut conn = registry_conn(pool).await?;
    let row = conn
        .query_row(&format!(
            "SELECT d.model_id, ab.id, ab.model_b, ab.share, lg.sample_rate FROM pgml.projects p \
             JOIN LATERAL (SELECT model_id FROM pgml.deployments WHERE project_id = p.id ORDER BY created_at DESC, id DESC LIMIT 1) d ON true \
             LEFT JOIN pgml.ab_tests ab ON ab.project_id = p.id AND ab.ended_at IS NULL \
             LEFT JOIN pgml.prediction_logging lg ON lg.project_id = p.id WHERE p.name = {}",
            quote_literal(project)
        ))
        .await?
        .unwrap_or_default();
    let num = |i: usize| row.get(i).cloned().flatten();
    let id = num(0).and_then(|v| v.parse::<i64>().ok()).ok_or_else(|| {
        refuse(
            "22023",
            format!("No deployed model exists for the project named: `{project}`"),
        )
    })?;
    let found = match (num(1), num(2), num(3)) {
        (Some(ab_id), Some(b), Some(share)) => match (ab_id.parse(), b.parse(), share.parse()) {
            (Ok(ab_id), Ok(b), Ok(share)) => Some((ab_id, b, share)),
            _ => None,
        },
        _ => None,
    };
    Ok(Found {
        model: id,
        ab: found,
        log_rate: num(4).and_then(|r| r.parse().ok()),
    })
}

/// Subscribes the pool to deploy announcements on its registry's shared LISTEN connection; each one makes the pool forget
/// the project's deployed model, so the next prediction asks the registry. Returns whether it listens.
pub(super) async fn listen_for_deploys(pool: &Arc<dyn Backend>) -> bool {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let id = LISTENER_IDS.fetch_add(1, Ordering::Relaxed);
    let registry = crate::registry::models::registry_pool(pool);
    if let Err(e) = registry.listen(id, DEPLOY_CHANNEL, tx).await {
        tracing::warn!(pool = %pool.database(), "cannot listen for model deploys ({e}); deployed models are looked up again after deploy_recheck_ms");
        return false;
    }
    let weak = Arc::downgrade(pool);
    tokio::spawn(async move {
        // Ends when the registry pool (and its listener, which holds the sender) is gone, or this pool is.
        while let Some(msg) = rx.recv().await {
            let Some(pool) = weak.upgrade() else {
                break;
            };
            if let Some(project) = notification_payload(&msg) {
                pool.models().forget(&project);
            }
        }
    });
    true
}

/// The payload of a NotificationResponse (process id, channel, payload).
pub(super) fn notification_payload(msg: &[u8]) -> Option<String> {
    let body = msg.get(9..)?;
    let channel_end = body.iter().position(|b| *b == 0)?;
    let payload = &body[channel_end + 1..];
    let end = payload.iter().position(|b| *b == 0)?;
    Some(String::from_utf8_lossy(&payload[..end]).into_owned())
}

/// The cluster centers of `project`'s deployed kmeans model, for centroid sharding
/// (`vector_sharding.centroids_model`).
pub async fn kmeans_centroids(
    pool: &Arc<dyn Backend>,
    project: &str,
) -> Result<Vec<Vec<f32>>, String> {
    let loaded = pool
        .models()
        .deployed(pool, project)
        .await
        .map_err(|r| r.message)?;
    if !loaded.model.pre.is_identity() {
        return Err(format!(
            "the kmeans model of {project} was trained with preprocess: its centers are not in the column's space"
        ));
    }
    match &loaded.model.estimator {
        crate::registry::models::Estimator::KMeans(k) => Ok(k
            .centers
            .iter()
            .map(|c| c.iter().map(|x| *x as f32).collect())
            .collect()),
        _ => Err(format!(
            "the deployed model of {project} is {}, not kmeans",
            loaded.algorithm
        )),
    }
}
