//! T5's layers: attention with relative position bias, the feed-forward block, RMS norm, and the
//! inference/training switch between candle's fused ops and differentiable ones.

use std::sync::Arc;

use candle_core::{D, DType, Module, Tensor};
use candle_nn::{Embedding, Linear};

use super::Params;
use super::config::{Activation, Config};
use super::kernels;
use super::panels::PackedWeight;
use crate::device::Precision;
use crate::error::{Error, Result};

/// A linear layer, `x @ W^T (+ b)`, holding once its model is prepared for inference
/// (`for_inference`) a copy of its weight packed for the host kernels (`super::panels`),
/// which inference then multiplies with.
#[derive(Debug, Clone)]
pub(super) struct Dense {
    linear: Linear,
    packed: Option<Arc<PackedWeight>>,
}

impl Dense {
    pub(super) fn new(weight: Tensor, bias: Option<Tensor>) -> Dense {
        Dense {
            linear: Linear::new(weight, bias),
            packed: None,
        }
    }

    pub(super) fn weight(&self) -> &Tensor {
        self.linear.weight()
    }

    /// The packed weight, once prepared.
    pub(super) fn packed(&self) -> Option<&PackedWeight> {
        self.packed.as_deref()
    }

    /// Packs the weight (f16 or int8 as `precision` says); inference multiplies with the copy
    /// from now on, so the weight must not change afterwards.
    pub(super) fn pack(&mut self, precision: Precision) -> candle_core::Result<()> {
        self.packed = Some(Arc::new(PackedWeight::pack(self.weight(), precision)?));
        Ok(())
    }

    pub(super) fn bias(&self) -> Option<&Tensor> {
        self.linear.bias()
    }

    /// `x @ W^T (+ b)`: with the packed weight when inferring and prepared, else [`linear`].
    pub(super) fn forward(&self, x: &Tensor, mode: Mode) -> candle_core::Result<Tensor> {
        match (&self.packed, mode) {
            (Some(w), Mode::Infer) => packed_linear(w, self.linear.bias(), x),
            _ => linear(&self.linear, x, mode),
        }
    }
}

/// Attention as T5 does it: no 1/sqrt(d) scaling (the initialisation accounts for it).
#[derive(Debug, Clone)]
pub(super) struct T5Attention {
    pub(super) q: Dense,
    pub(super) k: Dense,
    pub(super) v: Dense,
    pub(super) o: Dense,
    relative_attention_bias: Option<Embedding>,
    n_heads: usize,
    d_kv: usize,
}

/// Per-call switches between the differentiable ops training needs and candle's fused ops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Mode {
    Train,
    Infer,
}

pub(super) fn rms_norm(
    x: &Tensor,
    w: &Tensor,
    eps: f64,
    mode: Mode,
) -> candle_core::Result<Tensor> {
    match mode {
        Mode::Train => kernels::rms_norm(x, w, eps),
        Mode::Infer => candle_nn::ops::rms_norm(&x.contiguous()?, w, eps as f32),
    }
}

/// Rows at or below which an inference matmul runs on the calling thread.
pub(super) const SMALL_ROWS: usize = 64;

/// Whether an inference product should take the single-threaded path: candle parallelises
/// every matmul, and for the decoder step's `(10, 256) x (256, 256)` products the thread
/// hand-off costs 4-5x the arithmetic (measured: 185 us vs 35 us), which made the step
/// overhead-bound. Large products (the vocabulary head, training) stay with candle.
fn single_threaded(mode: Mode, rows: usize, ts: &[&Tensor]) -> bool {
    mode == Mode::Infer
        && rows <= SMALL_ROWS
        && ts
            .iter()
            .all(|t| crate::device::host_kernels(t.device()) && t.dtype() == DType::F32)
}

/// `x @ l.weight^T (+ l.bias)`; on the calling thread with the skinny kernel for a few rows
/// (a decoder step, one short query through an encoder), whose weights it then streams once
/// instead of packing them. Not differentiable on that path: inference only.
pub(super) fn linear(l: &Linear, x: &Tensor, mode: Mode) -> candle_core::Result<Tensor> {
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
            super::skinny::skinny_gemm_par(&mut out, n, wv, xv, (rows, n, k), false)
        })
    })??;
    let mut dims = x.dims().to_vec();
    *dims.last_mut().expect("x has a last dimension") = n;
    let y = Tensor::from_vec(out, dims, x.device())?;
    match l.bias() {
        Some(b) => y.broadcast_add(b),
        None => Ok(y),
    }
}

/// `x @ w^T (+ bias)` with the weight packed for the host kernels (`super::panels`), on any
/// number of rows (split over threads when large), the bias added to the product's buffer in
/// place. Inference only.
fn packed_linear(
    w: &PackedWeight,
    bias: Option<&Tensor>,
    x: &Tensor,
) -> candle_core::Result<Tensor> {
    let k = x.dim(D::Minus1)?;
    let rows = x.elem_count() / k.max(1);
    let n = w.n();
    if k != w.k() {
        candle_core::bail!(
            "packed linear: inputs of {k} columns for a weight of {}",
            w.k()
        );
    }
    let x = x.contiguous()?;
    let mut out = vec![0f32; rows * n];
    kernels::with_slice(&x, |xv| {
        w.apply_par(&mut out, n, &xv[..rows * k], rows, false)
    })?;
    if let Some(b) = bias {
        let b = b.contiguous()?;
        kernels::with_slice(&b, |b| {
            for row in out.chunks_mut(n) {
                row.iter_mut().zip(b).for_each(|(o, b)| *o += b);
            }
        })?;
    }
    let mut dims = x.dims().to_vec();
    *dims.last_mut().expect("x has a last dimension") = n;
    Tensor::from_vec(out, dims, x.device())
}

/// Batched `a @ b` over equal leading dimensions (any strides); single-threaded per batch
/// for the small attention products of a decoder step, else candle's matmul.
pub(super) fn matmul(a: &Tensor, b: &Tensor, mode: Mode) -> candle_core::Result<Tensor> {
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

pub(super) fn softmax(x: &Tensor, mode: Mode) -> candle_core::Result<Tensor> {
    match mode {
        Mode::Train => kernels::softmax_last_dim(x),
        Mode::Infer => candle_nn::ops::softmax_last_dim(x),
    }
}

impl T5Attention {
    fn new(p: &Getter, prefix: &str, bias: bool, c: &Config) -> Result<Self> {
        let linear = |n: &str| -> Result<Dense> {
            Ok(Dense::new(p.get(&format!("{prefix}.{n}.weight"))?, None))
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
    pub(super) fn key_values(
        &self,
        source: &Tensor,
        mode: Mode,
    ) -> candle_core::Result<(Tensor, Tensor)> {
        Ok((
            self.split_heads(&self.k.forward(source, mode)?)?,
            self.split_heads(&self.v.forward(source, mode)?)?,
        ))
    }

    /// Attends queries from `x` `(b, tq, d)` over keys/values `(b, h, tk, d_kv)` with an
    /// additive `bias` broadcastable to `(b, h, tq, tk)`.
    pub(super) fn attend(
        &self,
        x: &Tensor,
        k: &Tensor,
        v: &Tensor,
        bias: &Tensor,
        mode: Mode,
    ) -> candle_core::Result<Tensor> {
        let (b, tq, _) = x.dims3()?;
        let q = self.split_heads(&self.q.forward(x, mode)?)?;
        let scores = matmul(&q, &k.t()?, mode)?.broadcast_add(bias)?;
        let weights = softmax(&scores, mode)?;
        let out = matmul(&weights, v, mode)?;
        let out = out
            .transpose(1, 2)?
            .reshape((b, tq, self.n_heads * self.d_kv))?;
        self.o.forward(&out, mode)
    }
}

/// HF's relative position bucket for `relative = key - query`.
pub(super) fn relative_bucket(
    relative: i64,
    bidirectional: bool,
    buckets: usize,
    max_distance: usize,
) -> u32 {
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
pub(super) fn position_bias(
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
pub(super) struct T5LayerFF {
    pub(super) wi: Dense,
    /// Gated variants: `act(wi_0 x) * wi_1 x`.
    pub(super) wi_1: Option<Dense>,
    pub(super) wo: Dense,
    pub(super) layer_norm: Tensor,
    pub(super) act: Activation,
    eps: f64,
}

impl T5LayerFF {
    fn new(p: &Getter, prefix: &str, c: &Config) -> Result<Self> {
        let w = |n: &str| -> Result<Dense> {
            Ok(Dense::new(
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

    pub(super) fn forward(&self, x: &Tensor, mode: Mode) -> candle_core::Result<Tensor> {
        let h = rms_norm(x, &self.layer_norm, self.eps, mode)?;
        let mut a = self.act.apply(&self.wi.forward(&h, mode)?)?;
        if let Some(wi_1) = &self.wi_1 {
            a = (a * wi_1.forward(&h, mode)?)?;
        }
        x + self.wo.forward(&a, mode)?
    }
}

#[derive(Debug, Clone)]
pub(super) struct T5Block {
    pub(super) self_attention: T5Attention,
    pub(super) self_norm: Tensor,
    /// Decoder blocks only.
    pub(super) cross_attention: Option<(T5Attention, Tensor)>,
    pub(super) ff: T5LayerFF,
    pub(super) eps: f64,
}

impl T5Block {
    pub(super) fn new(p: &Getter, stack: &str, i: usize, c: &Config) -> Result<Self> {
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

impl T5Block {
    /// Packs every linear layer of the block ([`Dense::pack`]).
    pub(super) fn pack(&mut self, precision: Precision) -> candle_core::Result<()> {
        let a = &mut self.self_attention;
        let mut dense = vec![&mut a.q, &mut a.k, &mut a.v, &mut a.o];
        if let Some((c, _)) = &mut self.cross_attention {
            dense.extend([&mut c.q, &mut c.k, &mut c.v, &mut c.o]);
        }
        dense.extend([&mut self.ff.wi, &mut self.ff.wo]);
        dense.extend(self.ff.wi_1.as_mut());
        dense.into_iter().try_for_each(|d| d.pack(precision))
    }
}

/// The relative position bias table of a stack, which its first block holds (T5 shares it).
pub(super) fn bias_table(blocks: &[T5Block]) -> &Embedding {
    blocks[0]
        .self_attention
        .relative_attention_bias
        .as_ref()
        .expect("block 0 has the bias table")
}

/// Looks parameters up by name.
pub(super) struct Getter<'a>(pub(super) &'a Params);

impl Getter<'_> {
    pub(super) fn get(&self, name: &str) -> Result<Tensor> {
        self.0
            .get(name)
            .map(|v| v.as_tensor().clone())
            .ok_or_else(|| Error::Model(format!("missing parameter {name:?}")))
    }
}
