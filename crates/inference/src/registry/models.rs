//! The models Ocelot serves: how a trained model is stored (`Model`, JSON in `pgml.files`) and what it predicts,
//! finding the model a call names (through the pool's cache, `cache`), the registry connection (the registry
//! schema is ensured once per pool), and the errors the `pgml.*` handlers answer with.

use std::sync::Arc;

use crate::backend::Backend;
use crate::backend::BackendError;
use crate::backend::Conn;
use crate::estimators::boosting::Boosted;
use crate::estimators::forest::Forest;
use crate::estimators::kmeans::KMeans;
use crate::estimators::linear::Linear;
use crate::estimators::logistic::Logistic;
use crate::estimators::preprocess::{Missing, Preprocess};
use crate::registry;
use crate::sql::call::{Arg, CallError};
use ocelot_protocol::codes::sqlstate;

/// A model Ocelot trained, as stored in `pgml.files`: the estimator and the preprocessing fitted with it.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub(crate) struct Model {
    #[serde(default, skip_serializing_if = "Preprocess::is_identity")]
    pub(crate) pre: Preprocess,
    #[serde(flatten)]
    pub(crate) estimator: Estimator,
}

/// The fitted estimator.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind")]
pub(crate) enum Estimator {
    Linear(Linear),
    Logistic(Logistic),
    Boosted(Boosted),
    Forest(Forest),
    KMeans(KMeans),
    Pca(crate::estimators::pca::Pca),
    /// A joint regression (`pgml.train_joint`): one estimator per target, in the order of the labels.
    Joint {
        targets: Vec<Estimator>,
    },
}

impl Estimator {
    fn num_features(&self) -> usize {
        match self {
            Estimator::Linear(m) => m.coef.len(),
            Estimator::Logistic(m) => m.num_features(),
            Estimator::Boosted(m) => m.num_features(),
            Estimator::Forest(m) => m.num_features(),
            Estimator::KMeans(m) => m.num_features(),
            Estimator::Pca(m) => m.num_features(),
            Estimator::Joint { targets } => targets.first().map_or(0, Estimator::num_features),
        }
    }

    fn predict(&self, x: &[f64]) -> f64 {
        match self {
            Estimator::Linear(m) => m.predict(x),
            Estimator::Logistic(m) => m.predict(x),
            Estimator::Boosted(m) => m.predict(x),
            Estimator::Forest(m) => m.predict(x),
            Estimator::KMeans(m) => m.predict(x),
            // The first component, as a one-valued answer of a decomposition.
            Estimator::Pca(m) => m.transform(x).first().copied().unwrap_or(f64::NAN),
            // The first target, as a one-valued prediction of a joint model.
            Estimator::Joint { targets } => targets.first().map_or(f64::NAN, |t| t.predict(x)),
        }
    }
}

impl Model {
    pub(crate) fn num_features(&self) -> usize {
        self.estimator.num_features()
    }

    /// The prediction for raw features (the array overloads, which skip preprocessing as PostgresML's do).
    pub(crate) fn predict(&self, x: &[f64]) -> f64 {
        self.estimator.predict(x)
    }

    /// Readies features for the model: a `ROW(...)` of the training relation's columns is preprocessed (NULL,
    /// read as NaN, is imputed or refused as PostgresML refuses it); an array is used as it is, without NULLs.
    pub(crate) fn prepare(&self, x: &mut [f64], row: bool) -> Result<(), Refusal> {
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
    pub(crate) fn predict_proba(&self, x: &[f64]) -> Option<Vec<f64>> {
        match &self.estimator {
            Estimator::Logistic(m) => Some(m.predict_proba(x)),
            Estimator::Boosted(m) => m.predict_proba(x),
            Estimator::Forest(m) => m.predict_proba(x),
            Estimator::Linear(_)
            | Estimator::KMeans(_)
            | Estimator::Pca(_)
            | Estimator::Joint { .. } => None,
        }
    }

    /// The values of every target of a regression (one for a model trained with `pgml.train`); `None` for a
    /// classifier or a clustering.
    pub(crate) fn predict_joint(&self, x: &[f64]) -> Option<Vec<f64>> {
        match &self.estimator {
            Estimator::Joint { targets } => Some(targets.iter().map(|t| t.predict(x)).collect()),
            _ => self.is_regression().then(|| vec![self.predict(x)]),
        }
    }

    /// The vector in a decomposition's component space (`pgml.decompose`); `None` for other models.
    pub(crate) fn decompose(&self, x: &[f64]) -> Option<Vec<f64>> {
        match &self.estimator {
            Estimator::Pca(m) => Some(m.transform(x)),
            _ => None,
        }
    }

    /// Whether the model predicts a continuous value (and so has a joint prediction).
    pub(crate) fn is_regression(&self) -> bool {
        match &self.estimator {
            Estimator::Linear(_) | Estimator::Joint { .. } => true,
            Estimator::Boosted(m) => !m.is_classifier(),
            Estimator::Forest(m) => !m.is_classifier(),
            Estimator::Logistic(_) | Estimator::KMeans(_) | Estimator::Pca(_) => false,
        }
    }
}

/// A failure answered to the client as an ErrorResponse.
#[derive(Debug)]
pub(crate) struct Refusal {
    pub(crate) code: &'static str,
    pub(crate) message: String,
}

pub(crate) fn refuse(code: &'static str, message: impl Into<String>) -> Refusal {
    Refusal {
        code,
        message: message.into(),
    }
}

impl From<BackendError> for Refusal {
    fn from(e: BackendError) -> Self {
        Refusal {
            code: sqlstate_of(e.code()),
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
pub(crate) fn sqlstate_of(code: &str) -> &'static str {
    const KNOWN: &[&str] = &[
        "42P01", "42703", "22023", "42883", "42501", "22P02", "23505", "53300", "58000", "08006",
        "0A000", "57P03", "57P01", "3D000", "28P01",
    ];
    KNOWN
        .iter()
        .find(|k| **k == code)
        .copied()
        .unwrap_or(sqlstate::INTERNAL_ERROR)
}

/// The model a predict call names: a project's deployed model, or a model by id.
/// The model serving `target` (a project name or a model id) for the A/B key `key` gives (see `ab`; asked only
/// when the project has an A/B test).
pub(crate) async fn resolve_for(
    pool: &Arc<dyn Backend>,
    target: &Arg,
    key: impl FnOnce() -> Option<String>,
) -> Result<crate::serving::cache::Chosen, Refusal> {
    match target {
        Arg::Text(project) => pool.models().deployed_for(pool, project, key).await,
        Arg::Number(n) => {
            let id: i64 = n
                .parse()
                .map_err(|_| refuse("22023", "model_id must be an integer"))?;
            Ok(crate::serving::cache::Chosen {
                model: pool.models().model(pool, id).await?,
                ab: None,
                log: None,
            })
        }
        _ => Err(refuse(
            "22004",
            "pgml.predict needs a project name or a model id",
        )),
    }
}

/// The pool whose database holds `pool`'s registry: itself, or `[inference] registry_pool`.
pub(crate) fn registry_pool(pool: &Arc<dyn Backend>) -> Arc<dyn Backend> {
    pool.registry().unwrap_or_else(|| pool.clone())
}

/// A connection to the registry's database (shard 0's primary), with the schema ensured once per registry pool.
pub(crate) async fn registry_conn(
    pool: &Arc<dyn Backend>,
) -> Result<Box<dyn crate::backend::Conn>, Refusal> {
    let registry = registry_pool(pool);
    let mut conn = registry.conn(0, crate::backend::Which::Primary).await?;
    registry
        .models()
        .registry_ready()
        .get_or_try_init(|| async { registry::ensure(&mut *conn).await.map(|_| ()) })
        .await?;
    Ok(conn)
}

/// One value of a single-row, single-column query.
pub(crate) async fn value(conn: &mut dyn Conn, sql: &str) -> Result<Option<String>, Refusal> {
    Ok(conn.query_value(sql).await?)
}
