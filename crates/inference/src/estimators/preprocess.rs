//! PostgresML's `preprocess` argument for numeric columns: `{"<column>": {"impute": ..., "scale": ...}}`. The
//! statistics are taken from the training split and stored with the model. As in PostgresML, they are applied to
//! the training and test data and by the `predict(project, ROW(...))` overload; the array overloads feed the raw
//! values to the model.

use serde::{Deserialize, Serialize};

/// What one feature goes through: a missing value (NaN) is replaced by `impute`, then `(x - shift) / divisor`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Step {
    impute: Option<f64>,
    shift: f64,
    divisor: f64,
}

/// A fitted preprocessor; one step per feature, or none at all when nothing was asked for.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct Preprocess {
    steps: Vec<Step>,
    names: Vec<String>,
}

/// A feature with missing values and nothing to impute them with: PostgresML's message.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{count} missing values for {column}. You may provide a preprocessor to impute a value. e.g:\n\n pgml.train(\n    ...,\n    preprocess => '{{\n        \"{column}\": {{\"impute\": \"mean\"}}\n    }}'\n)")]
pub(crate) struct Missing {
    pub(crate) count: usize,
    pub(crate) column: String,
}

/// Sorted values at quantile `q` (nearest rank, as PostgresML's ventiles are taken).
fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let at = ((sorted.len() as f64 * q) as usize).min(sorted.len() - 1);
    sorted[at]
}

fn median(sorted: &[f64]) -> f64 {
    let n = sorted.len();
    match n {
        0 => 0.0,
        _ if n % 2 == 1 => sorted[n / 2],
        _ => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

fn mode(sorted: &[f64]) -> f64 {
    let mut best = (0usize, 0.0);
    let mut i = 0;
    while i < sorted.len() {
        let j = sorted[i..].iter().take_while(|v| **v == sorted[i]).count();
        if j > best.0 {
            best = (j, sorted[i]);
        }
        i += j;
    }
    best.1
}

/// The imputation and scaling of one feature column, from its JSON settings `col` and its training values.
fn fit_column(
    name: &str,
    col: Option<&serde_json::Map<String, serde_json::Value>>,
    values: impl Iterator<Item = f64>,
) -> Result<Step, String> {
    let get = |key: &str| -> Result<Option<&str>, String> {
        match col.and_then(|c| c.get(key)) {
            None => Ok(None),
            Some(serde_json::Value::String(s)) => Ok(Some(s)),
            Some(other) => Err(format!(
                "preprocess {key} of \"{name}\" must be a string, not {other}"
            )),
        }
    };
    match get("encode")? {
        None | Some("native") => {}
        Some(other) => {
            return Err(format!(
                "encode \"{other}\" is for text columns; \"{name}\" is numeric (only \"native\" applies)"
            ))
        }
    }
    let mut present: Vec<f64> = values.filter(|v| !v.is_nan()).collect();
    present.sort_by(|a, b| a.total_cmp(b));
    let n = present.len().max(1) as f64;
    let mean = present.iter().sum::<f64>() / n;
    let impute = match get("impute")? {
        None | Some("error") => None,
        Some("mean") => Some(mean),
        Some("median") => Some(median(&present)),
        Some("mode") => Some(mode(&present)),
        Some("min") => present.first().copied(),
        Some("max") => present.last().copied(),
        Some("zero") => Some(0.0),
        Some(other) => return Err(format!("unknown impute \"{other}\" for \"{name}\": use error, mean, median, mode, min, max or zero")),
    };
    // Scaling statistics are those of the values present; an imputed value is scaled like the others.
    let (shift, divisor) = match get("scale")? {
        None | Some("preserve") | Some("none") => (0.0, 1.0),
        Some("standard") => {
            let var = present.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n;
            (mean, var.sqrt())
        }
        Some("min_max") => {
            let (lo, hi) = (quantile(&present, 0.0), quantile(&present, 1.0));
            (lo, hi - lo)
        }
        Some("max_abs") => (
            0.0,
            present.iter().fold(0.0f64, |m, v| m.max(v.abs())),
        ),
        Some("robust") => (
            median(&present),
            quantile(&present, 0.75) - quantile(&present, 0.25),
        ),
        Some(other) => return Err(format!("unknown scale \"{other}\" for \"{name}\": use preserve, standard, min_max, max_abs or robust")),
    };
    let divisor = if divisor == 0.0 || !divisor.is_finite() {
        1.0
    } else {
        divisor
    };
    Ok(Step {
        impute,
        shift,
        divisor,
    })
}

impl Preprocess {
    /// Fits the steps `spec` (PostgresML's JSON) asks for over the training rows `x` with feature `names`.
    pub(crate) fn fit(spec: &str, names: &[String], x: &[Vec<f64>]) -> Result<Preprocess, String> {
        let spec: serde_json::Value =
            serde_json::from_str(spec).map_err(|e| format!("invalid preprocess JSON: {e}"))?;
        let Some(spec) = spec.as_object() else {
            return Err("preprocess must be a JSON object of column names".into());
        };
        if spec.is_empty() {
            return Ok(Preprocess::default());
        }
        for column in spec.keys() {
            if !names.iter().any(|n| n == column) {
                return Err(format!(
                    "preprocess names column \"{column}\", which is not a feature of the training data"
                ));
            }
        }
        let mut steps = Vec::with_capacity(names.len());
        for (j, name) in names.iter().enumerate() {
            let col = spec.get(name).and_then(|v| v.as_object());
            let values = x.iter().map(|r| r.get(j).copied().unwrap_or(f64::NAN));
            steps.push(fit_column(name, col, values)?);
        }
        Ok(Preprocess {
            steps,
            names: names.to_vec(),
        })
    }

    pub(crate) fn is_identity(&self) -> bool {
        self.steps.is_empty()
    }

    /// Applies the steps to one row in place; a missing value with no imputation is the error (count 1).
    pub(crate) fn apply(&self, x: &mut [f64]) -> Result<(), Missing> {
        for (j, (v, s)) in x.iter_mut().zip(&self.steps).enumerate() {
            if v.is_nan() {
                *v = s.impute.ok_or_else(|| Missing {
                    count: 1,
                    column: self.names.get(j).cloned().unwrap_or_default(),
                })?;
            }
            *v = (*v - s.shift) / s.divisor;
        }
        Ok(())
    }
}

/// Refuses rows with missing values where nothing imputes them, counting them per column as PostgresML reports.
pub(crate) fn check_missing(
    pre: &Preprocess,
    names: &[String],
    x: &[Vec<f64>],
) -> Result<(), Missing> {
    for (j, name) in names.iter().enumerate() {
        if pre.steps.get(j).is_some_and(|s| s.impute.is_some()) {
            continue;
        }
        let count = x.iter().filter(|r| r[j].is_nan()).count();
        if count > 0 {
            return Err(Missing {
                count,
                column: name.clone(),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names() -> Vec<String> {
        vec!["a".into(), "b".into()]
    }

    #[test]
    fn impute_then_scale_with_training_statistics() {
        let x = vec![
            vec![1.0, 10.0],
            vec![f64::NAN, 20.0],
            vec![3.0, 30.0],
            vec![5.0, 40.0],
        ];
        let p = Preprocess::fit(
            r#"{"a": {"impute": "mean", "scale": "standard"}, "b": {"scale": "min_max"}}"#,
            &names(),
            &x,
        )
        .unwrap();
        let mut row = vec![f64::NAN, 25.0];
        p.apply(&mut row).unwrap();
        // a: mean 3, population std sqrt(8/3); the missing value becomes the mean, so 0.
        assert_eq!(row[0], 0.0);
        assert_eq!(row[1], 0.5);
        let mut row = vec![5.0, 10.0];
        p.apply(&mut row).unwrap();
        assert!((row[0] - 2.0 / (8.0f64 / 3.0).sqrt()).abs() < 1e-12);
        assert_eq!(row[1], 0.0);
        // b has no imputation: a missing b is PostgresML's error.
        let e = p.apply(&mut [1.0, f64::NAN]).unwrap_err();
        assert_eq!(e.column, "b");
        assert!(e.to_string().starts_with("1 missing values for b."));
    }

    #[test]
    fn every_impute_and_scale() {
        let x: Vec<Vec<f64>> = [1.0, 2.0, 2.0, 7.0, f64::NAN]
            .iter()
            .map(|v| vec![*v, 0.0])
            .collect();
        let imputed = |how: &str| {
            let p = Preprocess::fit(&format!(r#"{{"a": {{"impute": "{how}"}}}}"#), &names(), &x)
                .unwrap();
            let mut r = vec![f64::NAN, 0.0];
            p.apply(&mut r).unwrap();
            r[0]
        };
        assert_eq!(imputed("mean"), 3.0);
        assert_eq!(imputed("median"), 2.0);
        assert_eq!(imputed("mode"), 2.0);
        assert_eq!(imputed("min"), 1.0);
        assert_eq!(imputed("max"), 7.0);
        assert_eq!(imputed("zero"), 0.0);
        let scaled = |how: &str, v: f64| {
            let p = Preprocess::fit(
                &format!(r#"{{"a": {{"impute": "zero", "scale": "{how}"}}}}"#),
                &names(),
                &x,
            )
            .unwrap();
            let mut r = vec![v, 0.0];
            p.apply(&mut r).unwrap();
            r[0]
        };
        assert_eq!(scaled("max_abs", 7.0), 1.0);
        assert_eq!(scaled("min_max", 4.0), 0.5);
        assert_eq!(scaled("preserve", 4.0), 4.0);
        assert_eq!(scaled("robust", 2.0), 0.0);
        // A constant column is left unscaled rather than divided by zero.
        let p = Preprocess::fit(r#"{"b": {"scale": "standard"}}"#, &names(), &x).unwrap();
        let mut r = vec![1.0, 0.0];
        p.apply(&mut r).unwrap();
        assert_eq!(r[1], 0.0);
    }

    #[test]
    fn bad_specs_and_missing_values_are_refused() {
        let x = vec![vec![1.0, f64::NAN], vec![2.0, f64::NAN]];
        for bad in [
            r#"{"c": {"scale": "standard"}}"#,
            r#"{"a": {"scale": "loud"}}"#,
            r#"{"a": {"impute": "guess"}}"#,
            r#"{"a": {"encode": "one_hot"}}"#,
            r#"[1]"#,
            "nope",
        ] {
            assert!(Preprocess::fit(bad, &names(), &x).is_err(), "{bad}");
        }
        let p = Preprocess::fit("{}", &names(), &x).unwrap();
        assert!(p.is_identity());
        let e = check_missing(&p, &names(), &x).unwrap_err();
        assert_eq!((e.count, e.column.as_str()), (2, "b"));
        let p = Preprocess::fit(r#"{"b": {"impute": "zero"}}"#, &names(), &x).unwrap();
        assert!(check_missing(&p, &names(), &x).is_ok());
    }
}
