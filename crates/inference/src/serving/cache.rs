//! The per-pool model cache shared by every client: which model each project has deployed (asked of the registry
//! again after the recheck interval), the loaded models by id, bounded in bytes with least-recently-used eviction, and
//! per-model counters (predictions served, time spent) for `SHOW MODELS` and the metrics. A prediction takes a
//! read lock to find its model and then touches only atomics.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use crate::backend::Backend;
use crate::ops::ab::{AbRow, AbTest};
use crate::ops::drift::{Baseline, FeatureDrift, Monitor};
use crate::ops::logging::{LogSetting, PredictionLog, Sample};
use crate::registry::models::{refuse, registry_conn, value, Model, Refusal};
use ocelot_protocol::codes::sqlstate;
use ocelot_router::session_sql::quote_literal;

pub(crate) use ocelot_config::{
    DEPLOY_RECHECK as DEFAULT_RECHECK, MODEL_CACHE_BYTES as DEFAULT_CACHE_BYTES,
};

pub use super::deploys::kmeans_centroids;
use super::deploys::{ask_registry, listen_for_deploys, AbFound};

/// The channel a deploy is announced on, with the project's name as payload.
pub(crate) const DEPLOY_CHANNEL: &str = "ocelot_pgml_deploy";

/// Listener ids of pools' own subscriptions to [`DEPLOY_CHANNEL`], counted up from the bottom of the range (no
/// client has them); several pools may share one registry's listener.
pub(super) static LISTENER_IDS: std::sync::atomic::AtomicI32 =
    std::sync::atomic::AtomicI32::new(i32::MIN);

/// Counters of one model, kept after the model itself is evicted.
#[derive(Debug, Default)]
pub(crate) struct ModelStats {
    predictions: AtomicU64,
    nanos: AtomicU64,
    last_use: AtomicU64,
    /// The features this model was fed against its training data; set when the model is first loaded, if its
    /// snapshot has training statistics.
    drift: std::sync::OnceLock<Arc<Monitor>>,
}

/// A model loaded from the registry.
#[derive(Debug)]
pub(crate) struct Loaded {
    pub(crate) id: i64,
    pub(crate) project: String,
    pub(crate) algorithm: String,
    /// Size of its stored form, what the cache bound counts.
    pub(crate) bytes: usize,
    pub(crate) model: Model,
    stats: Arc<ModelStats>,
}

impl Loaded {
    /// Adds one prediction's raw features to the model's drift window.
    pub(crate) fn observe(&self, x: &[f64]) {
        if let Some(m) = self.stats.drift.get() {
            m.observe(x);
        }
    }

    /// Counts `n` predictions that took `elapsed` in all.
    pub(crate) fn served(&self, n: u64, elapsed: Duration) {
        self.stats.predictions.fetch_add(n, Ordering::Relaxed);
        self.stats
            .nanos
            .fetch_add(elapsed.as_nanos() as u64, Ordering::Relaxed);
    }
}

/// What a pool knows of a project's deployment, and since when.
#[derive(Debug, Clone)]
struct Deployment {
    /// The deployed model (arm A).
    id: i64,
    at: Instant,
    ab: Option<Arc<AbTest>>,
    log: Option<Arc<LogSetting>>,
}

/// The model chosen for a prediction, its A/B test and arm when the project has one, and its project's
/// prediction logging.
pub(crate) struct Chosen {
    pub(crate) model: Arc<Loaded>,
    pub(crate) ab: Option<(Arc<AbTest>, usize)>,
    pub(crate) log: Option<Arc<LogSetting>>,
}

impl Chosen {
    /// Counts `n` predictions that took `elapsed`, for the model and its arm.
    pub(crate) fn served(&self, n: u64, elapsed: Duration) {
        self.model.served(n, elapsed);
        if let Some((t, arm)) = &self.ab {
            t.served(*arm, n, elapsed);
        }
    }

    /// Whether the next prediction is to be logged.
    pub(crate) fn sample(&self) -> bool {
        self.log.as_ref().is_some_and(|l| l.take())
    }

    /// Queues a logged prediction of `model` (this choice's model or, per row, its arm B's).
    pub(crate) fn record(
        &self,
        pool: &Arc<dyn Backend>,
        model: &Loaded,
        arm: usize,
        key: Option<String>,
        features: Vec<f64>,
        prediction: f64,
    ) {
        pool.models().log.push(
            pool,
            Sample {
                project: model.project.clone(),
                model_id: model.id,
                arm: self.ab.as_ref().map(|_| arm),
                key,
                features,
                prediction,
            },
        );
    }
}

/// One line of `SHOW MODELS`.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelRow {
    pub project: String,
    pub model_id: i64,
    pub algorithm: String,
    pub bytes: usize,
    pub loaded: bool,
    pub predictions: u64,
    /// Mean time per prediction, in microseconds.
    pub mean_micros: f64,
}

#[derive(Debug, Default)]
struct Cache {
    loaded: HashMap<i64, Arc<Loaded>>,
    bytes: usize,
    /// Every model seen, loaded or evicted: its description and counters.
    known: HashMap<i64, (String, String, usize, Arc<ModelStats>)>,
}

/// Deployed models of one pool, shared by its clients.
#[derive(Debug)]
pub struct Models {
    /// Per project: the deployed model (arm A), when the registry was last asked, and the active A/B test. One
    /// lock per prediction.
    by_project: Mutex<HashMap<String, Deployment>>,
    /// Per project: its active A/B test, kept across rechecks of the same test (so its counters go on) and for
    /// `SHOW AB`. Locked only when the registry is asked.
    ab_tests: Mutex<HashMap<String, Arc<AbTest>>>,
    /// Per project: its prediction logging, kept across rechecks of the same rate (so its sampler goes on).
    log_settings: Mutex<HashMap<String, Arc<LogSetting>>>,
    /// Sampled predictions on their way to the registry.
    pub log: PredictionLog,
    cache: RwLock<Cache>,
    capacity: usize,
    recheck: Duration,
    /// Where embedding models are (`[inference] models_dir`).
    models_dir: std::path::PathBuf,
    /// The window of drift monitoring (`[inference] drift_window_s`).
    drift_window: Duration,
    clock: AtomicU64,
    evictions: AtomicU64,
    /// This pool listens for deploys announced by any instance (set up before its first prediction).
    listening: tokio::sync::OnceCell<bool>,
    /// The registry schema was brought to this Ocelot's version (once per pool, not per connection).
    registry_ready: tokio::sync::OnceCell<()>,
    /// The vector functions' SQL versions were installed on the shards (or found there).
    vector_sql: tokio::sync::OnceCell<bool>,
}

impl Default for Models {
    fn default() -> Self {
        Models::new(DEFAULT_CACHE_BYTES, DEFAULT_RECHECK, "models".into())
    }
}

impl Models {
    pub fn new(capacity: usize, recheck: Duration, models_dir: std::path::PathBuf) -> Models {
        Models {
            by_project: Mutex::default(),
            ab_tests: Mutex::default(),
            log_settings: Mutex::default(),
            log: PredictionLog::default(),
            cache: RwLock::default(),
            capacity,
            recheck,
            models_dir,
            drift_window: Duration::from_secs(3600),
            clock: AtomicU64::new(0),
            evictions: AtomicU64::new(0),
            listening: tokio::sync::OnceCell::new(),
            registry_ready: tokio::sync::OnceCell::new(),
            vector_sql: tokio::sync::OnceCell::new(),
        }
    }

    /// Sets how many sampled predictions may wait for the registry.
    pub fn with_log_queue(mut self, capacity: usize) -> Models {
        self.log = PredictionLog::new(capacity);
        self
    }

    /// Sets the window of drift monitoring.
    pub fn with_drift_window(mut self, window: Duration) -> Models {
        self.drift_window = window;
        self
    }

    pub(crate) fn registry_ready(&self) -> &tokio::sync::OnceCell<()> {
        &self.registry_ready
    }

    pub(crate) fn models_dir(&self) -> &std::path::Path {
        &self.models_dir
    }

    pub(crate) fn vector_sql(&self) -> &tokio::sync::OnceCell<bool> {
        &self.vector_sql
    }

    pub(crate) fn forget(&self, project: &str) {
        self.by_project
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(project);
    }

    /// The deployed model of `project` (arm A of its A/B test, if it has one).
    pub(crate) async fn deployed(
        &self,
        pool: &Arc<dyn Backend>,
        project: &str,
    ) -> Result<Arc<Loaded>, Refusal> {
        let d = self.deployment(pool, project).await?;
        self.model(pool, d.id).await
    }

    /// The model that serves `project` for `key`: arm B of the project's A/B test when the key hashes into its
    /// share, else the deployed model. Without a key, the deployed model.
    pub(crate) async fn deployed_for(
        &self,
        pool: &Arc<dyn Backend>,
        project: &str,
        key: impl FnOnce() -> Option<String>,
    ) -> Result<Chosen, Refusal> {
        let Deployment { id, ab, log, .. } = self.deployment(pool, project).await?;
        let Some(ab) = ab else {
            return Ok(Chosen {
                model: self.model(pool, id).await?,
                ab: None,
                log,
            });
        };
        let arm = key().map_or(0, |k| ab.arm(k.as_bytes()));
        let model = self
            .model(pool, if arm == 1 { ab.model_b } else { id })
            .await?;
        Ok(Chosen {
            model,
            ab: Some((ab, arm)),
            log,
        })
    }

    /// `project`'s deployed model, A/B test and logging, from the cache when they were checked within the
    /// recheck interval (a deploy announced by any instance makes it check at once).
    async fn deployment(
        &self,
        pool: &Arc<dyn Backend>,
        project: &str,
    ) -> Result<Deployment, Refusal> {
        self.listening
            .get_or_init(|| listen_for_deploys(pool))
            .await;
        if let Some(d) = self
            .by_project
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(project)
        {
            if d.at.elapsed() < self.recheck {
                return Ok(d.clone());
            }
        }
        let found = ask_registry(pool, project).await?;
        let d = Deployment {
            id: found.model,
            at: Instant::now(),
            ab: self.keep_ab(project, found.ab),
            log: self.keep_log(project, found.log_rate),
        };
        self.by_project
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(project.to_owned(), d.clone());
        Ok(d)
    }

    /// The project's logging as the registry has it (`None` or rate 0: off), reusing the running sampler when
    /// the rate is unchanged.
    fn keep_log(&self, project: &str, rate: Option<f64>) -> Option<Arc<LogSetting>> {
        let mut settings = self.log_settings.lock().unwrap_or_else(|e| e.into_inner());
        let Some(rate) = rate.filter(|r| *r > 0.0) else {
            settings.remove(project);
            return None;
        };
        let same = settings.get(project).filter(|l| l.rate == rate).cloned();
        let l = same.unwrap_or_else(|| Arc::new(LogSetting::new(rate)));
        settings.insert(project.to_owned(), l.clone());
        Some(l)
    }

    /// The project's A/B test as the registry has it (`None`: no test), reusing the running one when it is the
    /// same test so its counters go on.
    fn keep_ab(&self, project: &str, found: Option<AbFound>) -> Option<Arc<AbTest>> {
        let mut tests = self.ab_tests.lock().unwrap_or_else(|e| e.into_inner());
        let Some((ab_id, model_b, share)) = found else {
            tests.remove(project);
            return None;
        };
        let same = tests.get(project).filter(|t| t.id == ab_id).cloned();
        let t = same.unwrap_or_else(|| {
            Arc::new(AbTest {
                id: ab_id,
                model_b,
                share,
                arms: Default::default(),
            })
        });
        tests.insert(project.to_owned(), t.clone());
        Some(t)
    }

    /// The active A/B tests this pool has seen, for `SHOW AB`.
    pub fn ab_rows(&self) -> Vec<AbRow> {
        let deployed = self.by_project.lock().unwrap_or_else(|e| e.into_inner());
        let tests = self.ab_tests.lock().unwrap_or_else(|e| e.into_inner());
        let mut rows: Vec<AbRow> = tests
            .iter()
            .map(|(project, t)| AbRow {
                project: project.clone(),
                model_a: deployed.get(project).map_or(0, |d| d.id),
                model_b: t.model_b,
                share: t.share,
                predictions: [t.arms[0].predictions(), t.arms[1].predictions()],
                mean_micros: [t.arms[0].mean_micros(), t.arms[1].mean_micros()],
            })
            .collect();
        rows.sort_by(|a, b| a.project.cmp(&b.project));
        rows
    }

    /// Whether this pool has seen `project`'s A/B test.
    pub fn has_ab(&self, project: &str) -> bool {
        self.ab_tests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(project)
    }

    /// Model `id`, loaded from `pgml.files` on first use.
    pub(crate) async fn model(
        &self,
        pool: &Arc<dyn Backend>,
        id: i64,
    ) -> Result<Arc<Loaded>, Refusal> {
        let tick = self.clock.fetch_add(1, Ordering::Relaxed);
        if let Some(m) = self
            .cache
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .loaded
            .get(&id)
        {
            m.stats.last_use.store(tick, Ordering::Relaxed);
            return Ok(m.clone());
        }
        let mut conn = registry_conn(pool).await?;
        let row = value(
            &mut *conn,
            &format!(
                "SELECT json_build_array(p.name, m.algorithm, convert_from(f.data, 'UTF8'), (SELECT s.analysis->>'ocelot_drift' FROM pgml.snapshots s WHERE s.id = m.snapshot_id))::text FROM pgml.files f JOIN pgml.models m ON m.id = f.model_id JOIN pgml.projects p ON p.id = m.project_id WHERE f.model_id = {id} AND f.path = 'estimator.ocelot.json' ORDER BY f.part LIMIT 1"
            ),
        )
        .await?
        .ok_or_else(|| refuse("22023", format!("pgml.models WHERE id = {id} could not be loaded. Does it exist?")))?;
        let [project, algorithm, data, baseline] =
            serde_json::from_str::<[Option<String>; 4]>(&row).map_err(|e| {
                refuse(
                    sqlstate::INTERNAL_ERROR,
                    format!("model {id}: unexpected registry row: {e}"),
                )
            })?;
        let data = data.unwrap_or_default();
        let model: Model = serde_json::from_str(&data).map_err(|e| {
            refuse(
                sqlstate::INTERNAL_ERROR,
                format!("model {id} cannot be read: {e}"),
            )
        })?;
        let loaded = self.insert(
            id,
            project.unwrap_or_default(),
            algorithm.unwrap_or_default(),
            data.len(),
            model,
        );
        // Models trained before drift monitoring (or by PostgresML itself) have no training statistics.
        if let Some(b) = baseline.and_then(|b| serde_json::from_str::<Baseline>(&b).ok()) {
            let _ = loaded
                .stats
                .drift
                .set(Arc::new(Monitor::new(b, self.drift_window)));
        }
        Ok(loaded)
    }

    /// Drift of every model with training statistics that was fed features in the window, for `SHOW MODEL
    /// DRIFT` and the metrics: (project, model id, per-feature drift).
    pub fn drift_rows(&self) -> Vec<(String, i64, Vec<FeatureDrift>)> {
        let cache = self.cache.read().unwrap_or_else(|e| e.into_inner());
        let mut rows: Vec<(String, i64, Vec<FeatureDrift>)> = cache
            .known
            .iter()
            .filter_map(|(id, (project, _, _, stats))| {
                let report = stats.drift.get()?.report();
                Some((project.clone(), *id, report))
            })
            .collect();
        rows.sort_by_key(|r| r.1);
        rows
    }

    /// Drift of `project`'s deployed model (arm A).
    pub(crate) async fn drift_of(
        &self,
        pool: &Arc<dyn Backend>,
        project: &str,
    ) -> Result<(i64, Option<Vec<FeatureDrift>>), Refusal> {
        let loaded = self.deployed(pool, project).await?;
        Ok((loaded.id, loaded.stats.drift.get().map(|m| m.report())))
    }

    /// Adds a loaded model, evicting the least recently used others until the cache fits its bound (a model
    /// larger than the bound alone is still served, and evicted by the next one).
    fn insert(
        &self,
        id: i64,
        project: String,
        algorithm: String,
        bytes: usize,
        model: Model,
    ) -> Arc<Loaded> {
        let tick = self.clock.fetch_add(1, Ordering::Relaxed);
        let mut cache = self.cache.write().unwrap_or_else(|e| e.into_inner());
        if let Some(m) = cache.loaded.get(&id) {
            return m.clone();
        }
        let stats = cache
            .known
            .entry(id)
            .or_insert_with(|| (project.clone(), algorithm.clone(), bytes, Arc::default()))
            .3
            .clone();
        stats.last_use.store(tick, Ordering::Relaxed);
        while cache.bytes + bytes > self.capacity && !cache.loaded.is_empty() {
            let Some(victim) = cache
                .loaded
                .values()
                .min_by_key(|m| m.stats.last_use.load(Ordering::Relaxed))
                .map(|m| m.id)
            else {
                break;
            };
            if let Some(m) = cache.loaded.remove(&victim) {
                cache.bytes -= m.bytes;
                self.evictions.fetch_add(1, Ordering::Relaxed);
            }
        }
        let loaded = Arc::new(Loaded {
            id,
            project,
            algorithm,
            bytes,
            model,
            stats,
        });
        cache.bytes += bytes;
        cache.loaded.insert(id, loaded.clone());
        loaded
    }

    /// Every model this pool has served or loaded, by model id.
    pub fn rows(&self) -> Vec<ModelRow> {
        let cache = self.cache.read().unwrap_or_else(|e| e.into_inner());
        let mut rows: Vec<ModelRow> = cache
            .known
            .iter()
            .map(|(id, (project, algorithm, bytes, stats))| {
                let n = stats.predictions.load(Ordering::Relaxed);
                let nanos = stats.nanos.load(Ordering::Relaxed);
                ModelRow {
                    project: project.clone(),
                    model_id: *id,
                    algorithm: algorithm.clone(),
                    bytes: *bytes,
                    loaded: cache.loaded.contains_key(id),
                    predictions: n,
                    mean_micros: if n == 0 {
                        0.0
                    } else {
                        nanos as f64 / n as f64 / 1e3
                    },
                }
            })
            .collect();
        rows.sort_by_key(|r| r.model_id);
        rows
    }

    /// Predictions served by every model so far, and their time in nanoseconds.
    pub fn served_totals(&self) -> (u64, u64) {
        let cache = self.cache.read().unwrap_or_else(|e| e.into_inner());
        cache.known.values().fold((0, 0), |(n, t), (_, _, _, s)| {
            (
                n + s.predictions.load(Ordering::Relaxed),
                t + s.nanos.load(Ordering::Relaxed),
            )
        })
    }

    /// Bytes of the models loaded now, and evictions so far.
    pub fn usage(&self) -> (usize, u64) {
        let bytes = self.cache.read().unwrap_or_else(|e| e.into_inner()).bytes;
        (bytes, self.evictions.load(Ordering::Relaxed))
    }
}

/// Announces that `project` has a new deployment, to this instance at once and to the others by NOTIFY.
pub(crate) async fn announce(
    pool: &Arc<dyn Backend>,
    conn: &mut dyn crate::backend::Conn,
    project: &str,
) -> Result<(), Refusal> {
    pool.models().forget(project);
    conn.run(&format!(
        "SELECT pg_notify('{DEPLOY_CHANNEL}', {})",
        quote_literal(project)
    ))
    .await?;
    Ok(())
}

#[cfg(test)]
#[path = "cache_tests.rs"]
mod tests;
