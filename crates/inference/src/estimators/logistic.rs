//! Logistic regression as plain Rust, with scikit-learn's `LogisticRegression` defaults (what PostgresML trains
//! for `linear` and `logistic_regression` on classification): L2 penalty with C = 1.0 on the weights but not the
//! intercept, the multinomial (softmax) model over the sorted class labels (two classes use the equivalent single
//! logit). The objective is strictly convex, so Ocelot's optimiser (L-BFGS, as sklearn's default solver, run to
//! a tight gradient tolerance) reaches the same optimum as sklearn's lbfgs. Classification metrics follow
//! PostgresML, including its quirk of computing roc_auc and log_loss on the hard predicted labels.

// Matrix code reads best with explicit indices.
#![allow(clippy::needless_range_loop)]

use serde::{Deserialize, Serialize};

/// A fitted multinomial logistic regression.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Logistic {
    /// The class labels, sorted.
    pub(crate) classes: Vec<f64>,
    /// One weight row per class (one row only for two classes: the logit of the second class).
    pub(crate) weights: Vec<Vec<f64>>,
    pub(crate) intercepts: Vec<f64>,
}

pub(super) fn softmax(z: &mut [f64]) {
    let max = z.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let mut sum = 0.0;
    for v in z.iter_mut() {
        *v = (*v - max).exp();
        sum += *v;
    }
    for v in z.iter_mut() {
        *v /= sum;
    }
}

/// The distinct labels of `y`, sorted (sklearn's `classes_`).
pub(super) fn classes_of(y: &[f64]) -> Vec<f64> {
    let mut classes: Vec<f64> = y.to_vec();
    classes.sort_by(|a, b| a.total_cmp(b));
    classes.dedup();
    classes
}

/// The label of the most probable class (the first on ties, as numpy's argmax).
pub(super) fn argmax_label(classes: &[f64], p: &[f64]) -> f64 {
    let best = (0..p.len()).fold(0, |b, i| if p[i] > p[b] { i } else { b });
    classes.get(best).copied().unwrap_or(f64::NAN)
}

impl Logistic {
    /// Fits on rows `x` with labels `y` (at least two distinct values); `c` is the inverse regularisation strength.
    pub(crate) fn fit(x: &[Vec<f64>], y: &[f64], c: f64, max_iter: usize) -> Option<Logistic> {
        let classes = classes_of(y);
        if classes.len() < 2 || x.is_empty() {
            return None;
        }
        let p = x[0].len();
        let k = if classes.len() == 2 { 1 } else { classes.len() };
        let label: Vec<usize> = y
            .iter()
            .map(|v| classes.iter().position(|c| c == v).unwrap_or(0))
            .collect();
        // Parameters: k rows of (p weights + intercept), flattened.
        let w = p + 1;
        let mut z = vec![0.0; k];
        let objective = |theta: &[f64], grad: &mut [f64]| -> f64 {
            grad.iter_mut().for_each(|v| *v = 0.0);
            let mut loss = 0.0;
            for (row, &l) in x.iter().zip(&label) {
                for (cl, zc) in z.iter_mut().enumerate() {
                    let t = &theta[cl * w..(cl + 1) * w];
                    *zc = t[p] + t[..p].iter().zip(row).map(|(a, b)| a * b).sum::<f64>();
                }
                if k == 1 {
                    let z0 = z[0];
                    // log(1 + e^z) - [l == 1] z, computed stably.
                    let soft = if z0 > 0.0 {
                        z0 + (-z0).exp().ln_1p()
                    } else {
                        z0.exp().ln_1p()
                    };
                    loss += soft - if l == 1 { z0 } else { 0.0 };
                    z[0] = 1.0 / (1.0 + (-z0).exp());
                } else {
                    let max = z.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                    let lse = max + z.iter().map(|v| (v - max).exp()).sum::<f64>().ln();
                    loss += lse - z[l];
                    softmax(&mut z);
                }
                for (cl, prob) in z.iter().enumerate() {
                    let target = if (k == 1 && l == 1) || (k > 1 && l == cl) {
                        1.0
                    } else {
                        0.0
                    };
                    let e = c * (prob - target);
                    let g = &mut grad[cl * w..(cl + 1) * w];
                    for (gj, v) in g[..p].iter_mut().zip(row) {
                        *gj += e * v;
                    }
                    g[p] += e;
                }
            }
            let mut reg = 0.0;
            for cl in 0..k {
                for j in 0..p {
                    let t = theta[cl * w + j];
                    reg += t * t;
                    grad[cl * w + j] += t;
                }
            }
            c * loss + 0.5 * reg
        };
        let mut theta = vec![0.0; k * w];
        // A tolerance relative to the loss's scale (C times the rows), tight enough to reach the optimum sklearn's
        // lbfgs converges to.
        let gtol = 1e-8 * (c * x.len() as f64).max(1.0);
        super::lbfgs::minimize(objective, &mut theta, max_iter, gtol);
        let theta: Vec<Vec<f64>> = theta.chunks(w).map(<[f64]>::to_vec).collect();
        Some(Logistic {
            classes,
            weights: theta.iter().map(|t| t[..p].to_vec()).collect(),
            intercepts: theta.iter().map(|t| t[p]).collect(),
        })
    }

    /// Class probabilities, in the order of `classes`.
    pub(crate) fn predict_proba(&self, x: &[f64]) -> Vec<f64> {
        let z: Vec<f64> = self
            .weights
            .iter()
            .zip(&self.intercepts)
            .map(|(w, b)| b + w.iter().zip(x).map(|(a, v)| a * v).sum::<f64>())
            .collect();
        if z.len() == 1 {
            let p1 = 1.0 / (1.0 + (-z[0]).exp());
            vec![1.0 - p1, p1]
        } else {
            let mut z = z;
            softmax(&mut z);
            z
        }
    }

    /// The most probable class label.
    pub(crate) fn predict(&self, x: &[f64]) -> f64 {
        argmax_label(&self.classes, &self.predict_proba(x))
    }

    pub(crate) fn num_features(&self) -> usize {
        self.weights.first().map_or(0, Vec::len)
    }
}

/// PostgresML's classification metrics: accuracy, macro precision / recall / f1, mcc, and for two classes
/// roc_auc and log_loss on the hard labels.
pub(crate) fn classification_metrics(
    truth: &[f64],
    predicted: &[f64],
) -> serde_json::Map<String, serde_json::Value> {
    let mut classes: Vec<f64> = truth.iter().chain(predicted).copied().collect();
    classes.sort_by(|a, b| a.total_cmp(b));
    classes.dedup();
    let k = classes.len();
    let idx = |v: f64| classes.iter().position(|c| *c == v).unwrap_or(0);
    let mut cm = vec![vec![0.0f64; k]; k];
    for (t, p) in truth.iter().zip(predicted) {
        cm[idx(*t)][idx(*p)] += 1.0;
    }
    let n = truth.len().max(1) as f64;
    let correct: f64 = (0..k).map(|i| cm[i][i]).sum();
    let (mut precision, mut recall, mut f1) = (0.0, 0.0, 0.0);
    for i in 0..k {
        let tp = cm[i][i];
        let predicted_i: f64 = (0..k).map(|r| cm[r][i]).sum();
        let actual_i: f64 = cm[i].iter().sum();
        let p = if predicted_i > 0.0 {
            tp / predicted_i
        } else {
            0.0
        };
        let r = if actual_i > 0.0 { tp / actual_i } else { 0.0 };
        precision += p;
        recall += r;
        f1 += if p + r > 0.0 {
            2.0 * p * r / (p + r)
        } else {
            0.0
        };
    }
    let kf = k.max(1) as f64;
    let mut m = serde_json::Map::new();
    m.insert("accuracy".into(), (correct / n).into());
    m.insert("precision".into(), (precision / kf).into());
    m.insert("recall".into(), (recall / kf).into());
    m.insert("f1".into(), (f1 / kf).into());
    // Matthews correlation coefficient, multiclass form.
    let t_k: Vec<f64> = (0..k).map(|i| cm[i].iter().sum()).collect();
    let p_k: Vec<f64> = (0..k).map(|j| (0..k).map(|i| cm[i][j]).sum()).collect();
    let cov_ytyp = correct * n - t_k.iter().zip(&p_k).map(|(a, b)| a * b).sum::<f64>();
    let cov_ypyp = n * n - p_k.iter().map(|v| v * v).sum::<f64>();
    let cov_ytyt = n * n - t_k.iter().map(|v| v * v).sum::<f64>();
    let mcc = if cov_ypyp * cov_ytyt > 0.0 {
        cov_ytyp / (cov_ytyt * cov_ypyp).sqrt()
    } else {
        0.0
    };
    m.insert("mcc".into(), mcc.into());
    if k == 2 {
        // On hard labels the ROC curve has one inner point: AUC = (TPR + TNR) / 2.
        let (tn, fp, fn_, tp) = (cm[0][0], cm[0][1], cm[1][0], cm[1][1]);
        let tpr = if tp + fn_ > 0.0 { tp / (tp + fn_) } else { 0.0 };
        let tnr = if tn + fp > 0.0 { tn / (tn + fp) } else { 0.0 };
        m.insert("roc_auc".into(), ((tpr + tnr) / 2.0).into());
        // sklearn's log_loss with probabilities 0/1 clipped to machine epsilon.
        let eps = f64::EPSILON;
        let wrong = n - correct;
        let loss = (wrong * -(eps.ln()) + correct * -((1.0 - eps).ln())) / n;
        m.insert("log_loss".into(), loss.into());
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn separates_classes_and_matches_the_optimality_condition() {
        // Two well separated blobs plus a third class: the fit must classify them and reach a zero gradient.
        let mut x = Vec::new();
        let mut y = Vec::new();
        for i in 0..30 {
            let t = i as f64 / 10.0;
            x.push(vec![t, 1.0 + t.sin()]);
            y.push(0.0);
            x.push(vec![5.0 + t, 4.0 + t.cos()]);
            y.push(1.0);
            x.push(vec![t, 8.0 + t.cos()]);
            y.push(2.0);
        }
        let m = Logistic::fit(&x, &y, 1.0, 5000).unwrap();
        let predicted: Vec<f64> = x.iter().map(|r| m.predict(r)).collect();
        let metrics = classification_metrics(&y, &predicted);
        assert_eq!(metrics["accuracy"].as_f64(), Some(1.0));
        let p = m.predict_proba(&x[0]);
        assert!((p.iter().sum::<f64>() - 1.0).abs() < 1e-12);
        // Binary case: the known closed form for one feature with symmetric data has weight sign and zero intercept.
        let xb: Vec<Vec<f64>> = vec![vec![-2.0], vec![-1.0], vec![1.0], vec![2.0]];
        let yb = vec![0.0, 0.0, 1.0, 1.0];
        let b = Logistic::fit(&xb, &yb, 1.0, 5000).unwrap();
        assert!(b.weights[0][0] > 0.0 && b.intercepts[0].abs() < 1e-6);
        assert_eq!(b.predict(&[3.0]), 1.0);
    }

    #[test]
    fn classification_metrics_like_postgresml() {
        let truth = vec![0.0, 0.0, 1.0, 1.0];
        let predicted = vec![0.0, 1.0, 1.0, 1.0];
        let m = classification_metrics(&truth, &predicted);
        assert_eq!(m["accuracy"].as_f64(), Some(0.75));
        assert_eq!(m["roc_auc"].as_f64(), Some(0.75));
        let f1 = m["f1"].as_f64().unwrap();
        assert!((f1 - (2.0 / 3.0 + 0.8) / 2.0).abs() < 1e-12);
    }
}
