//! The decoder step on the CPU, written out: the same function as the candle step of
//! [`T5ForConditionalGeneration`], without its per-op cost.
//!
//! A decoder step for a few rows (one query x 10 beams) is dozens of tiny products and
//! elementwise passes; as candle ops each allocates its output, checks layouts and hands off to
//! threads, which cost several times the arithmetic (docs/BENCHMARKS.md, issue 23). Here every
//! product is one kernel call, on the weights packed when the model was prepared for search
//! (`super::panels`) or else on the checkpoint's tensors in place (`super::skinny` for few
//! rows, the gemm crate for many), written straight where it is used next: new keys and values
//! into the cache, the output projections added onto the residual stream. Norms, attention,
//! the activation and the head's normaliser are plain loops over rows in scratch buffers kept
//! in the cache, so a step allocates only its result.
//!
//! The head: the logits of every output row are computed (the normaliser needs them all) but
//! never normalised or copied into the whole vocabulary: [`HostScores`] keeps them with each
//! row's log-normaliser and its copy-head mixture, and computes the log-prob of exactly the
//! tokens beam search asks for. Numbers equal the candle step's to float rounding (tests/model.rs
//! compares every step with a full forward pass; `GENRET_PORTABLE_OPS=1` runs the candle step).

use std::sync::Arc;

use candle_core::{Layout, Storage, Tensor};
use rayon::prelude::*;

use super::cache::DecoderCache;
use super::config::Activation;
use super::kernels::{Product, dot, exp_nonpositive, softmax_in_place, weighted_sum};
use super::layers::{Dense, SMALL_ROWS, relative_bucket};
use super::panels::{PackedWeight, WIDTH};
use super::skinny::{skinny_gemm, skinny_gemm_par};
use super::t5::T5ForConditionalGeneration;

/// Self-attention keys and values of every decoder layer, and the step's scratch space.
#[derive(Debug, Clone)]
pub(super) struct HostKv {
    /// Per layer: keys and values, each `[row][position < cap][heads * d_kv]`.
    layers: Vec<[Vec<f32>; 2]>,
    rows: usize,
    inner: usize,
    cap: usize,
    /// A reorder's destination, swapped with the layer's buffer.
    spare: Vec<f32>,
    scratch: Scratch,
    /// The logits buffer of a step whose scores are no longer needed ([`DecoderCache::recycle`]).
    pub(super) spare_logits: Vec<f32>,
}

#[derive(Debug, Clone, Default)]
struct Scratch {
    x: Vec<f32>,
    h: Vec<f32>,
    q: Vec<f32>,
    att: Vec<f32>,
    ff: Vec<f32>,
    ff_gate: Vec<f32>,
}

impl HostKv {
    pub(super) fn new(layers: usize, rows: usize, inner: usize) -> HostKv {
        HostKv {
            layers: vec![[Vec::new(), Vec::new()]; layers],
            rows,
            inner,
            cap: 0,
            spare: Vec::new(),
            scratch: Scratch::default(),
            spare_logits: Vec::new(),
        }
    }

    /// New row `i` continues old row `from[i]`, copying the `steps` cached positions of each;
    /// `from` may be longer than the rows there are (a query's one row widened to its beams).
    pub(super) fn select_rows(&mut self, from: &[u32], steps: usize) {
        let (row, used) = (self.cap * self.inner, steps * self.inner);
        if from.len() == self.rows && from.iter().enumerate().all(|(i, &r)| r as usize == i) {
            return;
        }
        for kv in &mut self.layers {
            for buf in kv.iter_mut() {
                self.spare.resize(from.len() * row, 0.0);
                for (i, &r) in from.iter().enumerate() {
                    let src = r as usize * row;
                    self.spare[i * row..i * row + used].copy_from_slice(&buf[src..src + used]);
                }
                std::mem::swap(buf, &mut self.spare);
            }
        }
        self.rows = from.len();
    }

    /// Makes room for position `pos`: doubles the capacity when full (amortised O(1) a step).
    fn reserve(&mut self, pos: usize) {
        if pos < self.cap {
            return;
        }
        let cap = (self.cap * 2).max(pos + 1).max(16);
        let (old, new) = (self.cap * self.inner, cap * self.inner);
        for kv in &mut self.layers {
            for buf in kv.iter_mut() {
                let mut grown = vec![0f32; self.rows * new];
                for r in 0..self.rows {
                    grown[r * new..r * new + old].copy_from_slice(&buf[r * old..(r + 1) * old]);
                }
                *buf = grown;
            }
        }
        self.cap = cap;
    }
}

/// A step's next-token scores on the host: logits of every output row, per row's normaliser
/// and copy-head mixture; log-probs are computed for the tokens asked for only.
#[derive(Debug, Clone)]
pub struct HostScores {
    /// `[output row][row]`: each output row's logits for all rows, as the head writes them.
    logits: Vec<f32>,
    rows: usize,
    /// Per row: `log(sum(exp(logits)))`.
    log_norm: Vec<f32>,
    copy: Option<CopyMix>,
    /// Token -> output row (`u32::MAX`: not writable); `None`: the identity below `outputs`.
    row_of: Option<Arc<[u32]>>,
    outputs: usize,
}

/// A copy mass no token has (masses are at least 0): the token is not copied at that row.
const NOT_COPIED: f32 = -1.0;

/// The copy head's part of a step: `P(w) = (1 - g) P_vocab(w) + g * copied(w)`.
#[derive(Debug, Clone)]
struct CopyMix {
    /// Per row: `log(1 - g)`.
    keep: Vec<f32>,
    /// Per row: (output row, `g * attention mass`) of each distinct copied token.
    copied: Vec<Vec<(u32, f32)>>,
}

impl HostScores {
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Each row repeated `times` times.
    pub(super) fn expand(self, times: usize) -> HostScores {
        let rows = self.rows * times;
        let logits = self
            .logits
            .chunks(self.rows.max(1))
            .flat_map(|out| out.iter().flat_map(|&v| std::iter::repeat_n(v, times)))
            .collect();
        let repeat = |v: &[f32]| -> Vec<f32> {
            v.iter()
                .flat_map(|&x| std::iter::repeat_n(x, times))
                .collect()
        };
        let copy = self.copy.map(|mix| CopyMix {
            keep: repeat(&mix.keep),
            copied: mix
                .copied
                .iter()
                .flat_map(|c| std::iter::repeat_n(c.clone(), times))
                .collect(),
        });
        HostScores {
            logits,
            rows,
            log_norm: repeat(&self.log_norm),
            copy,
            row_of: self.row_of,
            outputs: self.outputs,
        }
    }

    /// The logits buffer, for the next step to write into.
    pub(super) fn into_buffer(self) -> Vec<f32> {
        self.logits
    }

    /// Log-probs `(rows, vocab)` over the whole vocabulary, `-inf` where the model cannot
    /// write: what the candle step returns.
    pub fn to_tensor(
        &self,
        vocab: usize,
        device: &candle_core::Device,
    ) -> candle_core::Result<Tensor> {
        let mut out = vec![f32::NEG_INFINITY; self.rows * vocab];
        for (r, row) in out.chunks_mut(vocab.max(1)).enumerate() {
            for (t, v) in row.iter_mut().enumerate() {
                *v = self.log_prob(r, t as u32);
            }
        }
        Tensor::from_vec(out, (self.rows, vocab), device)
    }

    /// The log-probs of `index` `(rows, width)` (token ids, row by row), one `Vec` per row:
    /// [`log_prob`](Self::log_prob) of each, with each row's copied tokens looked up in a
    /// table rather than searched for per token (a first step asks for most of the
    /// vocabulary), rows on rayon's threads when there are many tokens.
    pub fn pick(&self, index: &[u32], width: usize) -> Vec<Vec<f32>> {
        let width = width.max(1);
        let copies = if self.copy.is_some() { self.outputs } else { 0 };
        let row = |mass: &mut Vec<f32>, (r, tokens): (usize, &[u32])| -> Vec<f32> {
            let Some(mix) = &self.copy else {
                return tokens.iter().map(|&t| self.log_prob(r, t)).collect();
            };
            for &(out, m) in &mix.copied[r] {
                mass[out as usize] = m;
            }
            let picked = tokens
                .iter()
                .map(|&t| self.mixed(r, t, |out| mass[out as usize]))
                .collect();
            for &(out, _) in &mix.copied[r] {
                mass[out as usize] = NOT_COPIED;
            }
            picked
        };
        if index.len() >= 1 << 16 {
            index
                .par_chunks(width)
                .enumerate()
                .map_init(|| vec![NOT_COPIED; copies], row)
                .collect()
        } else {
            let mut mass = vec![NOT_COPIED; copies];
            index
                .chunks(width)
                .enumerate()
                .map(|rt| row(&mut mass, rt))
                .collect()
        }
    }

    /// The log-prob of `token` at `row`; `-inf` for a token the model cannot write.
    pub fn log_prob(&self, row: usize, token: u32) -> f32 {
        self.mixed(row, token, |out| {
            let copied = &self.copy.as_ref().expect("a copy head").copied[row];
            copied
                .iter()
                .find(|(r, _)| *r == out)
                .map_or(NOT_COPIED, |&(_, mass)| mass)
        })
    }

    /// [`log_prob`](Self::log_prob) with the copy head's mass of an output row from `mass`
    /// ([`NOT_COPIED`] at this row: none).
    #[inline]
    fn mixed(&self, row: usize, token: u32, mass: impl Fn(u32) -> f32) -> f32 {
        let out = match &self.row_of {
            Some(map) => map.get(token as usize).copied().unwrap_or(u32::MAX),
            None if (token as usize) < self.outputs => token,
            None => u32::MAX,
        };
        if out == u32::MAX {
            return f32::NEG_INFINITY;
        }
        let lp = self.logits[out as usize * self.rows + row] - self.log_norm[row];
        let Some(mix) = &self.copy else {
            return lp;
        };
        // The same formula as the candle step's `mix_copy`.
        let kept = lp + mix.keep[row];
        match mass(out) {
            NOT_COPIED => kept,
            m => (kept.exp() + m).ln(),
        }
    }
}

/// The f32 elements of a contiguous CPU tensor, borrowed from its storage guard.
fn elements<'a, G: std::ops::Deref<Target = Storage>>(
    (storage, layout): &'a (G, &Layout),
) -> candle_core::Result<&'a [f32]> {
    let Storage::Cpu(cpu) = &**storage else {
        candle_core::bail!("host decoder: not a CPU tensor");
    };
    match layout.contiguous_offsets() {
        Some((a, b)) => Ok(&cpu.as_slice::<f32>()?[a..b]),
        None => candle_core::bail!("host decoder: a weight is not contiguous"),
    }
}

/// `out[r] = x[r] * w / sqrt(mean(x[r]^2) + eps)` for every row of `d`.
fn rms_norm(out: &mut [f32], x: &[f32], w: &[f32], eps: f32) {
    let d = w.len();
    for (o, row) in out.chunks_mut(d).zip(x.chunks(d)) {
        let ms = row.iter().map(|v| v * v).sum::<f32>() / d as f32;
        let r = (ms + eps).sqrt().recip();
        for ((o, &v), &w) in o.iter_mut().zip(row).zip(w) {
            *o = v * r * w;
        }
    }
}

/// A linear layer's weight as the step reads it: the checkpoint's tensor in place, or packed
/// by [`T5ForConditionalGeneration::for_inference`].
#[derive(Clone, Copy)]
enum Lin<'a> {
    InPlace(&'a [f32]),
    Packed(&'a PackedWeight),
}

impl Lin<'_> {
    /// Output columns, for inputs of `k` columns.
    fn n(&self, k: usize) -> usize {
        match self {
            Lin::InPlace(w) => w.len() / k.max(1),
            Lin::Packed(p) => p.n(),
        }
    }
}

/// `y = x @ w^T` for `x` `(rows, k)` and a weight `w` `(n, k)`, into `dst` with row stride
/// `dst_rs` (a cache slot, the residual stream); `accumulate` adds instead.
fn linear(dst: &mut [f32], dst_rs: usize, x: &[f32], w: Lin, rows: usize, accumulate: bool) {
    let k = x.len() / rows.max(1);
    let n = w.n(k);
    let w = match w {
        Lin::InPlace(w) => w,
        Lin::Packed(p) => return p.apply_par(dst, dst_rs, x, rows, accumulate),
    };
    if rows <= SMALL_ROWS {
        return skinny_gemm_par(dst, dst_rs, w, x, (rows, n, k), accumulate);
    }
    Product {
        dims: (rows, n, k),
        lhs_strides: (k, 1),
        rhs_strides: (1, k),
        dst_strides: (dst_rs, 1),
        accumulate,
        parallel: true,
    }
    .run(dst, x, w);
}

/// `out = softmax(q . keys_t + bias_t) @ values` over `n` positions, keys and values `stride`
/// apart, `scores` at least `n` rounded up to 16 long. T5 does not scale the scores. Inline it
/// into a [`crate::simd::widest`] loop: dot products, the softmax and the weighted sum are then
/// whole vectors.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn attend(
    out: &mut [f32],
    q: &[f32],
    keys: &[f32],
    values: &[f32],
    stride: usize,
    n: usize,
    bias: &[f32],
    scores: &mut [f32],
) {
    let dk = q.len();
    for (t, s) in scores[..n].iter_mut().enumerate() {
        *s = dot(q, &keys[t * stride..t * stride + dk]) + bias[t];
    }
    // Padded to whole vectors with scores of -inf, which weigh 0.
    let padded = n.next_multiple_of(16);
    scores[n..padded].fill(f32::NEG_INFINITY);
    softmax_in_place(&mut scores[..padded], 1.0);
    weighted_sum(out, &scores[..n], |t| &values[t * stride..t * stride + dk]);
}

/// Per row `r` of logits laid out `[output row][row]`: `log(sum(exp(logits[.][r])))`.
fn log_norms(logits: &[f32], rows: usize) -> Vec<f32> {
    if rows == 0 {
        return Vec::new();
    }
    // The logits in spans of 16 output rows (`rows * 16` values, a whole number of vectors),
    // each reduced elementwise into one span-sized accumulator whose value `j` belongs to row
    // `j % rows`: full vectors however few rows there are (a query's 10 beams).
    let span = rows * 16;
    let mut max = vec![f32::NEG_INFINITY; rows];
    let mut sum = vec![0f32; rows];
    crate::simd::widest(
        #[inline(always)]
        || {
            let mut acc = vec![f32::NEG_INFINITY; span];
            let mut spans = logits.chunks_exact(span);
            for chunk in &mut spans {
                for (a, &v) in acc.iter_mut().zip(chunk) {
                    *a = a.max(v);
                }
            }
            for (a, &v) in acc.iter_mut().zip(spans.remainder()) {
                *a = a.max(v);
            }
            for (j, &a) in acc.iter().enumerate() {
                max[j % rows] = max[j % rows].max(a);
            }
            let pattern: Vec<f32> = (0..span).map(|j| max[j % rows]).collect();
            acc.fill(0.0);
            let mut spans = logits.chunks_exact(span);
            for chunk in &mut spans {
                for ((a, &v), &m) in acc.iter_mut().zip(chunk).zip(&pattern) {
                    *a += exp_nonpositive(v - m);
                }
            }
            for ((a, &v), &m) in acc.iter_mut().zip(spans.remainder()).zip(&pattern) {
                *a += exp_nonpositive(v - m);
            }
            for (j, &a) in acc.iter().enumerate() {
                sum[j % rows] += a;
            }
        },
    );
    max.iter().zip(sum).map(|(&m, s)| m + s.ln()).collect()
}

/// One layer's weights, borrowed from the model's tensors or its packed copy.
struct LayerWeights<'a> {
    self_norm: &'a [f32],
    q: Lin<'a>,
    k: Lin<'a>,
    v: Lin<'a>,
    o: Lin<'a>,
    cross_norm: &'a [f32],
    cross_q: Lin<'a>,
    cross_o: Lin<'a>,
    ff_norm: &'a [f32],
    wi: Lin<'a>,
    wi_1: Option<Lin<'a>>,
    wo: Lin<'a>,
}

impl T5ForConditionalGeneration {
    /// The step of [`step`](Self::step) on the host (see the module doc): next-token scores
    /// for every row, growing the cache.
    pub(super) fn step_host(
        &self,
        tokens: &[u32],
        cache: &mut DecoderCache,
    ) -> candle_core::Result<HostScores> {
        let c = &self.config;
        let (d, dk, heads) = (c.d_model, c.d_kv, c.num_heads);
        let inner = heads * dk;
        let rows = tokens.len();
        let (queries, beams) = (cache.queries, cache.beams);
        let pos = cache.steps;
        let eps = c.layer_norm_epsilon as f32;

        // Borrow every weight in place, in a fixed order.
        let mut tensors: Vec<&Tensor> = Vec::new();
        for block in &self.decoder {
            let (cross, cross_norm) = block.cross_attention.as_ref().expect("decoder block");
            let a = &block.self_attention;
            tensors.extend([&block.self_norm, a.q.weight(), a.k.weight(), a.v.weight()]);
            tensors.extend([a.o.weight(), cross_norm, cross.q.weight(), cross.o.weight()]);
            let ff = &block.ff;
            tensors.extend([&ff.layer_norm, ff.wi.weight(), ff.wo.weight()]);
            if let Some(w) = &ff.wi_1 {
                tensors.push(w.weight());
            }
        }
        let head = self.step_head();
        let table = super::layers::bias_table(&self.decoder).embeddings();
        tensors.extend([&self.decoder_norm, head, table, self.shared.embeddings()]);
        for (k, v) in &cache.cross_kv {
            tensors.extend([k, v]);
        }
        tensors.push(&cache.cross_bias);
        let copy = match (&self.copy, &cache.copy) {
            (Some(h), Some(src)) => {
                tensors.extend([h.q.weight(), &h.gate, &src.keys, &src.bias]);
                Some(src)
            }
            _ => None,
        };
        let guards: Vec<_> = tensors.iter().map(|t| t.storage_and_layout()).collect();
        let slices = guards
            .iter()
            .map(elements)
            .collect::<candle_core::Result<Vec<&[f32]>>>()?;
        let mut next = slices.into_iter();
        let mut take = || next.next().expect("one slice per tensor");
        // A prepared model's packed weight where it has one (`Dense::pack`), else the tensor.
        fn lin<'a>(dense: &'a Dense, tensor: &'a [f32]) -> Lin<'a> {
            dense.packed().map_or(Lin::InPlace(tensor), Lin::Packed)
        }
        let layers: Vec<LayerWeights> = self
            .decoder
            .iter()
            .map(|block| {
                let (cross, _) = block.cross_attention.as_ref().expect("decoder block");
                let (a, ff) = (&block.self_attention, &block.ff);
                LayerWeights {
                    self_norm: take(),
                    q: lin(&a.q, take()),
                    k: lin(&a.k, take()),
                    v: lin(&a.v, take()),
                    o: lin(&a.o, take()),
                    cross_norm: take(),
                    cross_q: lin(&cross.q, take()),
                    cross_o: lin(&cross.o, take()),
                    ff_norm: take(),
                    wi: lin(&ff.wi, take()),
                    wo: lin(&ff.wo, take()),
                    wi_1: ff.wi_1.as_ref().map(|w| lin(w, take())),
                }
            })
            .collect();
        let (final_norm, head, table, shared) = (take(), take(), take(), take());
        let cross_kv: Vec<(&[f32], &[f32])> = (0..layers.len()).map(|_| (take(), take())).collect();
        let cross_bias = take();
        let copy_weights = copy.map(|_| (take(), take(), take(), take()));
        let src = cross_bias.len() / queries.max(1);
        let act: Activation = self.decoder[0].ff.act;
        let d_ff = layers[0].wi.n(d);

        let kv = cache.host.as_mut().expect("a host cache");
        kv.reserve(pos);
        let cap = kv.cap;
        let HostKv {
            layers: kv_layers,
            scratch: s,
            spare_logits,
            ..
        } = kv;
        s.x.resize(rows * d, 0.0);
        s.h.resize(rows * d, 0.0);
        s.q.resize(rows * inner, 0.0);
        s.att.resize(rows * inner, 0.0);
        s.ff.resize(rows * d_ff, 0.0);
        if layers[0].wi_1.is_some() {
            s.ff_gate.resize(rows * d_ff, 0.0);
        }
        for (r, &t) in tokens.iter().enumerate() {
            let t = t as usize;
            if (t + 1) * d > shared.len() {
                candle_core::bail!("token {t} outside the vocabulary");
            }
            s.x[r * d..(r + 1) * d].copy_from_slice(&shared[t * d..(t + 1) * d]);
        }
        // Position bias of the new position over positions 0..=pos, per head.
        let n = pos + 1;
        let mut self_bias = vec![0f32; heads * n];
        for t in 0..n {
            let b = relative_bucket(
                t as i64 - pos as i64,
                false,
                c.relative_attention_num_buckets,
                c.relative_attention_max_distance,
            ) as usize;
            for h in 0..heads {
                self_bias[h * n + t] = table[b * heads + h];
            }
        }
        let parallel = rows > SMALL_ROWS;
        let row_kv = cap * inner;

        for (l, w) in layers.iter().enumerate() {
            // Self-attention: the new key and value go straight into the cache.
            rms_norm(&mut s.h, &s.x, w.self_norm, eps);
            linear(&mut s.q, inner, &s.h, w.q, rows, false);
            let [keys, values] = &mut kv_layers[l];
            linear(&mut keys[pos * inner..], row_kv, &s.h, w.k, rows, false);
            linear(&mut values[pos * inner..], row_kv, &s.h, w.v, rows, false);
            let (keys, values) = (&keys[..], &values[..]);
            let self_row = |r: usize, out: &mut [f32], scores: &mut Vec<f32>| {
                scores.resize(n.next_multiple_of(16), 0.0);
                crate::simd::widest(
                    #[inline(always)]
                    || {
                        for h in 0..heads {
                            let at = r * row_kv + h * dk;
                            attend(
                                &mut out[h * dk..(h + 1) * dk],
                                &s.q[r * inner + h * dk..r * inner + (h + 1) * dk],
                                &keys[at..],
                                &values[at..],
                                inner,
                                n,
                                &self_bias[h * n..],
                                scores,
                            );
                        }
                    },
                )
            };
            for_rows(&mut s.att, inner, parallel, self_row);
            linear(&mut s.x, d, &s.att, w.o, rows, true);

            // Cross-attention: a query's beams share its keys and values.
            rms_norm(&mut s.h, &s.x, w.cross_norm, eps);
            linear(&mut s.q, inner, &s.h, w.cross_q, rows, false);
            let (ck, cv) = cross_kv[l];
            let cross_row = |r: usize, out: &mut [f32], scores: &mut Vec<f32>| {
                scores.resize(src.next_multiple_of(16), 0.0);
                let qi = r / beams;
                crate::simd::widest(
                    #[inline(always)]
                    || {
                        for h in 0..heads {
                            let at = (qi * heads + h) * src * dk;
                            attend(
                                &mut out[h * dk..(h + 1) * dk],
                                &s.q[r * inner + h * dk..r * inner + (h + 1) * dk],
                                &ck[at..],
                                &cv[at..],
                                dk,
                                src,
                                &cross_bias[qi * src..],
                                scores,
                            );
                        }
                    },
                )
            };
            for_rows(&mut s.att, inner, parallel, cross_row);
            linear(&mut s.x, d, &s.att, w.cross_o, rows, true);

            // Feed-forward.
            rms_norm(&mut s.h, &s.x, w.ff_norm, eps);
            linear(&mut s.ff, d_ff, &s.h, w.wi, rows, false);
            s.ff.iter_mut().for_each(|v| *v = act.of(*v));
            if let Some(wi_1) = w.wi_1 {
                linear(&mut s.ff_gate, d_ff, &s.h, wi_1, rows, false);
                s.ff.iter_mut().zip(&s.ff_gate).for_each(|(a, b)| *a *= b);
            }
            linear(&mut s.x, d, &s.ff, w.wo, rows, true);
        }
        cache.steps += 1;
        rms_norm(&mut s.h, &s.x, final_norm, eps);

        let copy = match (copy, copy_weights) {
            (Some(src_rows), Some((cq, gate, keys, bias))) => Some(copy_mix(
                &s.h,
                (cq, gate, keys, bias),
                &src_rows.rows.rows,
                (d, beams, rows),
            )),
            _ => None,
        };
        // The head, `W @ h^T`: the weight is the left operand, streamed without packing, and
        // its output rows are split over the threads.
        if c.scales_head() {
            let scale = (d as f32).powf(-0.5);
            s.h.iter_mut().for_each(|v| *v *= scale);
        }
        let hs = &s.h;
        let head = match &self.packed_head {
            Some(packed) => Lin::Packed(packed),
            None => Lin::InPlace(head),
        };
        let outputs = head.n(d);
        // The previous step's buffer, once beam search has handed it back: no fresh pages.
        let mut logits = std::mem::take(spare_logits);
        logits.resize(outputs * rows, 0.0);
        head_logits(&mut logits, head, hs, rows);
        let log_norm = log_norms(&logits, rows);
        Ok(HostScores {
            logits,
            rows,
            log_norm,
            copy,
            row_of: self.output.as_ref().map(|o| Arc::clone(&o.row_of)),
            outputs,
        })
    }
}

/// The head's logits `W @ h^T`, laid out `[output][row]`: the weight is the left operand,
/// streamed without packing (or in its panels), and its outputs are split over the threads in
/// whole panels, each writing its own slice.
fn head_logits(logits: &mut [f32], head: Lin, hs: &[f32], rows: usize) {
    let d = hs.len() / rows.max(1);
    let outputs = head.n(d);
    // Waking a second thread costs about what 8M multiply-adds do on one.
    let threads = if outputs * rows * d >= 1 << 23 {
        rayon::current_num_threads()
    } else {
        1
    };
    let chunk = outputs.div_ceil(threads).div_ceil(WIDTH).max(1) * WIDTH;
    logits
        .par_chunks_mut(chunk * rows)
        .enumerate()
        .for_each(|(c, dst)| {
            let panels = c * chunk / WIDTH..((c + 1) * chunk).min(outputs).div_ceil(WIDTH);
            let w = match head {
                Lin::Packed(p) => return p.apply(panels, dst, (1, rows), hs, rows, false),
                Lin::InPlace(w) => &w[c * chunk * d..((c + 1) * chunk).min(outputs) * d],
            };
            let n = w.len() / d;
            if rows <= SMALL_ROWS {
                return skinny_gemm(dst, (1, rows), w, hs, (rows, n, d), false);
            }
            Product {
                dims: (n, rows, d),
                lhs_strides: (d, 1),
                rhs_strides: (1, d),
                dst_strides: (rows, 1),
                accumulate: false,
                parallel: false,
            }
            .run(dst, w, hs)
        });
}

/// Runs `f(row, out_row, scores)` for every row of `out` (`width` each), on rayon's threads
/// when `parallel`.
fn for_rows<F>(out: &mut [f32], width: usize, parallel: bool, f: F)
where
    F: Fn(usize, &mut [f32], &mut Vec<f32>) + Sync,
{
    if parallel {
        out.par_chunks_mut(width)
            .enumerate()
            .for_each_init(Vec::new, |scores, (r, o)| f(r, o, scores));
    } else {
        let mut scores = Vec::new();
        for (r, o) in out.chunks_mut(width).enumerate() {
            f(r, o, &mut scores);
        }
    }
}

/// The copy head for final states `h` `(rows, d)`: attention of `q = h Wq^T / sqrt(d)` over
/// each query's source keys `(src, d)` plus `bias`, summed per copied output row, and the gate
/// `g = sigmoid(gate . h)`; the same function as the candle step's `copy_parts` and `mix_copy`.
fn copy_mix(
    h: &[f32],
    (wq, gate, keys, bias): (&[f32], &[f32], &[f32], &[f32]),
    source_rows: &[Vec<u32>],
    (d, beams, rows): (usize, usize, usize),
) -> CopyMix {
    let mut q = vec![0f32; rows * d];
    linear(&mut q, d, h, Lin::InPlace(wq), rows, false);
    let scale = (d as f32).powf(-0.5);
    q.iter_mut().for_each(|v| *v *= scale);
    let src = source_rows.first().map_or(0, Vec::len);
    let mut keep = Vec::with_capacity(rows);
    let mut copied = Vec::with_capacity(rows);
    let mut scores = vec![0f32; src];
    for r in 0..rows {
        let qi = r / beams.max(1);
        let qr = &q[r * d..(r + 1) * d];
        let mut max = f32::NEG_INFINITY;
        let z = crate::simd::widest(
            #[inline(always)]
            || {
                for (j, s) in scores.iter_mut().enumerate() {
                    let k = &keys[(qi * src + j) * d..(qi * src + j + 1) * d];
                    *s = dot(qr, k) + bias[qi * src + j];
                    max = max.max(*s);
                }
                dot(&h[r * d..(r + 1) * d], gate)
            },
        );
        let mut sum = 0.0;
        for s in scores.iter_mut() {
            *s = (*s - max).exp();
            sum += *s;
        }
        let g = 1.0 / ((-z).exp() + 1.0);
        keep.push((1.0 - g).ln());
        // A token at several source positions copies their summed attention.
        let mut mass: Vec<(u32, f32)> = Vec::new();
        for (&out, &s) in source_rows[qi].iter().zip(&scores) {
            if out == u32::MAX {
                continue;
            }
            match mass.iter_mut().find(|(t, _)| *t == out) {
                Some((_, m)) => *m += s / sum,
                None => mass.push((out, s / sum)),
            }
        }
        mass.iter_mut().for_each(|(_, m)| *m *= g);
        copied.push(mass);
    }
    CopyMix { keep, copied }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_norms_equal_the_direct_log_sum_exp_per_row() {
        // Spans of 16 output rows with and without a remainder, fewer and more rows than a
        // vector's lanes.
        for (outputs, rows) in [(37, 3), (100, 10), (16, 17), (3, 1), (1000, 160)] {
            let logits: Vec<f32> = (0..outputs * rows)
                .map(|i| ((i * 7919 % 113) as f32 / 9.0) - 6.0)
                .collect();
            let got = log_norms(&logits, rows);
            assert_eq!(got.len(), rows);
            for (r, got) in got.iter().enumerate() {
                let want = (0..outputs)
                    .map(|o| (logits[o * rows + r] as f64).exp())
                    .sum::<f64>()
                    .ln();
                assert!(
                    (*got as f64 - want).abs() < 1e-5,
                    "{outputs} x {rows}, row {r}: {got} vs {want}"
                );
            }
        }
    }
}
