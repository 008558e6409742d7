//! Every parameter by its checkpoint tensor name and shape, HF's initialisation, and checking a
//! checkpoint's tensors against them.

use candle_core::{DType, Device, Tensor, Var};
use rand::SeedableRng;
use rand_distr::{Distribution, Normal};

use super::Params;
use super::bert;
use super::config::Config;
use crate::error::{Error, Result, cerr};

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
