//! Principal component analysis as scikit-learn's `PCA` fits it (`task => 'decomposition'`, `algorithm => 'pca'`):
//! the features are centred, the eigenvectors of their covariance matrix (found by cyclic Jacobi rotations, exact
//! for the symmetric matrix) are the components in order of explained variance, each signed so that its largest
//! entry by magnitude is positive (scikit-learn's `svd_flip`). `n_components` defaults to all of them.
//! `pgml.decompose` projects a vector onto the components; PostgresML's metric is the cumulative explained
//! variance ratio.

// Rotations address a row and a column of the same matrix at once: indices say it more plainly than iterators.
#![allow(clippy::needless_range_loop)]

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub(crate) struct Pca {
    pub(crate) mean: Vec<f64>,
    /// `n_components` rows of `mean.len()` weights.
    pub(crate) components: Vec<Vec<f64>>,
    pub(crate) explained_variance_ratio: Vec<f64>,
}

impl Pca {
    /// Fits on `x`; `n_components` of `None` keeps min(rows, features).
    pub(crate) fn fit(x: &[Vec<f64>], n_components: Option<usize>) -> Result<Pca, String> {
        let n = x.len();
        let p = x.first().map_or(0, Vec::len);
        if n < 2 || p == 0 {
            return Err("decomposition needs at least two rows of features".into());
        }
        let k = n_components.unwrap_or(n.min(p));
        if k == 0 || k > n.min(p) {
            return Err(format!(
                "n_components = {k} must be between 1 and min(n_samples, n_features) = {}",
                n.min(p)
            ));
        }
        let mut mean = vec![0.0; p];
        for row in x {
            for (m, v) in mean.iter_mut().zip(row) {
                *m += v / n as f64;
            }
        }
        let mut cov = vec![vec![0.0; p]; p];
        for row in x {
            let c: Vec<f64> = row.iter().zip(&mean).map(|(v, m)| v - m).collect();
            for i in 0..p {
                for j in i..p {
                    cov[i][j] += c[i] * c[j] / (n - 1) as f64;
                }
            }
        }
        for i in 0..p {
            for j in 0..i {
                cov[i][j] = cov[j][i];
            }
        }
        let (values, vectors) = jacobi(cov);
        let mut order: Vec<usize> = (0..p).collect();
        order.sort_by(|&a, &b| values[b].total_cmp(&values[a]));
        let total: f64 = values.iter().map(|v| v.max(0.0)).sum();
        let mut components = Vec::with_capacity(k);
        let mut ratio = Vec::with_capacity(k);
        for &c in order.iter().take(k) {
            let mut v: Vec<f64> = (0..p).map(|i| vectors[i][c]).collect();
            let biggest = v
                .iter()
                .copied()
                .fold(0.0f64, |a, b| if b.abs() > a.abs() { b } else { a });
            if biggest < 0.0 {
                v.iter_mut().for_each(|w| *w = -*w);
            }
            components.push(v);
            ratio.push(if total > 0.0 {
                values[c].max(0.0) / total
            } else {
                0.0
            });
        }
        Ok(Pca {
            mean,
            components,
            explained_variance_ratio: ratio,
        })
    }

    pub(crate) fn num_features(&self) -> usize {
        self.mean.len()
    }

    /// The vector in component space.
    pub(crate) fn transform(&self, x: &[f64]) -> Vec<f64> {
        self.components
            .iter()
            .map(|c| {
                c.iter()
                    .zip(x)
                    .zip(&self.mean)
                    .map(|((w, v), m)| w * (v - m))
                    .sum()
            })
            .collect()
    }
}

/// Eigenvalues and eigenvectors (as columns) of a symmetric matrix, by cyclic Jacobi rotations.
fn jacobi(mut a: Vec<Vec<f64>>) -> (Vec<f64>, Vec<Vec<f64>>) {
    let p = a.len();
    let mut v: Vec<Vec<f64>> = (0..p)
        .map(|i| (0..p).map(|j| f64::from(u8::from(i == j))).collect())
        .collect();
    let scale: f64 = a
        .iter()
        .flatten()
        .map(|x| x * x)
        .sum::<f64>()
        .max(f64::MIN_POSITIVE);
    for _sweep in 0..100 {
        let off: f64 = (0..p)
            .flat_map(|i| (0..p).filter(move |&j| j != i).map(move |j| (i, j)))
            .map(|(i, j)| a[i][j] * a[i][j])
            .sum();
        if off <= 1e-24 * scale {
            break;
        }
        for i in 0..p {
            for j in i + 1..p {
                if a[i][j].abs() <= f64::MIN_POSITIVE {
                    continue;
                }
                let theta = (a[j][j] - a[i][i]) / (2.0 * a[i][j]);
                let t = theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt());
                let t = if theta == 0.0 { 1.0 } else { t };
                let c = 1.0 / (t * t + 1.0).sqrt();
                let s = t * c;
                for k in 0..p {
                    let (aki, akj) = (a[k][i], a[k][j]);
                    a[k][i] = c * aki - s * akj;
                    a[k][j] = s * aki + c * akj;
                }
                for k in 0..p {
                    let (aik, ajk) = (a[i][k], a[j][k]);
                    a[i][k] = c * aik - s * ajk;
                    a[j][k] = s * aik + c * ajk;
                }
                for row in v.iter_mut() {
                    let (vki, vkj) = (row[i], row[j]);
                    row[i] = c * vki - s * vkj;
                    row[j] = s * vki + c * vkj;
                }
            }
        }
    }
    ((0..p).map(|i| a[i][i]).collect(), v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn components_follow_the_variance() {
        // Points along (1, 1) with a little spread across it.
        let x: Vec<Vec<f64>> = (0..50)
            .flat_map(|i| {
                let t = i as f64 - 25.0;
                [vec![t + 0.5, t - 0.5], vec![t - 0.5, t + 0.5]]
            })
            .collect();
        let pca = Pca::fit(&x, None).unwrap();
        let c = &pca.components[0];
        assert!((c[0] - c[1]).abs() < 1e-9 && c[0] > 0.0, "{c:?}");
        assert!((c[0] - 0.5f64.sqrt()).abs() < 1e-9);
        assert!(pca.explained_variance_ratio[0] > 0.99);
        assert!((pca.explained_variance_ratio.iter().sum::<f64>() - 1.0).abs() < 1e-12);
        let z = pca.transform(&[10.0, 10.0]);
        assert!((z[0] - (10.5 * 2f64.sqrt())).abs() < 1e-6, "{z:?}");
        assert!(z[1].abs() < 1e-9, "{z:?}");
        let one = Pca::fit(&x, Some(1)).unwrap();
        assert_eq!(one.components.len(), 1);
        assert!(Pca::fit(&x, Some(3)).is_err());
    }
}
