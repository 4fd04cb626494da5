//! Predictions with constant arguments: `pgml.predict`, `predict_proba`, `predict_joint`, `decompose` and
//! `predict_batch` of a project (its deployed model, or an A/B test's arm) or of a model id, over an array or a
//! `ROW(...)` of literals, answered without a server round trip once the model is cached.

use std::sync::Arc;

use bytes::BytesMut;

use crate::backend::Backend;
use crate::registry::models::{refuse, resolve_for, Refusal};
use crate::serving::per_row::Output;
use crate::serving::rows::output;
use crate::serving::serve::float4_text;
use crate::sql::call::{Arg, Call};
use ocelot_protocol::codes::sqlstate;
use ocelot_protocol::encode;

/// `pgml.predict_batch`: a flat array of rows × features; by project a set of `real`, by model id one `real[]`.
/// Returns the predictions it made.
fn predict_batch(
    model: &crate::registry::models::Model,
    mut x: Vec<f64>,
    set: bool,
    name: &str,
    out: &mut BytesMut,
) -> Result<Vec<f32>, Refusal> {
    let n = model.num_features().max(1);
    model.prepare(&mut x, false)?;
    if !x.len().is_multiple_of(n) {
        return Err(refuse(
            "22023",
            format!(
                "pgml.predict_batch got {} values, not a multiple of the model's {n} features",
                x.len()
            ),
        ));
    }
    let ys: Vec<f32> = x.chunks(n).map(|row| model.predict(row) as f32).collect();
    let predictions: Vec<String> = ys.iter().map(|y| float4_text(*y)).collect();
    if set {
        encode::row_description_typed(out, &[(name, 700, 4)]);
        for p in &predictions {
            encode::data_row_text(out, &[p]);
        }
        encode::command_complete(out, &format!("SELECT {}", predictions.len()));
    } else {
        encode::row_description_typed(out, &[(name, 1021, -1)]);
        encode::data_row_text(out, &[&format!("{{{}}}", predictions.join(","))]);
        encode::command_complete(out, "SELECT 1");
    }
    Ok(ys)
}

pub(crate) async fn predict(
    pool: &Arc<dyn Backend>,
    call: &Call,
    out: &mut BytesMut,
) -> Result<(), Refusal> {
    predict_named(pool, call, None, out).await
}

/// `pgml.predict_batch` with `chosen`'s model over the flat features `x`: counted, fed to drift and logged per
/// row.
fn serve_batch(
    pool: &Arc<dyn Backend>,
    chosen: &crate::serving::cache::Chosen,
    x: Vec<f64>,
    set: bool,
    name: &str,
    out: &mut BytesMut,
) -> Result<(), Refusal> {
    let started = std::time::Instant::now();
    let model = &chosen.model.model;
    let width = model.num_features().max(1);
    if !x.iter().any(|v| v.is_nan()) {
        for row in x.chunks(width) {
            chosen.model.observe(row);
        }
    }
    let raw = chosen.log.is_some().then(|| x.clone());
    let ys = predict_batch(model, x, set, name, out)?;
    chosen.served(ys.len() as u64, started.elapsed());
    let arm = chosen.ab.as_ref().map_or(0, |(_, a)| *a);
    for (row, y) in raw.iter().flat_map(|r| r.chunks(width)).zip(&ys) {
        if chosen.sample() {
            let key = crate::ops::ab::first_feature_key(row);
            chosen.record(pool, &chosen.model, arm, key, row.to_vec(), f64::from(*y));
        }
    }
    Ok(())
}

/// A predict-family call's arguments.
struct PredictArgs<'a> {
    /// The project name or model id.
    target: &'a Arg,
    /// The features came as a ROW(...) (NULLs imputed) rather than an array.
    row: bool,
    ab_key: Option<&'a Arg>,
    /// The features, NULL as NaN.
    x: Vec<f64>,
}

fn predict_args(call: &Call) -> Result<PredictArgs<'_>, Refusal> {
    // Ocelot's `ab_key => ...` argument names the entity an A/B test assigns; by default the first feature does.
    let (target, features, ab_key) =
        match call.args.as_slice() {
            [(_, target), (_, features)] => (target, features, None),
            [(_, target), (_, features), (Some(k), key)] if k == "ab_key" => {
                (target, features, Some(key))
            }
            _ => return Err(refuse(
                "42883",
                "function pgml.predict takes (project_name or model_id, features[, ab_key => key])",
            )),
        };
    let (items, row) = match features {
        Arg::Array(items, _) => (items, false),
        Arg::Row(items) => (items, true),
        _ => {
            return Err(refuse(
                sqlstate::FEATURE_NOT_SUPPORTED,
                "Ocelot serves pgml.predict with an array or a ROW(...) of features",
            ))
        }
    };
    let mut x = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        x.push(match item {
            Arg::Null => f64::NAN,
            a => a
                .as_f64()
                .ok_or_else(|| refuse("22023", format!("feature {} is not a number", i + 1)))?,
        });
    }
    if matches!(ab_key, Some(a) if !matches!(a, Arg::Text(_) | Arg::Number(_) | Arg::Null)) {
        return Err(refuse(
            sqlstate::FEATURE_NOT_SUPPORTED,
            "ab_key must be a constant text or number",
        ));
    }
    Ok(PredictArgs {
        target,
        row,
        ab_key,
        x,
    })
}

/// A predict-family call; `alias` names the result column instead of the function.
pub(crate) async fn predict_named(
    pool: &Arc<dyn Backend>,
    call: &Call,
    alias: Option<&str>,
    out: &mut BytesMut,
) -> Result<(), Refusal> {
    let name = alias.unwrap_or(call.function.as_str());
    let PredictArgs {
        target,
        row,
        ab_key,
        mut x,
    } = predict_args(call)?;
    // Only formatted when the project has an A/B test.
    let key = || match ab_key {
        Some(Arg::Text(t)) => Some(t.clone()),
        Some(Arg::Number(n)) => n.parse::<f64>().ok().map(crate::ops::ab::number_key),
        _ => crate::ops::ab::first_feature_key(&x),
    };
    let chosen = resolve_for(pool, target, &key).await?;
    let loaded = &chosen;
    let arm = loaded.ab.as_ref().map_or(0, |(_, a)| *a);
    if call.function == "predict_batch" {
        return serve_batch(pool, loaded, x, matches!(target, Arg::Text(_)), name, out);
    }
    let started = std::time::Instant::now();
    let model = &loaded.model.model;
    if x.len() != model.num_features() {
        return Err(refuse(
            "22023",
            format!(
                "the model expects {} features, got {}",
                model.num_features(),
                x.len()
            ),
        ));
    }
    // Drift counts what the model is fed: an array with a NULL is refused below, a ROW's NULL is imputed.
    if row || !x.iter().any(|v| v.is_nan()) {
        loaded.model.observe(&x);
    }
    let logged = (call.function == "predict" && loaded.sample()).then(|| (x.clone(), key()));
    model.prepare(&mut x, row)?;
    let array = match call.function.as_str() {
        "decompose" => Some(Output::Decompose),
        "predict_joint" => Some(Output::Joint),
        "predict_proba" => Some(Output::Proba),
        _ => None,
    };
    if let Some(kind) = array {
        let (_, text) = output(model, kind, &x)?;
        encode::row_description_typed(out, &[(name, 1021, -1)]);
        encode::data_row_text(out, &[&text]);
    } else {
        let y = model.predict(&x) as f32;
        encode::row_description_typed(out, &[(name, 700, 4)]);
        encode::data_row_text(out, &[&float4_text(y)]);
        if let Some((raw, key)) = logged {
            loaded.record(pool, &loaded.model, arm, key, raw, f64::from(y));
        }
    }
    encode::command_complete(out, "SELECT 1");
    loaded.served(1, started.elapsed());
    Ok(())
}
