//! Embedding throughput: a per-process cache of the last embeddings by (model, text), and one batcher thread per
//! model, so that concurrent clients' requests share forward passes (the requests that queue up while one pass runs
//! go together in the next, up to `[inference] batch_max` texts; a request alone waits `batch_wait_ms`, 0 by
//! default).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use crate::serving::embed::{embedder, model_dir, EmbedError, Embedder};

/// Embeddings kept for repeated texts, per process.
const CACHED_EMBEDDINGS: usize = 10_000;

/// A cached embedding and when it was last used.
type Cached = (Arc<Vec<f32>>, u64);

/// The embedding cache: (model directory, text) → vector, least recently used evicted.
#[derive(Default)]
struct EmbeddingCache {
    entries: HashMap<(PathBuf, String), Cached>,
    tick: u64,
    hits: u64,
    misses: u64,
}

fn cache() -> &'static Mutex<EmbeddingCache> {
    static CACHE: OnceLock<Mutex<EmbeddingCache>> = OnceLock::new();
    CACHE.get_or_init(Default::default)
}

/// Hits and misses of the embedding cache so far.
pub fn cache_counts() -> (u64, u64) {
    let c = cache().lock().unwrap_or_else(|e| e.into_inner());
    (c.hits, c.misses)
}

/// The embeddings of `texts` with model `name`: repeated texts from the cache, the others in one batch
/// (blocking: call off the async workers).
pub(crate) fn embed_cached(
    models_dir: &Path,
    name: &str,
    texts: &[String],
) -> Result<Vec<Arc<Vec<f32>>>, EmbedError> {
    let dir = model_dir(models_dir, name).unwrap_or_default();
    let mut found: Vec<Option<Arc<Vec<f32>>>> = {
        let mut c = cache().lock().unwrap_or_else(|e| e.into_inner());
        c.tick += 1;
        let tick = c.tick;
        let found: Vec<Option<Arc<Vec<f32>>>> = texts
            .iter()
            .map(|t| {
                c.entries.get_mut(&(dir.clone(), t.clone())).map(|e| {
                    e.1 = tick;
                    e.0.clone()
                })
            })
            .collect();
        let hits = found.iter().filter(|f| f.is_some()).count() as u64;
        c.hits += hits;
        c.misses += texts.len() as u64 - hits;
        found
    };
    let missing: Vec<String> = texts
        .iter()
        .zip(&found)
        .filter(|(_, f)| f.is_none())
        .map(|(t, _)| t.clone())
        .collect();
    if !missing.is_empty() {
        let vectors = batched(embedder(models_dir, name)?, missing.clone())?;
        let mut c = cache().lock().unwrap_or_else(|e| e.into_inner());
        let tick = c.tick;
        let mut fresh = missing.into_iter().zip(vectors);
        for slot in found.iter_mut().filter(|f| f.is_none()) {
            if let Some((text, v)) = fresh.next() {
                let v = Arc::new(v);
                c.entries.insert((dir.clone(), text), (v.clone(), tick));
                *slot = Some(v);
            }
        }
        while c.entries.len() > CACHED_EMBEDDINGS {
            let Some(oldest) = c
                .entries
                .iter()
                .min_by_key(|(_, (_, t))| *t)
                .map(|(k, _)| k.clone())
            else {
                break;
            };
            c.entries.remove(&oldest);
        }
    }
    Ok(found.into_iter().map(|f| f.unwrap_or_default()).collect())
}

/// `[inference] batch_max` and `batch_wait_ms` (as microseconds), set at start and at each reload.
static BATCH_MAX: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(32);
static BATCH_WAIT_US: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Applies `[inference]`'s batching and device settings to the process.
pub fn configure(c: &ocelot_config::Inference) {
    use std::sync::atomic::Ordering::Relaxed;
    BATCH_MAX.store(c.batch_max.max(1), Relaxed);
    BATCH_WAIT_US.store(c.batch_wait_ms * 1000, Relaxed);
    crate::serving::embed::set_device(c.device);
}

/// A request to a model's batcher: texts, and where their vectors go.
type Job = (
    Vec<String>,
    std::sync::mpsc::SyncSender<Result<Vec<Vec<f32>>, String>>,
);

/// Requests and forward passes so far (equal when nothing was batched together).
static BATCH_REQUESTS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
static BATCH_PASSES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

pub fn batch_counts() -> (u64, u64) {
    use std::sync::atomic::Ordering::Relaxed;
    (BATCH_REQUESTS.load(Relaxed), BATCH_PASSES.load(Relaxed))
}

/// One batcher thread per model: requests that queue up while a forward pass runs share the next one (up to
/// `batch_max` texts), which is where a model's throughput under load comes from.
fn batcher(e: &Arc<Embedder>) -> std::sync::mpsc::Sender<Job> {
    static BATCHERS: OnceLock<Mutex<HashMap<usize, std::sync::mpsc::Sender<Job>>>> =
        OnceLock::new();
    let key = Arc::as_ptr(e) as usize;
    let mut all = BATCHERS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    all.entry(key)
        .or_insert_with(|| {
            let (tx, rx) = std::sync::mpsc::channel::<Job>();
            let model = e.clone();
            std::thread::spawn(move || run_batches(&model, &rx));
            tx
        })
        .clone()
}

fn run_batches(model: &Embedder, rx: &std::sync::mpsc::Receiver<Job>) {
    use std::sync::atomic::Ordering::Relaxed;
    while let Ok(first) = rx.recv() {
        let max = BATCH_MAX.load(Relaxed);
        let deadline = std::time::Instant::now()
            + std::time::Duration::from_micros(BATCH_WAIT_US.load(Relaxed));
        let mut jobs = vec![first];
        let mut texts: usize = jobs[0].0.len();
        while texts < max {
            let next = match deadline.checked_duration_since(std::time::Instant::now()) {
                Some(left) if !left.is_zero() => rx.recv_timeout(left).ok(),
                _ => rx.try_recv().ok(),
            };
            match next {
                Some(job) => {
                    texts += job.0.len();
                    jobs.push(job);
                }
                None => break,
            }
        }
        let all: Vec<String> = jobs.iter().flat_map(|(t, _)| t.iter().cloned()).collect();
        BATCH_REQUESTS.fetch_add(jobs.len() as u64, Relaxed);
        BATCH_PASSES.fetch_add(1, Relaxed);
        match model.embed(&all) {
            Ok(vectors) => {
                let mut rest = vectors.into_iter();
                for (t, reply) in jobs {
                    let _ = reply.send(Ok(rest.by_ref().take(t.len()).collect()));
                }
            }
            Err(e) => {
                for (_, reply) in jobs {
                    let _ = reply.send(Err(e.to_string()));
                }
            }
        }
    }
}

/// Embeds `texts` through the model's batcher (blocking).
fn batched(model: Arc<Embedder>, texts: Vec<String>) -> Result<Vec<Vec<f32>>, EmbedError> {
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    batcher(&model)
        .send((texts, tx))
        .map_err(|_| EmbedError::Run("the embedding batcher stopped".into()))?;
    rx.recv()
        .map_err(|_| EmbedError::Run("the embedding batcher stopped".into()))?
        .map_err(EmbedError::Run)
}
