//! Tests of the model cache.

use super::super::deploys::notification_payload;
use super::*;
use crate::estimators::linear::Linear;
use crate::registry::models::Estimator;

fn model() -> Model {
    Model {
        pre: Default::default(),
        estimator: Estimator::Linear(Linear {
            coef: vec![1.0],
            intercept: 0.0,
        }),
    }
}

#[test]
fn reads_the_payload_of_a_notification() {
    let mut m = vec![b'A', 0, 0, 0, 0];
    m.extend_from_slice(&7i32.to_be_bytes());
    m.extend_from_slice(b"ocelot_pgml_deploy\0houses\0");
    assert_eq!(notification_payload(&m).as_deref(), Some("houses"));
    assert_eq!(notification_payload(b"A\0\0"), None);
}

#[test]
fn evicts_the_least_recently_used_beyond_the_bound_and_keeps_counters() {
    let m = Models::new(250, DEFAULT_RECHECK, "models".into());
    let a = m.insert(1, "a".into(), "linear".into(), 100, model());
    m.insert(2, "b".into(), "linear".into(), 100, model());
    // Model 1 is used again, so model 2 is the least recently used when model 3 arrives.
    a.stats
        .last_use
        .store(m.clock.fetch_add(1, Ordering::Relaxed), Ordering::Relaxed);
    a.served(4, Duration::from_micros(20));
    m.insert(3, "c".into(), "xgboost".into(), 100, model());
    let rows = m.rows();
    let loaded: Vec<(i64, bool)> = rows.iter().map(|r| (r.model_id, r.loaded)).collect();
    assert_eq!(loaded, [(1, true), (2, false), (3, true)]);
    assert_eq!((rows[0].predictions, rows[0].mean_micros), (4, 5.0));
    assert_eq!(m.usage(), (200, 1));
    // A model larger than the bound is still served; it displaces everything else.
    m.insert(4, "d".into(), "random_forest".into(), 1000, model());
    assert_eq!(m.usage(), (1000, 3));
}
