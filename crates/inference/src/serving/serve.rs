//! Answering `pgml.*` queries in the proxy: deciding which calls Ocelot serves and dispatching them (training and
//! deploys are in `registry`, predictions with constant arguments in `constant`, whose common form is read here
//! without the SQL parser, per-row predictions in `per_row` and `rows`). Every other `pgml.*` call is passed to
//! the server unchanged.

use std::sync::Arc;

use bytes::BytesMut;

use crate::backend::Backend;
use crate::registry::deploy::{deploy_model, deploy_strategy};
use crate::registry::models::{refuse, Refusal};
use crate::registry::train::train;
use crate::serving::constant::{predict, predict_named};
use crate::sql::call::{find_calls, Arg, Call};
use ocelot_protocol::codes::sqlstate;
use ocelot_protocol::encode::{self, Severity};

pub use crate::serving::cache::Models;

/// Whether a simple Query may be a `pgml.*` call (a cheap test before parsing).
pub fn mentions_pgml(sql: &[u8]) -> bool {
    sql.windows(5).any(|w| w.eq_ignore_ascii_case(b"pgml."))
}

/// Notices for the client while a call runs (training progress), sent as they come.
pub type Progress = tokio::sync::mpsc::UnboundedSender<String>;

/// Where the reads of a per-row prediction go, and where progress is reported.
pub struct ReadRoute<'a> {
    /// The client's reads, under its session settings.
    pub rows: &'a dyn crate::backend::RowSource,
    pub progress: Option<Progress>,
}

/// Answers the simple Query `sql` when it is a `pgml.*` call Ocelot serves; `None` passes it to the server.
/// The answer ends before ReadyForQuery.
pub async fn serve(pool: &Arc<dyn Backend>, sql: &str, route: ReadRoute<'_>) -> Option<BytesMut> {
    // The common form, `SELECT pgml.predict('p', ARRAY[1, 2.5]::real[])`, is read without the SQL parser.
    if let Some(call) = fast_constant_predict(sql) {
        let mut out = BytesMut::new();
        let result = predict(pool, &call, &mut out).await;
        return Some(answered(result, out));
    }
    if let Some(plan) = crate::serving::per_row::plan(sql) {
        let mut out = BytesMut::new();
        let result = match plan {
            Ok(plan) => crate::serving::rows::per_row(pool, &plan, &route, &mut out).await,
            Err(why) => Err(refuse(
                sqlstate::FEATURE_NOT_SUPPORTED,
                format!("Ocelot cannot run this per-row prediction: {why}"),
            )),
        };
        return Some(answered(result, out));
    }
    let Some(call) = whole_call(sql) else {
        // Vector functions over table rows run on the servers: Ocelot's SQL versions are installed there first.
        if find_calls(sql).is_ok_and(|calls| {
            calls.iter().any(|c| {
                crate::serving::vector::is_vector_function(&c.function)
                    || crate::serving::vector::is_vector_aggregate(&c.function)
            })
        }) {
            crate::serving::vector::ensure_installed(pool).await;
        }
        return None;
    };
    let mut out = BytesMut::new();
    let result = run_call(pool, &call, sql, &route, &mut out).await?;
    Some(answered(result, out))
}

/// Writes a refusal in place of what an answer wrote before it failed.
fn answered(result: Result<(), Refusal>, mut out: BytesMut) -> BytesMut {
    if let Err(r) = result {
        out.clear();
        encode::error_response(&mut out, Severity::Error, r.code, &r.message, None);
    }
    out
}

/// Runs the whole-query call `call` of `sql`; `None` when Ocelot leaves it to the server.
async fn run_call(
    pool: &Arc<dyn Backend>,
    call: &Call,
    sql: &str,
    route: &ReadRoute<'_>,
    out: &mut BytesMut,
) -> Option<Result<(), Refusal>> {
    Some(match call.function.as_str() {
        "train" | "train_joint" => train(pool, call, route.progress.as_ref(), out).await,
        "load_dataset" => crate::registry::datasets::load_dataset(pool, call, out).await,
        "deploy"
            if call.args.len() == 1
                && call.args[0].0.as_deref().is_none_or(|n| n == "model_id") =>
        {
            deploy_model(pool, call, out).await
        }
        "deploy" => deploy_strategy(pool, call, out).await,
        "deploy_ab" => crate::ops::ab::deploy_ab(pool, call, out).await,
        "end_ab" => crate::ops::ab::serve_end_ab(pool, call, out).await,
        "drift" => drift_table(pool, call).await.map(|t| encode_table(out, &t)),
        "log_predictions" => crate::ops::logging::log_predictions(pool, call, out).await,
        "live_metrics" => crate::ops::logging::live_table(pool, call)
            .await
            .map(|t| encode_table(out, &t)),
        "chunk" if call.args.iter().all(|(_, a)| a.is_constant()) => {
            crate::serving::chunk::serve(call, out)
        }
        "embed" if call.args.iter().all(|(_, a)| a.is_constant()) => {
            let name = output_alias(sql).unwrap_or_else(|| call.function.clone());
            crate::serving::embed::serve(pool, call, &name, out).await
        }
        f if crate::serving::vector::is_vector_function(f)
            && call.args.iter().all(|(_, a)| a.is_constant()) =>
        {
            let name = output_alias(sql).unwrap_or_else(|| call.function.clone());
            crate::serving::vector::serve(call, &name, out)
        }
        "predict" | "predict_proba" | "predict_batch" | "predict_joint" | "decompose"
            if call.args.iter().all(|(_, a)| a.is_constant()) =>
        {
            predict_named(pool, call, output_alias(sql).as_deref(), out).await
        }
        _ => return None,
    })
}

/// A result Ocelot computes: its columns (name, type oid, length) and rows as text.
pub(crate) type ResultTable = (Vec<(&'static str, u32, i16)>, Vec<Vec<Option<String>>>);

/// Writes `table` as RowDescription, DataRows and CommandComplete.
pub(crate) fn encode_table(out: &mut BytesMut, (cols, rows): &ResultTable) {
    encode::row_description_typed(out, cols);
    for r in rows {
        encode::data_row_opt(out, r);
    }
    encode::command_complete(out, &format!("SELECT {}", rows.len()));
}

/// `pgml.drift(project_name)`: per feature of the deployed model, the window's statistics beside the training
/// data's, the population stability index and the KS distance (see `drift`).
pub(crate) async fn drift_table(
    pool: &Arc<dyn Backend>,
    call: &Call,
) -> Result<ResultTable, Refusal> {
    use crate::sql::params::{FLOAT8, INT8, TEXT};
    let args = crate::sql::call::bind(call, &[("project_name", None)])?;
    let project = crate::registry::train::text_arg(&args, "project_name")
        .ok_or_else(|| refuse("22004", "project_name must not be NULL"))?;
    let (model_id, report) = pool.models().drift_of(pool, &project).await?;
    let report = report.ok_or_else(|| {
        refuse(
            "22023",
            format!("model {model_id} of {project:?} has no training statistics: train it with Ocelot to monitor its drift"),
        )
    })?;
    let cols = vec![
        ("model_id", INT8, 8),
        ("feature", TEXT, -1),
        ("n", INT8, 8),
        ("mean", FLOAT8, 8),
        ("stddev", FLOAT8, 8),
        ("missing_rate", FLOAT8, 8),
        ("train_mean", FLOAT8, 8),
        ("train_stddev", FLOAT8, 8),
        ("train_missing_rate", FLOAT8, 8),
        ("psi", FLOAT8, 8),
        ("ks", FLOAT8, 8),
    ];
    let rows = report
        .into_iter()
        .map(|f| {
            [
                model_id.to_string(),
                f.feature,
                f.n.to_string(),
                f.mean.to_string(),
                f.std.to_string(),
                f.missing_rate.to_string(),
                f.train_mean.to_string(),
                f.train_std.to_string(),
                f.train_missing_rate.to_string(),
                f.psi.to_string(),
                f.ks.to_string(),
            ]
            .into_iter()
            .map(Some)
            .collect()
        })
        .collect();
    Ok((cols, rows))
}

/// The `pgml.*` call Ocelot serves when it is the whole query (`SELECT pgml.f(...)` or `SELECT * FROM
/// pgml.f(...)`): train, deploy, a predict function, chunk or a vector function.
pub(crate) fn whole_call(sql: &str) -> Option<Call> {
    let mut calls = find_calls(sql).ok()?;
    if calls.len() != 1 {
        return None;
    }
    let norm = sql.trim().trim_end_matches(';').to_ascii_lowercase();
    if !(norm.starts_with("select pgml.") || norm.starts_with("select * from pgml.")) {
        return None;
    }
    let call = calls.pop()?;
    (matches!(
        call.function.as_str(),
        "train"
            | "train_joint"
            | "load_dataset"
            | "deploy"
            | "deploy_ab"
            | "end_ab"
            | "drift"
            | "log_predictions"
            | "live_metrics"
            | "predict"
            | "predict_proba"
            | "predict_batch"
            | "predict_joint"
            | "decompose"
            | "chunk"
            | "embed"
    ) || crate::serving::vector::is_vector_function(&call.function))
    .then_some(call)
}

/// `SELECT pgml.predict(<'project' | model id>, ARRAY[<numbers>][::<type>[]]) [AS <name>][;]`, read by hand; `None`
/// for anything else (which then goes through the parser).
fn fast_constant_predict(sql: &str) -> Option<Call> {
    let mut s = sql.trim();
    if !(eat("select", &mut s)
        && s.starts_with(char::is_whitespace)
        && eat("pgml.predict", &mut s)
        && eat("(", &mut s))
    {
        return None;
    }
    let (target, rest) = constant_target(s.trim_start())?;
    s = rest;
    if !(eat(",", &mut s) && eat("array[", &mut s)) {
        return None;
    }
    let end = s.find(']')?;
    let items = number_items(&s[..end])?;
    s = &s[end + 1..];
    let t = s.trim_start();
    if let Some(r) = t.strip_prefix("::") {
        let close = r.find("[]")?;
        if !r[..close]
            .trim()
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b' ')
        {
            return None;
        }
        s = &r[close + 2..];
    }
    // Anything after the call, an alias included (it changes the column name), is the general path's.
    if !eat(")", &mut s) || !s.trim().trim_end_matches(';').trim().is_empty() {
        return None;
    }
    Some(Call {
        function: "predict".into(),
        args: vec![(None, target), (None, Arg::Array(items, None))],
    })
}

/// Consumes `word` (ASCII, any case) after leading white space; false when `s` does not start with it.
fn eat(word: &str, s: &mut &str) -> bool {
    let t = s.trim_start();
    if t.len() >= word.len() && t[..word.len()].eq_ignore_ascii_case(word) {
        *s = &t[word.len()..];
        true
    } else {
        false
    }
}

/// A quoted project name (without doubled quotes) or a model id at the start of `t`, and what follows.
fn constant_target(t: &str) -> Option<(Arg, &str)> {
    if let Some(r) = t.strip_prefix('\'') {
        let end = r.find('\'')?;
        if r[end + 1..].starts_with('\'') {
            return None;
        }
        return Some((Arg::Text(r[..end].to_owned()), &r[end + 1..]));
    }
    let end = t.find(|c: char| !c.is_ascii_digit())?;
    if end == 0 {
        return None;
    }
    Some((Arg::Number(t[..end].to_owned()), &t[end..]))
}

/// The numbers of an ARRAY[...] list; `None` when one is anything else.
fn number_items(list: &str) -> Option<Vec<Arg>> {
    let mut items = Vec::new();
    for item in list.split(',') {
        let v = item.trim();
        if v.is_empty()
            || !v
                .bytes()
                .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'+' | b'e' | b'E'))
            || v.parse::<f64>().is_err()
        {
            return None;
        }
        items.push(Arg::Number(v.to_owned()));
    }
    Some(items)
}

/// PostgreSQL's float4 output for a prediction.
pub(crate) fn float4_text(v: f32) -> String {
    let text = if v.is_finite() {
        format!("{v}")
    } else {
        String::new()
    };
    pg_float_text(v as f64, text, 1e6)
}

/// A `double precision` as PostgreSQL prints it (shortest round-trip digits).
pub(crate) fn float8_text(v: f64) -> String {
    let text = if v.is_finite() {
        format!("{v}")
    } else {
        String::new()
    };
    pg_float_text(v, text, 1e15)
}

/// PostgreSQL's float output around Rust's shortest digits `plain`: NaN and infinities by name, and exponent form
/// (signed, at least two digits) outside `1e-4 ..` `exp_from`.
fn pg_float_text(v: f64, plain: String, exp_from: f64) -> String {
    if v.is_nan() {
        return "NaN".into();
    }
    if v.is_infinite() {
        return if v > 0.0 { "Infinity" } else { "-Infinity" }.into();
    }
    let abs = v.abs();
    if abs != 0.0 && !(1e-4..exp_from).contains(&abs) {
        let digits: f64 = plain.parse().unwrap_or(v);
        let s = format!("{digits:e}");
        if let Some((m, e)) = s.split_once('e') {
            let e: i32 = e.parse().unwrap_or(0);
            return format!("{m}e{}{:02}", if e < 0 { '-' } else { '+' }, e.abs());
        }
    }
    plain
}

/// The column name of a one-item select list: its alias when it has one.
pub(crate) fn output_alias(sql: &str) -> Option<String> {
    use sqlparser::ast::{SelectItem, SetExpr, Statement};
    let statements =
        sqlparser::parser::Parser::parse_sql(&sqlparser::dialect::PostgreSqlDialect {}, sql)
            .ok()?;
    let [Statement::Query(q)] = statements.as_slice() else {
        return None;
    };
    let SetExpr::Select(s) = q.body.as_ref() else {
        return None;
    };
    match s.projection.as_slice() {
        [SelectItem::ExprWithAlias { alias, .. }] => Some(alias.value.clone()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_constant_predict_calls_by_hand() {
        let c =
            fast_constant_predict("SELECT pgml.predict('houses', ARRAY[100, 3.5, -1e2]::real[]);")
                .unwrap();
        assert_eq!(c.args[0].1, Arg::Text("houses".into()));
        assert_eq!(
            c.args[1].1,
            Arg::Array(
                vec![
                    Arg::Number("100".into()),
                    Arg::Number("3.5".into()),
                    Arg::Number("-1e2".into())
                ],
                None
            )
        );
        assert_eq!(
            fast_constant_predict("select pgml.predict(12, array[1])")
                .unwrap()
                .args[0]
                .1,
            Arg::Number("12".into())
        );
        for sql in [
            "SELECT pgml.predict('a''b', ARRAY[1])",
            "SELECT pgml.predict('p', ARRAY[x])",
            "SELECT pgml.predict('p', ARRAY[1]) AS score",
            "SELECT pgml.predict('p', ARRAY[1]) FROM t",
            "SELECT pgml.predict_proba('p', ARRAY[1])",
        ] {
            assert!(fast_constant_predict(sql).is_none(), "{sql}");
        }
    }
}
