//! The BERT encoder on the CPU, written out: the same function as [`BertModel`]'s candle
//! forward, computed on a padded batch's real tokens only, for a model prepared for inference.
//!
//! Why: as candle ops, a layer over a padded batch is a dozen passes that each allocate, copy
//! for layouts and hand off to threads, and the products had to gather the real rows and
//! scatter them back; that was about half of the encoder's time (docs/BENCHMARKS.md, issue 23).
//! Here a layer is four products on the packed weights (query, key and value fused into one),
//! each written where it is used next (the output projections onto a copy of the residual
//! stream), with layer norms, the activation and attention as loops over rows. Attention runs
//! per query over its own tokens, so padding costs nothing anywhere.
//!
//! Cost: the fused query/key/value panels (the three layers' weights once more); the states of
//! a batch of `R` real tokens take `R x (6 hidden + intermediate)` floats of scratch.
//! Equal to the candle forward at real tokens to float rounding (tests in `super::bert`).

use candle_core::{DType, Tensor};
use rayon::prelude::*;

use super::kernels::{gelu_erf_in_place, softmax_in_place, weighted_sum, with_slice};
use super::panels::PackedWeight;
use crate::device::Precision;

/// A layer norm's weight, bias and epsilon.
#[derive(Debug, Clone)]
pub(super) struct Norm {
    w: Vec<f32>,
    b: Vec<f32>,
    eps: f32,
}

impl Norm {
    pub(super) fn new(norm: &candle_nn::LayerNorm) -> candle_core::Result<Norm> {
        let vec = |t: &Tensor| t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>();
        let b = norm
            .bias()
            .ok_or_else(|| candle_core::Error::Msg("BERT layer norm without a bias".into()))?;
        Ok(Norm {
            w: vec(norm.weight())?,
            b: vec(b)?,
            eps: norm.eps() as f32,
        })
    }

    /// `x[r] = (x[r] - mean) / sqrt(var + eps) * w + b` for every row, in place.
    fn apply(&self, x: &mut [f32]) {
        let d = self.w.len();
        crate::simd::widest(
            #[inline(always)]
            || {
                for row in x.chunks_mut(d) {
                    let mean = lane_sum(row, |v| v) / d as f32;
                    let var = lane_sum(row, |v| (v - mean) * (v - mean)) / d as f32;
                    let r = (var + self.eps).sqrt().recip();
                    for ((v, &w), &b) in row.iter_mut().zip(&self.w).zip(&self.b) {
                        *v = (*v - mean) * r * w + b;
                    }
                }
            },
        )
    }
}

/// `sum(f(v))` over `xs` in 16 interleaved partial sums, so that it vectorises (a float sum in
/// order cannot be).
#[inline(always)]
fn lane_sum(xs: &[f32], f: impl Fn(f32) -> f32) -> f32 {
    let mut acc = [0f32; 16];
    let mut chunks = xs.chunks_exact(16);
    for c in &mut chunks {
        for (a, &v) in acc.iter_mut().zip(c) {
            *a += f(v);
        }
    }
    for (a, &v) in acc.iter_mut().zip(chunks.remainder()) {
        *a += f(v);
    }
    acc.iter().sum()
}

/// A packed linear layer and its bias.
#[derive(Debug)]
pub(super) struct Lin {
    w: PackedWeight,
    b: Vec<f32>,
}

impl Lin {
    /// Packs `weight` `(n, k)` (rows of several layers concatenated, for a fused product) with
    /// its `bias` `(n)`.
    pub(super) fn pack(
        weights: &[&Tensor],
        biases: &[&Tensor],
        precision: Precision,
    ) -> candle_core::Result<Lin> {
        let w = Tensor::cat(weights, 0)?;
        let b = Tensor::cat(biases, 0)?
            .to_dtype(DType::F32)?
            .to_vec1::<f32>()?;
        let w = PackedWeight::pack(&w.to_dtype(DType::F32)?, precision)?;
        if b.len() != w.n() {
            candle_core::bail!("a bias of {} for {} outputs", b.len(), w.n());
        }
        Ok(Lin { w, b })
    }

    fn n(&self) -> usize {
        self.w.n()
    }

    /// `dst[r] (+)= x[r] @ w^T + b` for the `rows` rows of `x`.
    fn apply(&self, dst: &mut [f32], x: &[f32], rows: usize, accumulate: bool) {
        let n = self.n();
        self.w.apply_par(dst, n, x, rows, accumulate);
        crate::simd::widest(
            #[inline(always)]
            || {
                for row in dst.chunks_mut(n) {
                    row.iter_mut().zip(&self.b).for_each(|(o, b)| *o += b);
                }
            },
        )
    }
}

/// The activation between a layer's two feed-forward products.
#[derive(Debug, Clone, Copy)]
pub(super) enum Act {
    /// HF `gelu`: the exact (erf) form.
    GeluErf,
    /// HF `gelu_new`: the tanh approximation.
    GeluTanh,
    Relu,
}

impl Act {
    fn apply(self, xs: &mut [f32]) {
        match self {
            Act::GeluErf => gelu_erf_in_place(xs),
            Act::GeluTanh => {
                let c = (2.0 / std::f32::consts::PI).sqrt();
                for v in xs {
                    let x = *v;
                    *v = 0.5 * x * (1.0 + (c * (x + 0.044715 * x * x * x)).tanh());
                }
            }
            Act::Relu => xs.iter_mut().for_each(|v| *v = v.max(0.0)),
        }
    }
}

/// One encoder layer, prepared.
#[derive(Debug)]
pub(super) struct Layer {
    /// Query, key and value fused: `(3 hidden, hidden)`.
    pub(super) qkv: Lin,
    pub(super) attention_output: Lin,
    pub(super) attention_norm: Norm,
    pub(super) intermediate: Lin,
    pub(super) output: Lin,
    pub(super) output_norm: Norm,
}

/// A BERT encoder prepared for the host: what [`HostBert::forward`] reads.
#[derive(Debug)]
pub(super) struct HostBert {
    pub(super) layers: Vec<Layer>,
    /// Position embeddings with token type 0's added: `(positions, hidden)`.
    pub(super) position_type: Vec<f32>,
    pub(super) embedding_norm: Norm,
    pub(super) heads: usize,
    pub(super) act: Act,
}

impl HostBert {
    /// Last hidden states `(batch * len, hidden)` of the padded `ids` (`batch * len`, each
    /// below the vocabulary of `words` `(vocab, hidden)`) at the positions where `mask` is
    /// non-zero, 0 at the others. Positions must not exceed the model's.
    pub(super) fn forward(
        &self,
        words: &Tensor,
        ids: &[u32],
        mask: &[f32],
        len: usize,
    ) -> candle_core::Result<Vec<f32>> {
        let h = self.embedding_norm.w.len();
        let kept: Vec<usize> = (0..mask.len()).filter(|&i| mask[i] != 0.0).collect();
        let rows = kept.len();
        // The embeddings of the real tokens, then every layer on them.
        let mut x = vec![0f32; rows * h];
        with_slice(words, |w| -> candle_core::Result<()> {
            let vocab = w.len() / h;
            for (o, &i) in x.chunks_mut(h).zip(&kept) {
                let id = ids[i] as usize;
                if id >= vocab {
                    candle_core::bail!("token {id} is outside the BERT vocabulary of {vocab}");
                }
                let p = &self.position_type[(i % len) * h..(i % len + 1) * h];
                for ((o, &w), &p) in o.iter_mut().zip(&w[id * h..(id + 1) * h]).zip(p) {
                    *o = w + p;
                }
            }
            Ok(())
        })??;
        self.embedding_norm.apply(&mut x);
        // Each query's rows among the kept ones: kept is in order, batch row by batch row.
        let mut spans: Vec<std::ops::Range<usize>> = Vec::new();
        for (r, &i) in kept.iter().enumerate() {
            match spans.last_mut() {
                Some(s) if kept[s.start] / len == i / len => s.end = r + 1,
                _ => spans.push(r..r + 1),
            }
        }
        let mut qkv = vec![0f32; rows * 3 * h];
        let mut ctx = vec![0f32; rows * h];
        let mut y = vec![0f32; rows * h];
        let mut ff = Vec::new();
        for layer in &self.layers {
            layer.qkv.apply(&mut qkv, &x, rows, false);
            self.attention(&mut ctx, &qkv, &spans, h);
            y.copy_from_slice(&x);
            layer.attention_output.apply(&mut y, &ctx, rows, true);
            layer.attention_norm.apply(&mut y);
            let inner = layer.intermediate.n();
            ff.resize(rows * inner, 0.0);
            layer.intermediate.apply(&mut ff, &y, rows, false);
            let act = self.act;
            if rows * inner >= 1 << 16 {
                ff.par_chunks_mut(inner * 16).for_each(|c| act.apply(c));
            } else {
                act.apply(&mut ff);
            }
            x.copy_from_slice(&y);
            layer.output.apply(&mut x, &ff, rows, true);
            layer.output_norm.apply(&mut x);
        }
        let mut out = vec![0f32; mask.len() * h];
        for (row, &i) in x.chunks(h).zip(&kept) {
            out[i * h..(i + 1) * h].copy_from_slice(row);
        }
        Ok(out)
    }

    /// Self-attention of each query's tokens over its own tokens, every head: `ctx` `(rows,
    /// hidden)` from `qkv` `(rows, 3 hidden)`, scores scaled by `1 / sqrt(head size)`.
    fn attention(&self, ctx: &mut [f32], qkv: &[f32], spans: &[std::ops::Range<usize>], h: usize) {
        let hd = h / self.heads;
        let scale = (hd as f32).sqrt().recip();
        let one = |ctx: &mut [f32], span: &std::ops::Range<usize>| {
            let n = span.len();
            // Keys padded to whole vectors (scores of -inf, weighing 0), so that no loop over
            // them has a remainder.
            let padded = n.next_multiple_of(16);
            let base = span.start * 3 * h;
            let row = |r: usize| &qkv[base + r * 3 * h..base + (r + 1) * 3 * h];
            // Per head, the keys transposed `[d][key]`, so that a query's scores are
            // elementwise passes over contiguous rows.
            let mut keys_t = vec![0f32; hd * padded];
            let mut scores = vec![0f32; padded];
            crate::simd::widest(
                #[inline(always)]
                || {
                    for head in 0..self.heads {
                        let at = head * hd;
                        for j in 0..n {
                            for (d, &v) in row(j)[h + at..h + at + hd].iter().enumerate() {
                                keys_t[d * padded + j] = v;
                            }
                        }
                        for i in 0..n {
                            let q = &row(i)[at..at + hd];
                            // Scores 16 keys at a time, summed over d in registers.
                            for (c, s) in scores.chunks_exact_mut(16).enumerate() {
                                let mut acc = [0f32; 16];
                                for (d, &qd) in q.iter().enumerate() {
                                    let kd = &keys_t[d * padded + c * 16..][..16];
                                    acc.iter_mut().zip(kd).for_each(|(a, &k)| *a += qd * k);
                                }
                                s.copy_from_slice(&acc);
                            }
                            scores[n..].fill(f32::NEG_INFINITY);
                            softmax_in_place(&mut scores, scale);
                            let out = &mut ctx[i * h + at..i * h + at + hd];
                            let at = 2 * h + at;
                            weighted_sum(out, &scores[..n], |j| &row(j)[at..at + hd]);
                        }
                    }
                },
            )
        };
        // Split ctx into each query's rows, computed in parallel when there are several.
        let mut parts = Vec::with_capacity(spans.len());
        let mut rest = ctx;
        for s in spans {
            let (part, tail) = rest.split_at_mut(s.len() * h);
            parts.push((part, s));
            rest = tail;
        }
        if parts.len() > 1 {
            parts.into_par_iter().for_each(|(c, s)| one(c, s));
        } else {
            parts.into_iter().for_each(|(c, s)| one(c, s));
        }
    }
}
