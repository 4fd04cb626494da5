//! Which estimator `pgml.train` fits: the `(task, algorithm)` pairs Ocelot trains, their hyperparameters read from
//! the `hyperparams` JSON (with PostgresML's defaults and XGBoost's aliases), and the fit itself. An algorithm
//! Ocelot does not train, or a hyperparameter it does not know, is refused before any data is read.

use serde_json::{Map, Value};

use super::boosting::{BoostParams, Boosted};
use super::forest::{Forest, ForestParams, MaxFeatures};
use super::kmeans::{KMeans, KMeansParams};
use super::linear::Linear;
use super::logistic::Logistic;
use crate::registry::models::Estimator;

/// What the algorithm list in refusals says.
pub(crate) const SUPPORTED: &str = "regression: linear, ridge, lasso, elastic_net, xgboost, random_forest, bagging, gradient_boosting_trees; classification: linear, logistic_regression, xgboost, random_forest, bagging, gradient_boosting_trees; clustering: kmeans; decomposition: pca";

/// An estimator to fit, with its settings.
#[derive(Debug, Clone)]
pub(crate) enum Algo {
    Linear(f64),
    ElasticNet {
        alpha: f64,
        l1_ratio: f64,
        max_iter: usize,
        tol: f64,
    },
    Logistic {
        c: f64,
        max_iter: usize,
    },
    Boosted(BoostParams, bool),
    Forest(ForestParams, bool),
    KMeans(KMeansParams),
    /// Principal component analysis keeping this many components (all when `None`).
    Pca(Option<usize>),
}

/// The hyperparameters, with each key read at most once so that unknown ones can be named.
struct Hyper<'a> {
    map: &'a Map<String, Value>,
    used: Vec<&'static str>,
}

impl<'a> Hyper<'a> {
    /// The value of the first of `keys` present.
    fn get(&mut self, keys: &[&'static str]) -> Option<&'a Value> {
        self.used.extend_from_slice(keys);
        keys.iter().find_map(|k| self.map.get(*k))
    }

    fn number(&mut self, keys: &[&'static str], default: f64) -> Result<f64, String> {
        match self.get(keys) {
            None | Some(Value::Null) => Ok(default),
            Some(v) => v
                .as_f64()
                .ok_or_else(|| format!("hyperparameter {} must be a number, not {v}", keys[0])),
        }
    }

    fn count(&mut self, keys: &[&'static str], default: usize) -> Result<usize, String> {
        let v = self.number(keys, default as f64)?;
        if v < 0.0 || v.fract() != 0.0 || v > u32::MAX as f64 {
            return Err(format!(
                "hyperparameter {} must be a non-negative integer, not {v}",
                keys[0]
            ));
        }
        Ok(v as usize)
    }

    fn seed(&mut self) -> Result<u64, String> {
        Ok(self.count(&["random_state", "seed"], 0)? as u64)
    }

    /// Keys that change nothing in Ocelot (thread counts, verbosity, exact-vs-histogram split search).
    fn tolerate(&mut self, keys: &[&'static str]) {
        self.used.extend_from_slice(keys);
    }

    fn finish(self, algorithm: &str) -> Result<(), String> {
        let mut unknown: Vec<&str> = self
            .map
            .keys()
            .map(String::as_str)
            .filter(|k| !self.used.contains(k))
            .collect();
        if unknown.is_empty() {
            return Ok(());
        }
        unknown.sort_unstable();
        let mut known = self.used.clone();
        known.sort_unstable();
        known.dedup();
        Err(format!(
            "unknown hyperparameter {} for {algorithm}; Ocelot's {algorithm} takes {}",
            unknown.join(", "),
            known.join(", ")
        ))
    }
}

impl Hyper<'_> {
    /// XGBoost's hyperparameters, with its aliases.
    fn boosting(&mut self) -> Result<BoostParams, String> {
        let p = BoostParams {
            n_estimators: self.count(&["n_estimators", "boost_rounds"], 100)?,
            max_depth: self.count(&["max_depth"], 6)?,
            learning_rate: self.number(&["learning_rate", "eta"], 0.3)?,
            subsample: self.number(&["subsample"], 1.0)?,
            min_child_weight: self.number(&["min_child_weight"], 1.0)?,
            reg_lambda: self.number(&["reg_lambda", "lambda"], 1.0)?,
            gamma: self.number(&["gamma", "min_split_loss"], 0.0)?,
            seed: self.seed()?,
        };
        if !(p.subsample > 0.0 && p.subsample <= 1.0) {
            return Err("subsample must be in (0, 1]".into());
        }
        self.tolerate(&[
            "tree_method",
            "nthread",
            "n_jobs",
            "verbosity",
            "eval_metric",
        ]);
        Ok(p)
    }

    /// scikit-learn's random forest hyperparameters.
    fn forest(&mut self) -> Result<ForestParams, String> {
        let max_features = match self.get(&["max_features"]) {
            None | Some(Value::Null) => None,
            Some(v) => Some(MaxFeatures::parse(v)?),
        };
        let max_depth = match self.get(&["max_depth"]) {
            None | Some(Value::Null) => None,
            Some(_) => Some(self.count(&["max_depth"], 0)?),
        };
        let bootstrap = match self.get(&["bootstrap"]) {
            None => true,
            Some(v) => v.as_bool().ok_or("bootstrap must be true or false")?,
        };
        let p = ForestParams {
            n_estimators: self.count(&["n_estimators"], 100)?.max(1),
            max_depth,
            min_samples_split: self.number(&["min_samples_split"], 2.0)?,
            min_samples_leaf: self.number(&["min_samples_leaf"], 1.0)?,
            max_features,
            bootstrap,
            seed: self.seed()?,
        };
        self.tolerate(&["n_jobs", "verbose", "criterion"]);
        Ok(p)
    }

    /// scikit-learn's `BaggingRegressor`/`BaggingClassifier` over decision trees: a forest whose every split
    /// considers every feature.
    fn bagging(&mut self) -> Result<ForestParams, String> {
        let bootstrap = match self.get(&["bootstrap"]) {
            None => true,
            Some(v) => v.as_bool().ok_or("bootstrap must be true or false")?,
        };
        let p = ForestParams {
            n_estimators: self.count(&["n_estimators"], 10)?.max(1),
            max_features: Some(MaxFeatures::Fraction(1.0)),
            bootstrap,
            seed: self.seed()?,
            ..ForestParams::default()
        };
        self.tolerate(&["n_jobs", "verbose"]);
        Ok(p)
    }

    /// scikit-learn's `GradientBoostingRegressor`/`GradientBoostingClassifier`: Newton-step leaves without L2,
    /// shallow trees, a smaller learning rate than XGBoost's.
    fn gradient_boosting(&mut self) -> Result<BoostParams, String> {
        let p = BoostParams {
            n_estimators: self.count(&["n_estimators"], 100)?,
            max_depth: self.count(&["max_depth"], 3)?,
            learning_rate: self.number(&["learning_rate"], 0.1)?,
            subsample: self.number(&["subsample"], 1.0)?,
            min_child_weight: 0.0,
            reg_lambda: 0.0,
            gamma: 0.0,
            seed: self.seed()?,
        };
        if !(p.subsample > 0.0 && p.subsample <= 1.0) {
            return Err("subsample must be in (0, 1]".into());
        }
        self.tolerate(&["loss", "criterion", "verbose"]);
        Ok(p)
    }

    /// scikit-learn's k-means hyperparameters (`n_init = "auto"` is one run, as with k-means++).
    fn kmeans(&mut self) -> Result<KMeansParams, String> {
        let n_init = match self.get(&["n_init"]) {
            None | Some(Value::String(_)) => 1,
            Some(_) => self.count(&["n_init"], 1)?.max(1),
        };
        let p = KMeansParams {
            n_clusters: self.count(&["n_clusters"], 8)?,
            max_iter: self.count(&["max_iter"], 300)?.max(1),
            tol: self.number(&["tol"], 1e-4)?,
            n_init,
            seed: self.seed()?,
        };
        if p.n_clusters == 0 {
            return Err("n_clusters must be at least 1".into());
        }
        self.tolerate(&["init", "algorithm", "verbose"]);
        Ok(p)
    }
}

/// Parses the `hyperparams` JSON (NULL or `{}` when none).
pub(crate) fn hyperparams(text: Option<&str>) -> Result<Map<String, Value>, String> {
    match text {
        None => Ok(Map::new()),
        Some(t) => match serde_json::from_str::<Value>(t) {
            Ok(Value::Object(m)) => Ok(m),
            Ok(Value::Null) => Ok(Map::new()),
            Ok(other) => Err(format!("hyperparams must be a JSON object, not {other}")),
            Err(e) => Err(format!("invalid hyperparams JSON: {e}")),
        },
    }
}

/// Why an algorithm cannot be chosen.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Choice {
    /// Ocelot does not train it (0A000).
    Unsupported(String),
    /// A bad hyperparameter (22023).
    Invalid(String),
}

impl Algo {
    /// The algorithm PostgresML would train for `algorithm` on `task`, with `hyperparams`.
    pub(crate) fn choose(
        task: &str,
        algorithm: &str,
        h: &Map<String, Value>,
    ) -> Result<Algo, Choice> {
        let mut hp = Hyper {
            map: h,
            used: Vec::new(),
        };
        let classify = task == "classification";
        let invalid = Choice::Invalid;
        let algo = match (task, algorithm) {
            ("regression", "linear") => {
                hp.tolerate(&["fit_intercept", "n_jobs", "copy_X"]);
                Algo::Linear(0.0)
            }
            ("regression", "ridge") => {
                let alpha = hp.number(&["alpha"], 1.0).map_err(invalid)?;
                hp.tolerate(&["fit_intercept", "solver", "copy_X"]);
                Algo::Linear(alpha)
            }
            ("regression", "lasso" | "elastic_net") => {
                let l1 = if algorithm == "lasso" { 1.0 } else { 0.5 };
                let algo = Algo::ElasticNet {
                    alpha: hp.number(&["alpha"], 1.0).map_err(invalid)?,
                    l1_ratio: hp.number(&["l1_ratio"], l1).map_err(invalid)?,
                    max_iter: hp.count(&["max_iter"], 1000).map_err(invalid)?.max(1),
                    tol: hp.number(&["tol"], 1e-4).map_err(invalid)?,
                };
                hp.tolerate(&["fit_intercept", "copy_X"]);
                algo
            }
            ("classification", "linear" | "logistic_regression") => {
                let algo = Algo::Logistic {
                    c: hp.number(&["C"], 1.0).map_err(invalid)?,
                    max_iter: hp.count(&["max_iter"], 3000).map_err(invalid)?.max(1),
                };
                hp.tolerate(&["fit_intercept", "solver", "penalty", "n_jobs", "tol"]);
                algo
            }
            ("regression" | "classification", "xgboost") => {
                Algo::Boosted(hp.boosting().map_err(invalid)?, classify)
            }
            ("regression" | "classification", "random_forest") => {
                Algo::Forest(hp.forest().map_err(invalid)?, classify)
            }
            ("regression" | "classification", "bagging") => {
                Algo::Forest(hp.bagging().map_err(invalid)?, classify)
            }
            ("regression" | "classification", "gradient_boosting_trees") => {
                Algo::Boosted(hp.gradient_boosting().map_err(invalid)?, classify)
            }
            ("clustering", "kmeans" | "linear") => Algo::KMeans(hp.kmeans().map_err(invalid)?),
            ("decomposition", "pca" | "linear") => {
                let k = match hp.get(&["n_components"]) {
                    None | Some(Value::Null) => None,
                    Some(_) => Some(hp.count(&["n_components"], 0).map_err(invalid)?),
                };
                hp.tolerate(&["whiten", "svd_solver", "copy", "random_state"]);
                Algo::Pca(k)
            }
            _ => {
                return Err(Choice::Unsupported(format!(
                    "Ocelot does not train {algorithm} for {task}; it trains {SUPPORTED}"
                )))
            }
        };
        hp.finish(algorithm).map_err(invalid)?;
        Ok(algo)
    }

    /// The algorithm's name as PostgresML records it (`linear` is `kmeans` for clustering).
    pub(crate) fn recorded_name<'a>(&self, algorithm: &'a str) -> &'a str {
        match self {
            Algo::KMeans(_) => "kmeans",
            Algo::Pca(_) => "pca",
            _ => algorithm,
        }
    }

    /// Fits on the training rows; ensembles call `step(done, total)` as they go.
    pub(crate) fn fit(
        &self,
        x: &[Vec<f64>],
        y: &[f64],
        step: &mut dyn FnMut(usize, usize),
    ) -> Result<Estimator, String> {
        let few_classes =
            || "classification needs at least two classes in the training split".to_owned();
        Ok(match self {
            Algo::Linear(alpha) => {
                Estimator::Linear(Linear::fit(x, y, *alpha).map_err(|e| e.to_string())?)
            }
            Algo::ElasticNet {
                alpha,
                l1_ratio,
                max_iter,
                tol,
            } => Estimator::Linear(
                Linear::fit_elastic_net(x, y, *alpha, *l1_ratio, *max_iter, *tol)
                    .map_err(|e| e.to_string())?,
            ),
            Algo::Logistic { c, max_iter } => {
                Estimator::Logistic(Logistic::fit(x, y, *c, *max_iter).ok_or_else(few_classes)?)
            }
            Algo::Boosted(p, classify) => Estimator::Boosted(
                Boosted::fit_reporting(x, y, *classify, p, step).ok_or_else(few_classes)?,
            ),
            Algo::Forest(p, classify) => Estimator::Forest(
                Forest::fit_reporting(x, y, *classify, p, step).ok_or_else(few_classes)?,
            ),
            Algo::KMeans(p) => Estimator::KMeans(KMeans::fit(x, p).ok_or_else(|| {
                format!(
                    "n_clusters = {} is more than the {} training rows",
                    p.n_clusters,
                    x.len()
                )
            })?),
            Algo::Pca(k) => Estimator::Pca(super::pca::Pca::fit(x, *k)?),
        })
    }
}

/// The metric `best_score` deploys by, as PostgresML's task defines it.
pub(crate) fn deploy_metric(task: &str) -> &'static str {
    match task {
        "classification" => "f1",
        "clustering" => "silhouette",
        "decomposition" => "cumulative_explained_variance",
        _ => "r2",
    }
}

/// Metrics PostgresML computes for the task, and the one auto-deploy compares.
pub(crate) fn metrics(
    task: &str,
    x: &[Vec<f64>],
    truth: &[f64],
    predicted: &[f64],
) -> (Map<String, Value>, &'static str) {
    match task {
        "classification" => (
            super::logistic::classification_metrics(truth, predicted),
            "f1",
        ),
        "clustering" => {
            let mut m = Map::new();
            let s = super::kmeans::silhouette(x, predicted);
            m.insert(
                "silhouette".into(),
                if s.is_finite() { s.into() } else { Value::Null },
            );
            (m, "silhouette")
        }
        _ => (super::linear::regression_metrics(truth, predicted), "r2"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn choose(task: &str, algorithm: &str, h: &str) -> Result<Algo, Choice> {
        Algo::choose(task, algorithm, &hyperparams(Some(h)).unwrap())
    }

    #[test]
    fn hyperparameters_with_defaults_and_aliases() {
        let Ok(Algo::Boosted(p, true)) = choose(
            "classification",
            "xgboost",
            r#"{"eta": 0.1, "boost_rounds": 7}"#,
        ) else {
            panic!()
        };
        assert_eq!((p.learning_rate, p.n_estimators, p.max_depth), (0.1, 7, 6));
        let Ok(Algo::Forest(p, false)) = choose(
            "regression",
            "random_forest",
            r#"{"max_depth": 4, "max_features": "sqrt"}"#,
        ) else {
            panic!()
        };
        assert_eq!(
            (p.max_depth, p.max_features, p.n_estimators),
            (Some(4), Some(MaxFeatures::Sqrt), 100)
        );
        let Ok(Algo::KMeans(p)) = choose("clustering", "linear", r#"{"n_clusters": 3}"#) else {
            panic!()
        };
        assert_eq!(p.n_clusters, 3);
        assert!(matches!(choose("regression", "ridge", "{}"), Ok(Algo::Linear(a)) if a == 1.0));
    }

    #[test]
    fn unknown_algorithms_and_hyperparameters_are_refused() {
        let Err(Choice::Unsupported(m)) = choose("regression", "svm", "{}") else {
            panic!()
        };
        assert!(m.contains("xgboost") && m.contains("kmeans"), "{m}");
        assert!(matches!(
            choose("clustering", "xgboost", "{}"),
            Err(Choice::Unsupported(_))
        ));
        let Err(Choice::Invalid(m)) = choose("regression", "xgboost", r#"{"max_dpeth": 3}"#) else {
            panic!()
        };
        assert!(m.contains("max_dpeth") && m.contains("max_depth"), "{m}");
        for bad in [
            r#"{"n_estimators": -1}"#,
            r#"{"n_estimators": 2.5}"#,
            r#"{"learning_rate": "fast"}"#,
            r#"{"subsample": 0}"#,
        ] {
            assert!(
                matches!(
                    choose("regression", "xgboost", bad),
                    Err(Choice::Invalid(_))
                ),
                "{bad}"
            );
        }
        assert!(matches!(
            choose("regression", "random_forest", r#"{"max_features": 2.5}"#),
            Err(Choice::Invalid(_))
        ));
        assert!(hyperparams(Some("[1]")).is_err());
        assert!(hyperparams(Some("{")).is_err());
    }
}
