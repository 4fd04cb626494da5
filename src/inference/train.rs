//! `pgml.train`: reading the relation through the pool (from every shard), PostgresML's split, fitting in the
//! proxy, PostgresML's metrics, the registry rows, and auto-deploy when the new model scores at least as well.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use bytes::BytesMut;
use futures_util::future::join_all;

use super::algorithms::{self, Algo, Choice};
use super::call::{bind, train_params, Arg, Call};
use super::models::{refuse, registry_conn, sqlstate_of, value, Model, Refusal};
use super::preprocess::{check_missing, Preprocess};
use crate::pool::balance::Want;
use crate::pool::server::ServerConn;
use crate::pool::UserPool;
use crate::protocol::codes::sqlstate;
use crate::protocol::encode;
use crate::proxy::distributed;
use crate::proxy::fanout::{cells, fields, split_rows};
use crate::router::session_sql::{quote_literal, quote_name};

pub(super) fn text_arg(args: &BTreeMap<&str, Arg>, name: &str) -> Option<String> {
    args.get(name).and_then(|a| a.as_text()).map(str::to_owned)
}

/// A relation name as SQL: each dot-separated part quoted.
fn relation_sql(name: &str) -> String {
    name.split('.')
        .map(|p| quote_name(p.trim_matches('"')))
        .collect::<Vec<_>>()
        .join(".")
}

/// How often, at most, training reports its progress.
const PROGRESS_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

pub(super) async fn train(
    pool: &Arc<UserPool>,
    call: &Call,
    progress: Option<&super::serve::Progress>,
    out: &mut BytesMut,
) -> Result<(), Refusal> {
    let say = |msg: String| {
        if let Some(p) = progress {
            let _ = p.send(msg);
        }
    };
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
    let hyper = algorithms::hyperparams(text_arg(&args, "hyperparams").as_deref())
        .map_err(|e| refuse("22023", e))?;
    let algo = Algo::choose(&task, &algorithm, &hyper).map_err(|c| match c {
        Choice::Unsupported(m) => refuse(sqlstate::FEATURE_NOT_SUPPORTED, m),
        Choice::Invalid(m) => refuse("22023", m),
    })?;
    let algorithm = algo.recorded_name(&algorithm).to_owned();
    let relation = text_arg(&args, "relation_name").ok_or_else(|| {
        refuse(sqlstate::FEATURE_NOT_SUPPORTED, "training again from a project's last snapshot is not supported yet: pass relation_name and y_column_name")
    })?;
    let supervised = task != "clustering";
    let y_column = text_arg(&args, "y_column_name");
    if supervised && y_column.is_none() {
        return Err(refuse("22023", "You must pass a `y_column_name` when you pass a `relation_name` for a supervised task."));
    }
    let sampling = text_arg(&args, "test_sampling").unwrap_or_else(|| "stratified".into());
    let order = match sampling.as_str() {
        "last" => "",
        // Shuffled; for classification, stratified by label below.
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
    let (mut features, names, mut y) =
        read_relation(pool, &relation, y_column.as_deref(), order).await?;
    let n = features.len();
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
    if sampling == "stratified" && task == "classification" {
        super::split::stratify(&mut features, &mut y, n_test);
    }
    let spec = text_arg(&args, "preprocess").unwrap_or_else(|| "{}".into());
    let pre =
        Preprocess::fit(&spec, &names, &features[..n_train]).map_err(|e| refuse("22023", e))?;
    check_missing(&pre, &names, &features).map_err(|e| refuse("22023", e.to_string()))?;
    for row in features.iter_mut() {
        pre.apply(row).map_err(|e| refuse("22023", e.to_string()))?;
    }
    say(format!(
        "Ocelot: training {algorithm} for {task} on {n_train} rows of {} features ({n_test} test rows)",
        names.len()
    ));
    // Fitting can take seconds of CPU: off the async workers, so that every other client is still served.
    let reporter = progress.cloned();
    let label = algorithm.clone();
    let (features, y, fitted) = tokio::task::spawn_blocking(move || {
        let fit_started = Instant::now();
        let mut last = fit_started;
        let mut step = |done: usize, total: usize| {
            if done > 0 && last.elapsed() >= PROGRESS_EVERY {
                last = Instant::now();
                if let Some(r) = &reporter {
                    let _ = r.send(format!(
                        "Ocelot: {label} {done}/{total} ({}%), {:.1} s",
                        done * 100 / total.max(1),
                        fit_started.elapsed().as_secs_f64()
                    ));
                }
            }
        };
        let fitted = algo.fit(&features[..n_train], &y[..n_train.min(y.len())], &mut step);
        (features, y, fitted)
    })
    .await
    .map_err(|e| refuse(sqlstate::INTERNAL_ERROR, format!("training failed: {e}")))?;
    let estimator = fitted.map_err(|e| refuse("22023", e))?;
    let model = Model { pre, estimator };
    let fit_time = started.elapsed().as_secs_f64();
    let scored = Instant::now();
    let test = if n_test == 0 { 0..n_train } else { n_train..n };
    let tx = &features[test.clone()];
    let ty = y.get(test).unwrap_or_default();
    let predicted: Vec<f64> = tx.iter().map(|r| model.predict(r)).collect();
    let (mut metrics, target) = algorithms::metrics(&task, tx, ty, &predicted);
    metrics.insert("fit_time".into(), fit_time.into());
    metrics.insert("score_time".into(), scored.elapsed().as_secs_f64().into());
    let score = metrics
        .get(target)
        .and_then(|v| v.as_f64())
        .unwrap_or(f64::NEG_INFINITY);
    say(format!(
        "Ocelot: trained {algorithm} in {fit_time:.3} s; {target} = {score:.6} on the test split"
    ));
    let deployed = record(
        pool,
        &mut conn,
        Trained {
            project: &project,
            project_id: existing.as_deref().and_then(|e| e.split(':').next()),
            task: &task,
            relation: &relation,
            y_column: y_column.as_deref(),
            sampling: &sampling,
            test_size,
            samples: n,
            features: &names,
            algorithm: &algorithm,
            hyperparams: text_arg(&args, "hyperparams").unwrap_or_else(|| "{}".into()),
            model: &model,
            metrics,
            target,
            score,
            auto_deploy: args
                .get("automatic_deploy")
                .and_then(Arg::as_bool)
                .unwrap_or(true),
        },
    )
    .await?;
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

const NUMERIC_TYPES: &[u32] = &[16, 20, 21, 23, 700, 701, 1700];
/// Arrays of those (bool[], int8[], int2[], int4[], float4[], float8[], numeric[]): each element is a feature.
const NUMERIC_ARRAYS: &[u32] = &[1000, 1016, 1005, 1007, 1021, 1022, 1231];

/// One cell as a number: booleans are 0/1, NULL is NaN (missing, for the preprocessor to impute or refuse).
fn number(cell: Option<&[u8]>, column: &str) -> Result<f64, Refusal> {
    let Some(b) = cell else {
        return Ok(f64::NAN);
    };
    let t = std::str::from_utf8(b).unwrap_or_default();
    match t {
        "t" => Ok(1.0),
        "f" => Ok(0.0),
        "NULL" => Ok(f64::NAN),
        _ => t.parse::<f64>().map_err(|_| {
            refuse(
                "22023",
                format!("value {t:?} of \"{column}\" is not a number"),
            )
        }),
    }
}

/// The features and label (when `y_column` is named) of one shard's answer, appended to `x` and `y`; returns
/// the feature names (`column` or `column[i]` for array elements).
fn rows_of(
    answer: &distributed::Answer,
    relation: &str,
    y_column: Option<&str>,
    x: &mut Vec<Vec<f64>>,
    y: &mut Vec<f64>,
) -> Result<Option<Vec<String>>, Refusal> {
    let Some(rd) = answer.row_description.as_ref() else {
        return Ok(None);
    };
    let cols = fields(rd)
        .ok_or_else(|| refuse(sqlstate::INTERNAL_ERROR, "unexpected result description"))?;
    let y_idx = match y_column {
        None => None,
        Some(y_column) => Some(
            cols.iter()
                .position(|c| c.name == y_column.to_lowercase())
                .ok_or_else(|| {
                    refuse(
                "42703",
                format!("Column `{y_column}` not found. Did you pass the correct `y_column_name`?"),
            )
                })?,
        ),
    };
    for (i, c) in cols.iter().enumerate() {
        let array_ok = Some(i) != y_idx && NUMERIC_ARRAYS.contains(&c.oid);
        if !NUMERIC_TYPES.contains(&c.oid) && !array_ok {
            return Err(refuse(
                sqlstate::FEATURE_NOT_SUPPORTED,
                format!("column \"{}\" of {relation} is not numeric (type oid {}); Ocelot trains on numeric and boolean columns and arrays of them", c.name, c.oid),
            ));
        }
    }
    let mut names: Option<Vec<String>> = None;
    for raw in split_rows(&answer.rows) {
        let row = cells(raw).ok_or_else(|| refuse(sqlstate::INTERNAL_ERROR, "unexpected row"))?;
        let mut features = Vec::with_capacity(row.len());
        let mut row_names = Vec::new();
        for (i, cell) in row.iter().enumerate() {
            let name = &cols[i].name;
            if Some(i) == y_idx {
                let v = number(*cell, name)?;
                if v.is_nan() {
                    return Err(refuse("22023", format!("The training data labels in \"{name}\" contain NULL values. Consider filtering them out.")));
                }
                y.push(v);
            } else if NUMERIC_ARRAYS.contains(&cols[i].oid) {
                let text = cell
                    .map(|b| String::from_utf8_lossy(b).into_owned())
                    .unwrap_or_default();
                let inner = text.trim_start_matches('{').trim_end_matches('}');
                for (k, item) in inner.split(',').filter(|s| !s.is_empty()).enumerate() {
                    features.push(number(Some(item.as_bytes()), name)?);
                    if names.is_none() {
                        row_names.push(format!("{name}[{}]", k + 1));
                    }
                }
            } else {
                features.push(number(*cell, name)?);
                if names.is_none() {
                    row_names.push(name.clone());
                }
            }
        }
        match &names {
            None => names = Some(row_names),
            Some(n) if n.len() != features.len() => {
                return Err(refuse(
                    "22023",
                    format!("the rows of {relation} have different numbers of features ({} and {}): arrays used as features must all have the same length", n.len(), features.len()),
                ))
            }
            Some(_) => {}
        }
        x.push(features);
    }
    Ok(names)
}

/// Reads `relation` (from every shard, in parallel): the features (every column but `y_column`; numbers,
/// booleans and arrays of them) and the label when there is one.
async fn read_relation(
    pool: &Arc<UserPool>,
    relation: &str,
    y_column: Option<&str>,
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
        if let Some(n) = rows_of(&answer, relation, y_column, &mut features, &mut labels)? {
            if !names.is_empty() && n.len() != names.len() {
                return Err(refuse(
                    "22023",
                    format!("the shards of {relation} have different numbers of features"),
                ));
            }
            names = n;
        }
    }
    if features.is_empty() {
        return Err(refuse(
            "22023",
            format!("relation {relation} has no rows to train on"),
        ));
    }
    Ok((features, names, labels))
}

/// A model just fitted, with what the registry records about it.
struct Trained<'a> {
    project: &'a str,
    /// The project's id when it exists already.
    project_id: Option<&'a str>,
    task: &'a str,
    relation: &'a str,
    y_column: Option<&'a str>,
    sampling: &'a str,
    test_size: f64,
    samples: usize,
    features: &'a [String],
    algorithm: &'a str,
    hyperparams: String,
    model: &'a Model,
    metrics: serde_json::Map<String, serde_json::Value>,
    /// The metric auto-deploy compares, and the new model's value of it.
    target: &'static str,
    score: f64,
    auto_deploy: bool,
}

/// Writes the project (when new), snapshot, model, file and, when it wins, deployment rows; returns whether the
/// model was deployed.
async fn record(
    pool: &Arc<UserPool>,
    conn: &mut ServerConn,
    t: Trained<'_>,
) -> Result<bool, Refusal> {
    let Trained {
        project,
        task,
        relation,
        y_column,
        sampling,
        test_size,
        samples: n,
        features: names,
        algorithm,
        hyperparams,
        model,
        metrics,
        target,
        score,
        auto_deploy: auto,
        ..
    } = t;
    let bytes = serde_json::to_vec(model).unwrap_or_default();
    let columns = serde_json::to_string(names).unwrap_or_else(|_| "[]".into());
    let project_id = match t.project_id {
        Some(id) => id.to_owned(),
        None => value(
            conn,
            &format!(
                "INSERT INTO pgml.projects (name, task) VALUES ({}, {}::pgml.task) ON CONFLICT (name) DO UPDATE SET name = EXCLUDED.name RETURNING id",
                quote_literal(project),
                quote_literal(task)
            ),
        )
        .await?
        .unwrap_or_default(),
    };
    let snapshot_id = value(
        conn,
        &format!(
            "INSERT INTO pgml.snapshots (relation_name, y_column_name, test_size, test_sampling, status, columns, analysis) VALUES ({}, {}, {test_size}, {}::pgml.sampling, 'successful', {}::jsonb, {}::jsonb) RETURNING id",
            quote_literal(relation),
            y_column.map_or_else(|| "NULL".into(), |y| format!("ARRAY[{}]", quote_literal(y))),
            quote_literal(sampling),
            quote_literal(&columns),
            quote_literal(&format!("{{\"samples\": {n}}}")),
        ),
    )
    .await?
    .unwrap_or_default();
    let metrics_json = serde_json::Value::Object(metrics).to_string();
    let model_id = value(
        conn,
        &format!(
            "INSERT INTO pgml.models (project_id, snapshot_id, num_features, algorithm, runtime, hyperparams, status, metrics, search_params, search_args) VALUES ({project_id}, {snapshot_id}, {}, {}, 'rust', {}::jsonb, 'successful', {}::jsonb, '{{}}', '{{}}') RETURNING id",
            names.len(),
            quote_literal(algorithm),
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
    let current = value(
        conn,
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
        super::cache::announce(pool, conn, project).await?;
    }
    Ok(deployed)
}
