//! A/B and canary tests of a project's models. `pgml.deploy_ab('p', model_b => 42, share => 0.1)` makes model 42
//! arm B next to the deployed model (arm A); every prediction is assigned to an arm by hashing a key, the
//! `ab_key` argument or else the first feature, so the same entity always meets the same model, and `share` of the
//! keys go to B. The test lives in the registry (`pgml.ab_tests`), so every Ocelot in front of it splits the same
//! way; it ends with `pgml.end_ab('p')` or the admin console's `END AB p`, after which all traffic is A's again.
//!
//! The hash is PostgreSQL's `hashtextextended(key, 0)` of the key's text, so an assignment can be checked in SQL:
//! arm B when `(hashtextextended(key, 0)::numeric + 2^63) / 2^64 < share`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;

use crate::backend::Backend;
use crate::registry::models::{refuse, registry_conn, Refusal};
use crate::registry::train::text_arg;
use crate::sql::call::{bind, Arg, Call};
use crate::sql::params::{BOOL, FLOAT8, INT8, TEXT};
use ocelot_protocol::encode;
use ocelot_router::hash::hash_bytes_extended;
use ocelot_router::session_sql::quote_literal;

/// Predictions served by one arm and the time they took.
#[derive(Debug, Default)]
pub(crate) struct ArmStats {
    predictions: AtomicU64,
    nanos: AtomicU64,
}

impl ArmStats {
    pub(crate) fn predictions(&self) -> u64 {
        self.predictions.load(Ordering::Relaxed)
    }

    /// Mean time per prediction, in microseconds.
    pub(crate) fn mean_micros(&self) -> f64 {
        let n = self.predictions();
        if n == 0 {
            return 0.0;
        }
        self.nanos.load(Ordering::Relaxed) as f64 / n as f64 / 1e3
    }
}

/// The active A/B test of a project.
#[derive(Debug)]
pub(crate) struct AbTest {
    /// Its row in `pgml.ab_tests`.
    pub(crate) id: i64,
    pub(crate) model_b: i64,
    pub(crate) share: f64,
    /// Arm A (index 0) and arm B (index 1).
    pub(crate) arms: [ArmStats; 2],
}

/// Which arm a key is assigned to: 0 (A) or 1 (B).
pub fn arm_of(key: &[u8], share: f64) -> usize {
    let h = hash_bytes_extended(key, 0);
    // The hash as a fraction of its range, in [0, 1).
    let unit = (h as i64 as f64 + 9_223_372_036_854_775_808.0) / 18_446_744_073_709_551_616.0;
    usize::from(unit < share)
}

/// The text a numeric key is hashed as: what PostgreSQL prints for the same float8 (`12345`, `0.5`).
pub fn number_key(v: f64) -> String {
    if v == 0.0 {
        // -0 and 0 are one entity.
        return "0".into();
    }
    format!("{v}")
}

/// The key of a prediction without an `ab_key`: its first feature, unless missing.
pub(crate) fn first_feature_key(x: &[f64]) -> Option<String> {
    x.first().filter(|v| !v.is_nan()).map(|v| number_key(*v))
}

impl AbTest {
    /// The arm of `key`.
    pub(crate) fn arm(&self, key: &[u8]) -> usize {
        arm_of(key, self.share)
    }

    /// Counts `n` predictions of `arm` that took `elapsed`.
    pub(crate) fn served(&self, arm: usize, n: u64, elapsed: Duration) {
        let a = &self.arms[arm.min(1)];
        a.predictions.fetch_add(n, Ordering::Relaxed);
        a.nanos
            .fetch_add(elapsed.as_nanos() as u64, Ordering::Relaxed);
    }
}

/// One line of `SHOW AB`.
#[derive(Debug, Clone, PartialEq)]
pub struct AbRow {
    pub project: String,
    pub model_a: i64,
    pub model_b: i64,
    pub share: f64,
    pub predictions: [u64; 2],
    pub mean_micros: [f64; 2],
}

/// `pgml.deploy_ab(project_name, model_b, share)`: starts an A/B test (ending the project's previous one).
pub(crate) async fn deploy_ab(
    pool: &Arc<dyn Backend>,
    call: &Call,
    out: &mut BytesMut,
) -> Result<(), Refusal> {
    let params = [("project_name", None), ("model_b", None), ("share", None)];
    let args = bind(call, &params)?;
    let project = text_arg(&args, "project_name")
        .ok_or_else(|| refuse("22004", "project_name must not be NULL"))?;
    let model_b = args
        .get("model_b")
        .and_then(Arg::as_f64)
        .filter(|v| v.fract() == 0.0)
        .ok_or_else(|| refuse("22023", "model_b must be a model id"))? as i64;
    let share = args
        .get("share")
        .and_then(Arg::as_f64)
        .filter(|s| (0.0..=1.0).contains(s))
        .ok_or_else(|| refuse("22023", "share must be a number between 0 and 1"))?;
    let mut conn = registry_conn(pool).await?;
    let q = quote_literal(&project);
    let row = conn
        .query_row(&format!(
            "SELECT p.id, (SELECT d.model_id FROM pgml.deployments d WHERE d.project_id = p.id ORDER BY d.created_at DESC, d.id DESC LIMIT 1), \
             (SELECT m.project_id = p.id FROM pgml.models m WHERE m.id = {model_b}) FROM pgml.projects p WHERE p.name = {q}"
        ))
        .await?
        .ok_or_else(|| refuse("22023", format!("project {project:?} does not exist")))?;
    let field = |i: usize| row.get(i).cloned().flatten();
    let project_id = field(0).unwrap_or_default();
    let model_a = field(1).ok_or_else(|| {
        refuse(
            "22023",
            format!(
                "No deployed model exists for the project named: `{project}`: deploy arm A first"
            ),
        )
    })?;
    match field(2).as_deref() {
        Some("t") => {}
        Some(_) => {
            return Err(refuse(
                "22023",
                format!("model {model_b} belongs to another project than {project:?}"),
            ))
        }
        None => {
            return Err(refuse(
                "22023",
                format!("pgml.models WHERE id = {model_b} could not be loaded. Does it exist?"),
            ))
        }
    }
    conn.run(&format!(
        "BEGIN; UPDATE pgml.ab_tests SET ended_at = clock_timestamp() WHERE project_id = {project_id} AND ended_at IS NULL; \
         INSERT INTO pgml.ab_tests (project_id, model_a, model_b, share) VALUES ({project_id}, {model_a}, {model_b}, {share}); COMMIT"
    ))
    .await?;
    crate::serving::cache::announce(pool, &mut *conn, &project).await?;
    encode::row_description_typed(
        out,
        &[
            ("project", TEXT, -1),
            ("model_a", INT8, 8),
            ("model_b", INT8, 8),
            ("share", FLOAT8, 8),
        ],
    );
    encode::data_row_text(
        out,
        &[&project, &model_a, &model_b.to_string(), &share.to_string()],
    );
    encode::command_complete(out, "SELECT 1");
    Ok(())
}

/// Ends `project`'s A/B test, if it has one; returns whether it had. For the admin console's `END AB`.
pub async fn end(pool: &Arc<dyn Backend>, project: &str) -> Result<bool, String> {
    end_ab(pool, project).await.map_err(|r| r.message)
}

async fn end_ab(pool: &Arc<dyn Backend>, project: &str) -> Result<bool, Refusal> {
    let mut conn = registry_conn(pool).await?;
    let ended = conn
        .query_value(&format!(
            "WITH e AS (UPDATE pgml.ab_tests t SET ended_at = clock_timestamp() FROM pgml.projects p \
             WHERE p.id = t.project_id AND p.name = {} AND t.ended_at IS NULL RETURNING t.id) SELECT count(*) FROM e",
            quote_literal(project)
        ))
        .await?;
    crate::serving::cache::announce(pool, &mut *conn, project).await?;
    Ok(ended.as_deref().is_some_and(|n| n != "0"))
}

/// `pgml.end_ab(project_name)`: answers whether a test was ended.
pub(crate) async fn serve_end_ab(
    pool: &Arc<dyn Backend>,
    call: &Call,
    out: &mut BytesMut,
) -> Result<(), Refusal> {
    let args = bind(call, &[("project_name", None)])?;
    let project = text_arg(&args, "project_name")
        .ok_or_else(|| refuse("22004", "project_name must not be NULL"))?;
    let ended = end_ab(pool, &project).await?;
    encode::row_description_typed(out, &[("end_ab", BOOL, 1)]);
    encode::data_row_text(out, &[if ended { "t" } else { "f" }]);
    encode::command_complete(out, "SELECT 1");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assignment_is_deterministic_and_its_share_holds() {
        for share in [0.0, 0.01, 0.1, 0.5, 0.9, 1.0] {
            let b = (0..100_000)
                .filter(|i| arm_of(format!("user-{i}").as_bytes(), share) == 1)
                .count();
            let got = b as f64 / 100_000.0;
            assert!((got - share).abs() < 0.01, "share {share}: {got}");
        }
        for i in 0..1000 {
            let k = number_key(i as f64);
            assert_eq!(arm_of(k.as_bytes(), 0.3), arm_of(k.as_bytes(), 0.3));
        }
        // A key in B at a share stays in B at any larger share: a canary grows without moving anyone back.
        for i in 0..10_000 {
            let k = format!("{i}");
            if arm_of(k.as_bytes(), 0.1) == 1 {
                assert_eq!(arm_of(k.as_bytes(), 0.2), 1);
            }
        }
        assert_eq!(number_key(12345.0), "12345");
        assert_eq!(number_key(-0.0), "0");
        assert_eq!(number_key(0.5), "0.5");
    }
}
