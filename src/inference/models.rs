//! The models Ocelot serves: how a trained model is stored (`Model`, JSON in `pgml.files`), the per-pool cache of
//! models by id and of each project's deployed model, the registry connection (the registry schema is ensured once
//! per pool), and the errors the `pgml.*` handlers answer with.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::boosting::Boosted;
use super::call::{Arg, CallError};
use super::forest::Forest;
use super::kmeans::KMeans;
use super::linear::Linear;
use super::logistic::Logistic;
use super::preprocess::{Missing, Preprocess};
use super::registry;
use crate::pool::balance::Want;
use crate::pool::server::ServerConn;
use crate::pool::{PoolError, UserPool};
use crate::protocol::codes::sqlstate;
use crate::router::session_sql::quote_literal;

/// How long a cached project → deployed model mapping is trusted before the registry is asked again.
const RECHECK: Duration = Duration::from_secs(1);

/// A model Ocelot trained, as stored in `pgml.files`: the estimator and the preprocessing fitted with it.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Model {
    #[serde(default, skip_serializing_if = "Preprocess::is_identity")]
    pub pre: Preprocess,
    #[serde(flatten)]
    pub estimator: Estimator,
}

/// The fitted estimator.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind")]
pub enum Estimator {
    Linear(Linear),
    Logistic(Logistic),
    Boosted(Boosted),
    Forest(Forest),
    KMeans(KMeans),
}

impl Model {
    pub(super) fn num_features(&self) -> usize {
        match &self.estimator {
            Estimator::Linear(m) => m.coef.len(),
            Estimator::Logistic(m) => m.num_features(),
            Estimator::Boosted(m) => m.num_features(),
            Estimator::Forest(m) => m.num_features(),
            Estimator::KMeans(m) => m.num_features(),
        }
    }

    /// The prediction for raw features (the array overloads, which skip preprocessing as PostgresML's do).
    pub(super) fn predict(&self, x: &[f64]) -> f64 {
        match &self.estimator {
            Estimator::Linear(m) => m.predict(x),
            Estimator::Logistic(m) => m.predict(x),
            Estimator::Boosted(m) => m.predict(x),
            Estimator::Forest(m) => m.predict(x),
            Estimator::KMeans(m) => m.predict(x),
        }
    }

    /// Readies features for the model: a `ROW(...)` of the training relation's columns is preprocessed (NULL,
    /// read as NaN, is imputed or refused as PostgresML refuses it); an array is used as it is, without NULLs.
    pub(super) fn prepare(&self, x: &mut [f64], row: bool) -> Result<(), Refusal> {
        if row {
            self.pre
                .apply(x)
                .map_err(|e| refuse("22023", e.to_string()))?;
        }
        match x.iter().position(|v| v.is_nan()) {
            Some(j) if row => Err(refuse(
                "22023",
                Missing {
                    count: x.iter().filter(|v| v.is_nan()).count(),
                    column: format!("feature {}", j + 1),
                }
                .to_string(),
            )),
            Some(j) => Err(refuse("22004", format!("feature {} is NULL", j + 1))),
            None => Ok(()),
        }
    }

    /// Class probabilities in sorted label order; None for a model that is not a classifier.
    pub(super) fn predict_proba(&self, x: &[f64]) -> Option<Vec<f64>> {
        match &self.estimator {
            Estimator::Logistic(m) => Some(m.predict_proba(x)),
            Estimator::Boosted(m) => m.predict_proba(x),
            Estimator::Forest(m) => m.predict_proba(x),
            Estimator::Linear(_) | Estimator::KMeans(_) => None,
        }
    }

    /// Whether the model predicts a continuous value (and so has a joint prediction).
    pub(super) fn is_regression(&self) -> bool {
        match &self.estimator {
            Estimator::Linear(_) => true,
            Estimator::Boosted(m) => !m.is_classifier(),
            Estimator::Forest(m) => !m.is_classifier(),
            Estimator::Logistic(_) | Estimator::KMeans(_) => false,
        }
    }
}

/// Deployed models of one pool, shared by its clients.
#[derive(Debug, Default)]
pub struct Models {
    by_project: Mutex<HashMap<String, (i64, Instant)>>,
    by_id: Mutex<HashMap<i64, Arc<Model>>>,
    /// The registry schema was brought to this Ocelot's version (once per pool, not per connection).
    registry_ready: tokio::sync::OnceCell<()>,
}

/// A failure answered to the client as an ErrorResponse.
#[derive(Debug)]
pub(super) struct Refusal {
    pub(super) code: &'static str,
    pub(super) message: String,
}

pub(super) fn refuse(code: &'static str, message: impl Into<String>) -> Refusal {
    Refusal {
        code,
        message: message.into(),
    }
}

impl From<PoolError> for Refusal {
    fn from(e: PoolError) -> Self {
        let code = match &e {
            PoolError::Query { fields, .. } => {
                return Refusal {
                    code: sqlstate_of(&fields.code),
                    message: fields.message.clone(),
                }
            }
            other => sqlstate_of(other.sqlstate()),
        };
        Refusal {
            code,
            message: e.to_string(),
        }
    }
}

impl From<CallError> for Refusal {
    fn from(e: CallError) -> Self {
        let code = match e {
            CallError::Parse(_) => "42601",
            _ => "42883",
        };
        refuse(code, e.to_string())
    }
}

/// A server's SQLSTATE as one of the static codes Ocelot reports (or the generic one).
pub(super) fn sqlstate_of(code: &str) -> &'static str {
    const KNOWN: &[&str] = &[
        "42P01", "42703", "22023", "42883", "42501", "22P02", "23505", "53300", "08006", "0A000",
        "57P03", "57P01", "3D000", "28P01",
    ];
    KNOWN
        .iter()
        .find(|k| **k == code)
        .copied()
        .unwrap_or(sqlstate::INTERNAL_ERROR)
}

/// The model a predict call names: a project's deployed model, or a model by id.
pub(super) async fn resolve_model(
    pool: &Arc<UserPool>,
    target: &Arg,
) -> Result<Arc<Model>, Refusal> {
    match target {
        Arg::Text(project) => Ok(pool.models.deployed(pool, project).await?.1),
        Arg::Number(n) => {
            let id: i64 = n
                .parse()
                .map_err(|_| refuse("22023", "model_id must be an integer"))?;
            pool.models.model(pool, id).await
        }
        _ => Err(refuse(
            "22004",
            "pgml.predict needs a project name or a model id",
        )),
    }
}

pub(super) async fn registry_conn(pool: &Arc<UserPool>) -> Result<crate::pool::Pooled, Refusal> {
    let mut conn = pool.checkout(0, Want::Primary, true).await?;
    pool.models
        .registry_ready
        .get_or_try_init(|| async { registry::ensure(&mut conn).await.map(|_| ()) })
        .await?;
    Ok(conn)
}

/// One value of a single-row, single-column query.
pub(super) async fn value(conn: &mut ServerConn, sql: &str) -> Result<Option<String>, Refusal> {
    Ok(conn.query_value(sql).await?)
}

impl Models {
    pub(super) fn forget(&self, project: &str) {
        self.by_project
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(project);
    }

    /// The deployed model of `project`, from the cache when it was checked within [`RECHECK`].
    pub(super) async fn deployed(
        &self,
        pool: &Arc<UserPool>,
        project: &str,
    ) -> Result<(i64, Arc<Model>), Refusal> {
        let cached = self
            .by_project
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(project)
            .copied();
        let id = match cached {
            Some((id, at)) if at.elapsed() < RECHECK => id,
            _ => {
                let mut conn = registry_conn(pool).await?;
                let id = value(
                    &mut conn,
                    &format!(
                        "SELECT d.model_id FROM pgml.deployments d JOIN pgml.projects p ON p.id = d.project_id WHERE p.name = {} ORDER BY d.created_at DESC, d.id DESC LIMIT 1",
                        quote_literal(project)
                    ),
                )
                .await?
                .and_then(|v| v.parse::<i64>().ok())
                .ok_or_else(|| refuse("22023", format!("No deployed model exists for the project named: `{project}`")))?;
                self.by_project
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(project.to_owned(), (id, Instant::now()));
                id
            }
        };
        Ok((id, self.model(pool, id).await?))
    }

    pub(super) async fn model(&self, pool: &Arc<UserPool>, id: i64) -> Result<Arc<Model>, Refusal> {
        if let Some(m) = self
            .by_id
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&id)
        {
            return Ok(m.clone());
        }
        let mut conn = registry_conn(pool).await?;
        let data = value(
            &mut conn,
            &format!("SELECT convert_from(data, 'UTF8') FROM pgml.files WHERE model_id = {id} AND path = 'estimator.ocelot.json' ORDER BY part LIMIT 1"),
        )
        .await?
        .ok_or_else(|| refuse("22023", format!("pgml.models WHERE id = {id} could not be loaded. Does it exist?")))?;
        let model: Model = serde_json::from_str(&data).map_err(|e| {
            refuse(
                sqlstate::INTERNAL_ERROR,
                format!("model {id} cannot be read: {e}"),
            )
        })?;
        let model = Arc::new(model);
        self.by_id
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, model.clone());
        Ok(model)
    }
}
