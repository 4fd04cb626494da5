//! Running a per-row prediction: the rewritten query goes to the key's shard or to every shard (rows
//! concatenated, or merged in order), each returned row is predicted (preprocessed first when the features came as
//! a `ROW(...)`), ORDER BY the prediction with its LIMIT and OFFSET is applied here, and the client's columns are
//! answered in its order with the prediction as `real`.

use std::sync::Arc;

use bytes::BytesMut;

use crate::backend::Backend;
use crate::registry::models::Model;
use crate::registry::models::{refuse, resolve_for, Refusal};
use crate::registry::relation::array_items;
use crate::serving::cache::Loaded;
use crate::serving::per_row::{Output, PerRow};
use crate::serving::serve::{float4_text, ReadRoute};
use crate::sql::call::Arg;
use ocelot_protocol::codes::{backend, sqlstate};
use ocelot_protocol::encode;
use ocelot_protocol::rows::{cells, fields, split_rows};
use ocelot_router::fanout::Plan;
use ocelot_router::merge::Merge;

/// A predicted row: the prediction and the client's columns (text, NULL as `None`).
type Row = (f32, Vec<Option<Vec<u8>>>);

/// Fetches the rows of a per-row prediction (from every shard it needs) and answers with the predictions.
pub(crate) async fn per_row(
    pool: &Arc<dyn Backend>,
    plan: &PerRow,
    route: &ReadRoute<'_>,
    out: &mut BytesMut,
) -> Result<(), Refusal> {
    if let Some(col) = plan.target_col {
        return per_row_by_column(pool, plan, col, route, out).await;
    }
    // With an A/B test, each row goes to the arm of its first feature; both models are loaded up front.
    let chosen = resolve_for(pool, &plan.target, || None).await?;
    let arm_b = match &chosen.ab {
        Some((ab, _)) => Some((ab.clone(), pool.models().model(pool, ab.model_b).await?)),
        None => None,
    };
    let loaded = &chosen.model;
    check_features(plan, &loaded.model)?;
    let merged = fetch(pool, plan, route).await?;
    let Some(h) = answer_header(&merged, out)? else {
        return Ok(());
    };
    let started = std::time::Instant::now();
    let b = arm_b.as_ref().map(|(ab, m)| (ab.as_ref(), m.as_ref()));
    let (mut rows, in_b) = predict(pool, &chosen, b, plan, &merged[h.total()..])?;
    let elapsed = started.elapsed();
    let n = rows.len() as u64;
    match &arm_b {
        Some((ab, b_model)) => {
            // The time is shared out by rows: the two models run interleaved.
            let share = |k: u64| elapsed.mul_f64(k as f64 / n.max(1) as f64);
            loaded.served(n - in_b, share(n - in_b));
            ab.served(0, n - in_b, share(n - in_b));
            b_model.served(in_b, share(in_b));
            ab.served(1, in_b, share(in_b));
        }
        None => loaded.served(n, elapsed),
    }
    sort(plan, &mut rows);
    answer(plan, &merged[..h.total()], &rows, out)
}

/// A per-row prediction whose model id comes with each row (`pgml.predict(model_id, ...)` over a join with
/// `pgml.models`): each distinct model is loaded once.
async fn per_row_by_column(
    pool: &Arc<dyn Backend>,
    plan: &PerRow,
    col: usize,
    route: &ReadRoute<'_>,
    out: &mut BytesMut,
) -> Result<(), Refusal> {
    let merged = fetch(pool, plan, route).await?;
    let Some(h) = answer_header(&merged, out)? else {
        return Ok(());
    };
    let mut models = std::collections::HashMap::new();
    let mut rows = Vec::new();
    for raw in split_rows(&merged[h.total()..]) {
        let Some(c) = cells(raw).filter(|_| raw.first() == Some(&backend::DATA_ROW)) else {
            continue;
        };
        let id = c
            .get(col)
            .copied()
            .flatten()
            .map(|v| String::from_utf8_lossy(v).into_owned())
            .ok_or_else(|| refuse("22004", "model_id must not be NULL"))?;
        if !models.contains_key(&id) {
            let chosen = resolve_for(pool, &Arg::Number(id.clone()), || None).await?;
            check_features(plan, &chosen.model.model)?;
            models.insert(id.clone(), chosen);
        }
        if let Some(chosen) = models.get(&id) {
            let started = std::time::Instant::now();
            rows.extend(predict(pool, chosen, None, plan, raw)?.0);
            chosen.model.served(1, started.elapsed());
        }
    }
    sort(plan, &mut rows);
    answer(plan, &merged[..h.total()], &rows, out)
}

/// Refuses a model whose feature count is not the call's (an array column is checked per row).
fn check_features(plan: &PerRow, model: &Model) -> Result<(), Refusal> {
    if !plan.spread && plan.features.len() != model.num_features() {
        return Err(refuse(
            "22023",
            format!(
                "the model expects {} features, got {}",
                model.num_features(),
                plan.features.len()
            ),
        ));
    }
    Ok(())
}

/// The header of the servers' RowDescription, or `None` when they answered with an error (passed on in `out`).
fn answer_header(
    merged: &[u8],
    out: &mut BytesMut,
) -> Result<Option<ocelot_protocol::frame::Header>, Refusal> {
    if merged.first() == Some(&backend::ERROR_RESPONSE) {
        out.extend_from_slice(merged);
        return Ok(None);
    }
    match ocelot_protocol::frame::Header::parse(merged, u32::MAX)
        .ok()
        .flatten()
    {
        Some(h) => Ok(Some(h)),
        None => Err(refuse(
            sqlstate::INTERNAL_ERROR,
            "no answer from the servers",
        )),
    }
}

/// ORDER BY the prediction. PostgreSQL sorts NaN above every number; NULL cannot occur.
fn sort(plan: &PerRow, rows: &mut [Row]) {
    if let Some(desc) = plan.order {
        rows.sort_by(|a, b| {
            let o = a.0.total_cmp(&b.0);
            if desc {
                o.reverse()
            } else {
                o
            }
        });
    }
}

/// The servers' answer to the rewritten query: from the key's shard, or from every shard, merged.
async fn fetch(
    pool: &Arc<dyn Backend>,
    plan: &PerRow,
    route: &ReadRoute<'_>,
) -> Result<BytesMut, Refusal> {
    let every = || (0..pool.shard_count()).collect::<Vec<_>>();
    let (merge, shards, sql) = if pool.shard_count() <= 1 {
        (Merge::Rows, vec![0], plan.sql.clone())
    } else {
        match pool.sharder().from_query(&plan.sql, &[]) {
            ocelot_router::sharding::Shards::One(n) => (Merge::Rows, vec![n], plan.sql.clone()),
            _ => match pool
                .sharder()
                .key()
                .map(|k| ocelot_router::fanout::plan(&plan.sql, k))
            {
                Some(Plan::Rows) | Some(Plan::NotSharded) | None => {
                    (Merge::Rows, every(), plan.sql.clone())
                }
                Some(Plan::Ordered(o)) => {
                    let sql = o.shard_sql.clone();
                    (Merge::Ordered(o), every(), sql)
                }
                _ => {
                    return Err(refuse(
                        sqlstate::FEATURE_NOT_SUPPORTED,
                        "Ocelot cannot merge the rows of this per-row prediction across shards",
                    ))
                }
            },
        }
    };
    let requests: Vec<(usize, bytes::Bytes)> = shards
        .iter()
        .map(|&s| {
            let mut q = BytesMut::new();
            encode::query(&mut q, &sql);
            (s, q.freeze())
        })
        .collect();
    Ok(route.rows.fan_out(&requests, &merge).await?)
}

/// Predicts each DataRow of `rows` (text format), keeping the client's columns.
/// Predicts every row with `model`, or with `b`'s model for the rows whose first feature its A/B test assigns to
/// arm B; logs the rows the project's logging samples. Returns the rows and how many went to B.
fn predict(
    pool: &Arc<dyn Backend>,
    chosen: &crate::serving::cache::Chosen,
    b: Option<(&crate::ops::ab::AbTest, &Loaded)>,
    plan: &PerRow,
    rows: &[u8],
) -> Result<(Vec<Row>, u64), Refusal> {
    let model = chosen.model.as_ref();
    let mut out = Vec::new();
    let mut in_b = 0;
    for raw in split_rows(rows) {
        if raw.first() != Some(&backend::DATA_ROW) {
            continue;
        }
        let c = cells(raw).ok_or_else(|| refuse(sqlstate::INTERNAL_ERROR, "unexpected row"))?;
        let mut x = Vec::with_capacity(plan.features.len());
        for &f in &plan.features {
            let t = c
                .get(f)
                .copied()
                .flatten()
                .map(|v| std::str::from_utf8(v).unwrap_or_default());
            match (t, plan.spread) {
                (Some(t), true) => {
                    for item in array_items(t) {
                        x.push(feature(Some(item))?);
                    }
                }
                (t, _) => x.push(feature(t)?),
            }
        }
        if plan.spread && x.len() != model.model.num_features() {
            return Err(refuse(
                "22023",
                format!(
                    "the model expects {} features, got an array of {}",
                    model.model.num_features(),
                    x.len()
                ),
            ));
        }
        let fed = match (b, x.first()) {
            (Some((ab, b_model)), Some(k)) if !k.is_nan() => {
                if ab.arm(crate::ops::ab::number_key(*k).as_bytes()) == 1 {
                    in_b += 1;
                    b_model
                } else {
                    model
                }
            }
            _ => model,
        };
        if plan.row || !x.iter().any(|v| v.is_nan()) {
            fed.observe(&x);
        }
        let logged = chosen.sample().then(|| x.clone());
        let arm = usize::from(!std::ptr::eq(fed, model));
        let model = &fed.model;
        model.prepare(&mut x, plan.row)?;
        let (y, text) = output(model, plan.output, &x)?;
        if let (Some(raw), Output::Predict) = (logged, plan.output) {
            let key = crate::ops::ab::first_feature_key(&raw);
            chosen.record(pool, fed, arm, key, raw, f64::from(y));
        }
        let mut text = Some(text.into_bytes());
        let row = plan
            .outputs
            .iter()
            .map(|o| match o {
                None => text.take(),
                Some(i) => c.get(*i).copied().flatten().map(<[u8]>::to_vec),
            })
            .collect();
        out.push((y, row));
    }
    Ok((out, in_b))
}

/// What one row gets: the prediction (the sort key) and its text, a `real` or a `real[]`.
pub(crate) fn output(model: &Model, kind: Output, x: &[f64]) -> Result<(f32, String), Refusal> {
    let array = |v: Vec<f64>| {
        let items: Vec<String> = v.into_iter().map(|v| float4_text(v as f32)).collect();
        format!("{{{}}}", items.join(","))
    };
    match kind {
        Output::Predict => {
            let y = model.predict(x) as f32;
            Ok((y, float4_text(y)))
        }
        Output::Proba => model
            .predict_proba(x)
            .map(|p| (0.0, array(p)))
            .ok_or_else(|| {
                refuse(
                    "22023",
                    "You can't predict probabilities for a regression model",
                )
            }),
        Output::Joint => model
            .predict_joint(x)
            .map(|p| (0.0, array(p)))
            .ok_or_else(|| {
                refuse(
                    "22023",
                    "You can't predict joint probabilities for a classification model",
                )
            }),
        Output::Decompose => model
            .decompose(x)
            .map(|p| (0.0, array(p)))
            .ok_or_else(|| refuse("22023", "pgml.decompose needs a decomposition model")),
    }
}

/// One feature's text as a number: NULL is missing (NaN), booleans are 0 and 1.
fn feature(t: Option<&str>) -> Result<f64, Refusal> {
    match t {
        None | Some("NULL") => Ok(f64::NAN),
        Some("t") => Ok(1.0),
        Some("f") => Ok(0.0),
        Some(t) => t
            .parse::<f64>()
            .map_err(|_| refuse("22023", format!("feature value {t:?} is not a number"))),
    }
}

/// The client's answer: its columns (`rd` is the servers' RowDescription), the rows within OFFSET and LIMIT.
fn answer(plan: &PerRow, rd: &[u8], rows: &[Row], out: &mut BytesMut) -> Result<(), Refusal> {
    let cols = fields(rd)
        .ok_or_else(|| refuse(sqlstate::INTERNAL_ERROR, "unexpected result description"))?;
    let mut described: Vec<(String, u32, i16)> = Vec::new();
    for o in &plan.outputs {
        match o {
            None => {
                let (oid, len) = plan.output.column_type();
                described.push((plan.name.clone(), oid, len));
            }
            Some(i) => {
                let f = cols
                    .get(*i)
                    .ok_or_else(|| refuse(sqlstate::INTERNAL_ERROR, "missing column"))?;
                described.push((f.name.clone(), f.oid, -1));
            }
        }
    }
    let typed: Vec<(&str, u32, i16)> = described
        .iter()
        .map(|(n, o, l)| (n.as_str(), *o, *l))
        .collect();
    encode::row_description_typed(out, &typed);
    let mut n = 0;
    for (_, row) in rows
        .iter()
        .skip(plan.offset as usize)
        .take(plan.limit.map_or(usize::MAX, |l| l as usize))
    {
        encode::data_row_raw(out, row);
        n += 1;
    }
    encode::command_complete(out, &format!("SELECT {n}"));
    Ok(())
}
