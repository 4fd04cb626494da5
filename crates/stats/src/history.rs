//! The last hour of traffic for the dashboard's charts: every [`STEP`] a background task adds up the counters of
//! every server pool and model and keeps the rates since the step before, [`POINTS`] of them. The counters are
//! read where they live, as the exporter reads them; nothing on the query path knows about the history.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use super::Totals;

/// Time between points.
pub const STEP: Duration = Duration::from_secs(10);
/// Points kept: an hour.
pub(crate) const POINTS: usize = 360;

/// Traffic over one step.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Point {
    /// Seconds since the Unix epoch at the end of the step.
    pub at: u64,
    pub queries_per_s: f64,
    pub xacts_per_s: f64,
    /// Mean time per answered request, in microseconds (0 when none was).
    pub mean_query_us: f64,
    pub errors_per_s: f64,
    pub predictions_per_s: f64,
    /// Mean time per prediction, in microseconds.
    pub(crate) mean_prediction_us: f64,
}

/// Cumulative counters at one moment.
#[derive(Debug, Clone, Copy)]
pub struct Reading {
    pub when: Instant,
    pub(crate) totals: Totals,
    pub(crate) predictions: u64,
    pub(crate) prediction_nanos: u64,
}

impl Reading {
    pub fn now(totals: Totals, predictions: u64, prediction_nanos: u64) -> Reading {
        Reading {
            when: Instant::now(),
            totals,
            predictions,
            prediction_nanos,
        }
    }

    /// The rates from `before` to this reading.
    pub(crate) fn since(&self, before: &Reading) -> Point {
        let secs = self
            .when
            .duration_since(before.when)
            .as_secs_f64()
            .max(1e-3);
        let d = |a: u64, b: u64| a.saturating_sub(b) as f64;
        let (t, b) = (&self.totals, &before.totals);
        let queries = d(t.query_count, b.query_count);
        let predictions = d(self.predictions, before.predictions);
        Point {
            at: SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs(),
            queries_per_s: queries / secs,
            xacts_per_s: d(t.xact_count, b.xact_count) / secs,
            mean_query_us: if queries > 0.0 {
                d(t.query_time_us, b.query_time_us) / queries
            } else {
                0.0
            },
            errors_per_s: d(t.errors, b.errors) / secs,
            predictions_per_s: predictions / secs,
            mean_prediction_us: if predictions > 0.0 {
                d(self.prediction_nanos, before.prediction_nanos) / predictions / 1e3
            } else {
                0.0
            },
        }
    }
}

/// The points of the last hour and the reading the next one starts from.
#[derive(Debug, Default)]
pub struct History {
    inner: Mutex<(VecDeque<Point>, Option<Reading>)>,
}

impl History {
    /// Adds the point from the last reading to `now` (the first reading only starts the history).
    pub fn record(&self, now: Reading) {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(before) = inner.1 {
            if inner.0.len() >= POINTS {
                inner.0.pop_front();
            }
            let p = now.since(&before);
            inner.0.push_back(p);
        }
        inner.1 = Some(now);
    }

    /// The points so far, and a partial one from the last reading to `now` when it is a second or more later,
    /// so a chart has a line from the start.
    pub fn points(&self, now: Reading) -> Vec<Point> {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let mut points: Vec<Point> = inner.0.iter().copied().collect();
        if let Some(before) = &inner.1 {
            if now.when.duration_since(before.when) >= Duration::from_secs(1) {
                points.push(now.since(before));
            }
        }
        points
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_an_hour_of_rates() {
        let h = History::default();
        let t0 = Instant::now();
        let at = |i: u64, q: u64| Reading {
            when: t0 + STEP * i as u32,
            totals: Totals {
                query_count: q,
                query_time_us: q * 50,
                ..Totals::default()
            },
            predictions: 2 * q,
            prediction_nanos: 2 * q * 4_000,
        };
        h.record(at(0, 0));
        assert!(h.points(at(0, 0)).is_empty());
        for i in 1..=400 {
            h.record(at(i, i * 1000));
        }
        let points = h.points(at(400, 400_000));
        assert_eq!(points.len(), POINTS);
        for p in points {
            assert!((p.queries_per_s - 100.0).abs() < 1e-9, "{p:?}");
            assert!((p.mean_query_us - 50.0).abs() < 1e-9);
            assert!((p.predictions_per_s - 200.0).abs() < 1e-9);
            assert!((p.mean_prediction_us - 4.0).abs() < 1e-9);
        }
        // A partial point once a second has passed.
        assert_eq!(h.points(at(401, 401_000)).len(), POINTS + 1);
    }
}
