//! Model directories: finding one (a path or the Hugging Face cache), reading and writing
//! `config.json` + `model.safetensors` atomically and verified, and the BERT warm start.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};

use super::bert::{self, BertConfig};
use super::config::Config;
use super::params::{init_params, params_from_tensors};
use super::{CONFIG_FILE, Params, WEIGHTS_FILE};
use crate::error::{Error, Result, cerr};

/// The BERT config (`config.json`) of an encoder directory.
pub(crate) fn read_bert_config(dir: &Path) -> Result<BertConfig> {
    let config_path = dir.join(CONFIG_FILE);
    serde_json::from_slice(&std::fs::read(&config_path).map_err(|e| Error::io(&config_path, e))?)
        .map_err(|e| Error::Corrupt {
            path: config_path.clone(),
            message: format!("not a BERT config: {e}"),
        })
}

/// Sets the `bert.` parameters of `params` from the encoder checkpoint in `dir`; every
/// tensor of `bert_config` must be there with its shape.
pub(crate) fn load_bert_weights(
    params: &Params,
    dir: &Path,
    bert_config: &BertConfig,
) -> Result<()> {
    let weights = dir.join(WEIGHTS_FILE);
    let device = params
        .values()
        .next()
        .map_or(Device::Cpu, |v| v.device().clone());
    let tensors =
        candle_core::safetensors::load(&weights, &device).map_err(|e| Error::Corrupt {
            path: weights.clone(),
            message: e.to_string(),
        })?;
    let mut loaded = 0;
    for (name, t) in tensors {
        let name = format!("bert.{}", name.strip_prefix("bert.").unwrap_or(&name));
        if let Some(var) = params.get(&name) {
            if t.dims() != var.dims() {
                return Err(Error::Model(format!(
                    "{}: tensor {name:?} has shape {:?}, its config implies {:?}",
                    weights.display(),
                    t.dims(),
                    var.dims()
                )));
            }
            var.set(&t.to_dtype(DType::F32).map_err(cerr)?)
                .map_err(cerr)?;
            loaded += 1;
        }
    }
    let expected = bert::tensor_shapes(bert_config).len();
    if loaded != expected {
        return Err(Error::Model(format!(
            "{}: {loaded} of the encoder's {expected} tensors found",
            weights.display()
        )));
    }
    Ok(())
}

/// genret's warm start: `config`'s decoder (its depth, heads and feed-forward size, at the
/// encoder's width) under the frozen BERT-family encoder in `dir` (`config.json` +
/// `model.safetensors`). The decoder's embeddings (tied to its output layer) start as the
/// encoder's word embeddings, rescaled to T5's unit variance, so that writing a token the
/// query contains starts close to copying it; rows past the encoder's vocabulary (genret's
/// special and docid tokens) stay random.
pub fn bert_warm_start(
    mut config: Config,
    dir: &Path,
    seed: u64,
    device: &Device,
) -> Result<(Config, Params)> {
    let bert_config = read_bert_config(dir)?;
    let h = bert_config.hidden_size;
    if !h.is_multiple_of(config.num_heads) || bert_config.vocab_size > config.vocab_size {
        return Err(Error::Mismatch {
            path: dir.to_path_buf(),
            message: format!(
                "hidden size {h} / vocabulary {} do not fit a decoder with {} heads and \
                 vocabulary {}",
                bert_config.vocab_size, config.num_heads, config.vocab_size
            ),
        });
    }
    config.d_model = h;
    config.d_kv = h / config.num_heads;
    config.num_decoder_layers = Some(config.decoder_layers());
    config.num_layers = 0;
    config.bert_encoder = Some(bert_config.clone());
    let params = init_params(&config, seed, device)?;
    load_bert_weights(&params, dir, &bert_config)?;
    let run = || -> candle_core::Result<()> {
        let words = params["bert.embeddings.word_embeddings.weight"].as_tensor();
        let std = words
            .sqr()?
            .mean_all()?
            .to_scalar::<f32>()?
            .sqrt()
            .max(1e-6);
        let shared = &params["shared.weight"];
        let rest = shared.narrow(
            0,
            bert_config.vocab_size,
            config.vocab_size - bert_config.vocab_size,
        )?;
        shared.set(&Tensor::cat(&[(words / std as f64)?, rest], 0)?)
    };
    run().map_err(cerr)?;
    Ok((config, params))
}

/// Finds a model directory: a path holding `config.json`, or a Hugging Face model name looked
/// up in the standard cache layout (`$HF_HOME/hub` or `~/.cache/huggingface/hub`,
/// `models--ORG--NAME/snapshots/<rev>/`, preferring the revision in `refs/main`).
pub fn resolve_model_dir(name_or_path: &str) -> Result<PathBuf> {
    let direct = PathBuf::from(name_or_path);
    if direct.join("config.json").exists() {
        return Ok(direct);
    }
    let hub = std::env::var_os("HF_HUB_CACHE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HF_HOME").map(|h| PathBuf::from(h).join("hub")))
        .or_else(|| {
            std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/huggingface/hub"))
        });
    if let Some(hub) = hub {
        let repo = hub.join(format!("models--{}", name_or_path.replace('/', "--")));
        let snapshots = repo.join("snapshots");
        let main = std::fs::read_to_string(repo.join("refs/main")).ok();
        let mut candidates: Vec<PathBuf> = match main {
            Some(rev) => vec![snapshots.join(rev.trim())],
            None => Vec::new(),
        };
        if let Ok(entries) = std::fs::read_dir(&snapshots) {
            let mut all: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
            all.sort();
            candidates.extend(all);
        }
        if let Some(dir) = candidates
            .into_iter()
            .find(|d| d.join("config.json").exists())
        {
            return Ok(dir);
        }
    }
    Err(Error::NotFound {
        what: "model",
        name: name_or_path.to_string(),
        hint: "expected a directory with config.json and model.safetensors, or a model name \
               present in the Hugging Face cache (this machine cannot download it)"
            .into(),
    })
}

/// Writes `config.json` and `model.safetensors` into `dir` (created if needed), atomically.
pub fn save(dir: &Path, config: &Config, params: &Params) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let tensors: std::collections::HashMap<String, Tensor> = params
        .iter()
        .map(|(k, v)| (k.clone(), v.as_tensor().clone()))
        .collect();
    save_tensors(&dir.join(WEIGHTS_FILE), &tensors)?;
    let json = serde_json::to_vec_pretty(config).expect("config serializes");
    crate::storage::write_atomic(&dir.join(CONFIG_FILE), &json)
}

/// Writes tensors as safetensors atomically ([`crate::storage::write_atomic`]), so a full disk
/// is an I/O error naming the file and leaves the previous file whole.
pub fn save_tensors(
    path: &Path,
    tensors: &std::collections::HashMap<String, Tensor>,
) -> Result<()> {
    let bytes = safetensors::serialize(tensors.iter().map(|(k, v)| (k.as_str(), v)), None)
        .map_err(|e| Error::Model(format!("{}: cannot serialize tensors: {e}", path.display())))?;
    crate::storage::write_atomic(path, &bytes)
}

/// Reads a model directory (`config.json` + `model.safetensors`) into f32 parameters.
pub fn load(dir: &Path, device: &Device) -> Result<(Config, Params)> {
    let config_path = dir.join(CONFIG_FILE);
    let bytes = std::fs::read(&config_path).map_err(|e| Error::io(&config_path, e))?;
    let config: Config = serde_json::from_slice(&bytes).map_err(|e| Error::Corrupt {
        path: config_path.clone(),
        message: format!("not a T5 config: {e}"),
    })?;
    let weights = dir.join(WEIGHTS_FILE);
    if !weights.exists() {
        return Err(Error::io(
            &weights,
            std::io::Error::new(std::io::ErrorKind::NotFound, "no model.safetensors"),
        ));
    }
    let tensors = candle_core::safetensors::load(&weights, device).map_err(|e| Error::Corrupt {
        path: weights.clone(),
        message: e.to_string(),
    })?;
    check_finite(&tensors, &weights)?;
    let params = params_from_tensors(&config, tensors).map_err(|e| in_file(e, &weights))?;
    Ok((config, params))
}

/// Refuses weights that hold NaN or an infinity: they would turn scores into NaN and rank
/// nothing. O(parameters).
pub(crate) fn check_finite(
    tensors: &std::collections::HashMap<String, Tensor>,
    path: &Path,
) -> Result<()> {
    let mut names: Vec<&String> = tensors.keys().collect();
    names.sort();
    for name in names {
        let t = &tensors[name];
        if !t.dtype().is_float() {
            continue;
        }
        let values: Vec<f32> = t
            .flatten_all()
            .and_then(|t| t.to_dtype(DType::F32))
            .and_then(|t| t.to_vec1())
            .map_err(cerr)?;
        if let Some(bad) = values.iter().find(|v| !v.is_finite()) {
            return Err(Error::Corrupt {
                path: path.to_path_buf(),
                message: format!("tensor {name} holds {bad}: the weights are not usable"),
            });
        }
    }
    Ok(())
}

/// A model error about the content of `path`, naming it.
pub(crate) fn in_file(e: Error, path: &Path) -> Error {
    match e {
        Error::Model(message) => Error::Corrupt {
            path: path.to_path_buf(),
            message,
        },
        other => other,
    }
}
