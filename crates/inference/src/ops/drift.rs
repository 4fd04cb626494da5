//! Drift monitoring: how far the features a deployed model is fed have moved from the data it was trained on.
//!
//! At train time each feature's statistics are stored with the snapshot (`pgml.snapshots.analysis`, key
//! `ocelot_drift`): count, mean, standard deviation, missing rate, and a histogram of [`BINS`] equal-width bins
//! between the training minimum and maximum, plus one bin below and one above. Every prediction Ocelot serves adds
//! its raw features (before preprocessing) to the model's sliding window: [`SLOTS`] time slots covering the
//! configured window, each holding the same statistics. The window is compared with the training snapshot per
//! feature by the population stability index over the histogram bins (PSI; above 0.2 is the usual alarm) and a
//! Kolmogorov-Smirnov-style distance (the largest gap between the two cumulative histograms).
//!
//! Standard deviations are population ones (numpy's default, `ddof = 0`); NULL or NaN features count as missing
//! and are left out of the other statistics.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// Equal-width bins between the training minimum and maximum.
pub(crate) const BINS: usize = 10;
/// Time slots of the sliding window.
pub(crate) const SLOTS: usize = 10;
/// Proportions below this are taken as this in the PSI, so that an empty bin does not make it infinite.
const EPSILON: f64 = 1e-4;

/// One feature's training statistics.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct FeatureBaseline {
    pub(crate) name: String,
    pub(crate) n: u64,
    pub(crate) mean: f64,
    pub(crate) std: f64,
    pub(crate) missing_rate: f64,
    pub(crate) min: f64,
    pub(crate) max: f64,
    /// Proportions of the non-missing values in each of the `BINS + 2` bins (below, the bins, above).
    pub(crate) hist: Vec<f64>,
}

/// The training snapshot's statistics of every feature.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Baseline {
    pub(crate) features: Vec<FeatureBaseline>,
}

/// Running sums of one feature.
#[derive(Debug, Clone, Default)]
struct Acc {
    n: u64,
    missing: u64,
    sum: f64,
    sumsq: f64,
    hist: [u64; BINS + 2],
}

impl Acc {
    fn add(&mut self, v: f64, min: f64, max: f64) {
        self.n += 1;
        if v.is_nan() {
            self.missing += 1;
            return;
        }
        self.sum += v;
        self.sumsq += v * v;
        self.hist[bin(v, min, max)] += 1;
    }

    fn merge(&mut self, o: &Acc) {
        self.n += o.n;
        self.missing += o.missing;
        self.sum += o.sum;
        self.sumsq += o.sumsq;
        for (a, b) in self.hist.iter_mut().zip(o.hist) {
            *a += b;
        }
    }

    fn present(&self) -> u64 {
        self.n - self.missing
    }

    fn mean(&self) -> f64 {
        self.sum / self.present().max(1) as f64
    }

    fn std(&self) -> f64 {
        let k = self.present().max(1) as f64;
        let m = self.sum / k;
        (self.sumsq / k - m * m).max(0.0).sqrt()
    }

    fn proportions(&self) -> Vec<f64> {
        let k = self.present().max(1) as f64;
        self.hist.iter().map(|&c| c as f64 / k).collect()
    }
}

/// The bin of `v`: 0 below `min`, `BINS + 1` above `max`, else its equal-width bin (the maximum in the last).
fn bin(v: f64, min: f64, max: f64) -> usize {
    if v < min {
        return 0;
    }
    if v > max {
        return BINS + 1;
    }
    if max <= min {
        return 1;
    }
    let i = ((v - min) / (max - min) * BINS as f64) as usize;
    1 + i.min(BINS - 1)
}

impl Baseline {
    /// The statistics of training rows (raw features, NaN for missing).
    pub(crate) fn from_rows(rows: &[Vec<f64>], names: &[String]) -> Baseline {
        let features = names
            .iter()
            .enumerate()
            .map(|(j, name)| {
                let values = rows.iter().map(|r| r.get(j).copied().unwrap_or(f64::NAN));
                let (min, max) = values
                    .clone()
                    .filter(|v| !v.is_nan())
                    .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
                        (lo.min(v), hi.max(v))
                    });
                let (min, max) = if min > max { (0.0, 0.0) } else { (min, max) };
                let mut acc = Acc::default();
                values.for_each(|v| acc.add(v, min, max));
                FeatureBaseline {
                    name: name.clone(),
                    n: acc.n,
                    mean: acc.mean(),
                    std: acc.std(),
                    missing_rate: acc.missing as f64 / acc.n.max(1) as f64,
                    min,
                    max,
                    hist: acc.proportions(),
                }
            })
            .collect();
        Baseline { features }
    }
}

/// One feature's drift: the window's statistics beside the training ones.
#[derive(Debug, Clone, PartialEq)]
pub struct FeatureDrift {
    pub feature: String,
    pub n: u64,
    pub mean: f64,
    pub std: f64,
    pub missing_rate: f64,
    pub train_mean: f64,
    pub train_std: f64,
    pub(crate) train_missing_rate: f64,
    pub psi: f64,
    pub ks: f64,
    /// The training range the histograms' equal-width bins span.
    pub min: f64,
    pub max: f64,
    /// Proportions per bin (below the range, the [`BINS`] bins, above), in training and in the window.
    pub train_hist: Vec<f64>,
    pub live_hist: Vec<f64>,
}

/// Population stability index of `actual` against `expected` proportions.
pub(crate) fn psi(expected: &[f64], actual: &[f64]) -> f64 {
    expected
        .iter()
        .zip(actual)
        .map(|(&e, &a)| {
            let (e, a) = (e.max(EPSILON), a.max(EPSILON));
            (a - e) * (a / e).ln()
        })
        .sum()
}

/// The largest gap between the cumulative sums of two histograms.
pub(crate) fn ks(expected: &[f64], actual: &[f64]) -> f64 {
    let (mut ce, mut ca, mut d) = (0.0, 0.0, 0.0f64);
    for (&e, &a) in expected.iter().zip(actual) {
        ce += e;
        ca += a;
        d = d.max((ce - ca).abs());
    }
    d
}

#[derive(Debug)]
struct Slot {
    started: Instant,
    features: Vec<Acc>,
}

/// Windows kept side by side: a prediction adds to the first one free, so predictions on several threads do
/// not queue for one lock. A report merges them.
const LANES: usize = 4;

/// A deployed model's sliding window of the features it was fed.
#[derive(Debug)]
pub(crate) struct Monitor {
    baseline: Baseline,
    slot_len: Duration,
    lanes: [Mutex<VecDeque<Slot>>; LANES],
}

impl Monitor {
    /// A window of `window` (split into [`SLOTS`] slots) against `baseline`.
    pub(crate) fn new(baseline: Baseline, window: Duration) -> Monitor {
        Monitor {
            baseline,
            slot_len: (window / SLOTS as u32).max(Duration::from_millis(1)),
            lanes: Default::default(),
        }
    }

    /// Adds one prediction's raw features.
    pub(crate) fn observe(&self, x: &[f64]) {
        let now = Instant::now();
        let mut slots = self
            .lanes
            .iter()
            .find_map(|l| l.try_lock().ok())
            .unwrap_or_else(|| self.lanes[0].lock().unwrap_or_else(|e| e.into_inner()));
        if slots
            .back()
            .is_none_or(|s| now.duration_since(s.started) >= self.slot_len)
        {
            if slots.len() >= SLOTS {
                slots.pop_front();
            }
            slots.push_back(Slot {
                started: now,
                features: vec![Acc::default(); self.baseline.features.len()],
            });
        }
        let Some(slot) = slots.back_mut() else {
            return;
        };
        for ((acc, b), &v) in slot.features.iter_mut().zip(&self.baseline.features).zip(x) {
            acc.add(v, b.min, b.max);
        }
    }

    /// The window against the training statistics, per feature.
    pub(crate) fn report(&self) -> Vec<FeatureDrift> {
        let now = Instant::now();
        let horizon = self.slot_len * SLOTS as u32;
        let mut total = vec![Acc::default(); self.baseline.features.len()];
        for lane in &self.lanes {
            let slots = lane.lock().unwrap_or_else(|e| e.into_inner());
            for s in slots
                .iter()
                .filter(|s| now.duration_since(s.started) < horizon)
            {
                for (t, a) in total.iter_mut().zip(&s.features) {
                    t.merge(a);
                }
            }
        }
        self.baseline
            .features
            .iter()
            .zip(total)
            .map(|(b, acc)| {
                let live = acc.proportions();
                let seen = acc.present() > 0;
                FeatureDrift {
                    feature: b.name.clone(),
                    n: acc.n,
                    mean: acc.mean(),
                    std: acc.std(),
                    missing_rate: acc.missing as f64 / acc.n.max(1) as f64,
                    train_mean: b.mean,
                    train_std: b.std,
                    train_missing_rate: b.missing_rate,
                    psi: if seen { psi(&b.hist, &live) } else { 0.0 },
                    ks: if seen { ks(&b.hist, &live) } else { 0.0 },
                    min: b.min,
                    max: b.max,
                    train_hist: b.hist.clone(),
                    live_hist: live,
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic normal-ish values (sum of uniforms).
    fn stream(n: usize, shift: f64, seed: u64) -> Vec<f64> {
        let mut s = seed;
        let mut next = || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 11) as f64 / (1u64 << 53) as f64
        };
        (0..n)
            .map(|_| (0..12).map(|_| next()).sum::<f64>() - 6.0 + shift)
            .collect()
    }

    #[test]
    fn shifted_stream_drifts_and_a_fresh_sample_does_not() {
        let train: Vec<Vec<f64>> = stream(20_000, 0.0, 1)
            .into_iter()
            .map(|v| vec![v])
            .collect();
        let base = Baseline::from_rows(&train, &["x".into()]);
        assert!((base.features[0].mean).abs() < 0.05);
        assert!((base.features[0].std - 1.0).abs() < 0.05);
        let same = Monitor::new(base.clone(), Duration::from_secs(600));
        for v in stream(5000, 0.0, 2) {
            same.observe(&[v]);
        }
        let shifted = Monitor::new(base, Duration::from_secs(600));
        for v in stream(5000, 1.0, 3) {
            shifted.observe(&[v]);
        }
        let (s, d) = (&same.report()[0], &shifted.report()[0]);
        assert!(s.psi < 0.1, "{s:?}");
        assert!(d.psi > 0.2, "{d:?}");
        assert!(d.ks > s.ks);
        assert!((d.mean - 1.0).abs() < 0.05);
    }

    #[test]
    fn missing_values_and_the_window() {
        let base = Baseline::from_rows(
            &[vec![1.0], vec![f64::NAN], vec![3.0], vec![5.0]],
            &["x".into()],
        );
        let f = &base.features[0];
        assert_eq!((f.n, f.mean, f.missing_rate), (4, 3.0, 0.25));
        assert!((f.std - (8.0f64 / 3.0).sqrt()).abs() < 1e-12);
        assert_eq!(bin(1.0, 1.0, 5.0), 1);
        assert_eq!(bin(5.0, 1.0, 5.0), BINS);
        assert_eq!(bin(0.0, 1.0, 5.0), 0);
        assert_eq!(bin(6.0, 1.0, 5.0), BINS + 1);
        let m = Monitor::new(base, Duration::from_millis(50));
        m.observe(&[f64::NAN]);
        m.observe(&[2.0]);
        assert_eq!(m.report()[0].n, 2);
        std::thread::sleep(Duration::from_millis(80));
        assert_eq!(m.report()[0].n, 0, "observations leave the window");
    }
}
