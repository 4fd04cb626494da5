//! Linear and ridge regression as plain Rust, with scikit-learn's semantics: the intercept is fitted by centring
//! (and never penalised), ridge solves `(XᵀX + αI) β = Xᵀy` on the centred data (α defaults to 1.0, as
//! `sklearn.linear_model.Ridge`), and plain least squares is ridge with α = 0. The normal equations are solved
//! by Cholesky factorisation in f64; a singular system (collinear features without a penalty) is an error rather
//! than a silently arbitrary answer. Regression metrics are PostgresML's: r2, mean_squared_error,
//! mean_absolute_error.

// Matrix code reads best with explicit indices.
#![allow(clippy::needless_range_loop)]

use serde::{Deserialize, Serialize};

/// A fitted linear model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Linear {
    pub(crate) coef: Vec<f64>,
    pub(crate) intercept: f64,
}

/// Why a model cannot be fitted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum FitError {
    #[error("there are no training rows")]
    Empty,
    #[error("the features are linearly dependent (collinear), so least squares has no unique solution; use algorithm => 'ridge'")]
    Singular,
}

impl Linear {
    /// Fits `y ≈ X β + b` on rows `x` (each of the same length) with penalty `alpha`.
    pub(crate) fn fit(x: &[Vec<f64>], y: &[f64], alpha: f64) -> Result<Linear, FitError> {
        let n = x.len();
        if n == 0 || y.len() != n {
            return Err(FitError::Empty);
        }
        let p = x[0].len();
        let mean_x: Vec<f64> = (0..p)
            .map(|j| x.iter().map(|r| r[j]).sum::<f64>() / n as f64)
            .collect();
        let mean_y = y.iter().sum::<f64>() / n as f64;
        // Gram matrix and right-hand side of the centred problem.
        let mut a = vec![vec![0.0; p]; p];
        let mut b = vec![0.0; p];
        for (row, &t) in x.iter().zip(y) {
            let c: Vec<f64> = row.iter().zip(&mean_x).map(|(v, m)| v - m).collect();
            let ty = t - mean_y;
            for i in 0..p {
                b[i] += c[i] * ty;
                for j in 0..=i {
                    a[i][j] += c[i] * c[j];
                }
            }
        }
        for i in 0..p {
            a[i][i] += alpha;
            for j in 0..i {
                a[j][i] = a[i][j];
            }
        }
        let coef = solve_spd(a, b).ok_or(FitError::Singular)?;
        let intercept = mean_y - coef.iter().zip(&mean_x).map(|(c, m)| c * m).sum::<f64>();
        Ok(Linear { coef, intercept })
    }

    pub(crate) fn predict(&self, x: &[f64]) -> f64 {
        self.intercept + self.coef.iter().zip(x).map(|(c, v)| c * v).sum::<f64>()
    }
}

impl Linear {
    /// Elastic net by cyclic coordinate descent, scikit-learn's objective:
    /// `1/(2n) ||y - Xw - b||² + alpha l1_ratio ||w||₁ + alpha (1 - l1_ratio) / 2 ||w||²`, intercept unpenalised
    /// (lasso is `l1_ratio = 1`). Stops when the largest coordinate change is below `tol` times the largest
    /// weight, as sklearn does, or after `max_iter` sweeps.
    pub(crate) fn fit_elastic_net(
        x: &[Vec<f64>],
        y: &[f64],
        alpha: f64,
        l1_ratio: f64,
        max_iter: usize,
        tol: f64,
    ) -> Result<Linear, FitError> {
        let n = x.len();
        if n == 0 || y.len() != n {
            return Err(FitError::Empty);
        }
        let p = x[0].len();
        let nf = n as f64;
        let mean_x: Vec<f64> = (0..p)
            .map(|j| x.iter().map(|r| r[j]).sum::<f64>() / nf)
            .collect();
        let mean_y = y.iter().sum::<f64>() / nf;
        // Centred columns, so the intercept drops out.
        let cols: Vec<Vec<f64>> = (0..p)
            .map(|j| x.iter().map(|r| r[j] - mean_x[j]).collect())
            .collect();
        let norms: Vec<f64> = cols
            .iter()
            .map(|c| c.iter().map(|v| v * v).sum::<f64>())
            .collect();
        let mut residual: Vec<f64> = y.iter().map(|t| t - mean_y).collect();
        let mut w = vec![0.0; p];
        let (l1, l2) = (alpha * l1_ratio * nf, alpha * (1.0 - l1_ratio) * nf);
        for _ in 0..max_iter {
            let (mut max_change, mut max_w) = (0.0f64, 0.0f64);
            for j in 0..p {
                if norms[j] == 0.0 {
                    continue;
                }
                let old = w[j];
                let rho: f64 = cols[j]
                    .iter()
                    .zip(&residual)
                    .map(|(c, r)| c * r)
                    .sum::<f64>()
                    + norms[j] * old;
                let new = rho.signum() * (rho.abs() - l1).max(0.0) / (norms[j] + l2);
                if new != old {
                    for (r, c) in residual.iter_mut().zip(&cols[j]) {
                        *r -= c * (new - old);
                    }
                    w[j] = new;
                }
                max_change = max_change.max((new - old).abs());
                max_w = max_w.max(new.abs());
            }
            if max_w == 0.0 || max_change / max_w < tol {
                break;
            }
        }
        let intercept = mean_y - w.iter().zip(&mean_x).map(|(c, m)| c * m).sum::<f64>();
        Ok(Linear { coef: w, intercept })
    }
}

/// Solves `A x = b` for a symmetric positive definite `A` by Cholesky; `None` when `A` is not (numerically)
/// positive definite.
fn solve_spd(mut a: Vec<Vec<f64>>, mut b: Vec<f64>) -> Option<Vec<f64>> {
    let n = b.len();
    let scale = (0..n)
        .map(|i| a[i][i].abs())
        .fold(0.0f64, f64::max)
        .max(1.0);
    for j in 0..n {
        let mut d = a[j][j];
        for k in 0..j {
            d -= a[j][k] * a[j][k];
        }
        if d <= scale * 1e-12 {
            return None;
        }
        let d = d.sqrt();
        a[j][j] = d;
        for i in j + 1..n {
            let mut s = a[i][j];
            for k in 0..j {
                s -= a[i][k] * a[j][k];
            }
            a[i][j] = s / d;
        }
    }
    for i in 0..n {
        let mut s = b[i];
        for k in 0..i {
            s -= a[i][k] * b[k];
        }
        b[i] = s / a[i][i];
    }
    for i in (0..n).rev() {
        let mut s = b[i];
        for k in i + 1..n {
            s -= a[k][i] * b[k];
        }
        b[i] = s / a[i][i];
    }
    Some(b)
}

/// PostgresML's regression metrics on a test split.
pub(crate) fn regression_metrics(
    truth: &[f64],
    predicted: &[f64],
) -> serde_json::Map<String, serde_json::Value> {
    let n = truth.len().max(1) as f64;
    let mean = truth.iter().sum::<f64>() / n;
    let ss_res: f64 = truth
        .iter()
        .zip(predicted)
        .map(|(t, p)| (t - p).powi(2))
        .sum();
    let ss_tot: f64 = truth.iter().map(|t| (t - mean).powi(2)).sum();
    let mae = truth
        .iter()
        .zip(predicted)
        .map(|(t, p)| (t - p).abs())
        .sum::<f64>()
        / n;
    // scikit-learn's r2_score: 1 for a perfect fit of a constant target, 0 for an imperfect one.
    let r2 = if ss_tot == 0.0 {
        if ss_res == 0.0 {
            1.0
        } else {
            0.0
        }
    } else {
        1.0 - ss_res / ss_tot
    };
    let mut m = serde_json::Map::new();
    m.insert("r2".into(), r2.into());
    m.insert("mean_squared_error".into(), (ss_res / n).into());
    m.insert("mean_absolute_error".into(), mae.into());
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recovers_an_exact_linear_function() {
        let x: Vec<Vec<f64>> = (0..20)
            .map(|i| vec![i as f64, ((i * 7) % 5) as f64])
            .collect();
        let y: Vec<f64> = x.iter().map(|r| 3.0 + 2.0 * r[0] - 0.5 * r[1]).collect();
        let m = Linear::fit(&x, &y, 0.0).unwrap();
        assert!((m.intercept - 3.0).abs() < 1e-9);
        assert!((m.coef[0] - 2.0).abs() < 1e-9 && (m.coef[1] + 0.5).abs() < 1e-9);
        assert!((m.predict(&[10.0, 2.0]) - 22.0).abs() < 1e-9);
        let metrics = regression_metrics(&y, &x.iter().map(|r| m.predict(r)).collect::<Vec<_>>());
        assert!((metrics["r2"].as_f64().unwrap() - 1.0).abs() < 1e-12);
    }

    #[test]
    fn lasso_meets_its_optimality_conditions() {
        let x: Vec<Vec<f64>> = (0..40)
            .map(|i| vec![i as f64, ((i * 7) % 11) as f64, ((i * 3) % 5) as f64])
            .collect();
        let y: Vec<f64> = x
            .iter()
            .map(|r| 1.0 + 2.0 * r[0] - 0.3 * r[1] + 0.01 * r[2])
            .collect();
        let alpha = 0.5;
        let m = Linear::fit_elastic_net(&x, &y, alpha, 1.0, 100_000, 1e-12).unwrap();
        // KKT: for each weight, (1/n) X_jᵀ r = alpha sign(w_j) when w_j != 0, and |.| <= alpha when w_j = 0.
        let n = x.len() as f64;
        let r: Vec<f64> = x
            .iter()
            .zip(&y)
            .map(|(row, t)| t - m.predict(row))
            .collect();
        for j in 0..3 {
            let g: f64 = x.iter().zip(&r).map(|(row, v)| row[j] * v).sum::<f64>() / n;
            if m.coef[j] != 0.0 {
                assert!((g - alpha * m.coef[j].signum()).abs() < 1e-6, "{j}: {g}");
            } else {
                assert!(g.abs() <= alpha + 1e-9, "{j}: {g}");
            }
        }
        // The tiny third weight is driven to zero; the strong ones survive.
        assert_eq!(m.coef[2], 0.0);
        assert!(m.coef[0] > 1.9);
        // With no penalty, coordinate descent reaches least squares.
        let ols = Linear::fit(&x, &y, 0.0).unwrap();
        let cd = Linear::fit_elastic_net(&x, &y, 1e-12, 0.5, 100_000, 1e-14).unwrap();
        for j in 0..3 {
            assert!((ols.coef[j] - cd.coef[j]).abs() < 1e-6);
        }
    }

    #[test]
    fn ridge_shrinks_like_the_closed_form_and_collinear_needs_it() {
        // One feature: beta = sxy / (sxx + alpha).
        let x: Vec<Vec<f64>> = vec![vec![1.0], vec![2.0], vec![4.0]];
        let y = vec![1.0, 3.0, 4.0];
        let (mx, my) = (7.0 / 3.0, 8.0 / 3.0);
        let sxx: f64 = x.iter().map(|r| (r[0] - mx).powi(2)).sum();
        let sxy: f64 = x.iter().zip(&y).map(|(r, t)| (r[0] - mx) * (t - my)).sum();
        let m = Linear::fit(&x, &y, 1.0).unwrap();
        assert!((m.coef[0] - sxy / (sxx + 1.0)).abs() < 1e-12);
        assert!((m.intercept - (my - m.coef[0] * mx)).abs() < 1e-12);
        let collinear: Vec<Vec<f64>> = (0..5).map(|i| vec![i as f64, 2.0 * i as f64]).collect();
        let y: Vec<f64> = (0..5).map(|i| i as f64).collect();
        assert_eq!(Linear::fit(&collinear, &y, 0.0), Err(FitError::Singular));
        assert!(Linear::fit(&collinear, &y, 1.0).is_ok());
    }
}
