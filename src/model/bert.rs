//! A BERT encoder (HF `BertModel`) on candle-nn, for sentence embeddings. One file whose
//! structs and tensor names map 1:1 onto the checkpoint (`embeddings.word_embeddings.weight`,
//! `encoder.layer.{i}.attention.self.query.weight`, ...; a `bert.` prefix is accepted).
//!
//! Written here rather than taken from candle-transformers: it is ~150 lines, and the crate
//! would add about 70 s to every clean build for this one model.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use candle_core::{D, DType, Device, Module, Tensor};
use candle_nn::{Embedding, LayerNorm};
use serde::{Deserialize, Serialize};

use super::host_bert::{Act, HostBert, Lin, Norm};
use super::layers::{Dense, Mode};
use crate::device::Precision;
use crate::error::{Error, Result, cerr};

const INFER: Mode = Mode::Infer;

/// The `config.json` fields a BERT encoder needs.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct BertConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    #[serde(default = "default_act")]
    pub hidden_act: String,
    pub max_position_embeddings: usize,
    #[serde(default = "default_types")]
    pub type_vocab_size: usize,
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f64,
}

fn default_act() -> String {
    "gelu".into()
}
fn default_types() -> usize {
    2
}
fn default_eps() -> f64 {
    1e-12
}

/// Every tensor of a BERT encoder with `config`: checkpoint name (without `bert.`) and shape,
/// in the order [`BertModel::from_tensors`] reads them.
pub fn tensor_shapes(c: &BertConfig) -> Vec<(String, Vec<usize>)> {
    let (h, i) = (c.hidden_size, c.intermediate_size);
    let mut shapes = vec![
        (
            "embeddings.word_embeddings.weight".into(),
            vec![c.vocab_size, h],
        ),
        (
            "embeddings.position_embeddings.weight".into(),
            vec![c.max_position_embeddings, h],
        ),
        (
            "embeddings.token_type_embeddings.weight".into(),
            vec![c.type_vocab_size, h],
        ),
        ("embeddings.LayerNorm.weight".into(), vec![h]),
        ("embeddings.LayerNorm.bias".into(), vec![h]),
    ];
    for l in 0..c.num_hidden_layers {
        let p = format!("encoder.layer.{l}");
        for (name, out, inp) in [
            ("attention.self.query", h, h),
            ("attention.self.key", h, h),
            ("attention.self.value", h, h),
            ("attention.output.dense", h, h),
            ("intermediate.dense", i, h),
            ("output.dense", h, i),
        ] {
            shapes.push((format!("{p}.{name}.weight"), vec![out, inp]));
            shapes.push((format!("{p}.{name}.bias"), vec![out]));
        }
        for norm in ["attention.output.LayerNorm", "output.LayerNorm"] {
            shapes.push((format!("{p}.{norm}.weight"), vec![h]));
            shapes.push((format!("{p}.{norm}.bias"), vec![h]));
        }
    }
    shapes
}

struct Weights(HashMap<String, Tensor>);

impl Weights {
    fn get(&self, name: &str) -> Result<Tensor> {
        self.0
            .get(name)
            .or_else(|| self.0.get(&format!("bert.{name}")))
            .cloned()
            .ok_or_else(|| Error::Model(format!("BERT checkpoint lacks {name:?}")))
    }

    fn linear(&self, prefix: &str) -> Result<Dense> {
        Ok(Dense::new(
            self.get(&format!("{prefix}.weight"))?,
            Some(self.get(&format!("{prefix}.bias"))?),
        ))
    }

    fn layer_norm(&self, prefix: &str, eps: f64) -> Result<LayerNorm> {
        Ok(LayerNorm::new(
            self.get(&format!("{prefix}.weight"))?,
            self.get(&format!("{prefix}.bias"))?,
            eps,
        ))
    }
}

#[derive(Debug, Clone)]
struct BertEmbeddings {
    word_embeddings: Embedding,
    position_embeddings: Embedding,
    token_type_embeddings: Embedding,
    layer_norm: LayerNorm,
}

#[derive(Debug, Clone)]
struct BertSelfAttention {
    query: Dense,
    key: Dense,
    value: Dense,
    heads: usize,
}

#[derive(Debug, Clone)]
struct BertLayer {
    attention: BertSelfAttention,
    /// `attention.output.dense` and its LayerNorm.
    attention_output: Dense,
    attention_norm: LayerNorm,
    intermediate: Dense,
    output: Dense,
    output_norm: LayerNorm,
}

/// HF `BertModel` without the pooler (sentence embeddings mean-pool the last hidden states).
#[derive(Debug, Clone)]
pub struct BertModel {
    pub config: BertConfig,
    embeddings: BertEmbeddings,
    layers: Vec<BertLayer>,
    device: Device,
    /// The encoder prepared for the host kernels ([`BertModel::for_inference`]).
    host: Option<Arc<HostBert>>,
}

impl BertModel {
    /// Loads `config.json` + `model.safetensors` from `dir` (any float dtype, held as f32).
    pub fn load(dir: &Path, device: &Device) -> Result<BertModel> {
        let config_path = dir.join("config.json");
        let config: BertConfig = serde_json::from_slice(
            &std::fs::read(&config_path).map_err(|e| Error::io(&config_path, e))?,
        )
        .map_err(|e| Error::Corrupt {
            path: config_path.clone(),
            message: e.to_string(),
        })?;
        let weights_path = dir.join("model.safetensors");
        let tensors =
            candle_core::safetensors::load(&weights_path, device).map_err(|e| Error::Corrupt {
                path: weights_path.clone(),
                message: e.to_string(),
            })?;
        crate::model::check_finite(&tensors, &weights_path)?;
        let tensors = tensors
            .into_iter()
            .map(|(k, v)| Ok((k, v.to_dtype(DType::F32).map_err(cerr)?)))
            .collect::<Result<HashMap<_, _>>>()?;
        BertModel::from_tensors(config, tensors, device)
            .map_err(|e| crate::model::in_file(e, &weights_path))
    }

    /// Builds the model from named tensors (HF names, optionally `bert.`-prefixed).
    pub fn from_tensors(
        config: BertConfig,
        tensors: HashMap<String, Tensor>,
        device: &Device,
    ) -> Result<BertModel> {
        if !matches!(config.hidden_act.as_str(), "gelu" | "gelu_new" | "relu")
            || config.num_attention_heads == 0
            || !config
                .hidden_size
                .is_multiple_of(config.num_attention_heads)
        {
            return Err(Error::Model(format!(
                "unsupported BERT config: hidden_act {:?}, hidden {} over {} heads",
                config.hidden_act, config.hidden_size, config.num_attention_heads
            )));
        }
        let w = Weights(tensors);
        let eps = config.layer_norm_eps;
        let h = config.hidden_size;
        let embeddings = BertEmbeddings {
            word_embeddings: Embedding::new(w.get("embeddings.word_embeddings.weight")?, h),
            position_embeddings: Embedding::new(w.get("embeddings.position_embeddings.weight")?, h),
            token_type_embeddings: Embedding::new(
                w.get("embeddings.token_type_embeddings.weight")?,
                h,
            ),
            layer_norm: w.layer_norm("embeddings.LayerNorm", eps)?,
        };
        let layers = (0..config.num_hidden_layers)
            .map(|i| {
                let p = format!("encoder.layer.{i}");
                Ok(BertLayer {
                    attention: BertSelfAttention {
                        query: w.linear(&format!("{p}.attention.self.query"))?,
                        key: w.linear(&format!("{p}.attention.self.key"))?,
                        value: w.linear(&format!("{p}.attention.self.value"))?,
                        heads: config.num_attention_heads,
                    },
                    attention_output: w.linear(&format!("{p}.attention.output.dense"))?,
                    attention_norm: w
                        .layer_norm(&format!("{p}.attention.output.LayerNorm"), eps)?,
                    intermediate: w.linear(&format!("{p}.intermediate.dense"))?,
                    output: w.linear(&format!("{p}.output.dense"))?,
                    output_norm: w.layer_norm(&format!("{p}.output.LayerNorm"), eps)?,
                })
            })
            .collect::<Result<_>>()?;
        Ok(BertModel {
            config,
            embeddings,
            layers,
            device: device.clone(),
            host: None,
        })
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// This model prepared for inference: on the CPU (see [`crate::device::host_kernels`]),
    /// its forward runs written out on the host kernels (`super::host_bert`), with every
    /// linear layer's weight copied into panels (`super::panels`; query, key and value as
    /// one), rounded to f16 or quantized to int8 as `precision` says. Costs a copy of the
    /// layers' weights (half of it in f16, a quarter in int8); the model must not be trained
    /// afterwards.
    pub fn for_inference(mut self, precision: Precision) -> Result<BertModel> {
        if !crate::device::host_kernels(&self.device) {
            return Ok(self);
        }
        let run = || -> candle_core::Result<HostBert> {
            let lin = |l: &[&Dense]| -> candle_core::Result<Lin> {
                let weights: Vec<&Tensor> = l.iter().map(|d| d.weight()).collect();
                let biases = l
                    .iter()
                    .map(|d| {
                        d.bias().ok_or_else(|| {
                            candle_core::Error::Msg("BERT layer without bias".into())
                        })
                    })
                    .collect::<candle_core::Result<Vec<&Tensor>>>()?;
                Lin::pack(&weights, &biases, precision)
            };
            let layers = self
                .layers
                .iter()
                .map(|l| {
                    let a = &l.attention;
                    Ok(super::host_bert::Layer {
                        qkv: lin(&[&a.query, &a.key, &a.value])?,
                        attention_output: lin(&[&l.attention_output])?,
                        attention_norm: Norm::new(&l.attention_norm)?,
                        intermediate: lin(&[&l.intermediate])?,
                        output: lin(&[&l.output])?,
                        output_norm: Norm::new(&l.output_norm)?,
                    })
                })
                .collect::<candle_core::Result<_>>()?;
            let e = &self.embeddings;
            let types = e.token_type_embeddings.embeddings().get(0)?;
            let position_type = e
                .position_embeddings
                .embeddings()
                .broadcast_add(&types)?
                .to_dtype(DType::F32)?
                .flatten_all()?
                .to_vec1()?;
            let act = match self.config.hidden_act.as_str() {
                "relu" => Act::Relu,
                "gelu_new" => Act::GeluTanh,
                _ => Act::GeluErf,
            };
            Ok(HostBert {
                layers,
                position_type,
                embedding_norm: Norm::new(&e.layer_norm)?,
                heads: self.config.num_attention_heads,
                act,
            })
        };
        self.host = Some(Arc::new(run().map_err(cerr)?));
        Ok(self)
    }

    /// Last hidden states `(batch, len, hidden)` for padded `ids` with 0/1 `mask`
    /// (both `(batch, len)`, u32 and f32). Token types are all 0 (single sentences).
    pub fn forward(&self, ids: &Tensor, mask: &Tensor) -> Result<Tensor> {
        self.forward_inner(ids, mask).map_err(cerr)
    }

    pub(crate) fn forward_inner(&self, ids: &Tensor, mask: &Tensor) -> candle_core::Result<Tensor> {
        let (b, t) = ids.dims2()?;
        if t > self.config.max_position_embeddings {
            candle_core::bail!(
                "{t} tokens exceed the model's {} positions",
                self.config.max_position_embeddings
            );
        }
        if let Some(host) = &self.host {
            let flags: Vec<f32> = mask.flatten_all()?.to_dtype(DType::F32)?.to_vec1()?;
            let ids: Vec<u32> = ids.flatten_all()?.to_vec1()?;
            let words = self.embeddings.word_embeddings.embeddings();
            let states = host.forward(words, &ids, &flags, t)?;
            return Tensor::from_vec(states, (b, t, self.config.hidden_size), &self.device);
        }
        let positions = Tensor::arange(0u32, t as u32, &self.device)?;
        let types = Tensor::zeros((b, t), DType::U32, &self.device)?;
        let e = &self.embeddings;
        let x = e
            .word_embeddings
            .forward(ids)?
            .broadcast_add(&e.position_embeddings.forward(&positions)?)?
            .add(&e.token_type_embeddings.forward(&types)?)?;
        let mut x = e.layer_norm.forward(&x)?;
        // 0 where attended, a large negative number where padded.
        let bias = ((mask.reshape((b, 1, 1, t))? - 1.0)? * 1e9)?;
        for layer in &self.layers {
            let a = layer.attention.forward(&x, &bias)?;
            x = layer
                .attention_norm
                .forward(&(layer.attention_output.forward(&a, INFER)? + &x)?)?;
            let h = layer.intermediate.forward(&x, INFER)?;
            let h = match self.config.hidden_act.as_str() {
                "relu" => h.relu()?,
                "gelu_new" => h.gelu()?,
                _ => h.gelu_erf()?,
            };
            x = layer
                .output_norm
                .forward(&(layer.output.forward(&h, INFER)? + &x)?)?;
        }
        Ok(x)
    }
}

impl BertSelfAttention {
    fn forward(&self, x: &Tensor, bias: &Tensor) -> candle_core::Result<Tensor> {
        let (b, t, h) = x.dims3()?;
        let hd = h / self.heads;
        let split = |y: Tensor| -> candle_core::Result<Tensor> {
            y.reshape((b, t, self.heads, hd))?
                .transpose(1, 2)?
                .contiguous()
        };
        let q = split(self.query.forward(x, INFER)?)?;
        let k = split(self.key.forward(x, INFER)?)?;
        let v = split(self.value.forward(x, INFER)?)?;
        let scores = (q.matmul(&k.t()?)? / (hd as f64).sqrt())?.broadcast_add(bias)?;
        let weights = candle_nn::ops::softmax_last_dim(&scores)?;
        weights.matmul(&v)?.transpose(1, 2)?.reshape((b, t, h))
    }
}

/// Mean of `states` `(batch, len, hidden)` over the positions where `mask` is 1, then L2
/// normalised: sentence-transformers' pooling.
pub fn mean_pool_normalize(states: &Tensor, mask: &Tensor) -> Result<Tensor> {
    let run = || -> candle_core::Result<Tensor> {
        let m = mask.unsqueeze(2)?;
        let sum = states.broadcast_mul(&m)?.sum(1)?;
        let count = m.sum(1)?.clamp(1e-9, f64::MAX)?;
        let mean = sum.broadcast_div(&count)?;
        let norm = mean
            .sqr()?
            .sum_keepdim(D::Minus1)?
            .sqrt()?
            .clamp(1e-12, f64::MAX)?;
        mean.broadcast_div(&norm)
    };
    run().map_err(cerr)
}
