//! Random forests as scikit-learn fits them (`algorithm => 'random_forest'`): bootstrap samples, fully grown trees
//! (squared-error splits for regression, Gini for classification) that draw `max_features` candidate features at
//! each node, predictions averaged over the trees (class probabilities for classification). Hyperparameters:
//! `n_estimators`, `max_depth`, `min_samples_split`, `min_samples_leaf`, `max_features`, `bootstrap`,
//! `random_state`.

use rand::{Rng, SeedableRng};

use super::trees::{grow, Columns, Growth, Tree};

/// scikit-learn's defaults, except `max_features`, whose default depends on the task.
#[derive(Debug, Clone)]
pub(crate) struct ForestParams {
    pub(crate) n_estimators: usize,
    pub(crate) max_depth: Option<usize>,
    pub(crate) min_samples_split: f64,
    pub(crate) min_samples_leaf: f64,
    /// Features tried per node; `None` for the task's default (√features for classification, all for regression).
    pub(crate) max_features: Option<MaxFeatures>,
    pub(crate) bootstrap: bool,
    pub(crate) seed: u64,
}

impl Default for ForestParams {
    fn default() -> Self {
        ForestParams {
            n_estimators: 100,
            max_depth: None,
            min_samples_split: 2.0,
            min_samples_leaf: 1.0,
            max_features: None,
            bootstrap: true,
            seed: 0,
        }
    }
}

/// scikit-learn's `max_features`: "sqrt", "log2", a count, or a fraction of the features.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum MaxFeatures {
    Sqrt,
    Log2,
    Count(usize),
    Fraction(f64),
}

impl MaxFeatures {
    pub(crate) fn parse(v: &serde_json::Value) -> Result<MaxFeatures, String> {
        use serde_json::Value;
        match v {
            Value::String(s) if s == "sqrt" || s == "auto" => Ok(MaxFeatures::Sqrt),
            Value::String(s) if s == "log2" => Ok(MaxFeatures::Log2),
            Value::Number(n) => match (n.as_u64(), n.as_f64()) {
                (Some(c), _) if c > 0 => Ok(MaxFeatures::Count(c as usize)),
                (None, Some(f)) if f > 0.0 && f <= 1.0 => Ok(MaxFeatures::Fraction(f)),
                _ => Err(format!(
                    "max_features {n} must be a count or a fraction in (0, 1]"
                )),
            },
            other => Err(format!(
                "max_features must be \"sqrt\", \"log2\", a count or a fraction, not {other}"
            )),
        }
    }

    /// Features per node out of `features` (at least one).
    fn of(self, features: usize) -> usize {
        let f = features as f64;
        let n = match self {
            MaxFeatures::Sqrt => f.sqrt() as usize,
            MaxFeatures::Log2 => f.log2() as usize,
            MaxFeatures::Count(c) => c,
            MaxFeatures::Fraction(x) => (x * f) as usize,
        };
        n.clamp(1, features.max(1))
    }
}

/// A fitted forest.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub(crate) struct Forest {
    trees: Vec<Tree>,
    /// Class labels, sorted, for classification; each tree's leaves hold one proportion per class.
    classes: Option<Vec<f64>>,
    features: usize,
}

impl Forest {
    /// [`Forest::fit_reporting`] without progress (for tests).
    #[cfg(test)]
    pub(crate) fn fit(
        x: &[Vec<f64>],
        y: &[f64],
        classify: bool,
        p: &ForestParams,
    ) -> Option<Forest> {
        Forest::fit_reporting(x, y, classify, p, &mut |_, _| {})
    }

    /// Fits a forest of regression or classification trees, calling `tree(done, total)` before each tree.
    pub(crate) fn fit_reporting(
        x: &[Vec<f64>],
        y: &[f64],
        classify: bool,
        p: &ForestParams,
        tree: &mut dyn FnMut(usize, usize),
    ) -> Option<Forest> {
        let n = x.len();
        let features = x.first()?.len();
        let classes = classify.then(|| super::logistic::classes_of(y));
        if classes.as_ref().is_some_and(|c| c.len() < 2) {
            return None;
        }
        let outputs = classes.as_ref().map_or(1, Vec::len);
        let target: Vec<f64> = match &classes {
            None => y.to_vec(),
            Some(c) => y
                .iter()
                .flat_map(|v| c.iter().map(move |l| f64::from(l == v)))
                .collect(),
        };
        let per_node = p
            .max_features
            .unwrap_or(if classify {
                MaxFeatures::Sqrt
            } else {
                MaxFeatures::Fraction(1.0)
            })
            .of(features);
        let growth = Growth {
            max_depth: p.max_depth.unwrap_or(usize::MAX),
            lambda: 0.0,
            gamma: 0.0,
            min_child_weight: p.min_samples_leaf,
            min_split_weight: p.min_samples_split,
            features_per_node: per_node,
            scale: 1.0,
        };
        let cols = Columns::new(x);
        let mut rng = rand::rngs::StdRng::seed_from_u64(p.seed);
        let mut trees = Vec::with_capacity(p.n_estimators);
        let mut s = vec![0.0; n * outputs];
        for done in 0..p.n_estimators {
            tree(done, p.n_estimators);
            let mut h = vec![if p.bootstrap { 0.0 } else { 1.0 }; n];
            if p.bootstrap {
                for _ in 0..n {
                    h[rng.random_range(0..n)] += 1.0;
                }
            }
            for r in 0..n {
                for k in 0..outputs {
                    s[r * outputs + k] = h[r] * target[r * outputs + k];
                }
            }
            trees.push(grow(&cols, &s, &h, outputs, &growth, &mut rng));
        }
        Some(Forest {
            trees,
            classes,
            features,
        })
    }

    pub(crate) fn num_features(&self) -> usize {
        self.features
    }

    pub(crate) fn is_classifier(&self) -> bool {
        self.classes.is_some()
    }

    /// The mean over the trees of their leaf values.
    fn mean(&self, x: &[f64]) -> Vec<f64> {
        let outputs = self.classes.as_ref().map_or(1, Vec::len);
        let mut sum = vec![0.0; outputs];
        for t in &self.trees {
            for (a, b) in sum.iter_mut().zip(t.leaf(x)) {
                *a += b;
            }
        }
        let n = self.trees.len().max(1) as f64;
        sum.iter_mut().for_each(|v| *v /= n);
        sum
    }

    pub(crate) fn predict_proba(&self, x: &[f64]) -> Option<Vec<f64>> {
        self.classes.as_ref()?;
        Some(self.mean(x))
    }

    pub(crate) fn predict(&self, x: &[f64]) -> f64 {
        let m = self.mean(x);
        match &self.classes {
            Some(classes) => super::logistic::argmax_label(classes, &m),
            None => m[0],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regression_and_classification_fit_their_training_data() {
        let x: Vec<Vec<f64>> = (0..300)
            .map(|i| vec![(i % 30) as f64, (i / 30) as f64, ((i * 7) % 11) as f64])
            .collect();
        let y: Vec<f64> = x.iter().map(|r| r[0] * 2.0 + r[1]).collect();
        let m = Forest::fit(&x, &y, false, &ForestParams::default()).unwrap();
        let r2_den: f64 = {
            let mean = y.iter().sum::<f64>() / y.len() as f64;
            y.iter().map(|v| (v - mean).powi(2)).sum()
        };
        let sse: f64 = x
            .iter()
            .zip(&y)
            .map(|(r, t)| (m.predict(r) - t).powi(2))
            .sum();
        assert!(1.0 - sse / r2_den > 0.98, "{}", 1.0 - sse / r2_den);
        let labels: Vec<f64> = x.iter().map(|r| f64::from(r[0] > 14.0) + 2.0).collect();
        let c = Forest::fit(&x, &labels, true, &ForestParams::default()).unwrap();
        let right = x
            .iter()
            .zip(&labels)
            .filter(|(r, t)| c.predict(r) == **t)
            .count();
        assert_eq!(right, x.len());
        let p = c.predict_proba(&x[0]).unwrap();
        assert!((p.iter().sum::<f64>() - 1.0).abs() < 1e-9);
        assert!(m.predict_proba(&x[0]).is_none());
    }

    #[test]
    fn the_same_seed_gives_the_same_forest() {
        let x: Vec<Vec<f64>> = (0..50).map(|i| vec![i as f64, (i % 7) as f64]).collect();
        let y: Vec<f64> = x.iter().map(|r| r[1]).collect();
        let p = ForestParams {
            n_estimators: 5,
            max_depth: Some(3),
            ..ForestParams::default()
        };
        let a = Forest::fit(&x, &y, false, &p).unwrap();
        let b = Forest::fit(&x, &y, false, &p).unwrap();
        assert_eq!(a, b);
        let c = Forest::fit(&x, &y, false, &ForestParams { seed: 9, ..p }).unwrap();
        assert_ne!(a, c);
    }
}
