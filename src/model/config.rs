//! The model's `config.json`: HF T5's fields genret reads, its presets and the sizes derived from
//! them.

use candle_core::Tensor;
use serde::{Deserialize, Serialize};

use super::bert::BertConfig;
use super::params::param_specs;
use crate::error::{Error, Result};

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

    pub(super) fn gated(&self) -> bool {
        self.feed_forward_proj.starts_with("gated-")
    }

    pub(super) fn activation(&self) -> Result<Activation> {
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
pub(super) enum Activation {
    Relu,
    /// HF `gelu_new`: the tanh approximation.
    Gelu,
    Silu,
}

impl Activation {
    /// The activation of one value, with candle's formulas (its `gelu` is the tanh form).
    pub(super) fn of(self, x: f32) -> f32 {
        match self {
            Activation::Relu => x.max(0.0),
            Activation::Gelu => {
                let c = (2.0f32 / std::f32::consts::PI).sqrt();
                0.5 * x * (1.0 + (c * x * (1.0 + 0.044715 * x * x)).tanh())
            }
            Activation::Silu => x / (1.0 + (-x).exp()),
        }
    }

    pub(super) fn apply(self, x: &Tensor) -> candle_core::Result<Tensor> {
        match self {
            Activation::Relu => x.relu(),
            Activation::Gelu => x.gelu(),
            Activation::Silu => x.silu(),
        }
    }
}
