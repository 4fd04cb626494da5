//! `[inference]` (Ocelot): how `pgml.*` calls are handled. `proxy` (the default) answers the calls Ocelot
//! serves in the proxy; `passthrough` sends every `pgml.*` call to the servers, for servers that have the real
//! PostgresML extension; `off` is the same as passthrough for now (Ocelot never touches `pgml.*`). `cache_bytes`
//! bounds each pool's model cache; `deploy_recheck_ms` is how often a deployment is looked up again;
//! `registry_pool` puts every pool's registry in one pool's database; `models_dir` holds embedding models;
//! `drift_window_s` is the window of drift monitoring.

use serde::Deserialize;

/// How `pgml.*` calls are handled.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum InferenceMode {
    #[default]
    Proxy,
    Passthrough,
    Off,
}

/// Where embedding models run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Device {
    #[default]
    Cpu,
    /// The first CUDA GPU; needs a build with `--features cuda`.
    Cuda,
    /// CUDA when built with it and a GPU is there, else the CPU.
    Auto,
}

/// `[inference]`.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
pub struct Inference {
    #[serde(default)]
    pub mode: InferenceMode,
    /// Bound of each pool's model cache, in bytes of the models' stored form; the least recently used model is
    /// evicted (and loaded again from `pgml.files` when next needed).
    #[serde(default = "default_cache_bytes")]
    pub cache_bytes: usize,
    /// How long a project's deployed model is trusted before the registry is asked again. Deploys are also
    /// announced by NOTIFY, which every instance hears at once; this is the fallback.
    #[serde(default = "default_recheck_ms")]
    pub deploy_recheck_ms: u64,
    /// The pool whose database (its shard 0 primary) holds the model registry for every pool; by default each
    /// pool keeps its own.
    #[serde(default)]
    pub registry_pool: Option<String>,
    /// Where embedding models are: `<models_dir>/<org>/<name>` per model (`scripts/fetch-models.sh` fills it).
    #[serde(default = "default_models_dir")]
    pub models_dir: String,
    /// Where embedding models run: `cpu`, `cuda` or `auto`.
    #[serde(default)]
    pub device: Device,
    /// Most texts one embedding forward pass takes from concurrent requests.
    #[serde(default = "default_batch_max")]
    pub batch_max: usize,
    /// How long a request waits for others to share its forward pass (0: a request alone does not wait; requests
    /// that arrive while a pass runs go together in the next anyway).
    #[serde(default)]
    pub batch_wait_ms: u64,
    /// The sliding window over which the features fed to each model are compared with its training data
    /// (`SHOW MODEL DRIFT`, `pgml.drift`), in seconds.
    #[serde(default = "default_drift_window_s")]
    pub drift_window_s: u64,
    /// Sampled predictions (`pgml.log_predictions`) a pool queues for the registry before it drops new ones.
    #[serde(default = "default_log_queue")]
    pub prediction_log_queue: usize,
}

/// Sampled predictions queued per pool before new ones are dropped (`prediction_log_queue`'s default).
pub const PREDICTION_LOG_QUEUE: usize = 65_536;

/// How long a cached project → deployed model mapping is trusted before the registry is asked again, by default
/// (`deploy_recheck_ms`); deploys announced by NOTIFY are seen at once.
pub const DEPLOY_RECHECK: std::time::Duration = std::time::Duration::from_secs(1);

/// The default bound of a pool's model cache (`cache_bytes`).
pub const MODEL_CACHE_BYTES: usize = 256 * 1024 * 1024;

fn default_log_queue() -> usize {
    PREDICTION_LOG_QUEUE
}

fn default_drift_window_s() -> u64 {
    3600
}

fn default_batch_max() -> usize {
    32
}

fn default_models_dir() -> String {
    "models".into()
}

fn default_recheck_ms() -> u64 {
    DEPLOY_RECHECK.as_millis() as u64
}

fn default_cache_bytes() -> usize {
    MODEL_CACHE_BYTES
}

impl Default for Inference {
    fn default() -> Self {
        Inference {
            mode: InferenceMode::default(),
            cache_bytes: default_cache_bytes(),
            deploy_recheck_ms: default_recheck_ms(),
            registry_pool: None,
            models_dir: default_models_dir(),
            device: Device::default(),
            batch_max: default_batch_max(),
            batch_wait_ms: 0,
            drift_window_s: default_drift_window_s(),
            prediction_log_queue: default_log_queue(),
        }
    }
}
