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

use super::kernels::{exp_in_place, gelu_erf_in_place, with_slice};
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

    /// `dst[r] (+)= x[r] @ w^T + b` for the `rows` rows of `x`; `par` splits the product over
    /// rayon's threads where it is large enough.
    fn apply(&self, dst: &mut [f32], x: &[f32], rows: usize, accumulate: bool, par: bool) {
        let n = self.n();
        if par {
            self.w.apply_par(dst, n, x, rows, accumulate);
        } else {
            let panels = n.div_ceil(super::panels::WIDTH);
            self.w.apply(0..panels, dst, (n, 1), x, rows, accumulate);
        }
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

/// Query rows scored together: independent sums that keep the vector units busy where one
/// row's sum over the head's dimensions would wait on each add.
const BLOCK: usize = 4;

/// `scores[i][j] = queries[i] . keys[j]` for `queries` `[rows][hd]` (rows a multiple of
/// [`BLOCK`]) and `keys_t` `[hd][padded]` (padded a multiple of 16), each sum over `d` in
/// order. Inline it into a [`crate::simd::widest`] loop.
#[inline(always)]
fn block_scores(scores: &mut [f32], queries: &[f32], keys_t: &[f32], hd: usize, padded: usize) {
    for (qs, ss) in queries
        .chunks_exact(BLOCK * hd)
        .zip(scores.chunks_exact_mut(BLOCK * padded))
    {
        for c in (0..padded).step_by(16) {
            let mut acc = [[0f32; 16]; BLOCK];
            for d in 0..hd {
                let k: &[f32; 16] = keys_t[d * padded + c..][..16].try_into().unwrap();
                for (r, acc) in acc.iter_mut().enumerate() {
                    let q = qs[r * hd + d];
                    acc.iter_mut().zip(k).for_each(|(a, &k)| *a += q * k);
                }
            }
            for (r, acc) in acc.iter().enumerate() {
                ss[r * padded + c..][..16].copy_from_slice(acc);
            }
        }
    }
}

/// `out[i] = sum over j of weights[i][j] * values[j]` for `values` `[n][hd]`, `weights`
/// `[rows][padded]` (rows a multiple of [`BLOCK`]) and `out` `[rows][hd]`: 16 dimensions of a
/// block of rows at a time, each sum over `j` in order. Inline it into a
/// [`crate::simd::widest`] loop.
#[inline(always)]
fn block_weighted(out: &mut [f32], weights: &[f32], padded: usize, values: &[f32], hd: usize) {
    let n = values.len() / hd;
    for (os, ws) in out
        .chunks_exact_mut(BLOCK * hd)
        .zip(weights.chunks_exact(BLOCK * padded))
    {
        let mut c = 0;
        while c < hd {
            let len = (hd - c).min(16);
            let mut acc = [[0f32; 16]; BLOCK];
            let add = |acc: &mut [[f32; 16]; BLOCK], j: usize, v: &[f32]| {
                for (r, acc) in acc.iter_mut().enumerate() {
                    let w = ws[r * padded + j];
                    acc.iter_mut().zip(v).for_each(|(a, &v)| *a += w * v);
                }
            };
            for j in 0..n {
                let v = &values[j * hd + c..][..len];
                // A whole vector's length known here, so that the sums stay in registers.
                match <&[f32; 16]>::try_from(v) {
                    Ok(v) => add(&mut acc, j, v),
                    Err(_) => add(&mut acc, j, v),
                }
            }
            for (r, acc) in acc.iter().enumerate() {
                os[r * hd + c..][..len].copy_from_slice(&acc[..len]);
            }
            c += 16;
        }
    }
}

/// `spans` (consecutive, from row 0) cut into at most `threads` runs of whole spans with about
/// as many rows each: the rows of each run.
fn groups(spans: &[std::ops::Range<usize>], threads: usize) -> Vec<std::ops::Range<usize>> {
    let rows = spans.last().map_or(0, |s| s.end);
    let mut out: Vec<std::ops::Range<usize>> = Vec::new();
    for s in spans {
        // A span joins the current run if its middle falls within that run's share of rows.
        let (runs, share) = (out.len(), rows * out.len().max(1) / threads.max(1));
        match out.last_mut() {
            Some(run) if s.start + s.len() / 2 <= share || runs >= threads => run.end = s.end,
            _ => out.push(s.clone()),
        }
    }
    out
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
        // With several queries, each thread takes whole queries through every layer (no
        // hand-over between ops, no serial norms); one query, or a few of unequal length,
        // splits each op's columns over the threads instead.
        let threads = rayon::current_num_threads();
        let groups = groups(&spans, threads);
        let largest = groups.iter().map(|g| g.len()).max().unwrap_or(0);
        if threads > 1 && groups.len() > 1 && largest * threads * 4 <= rows * 5 {
            let mut parts = Vec::with_capacity(groups.len());
            let mut rest = &mut x[..];
            for g in &groups {
                let (part, tail) = rest.split_at_mut(g.len() * h);
                let spans: Vec<_> = spans
                    .iter()
                    .filter(|s| g.contains(&s.start))
                    .map(|s| s.start - g.start..s.end - g.start)
                    .collect();
                parts.push((part, spans));
                rest = tail;
            }
            parts
                .into_par_iter()
                .for_each(|(x, spans)| self.layers(x, &spans, false));
        } else {
            self.layers(&mut x, &spans, true);
        }
        let mut out = vec![0f32; mask.len() * h];
        for (row, &i) in x.chunks(h).zip(&kept) {
            out[i * h..(i + 1) * h].copy_from_slice(row);
        }
        Ok(out)
    }

    /// Every layer on `x` `(rows, hidden)`, in place, whose queries' rows are `spans`; `par`
    /// splits each op over rayon's threads.
    fn layers(&self, x: &mut [f32], spans: &[std::ops::Range<usize>], par: bool) {
        let h = self.embedding_norm.w.len();
        let rows = x.len() / h;
        let mut qkv = vec![0f32; rows * 3 * h];
        let mut ctx = vec![0f32; rows * h];
        let mut y = vec![0f32; rows * h];
        let mut ff = Vec::new();
        for layer in &self.layers {
            layer.qkv.apply(&mut qkv, x, rows, false, par);
            self.attention(&mut ctx, &qkv, spans, h, par);
            y.copy_from_slice(x);
            layer.attention_output.apply(&mut y, &ctx, rows, true, par);
            layer.attention_norm.apply(&mut y);
            let inner = layer.intermediate.n();
            ff.resize(rows * inner, 0.0);
            layer.intermediate.apply(&mut ff, &y, rows, false, par);
            let act = self.act;
            if par && rows * inner >= 1 << 16 {
                ff.par_chunks_mut(inner * 16).for_each(|c| act.apply(c));
            } else {
                act.apply(&mut ff);
            }
            x.copy_from_slice(&y);
            layer.output.apply(x, &ff, rows, true, par);
            layer.output_norm.apply(x);
        }
    }

    /// Self-attention of each query's tokens over its own tokens, every head: `ctx` `(rows,
    /// hidden)` from `qkv` `(rows, 3 hidden)`, scores scaled by `1 / sqrt(head size)`.
    fn attention(
        &self,
        ctx: &mut [f32],
        qkv: &[f32],
        spans: &[std::ops::Range<usize>],
        h: usize,
        par: bool,
    ) {
        let hd = h / self.heads;
        let scale = (hd as f32).sqrt().recip();
        let one = |ctx: &mut [f32], span: &std::ops::Range<usize>| {
            let n = span.len();
            // Keys padded to whole vectors (scores of -inf, weighing 0) and queries to whole
            // blocks (rows of 0, never written out), so that no loop has a remainder.
            let padded = n.next_multiple_of(16);
            let blocks = n.next_multiple_of(BLOCK);
            let base = span.start * 3 * h;
            // Per head: the keys transposed `[d][key]`, the queries and values `[token][d]`,
            // and the scores `[query][key]`.
            let mut keys_t = vec![0f32; hd * padded];
            let mut queries = vec![0f32; blocks * hd];
            let mut values = vec![0f32; n * hd];
            let mut scores = vec![0f32; blocks * padded];
            let mut sums = vec![0f32; blocks];
            let mut out = vec![0f32; blocks * hd];
            crate::simd::widest(
                #[inline(always)]
                || {
                    for head in 0..self.heads {
                        let at = head * hd;
                        for j in 0..n {
                            let row = &qkv[base + j * 3 * h..][..3 * h];
                            for (d, &v) in row[h + at..][..hd].iter().enumerate() {
                                keys_t[d * padded + j] = v;
                            }
                            queries[j * hd..][..hd].copy_from_slice(&row[at..][..hd]);
                            values[j * hd..][..hd].copy_from_slice(&row[2 * h + at..][..hd]);
                        }
                        block_scores(&mut scores, &queries, &keys_t, hd, padded);
                        // Unnormalised weights, each row's sum divided out of its output.
                        for (s, sum) in scores.chunks_exact_mut(padded).zip(&mut sums).take(n) {
                            s[n..].fill(f32::NEG_INFINITY);
                            *sum = exp_in_place(s, scale);
                        }
                        block_weighted(&mut out, &scores, padded, &values, hd);
                        for (i, o) in out.chunks_exact(hd).take(n).enumerate() {
                            let inv = sums[i].recip();
                            let dst = &mut ctx[i * h + head * hd..][..hd];
                            dst.iter_mut().zip(o).for_each(|(d, &o)| *d = o * inv);
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
        if par && parts.len() > 1 {
            parts.into_par_iter().for_each(|(c, s)| one(c, s));
        } else {
            parts.into_iter().for_each(|(c, s)| one(c, s));
        }
    }
}
