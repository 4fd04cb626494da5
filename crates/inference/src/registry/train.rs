//! `pgml.train`: the relation read through the pool (`relation`), PostgresML's split, preprocessing, fitting in
//! the proxy off the async workers with progress notices, PostgresML's metrics, the registry rows, and auto-deploy
//! when the new model scores at least as well.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use bytes::BytesMut;

use crate::backend::Backend;
use crate::backend::Conn;
use crate::estimators::algorithms::{self, Algo, Choice};
use crate::estimators::preprocess::{check_missing, Preprocess};
use crate::registry::models::{refuse, registry_conn, value, Estimator, Model, Refusal};
use crate::registry::relation::read_relation;
use crate::serving::serve::Progress;
use crate::sql::call::{bind, train_params, Arg, Call};
use ocelot_protocol::codes::sqlstate;
use ocelot_protocol::encode;
use ocelot_router::session_sql::quote_literal;

pub(crate) fn text_arg(args: &BTreeMap<&str, Arg>, name: &str) -> Option<String> {
    args.get(name).and_then(|a| a.as_text()).map(str::to_owned)
}

pub(crate) async fn train(
    pool: &Arc<dyn Backend>,
    call: &Call,
    progress: Option<&Progress>,
    out: &mut BytesMut,
) -> Result<(), Refusal> {
    let say = |msg: String| progress.map(|p| p.send(msg));
    let args = bind(call, &train_params())?;
    let project = text_arg(&args, "project_name")
        .ok_or_else(|| refuse("22023", "project_name must not be NULL"))?;
    let mut conn = registry_conn(pool).await?;
    // `id:task` of the project when it exists.
    let sql = format!(
        "SELECT id || ':' || task FROM pgml.projects WHERE name = {}",
        quote_literal(&project)
    );
    let existing = value(&mut *conn, &sql).await?;
    let task = resolve_task(&project, text_arg(&args, "task"), existing.as_deref())?;
    let (algo, algorithm) = choose_algorithm(&args, &task)?;
    let project_id = existing.as_deref().and_then(|e| e.split(':').next());
    let joint = call.function == "train_joint";
    let Source {
        relation,
        labels,
        sampling,
        test_size,
        snapshot_id,
    } = source(&args, &mut *conn, project_id, &task, joint).await?;
    let started = Instant::now();
    let (features, names, ys) =
        read_labelled(pool, &relation, &labels, sampling_order(&sampling)?, joint).await?;
    // What drift monitoring compares the features fed to the model with (raw, before preprocessing).
    let baseline = crate::ops::drift::Baseline::from_rows(&features, &names);
    let stratified = sampling == "stratified" && task == "classification";
    let mut data = Split::labelled(features, ys, test_size, stratified)?;
    let spec = text_arg(&args, "preprocess");
    let pre = data.preprocess(spec.as_deref().unwrap_or("{}"), &names)?;
    say(format!(
        "Ocelot: training {algorithm} for {task} on {} rows of {} features ({} test rows)",
        data.n_train,
        names.len(),
        data.n_test
    ));
    let (data, estimator) = fit_off_thread(algo, data, &algorithm, progress).await?;
    let model = Model { pre, estimator };
    let fit_time = started.elapsed().as_secs_f64();
    let (metrics, target, score) = scored(&task, &model, &data, fit_time);
    say(format!(
        "Ocelot: trained {algorithm} in {fit_time:.3} s; {target} = {score:.6} on the test split"
    ));
    let deployed = record(
        pool,
        &mut *conn,
        Trained {
            project: &project,
            project_id,
            snapshot_id: snapshot_id.as_deref(),
            task: &task,
            relation: &relation,
            labels: &labels,
            sampling: &sampling,
            test_size,
            samples: data.x.len(),
            features: &names,
            baseline: &baseline,
            algorithm: &algorithm,
            hyperparams: text_arg(&args, "hyperparams").unwrap_or_else(|| "{}".into()),
            model: &model,
            metrics,
            target,
            score,
            auto_deploy: args.get("automatic_deploy").and_then(Arg::as_bool) != Some(false),
        },
    )
    .await?;
    answer(out, &project, &task, &algorithm, deployed);
    Ok(())
}

/// pgml.train's one row, as PostgresML returns it.
fn answer(out: &mut BytesMut, project: &str, task: &str, algorithm: &str, deployed: bool) {
    encode::row_description_typed(
        out,
        &[
            ("project", 25, -1),
            ("task", 25, -1),
            ("algorithm", 25, -1),
            ("deployed", 16, 1),
        ],
    );
    let deployed = if deployed { "t" } else { "f" };
    encode::data_row_text(out, &[project, task, algorithm, deployed]);
    encode::command_complete(out, "SELECT 1");
}

/// The relation's features, their names and the label columns' values (one list per label; several for a
/// joint model).
async fn read_labelled(
    pool: &Arc<dyn Backend>,
    relation: &str,
    labels: &[String],
    order: &str,
    joint: bool,
) -> Result<crate::registry::joint::Separated, Refusal> {
    if joint {
        let (x, names, _) = read_relation(pool, relation, None, order).await?;
        crate::registry::joint::split_labels(x, names, labels)
    } else {
        let (x, names, y) =
            read_relation(pool, relation, labels.first().map(String::as_str), order).await?;
        Ok((x, names, vec![y]))
    }
}

/// PostgresML's metrics of `model` on the test split with the fit and score times, the one that decides
/// deployment, and its value.
fn scored(
    task: &str,
    model: &Model,
    data: &Split,
    fit_time: f64,
) -> (
    serde_json::Map<String, serde_json::Value>,
    &'static str,
    f64,
) {
    let started = Instant::now();
    let (mut metrics, target) = test_metrics(task, model, data);
    metrics.insert("fit_time".into(), fit_time.into());
    metrics.insert("score_time".into(), started.elapsed().as_secs_f64().into());
    let score = metrics
        .get(target)
        .and_then(|v| v.as_f64())
        .unwrap_or(f64::NEG_INFINITY);
    (metrics, target, score)
}

/// PostgresML's metrics of `model` on the test split, and the one that decides deployment.
fn test_metrics(
    task: &str,
    model: &Model,
    data: &Split,
) -> (serde_json::Map<String, serde_json::Value>, &'static str) {
    let (tx, ty) = data.test();
    if let Estimator::Pca(p) = &model.estimator {
        let mut m = serde_json::Map::new();
        let kept: f64 = p.explained_variance_ratio.iter().sum();
        m.insert("cumulative_explained_variance".into(), kept.into());
        (m, "cumulative_explained_variance")
    } else if data.more_targets.is_empty() {
        let predicted: Vec<f64> = tx.iter().map(|r| model.predict(r)).collect();
        algorithms::metrics(task, tx, ty, &predicted)
    } else {
        let mut truths = vec![ty];
        truths.extend(data.more_targets.iter().map(|y| data.test_labels(y)));
        crate::registry::joint::metrics(task, model, tx, &truths)
    }
}

/// The estimator the arguments ask for on `task`, and the name the registry records for it.
fn choose_algorithm(args: &BTreeMap<&str, Arg>, task: &str) -> Result<(Algo, String), Refusal> {
    let algorithm = text_arg(args, "algorithm").unwrap_or_else(|| "linear".into());
    let hyper = algorithms::hyperparams(text_arg(args, "hyperparams").as_deref())
        .map_err(|e| refuse("22023", e))?;
    let algo = Algo::choose(task, &algorithm, &hyper).map_err(|c| match c {
        Choice::Unsupported(m) => refuse(sqlstate::FEATURE_NOT_SUPPORTED, m),
        Choice::Invalid(m) => refuse("22023", m),
    })?;
    let recorded = algo.recorded_name(&algorithm).to_owned();
    Ok((algo, recorded))
}

/// The project's task: the one given, which must match an existing project's, or the existing project's.
fn resolve_task(
    project: &str,
    given: Option<String>,
    existing: Option<&str>,
) -> Result<String, Refusal> {
    match (given, existing) {
        (None, None) => Err(refuse(
            "22023",
            format!("Project `{project}` does not exist. To create a new project, you must specify a `task`."),
        )),
        (Some(t), Some(e)) if !e.ends_with(&format!(":{t}")) => {
            let have = e.split(':').nth(1).unwrap_or_default();
            Err(refuse(
                "22023",
                format!("Project `\"{project}\"` already exists with a different task: `{have}`. Create a new project instead."),
            ))
        }
        (Some(t), _) => Ok(t),
        (None, Some(e)) => Ok(e.split(':').nth(1).unwrap_or_default().to_owned()),
    }
}

/// How the relation is read for `test_sampling`: in its order for `last`, shuffled otherwise (and, for
/// classification, stratified by label afterwards).
fn sampling_order(sampling: &str) -> Result<&'static str, Refusal> {
    match sampling {
        "last" => Ok(""),
        "random" | "stratified" => Ok(" ORDER BY random()"),
        other => Err(refuse(
            "22P02",
            format!("invalid input value for enum pgml.sampling: \"{other}\""),
        )),
    }
}

/// The rows read, the first `n_train` of them for training and the last `n_test` for testing.
struct Split {
    x: Vec<Vec<f64>>,
    y: Vec<f64>,
    /// The other targets of a joint regression, row for row with `y`.
    more_targets: Vec<Vec<f64>>,
    n_train: usize,
    n_test: usize,
}

impl Split {
    /// Splits rows that have one list of labels per target (the first is `y`), stratified by `y` when asked.
    fn labelled(
        x: Vec<Vec<f64>>,
        mut ys: Vec<Vec<f64>>,
        test_size: f64,
        stratified: bool,
    ) -> Result<Split, Refusal> {
        let y = if ys.is_empty() {
            Vec::new()
        } else {
            ys.remove(0)
        };
        let mut data = Split::new(x, y, test_size)?;
        data.more_targets = ys;
        if stratified {
            crate::estimators::split::stratify(&mut data.x, &mut data.y, data.n_test);
        }
        Ok(data)
    }

    fn new(x: Vec<Vec<f64>>, y: Vec<f64>, test_size: f64) -> Result<Split, Refusal> {
        let n = x.len();
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
        Ok(Split {
            x,
            y,
            more_targets: Vec::new(),
            n_train: n - n_test,
            n_test,
        })
    }

    /// Fits the preprocessing on the training rows and applies it to every row.
    fn preprocess(&mut self, spec: &str, names: &[String]) -> Result<Preprocess, Refusal> {
        let pre = Preprocess::fit(spec, names, &self.x[..self.n_train])
            .map_err(|e| refuse("22023", e))?;
        check_missing(&pre, names, &self.x).map_err(|e| refuse("22023", e.to_string()))?;
        for row in self.x.iter_mut() {
            pre.apply(row).map_err(|e| refuse("22023", e.to_string()))?;
        }
        Ok(pre)
    }

    /// The test rows and labels (the training rows when there is no test split).
    fn test(&self) -> (&[Vec<f64>], &[f64]) {
        let rows = self.test_rows();
        (&self.x[rows.clone()], self.y.get(rows).unwrap_or_default())
    }

    /// The test split of another target's labels.
    fn test_labels<'a>(&self, y: &'a [f64]) -> &'a [f64] {
        y.get(self.test_rows()).unwrap_or_default()
    }

    fn test_rows(&self) -> std::ops::Range<usize> {
        if self.n_test == 0 {
            0..self.n_train
        } else {
            self.n_train..self.x.len()
        }
    }
}

/// How often, at most, training reports its progress.
const PROGRESS_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// Fits on the training rows on a blocking thread (fitting can take seconds of CPU, and every other client must
/// still be served), reporting ensemble progress at most every [`PROGRESS_EVERY`].
async fn fit_off_thread(
    algo: Algo,
    data: Split,
    label: &str,
    progress: Option<&Progress>,
) -> Result<(Split, Estimator), Refusal> {
    let reporter = progress.cloned();
    let label = label.to_owned();
    let (data, fitted) = tokio::task::spawn_blocking(move || {
        let started = Instant::now();
        let mut last = started;
        let mut step = |done: usize, total: usize| {
            if done > 0 && last.elapsed() >= PROGRESS_EVERY {
                last = Instant::now();
                if let Some(r) = &reporter {
                    let _ = r.send(format!(
                        "Ocelot: {label} {done}/{total} ({}%), {:.1} s",
                        done * 100 / total.max(1),
                        started.elapsed().as_secs_f64()
                    ));
                }
            }
        };
        let n = data.n_train;
        let fitted = fit_targets(&algo, &data, n, &mut step);
        (data, fitted)
    })
    .await
    .map_err(|e| refuse(sqlstate::INTERNAL_ERROR, format!("training failed: {e}")))?;
    Ok((data, fitted.map_err(|e| refuse("22023", e))?))
}

/// Fits the estimator on the first `n` rows: one for the label, or one per target of a joint regression.
fn fit_targets(
    algo: &Algo,
    data: &Split,
    n: usize,
    step: &mut dyn FnMut(usize, usize),
) -> Result<Estimator, String> {
    let fit = |y: &[f64], step: &mut dyn FnMut(usize, usize)| {
        algo.fit(&data.x[..n], &y[..n.min(y.len())], step)
    };
    let first = fit(&data.y, step)?;
    if data.more_targets.is_empty() {
        return Ok(first);
    }
    let mut targets = vec![first];
    for y in &data.more_targets {
        targets.push(fit(y, step)?);
    }
    Ok(Estimator::Joint { targets })
}

/// A model just fitted, with what the registry records about it.
struct Trained<'a> {
    project: &'a str,
    /// The project's id when it exists already.
    project_id: Option<&'a str>,
    /// Reused instead of writing a new snapshot.
    snapshot_id: Option<&'a str>,
    task: &'a str,
    relation: &'a str,
    /// The label columns: none for clustering, several for a joint regression.
    labels: &'a [String],
    sampling: &'a str,
    test_size: f64,
    samples: usize,
    features: &'a [String],
    baseline: &'a crate::ops::drift::Baseline,
    algorithm: &'a str,
    hyperparams: String,
    model: &'a Model,
    metrics: serde_json::Map<String, serde_json::Value>,
    /// The metric auto-deploy compares, and the new model's value of it.
    target: &'static str,
    score: f64,
    auto_deploy: bool,
}

/// What a model is trained on: the relation and label, and how it is split.
struct Source {
    relation: String,
    labels: Vec<String>,
    sampling: String,
    test_size: f64,
    /// The project's last snapshot, when training again from it.
    snapshot_id: Option<String>,
}

/// The training data the call names, or, when it names no relation, the project's last snapshot with the split
/// it was made with (PostgresML's "Using existing snapshot").
async fn source(
    args: &BTreeMap<&str, Arg>,
    conn: &mut dyn Conn,
    project_id: Option<&str>,
    task: &str,
    joint: bool,
) -> Result<Source, Refusal> {
    if let Some(relation) = text_arg(args, "relation_name") {
        let labels: Vec<String> = match args.get("y_column_name") {
            Some(Arg::Array(items, _)) if joint => items
                .iter()
                .filter_map(|a| a.as_text().map(str::to_owned))
                .collect(),
            _ if joint => Vec::new(),
            _ => text_arg(args, "y_column_name").into_iter().collect(),
        };
        if !matches!(task, "clustering" | "decomposition") && labels.is_empty() {
            return Err(refuse("22023", "You must pass a `y_column_name` when you pass a `relation_name` for a supervised task."));
        }
        return Ok(Source {
            relation,
            labels,
            sampling: text_arg(args, "test_sampling").unwrap_or_else(|| "stratified".into()),
            test_size: args.get("test_size").and_then(Arg::as_f64).unwrap_or(0.25),
            snapshot_id: None,
        });
    }
    let first_time = || {
        refuse(
            sqlstate::INTERNAL_ERROR,
            "You must pass a `relation_name` and `y_column_name` to snapshot the first time you train a model.",
        )
    };
    let project_id = project_id.ok_or_else(first_time)?;
    let row = conn
        .query_row(&format!(
            "SELECT s.id, s.relation_name, array_to_json(s.y_column_name), s.test_size, s.test_sampling FROM pgml.snapshots s \
             JOIN pgml.models m ON m.snapshot_id = s.id WHERE m.project_id = {project_id} ORDER BY m.id DESC LIMIT 1"
        ))
        .await?
        .ok_or_else(first_time)?;
    let cell = |i: usize| row.get(i).cloned().flatten();
    Ok(Source {
        relation: cell(1).ok_or_else(first_time)?,
        labels: cell(2)
            .and_then(|j| serde_json::from_str::<Vec<String>>(&j).ok())
            .unwrap_or_default(),
        sampling: cell(4).unwrap_or_else(|| "stratified".into()),
        test_size: cell(3).and_then(|t| t.parse().ok()).unwrap_or(0.25),
        snapshot_id: cell(0),
    })
}

/// Writes the project (when new), snapshot, model, file and, when it wins, deployment rows; returns whether the
/// model was deployed.
async fn record(
    pool: &Arc<dyn Backend>,
    conn: &mut dyn Conn,
    t: Trained<'_>,
) -> Result<bool, Refusal> {
    let project_id = match t.project_id {
        Some(id) => id.to_owned(),
        None => insert_project(conn, t.project, t.task).await?,
    };
    let snapshot_id = match t.snapshot_id {
        Some(id) => id.to_owned(),
        None => insert_snapshot(conn, &t).await?,
    };
    let Trained {
        project,
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
        crate::serving::cache::announce(pool, conn, project).await?;
    }
    Ok(deployed)
}

async fn insert_project(conn: &mut dyn Conn, project: &str, task: &str) -> Result<String, Refusal> {
    let sql = format!(
        "INSERT INTO pgml.projects (name, task) VALUES ({}, {}::pgml.task) ON CONFLICT (name) DO UPDATE SET name = EXCLUDED.name RETURNING id",
        quote_literal(project),
        quote_literal(task)
    );
    Ok(value(conn, &sql).await?.unwrap_or_default())
}

/// The snapshot row of a first training: what was read, how it was split, and the drift baseline.
async fn insert_snapshot(conn: &mut dyn Conn, t: &Trained<'_>) -> Result<String, Refusal> {
    let Trained {
        relation,
        labels,
        sampling,
        test_size,
        samples,
        features,
        baseline,
        ..
    } = t;
    let columns = serde_json::to_string(features).unwrap_or_else(|_| "[]".into());
    let labels = if labels.is_empty() {
        "NULL".into()
    } else {
        let quoted: Vec<String> = labels.iter().map(|l| quote_literal(l)).collect();
        format!("ARRAY[{}]", quoted.join(", "))
    };
    let analysis = serde_json::json!({ "samples": samples, "ocelot_drift": baseline }).to_string();
    let sql = format!(
        "INSERT INTO pgml.snapshots (relation_name, y_column_name, test_size, test_sampling, status, columns, analysis) VALUES ({}, {labels}, {test_size}, {}::pgml.sampling, 'successful', {}::jsonb, {}::jsonb) RETURNING id",
        quote_literal(relation),
        quote_literal(sampling),
        quote_literal(&columns),
        quote_literal(&analysis),
    );
    Ok(value(conn, &sql).await?.unwrap_or_default())
}
