//! model: here is a query, what are the next-token log-probs of each beam?
//!
//! A T5 encoder-decoder (Raffel et al., "Exploring the Limits of Transfer Learning with a
//! Unified Text-to-Text Transformer", JMLR 2020) on candle, written for training and beam
//! search. Every tensor name equals the Hugging Face checkpoint's (`shared.weight`,
//! `encoder.block.0.layer.0.SelfAttention.q.weight`, ...; see [`param_specs`]), and the config
//! is HF's `config.json`, so a local `t5-small` or `flan-t5-small` directory loads as is.
//!
//! Written here rather than taken from candle-transformers because beam search needs what its
//! T5 lacks: full-sequence logits for a training loss, a padding mask, and an explicit KV cache
//! that beams can reorder. The decoder step takes the cache as a value ([`DecoderCache`]):
//! self-attention keys and values grow by one position per step and are re-indexed with
//! [`DecoderCache::reorder`] when beams move; cross-attention keys and values are computed once
//! per query, and the beams of a query attend to them together as one batched product.
//!
//! [`bert`] is the BERT-family encoder (MiniLM) that a warm-started or DSI model reads with and
//! the dense baseline embeds with.
//!
//! Differences from HF: no dropout (genret trains small models on small data with a fixed
//! recipe; determinism and resumability matter more), f32 only.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use candle_core::{D, DType, Device, Module, Tensor, Var};
use candle_nn::{Embedding, Linear};
use rand::SeedableRng;
use rand_distr::{Distribution, Normal};
use serde::{Deserialize, Serialize};

use self::bert::{BertConfig, BertModel};
use crate::error::{Error, Result, cerr};

pub mod bert;
pub(crate) mod kernels;

/// The model's parameters by checkpoint tensor name, in a stable (sorted) order.
pub type Params = BTreeMap<String, Var>;

/// HF T5 `config.json` fields genret uses; unknown fields are ignored on read.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Config {
    pub vocab_size: usize,
    pub d_model: usize,
    pub d_kv: usize,
    pub d_ff: usize,
    pub num_layers: usize,
    #[serde(default)]
    pub num_decoder_layers: Option<usize>,
    pub num_heads: usize,
    #[serde(default = "default_buckets")]
    pub relative_attention_num_buckets: usize,
    #[serde(default = "default_max_distance")]
    pub relative_attention_max_distance: usize,
    #[serde(default = "default_eps")]
    pub layer_norm_epsilon: f64,
    /// `relu` (T5) or `gated-gelu` (T5 v1.1, flan-t5); `gated-relu` / `gated-silu` too.
    #[serde(default = "default_ff")]
    pub feed_forward_proj: String,
    #[serde(default = "default_true")]
    pub tie_word_embeddings: bool,
    /// Whether decoder states are scaled by d_model^-0.5 before the head. transformers 5
    /// writes it (a tied head may then be unscaled); older configs leave it out, and then it
    /// follows `tie_word_embeddings`, as transformers 4 did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale_decoder_outputs: Option<bool>,
    #[serde(default)]
    pub pad_token_id: u32,
    #[serde(default = "default_eos")]
    pub eos_token_id: u32,
    #[serde(default)]
    pub decoder_start_token_id: u32,
    #[serde(default = "default_model_type")]
    pub model_type: String,
    #[serde(default = "default_true")]
    pub is_encoder_decoder: bool,
    /// genret's warm start: a BERT-family encoder in place of T5's (whose `num_layers` is
    /// then 0). Its tensors are stored under `bert.` beside the decoder's, and stay frozen in
    /// training. Absent from plain T5 configs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bert_encoder: Option<BertConfig>,
    /// genret: the only token ids the decoder may write (sorted, distinct); logits are computed
    /// for these alone and every other token has log-prob -inf. Absent: the whole vocabulary.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_tokens: Option<Vec<u32>>,
    /// genret: a copy head (pointer-generator, See et al., ACL 2017) beside the vocabulary
    /// head; its tensors are `copy.*`. Absent from plain T5 configs.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub copy_attention: bool,
    /// genret, with a frozen BERT encoder: a trainable vector per encoder token
    /// (`encoder.lexical.weight`, zero at the start) added, times `sqrt(d_model)`, to the
    /// encoder's output at that token, so training can give the decoder a token's identity
    /// where the frozen contextual states blur it (DSI: a rare word that names a document).
    /// The factor lets AdamW's steps (about the learning rate per coordinate) move it at the
    /// scale of the states (about 1 per coordinate after BERT's LayerNorm). Absent from plain
    /// T5 configs.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub lexical_memory: bool,
    /// genret: the encoder tokens that have a [`lexical_memory`](Self::lexical_memory)
    /// vector (sorted, distinct; the table's rows in order); absent: every token. Other
    /// tokens add nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lexical_tokens: Option<Vec<u32>>,
}

fn default_buckets() -> usize {
    32
}
fn default_max_distance() -> usize {
    128
}
fn default_eps() -> f64 {
    1e-6
}
fn default_ff() -> String {
    "relu".into()
}
fn default_true() -> bool {
    true
}
fn default_eos() -> u32 {
    1
}
fn default_model_type() -> String {
    "t5".into()
}

/// Named model sizes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Preset {
    /// 2+2 layers, d_model 64: for tests.
    Tiny,
    /// 3+3 layers, d_model 256: the demo size, trains on Cranfield in minutes on 2 cores.
    Small,
    /// T5-base geometry: 12+12 layers, d_model 768.
    Base,
}

impl Config {
    /// A preset geometry for a vocabulary; pad / eos ids are genret's (0 / 1).
    pub fn preset(preset: Preset, vocab_size: usize) -> Config {
        let (d_model, d_kv, d_ff, layers, heads) = match preset {
            Preset::Tiny => (64, 16, 128, 2, 4),
            Preset::Small => (256, 32, 1024, 3, 8),
            Preset::Base => (768, 64, 3072, 12, 12),
        };
        Config {
            vocab_size,
            d_model,
            d_kv,
            d_ff,
            num_layers: layers,
            num_decoder_layers: Some(layers),
            num_heads: heads,
            relative_attention_num_buckets: 32,
            relative_attention_max_distance: 128,
            layer_norm_epsilon: 1e-6,
            feed_forward_proj: "relu".into(),
            tie_word_embeddings: true,
            scale_decoder_outputs: None,
            pad_token_id: 0,
            eos_token_id: 1,
            decoder_start_token_id: 0,
            model_type: "t5".into(),
            is_encoder_decoder: true,
            bert_encoder: None,
            output_tokens: None,
            copy_attention: false,
            lexical_memory: false,
            lexical_tokens: None,
        }
    }

    /// Whether the head scales decoder states by d_model^-0.5 (HF's `scale_decoder_outputs`,
    /// which defaults to `tie_word_embeddings`).
    pub fn scales_head(&self) -> bool {
        self.scale_decoder_outputs
            .unwrap_or(self.tie_word_embeddings)
    }

    pub fn decoder_layers(&self) -> usize {
        self.num_decoder_layers.unwrap_or(self.num_layers)
    }

    fn gated(&self) -> bool {
        self.feed_forward_proj.starts_with("gated-")
    }

    fn activation(&self) -> Result<Activation> {
        let name = self
            .feed_forward_proj
            .strip_prefix("gated-")
            .unwrap_or(&self.feed_forward_proj);
        match name {
            "relu" => Ok(Activation::Relu),
            "gelu" | "gelu_new" => Ok(Activation::Gelu),
            "silu" => Ok(Activation::Silu),
            other => Err(Error::Model(format!(
                "feed_forward_proj {other:?} is not supported (relu, gelu, silu, gated-*)"
            ))),
        }
    }

    /// Number of parameters.
    pub fn num_params(&self) -> usize {
        param_specs(self)
            .iter()
            .map(|s| s.shape.iter().product::<usize>())
            .sum()
    }
}

#[derive(Debug, Clone, Copy)]
enum Activation {
    Relu,
    /// HF `gelu_new`: the tanh approximation.
    Gelu,
    Silu,
}

impl Activation {
    fn apply(self, x: &Tensor) -> candle_core::Result<Tensor> {
        match self {
            Activation::Relu => x.relu(),
            Activation::Gelu => x.gelu(),
            Activation::Silu => x.silu(),
        }
    }
}

/// How a fresh parameter starts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Init {
    /// Normal with this standard deviation (HF's `_init_weights`, factor 1.0).
    Normal(f64),
    /// Norm scales.
    Ones,
    /// Biases (BERT's).
    Zeros,
}

/// One parameter: its checkpoint name, shape and initialisation.
#[derive(Debug, Clone, PartialEq)]
pub struct ParamSpec {
    pub name: String,
    pub shape: Vec<usize>,
    pub init: Init,
}

/// Parameters that training leaves alone: a warm-start encoder's.
pub fn is_frozen(name: &str) -> bool {
    name.starts_with("bert.")
}

/// Every parameter of a T5 model with `config`, named as in HF checkpoints.
pub fn param_specs(c: &Config) -> Vec<ParamSpec> {
    let mut specs = Vec::new();
    let mut add = |name: String, shape: Vec<usize>, init_std: f64| {
        specs.push(ParamSpec {
            name,
            shape,
            init: if init_std == 0.0 {
                Init::Ones
            } else {
                Init::Normal(init_std)
            },
        })
    };
    let (d, kv, h, ff) = (c.d_model, c.d_kv, c.num_heads, c.d_ff);
    let inner = h * kv;
    let dm = (d as f64).powf(-0.5);
    add("shared.weight".into(), vec![c.vocab_size, d], 1.0);
    let attention = |add: &mut dyn FnMut(String, Vec<usize>, f64), p: &str, bias: bool| {
        add(
            format!("{p}.q.weight"),
            vec![inner, d],
            ((d * kv) as f64).powf(-0.5),
        );
        add(format!("{p}.k.weight"), vec![inner, d], dm);
        add(format!("{p}.v.weight"), vec![inner, d], dm);
        add(
            format!("{p}.o.weight"),
            vec![d, inner],
            (inner as f64).powf(-0.5),
        );
        if bias {
            add(
                format!("{p}.relative_attention_bias.weight"),
                vec![c.relative_attention_num_buckets, h],
                dm,
            );
        }
    };
    let feed_forward = |add: &mut dyn FnMut(String, Vec<usize>, f64), p: &str| {
        if c.gated() {
            add(format!("{p}.DenseReluDense.wi_0.weight"), vec![ff, d], dm);
            add(format!("{p}.DenseReluDense.wi_1.weight"), vec![ff, d], dm);
        } else {
            add(format!("{p}.DenseReluDense.wi.weight"), vec![ff, d], dm);
        }
        add(
            format!("{p}.DenseReluDense.wo.weight"),
            vec![d, ff],
            (ff as f64).powf(-0.5),
        );
        add(format!("{p}.layer_norm.weight"), vec![d], 0.0);
    };
    if c.bert_encoder.is_none() {
        for i in 0..c.num_layers {
            let p = format!("encoder.block.{i}.layer");
            attention(&mut add, &format!("{p}.0.SelfAttention"), i == 0);
            add(format!("{p}.0.layer_norm.weight"), vec![d], 0.0);
            feed_forward(&mut add, &format!("{p}.1"));
        }
        add("encoder.final_layer_norm.weight".into(), vec![d], 0.0);
    }
    for i in 0..c.decoder_layers() {
        let p = format!("decoder.block.{i}.layer");
        attention(&mut add, &format!("{p}.0.SelfAttention"), i == 0);
        add(format!("{p}.0.layer_norm.weight"), vec![d], 0.0);
        attention(&mut add, &format!("{p}.1.EncDecAttention"), false);
        add(format!("{p}.1.layer_norm.weight"), vec![d], 0.0);
        feed_forward(&mut add, &format!("{p}.2"));
    }
    add("decoder.final_layer_norm.weight".into(), vec![d], 0.0);
    if !c.tie_word_embeddings {
        add("lm_head.weight".into(), vec![c.vocab_size, d], dm);
    }
    if c.copy_attention {
        add("copy.q.weight".into(), vec![d, d], dm);
        add("copy.k.weight".into(), vec![d, d], dm);
        add("copy.gate.weight".into(), vec![1, d], dm);
    }
    if let Some(b) = &c.bert_encoder {
        if c.lexical_memory {
            let rows = c.lexical_tokens.as_ref().map_or(b.vocab_size, Vec::len);
            specs.push(ParamSpec {
                name: "encoder.lexical.weight".into(),
                shape: vec![rows, d],
                init: Init::Zeros,
            });
        }
        for (name, shape) in bert::tensor_shapes(b) {
            let init = if name.ends_with("LayerNorm.weight") {
                Init::Ones
            } else if name.ends_with(".bias") {
                Init::Zeros
            } else {
                Init::Normal(0.02)
            };
            specs.push(ParamSpec {
                name: format!("bert.{name}"),
                shape,
                init,
            });
        }
    }
    specs
}

/// Fresh parameters with HF's T5 initialisation, drawn from a ChaCha8 generator seeded with
/// `seed`: the same seed gives bit-identical parameters on every machine.
pub fn init_params(config: &Config, seed: u64, device: &Device) -> Result<Params> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut params = Params::new();
    for spec in param_specs(config) {
        let n: usize = spec.shape.iter().product();
        let values: Vec<f32> = match spec.init {
            Init::Ones => vec![1.0; n],
            Init::Zeros => vec![0.0; n],
            Init::Normal(std) => {
                let normal = Normal::new(0.0, std).expect("positive std");
                (0..n).map(|_| normal.sample(&mut rng) as f32).collect()
            }
        };
        let t = Tensor::from_vec(values, spec.shape.as_slice(), device).map_err(cerr)?;
        params.insert(spec.name, Var::from_tensor(&t).map_err(cerr)?);
    }
    Ok(params)
}

/// Parameters from `tensors` (a checkpoint), converted to f32 and checked against the specs:
/// a missing or mis-shaped tensor is an error naming it. `encoder.embed_tokens.weight` stands
/// in for `shared.weight` when only the former is stored; extra tensors are ignored.
pub fn params_from_tensors(
    config: &Config,
    mut tensors: std::collections::HashMap<String, Tensor>,
) -> Result<Params> {
    if !tensors.contains_key("shared.weight")
        && let Some(t) = tensors.remove("encoder.embed_tokens.weight")
    {
        tensors.insert("shared.weight".into(), t);
    }
    let mut params = Params::new();
    for spec in param_specs(config) {
        let t = tensors
            .remove(&spec.name)
            .ok_or_else(|| Error::Model(format!("checkpoint has no tensor {:?}", spec.name)))?;
        if t.dims() != spec.shape.as_slice() {
            return Err(Error::Model(format!(
                "tensor {:?} has shape {:?}, config implies {:?}",
                spec.name,
                t.dims(),
                spec.shape
            )));
        }
        let t = t.to_dtype(DType::F32).map_err(cerr)?;
        params.insert(spec.name, Var::from_tensor(&t).map_err(cerr)?);
    }
    Ok(params)
}

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
        return Err(Error::InvalidInput(format!(
            "{}: hidden size {h} / vocabulary {} do not fit a decoder with {} heads and vocabulary {}",
            dir.display(),
            bert_config.vocab_size,
            config.num_heads,
            config.vocab_size
        )));
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
    Err(Error::InvalidInput(format!(
        "no model at {name_or_path:?}: expected a directory with config.json and model.safetensors, \
         or a model name present in the Hugging Face cache (this machine cannot download it)"
    )))
}

/// Attention as T5 does it: no 1/sqrt(d) scaling (the initialisation accounts for it).
#[derive(Debug, Clone)]
struct T5Attention {
    q: Linear,
    k: Linear,
    v: Linear,
    o: Linear,
    relative_attention_bias: Option<Embedding>,
    n_heads: usize,
    d_kv: usize,
}

/// Per-call switches between the differentiable ops training needs and candle's fused ops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Train,
    Infer,
}

fn rms_norm(x: &Tensor, w: &Tensor, eps: f64, mode: Mode) -> candle_core::Result<Tensor> {
    match mode {
        Mode::Train => kernels::rms_norm(x, w, eps),
        Mode::Infer => candle_nn::ops::rms_norm(&x.contiguous()?, w, eps as f32),
    }
}

/// Rows at or below which an inference matmul runs on the calling thread.
const SMALL_ROWS: usize = 64;

/// Whether an inference product should take the single-threaded path: candle parallelises
/// every matmul, and for the decoder step's `(10, 256) x (256, 256)` products the thread
/// hand-off costs 4-5x the arithmetic (measured: 185 us vs 35 us), which made the step
/// overhead-bound. Large products (the vocabulary head, training) stay with candle.
fn single_threaded(mode: Mode, rows: usize, ts: &[&Tensor]) -> bool {
    mode == Mode::Infer
        && rows <= SMALL_ROWS
        && ts
            .iter()
            .all(|t| t.device().is_cpu() && t.dtype() == DType::F32)
}

/// `x @ l.weight^T` (T5 linears have no bias); single-threaded for a decoder step.
fn linear(l: &Linear, x: &Tensor, mode: Mode) -> candle_core::Result<Tensor> {
    let w = l.weight();
    let k = x.dim(D::Minus1)?;
    let rows = x.elem_count() / k.max(1);
    let (n, wk) = w.dims2()?;
    if !single_threaded(mode, rows, &[x, w]) || wk != k || !w.is_contiguous() {
        return l.forward(x);
    }
    let x = x.contiguous()?;
    let mut out = vec![0f32; rows * n];
    kernels::with_slice(&x, |xv| {
        kernels::with_slice(w, |wv| {
            kernels::small_gemm(&mut out, (rows, n, k), xv, (k, 1), wv, (1, k))
        })
    })??;
    let mut dims = x.dims().to_vec();
    *dims.last_mut().expect("x has a last dimension") = n;
    Tensor::from_vec(out, dims, x.device())
}

/// Batched `a @ b` over equal leading dimensions (any strides); single-threaded per batch
/// for the small attention products of a decoder step, else candle's matmul.
fn matmul(a: &Tensor, b: &Tensor, mode: Mode) -> candle_core::Result<Tensor> {
    let (ad, bd) = (a.dims(), b.dims());
    let r = ad.len();
    if r < 2 || bd.len() != r || ad[..r - 2] != bd[..r - 2] || ad[r - 1] != bd[r - 2] {
        return a.matmul(b);
    }
    let (m, k, n) = (ad[r - 2], ad[r - 1], bd[r - 1]);
    if !single_threaded(mode, m, &[a, b]) {
        return a.matmul(b);
    }
    let batch: usize = ad[..r - 2].iter().product();
    let (sa, sb) = (a.stride(), b.stride());
    // Offset of batch `i` in a tensor with these dims and strides.
    let offset = |mut i: usize, strides: &[usize]| {
        let mut off = 0;
        for d in (0..r - 2).rev() {
            off += (i % ad[d]) * strides[d];
            i /= ad[d];
        }
        off
    };
    let mut out = vec![0f32; batch * m * n];
    kernels::with_slice(a, |av| {
        kernels::with_slice(b, |bv| {
            for (i, dst) in out.chunks_mut(m * n).enumerate() {
                kernels::small_gemm(
                    dst,
                    (m, n, k),
                    &av[offset(i, sa)..],
                    (sa[r - 2], sa[r - 1]),
                    &bv[offset(i, sb)..],
                    (sb[r - 2], sb[r - 1]),
                );
            }
        })
    })??;
    let mut dims = ad.to_vec();
    dims[r - 1] = n;
    Tensor::from_vec(out, dims, a.device())
}

fn softmax(x: &Tensor, mode: Mode) -> candle_core::Result<Tensor> {
    match mode {
        Mode::Train => kernels::softmax_last_dim(x),
        Mode::Infer => candle_nn::ops::softmax_last_dim(x),
    }
}

impl T5Attention {
    fn new(p: &Getter, prefix: &str, bias: bool, c: &Config) -> Result<Self> {
        let linear = |n: &str| -> Result<Linear> {
            Ok(Linear::new(p.get(&format!("{prefix}.{n}.weight"))?, None))
        };
        Ok(T5Attention {
            q: linear("q")?,
            k: linear("k")?,
            v: linear("v")?,
            o: linear("o")?,
            relative_attention_bias: if bias {
                Some(Embedding::new(
                    p.get(&format!("{prefix}.relative_attention_bias.weight"))?,
                    c.num_heads,
                ))
            } else {
                None
            },
            n_heads: c.num_heads,
            d_kv: c.d_kv,
        })
    }

    /// `(b, t, d)` -> `(b, heads, t, d_kv)`.
    fn split_heads(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let (b, t, _) = x.dims3()?;
        x.reshape((b, t, self.n_heads, self.d_kv))?
            .transpose(1, 2)?
            .contiguous()
    }

    /// Keys and values of `source`, split into heads.
    fn key_values(&self, source: &Tensor, mode: Mode) -> candle_core::Result<(Tensor, Tensor)> {
        Ok((
            self.split_heads(&linear(&self.k, source, mode)?)?,
            self.split_heads(&linear(&self.v, source, mode)?)?,
        ))
    }

    /// Attends queries from `x` `(b, tq, d)` over keys/values `(b, h, tk, d_kv)` with an
    /// additive `bias` broadcastable to `(b, h, tq, tk)`.
    fn attend(
        &self,
        x: &Tensor,
        k: &Tensor,
        v: &Tensor,
        bias: &Tensor,
        mode: Mode,
    ) -> candle_core::Result<Tensor> {
        let (b, tq, _) = x.dims3()?;
        let q = self.split_heads(&linear(&self.q, x, mode)?)?;
        let scores = matmul(&q, &k.t()?, mode)?.broadcast_add(bias)?;
        let weights = softmax(&scores, mode)?;
        let out = matmul(&weights, v, mode)?;
        let out = out
            .transpose(1, 2)?
            .reshape((b, tq, self.n_heads * self.d_kv))?;
        linear(&self.o, &out, mode)
    }
}

/// HF's relative position bucket for `relative = key - query`.
fn relative_bucket(relative: i64, bidirectional: bool, buckets: usize, max_distance: usize) -> u32 {
    let mut num_buckets = buckets as i64;
    let mut bucket = 0i64;
    let mut rel = relative;
    if bidirectional {
        num_buckets /= 2;
        if rel > 0 {
            bucket += num_buckets;
        }
        rel = rel.abs();
    } else {
        rel = -rel.min(0);
    }
    let max_exact = num_buckets / 2;
    if rel < max_exact {
        bucket += rel;
    } else {
        let large = max_exact
            + ((rel as f64 / max_exact as f64).ln() / (max_distance as f64 / max_exact as f64).ln()
                * (num_buckets - max_exact) as f64) as i64;
        bucket += large.min(num_buckets - 1);
    }
    bucket as u32
}

/// Position bias `(1, heads, q_len, k_len)` for queries at `q_start..q_start + q_len`.
fn position_bias(
    table: &Embedding,
    c: &Config,
    q_start: usize,
    q_len: usize,
    k_len: usize,
    bidirectional: bool,
) -> candle_core::Result<Tensor> {
    let mut ids = Vec::with_capacity(q_len * k_len);
    for q in q_start..q_start + q_len {
        for k in 0..k_len {
            ids.push(relative_bucket(
                k as i64 - q as i64,
                bidirectional,
                c.relative_attention_num_buckets,
                c.relative_attention_max_distance,
            ));
        }
    }
    let ids = Tensor::from_vec(ids, (q_len, k_len), table.embeddings().device())?;
    table.forward(&ids)?.permute((2, 0, 1))?.unsqueeze(0)
}

#[derive(Debug, Clone)]
struct T5LayerFF {
    wi: Linear,
    /// Gated variants: `act(wi_0 x) * wi_1 x`.
    wi_1: Option<Linear>,
    wo: Linear,
    layer_norm: Tensor,
    act: Activation,
    eps: f64,
}

impl T5LayerFF {
    fn new(p: &Getter, prefix: &str, c: &Config) -> Result<Self> {
        let w = |n: &str| -> Result<Linear> {
            Ok(Linear::new(
                p.get(&format!("{prefix}.DenseReluDense.{n}.weight"))?,
                None,
            ))
        };
        let (wi, wi_1) = if c.gated() {
            (w("wi_0")?, Some(w("wi_1")?))
        } else {
            (w("wi")?, None)
        };
        Ok(T5LayerFF {
            wi,
            wi_1,
            wo: w("wo")?,
            layer_norm: p.get(&format!("{prefix}.layer_norm.weight"))?,
            act: c.activation()?,
            eps: c.layer_norm_epsilon,
        })
    }

    fn forward(&self, x: &Tensor, mode: Mode) -> candle_core::Result<Tensor> {
        let h = rms_norm(x, &self.layer_norm, self.eps, mode)?;
        let mut a = self.act.apply(&linear(&self.wi, &h, mode)?)?;
        if let Some(wi_1) = &self.wi_1 {
            a = (a * linear(wi_1, &h, mode)?)?;
        }
        x + linear(&self.wo, &a, mode)?
    }
}

#[derive(Debug, Clone)]
struct T5Block {
    self_attention: T5Attention,
    self_norm: Tensor,
    /// Decoder blocks only.
    cross_attention: Option<(T5Attention, Tensor)>,
    ff: T5LayerFF,
    eps: f64,
}

impl T5Block {
    fn new(p: &Getter, stack: &str, i: usize, c: &Config) -> Result<Self> {
        let prefix = format!("{stack}.block.{i}.layer");
        let decoder = stack == "decoder";
        let cross_attention = if decoder {
            Some((
                T5Attention::new(p, &format!("{prefix}.1.EncDecAttention"), false, c)?,
                p.get(&format!("{prefix}.1.layer_norm.weight"))?,
            ))
        } else {
            None
        };
        let ff_index = if decoder { 2 } else { 1 };
        Ok(T5Block {
            self_attention: T5Attention::new(p, &format!("{prefix}.0.SelfAttention"), i == 0, c)?,
            self_norm: p.get(&format!("{prefix}.0.layer_norm.weight"))?,
            cross_attention,
            ff: T5LayerFF::new(p, &format!("{prefix}.{ff_index}"), c)?,
            eps: c.layer_norm_epsilon,
        })
    }
}

/// The relative position bias table of a stack, which its first block holds (T5 shares it).
fn bias_table(blocks: &[T5Block]) -> &Embedding {
    blocks[0]
        .self_attention
        .relative_attention_bias
        .as_ref()
        .expect("block 0 has the bias table")
}

/// Looks parameters up by name.
struct Getter<'a>(&'a Params);

impl Getter<'_> {
    fn get(&self, name: &str) -> Result<Tensor> {
        self.0
            .get(name)
            .map(|v| v.as_tensor().clone())
            .ok_or_else(|| Error::Model(format!("missing parameter {name:?}")))
    }
}

/// The encoder's output for a batch of queries, with its padding mask as an additive bias.
#[derive(Debug, Clone)]
pub struct Encoded {
    /// `(batch, src_len, d_model)`.
    pub states: Tensor,
    /// `(batch, 1, 1, src_len)`: 0 for tokens, a large negative number for padding.
    pub mask_bias: Tensor,
    /// The copy head's view of the source, when the model has one.
    copy: Option<CopySource>,
}

impl Encoded {
    /// An encoder output computed elsewhere: `states` `(batch, src_len, d_model)` with the
    /// `(batch, src_len)` 0/1 `mask` of real tokens. For models without a copy head (whose
    /// view of the source needs the token ids).
    pub fn from_states(states: Tensor, mask: &Tensor) -> Result<Encoded> {
        Ok(Encoded {
            states,
            mask_bias: mask_bias(mask).map_err(cerr)?,
            copy: None,
        })
    }
}

/// The attention bias of a `(batch, src_len)` 0/1 mask, `(batch, 1, 1, src_len)`: 0 where
/// attended, -1e9 where padded; large but finite so a fully padded row stays finite.
fn mask_bias(mask: &Tensor) -> candle_core::Result<Tensor> {
    let (b, s) = mask.dims2()?;
    (mask.reshape((b, 1, 1, s))? - 1.0)? * 1e9
}

/// What the copy head needs of a source batch.
#[derive(Debug, Clone)]
struct CopySource {
    /// `(batch, src_len, d_model)`: the copy attention's keys.
    keys: Tensor,
    /// `(batch, 1, src_len)`: 0 where the token can be copied, a large negative number where
    /// not (padding, tokens outside the output vocabulary).
    bias: Tensor,
    /// Per batch row and source position: the output row its token copies into, `u32::MAX`
    /// for none.
    rows: Vec<Vec<u32>>,
}

/// The decoder's state for rows = queries x beams (row `r` belongs to query `r / beams`).
#[derive(Debug, Clone)]
pub struct DecoderCache {
    /// Per decoder layer: self-attention keys and values `(rows, heads, steps, d_kv)`.
    self_kv: Vec<Option<(Tensor, Tensor)>>,
    /// Per decoder layer: cross-attention keys and values `(queries, heads, src, d_kv)`,
    /// computed once and shared by a query's beams.
    cross_kv: Vec<(Tensor, Tensor)>,
    /// `(queries, 1, 1, src)` padding bias.
    cross_bias: Tensor,
    /// Per query: the copy head's keys and source tokens.
    copy: Option<CopySource>,
    beams: usize,
    queries: usize,
    /// Tokens consumed so far (the next step's position).
    pub steps: usize,
}

impl DecoderCache {
    pub fn rows(&self) -> usize {
        self.queries * self.beams
    }

    pub fn beams(&self) -> usize {
        self.beams
    }

    /// Re-indexes the self-attention cache after beams moved: new row `i` continues old row
    /// `rows[i]`. Rows must stay within their query (`rows[i] / beams == i / beams`), which
    /// beam search guarantees; cross-attention state is per query and is not touched.
    /// Cost: one `index_select` per layer of the cached keys and values, no recomputation.
    pub fn reorder(&mut self, rows: &[u32]) -> Result<()> {
        if rows.len() != self.rows()
            || rows
                .iter()
                .enumerate()
                .any(|(i, &r)| r as usize / self.beams != i / self.beams)
        {
            return Err(Error::InvalidInput(
                "reorder: every row must come from a row of the same query".into(),
            ));
        }
        let Some(Some((k0, _))) = self.self_kv.first() else {
            return Ok(());
        };
        let index = Tensor::new(rows, k0.device()).map_err(cerr)?;
        for entry in self.self_kv.iter_mut().flatten() {
            entry.0 = entry.0.index_select(&index, 0).map_err(cerr)?;
            entry.1 = entry.1.index_select(&index, 0).map_err(cerr)?;
        }
        Ok(())
    }
}

/// T5 encoder-decoder with a language-modelling head (HF `T5ForConditionalGeneration`).
#[derive(Debug, Clone)]
pub struct T5ForConditionalGeneration {
    pub config: Config,
    shared: Embedding,
    encoder: Encoder,
    decoder: Vec<T5Block>,
    decoder_norm: Tensor,
    /// `shared.weight` itself when embeddings are tied (read at every call, so training
    /// updates reach it), else `lm_head.weight`.
    lm_head: Tensor,
    output: Option<OutputVocab>,
    copy: Option<CopyHead>,
    device: Device,
}

/// The copy head (pointer-generator, See et al., "Get To The Point", ACL 2017): one attention
/// over the source whose weights, summed per token, are a second distribution over the output
/// vocabulary, mixed with the vocabulary head's by a gate on the decoder state `h`:
///
/// ```text
/// P(w) = (1 - g) P_vocab(w) + g * sum_{s : source_s = w} a_s,   g = sigmoid(gate . h)
/// ```
///
/// A query's own words, which the n-grams of its relevant documents mostly repeat, are then one
/// attention away instead of a prediction the vocabulary head must learn for every word.
#[derive(Debug, Clone)]
struct CopyHead {
    q: Linear,
    k: Linear,
    /// `(1, d_model)`.
    gate: Tensor,
}

/// `log((1 - g) softmax(logits) + g * copy)` for `n` rows: `logits` `(n, out)`, copy attention
/// `attn` `(n, src)` and gate `(n, 1)`; row `i` copies from the source tokens
/// `rows[source_of(i)]` (output rows, `u32::MAX` for none). Inference only, on the host:
/// O(n * out) additions (a token no source position names keeps `log(1 - g) + logp`) plus
/// O(n * src) for the copied tokens.
fn mix_copy(
    logits: &Tensor,
    attn: &Tensor,
    gate: &Tensor,
    rows: &[Vec<u32>],
    source_of: impl Fn(usize) -> usize,
) -> candle_core::Result<Tensor> {
    let (n, out) = logits.dims2()?;
    let mut logp = candle_nn::ops::log_softmax(logits, D::Minus1)?
        .flatten_all()?
        .to_vec1::<f32>()?;
    let a = attn.flatten_all()?.to_vec1::<f32>()?;
    let g = gate.flatten_all()?.to_vec1::<f32>()?;
    let src = a.len() / n.max(1);
    let mut copied: Vec<(u32, f32)> = Vec::with_capacity(src);
    for (i, row) in logp.chunks_mut(out).enumerate() {
        let gi = g[i];
        let keep = (1.0 - gi).ln();
        row.iter_mut().for_each(|x| *x += keep);
        // A token at several source positions copies their summed attention.
        copied.clear();
        for (j, &r) in rows[source_of(i)].iter().enumerate() {
            if r == u32::MAX {
                continue;
            }
            match copied.iter_mut().find(|(t, _)| *t == r) {
                Some((_, mass)) => *mass += a[i * src + j],
                None => copied.push((r, a[i * src + j])),
            }
        }
        for &(r, mass) in &copied {
            let x = &mut row[r as usize];
            *x = (x.exp() + gi * mass).ln();
        }
    }
    Tensor::from_vec(logp, (n, out), logits.device())
}

/// A restricted output vocabulary (`Config::output_tokens`): a decoder writes only tokens of
/// its corpus, docids and specials, so the output layer need not score the rest (with a
/// 30k-token BERT vocabulary and a small corpus, most of it).
#[derive(Debug, Clone)]
struct OutputVocab {
    /// The allowed token ids, `(rows,)` u32.
    ids: Tensor,
    /// `row_of[token]`: the token's row among the allowed ones, `u32::MAX` if not allowed.
    row_of: Vec<u32>,
    /// `(1, vocab)`: 0 for allowed tokens, -inf for the rest; the base that scores scatter into.
    base: Tensor,
    /// The head's allowed rows as of construction, for inference. Training (which updates the
    /// embeddings in place) selects them afresh at every call.
    head_rows: Tensor,
}

impl OutputVocab {
    fn new(tokens: &[u32], vocab: usize, lm_head: &Tensor) -> Result<OutputVocab> {
        if tokens.is_empty()
            || tokens.windows(2).any(|w| w[0] >= w[1])
            || tokens[tokens.len() - 1] as usize >= vocab
        {
            return Err(Error::Model(format!(
                "output_tokens must be sorted, distinct and below the vocabulary size {vocab}"
            )));
        }
        let mut row_of = vec![u32::MAX; vocab];
        let mut base = vec![f32::NEG_INFINITY; vocab];
        for (row, &t) in tokens.iter().enumerate() {
            row_of[t as usize] = row as u32;
            base[t as usize] = 0.0;
        }
        let device = lm_head.device();
        let ids = Tensor::new(tokens, device).map_err(cerr)?;
        let head_rows = lm_head.index_select(&ids, 0).map_err(cerr)?;
        Ok(OutputVocab {
            base: Tensor::from_vec(base, (1, vocab), device).map_err(cerr)?,
            ids,
            row_of,
            head_rows,
        })
    }

    /// Scores over the allowed rows, `(n, rows)`, spread over the whole vocabulary.
    fn scatter(&self, scores: &Tensor) -> candle_core::Result<Tensor> {
        let n = scores.dim(0)?;
        self.base
            .broadcast_as((n, self.row_of.len()))?
            .contiguous()?
            .index_add(&self.ids, scores, 1)
    }
}

/// T5's own encoder, or a frozen BERT-family one (genret's warm start).
#[derive(Debug, Clone)]
enum Encoder {
    T5 {
        blocks: Vec<T5Block>,
        norm: Tensor,
    },
    Bert {
        bert: BertModel,
        /// [`Config::lexical_memory`].
        lexical: Option<LexicalMemory>,
    },
}

/// [`Config::lexical_memory`]: the trainable table and, when it has rows for some tokens
/// only, each encoder token's row (`u32::MAX`: none).
#[derive(Debug, Clone)]
struct LexicalMemory {
    table: Tensor,
    row_of: Option<Vec<u32>>,
}

/// BERT's input ids for genret's: ids past BERT's vocabulary (genret's added special tokens,
/// which prefix every encoder input) map onto rows 1..=99, `[unused0]`..`[unused98]` in
/// BERT's WordPiece vocabularies: rows pretraining never used, so they mark the task without
/// meaning anything else.
fn bert_ids(ids: &Tensor, vocab: usize) -> candle_core::Result<Tensor> {
    let vocab = vocab as u32;
    let (b, s) = ids.dims2()?;
    let mapped: Vec<u32> = ids
        .flatten_all()?
        .to_vec1::<u32>()?
        .into_iter()
        .map(|id| {
            if id < vocab {
                id
            } else {
                1 + (id - vocab) % 99
            }
        })
        .collect();
    Tensor::from_vec(mapped, (b, s), ids.device())
}

impl T5ForConditionalGeneration {
    /// Builds the model over `params` (which it shares: training updates them in place).
    pub fn new(config: &Config, params: &Params) -> Result<Self> {
        let p = Getter(params);
        let shared_w = p.get("shared.weight")?;
        let device = shared_w.device().clone();
        let encoder = match &config.bert_encoder {
            Some(b) => {
                if b.hidden_size != config.d_model {
                    return Err(Error::Model(format!(
                        "the BERT encoder's hidden size {} differs from d_model {}",
                        b.hidden_size, config.d_model
                    )));
                }
                let tensors = params
                    .iter()
                    .filter(|(name, _)| is_frozen(name))
                    .map(|(name, var)| (name.clone(), var.as_tensor().clone()))
                    .collect();
                let lexical = if config.lexical_memory {
                    let table = p.get("encoder.lexical.weight")?;
                    let row_of = config.lexical_tokens.as_ref().map(|tokens| {
                        let mut row_of = vec![u32::MAX; b.vocab_size];
                        for (row, &t) in tokens.iter().enumerate() {
                            if let Some(slot) = row_of.get_mut(t as usize) {
                                *slot = row as u32;
                            }
                        }
                        row_of
                    });
                    Some(LexicalMemory { table, row_of })
                } else {
                    None
                };
                Encoder::Bert {
                    bert: BertModel::from_tensors(b.clone(), tensors, &device)?,
                    lexical,
                }
            }
            None => Encoder::T5 {
                blocks: (0..config.num_layers)
                    .map(|i| T5Block::new(&p, "encoder", i, config))
                    .collect::<Result<_>>()?,
                norm: p.get("encoder.final_layer_norm.weight")?,
            },
        };
        let decoder = (0..config.decoder_layers())
            .map(|i| T5Block::new(&p, "decoder", i, config))
            .collect::<Result<_>>()?;
        let lm_head = if config.tie_word_embeddings {
            shared_w.clone()
        } else {
            p.get("lm_head.weight")?
        };
        let output = match &config.output_tokens {
            Some(tokens) => Some(OutputVocab::new(tokens, config.vocab_size, &lm_head)?),
            None => None,
        };
        let copy = if config.copy_attention {
            Some(CopyHead {
                q: Linear::new(p.get("copy.q.weight")?, None),
                k: Linear::new(p.get("copy.k.weight")?, None),
                gate: p.get("copy.gate.weight")?,
            })
        } else {
            None
        };
        Ok(T5ForConditionalGeneration {
            config: config.clone(),
            shared: Embedding::new(shared_w, config.d_model),
            encoder,
            decoder,
            decoder_norm: p.get("decoder.final_layer_norm.weight")?,
            lm_head,
            output,
            copy,
            device,
        })
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Pads `seqs` into `(batch, max_len)` ids and a `(batch, max_len)` 0/1 mask.
    pub fn pad_batch(&self, seqs: &[Vec<u32>]) -> Result<(Tensor, Tensor)> {
        let len = seqs.iter().map(Vec::len).max().unwrap_or(0).max(1);
        let mut ids = Vec::with_capacity(seqs.len() * len);
        let mut mask = Vec::with_capacity(seqs.len() * len);
        for s in seqs {
            ids.extend_from_slice(s);
            ids.extend(std::iter::repeat_n(self.config.pad_token_id, len - s.len()));
            mask.extend(std::iter::repeat_n(1f32, s.len()));
            mask.extend(std::iter::repeat_n(0f32, len - s.len()));
        }
        let ids = Tensor::from_vec(ids, (seqs.len(), len), &self.device).map_err(cerr)?;
        let mask = Tensor::from_vec(mask, (seqs.len(), len), &self.device).map_err(cerr)?;
        Ok((ids, mask))
    }

    fn encode_mode(&self, ids: &Tensor, mask: &Tensor, mode: Mode) -> candle_core::Result<Encoded> {
        let (b, s) = ids.dims2()?;
        let mask_bias = mask_bias(mask)?;
        let states = match &self.encoder {
            Encoder::T5 { blocks, norm } => {
                let mut x = self.shared.forward(ids)?;
                let table = bias_table(blocks);
                let bias =
                    position_bias(table, &self.config, 0, s, s, true)?.broadcast_add(&mask_bias)?;
                for block in blocks {
                    let h = rms_norm(&x, &block.self_norm, block.eps, mode)?;
                    let (k, v) = block.self_attention.key_values(&h, mode)?;
                    x = (x + block.self_attention.attend(&h, &k, &v, &bias, mode)?)?;
                    x = block.ff.forward(&x, mode)?;
                }
                rms_norm(&x, norm, self.config.layer_norm_epsilon, mode)?
            }
            Encoder::Bert { bert, lexical } => {
                // Frozen: detached, so backward never walks into it.
                let ids = bert_ids(ids, bert.config.vocab_size)?;
                let states = bert.forward_inner(&ids, mask)?.detach();
                match lexical {
                    Some(table) => (states + self.lexical_rows(table, &ids)?)?,
                    None => states,
                }
            }
        };
        let copy = match &self.copy {
            Some(head) => {
                let rows: Vec<Vec<u32>> = ids
                    .to_vec2::<u32>()?
                    .iter()
                    .zip(mask.to_vec2::<f32>()?)
                    .map(|(ids, mask)| {
                        ids.iter()
                            .zip(mask)
                            .map(|(&id, m)| match self.output_row(id) {
                                Some(row) if m > 0.0 => row,
                                _ => u32::MAX,
                            })
                            .collect()
                    })
                    .collect();
                let bias: Vec<f32> = rows
                    .iter()
                    .flatten()
                    .map(|&r| if r == u32::MAX { -1e9 } else { 0.0 })
                    .collect();
                Some(CopySource {
                    keys: linear(&head.k, &states, mode)?,
                    bias: Tensor::from_vec(bias, (b, 1, s), &self.device)?,
                    rows,
                })
            }
            None => None,
        };
        Ok(Encoded {
            states,
            mask_bias,
            copy,
        })
    }

    /// The output row of token `id`: the id itself, or its row in the restricted vocabulary;
    /// `None` if the decoder cannot write it.
    fn output_row(&self, id: u32) -> Option<u32> {
        match &self.output {
            None => ((id as usize) < self.config.vocab_size).then_some(id),
            Some(o) => o
                .row_of
                .get(id as usize)
                .copied()
                .filter(|&r| r != u32::MAX),
        }
    }

    /// The copy head's attention `(b, t, src_len)` and gate `(b, t, 1)` for decoder states
    /// `h` `(b, t, d_model)`.
    fn copy_parts(
        &self,
        head: &CopyHead,
        h: &Tensor,
        src: &CopySource,
        mode: Mode,
    ) -> candle_core::Result<(Tensor, Tensor)> {
        let q = (linear(&head.q, h, mode)? * (self.config.d_model as f64).powf(-0.5))?;
        let scores = matmul(&q, &src.keys.t()?, mode)?.broadcast_add(&src.bias)?;
        let attn = softmax(&scores, mode)?;
        let z = h.broadcast_matmul(&head.gate.t()?)?;
        // sigmoid from differentiable primitives.
        let gate = (z.neg()?.exp()? + 1.0)?.recip()?;
        Ok((attn, gate))
    }

    /// The encoder output of a batch whose frozen encoder states were computed beforehand
    /// (`states` `(batch, len, d_model)` of the padded `ids` with `mask`, as
    /// [`frozen_states`](Self::frozen_states) gives them): what the encoder would give,
    /// with the trainable [`Config::lexical_memory`] added. Models without a copy head.
    pub fn encoded_from_states(
        &self,
        states: Tensor,
        ids: &Tensor,
        mask: &Tensor,
    ) -> Result<Encoded> {
        let states = match &self.encoder {
            Encoder::Bert {
                bert,
                lexical: Some(table),
            } => {
                let run = || -> candle_core::Result<Tensor> {
                    let ids = bert_ids(ids, bert.config.vocab_size)?;
                    states + self.lexical_rows(table, &ids)?
                };
                run().map_err(cerr)?
            }
            _ => states,
        };
        Encoded::from_states(states, mask)
    }

    /// [`Config::lexical_memory`]'s vectors of `ids` `(batch, len)`, scaled: `(batch, len,
    /// d_model)`.
    fn lexical_rows(&self, memory: &LexicalMemory, ids: &Tensor) -> candle_core::Result<Tensor> {
        let scale = (self.config.d_model as f64).sqrt();
        let Some(row_of) = &memory.row_of else {
            return Embedding::new(memory.table.clone(), self.config.d_model).forward(ids)? * scale;
        };
        let (b, s) = ids.dims2()?;
        let (rows, keep): (Vec<u32>, Vec<f32>) = ids
            .flatten_all()?
            .to_vec1::<u32>()?
            .into_iter()
            .map(|id| match row_of.get(id as usize).copied() {
                Some(r) if r != u32::MAX => (r, scale as f32),
                _ => (0, 0.0),
            })
            .unzip();
        let rows = Tensor::from_vec(rows, b * s, &self.device)?;
        let keep = Tensor::from_vec(keep, (b * s, 1), &self.device)?;
        memory
            .table
            .index_select(&rows, 0)?
            .broadcast_mul(&keep)?
            .reshape((b, s, self.config.d_model))
    }

    /// The frozen encoder's states of a padded batch, without the trainable parts that
    /// [`encoded_from_states`](Self::encoded_from_states) adds: what a training run can
    /// compute once and cache. An error for a trainable (T5) encoder.
    pub fn frozen_states(&self, ids: &Tensor, mask: &Tensor) -> Result<Tensor> {
        match &self.encoder {
            Encoder::Bert { bert, .. } => {
                let run = || -> candle_core::Result<Tensor> {
                    let ids = bert_ids(ids, bert.config.vocab_size)?;
                    Ok(bert.forward_inner(&ids, mask)?.detach())
                };
                run().map_err(cerr)
            }
            Encoder::T5 { .. } => Err(Error::Model(
                "a T5 encoder trains with the decoder: its states cannot be cached".into(),
            )),
        }
    }

    /// Runs the encoder once over a padded batch (`ids`, `mask` from [`pad_batch`](Self::pad_batch)).
    pub fn encode(&self, ids: &Tensor, mask: &Tensor) -> Result<Encoded> {
        self.encode_mode(ids, mask, Mode::Infer).map_err(cerr)
    }

    /// Full teacher-forced pass: the final decoder states `(batch, tgt_len, d_model)` for
    /// decoder inputs `dec_ids` (targets shifted right, starting with
    /// `decoder_start_token_id`), and the encoder's output; [`head`](Self::head) turns the
    /// states into logits.
    fn forward_mode(
        &self,
        ids: &Tensor,
        mask: &Tensor,
        dec_ids: &Tensor,
        mode: Mode,
    ) -> candle_core::Result<(Tensor, Encoded)> {
        let enc = self.encode_mode(ids, mask, mode)?;
        let x = self.decode_states(&enc, dec_ids, mode)?;
        Ok((x, enc))
    }

    /// The decoder's final states `(batch, tgt_len, d_model)` for decoder inputs `dec_ids`
    /// over an encoder output.
    fn decode_states(
        &self,
        enc: &Encoded,
        dec_ids: &Tensor,
        mode: Mode,
    ) -> candle_core::Result<Tensor> {
        let (_, t) = dec_ids.dims2()?;
        let mut x = self.shared.forward(dec_ids)?;
        let table = bias_table(&self.decoder);
        let causal: Vec<f32> = (0..t)
            .flat_map(|q| (0..t).map(move |k| if k > q { -1e9 } else { 0.0 }))
            .collect();
        let causal = Tensor::from_vec(causal, (1, 1, t, t), &self.device)?;
        let self_bias =
            position_bias(table, &self.config, 0, t, t, false)?.broadcast_add(&causal)?;
        for block in &self.decoder {
            let h = rms_norm(&x, &block.self_norm, block.eps, mode)?;
            let (k, v) = block.self_attention.key_values(&h, mode)?;
            x = (x + block.self_attention.attend(&h, &k, &v, &self_bias, mode)?)?;
            let (cross, norm) = block.cross_attention.as_ref().expect("decoder block");
            let h = rms_norm(&x, norm, block.eps, mode)?;
            let (k, v) = cross.key_values(&enc.states, mode)?;
            x = (x + cross.attend(&h, &k, &v, &enc.mask_bias, mode)?)?;
            x = block.ff.forward(&x, mode)?;
        }
        rms_norm(&x, &self.decoder_norm, self.config.layer_norm_epsilon, mode)
    }

    /// Logits of decoder states over the output vocabulary: every token, or the allowed rows
    /// of [`Config::output_tokens`] in their order. HF scales the states by d_model^-0.5
    /// before the head where [`Config::scales_head`] says.
    fn head(&self, x: &Tensor, mode: Mode) -> candle_core::Result<Tensor> {
        let x = if self.config.scales_head() {
            (x * (self.config.d_model as f64).powf(-0.5))?
        } else {
            x.clone()
        };
        let selected;
        let weight = match (&self.output, mode) {
            (None, _) => &self.lm_head,
            (Some(o), Mode::Infer) => &o.head_rows,
            (Some(o), Mode::Train) => {
                selected = self.lm_head.index_select(&o.ids, 0)?;
                &selected
            }
        };
        if x.rank() == 2 && x.dim(0)? <= SMALL_ROWS {
            // A decoder step's few rows: `W @ x^T` makes the weight the left operand, which
            // gemm streams without first packing a transposed copy of it (1.7 ms instead of
            // 2.4 ms for 10 rows over 16k tokens).
            return weight.matmul(&x.t()?)?.t()?.contiguous();
        }
        x.broadcast_matmul(&weight.t()?)
    }

    /// Scores over the output rows `(..., rows)` spread over the whole vocabulary
    /// `(..., vocab)`, `-inf` outside the output vocabulary.
    fn full_vocab(&self, scores: Tensor) -> candle_core::Result<Tensor> {
        let Some(o) = &self.output else {
            return Ok(scores);
        };
        let dims = scores.dims().to_vec();
        let rows = scores.elem_count() / dims[dims.len() - 1];
        let full = o.scatter(&scores.reshape((rows, dims[dims.len() - 1]))?)?;
        let mut out_dims = dims;
        *out_dims.last_mut().expect("rank >= 1") = self.config.vocab_size;
        full.reshape(out_dims)
    }

    /// Scores `(batch, tgt_len, vocab)` of a teacher-forced pass, with inference ops: logits,
    /// or log-probs for a model with a copy head (whose mixture has no logits).
    pub fn forward(&self, ids: &Tensor, mask: &Tensor, dec_ids: &Tensor) -> Result<Tensor> {
        let run = || -> candle_core::Result<Tensor> {
            let (x, enc) = self.forward_mode(ids, mask, dec_ids, Mode::Infer)?;
            let logits = self.head(&x, Mode::Infer)?;
            let (Some(head), Some(src)) = (&self.copy, &enc.copy) else {
                return self.full_vocab(logits);
            };
            let (b, t, out) = logits.dims3()?;
            let (attn, gate) = self.copy_parts(head, &x, src, Mode::Infer)?;
            let s = attn.dim(2)?;
            let logp = mix_copy(
                &logits.reshape((b * t, out))?,
                &attn.reshape((b * t, s))?,
                &gate.reshape((b * t, 1))?,
                &src.rows,
                |i| i / t,
            )?;
            self.full_vocab(logp.reshape((b, t, out))?)
        };
        run().map_err(cerr)
    }

    /// Mean token cross-entropy of `targets` (each ending with EOS) given `sources`, with
    /// differentiable ops: call `.backward()` on the result to train.
    pub fn loss(&self, sources: &[Vec<u32>], targets: &[Vec<u32>]) -> Result<Tensor> {
        let (ids, mask) = self.pad_batch(sources)?;
        let enc = self.encode_mode(&ids, &mask, Mode::Train).map_err(cerr)?;
        self.loss_encoded(&enc, targets)
    }

    /// [`loss`](Self::loss) over an encoder output computed beforehand (a frozen encoder's
    /// cached states, [`Encoded::from_states`]): the decoder's part of a training step.
    pub fn loss_encoded(&self, enc: &Encoded, targets: &[Vec<u32>]) -> Result<Tensor> {
        if self.copy.is_some() && enc.copy.is_none() {
            return Err(Error::Model(
                "a model with a copy head needs the source tokens: use loss, not cached states"
                    .into(),
            ));
        }
        let start = self.config.decoder_start_token_id;
        let shifted: Vec<Vec<u32>> = targets
            .iter()
            .map(|t| {
                std::iter::once(start)
                    .chain(t[..t.len() - 1].iter().copied())
                    .collect()
            })
            .collect();
        let (dec_ids, tgt_mask) = self.pad_batch(&shifted)?;
        // Labels index the output rows: token ids, or rows of the restricted vocabulary.
        let rows: Vec<Vec<u32>> = targets
            .iter()
            .map(|t| {
                t.iter()
                    .map(|&id| {
                        self.output_row(id).ok_or_else(|| {
                            Error::InvalidInput(format!(
                                "target token {id} is outside the model's output vocabulary"
                            ))
                        })
                    })
                    .collect::<Result<Vec<u32>>>()
            })
            .collect::<Result<_>>()?;
        let (labels, _) = self.pad_batch(&rows)?;
        let run = || -> candle_core::Result<Tensor> {
            let x = self.decode_states(enc, &dec_ids, Mode::Train)?;
            let logits = self.head(&x, Mode::Train)?;
            let (b, t, v) = logits.dims3()?;
            let mut picked =
                kernels::label_log_softmax(&logits.reshape((b * t, v))?, &labels.flatten_all()?)?
                    .reshape((b, t))?;
            if let (Some(head), Some(src)) = (&self.copy, &enc.copy) {
                // P(label) = (1 - g) P_vocab(label) + g * (attention on the label's copies).
                let (attn, gate) = self.copy_parts(head, &x, src, Mode::Train)?;
                let (b, t, s) = attn.dims3()?;
                let matches: Vec<f32> = (0..b)
                    .flat_map(|i| {
                        let (rows, src_rows) = (&rows[i], &src.rows[i]);
                        (0..t).flat_map(move |j| {
                            let label = rows.get(j).copied().unwrap_or(u32::MAX);
                            src_rows
                                .iter()
                                .map(move |&r| f32::from(u8::from(r == label && r != u32::MAX)))
                        })
                    })
                    .collect();
                let matches = Tensor::from_vec(matches, (b, t, s), &self.device)?;
                let copied = (attn * matches)?.sum(2)?;
                let gate = gate.squeeze(2)?;
                let mixed = ((picked.exp()? * gate.affine(-1.0, 1.0)?)? + (copied * gate)?)?;
                picked = (mixed + 1e-12)?.log()?;
            }
            let total = (picked * &tgt_mask)?.sum_all()?;
            let count = tgt_mask.sum_all()?;
            total.neg()?.broadcast_div(&count)
        };
        run().map_err(cerr)
    }

    /// Starts decoding `beams` rows per query from an encoder output: computes every decoder
    /// layer's cross-attention keys and values once.
    pub fn start(&self, encoded: &Encoded, beams: usize) -> Result<DecoderCache> {
        let run = || -> candle_core::Result<DecoderCache> {
            let queries = encoded.states.dim(0)?;
            let cross_kv = self
                .decoder
                .iter()
                .map(|b| {
                    b.cross_attention
                        .as_ref()
                        .expect("decoder block")
                        .0
                        .key_values(&encoded.states, Mode::Infer)
                })
                .collect::<candle_core::Result<_>>()?;
            Ok(DecoderCache {
                self_kv: vec![None; self.decoder.len()],
                cross_kv,
                cross_bias: encoded.mask_bias.clone(),
                copy: encoded.copy.clone(),
                beams,
                queries,
                steps: 0,
            })
        };
        run().map_err(cerr)
    }

    /// One decoder step for every row: feeds `tokens` (one per row, at position
    /// `cache.steps`) and returns next-token log-probs `(rows, vocab)`, growing the cache.
    /// Cost: O(rows * (layers * d_model^2 + vocab * d_model)) plus attention over the steps so
    /// far and the source.
    pub fn step(&self, tokens: &[u32], cache: &mut DecoderCache) -> Result<Tensor> {
        if tokens.len() != cache.rows() {
            return Err(Error::InvalidInput(format!(
                "step: {} tokens for {} rows",
                tokens.len(),
                cache.rows()
            )));
        }
        self.step_inner(tokens, cache).map_err(cerr)
    }

    fn step_inner(&self, tokens: &[u32], cache: &mut DecoderCache) -> candle_core::Result<Tensor> {
        let mode = Mode::Infer;
        let rows = tokens.len();
        let (queries, beams) = (cache.queries, cache.beams);
        let pos = cache.steps;
        let ids = Tensor::new(tokens, &self.device)?.unsqueeze(1)?;
        let mut x = self.shared.forward(&ids)?; // (rows, 1, d)
        let table = bias_table(&self.decoder);
        let self_bias = position_bias(table, &self.config, pos, 1, pos + 1, false)?;
        for (l, block) in self.decoder.iter().enumerate() {
            let h = rms_norm(&x, &block.self_norm, block.eps, mode)?;
            let (k_new, v_new) = block.self_attention.key_values(&h, mode)?;
            let (k, v) = match cache.self_kv[l].take() {
                Some((k, v)) => (
                    Tensor::cat(&[&k, &k_new], 2)?,
                    Tensor::cat(&[&v, &v_new], 2)?,
                ),
                None => (k_new, v_new),
            };
            x = (x + block.self_attention.attend(&h, &k, &v, &self_bias, mode)?)?;
            cache.self_kv[l] = Some((k, v));

            // Cross-attention: a query's beams are its `tq` positions against shared K/V.
            let (cross, norm) = block.cross_attention.as_ref().expect("decoder block");
            let h = rms_norm(&x, norm, block.eps, mode)?;
            let hq = h.reshape((queries, beams, self.config.d_model))?;
            let (ck, cv) = &cache.cross_kv[l];
            let out = cross.attend(&hq, ck, cv, &cache.cross_bias, mode)?;
            x = (x + out.reshape((rows, 1, self.config.d_model))?)?;
            x = block.ff.forward(&x, mode)?;
        }
        cache.steps += 1;
        let x = rms_norm(&x, &self.decoder_norm, self.config.layer_norm_epsilon, mode)?;
        let logits = self.head(&x.squeeze(1)?, mode)?;
        let logp = match (&self.copy, &cache.copy) {
            (Some(head), Some(src)) => {
                let hq = x.reshape((queries, beams, self.config.d_model))?;
                let (attn, gate) = self.copy_parts(head, &hq, src, mode)?;
                let s = attn.dim(2)?;
                mix_copy(
                    &logits,
                    &attn.reshape((rows, s))?,
                    &gate.reshape((rows, 1))?,
                    &src.rows,
                    |r| r / beams,
                )?
            }
            _ => candle_nn::ops::log_softmax(&logits, D::Minus1)?,
        };
        self.full_vocab(logp)
    }
}

/// Source tokens a SEAL model reads, in training and at search: one constant, so a query is
/// never cut shorter or longer than the sources the model learnt from.
pub const MAX_SOURCE_LEN: usize = 64;

/// Names of the files of a saved model directory.
pub const CONFIG_FILE: &str = "config.json";
pub const WEIGHTS_FILE: &str = "model.safetensors";

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_buckets_match_hf_reference_values() {
        // Expected values from a line-by-line Python transcription of HF's
        // T5Attention._relative_position_bucket (32 buckets, max distance 128).
        let bi: Vec<u32> = [-200, -64, -9, -8, -1, 0, 1, 7, 8, 20, 127, 500]
            .iter()
            .map(|&r| relative_bucket(r, true, 32, 128))
            .collect();
        assert_eq!(bi, vec![15, 14, 8, 8, 1, 0, 17, 23, 24, 26, 31, 31]);
        let uni: Vec<u32> = [0, -1, -15, -16, -40, -127, -500, 3]
            .iter()
            .map(|&r| relative_bucket(r, false, 32, 128))
            .collect();
        assert_eq!(uni, vec![0, 1, 15, 16, 23, 31, 31, 0]);
    }

    #[test]
    fn config_reads_hf_t5_small_json() {
        let json = r#"{"architectures":["T5ForConditionalGeneration"],"d_ff":2048,"d_kv":64,
            "d_model":512,"decoder_start_token_id":0,"dropout_rate":0.1,"eos_token_id":1,
            "initializer_factor":1.0,"is_encoder_decoder":true,"layer_norm_epsilon":1e-06,
            "model_type":"t5","n_positions":512,"num_heads":8,"num_layers":6,
            "output_past":true,"pad_token_id":0,"relative_attention_num_buckets":32,
            "vocab_size":32128}"#;
        let c: Config = serde_json::from_str(json).unwrap();
        assert_eq!(
            (c.d_model, c.decoder_layers(), c.feed_forward_proj.as_str()),
            (512, 6, "relu")
        );
        assert!(c.tie_word_embeddings);
        assert_eq!(c.num_params(), 60_506_624);
    }
}
