//! k-means clustering as scikit-learn's `KMeans` fits it (`task => 'clustering'`, `algorithm => 'kmeans'`):
//! k-means++ seeding, Lloyd iterations until the centres move less than `tol` times the mean feature variance or
//! `max_iter` is reached, the best of `n_init` runs by inertia. `predict` is the index of the nearest centre, and
//! PostgresML's clustering metric is the silhouette score.

use rand::{Rng, SeedableRng};

#[derive(Debug, Clone)]
pub(crate) struct KMeansParams {
    pub(crate) n_clusters: usize,
    pub(crate) max_iter: usize,
    pub(crate) tol: f64,
    pub(crate) n_init: usize,
    pub(crate) seed: u64,
}

impl Default for KMeansParams {
    fn default() -> Self {
        KMeansParams {
            n_clusters: 8,
            max_iter: 300,
            tol: 1e-4,
            n_init: 1,
            seed: 0,
        }
    }
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub(crate) struct KMeans {
    pub(crate) centers: Vec<Vec<f64>>,
}

fn dist2(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum()
}

impl KMeans {
    /// Fits `n_clusters` centres; None when there are fewer rows than clusters.
    pub(crate) fn fit(x: &[Vec<f64>], p: &KMeansParams) -> Option<KMeans> {
        let k = p.n_clusters;
        if k == 0 || x.len() < k {
            return None;
        }
        let d = x[0].len();
        let n = x.len() as f64;
        let mean_var = (0..d)
            .map(|j| {
                let m = x.iter().map(|r| r[j]).sum::<f64>() / n;
                x.iter().map(|r| (r[j] - m).powi(2)).sum::<f64>() / n
            })
            .sum::<f64>()
            / d.max(1) as f64;
        let tol = p.tol * mean_var;
        let mut rng = rand::rngs::StdRng::seed_from_u64(p.seed);
        let mut best: Option<(f64, Vec<Vec<f64>>)> = None;
        for _ in 0..p.n_init.max(1) {
            let mut centers = seed_plus_plus(x, k, &mut rng);
            for _ in 0..p.max_iter {
                let mut sums = vec![vec![0.0; d]; k];
                let mut counts = vec![0usize; k];
                for r in x {
                    let c = nearest(&centers, r).0;
                    counts[c] += 1;
                    for (a, v) in sums[c].iter_mut().zip(r) {
                        *a += v;
                    }
                }
                let mut shift = 0.0;
                for c in 0..k {
                    // An empty cluster keeps its centre.
                    if counts[c] > 0 {
                        let new: Vec<f64> = sums[c].iter().map(|s| s / counts[c] as f64).collect();
                        shift += dist2(&new, &centers[c]);
                        centers[c] = new;
                    }
                }
                if shift <= tol {
                    break;
                }
            }
            let inertia: f64 = x.iter().map(|r| nearest(&centers, r).1).sum();
            if best.as_ref().is_none_or(|(b, _)| inertia < *b) {
                best = Some((inertia, centers));
            }
        }
        best.map(|(_, centers)| KMeans { centers })
    }

    pub(crate) fn num_features(&self) -> usize {
        self.centers.first().map_or(0, Vec::len)
    }

    /// The index of the nearest centre.
    pub(crate) fn predict(&self, x: &[f64]) -> f64 {
        nearest(&self.centers, x).0 as f64
    }
}

/// The nearest centre and the squared distance to it.
fn nearest(centers: &[Vec<f64>], x: &[f64]) -> (usize, f64) {
    centers
        .iter()
        .enumerate()
        .map(|(i, c)| (i, dist2(c, x)))
        .fold((0, f64::INFINITY), |b, c| if c.1 < b.1 { c } else { b })
}

/// k-means++: each next centre is drawn with probability proportional to the squared distance to the nearest one
/// chosen so far.
fn seed_plus_plus(x: &[Vec<f64>], k: usize, rng: &mut impl Rng) -> Vec<Vec<f64>> {
    let mut centers = vec![x[rng.random_range(0..x.len())].clone()];
    let mut d: Vec<f64> = x.iter().map(|r| dist2(r, &centers[0])).collect();
    while centers.len() < k {
        let total: f64 = d.iter().sum();
        let pick = if total > 0.0 {
            let mut t = rng.random::<f64>() * total;
            let mut at = x.len() - 1;
            for (i, v) in d.iter().enumerate() {
                if t < *v {
                    at = i;
                    break;
                }
                t -= v;
            }
            at
        } else {
            rng.random_range(0..x.len())
        };
        centers.push(x[pick].clone());
        for (di, r) in d.iter_mut().zip(x) {
            *di = di.min(dist2(r, &x[pick]));
        }
    }
    centers
}

/// The mean silhouette coefficient of `labels` over rows `x` (scikit-learn's `silhouette_score`); a row alone in
/// its cluster scores 0. Undefined (NaN) with fewer than two clusters or as many clusters as rows.
pub(crate) fn silhouette(x: &[Vec<f64>], labels: &[f64]) -> f64 {
    let mut clusters: Vec<f64> = labels.to_vec();
    clusters.sort_by(|a, b| a.total_cmp(b));
    clusters.dedup();
    let k = clusters.len();
    if k < 2 || k >= x.len() {
        return f64::NAN;
    }
    let idx: Vec<usize> = labels
        .iter()
        .map(|l| clusters.iter().position(|c| c == l).unwrap_or(0))
        .collect();
    let mut size = vec![0usize; k];
    for i in &idx {
        size[*i] += 1;
    }
    let mut total = 0.0;
    let mut sums = vec![0.0; k];
    for (i, a) in x.iter().enumerate() {
        sums.iter_mut().for_each(|v| *v = 0.0);
        for (j, b) in x.iter().enumerate() {
            if i != j {
                sums[idx[j]] += dist2(a, b).sqrt();
            }
        }
        let own = idx[i];
        if size[own] <= 1 {
            continue;
        }
        let a_i = sums[own] / (size[own] - 1) as f64;
        let b_i = (0..k)
            .filter(|c| *c != own && size[*c] > 0)
            .map(|c| sums[c] / size[c] as f64)
            .fold(f64::INFINITY, f64::min);
        let m = a_i.max(b_i);
        if m > 0.0 {
            total += (b_i - a_i) / m;
        }
    }
    total / x.len() as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_separated_blobs() {
        let mut x = Vec::new();
        for (cx, cy) in [(0.0, 0.0), (10.0, 0.0), (0.0, 10.0)] {
            for i in 0..30 {
                let a = i as f64 * 0.7;
                x.push(vec![cx + a.sin(), cy + a.cos()]);
            }
        }
        let p = KMeansParams {
            n_clusters: 3,
            n_init: 3,
            ..KMeansParams::default()
        };
        let m = KMeans::fit(&x, &p).unwrap();
        let labels: Vec<f64> = x.iter().map(|r| m.predict(r)).collect();
        for blob in labels.chunks(30) {
            assert!(blob.iter().all(|l| *l == blob[0]), "{blob:?}");
        }
        assert_ne!(labels[0], labels[30]);
        assert_ne!(labels[30], labels[60]);
        assert_ne!(labels[0], labels[60]);
        let s = silhouette(&x, &labels);
        assert!(s > 0.8, "{s}");
        assert!(KMeans::fit(&x[..2], &p).is_none());
    }

    #[test]
    fn silhouette_of_a_small_case_by_hand() {
        // Points 0, 1 in cluster A and 4 in cluster B: a(0) = 1, b(0) = 4 → 0.75; a(1) = 1, b(1) = 3 → 2/3;
        // the point alone in B scores 0.
        let x = vec![vec![0.0], vec![1.0], vec![4.0]];
        let s = silhouette(&x, &[0.0, 0.0, 1.0]);
        assert!((s - (0.75 + 2.0 / 3.0) / 3.0).abs() < 1e-12, "{s}");
        assert!(silhouette(&x, &[0.0, 0.0, 0.0]).is_nan());
    }
}
