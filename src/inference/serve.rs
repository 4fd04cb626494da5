//! Answering `pgml.*` queries in the proxy. So far: `pgml.train` for regression with the `linear` and `ridge`
//! algorithms (reading the relation through the pool, from every shard of a sharded pool), `pgml.deploy(model_id)`,
//! and `pgml.predict` with constant arguments (by project name or model id), served from a per-pool cache of
//! deployed models that re-checks the registry's latest deployment at most once a second. Everything else that
//! calls `pgml.*` is passed to the server unchanged.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use futures_util::future::join_all;

use super::call::{bind, find_calls, train_params, Arg, Call, CallError};
use super::linear::{regression_metrics, Linear};
use super::logistic::{classification_metrics, Logistic};
use super::registry;
use crate::pool::balance::Want;
use crate::pool::server::ServerConn;
use crate::pool::{PoolError, UserPool};
use crate::protocol::codes::sqlstate;
use crate::protocol::encode::{self, Severity};
use crate::proxy::distributed;
use crate::proxy::fanout::{cells, fields, split_rows};
use crate::router::session_sql::{quote_literal, quote_name};

/// How long a cached project → deployed model mapping is trusted before the registry is asked again.
const RECHECK: Duration = Duration::from_secs(1);

/// A model Ocelot trained, as stored in `pgml.files`.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind")]
pub enum Model {
    Linear(Linear),
    Logistic(Logistic),
}

impl Model {
    fn num_features(&self) -> usize {
        match self {
            Model::Linear(m) => m.coef.len(),
            Model::Logistic(m) => m.num_features(),
        }
    }

    fn predict(&self, x: &[f64]) -> f64 {
        match self {
            Model::Linear(m) => m.predict(x),
            Model::Logistic(m) => m.predict(x),
        }
    }
}

/// Deployed models of one pool, shared by its clients.
#[derive(Debug, Default)]
pub struct Models {
    by_project: Mutex<HashMap<String, (i64, Instant)>>,
    by_id: Mutex<HashMap<i64, Arc<Model>>>,
}

/// A failure answered to the client as an ErrorResponse.
#[derive(Debug)]
struct Refusal {
    code: &'static str,
    message: String,
}

fn refuse(code: &'static str, message: impl Into<String>) -> Refusal {
    Refusal {
        code,
        message: message.into(),
    }
}

impl From<PoolError> for Refusal {
    fn from(e: PoolError) -> Self {
        let code = match &e {
            PoolError::Query { fields, .. } => {
                return Refusal {
                    code: sqlstate_of(&fields.code),
                    message: fields.message.clone(),
                }
            }
            other => sqlstate_of(other.sqlstate()),
        };
        Refusal {
            code,
            message: e.to_string(),
        }
    }
}

impl From<CallError> for Refusal {
    fn from(e: CallError) -> Self {
        let code = match e {
            CallError::Parse(_) => "42601",
            _ => "42883",
        };
        refuse(code, e.to_string())
    }
}

/// A server's SQLSTATE as one of the static codes Ocelot reports (or the generic one).
fn sqlstate_of(code: &str) -> &'static str {
    const KNOWN: &[&str] = &[
        "42P01", "42703", "22023", "42883", "42501", "22P02", "23505", "53300", "08006", "0A000",
        "57P03", "57P01", "3D000", "28P01",
    ];
    KNOWN
        .iter()
        .find(|k| **k == code)
        .copied()
        .unwrap_or(sqlstate::INTERNAL_ERROR)
}

/// Whether a simple Query may be a `pgml.*` call (a cheap test before parsing).
pub fn mentions_pgml(sql: &[u8]) -> bool {
    sql.windows(5).any(|w| w.eq_ignore_ascii_case(b"pgml."))
}

/// Where the reads of a per-row prediction go.
pub struct ReadRoute<'a> {
    pub params: &'a crate::proxy::params::ClientParams,
    pub want: Want,
    pub primary_reads: bool,
}

/// Answers the simple Query `sql` when it is a `pgml.*` call Ocelot serves; `None` passes it to the server.
/// The answer ends before ReadyForQuery.
pub async fn serve(pool: &Arc<UserPool>, sql: &str, route: ReadRoute<'_>) -> Option<BytesMut> {
    // The common form, `SELECT pgml.predict('p', ARRAY[1, 2.5]::real[])`, is read without the SQL parser.
    if let Some(call) = fast_constant_predict(sql) {
        let mut out = BytesMut::new();
        if let Err(r) = predict(pool, &call, &mut out).await {
            out.clear();
            encode::error_response(&mut out, Severity::Error, r.code, &r.message, None);
        }
        return Some(out);
    }
    if let Some(plan) = super::per_row::plan(sql) {
        let mut out = BytesMut::new();
        let result = match plan {
            Ok(plan) => per_row(pool, &plan, &route, &mut out).await,
            Err(why) => Err(refuse(
                sqlstate::FEATURE_NOT_SUPPORTED,
                format!("Ocelot cannot run this per-row prediction: {why}"),
            )),
        };
        if let Err(r) = result {
            out.clear();
            encode::error_response(&mut out, Severity::Error, r.code, &r.message, None);
        }
        return Some(out);
    }
    let calls = find_calls(sql).ok()?;
    let [call] = calls.as_slice() else {
        return None;
    };
    // Only a call that is the whole query: `SELECT pgml.f(...)` or `SELECT * FROM pgml.f(...)`.
    let norm = sql.trim().trim_end_matches(';').to_ascii_lowercase();
    if !(norm.starts_with("select pgml.") || norm.starts_with("select * from pgml.")) {
        return None;
    }
    let mut out = BytesMut::new();
    let result = match call.function.as_str() {
        "train" => train(pool, call, &mut out).await,
        "deploy"
            if call.args.len() == 1
                && call.args[0].0.as_deref().is_none_or(|n| n == "model_id") =>
        {
            deploy_model(pool, call, &mut out).await
        }
        "deploy" => deploy_strategy(pool, call, &mut out).await,
        "predict" | "predict_proba" | "predict_batch" | "predict_joint"
            if call.args.iter().all(|(_, a)| a.is_constant()) =>
        {
            predict_named(pool, call, output_alias(sql).as_deref(), &mut out).await
        }
        _ => return None,
    };
    if let Err(r) = result {
        out.clear();
        encode::error_response(&mut out, Severity::Error, r.code, &r.message, None);
    }
    Some(out)
}

/// `SELECT pgml.predict(<'project' | model id>, ARRAY[<numbers>][::<type>[]]) [AS <name>][;]`, read by hand; `None`
/// for anything else (which then goes through the parser).
fn fast_constant_predict(sql: &str) -> Option<Call> {
    let mut s = sql.trim();
    let eat = |word: &str, s: &mut &str| -> bool {
        let t = s.trim_start();
        if t.len() >= word.len() && t[..word.len()].eq_ignore_ascii_case(word) {
            *s = &t[word.len()..];
            true
        } else {
            false
        }
    };
    if !(eat("select", &mut s)
        && s.starts_with(char::is_whitespace)
        && eat("pgml.predict", &mut s)
        && eat("(", &mut s))
    {
        return None;
    }
    let t = s.trim_start();
    let (target, rest) = if let Some(r) = t.strip_prefix('\'') {
        let end = r.find('\'')?;
        let name = &r[..end];
        if r[end + 1..].starts_with('\'') {
            return None;
        }
        (Arg::Text(name.to_owned()), &r[end + 1..])
    } else {
        let end = t.find(|c: char| !c.is_ascii_digit())?;
        if end == 0 {
            return None;
        }
        (Arg::Number(t[..end].to_owned()), &t[end..])
    };
    s = rest;
    if !(eat(",", &mut s) && eat("array[", &mut s)) {
        return None;
    }
    let end = s.find(']')?;
    let mut items = Vec::new();
    for item in s[..end].split(',') {
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
    if !eat(")", &mut s) {
        return None;
    }
    let mut rest = s.trim().trim_end_matches(';').trim();
    if eat("as", &mut rest) {
        let alias = rest.trim();
        if alias.is_empty()
            || !alias
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_')
        {
            return None;
        }
        // An alias changes the column name: leave it to the general path.
        return None;
    }
    if !rest.is_empty() {
        return None;
    }
    Some(Call {
        function: "predict".into(),
        args: vec![(None, target), (None, Arg::Array(items, None))],
    })
}

/// The model a predict call names: a project's deployed model, or a model by id.
async fn resolve_model(pool: &Arc<UserPool>, target: &Arg) -> Result<Arc<Model>, Refusal> {
    match target {
        Arg::Text(project) => Ok(pool.models.deployed(pool, project).await?.1),
        Arg::Number(n) => {
            let id: i64 = n
                .parse()
                .map_err(|_| refuse("22023", "model_id must be an integer"))?;
            pool.models.model(pool, id).await
        }
        _ => Err(refuse(
            "22004",
            "pgml.predict needs a project name or a model id",
        )),
    }
}

async fn registry_conn(pool: &Arc<UserPool>) -> Result<crate::pool::Pooled, Refusal> {
    let mut conn = pool.checkout(0, Want::Primary, true).await?;
    registry::ensure(&mut conn).await?;
    Ok(conn)
}

/// One value of a single-row, single-column query.
async fn value(conn: &mut ServerConn, sql: &str) -> Result<Option<String>, Refusal> {
    Ok(conn.query_value(sql).await?)
}

fn text_arg(args: &std::collections::BTreeMap<&str, Arg>, name: &str) -> Option<String> {
    args.get(name).and_then(|a| a.as_text()).map(str::to_owned)
}

/// A relation name as SQL: each dot-separated part quoted.
fn relation_sql(name: &str) -> String {
    name.split('.')
        .map(|p| quote_name(p.trim_matches('"')))
        .collect::<Vec<_>>()
        .join(".")
}

async fn train(pool: &Arc<UserPool>, call: &Call, out: &mut BytesMut) -> Result<(), Refusal> {
    let args = bind(call, &train_params())?;
    let project = text_arg(&args, "project_name")
        .ok_or_else(|| refuse("22023", "project_name must not be NULL"))?;
    let algorithm = text_arg(&args, "algorithm").unwrap_or_else(|| "linear".into());
    let mut conn = registry_conn(pool).await?;
    let existing = value(
        &mut conn,
        &format!(
            "SELECT id || ':' || task FROM pgml.projects WHERE name = {}",
            quote_literal(&project)
        ),
    )
    .await?;
    let task = match (text_arg(&args, "task"), &existing) {
        (None, None) => {
            return Err(refuse(
                "22023",
                format!("Project `{project}` does not exist. To create a new project, you must specify a `task`."),
            ))
        }
        (Some(t), Some(e)) if !e.ends_with(&format!(":{t}")) => {
            let have = e.split(':').nth(1).unwrap_or_default();
            return Err(refuse(
                "22023",
                format!("Project `\"{project}\"` already exists with a different task: `{have}`. Create a new project instead."),
            ));
        }
        (Some(t), _) => t,
        (None, Some(e)) => e.split(':').nth(1).unwrap_or_default().to_owned(),
    };
    enum Algo {
        Linear(f64),
        ElasticNet(f64, f64),
        Logistic(f64, usize),
    }
    let algo = match (task.as_str(), algorithm.as_str()) {
        ("regression", "linear") => Algo::Linear(0.0),
        ("regression", "ridge") => Algo::Linear(hyperparam(&args, "alpha").unwrap_or(1.0)),
        ("regression", "lasso") => Algo::ElasticNet(hyperparam(&args, "alpha").unwrap_or(1.0), 1.0),
        ("regression", "elastic_net") => Algo::ElasticNet(
            hyperparam(&args, "alpha").unwrap_or(1.0),
            hyperparam(&args, "l1_ratio").unwrap_or(0.5),
        ),
        ("classification", "linear" | "logistic_regression") => Algo::Logistic(
            hyperparam(&args, "C").unwrap_or(1.0),
            hyperparam(&args, "max_iter").map_or(3000, |v| v.max(1.0) as usize),
        ),
        _ => {
            return Err(refuse(
                sqlstate::FEATURE_NOT_SUPPORTED,
                format!("Ocelot does not train {algorithm} for {task} yet; supported so far: regression with linear, ridge, lasso or elastic_net, classification with linear or logistic_regression"),
            ))
        }
    };
    let relation = text_arg(&args, "relation_name").ok_or_else(|| {
        refuse(sqlstate::FEATURE_NOT_SUPPORTED, "training again from a project's last snapshot is not supported yet: pass relation_name and y_column_name")
    })?;
    let y_column = text_arg(&args, "y_column_name").ok_or_else(|| {
        refuse("22023", "You must pass a `y_column_name` when you pass a `relation_name` for a supervised task.")
    })?;
    let sampling = text_arg(&args, "test_sampling").unwrap_or_else(|| "stratified".into());
    let order = match sampling.as_str() {
        "last" => "",
        // PostgresML's stratified sampling partitions by every column, which amounts to a shuffle for regression.
        "random" | "stratified" => " ORDER BY random()",
        other => {
            return Err(refuse(
                "22P02",
                format!("invalid input value for enum pgml.sampling: \"{other}\""),
            ))
        }
    };
    let test_size = args.get("test_size").and_then(Arg::as_f64).unwrap_or(0.25);
    let started = Instant::now();
    let (features, names, y) = read_relation(pool, &relation, &y_column, order).await?;
    let n = y.len();
    let n_test = if test_size > 1.0 {
        test_size as usize
    } else {
        (n as f64 * test_size).round() as usize
    };
    if n_test >= n {
        return Err(refuse(
            "22023",
            format!("test_size = {test_size} is too large. There are only {n} samples."),
        ));
    }
    let n_train = n - n_test;
    let model = match algo {
        Algo::Linear(alpha) => Model::Linear(
            Linear::fit(&features[..n_train], &y[..n_train], alpha)
                .map_err(|e| refuse("22023", e.to_string()))?,
        ),
        Algo::ElasticNet(alpha, l1_ratio) => Model::Linear(
            Linear::fit_elastic_net(
                &features[..n_train],
                &y[..n_train],
                alpha,
                l1_ratio,
                hyperparam(&args, "max_iter").map_or(1000, |v| v.max(1.0) as usize),
                hyperparam(&args, "tol").unwrap_or(1e-4),
            )
            .map_err(|e| refuse("22023", e.to_string()))?,
        ),
        Algo::Logistic(c, max_iter) => Model::Logistic(
            Logistic::fit(&features[..n_train], &y[..n_train], c, max_iter).ok_or_else(|| {
                refuse(
                    "22023",
                    "classification needs at least two classes in the training split",
                )
            })?,
        ),
    };
    let fit_time = started.elapsed().as_secs_f64();
    let scored = Instant::now();
    let (tx, ty) = if n_test == 0 {
        (&features[..n_train], &y[..n_train])
    } else {
        (&features[n_train..], &y[n_train..])
    };
    let predicted: Vec<f64> = tx.iter().map(|r| model.predict(r)).collect();
    let (mut metrics, target) = match &model {
        Model::Linear(_) => (regression_metrics(ty, &predicted), "r2"),
        Model::Logistic(_) => (classification_metrics(ty, &predicted), "f1"),
    };
    metrics.insert("fit_time".into(), fit_time.into());
    metrics.insert("score_time".into(), scored.elapsed().as_secs_f64().into());
    let score = metrics
        .get(target)
        .and_then(|v| v.as_f64())
        .unwrap_or(f64::NEG_INFINITY);
    let hyperparams = text_arg(&args, "hyperparams").unwrap_or_else(|| "{}".into());
    let bytes = serde_json::to_vec(&model).unwrap_or_default();
    let columns = serde_json::to_string(&names).unwrap_or_else(|_| "[]".into());
    let project_id = match existing {
        Some(e) => e.split(':').next().unwrap_or_default().to_owned(),
        None => value(
            &mut conn,
            &format!(
                "INSERT INTO pgml.projects (name, task) VALUES ({}, {}::pgml.task) ON CONFLICT (name) DO UPDATE SET name = EXCLUDED.name RETURNING id",
                quote_literal(&project),
                quote_literal(&task)
            ),
        )
        .await?
        .unwrap_or_default(),
    };
    let snapshot_id = value(
        &mut conn,
        &format!(
            "INSERT INTO pgml.snapshots (relation_name, y_column_name, test_size, test_sampling, status, columns, analysis) VALUES ({}, ARRAY[{}], {test_size}, {}::pgml.sampling, 'successful', {}::jsonb, {}::jsonb) RETURNING id",
            quote_literal(&relation),
            quote_literal(&y_column),
            quote_literal(&sampling),
            quote_literal(&columns),
            quote_literal(&format!("{{\"samples\": {n}}}")),
        ),
    )
    .await?
    .unwrap_or_default();
    let metrics_json = serde_json::Value::Object(metrics).to_string();
    let model_id = value(
        &mut conn,
        &format!(
            "INSERT INTO pgml.models (project_id, snapshot_id, num_features, algorithm, runtime, hyperparams, status, metrics, search_params, search_args) VALUES ({project_id}, {snapshot_id}, {}, {}, 'rust', {}::jsonb, 'successful', {}::jsonb, '{{}}', '{{}}') RETURNING id",
            names.len(),
            quote_literal(&algorithm),
            quote_literal(&hyperparams),
            quote_literal(&metrics_json),
        ),
    )
    .await?
    .unwrap_or_default();
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    conn.run(&format!(
        "INSERT INTO pgml.files (model_id, path, part, data) VALUES ({model_id}, 'estimator.ocelot.json', 0, '\\x{hex}'::bytea)"
    ))
    .await?;
    // Deploy unless the deployed model scores better (ties deploy), as PostgresML does.
    let auto = args
        .get("automatic_deploy")
        .and_then(Arg::as_bool)
        .unwrap_or(true);
    let current = value(
        &mut conn,
        &format!(
            "SELECT (m.metrics->>'{target}') FROM pgml.deployments d JOIN pgml.models m ON m.id = d.model_id WHERE d.project_id = {project_id} ORDER BY d.created_at DESC, d.id DESC LIMIT 1"
        ),
    )
    .await?
    .and_then(|v| v.parse::<f64>().ok());
    let deployed = auto && current.is_none_or(|c| c <= score);
    if deployed {
        conn.run(&format!(
            "INSERT INTO pgml.deployments (project_id, model_id, strategy) VALUES ({project_id}, {model_id}, 'new_score')"
        ))
        .await?;
        pool.models.forget(&project);
    }
    encode::row_description_typed(
        out,
        &[
            ("project", 25, -1),
            ("task", 25, -1),
            ("algorithm", 25, -1),
            ("deployed", 16, 1),
        ],
    );
    encode::data_row_text(
        out,
        &[
            &project,
            &task,
            &algorithm,
            if deployed { "t" } else { "f" },
        ],
    );
    encode::command_complete(out, "SELECT 1");
    Ok(())
}

fn hyperparam(args: &std::collections::BTreeMap<&str, Arg>, key: &str) -> Option<f64> {
    let text = text_arg(args, "hyperparams")?;
    serde_json::from_str::<serde_json::Value>(&text)
        .ok()?
        .get(key)?
        .as_f64()
}

const NUMERIC_TYPES: &[u32] = &[16, 20, 21, 23, 700, 701, 1700];

/// Reads `relation` (from every shard, in parallel): the feature columns (every column but `y_column`, which must
/// all be numeric) and the label.
async fn read_relation(
    pool: &Arc<UserPool>,
    relation: &str,
    y_column: &str,
    order: &str,
) -> Result<(Vec<Vec<f64>>, Vec<String>, Vec<f64>), Refusal> {
    let sql = format!("SELECT * FROM {}{order}", relation_sql(relation));
    let mut q = BytesMut::new();
    encode::query(&mut q, &sql);
    let reads = join_all((0..pool.shards.len()).map(|shard| {
        let q = q.clone();
        async move {
            let mut conn = pool.checkout(shard, Want::Any, true).await?;
            distributed::exec(&mut conn, &q).await
        }
    }))
    .await;
    let mut features = Vec::new();
    let mut labels = Vec::new();
    let mut names: Vec<String> = Vec::new();
    for answer in reads {
        let answer = answer?;
        if let Some(e) = answer.error {
            let f = crate::protocol::decode::error_fields(&e[5..]).unwrap_or_default();
            return Err(Refusal {
                code: sqlstate_of(&f.code),
                message: f.message,
            });
        }
        let Some(rd) = answer.row_description.as_ref() else {
            continue;
        };
        let cols = fields(rd)
            .ok_or_else(|| refuse(sqlstate::INTERNAL_ERROR, "unexpected result description"))?;
        let y_idx = cols
            .iter()
            .position(|c| c.name == y_column.to_lowercase())
            .ok_or_else(|| {
                refuse(
                    "42703",
                    format!(
                        "Column `{y_column}` not found. Did you pass the correct `y_column_name`?"
                    ),
                )
            })?;
        for c in &cols {
            if !NUMERIC_TYPES.contains(&c.oid) {
                return Err(refuse(
                    sqlstate::FEATURE_NOT_SUPPORTED,
                    format!("column \"{}\" of {relation} is not numeric (type oid {}); Ocelot trains on numeric and boolean columns only so far", c.name, c.oid),
                ));
            }
        }
        names = cols
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != y_idx)
            .map(|(_, c)| c.name.clone())
            .collect();
        for raw in split_rows(&answer.rows) {
            let row =
                cells(raw).ok_or_else(|| refuse(sqlstate::INTERNAL_ERROR, "unexpected row"))?;
            let mut x = Vec::with_capacity(row.len().saturating_sub(1));
            for (i, cell) in row.iter().enumerate() {
                let v = match cell {
                    None if i == y_idx => {
                        return Err(refuse("22023", format!("The training data labels in \"{y_column}\" contain NULL values. Consider filtering them out.")))
                    }
                    None => {
                        return Err(refuse("22023", format!("missing values in column \"{}\"; Ocelot does not impute them yet", cols[i].name)))
                    }
                    Some(b) => {
                        let t = std::str::from_utf8(b).unwrap_or_default();
                        match t {
                            "t" => 1.0,
                            "f" => 0.0,
                            _ => t.parse::<f64>().map_err(|_| refuse("22023", format!("value {t:?} of \"{}\" is not a number", cols[i].name)))?,
                        }
                    }
                };
                if i == y_idx {
                    labels.push(v);
                } else {
                    x.push(v);
                }
            }
            features.push(x);
        }
    }
    if labels.is_empty() {
        return Err(refuse(
            "22023",
            format!("relation {relation} has no rows to train on"),
        ));
    }
    Ok((features, names, labels))
}

async fn deploy_model(
    pool: &Arc<UserPool>,
    call: &Call,
    out: &mut BytesMut,
) -> Result<(), Refusal> {
    let id = call.args[0]
        .1
        .as_f64()
        .filter(|v| v.fract() == 0.0)
        .ok_or_else(|| {
            refuse(
                sqlstate::FEATURE_NOT_SUPPORTED,
                "only pgml.deploy(model_id) is served by Ocelot so far",
            )
        })? as i64;
    let mut conn = registry_conn(pool).await?;
    let row = value(
        &mut conn,
        &format!("SELECT p.id || ':' || p.name || ':' || m.algorithm FROM pgml.models m JOIN pgml.projects p ON p.id = m.project_id WHERE m.id = {id}"),
    )
    .await?
    .ok_or_else(|| refuse("22023", format!("pgml.models WHERE id = {id} could not be loaded. Does it exist?")))?;
    let mut parts = row.splitn(3, ':');
    let (project_id, project, algorithm) = (
        parts.next().unwrap_or_default().to_owned(),
        parts.next().unwrap_or_default().to_owned(),
        parts.next().unwrap_or_default().to_owned(),
    );
    conn.run(&format!(
        "INSERT INTO pgml.deployments (project_id, model_id, strategy) VALUES ({project_id}, {id}, 'specific')"
    ))
    .await?;
    pool.models.forget(&project);
    encode::row_description_text(out, &["project", "strategy", "algorithm"]);
    encode::data_row_text(out, &[&project, "specific", &algorithm]);
    encode::command_complete(out, "SELECT 1");
    Ok(())
}

/// `pgml.deploy(project_name, strategy, algorithm)`: best_score, most_recent or rollback.
async fn deploy_strategy(
    pool: &Arc<UserPool>,
    call: &Call,
    out: &mut BytesMut,
) -> Result<(), Refusal> {
    let params = [
        ("project_name", None),
        ("strategy", None),
        ("algorithm", Some(Arg::Null)),
    ];
    let args = bind(call, &params)?;
    let project = text_arg(&args, "project_name")
        .ok_or_else(|| refuse("22004", "project_name must not be NULL"))?;
    let strategy =
        text_arg(&args, "strategy").ok_or_else(|| refuse("22004", "strategy must not be NULL"))?;
    let algorithm = text_arg(&args, "algorithm");
    let mut conn = registry_conn(pool).await?;
    let found = value(
        &mut conn,
        &format!(
            "SELECT id || ':' || task FROM pgml.projects WHERE name = {}",
            quote_literal(&project)
        ),
    )
    .await?
    .ok_or_else(|| {
        refuse(
            "22023",
            format!("Project named `{project}` does not exist."),
        )
    })?;
    let (project_id, task) = found.split_once(':').unwrap_or((&found, ""));
    let metric = if task == "classification" { "f1" } else { "r2" };
    let only = algorithm
        .as_deref()
        .map(|a| format!(" AND m.algorithm = {}", quote_literal(a)))
        .unwrap_or_default();
    let sql = match strategy.as_str() {
        // Ranked by the metric's value (PostgresML compares the JSON text, which misorders e.g. 0.9 and 0.10).
        "best_score" => format!(
            "SELECT m.id || ':' || m.algorithm FROM pgml.models m WHERE m.project_id = {project_id}{only} ORDER BY (m.metrics->>'{metric}')::float8 DESC NULLS LAST, m.id DESC LIMIT 1"
        ),
        "most_recent" => format!(
            "SELECT m.id || ':' || m.algorithm FROM pgml.models m WHERE m.project_id = {project_id}{only} ORDER BY m.created_at DESC, m.id DESC LIMIT 1"
        ),
        "rollback" => format!(
            "SELECT m.id || ':' || m.algorithm FROM pgml.models m JOIN pgml.deployments d ON d.model_id = m.id WHERE m.project_id = {project_id}{only} AND m.id <> (SELECT model_id FROM pgml.deployments WHERE project_id = {project_id} ORDER BY created_at DESC, id DESC LIMIT 1) ORDER BY d.created_at DESC, d.id DESC LIMIT 1"
        ),
        "new_score" | "specific" => return Err(refuse("22023", "invalid strategy")),
        other => {
            return Err(refuse(
                "22P02",
                format!("invalid input value for enum pgml.strategy: \"{other}\""),
            ))
        }
    };
    let chosen = value(&mut conn, &sql)
        .await?
        .ok_or_else(|| refuse("22023", "No qualified models exist for this deployment."))?;
    let (model_id, algorithm) = chosen.split_once(':').unwrap_or((&chosen, ""));
    conn.run(&format!(
        "INSERT INTO pgml.deployments (project_id, model_id, strategy) VALUES ({project_id}, {model_id}, {}::pgml.strategy)",
        quote_literal(&strategy)
    ))
    .await?;
    pool.models.forget(&project);
    encode::row_description_text(out, &["project", "strategy", "algorithm"]);
    encode::data_row_text(out, &[&project, &strategy, algorithm]);
    encode::command_complete(out, "SELECT 1");
    Ok(())
}

impl Models {
    fn forget(&self, project: &str) {
        self.by_project
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(project);
    }

    /// The deployed model of `project`, from the cache when it was checked within [`RECHECK`].
    async fn deployed(
        &self,
        pool: &Arc<UserPool>,
        project: &str,
    ) -> Result<(i64, Arc<Model>), Refusal> {
        let cached = self
            .by_project
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(project)
            .copied();
        let id = match cached {
            Some((id, at)) if at.elapsed() < RECHECK => id,
            _ => {
                let mut conn = registry_conn(pool).await?;
                let id = value(
                    &mut conn,
                    &format!(
                        "SELECT d.model_id FROM pgml.deployments d JOIN pgml.projects p ON p.id = d.project_id WHERE p.name = {} ORDER BY d.created_at DESC, d.id DESC LIMIT 1",
                        quote_literal(project)
                    ),
                )
                .await?
                .and_then(|v| v.parse::<i64>().ok())
                .ok_or_else(|| refuse("22023", format!("No deployed model exists for the project named: `{project}`")))?;
                self.by_project
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(project.to_owned(), (id, Instant::now()));
                id
            }
        };
        Ok((id, self.model(pool, id).await?))
    }

    async fn model(&self, pool: &Arc<UserPool>, id: i64) -> Result<Arc<Model>, Refusal> {
        if let Some(m) = self
            .by_id
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&id)
        {
            return Ok(m.clone());
        }
        let mut conn = registry_conn(pool).await?;
        let data = value(
            &mut conn,
            &format!("SELECT convert_from(data, 'UTF8') FROM pgml.files WHERE model_id = {id} AND path = 'estimator.ocelot.json' ORDER BY part LIMIT 1"),
        )
        .await?
        .ok_or_else(|| refuse("22023", format!("pgml.models WHERE id = {id} could not be loaded. Does it exist?")))?;
        let model: Model = serde_json::from_str(&data).map_err(|e| {
            refuse(
                sqlstate::INTERNAL_ERROR,
                format!("model {id} cannot be read: {e}"),
            )
        })?;
        let model = Arc::new(model);
        self.by_id
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, model.clone());
        Ok(model)
    }
}

/// PostgreSQL's float4 output for a prediction.
fn float4_text(v: f32) -> String {
    if v.is_nan() {
        return "NaN".into();
    }
    if v.is_infinite() {
        return if v > 0.0 { "Infinity" } else { "-Infinity" }.into();
    }
    let abs = v.abs();
    if abs != 0.0 && !(1e-4..1e6).contains(&abs) {
        // PostgreSQL writes large and small values in exponent form with a signed two-digit exponent.
        let s = format!("{v:e}");
        if let Some((m, e)) = s.split_once('e') {
            let e: i32 = e.parse().unwrap_or(0);
            return format!("{m}e{}{:02}", if e < 0 { '-' } else { '+' }, e.abs());
        }
    }
    format!("{v}")
}

/// The column name of a one-item select list: its alias when it has one.
fn output_alias(sql: &str) -> Option<String> {
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

async fn predict(pool: &Arc<UserPool>, call: &Call, out: &mut BytesMut) -> Result<(), Refusal> {
    predict_named(pool, call, None, out).await
}

/// A predict-family call; `alias` names the result column instead of the function.
async fn predict_named(
    pool: &Arc<UserPool>,
    call: &Call,
    alias: Option<&str>,
    out: &mut BytesMut,
) -> Result<(), Refusal> {
    let name = alias.unwrap_or(call.function.as_str());
    let [(_, target), (_, features)] = call.args.as_slice() else {
        return Err(refuse(
            "42883",
            "function pgml.predict takes (project_name or model_id, features)",
        ));
    };
    let Arg::Array(items, _) = features else {
        return Err(refuse(
            sqlstate::FEATURE_NOT_SUPPORTED,
            "Ocelot serves pgml.predict with an array of features so far",
        ));
    };
    let mut x = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        match item {
            Arg::Null => return Err(refuse("22004", format!("feature {} is NULL", i + 1))),
            a => x
                .push(a.as_f64().ok_or_else(|| {
                    refuse("22023", format!("feature {} is not a number", i + 1))
                })?),
        }
    }
    let model = resolve_model(pool, target).await?;
    if call.function == "predict_batch" {
        // A flat array of rows × features; the project overload returns a set, the model overload an array.
        let n = model.num_features().max(1);
        if x.len() % n != 0 {
            return Err(refuse(
                "22023",
                format!(
                    "pgml.predict_batch got {} values, not a multiple of the model's {n} features",
                    x.len()
                ),
            ));
        }
        let predictions: Vec<String> = x
            .chunks(n)
            .map(|row| float4_text(model.predict(row) as f32))
            .collect();
        if matches!(target, Arg::Text(_)) {
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
        return Ok(());
    }
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
    if call.function == "predict_joint" {
        let Model::Linear(m) = model.as_ref() else {
            return Err(refuse(
                "22023",
                "You can't predict joint probabilities for a classification model",
            ));
        };
        encode::row_description_typed(out, &[(name, 1021, -1)]);
        encode::data_row_text(
            out,
            &[&format!("{{{}}}", float4_text(m.predict(&x) as f32))],
        );
    } else if call.function == "predict_proba" {
        let Model::Logistic(m) = model.as_ref() else {
            return Err(refuse(
                "22023",
                "You can't predict probabilities for a regression model",
            ));
        };
        let p: Vec<String> = m
            .predict_proba(&x)
            .into_iter()
            .map(|v| float4_text(v as f32))
            .collect();
        encode::row_description_typed(out, &[(name, 1021, -1)]);
        encode::data_row_text(out, &[&format!("{{{}}}", p.join(","))]);
    } else {
        let y = model.predict(&x) as f32;
        encode::row_description_typed(out, &[(name, 700, 4)]);
        encode::data_row_text(out, &[&float4_text(y)]);
    }
    encode::command_complete(out, "SELECT 1");
    Ok(())
}

/// Fetches the rows of a per-row prediction (from every shard it needs) and answers with the predictions.
async fn per_row(
    pool: &Arc<UserPool>,
    plan: &super::per_row::PerRow,
    route: &ReadRoute<'_>,
    out: &mut BytesMut,
) -> Result<(), Refusal> {
    use crate::proxy::fanout::{run, Merge};
    use crate::router::fanout::Plan;
    let model = resolve_model(pool, &plan.target).await?;
    if plan.features.len() != model.num_features() {
        return Err(refuse(
            "22023",
            format!(
                "the model expects {} features, got {}",
                model.num_features(),
                plan.features.len()
            ),
        ));
    }
    // Which shards: the key's one, or every shard with rows (or order) merged.
    let (merge, shards, sql) = if pool.shards.len() <= 1 {
        (Merge::Rows, vec![0], plan.sql.clone())
    } else {
        match pool.sharder.from_query(&plan.sql, &[]) {
            crate::router::sharding::Shards::One(n) => (Merge::Rows, vec![n], plan.sql.clone()),
            _ => match pool
                .sharder
                .key()
                .map(|k| crate::router::fanout::plan(&plan.sql, k))
            {
                Some(Plan::Rows) | Some(Plan::NotSharded) | None => (
                    Merge::Rows,
                    (0..pool.shards.len()).collect(),
                    plan.sql.clone(),
                ),
                Some(Plan::Ordered(o)) => {
                    let sql = o.shard_sql.clone();
                    (Merge::Ordered(o), (0..pool.shards.len()).collect(), sql)
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
    let merged = run(
        pool,
        route.params,
        &requests,
        route.want,
        route.primary_reads,
        &merge,
        &[],
    )
    .await?;
    if merged.first() == Some(&crate::protocol::codes::backend::ERROR_RESPONSE) {
        out.extend_from_slice(&merged);
        return Ok(());
    }
    let Some(h) = crate::protocol::frame::Header::parse(&merged, u32::MAX)
        .ok()
        .flatten()
    else {
        return Err(refuse(
            sqlstate::INTERNAL_ERROR,
            "no answer from the servers",
        ));
    };
    let cols = fields(&merged[..h.total()])
        .ok_or_else(|| refuse(sqlstate::INTERNAL_ERROR, "unexpected result description"))?;
    let mut rows: Vec<(f32, Vec<Option<Vec<u8>>>)> = Vec::new();
    for raw in split_rows(&merged[h.total()..]) {
        if raw.first() != Some(&crate::protocol::codes::backend::DATA_ROW) {
            continue;
        }
        let c = cells(raw).ok_or_else(|| refuse(sqlstate::INTERNAL_ERROR, "unexpected row"))?;
        let mut x = Vec::with_capacity(plan.features.len());
        for &f in &plan.features {
            let v = c
                .get(f)
                .copied()
                .flatten()
                .ok_or_else(|| refuse("22004", "a feature of pgml.predict is NULL"))?;
            let t = std::str::from_utf8(v).unwrap_or_default();
            x.push(match t {
                "t" => 1.0,
                "f" => 0.0,
                _ => t
                    .parse::<f64>()
                    .map_err(|_| refuse("22023", format!("feature value {t:?} is not a number")))?,
            });
        }
        let y = model.predict(&x) as f32;
        let row = plan
            .outputs
            .iter()
            .map(|o| match o {
                None => Some(float4_text(y).into_bytes()),
                Some(i) => c.get(*i).copied().flatten().map(<[u8]>::to_vec),
            })
            .collect();
        rows.push((y, row));
    }
    if let Some(desc) = plan.order {
        // PostgreSQL sorts NaN above every number; NULL cannot occur.
        rows.sort_by(|a, b| {
            let o = a.0.total_cmp(&b.0);
            if desc {
                o.reverse()
            } else {
                o
            }
        });
    }
    let mut rd = BytesMut::new();
    let mut described: Vec<(String, u32, i16)> = Vec::new();
    for o in &plan.outputs {
        match o {
            None => described.push((plan.name.clone(), 700, 4)),
            Some(i) => {
                let f = &cols[*i];
                described.push((f.name.clone(), f.oid, -1));
            }
        }
    }
    let typed: Vec<(&str, u32, i16)> = described
        .iter()
        .map(|(n, o, l)| (n.as_str(), *o, *l))
        .collect();
    encode::row_description_typed(&mut rd, &typed);
    out.extend_from_slice(&rd);
    let mut n = 0;
    for (_, row) in rows
        .iter()
        .skip(plan.offset as usize)
        .take(plan.limit.map_or(usize::MAX, |l| l as usize))
    {
        encode::data_row_opt(
            out,
            &row.iter()
                .map(|c| c.as_ref().map(|b| String::from_utf8_lossy(b).into_owned()))
                .collect::<Vec<_>>(),
        );
        n += 1;
    }
    encode::command_complete(out, &format!("SELECT {n}"));
    Ok(())
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
