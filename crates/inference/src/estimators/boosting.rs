//! Gradient-boosted trees as XGBoost fits them (`algorithm => 'xgboost'`): second-order boosting on squared error
//! for regression, logistic loss for two classes and softmax (one tree per class per round) for more, with
//! XGBoost's hyperparameters `n_estimators`, `max_depth`, `learning_rate`/`eta`, `subsample`, `min_child_weight`,
//! `reg_lambda`/`lambda` and `gamma`. Splits are exact (XGBoost's `tree_method = "exact"`).

use rand::{Rng, SeedableRng};

use super::trees::{grow, Columns, Growth, Tree};

/// XGBoost's defaults.
#[derive(Debug, Clone)]
pub(crate) struct BoostParams {
    pub(crate) n_estimators: usize,
    pub(crate) max_depth: usize,
    pub(crate) learning_rate: f64,
    pub(crate) subsample: f64,
    pub(crate) min_child_weight: f64,
    pub(crate) reg_lambda: f64,
    pub(crate) gamma: f64,
    pub(crate) seed: u64,
}

impl Default for BoostParams {
    fn default() -> Self {
        BoostParams {
            n_estimators: 100,
            max_depth: 6,
            learning_rate: 0.3,
            subsample: 1.0,
            min_child_weight: 1.0,
            reg_lambda: 1.0,
            gamma: 0.0,
            seed: 0,
        }
    }
}

/// A fitted booster.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub(crate) struct Boosted {
    /// Starting margin per output.
    base: Vec<f64>,
    /// `base.len()` trees per round.
    trees: Vec<Tree>,
    /// Class labels, sorted, for classification.
    classes: Option<Vec<f64>>,
    features: usize,
}

/// Hessians below this are raised to it, as XGBoost does, so leaf values stay finite.
const MIN_HESSIAN: f64 = 1e-16;

/// The starting margin: the mean for a regressor, the log-odds of the positive class for a binary
/// classifier, zeros for softmax over several classes.
fn base_margin(classify: bool, k: usize, y: &[f64], label: &[usize]) -> Vec<f64> {
    let n = y.len() as f64;
    if !classify {
        return vec![y.iter().sum::<f64>() / n];
    }
    if k > 1 {
        return vec![0.0; k];
    }
    let mean = (label.iter().sum::<usize>() as f64 / n).clamp(1e-6, 1.0 - 1e-6);
    vec![(mean / (1.0 - mean)).ln()]
}

/// One row's gradient and hessian for each class of a classifier: the logistic loss for one
/// margin, the softmax loss (XGBoost's doubled hessian) for several.
fn class_gradients(margin: &[f64], label: usize, g: &mut [(f64, f64)], probs: &mut [f64]) {
    if margin.len() == 1 {
        let pr = sigmoid(margin[0]);
        let t = if label == 1 { 1.0 } else { 0.0 };
        g[0] = (pr - t, (pr * (1.0 - pr)).max(MIN_HESSIAN));
        return;
    }
    probs.copy_from_slice(margin);
    super::logistic::softmax(probs);
    for (c, pc) in probs.iter().enumerate() {
        let t = if label == c { 1.0 } else { 0.0 };
        g[c] = (pc - t, (2.0 * pc * (1.0 - pc)).max(MIN_HESSIAN));
    }
}

impl Boosted {
    /// [`Boosted::fit_reporting`] without progress (for tests).
    #[cfg(test)]
    pub(crate) fn fit(
        x: &[Vec<f64>],
        y: &[f64],
        classify: bool,
        p: &BoostParams,
    ) -> Option<Boosted> {
        Boosted::fit_reporting(x, y, classify, p, &mut |_, _| {})
    }

    /// Fits a regressor (`classify` false) or a classifier over the sorted distinct labels of `y`, calling
    /// `round(done, total)` after each boosting round.
    pub(crate) fn fit_reporting(
        x: &[Vec<f64>],
        y: &[f64],
        classify: bool,
        p: &BoostParams,
        round: &mut dyn FnMut(usize, usize),
    ) -> Option<Boosted> {
        if x.is_empty() {
            return None;
        }
        let classes = classify.then(|| super::logistic::classes_of(y));
        let k = match &classes {
            Some(c) if c.len() < 2 => return None,
            Some(c) if c.len() == 2 => 1,
            Some(c) => c.len(),
            None => 1,
        };
        let label: Vec<usize> = match &classes {
            Some(c) => y
                .iter()
                .map(|v| c.iter().position(|l| l == v).unwrap_or(0))
                .collect(),
            None => Vec::new(),
        };
        let n = x.len();
        let base = base_margin(classes.is_some(), k, y, &label);
        let cols = Columns::new(x);
        let growth = Growth {
            max_depth: p.max_depth,
            lambda: p.reg_lambda,
            gamma: p.gamma,
            min_child_weight: p.min_child_weight,
            min_split_weight: 0.0,
            features_per_node: 0,
            scale: p.learning_rate,
        };
        let mut rng = rand::rngs::StdRng::seed_from_u64(p.seed);
        let mut margin: Vec<f64> = (0..n).flat_map(|_| base.iter().copied()).collect();
        let mut trees = Vec::with_capacity(p.n_estimators * k);
        let mut s = vec![0.0; n];
        let mut h = vec![0.0; n];
        let mut probs = vec![0.0; k];
        let mut grads = vec![(0.0, 0.0); n * k];
        for done in 0..p.n_estimators {
            round(done, p.n_estimators);
            for r in 0..n {
                let m = &margin[r * k..(r + 1) * k];
                let g = &mut grads[r * k..(r + 1) * k];
                match &classes {
                    None => g[0] = (m[0] - y[r], 1.0),
                    Some(_) => class_gradients(m, label[r], g, &mut probs),
                }
            }
            let keep: Vec<bool> = (0..n)
                .map(|_| p.subsample >= 1.0 || rng.random::<f64>() < p.subsample)
                .collect();
            for c in 0..k {
                for r in 0..n {
                    let (g, hh) = grads[r * k + c];
                    (s[r], h[r]) = if keep[r] { (-g, hh) } else { (0.0, 0.0) };
                }
                let tree = grow(&cols, &s, &h, 1, &growth, &mut rng);
                for (r, row) in x.iter().enumerate() {
                    margin[r * k + c] += tree.value(row);
                }
                trees.push(tree);
            }
        }
        Some(Boosted {
            base,
            trees,
            classes,
            features: x[0].len(),
        })
    }

    pub(crate) fn num_features(&self) -> usize {
        self.features
    }

    pub(crate) fn is_classifier(&self) -> bool {
        self.classes.is_some()
    }

    fn margins(&self, x: &[f64]) -> Vec<f64> {
        let k = self.base.len();
        let mut m = self.base.clone();
        for (i, t) in self.trees.iter().enumerate() {
            m[i % k] += t.value(x);
        }
        m
    }

    /// The class probabilities, in sorted label order (classification only).
    pub(crate) fn predict_proba(&self, x: &[f64]) -> Option<Vec<f64>> {
        self.classes.as_ref()?;
        let mut m = self.margins(x);
        if m.len() == 1 {
            let p = sigmoid(m[0]);
            return Some(vec![1.0 - p, p]);
        }
        super::logistic::softmax(&mut m);
        Some(m)
    }

    /// The prediction: the value for regression, the most probable label for classification.
    pub(crate) fn predict(&self, x: &[f64]) -> f64 {
        match (&self.classes, self.predict_proba(x)) {
            (Some(classes), Some(p)) => super::logistic::argmax_label(classes, &p),
            _ => self.margins(x)[0],
        }
    }
}

fn sigmoid(z: f64) -> f64 {
    1.0 / (1.0 + (-z).exp())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grid() -> Vec<Vec<f64>> {
        (0..400)
            .map(|i| vec![(i % 20) as f64 / 2.0, (i / 20) as f64 / 2.0])
            .collect()
    }

    #[test]
    fn regression_fits_a_nonlinear_surface() {
        let x = grid();
        let y: Vec<f64> = x
            .iter()
            .map(|r| (r[0] - 5.0).abs() * 3.0 + r[1].sin())
            .collect();
        let m = Boosted::fit(&x, &y, false, &BoostParams::default()).unwrap();
        let mse: f64 = x
            .iter()
            .zip(&y)
            .map(|(r, t)| (m.predict(r) - t).powi(2))
            .sum::<f64>()
            / y.len() as f64;
        assert!(mse < 0.01, "{mse}");
        // Fewer, shallower trees with a small rate fit worse: the hyperparameters are honoured.
        let weak = BoostParams {
            n_estimators: 3,
            max_depth: 1,
            learning_rate: 0.1,
            ..BoostParams::default()
        };
        let w = Boosted::fit(&x, &y, false, &weak).unwrap();
        assert_eq!(w.trees.len(), 3);
        let wmse: f64 = x
            .iter()
            .zip(&y)
            .map(|(r, t)| (w.predict(r) - t).powi(2))
            .sum::<f64>()
            / y.len() as f64;
        assert!(wmse > 10.0 * mse, "{wmse} vs {mse}");
    }

    #[test]
    fn binary_and_multiclass_classification() {
        let x = grid();
        let two: Vec<f64> = x.iter().map(|r| f64::from(r[0] + r[1] > 9.0)).collect();
        let m = Boosted::fit(&x, &two, true, &BoostParams::default()).unwrap();
        let right = x
            .iter()
            .zip(&two)
            .filter(|(r, t)| m.predict(r) == **t)
            .count();
        // A diagonal boundary with axis-aligned splits: min_child_weight stops growth once rows are confident.
        assert!(right >= 396, "{right}");
        let p = m.predict_proba(&x[0]).unwrap();
        assert_eq!(p.len(), 2);
        assert!((p.iter().sum::<f64>() - 1.0).abs() < 1e-12);
        let three: Vec<f64> = x
            .iter()
            .map(|r| {
                if r[0] < 3.0 {
                    7.0
                } else if r[1] < 5.0 {
                    8.0
                } else {
                    9.0
                }
            })
            .collect();
        let m = Boosted::fit(&x, &three, true, &BoostParams::default()).unwrap();
        assert_eq!(m.trees.len(), 300);
        let right = x
            .iter()
            .zip(&three)
            .filter(|(r, t)| m.predict(r) == **t)
            .count();
        assert_eq!(right, x.len());
        assert_eq!(m.predict_proba(&x[0]).unwrap().len(), 3);
        assert!(Boosted::fit(&x, &vec![1.0; x.len()], true, &BoostParams::default()).is_none());
    }

    #[test]
    fn stores_and_loads_as_json() {
        let x = grid();
        let y: Vec<f64> = x.iter().map(|r| r[0] * r[1]).collect();
        let p = BoostParams {
            n_estimators: 5,
            subsample: 0.5,
            ..BoostParams::default()
        };
        let m = Boosted::fit(&x, &y, false, &p).unwrap();
        let back: Boosted = serde_json::from_str(&serde_json::to_string(&m).unwrap()).unwrap();
        assert_eq!(back.predict(&x[7]), m.predict(&x[7]));
    }
}
