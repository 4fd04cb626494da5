//! Prediction logging. `pgml.log_predictions('p', sample_rate => 0.1, actuals_table => 'sales', actuals_key =>
//! 'id')` makes Ocelot keep a sample of `p`'s predictions as rows of `pgml.predictions` (project, model id, A/B
//! arm, entity key, raw features, prediction, time) in the registry database, and `pgml.live_metrics('p')` joins
//! them with the actual outcomes in the named table to score each model live (r2 and MAE for regression,
//! accuracy and macro F1 for classification).
//!
//! A prediction never waits for its log row: a sampled row goes into a bounded per-pool queue (a full queue drops
//! it and counts the drop), and one task per pool writes what has queued with COPY. A row's `created_at` is when it was written, a
//! fraction of a second after the prediction. The sampler is a
//! counter, not a coin: of a project's first n predictions exactly ⌊n·rate⌋ are kept, so the count written is
//! predictable under any load.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use bytes::BytesMut;
use tokio::sync::mpsc;

use crate::backend::Backend;
use crate::registry::models::{refuse, registry_conn, Refusal};
use crate::registry::train::text_arg;
use crate::serving::serve::ResultTable;
use crate::sql::call::{bind, Call};
use crate::sql::params::{FLOAT8, INT8, TEXT};
use ocelot_protocol::encode;
use ocelot_router::session_sql::quote_literal;

pub(crate) use ocelot_config::PREDICTION_LOG_QUEUE as QUEUE;
/// Rows per COPY.
const BATCH: usize = 2_000;
/// How long the writer lets a small batch grow before writing it.
const GATHER: Duration = Duration::from_millis(100);

/// A project's logging setting as this pool applies it.
#[derive(Debug)]
pub(crate) struct LogSetting {
    pub(crate) rate: f64,
    seen: AtomicU64,
}

impl LogSetting {
    pub(crate) fn new(rate: f64) -> LogSetting {
        LogSetting {
            rate,
            seen: AtomicU64::new(0),
        }
    }

    /// Whether the next prediction is kept: the n-th is when ⌊n·rate⌋ steps up.
    pub(crate) fn take(&self) -> bool {
        let n = self.seen.fetch_add(1, Ordering::Relaxed);
        ((n + 1) as f64 * self.rate).floor() > (n as f64 * self.rate).floor()
    }
}

/// One logged prediction.
#[derive(Debug)]
pub(crate) struct Sample {
    pub(crate) project: String,
    pub(crate) model_id: i64,
    /// 0 for arm A, 1 for B; `None` without an A/B test.
    pub(crate) arm: Option<usize>,
    pub(crate) key: Option<String>,
    /// The raw features, NaN for NULL.
    pub(crate) features: Vec<f64>,
    pub(crate) prediction: f64,
}

/// What became of a pool's samples.
#[derive(Debug, Default)]
pub struct LogCounters {
    pub(crate) queued: AtomicU64,
    pub(crate) written: AtomicU64,
    /// Dropped because the queue was full.
    pub(crate) dropped: AtomicU64,
    /// Lost because the registry refused or could not be reached.
    pub(crate) failed: AtomicU64,
}

impl LogCounters {
    pub fn get(&self) -> [u64; 4] {
        [
            self.queued.load(Ordering::Relaxed),
            self.written.load(Ordering::Relaxed),
            self.dropped.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
        ]
    }
}

/// A pool's queue of samples and its writer.
#[derive(Debug)]
pub struct PredictionLog {
    capacity: usize,
    tx: OnceLock<mpsc::Sender<Sample>>,
    pub counters: Arc<LogCounters>,
}

impl Default for PredictionLog {
    fn default() -> Self {
        PredictionLog::new(QUEUE)
    }
}

impl PredictionLog {
    pub(crate) fn new(capacity: usize) -> PredictionLog {
        PredictionLog {
            capacity: capacity.max(1),
            tx: OnceLock::new(),
            counters: Arc::default(),
        }
    }

    /// Queues `s` to be written to `pool`'s registry; never waits.
    pub(crate) fn push(&self, pool: &Arc<dyn Backend>, s: Sample) {
        let tx = self.tx.get_or_init(|| {
            let (tx, rx) = mpsc::channel(self.capacity);
            tokio::spawn(write(Arc::downgrade(pool), rx, self.counters.clone()));
            tx
        });
        match tx.try_send(s) {
            Ok(()) => self.counters.queued.fetch_add(1, Ordering::Relaxed),
            Err(_) => self.counters.dropped.fetch_add(1, Ordering::Relaxed),
        };
    }
}

/// Writes queued samples until the pool is gone (its queue's sender with it).
async fn write(
    pool: Weak<dyn Backend>,
    mut rx: mpsc::Receiver<Sample>,
    counters: Arc<LogCounters>,
) {
    let mut batch = Vec::with_capacity(BATCH);
    let mut warned_at: Option<std::time::Instant> = None;
    while rx.recv_many(&mut batch, BATCH).await > 0 {
        let Some(pool) = pool.upgrade() else { break };
        let n = batch.len() as u64;
        let data = copy_text(&batch);
        batch.clear();
        let result = match registry_conn(&pool).await {
            Ok(mut conn) => conn.copy_in(COPY, &data).await.map_err(|e| e.to_string()),
            Err(r) => Err(r.message),
        };
        drop(pool);
        match result {
            Ok(_) => counters.written.fetch_add(n, Ordering::Relaxed),
            Err(e) => {
                if warned_at.is_none_or(|t| t.elapsed() > Duration::from_secs(10)) {
                    tracing::warn!("prediction log: {n} rows lost: {e}");
                    warned_at = Some(std::time::Instant::now());
                }
                counters.failed.fetch_add(n, Ordering::Relaxed)
            }
        };
        if n < BATCH as u64 {
            tokio::time::sleep(GATHER).await;
        }
    }
}

/// The COPY that writes samples.
const COPY: &str =
    "COPY pgml.predictions (project, model_id, arm, key, features, prediction) FROM STDIN";

/// `rows` in COPY's text format (half the server's work of a multi-row INSERT).
fn copy_text(rows: &[Sample]) -> Vec<u8> {
    let mut out = String::with_capacity(rows.len() * 64);
    for s in rows {
        push_text(&mut out, &s.project);
        let _ = write!(out, "\t{}\t", s.model_id);
        out.push_str(match s.arm {
            Some(0) => "A",
            Some(_) => "B",
            None => "\\N",
        });
        out.push('\t');
        match &s.key {
            Some(k) => push_text(&mut out, k),
            None => out.push_str("\\N"),
        }
        out.push_str("\t{");
        for (j, v) in s.features.iter().enumerate() {
            if j > 0 {
                out.push(',');
            }
            if v.is_nan() {
                out.push_str("NULL");
            } else {
                push_float(&mut out, *v);
            }
        }
        out.push_str("}\t");
        push_float(&mut out, s.prediction);
        out.push('\n');
    }
    out.into_bytes()
}

/// A text value escaped for COPY's text format.
fn push_text(out: &mut String, v: &str) {
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c => out.push(c),
        }
    }
}

/// A float as PostgreSQL reads it back exactly.
fn push_float(out: &mut String, v: f64) {
    if v.is_nan() {
        out.push_str("NaN");
    } else if v.is_infinite() {
        out.push_str(if v > 0.0 { "Infinity" } else { "-Infinity" });
    } else {
        let _ = write!(out, "{v:?}");
    }
}

/// `pgml.log_predictions(project_name, sample_rate, actuals_table, actuals_key, actuals_column)`: sets (or, with
/// rate 0, stops) the project's logging. The actuals table must be in the registry database; its value column
/// defaults to the project's training target.
pub(crate) async fn log_predictions(
    pool: &Arc<dyn Backend>,
    call: &Call,
    out: &mut BytesMut,
) -> Result<(), Refusal> {
    let params = [
        ("project_name", None),
        ("sample_rate", None),
        ("actuals_table", Some(crate::sql::call::Arg::Null)),
        ("actuals_key", Some(crate::sql::call::Arg::Null)),
        ("actuals_column", Some(crate::sql::call::Arg::Null)),
    ];
    let args = bind(call, &params)?;
    let project = text_arg(&args, "project_name")
        .ok_or_else(|| refuse("22004", "project_name must not be NULL"))?;
    let rate = args
        .get("sample_rate")
        .and_then(crate::sql::call::Arg::as_f64)
        .filter(|r| (0.0..=1.0).contains(r))
        .ok_or_else(|| refuse("22023", "sample_rate must be a number between 0 and 1"))?;
    let table = text_arg(&args, "actuals_table");
    let key = text_arg(&args, "actuals_key");
    let column = text_arg(&args, "actuals_column");
    if table.is_some() != key.is_some() || (column.is_some() && table.is_none()) {
        return Err(refuse(
            "22023",
            "name the actuals table and its key column together (actuals_table and actuals_key)",
        ));
    }
    let lit = |v: &Option<String>| v.as_deref().map_or("NULL".into(), quote_literal);
    let mut conn = registry_conn(pool).await?;
    let project_id = conn
        .query_value(&format!(
            "SELECT id FROM pgml.projects WHERE name = {}",
            quote_literal(&project)
        ))
        .await?
        .ok_or_else(|| refuse("22023", format!("project {project:?} does not exist")))?;
    if let (Some(t), Some(k)) = (&table, &key) {
        check_actuals(&mut *conn, t, k, column.as_deref()).await?;
    }
    conn.run(&format!(
        "INSERT INTO pgml.prediction_logging (project_id, sample_rate, actuals_table, actuals_key, actuals_column) \
         VALUES ({project_id}, {rate}, {}, {}, {}) ON CONFLICT (project_id) DO UPDATE SET sample_rate = EXCLUDED.sample_rate, \
         actuals_table = EXCLUDED.actuals_table, actuals_key = EXCLUDED.actuals_key, actuals_column = EXCLUDED.actuals_column, \
         updated_at = clock_timestamp()",
        lit(&table),
        lit(&key),
        lit(&column)
    ))
    .await?;
    crate::serving::cache::announce(pool, &mut *conn, &project).await?;
    encode::row_description_typed(
        out,
        &[
            ("project", TEXT, -1),
            ("sample_rate", FLOAT8, 8),
            ("actuals_table", TEXT, -1),
            ("actuals_key", TEXT, -1),
            ("actuals_column", TEXT, -1),
        ],
    );
    encode::data_row_opt(
        out,
        &[Some(project), Some(rate.to_string()), table, key, column],
    );
    encode::command_complete(out, "SELECT 1");
    Ok(())
}

/// Refuses an actuals table, key column or value column that the registry database does not have.
async fn check_actuals(
    conn: &mut dyn crate::backend::Conn,
    table: &str,
    key: &str,
    column: Option<&str>,
) -> Result<(), Refusal> {
    let missing = conn
        .query_value(&format!(
            "SELECT CASE WHEN to_regclass({t}) IS NULL THEN 'table ' || {t} \
             ELSE (SELECT string_agg('column ' || c, ', ') FROM unnest(ARRAY[{k}, {c}]) c WHERE c IS NOT NULL \
             AND NOT EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = to_regclass({t}) AND a.attname = c AND a.attnum > 0 AND NOT a.attisdropped)) END",
            t = quote_literal(table),
            k = quote_literal(key),
            c = column.map_or("NULL".into(), quote_literal),
        ))
        .await?;
    match missing {
        Some(m) => Err(refuse(
            "42P01",
            format!("actuals: {m} not found in the registry database"),
        )),
        None => Ok(()),
    }
}

/// The columns of `pgml.live_metrics`.
pub const LIVE_COLUMNS: [(&str, u32, i16); 8] = [
    ("model_id", INT8, 8),
    ("arm", TEXT, -1),
    ("predictions", INT8, 8),
    ("with_actuals", INT8, 8),
    ("r2", FLOAT8, 8),
    ("mae", FLOAT8, 8),
    ("accuracy", FLOAT8, 8),
    ("f1", FLOAT8, 8),
];

/// The live metrics of `project`'s logged predictions, as text rows in [`LIVE_COLUMNS`] order.
pub async fn live_metrics(
    pool: &Arc<dyn Backend>,
    project: &str,
) -> Result<Vec<Vec<Option<String>>>, String> {
    metric_rows(pool, project).await.map_err(|r| r.message)
}

async fn metric_rows(
    pool: &Arc<dyn Backend>,
    project: &str,
) -> Result<Vec<Vec<Option<String>>>, Refusal> {
    let mut conn = registry_conn(pool).await?;
    Ok(conn
        .query_rows(&format!(
            "SELECT * FROM pgml.live_metrics({})",
            quote_literal(project)
        ))
        .await?)
}

/// `pgml.live_metrics(project_name)`, answered from the registry database whichever shard the client's query
/// would have gone to.
pub(crate) async fn live_table(
    pool: &Arc<dyn Backend>,
    call: &Call,
) -> Result<ResultTable, Refusal> {
    let args = bind(call, &[("project_name", None)])?;
    let project = text_arg(&args, "project_name")
        .ok_or_else(|| refuse("22004", "project_name must not be NULL"))?;
    Ok((LIVE_COLUMNS.to_vec(), metric_rows(pool, &project).await?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sampler_keeps_floor_of_n_times_the_rate() {
        for rate in [0.0, 0.001, 0.1, 0.25, 1.0 / 3.0, 0.5, 1.0] {
            let s = LogSetting::new(rate);
            let mut kept = 0u64;
            for n in 1..=10_000u64 {
                kept += u64::from(s.take());
                assert_eq!(kept, (n as f64 * rate).floor() as u64, "rate {rate} at {n}");
            }
        }
    }

    #[test]
    fn writes_rows_in_copy_text_format() {
        let text = copy_text(&[
            Sample {
                project: "it's\ta\\b".into(),
                model_id: 7,
                arm: Some(1),
                key: Some("42\n".into()),
                features: vec![1.5, f64::NAN, -2e-9, f64::INFINITY],
                prediction: 3.25,
            },
            Sample {
                project: "p".into(),
                model_id: 8,
                arm: None,
                key: None,
                features: vec![],
                prediction: f64::NAN,
            },
        ]);
        assert_eq!(
            String::from_utf8(text).unwrap(),
            "it's\\ta\\\\b\t7\tB\t42\\n\t{1.5,NULL,-2e-9,Infinity}\t3.25\np\t8\t\\N\t\\N\t{}\tNaN\n"
        );
    }
}
