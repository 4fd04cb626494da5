//! Joint regression (`pgml.train_joint`): several label columns predicted from the same features. Each target
//! gets an estimator of its own, fitted on the same rows and split (scikit-learn's linear models fit each
//! target independently too); `pgml.predict_joint` answers every target, in the order the labels were named.
//! Metrics are the mean over the targets, as scikit-learn's `multioutput='uniform_average'`.

use serde_json::{Map, Value};

use crate::estimators::algorithms;
use crate::registry::models::{refuse, Model, Refusal};

/// Features, their names, and each label's values.
pub(crate) type Separated = (Vec<Vec<f64>>, Vec<String>, Vec<Vec<f64>>);

/// Moves the label columns `labels` out of the features read from a relation (every column as a feature):
/// returns the features that remain, their names, and one vector of values per label.
pub(crate) fn split_labels(
    x: Vec<Vec<f64>>,
    names: Vec<String>,
    labels: &[String],
) -> Result<Separated, Refusal> {
    let mut at = Vec::with_capacity(labels.len());
    for label in labels {
        let i = names
            .iter()
            .position(|n| *n == label.to_lowercase() || n == label)
            .ok_or_else(|| {
                refuse(
                    "42703",
                    format!(
                        "Column `{label}` not found. Did you pass the correct `y_column_name`?"
                    ),
                )
            })?;
        at.push(i);
    }
    let mut ys = vec![Vec::with_capacity(x.len()); labels.len()];
    let mut rest = Vec::with_capacity(x.len());
    for row in x {
        for (k, &i) in at.iter().enumerate() {
            let v = row.get(i).copied().unwrap_or(f64::NAN);
            if v.is_nan() {
                return Err(refuse("22023", format!("The training data labels in \"{}\" contain NULL values. Consider filtering them out.", labels[k])));
            }
            ys[k].push(v);
        }
        rest.push(
            row.into_iter()
                .enumerate()
                .filter(|(i, _)| !at.contains(i))
                .map(|(_, v)| v)
                .collect(),
        );
    }
    let names = names
        .into_iter()
        .enumerate()
        .filter(|(i, _)| !at.contains(i))
        .map(|(_, n)| n)
        .collect();
    Ok((rest, names, ys))
}

/// The test metrics of a joint model: each target's, averaged; and the metric auto-deploy compares.
pub(crate) fn metrics(
    task: &str,
    model: &Model,
    x: &[Vec<f64>],
    truths: &[&[f64]],
) -> (Map<String, Value>, &'static str) {
    let predicted: Vec<Vec<f64>> = x
        .iter()
        .map(|r| model.predict_joint(r).unwrap_or_default())
        .collect();
    let mut sums: Map<String, Value> = Map::new();
    let mut target = "r2";
    for (k, truth) in truths.iter().enumerate() {
        let column: Vec<f64> = predicted
            .iter()
            .map(|p| p.get(k).copied().unwrap_or(f64::NAN))
            .collect();
        let (m, t) = algorithms::metrics(task, x, truth, &column);
        target = t;
        for (name, v) in m {
            let add = v.as_f64().unwrap_or(f64::NAN) / truths.len() as f64;
            let sum = sums.get(&name).and_then(Value::as_f64).unwrap_or(0.0);
            sums.insert(name, (sum + add).into());
        }
    }
    (sums, target)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_columns_leave_the_features() {
        let names = ["chins", "situps", "weight", "pulse"]
            .map(String::from)
            .to_vec();
        let x = vec![vec![1.0, 2.0, 3.0, 4.0], vec![5.0, 6.0, 7.0, 8.0]];
        let (rest, names, ys) = split_labels(x, names, &["pulse".into(), "weight".into()]).unwrap();
        assert_eq!(rest, vec![vec![1.0, 2.0], vec![5.0, 6.0]]);
        assert_eq!(names, ["chins", "situps"]);
        assert_eq!(ys, vec![vec![4.0, 8.0], vec![3.0, 7.0]]);
        assert!(split_labels(vec![], vec![], &["nope".into()]).is_err());
    }
}
