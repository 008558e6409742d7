//! Hand-written CPU kernels: a strided gemm call for the decoder step's products, the exp and
//! GELU loops of inference, and fused training ops with their backward passes (label
//! log-probabilities, RMS norm, softmax).
//! On other devices (and with `GENRET_PORTABLE_OPS`, see [`crate::device`]) the training ops
//! are candle's composed ops, which compute the same function on any backend.
//!
//! Written by hand because candle composes these from elementwise ops for training (its fused
//! `rms_norm` and `softmax_last_dim` have no backward pass): every composed op is another pass
//! over the tensor with its own allocation and thread hand-off, in the forward pass and again
//! in the backward pass, and on the training step's `(512, 16k)` logits one pass is 32 MB.
//! A fused op reads its input once or twice forward and writes its gradient once backward.

use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Shape, Tensor};
use rayon::prelude::*;

use crate::device;

/// `dst (m x n, row-major) = lhs (m x k) @ rhs (k x n)`, operands addressed by (row, column)
/// strides, on the calling thread. Panics if a stride walks out of its slice.
pub(super) fn small_gemm(
    dst: &mut [f32],
    (m, n, k): (usize, usize, usize),
    lhs: &[f32],
    lhs_strides: (usize, usize),
    rhs: &[f32],
    rhs_strides: (usize, usize),
) {
    let product = Product {
        dims: (m, n, k),
        lhs_strides,
        rhs_strides,
        dst_strides: (n, 1),
        accumulate: false,
        parallel: false,
    };
    product.run(dst, lhs, rhs);
}

/// One matrix product `dst (m x n) (+)= lhs (m x k) @ rhs (k x n)`, every operand addressed by
/// (row, column) strides, so that a transposed or interleaved operand is read and written in
/// place.
#[derive(Debug, Clone, Copy)]
pub(super) struct Product {
    pub(super) dims: (usize, usize, usize),
    pub(super) lhs_strides: (usize, usize),
    pub(super) rhs_strides: (usize, usize),
    pub(super) dst_strides: (usize, usize),
    /// Adds the product to `dst` instead of overwriting it (a residual connection).
    pub(super) accumulate: bool,
    /// On rayon's threads (large products) rather than the calling thread alone.
    pub(super) parallel: bool,
}

/// Elements spanned by a `rows x cols` matrix with these strides.
fn extent(rows: usize, cols: usize, (rs, cs): (usize, usize)) -> usize {
    if rows == 0 || cols == 0 {
        0
    } else {
        (rows - 1) * rs + (cols - 1) * cs + 1
    }
}

impl Product {
    /// Runs the product. Panics if a stride walks out of its slice.
    pub(super) fn run(&self, dst: &mut [f32], lhs: &[f32], rhs: &[f32]) {
        let (m, n, k) = self.dims;
        if m == 0 || n == 0 {
            return;
        }
        assert!(dst.len() >= extent(m, n, self.dst_strides));
        assert!(lhs.len() >= extent(m, k, self.lhs_strides));
        assert!(rhs.len() >= extent(k, n, self.rhs_strides));
        let parallelism = if self.parallel {
            gemm::Parallelism::Rayon(rayon::current_num_threads())
        } else {
            gemm::Parallelism::None
        };
        // SAFETY: the asserts above keep every element gemm reads or writes inside its slice, and
        // `dst` is a unique borrow, so nothing aliases it.
        unsafe {
            gemm::gemm(
                m,
                n,
                k,
                dst.as_mut_ptr(),
                self.dst_strides.1 as isize,
                self.dst_strides.0 as isize,
                self.accumulate,
                lhs.as_ptr(),
                self.lhs_strides.1 as isize,
                self.lhs_strides.0 as isize,
                rhs.as_ptr(),
                self.rhs_strides.1 as isize,
                self.rhs_strides.0 as isize,
                if self.accumulate { 1.0 } else { 0.0 },
                1.0,
                false,
                false,
                false,
                parallelism,
            );
        }
    }
}

/// `e^x` for `x <= 0` (the normaliser's shifted logits), to a few parts in 10^8 relative: a
/// branch-free polynomial the compiler vectorises, unlike `f32::exp`, over 160k logits a step.
#[inline(always)]
pub(super) fn exp_nonpositive(x: f32) -> f32 {
    // Round to nearest by the 1.5 * 2^23 trick (exact for |t| < 2^22).
    const SHIFT: f32 = 12_582_912.0;
    // ln 2 in two parts (Cody and Waite), so that x - n ln 2 loses no bits.
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    let x = x.max(-87.0);
    // `shifted` is SHIFT + n exactly, so its low bits hold the integer n (in [-126, 0]):
    // read there rather than by `n as i32`, whose saturating conversion does not vectorise.
    let shifted = x * std::f32::consts::LOG2_E + SHIFT;
    let n = shifted - SHIFT;
    let r = (x - n * LN2_HI) - n * LN2_LO;
    // e^r on [-0.35, 0.35]: its Taylor series to the 7th power.
    let p = 1.0 / 5040.0f32;
    let p = p * r + 1.0 / 720.0;
    let p = p * r + 1.0 / 120.0;
    let p = p * r + 1.0 / 24.0;
    let p = p * r + 1.0 / 6.0;
    let p = p * r + 0.5;
    let p = p * r + 1.0;
    let p = p * r + 1.0;
    let n = shifted.to_bits().wrapping_sub(SHIFT.to_bits());
    p * f32::from_bits(n.wrapping_add(127) << 23)
}

/// `a . b` in 16 interleaved partial sums added pairwise, so that it vectorises (a float sum
/// in order cannot be). Inline it into a [`crate::simd::widest`] loop.
#[inline(always)]
pub(super) fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 16];
    let (mut xs, mut ys) = (a.chunks_exact(16), b.chunks_exact(16));
    for (x, y) in (&mut xs).zip(&mut ys) {
        acc.iter_mut()
            .zip(x.iter().zip(y))
            .for_each(|(s, (x, y))| *s += x * y);
    }
    let rest = xs.remainder().iter().zip(ys.remainder());
    acc.iter_mut().zip(rest).for_each(|(s, (x, y))| *s += x * y);
    let mut width = 8;
    while width > 0 {
        for i in 0..width {
            acc[i] += acc[i + width];
        }
        width /= 2;
    }
    acc[0]
}

/// `max(init, f(x) for x in xs)` in 16 lanes, so that it vectorises (in order, each max waits
/// for the one before); a max is the same in any order. Inline it into a
/// [`crate::simd::widest`] loop.
#[inline(always)]
pub(super) fn lane_max(xs: &[f32], init: f32, f: impl Fn(f32) -> f32) -> f32 {
    let mut lanes = [init; 16];
    let mut chunks = xs.chunks_exact(16);
    for c in &mut chunks {
        lanes.iter_mut().zip(c).for_each(|(m, &v)| *m = m.max(f(v)));
    }
    let rest = chunks.remainder();
    lanes
        .iter_mut()
        .zip(rest)
        .for_each(|(m, &v)| *m = m.max(f(v)));
    lanes.iter().fold(init, |m, &v| m.max(v))
}

/// `out = sum over t of weights[t] * value(t)` (each value at least `out` long), 16
/// dimensions at a time summed in registers, two such sums interleaved so that neither waits
/// on its last add: attention's weighted sum of values. Inline it into a
/// [`crate::simd::widest`] loop.
#[inline(always)]
pub(super) fn weighted_sum<'a>(
    out: &mut [f32],
    weights: &[f32],
    value: impl Fn(usize) -> &'a [f32],
) {
    let whole = out.len() / 16 * 16;
    let (full, rest) = out.split_at_mut(whole);
    let mut pairs = full.chunks_exact_mut(32);
    for (c, out) in (&mut pairs).enumerate() {
        let mut acc = [[0f32; 16]; 2];
        for (t, &w) in weights.iter().enumerate() {
            let v: &[f32; 32] = value(t)[c * 32..][..32].try_into().unwrap();
            for (a, v) in acc.iter_mut().zip(v.chunks_exact(16)) {
                a.iter_mut().zip(v).for_each(|(o, &v)| *o += w * v);
            }
        }
        out[..16].copy_from_slice(&acc[0]);
        out[16..].copy_from_slice(&acc[1]);
    }
    let single = pairs.into_remainder();
    let at = whole - single.len();
    if !single.is_empty() {
        let mut acc = [0f32; 16];
        for (t, &w) in weights.iter().enumerate() {
            let v: &[f32; 16] = value(t)[at..][..16].try_into().unwrap();
            acc.iter_mut().zip(v).for_each(|(o, &v)| *o += w * v);
        }
        single.copy_from_slice(&acc);
    }
    if !rest.is_empty() {
        let mut acc = [0f32; 16];
        let len = rest.len();
        for (t, &w) in weights.iter().enumerate() {
            let v = &value(t)[whole..][..len];
            acc.iter_mut().zip(v).for_each(|(o, &v)| *o += w * v);
        }
        rest.copy_from_slice(&acc[..len]);
    }
}

/// A softmax of scaled scores in place: `xs[j] = e^((xs[j] - max) * scale) / sum`, by
/// [`exp_nonpositive`] (0 below `e^-87`, as `f32::exp` all but rounds it; so a score of
/// `-inf`, padding, weighs 0). Whole vectors where `xs` is a multiple of 16 long; inline it
/// into a [`crate::simd::widest`] loop.
#[inline(always)]
pub(super) fn softmax_in_place(xs: &mut [f32], scale: f32) {
    let sum = exp_in_place(xs, scale);
    xs.iter_mut().for_each(|v| *v /= sum);
}

/// `xs[j] = e^((xs[j] - max) * scale)` in place, returning their sum: [`softmax_in_place`]
/// without its division, for a caller that divides fewer values (attention's output) instead.
/// Whole vectors where `xs` is a multiple of 16 long; inline it into a
/// [`crate::simd::widest`] loop.
#[inline(always)]
pub(super) fn exp_in_place(xs: &mut [f32], scale: f32) -> f32 {
    let max = lane_max(xs, f32::NEG_INFINITY, |v| v);
    let exp = |v: &mut f32, sum: &mut f32| {
        let x = (*v - max) * scale;
        *v = if x < -87.0 { 0.0 } else { exp_nonpositive(x) };
        *sum += *v;
    };
    let mut sums = [0f32; 16];
    let mut chunks = xs.chunks_exact_mut(16);
    for c in &mut chunks {
        c.iter_mut().zip(&mut sums).for_each(|(v, s)| exp(v, s));
    }
    let rest = chunks.into_remainder();
    rest.iter_mut().zip(&mut sums).for_each(|(v, s)| exp(v, s));
    sums.iter().sum()
}

/// GELU in its erf form, `x * (1 + erf(x / sqrt 2)) / 2`, on every element in place, with
/// erf by Abramowitz and Stegun's 7.1.26 (absolute error below 1.5e-7) over
/// [`exp_nonpositive`]: a branch-free loop the compiler vectorises, where libm's `erff`, which
/// candle's `gelu_erf` calls per element, took a tenth of a BERT encoder's time.
pub(super) fn gelu_erf_in_place(xs: &mut [f32]) {
    const P: f32 = 0.327_591_1;
    const A: [f32; 5] = [
        0.254_829_6,
        -0.284_496_74,
        1.421_413_8,
        -1.453_152,
        1.061_405_4,
    ];
    crate::simd::widest(
        #[inline(always)]
        || {
            for v in xs {
                let x = *v;
                let z = x.abs() * std::f32::consts::FRAC_1_SQRT_2;
                let t = 1.0 / (1.0 + P * z);
                let poly = t * (A[0] + t * (A[1] + t * (A[2] + t * (A[3] + t * A[4]))));
                // erf(|x| / sqrt 2), carried over to negative x by erf's oddness.
                let erf = 1.0 - poly * exp_nonpositive(-z * z);
                *v = 0.5 * x * (1.0 + erf.copysign(x));
            }
        },
    )
}

/// Runs `f` over the f32 storage of `t` (from its start offset).
pub(super) fn with_slice<R>(t: &Tensor, f: impl FnOnce(&[f32]) -> R) -> candle_core::Result<R> {
    let (storage, layout) = t.storage_and_layout();
    let candle_core::Storage::Cpu(cpu) = &*storage else {
        candle_core::bail!("with_slice: not a CPU tensor");
    };
    Ok(f(&cpu.as_slice::<f32>()?[layout.start_offset()..]))
}

/// `log_softmax(logits)[i, labels[i]]` for every row `i`: `logits` `(n, v)` f32, `labels`
/// `(n,)` u32 below `v`; returns `(n,)`. Differentiable in `logits` (the gradient of row `i`
/// is `g_i * (onehot(labels[i]) - softmax(logits[i]))`), never in `labels`.
///
/// Cost: two reads of `logits` forward; one read and one `(n, v)` write backward, instead of
/// candle's `log_softmax` + `gather` (about a dozen full passes over both).
pub fn label_log_softmax(logits: &Tensor, labels: &Tensor) -> candle_core::Result<Tensor> {
    if !device::host_kernels(logits.device()) {
        return candle_nn::ops::log_softmax(logits, candle_core::D::Minus1)?
            .gather(&labels.unsqueeze(1)?, 1)?
            .squeeze(1);
    }
    logits.apply_op2(labels, LabelLogSoftmax)
}

struct LabelLogSoftmax;

fn contiguous<'a, T: candle_core::WithDType>(
    s: &'a CpuStorage,
    l: &Layout,
    op: &str,
) -> candle_core::Result<&'a [T]> {
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&s.as_slice::<T>()?[a..b]),
        None => candle_core::bail!("{op}: the input must be contiguous"),
    }
}

/// Runs `f` over the f32 elements of each of `ts` in row-major order, without copying them
/// (a non-contiguous tensor is made contiguous first).
pub(crate) fn with_f32s<R>(
    ts: &[&Tensor],
    op: &str,
    f: impl FnOnce(&[&[f32]]) -> R,
) -> candle_core::Result<R> {
    let ts = ts
        .iter()
        .map(|t| t.contiguous())
        .collect::<candle_core::Result<Vec<_>>>()?;
    let guards: Vec<_> = ts.iter().map(|t| t.storage_and_layout()).collect();
    let mut slices = Vec::with_capacity(guards.len());
    for (storage, layout) in &guards {
        let candle_core::Storage::Cpu(cpu) = &**storage else {
            candle_core::bail!("{op}: not a CPU tensor");
        };
        slices.push(contiguous::<f32>(cpu, layout, op)?);
    }
    Ok(f(&slices))
}

/// `log(sum(exp(row)))`, shifted by the row's maximum so that no `exp` overflows.
fn log_sum_exp(row: &[f32]) -> f32 {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    if max == f32::NEG_INFINITY {
        return max;
    }
    max + row.iter().map(|&x| (x - max).exp()).sum::<f32>().ln()
}

impl CustomOp2 for LabelLogSoftmax {
    fn name(&self) -> &'static str {
        "label-log-softmax"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (n, v) = l1.shape().dims2()?;
        if l2.shape().dims() != [n] {
            candle_core::bail!(
                "label_log_softmax: {n} rows of logits but labels of shape {:?}",
                l2.shape()
            );
        }
        let logits = contiguous::<f32>(s1, l1, self.name())?;
        let labels = contiguous::<u32>(s2, l2, self.name())?;
        if let Some(&bad) = labels.iter().find(|&&l| l as usize >= v) {
            candle_core::bail!("label_log_softmax: label {bad} outside {v} logits");
        }
        let out: Vec<f32> = logits
            .par_chunks(v)
            .zip(labels.par_iter())
            .map(|(row, &label)| row[label as usize] - log_sum_exp(row))
            .collect();
        Ok((CpuStorage::F32(out), Shape::from(n)))
    }

    fn bwd(
        &self,
        logits: &Tensor,
        labels: &Tensor,
        res: &Tensor,
        grad_res: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let (n, v) = logits.dims2()?;
        let labels = labels.to_vec1::<u32>()?;
        let res = res.to_vec1::<f32>()?;
        let grad = grad_res.to_vec1::<f32>()?;
        // `vec!` of zeros is a fresh zeroed mapping: rows with no gradient (padding) cost nothing.
        let mut out = vec![0f32; n * v];
        with_f32s(&[logits], self.name(), |s| {
            out.par_chunks_mut(v)
                .zip(s[0].par_chunks(v))
                .enumerate()
                .for_each(|(i, (o, row))| {
                    let (g, label) = (grad[i], labels[i] as usize);
                    if g == 0.0 {
                        return;
                    }
                    // log_softmax(row)[label] = row[label] - lse: the result gives lse back.
                    let lse = row[label] - res[i];
                    for (o, &x) in o.iter_mut().zip(row) {
                        *o = -g * (x - lse).exp();
                    }
                    o[label] += g;
                })
        })?;
        Ok((Some(Tensor::from_vec(out, (n, v), logits.device())?), None))
    }
}

/// T5's RMS norm over the last dimension, `x * w / sqrt(mean(x^2) + eps)`, differentiable in
/// both `x` `(..., d)` and `w` `(d,)`. One pass forward; one pass backward for both gradients.
pub fn rms_norm(x: &Tensor, w: &Tensor, eps: f64) -> candle_core::Result<Tensor> {
    if !device::host_kernels(x.device()) {
        return candle_nn::ops::rms_norm_slow(x, w, eps as f32);
    }
    x.contiguous()?.apply_op2(w, RmsNorm { eps: eps as f32 })
}

struct RmsNorm {
    eps: f32,
}

impl RmsNorm {
    fn inv_rms(&self, row: &[f32]) -> f32 {
        let ms = row.iter().map(|x| x * x).sum::<f32>() / row.len() as f32;
        (ms + self.eps).sqrt().recip()
    }
}

impl CustomOp2 for RmsNorm {
    fn name(&self) -> &'static str {
        "rms-norm"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let d = l1.shape().dims().last().copied().unwrap_or(0);
        if l2.shape().dims() != [d] {
            candle_core::bail!("rms-norm: weight {:?} for rows of {d}", l2.shape());
        }
        let x = contiguous::<f32>(s1, l1, self.name())?;
        let w = contiguous::<f32>(s2, l2, self.name())?;
        let mut out = vec![0f32; x.len()];
        out.par_chunks_mut(d.max(1))
            .zip(x.par_chunks(d.max(1)))
            .for_each(|(o, row)| {
                let r = self.inv_rms(row);
                for ((o, &x), &w) in o.iter_mut().zip(row).zip(w) {
                    *o = x * r * w;
                }
            });
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _res: &Tensor,
        grad_res: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let d = w.dim(0)?;
        let w_host = w.to_vec1::<f32>()?;
        let mut dx = vec![0f32; x.elem_count()];
        // With r = 1/rms and xh = x r: dx = r (w g - xh mean(w g xh)), dw = sum over rows g xh.
        // dw is summed per fixed block of rows, then over blocks in order, so that the result
        // does not depend on how rayon splits the work (training is reproducible bit for bit).
        const BLOCK: usize = 64;
        let partials: Vec<Vec<f32>> = with_f32s(&[x, grad_res], self.name(), |s| {
            dx.par_chunks_mut(d * BLOCK)
                .zip(s[0].par_chunks(d * BLOCK).zip(s[1].par_chunks(d * BLOCK)))
                .map(|(dx, (x, g))| {
                    let mut dw = vec![0f32; d];
                    for (dx, (x, g)) in dx.chunks_mut(d).zip(x.chunks(d).zip(g.chunks(d))) {
                        let r = self.inv_rms(x);
                        let dot = x
                            .iter()
                            .zip(g)
                            .zip(&w_host)
                            .map(|((x, g), w)| x * g * w)
                            .sum::<f32>()
                            * r
                            * r
                            / d as f32;
                        for i in 0..d {
                            dx[i] = r * (w_host[i] * g[i] - x[i] * dot);
                            dw[i] += g[i] * x[i] * r;
                        }
                    }
                    dw
                })
                .collect()
        })?;
        let mut dw = vec![0f32; d];
        for p in partials {
            dw.iter_mut().zip(p).for_each(|(a, b)| *a += b);
        }
        Ok((
            Some(Tensor::from_vec(dx, x.shape(), x.device())?),
            Some(Tensor::from_vec(dw, d, w.device())?),
        ))
    }
}

/// Softmax over the last dimension, differentiable. One pass forward; one pass backward
/// (`dx = y (g - sum(g y))` per row, from the saved result `y`).
pub fn softmax_last_dim(x: &Tensor) -> candle_core::Result<Tensor> {
    if !device::host_kernels(x.device()) {
        return candle_nn::ops::softmax(x, candle_core::D::Minus1);
    }
    x.contiguous()?.apply_op1(Softmax)
}

struct Softmax;

impl CustomOp1 for Softmax {
    fn name(&self) -> &'static str {
        "softmax"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let d = l.shape().dims().last().copied().unwrap_or(1).max(1);
        let x = contiguous::<f32>(s, l, self.name())?;
        let mut out = vec![0f32; x.len()];
        out.par_chunks_mut(d)
            .zip(x.par_chunks(d))
            .for_each(|(o, row)| {
                let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let mut sum = 0.0;
                for (o, &x) in o.iter_mut().zip(row) {
                    *o = (x - max).exp();
                    sum += *o;
                }
                o.iter_mut().for_each(|o| *o /= sum);
            });
        Ok((CpuStorage::F32(out), l.shape().clone()))
    }

    fn bwd(
        &self,
        _x: &Tensor,
        y: &Tensor,
        grad_res: &Tensor,
    ) -> candle_core::Result<Option<Tensor>> {
        let d = y.dim(candle_core::D::Minus1)?;
        let mut dx = vec![0f32; y.elem_count()];
        with_f32s(&[y, grad_res], self.name(), |s| {
            dx.par_chunks_mut(d)
                .zip(s[0].par_chunks(d).zip(s[1].par_chunks(d)))
                .for_each(|(dx, (y, g))| {
                    let dot = y.iter().zip(g).map(|(y, g)| y * g).sum::<f32>();
                    for ((dx, y), g) in dx.iter_mut().zip(y).zip(g) {
                        *dx = y * (g - dot);
                    }
                })
        })?;
        Ok(Some(Tensor::from_vec(dx, y.shape(), y.device())?))
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use candle_core::{D, Device, Var};

    /// Max abs difference between the values and the gradients (of a weighted sum, whose
    /// weights include zeros, as at padded positions) of `f` and a reference `g`, both applied
    /// to fresh variables holding `inputs`.
    fn compare(
        inputs: &[(Vec<f32>, Vec<usize>)],
        f: impl Fn(&[Tensor]) -> Tensor,
        g: impl Fn(&[Tensor]) -> Tensor,
    ) -> f32 {
        let dev = Device::Cpu;
        let vars = |()| -> Vec<Var> {
            inputs
                .iter()
                .map(|(data, shape)| Var::from_vec(data.clone(), shape.as_slice(), &dev).unwrap())
                .collect()
        };
        let (a, b) = (vars(()), vars(()));
        let ta: Vec<Tensor> = a.iter().map(|v| v.as_tensor().clone()).collect();
        let tb: Vec<Tensor> = b.iter().map(|v| v.as_tensor().clone()).collect();
        let (ya, yb) = (f(&ta), g(&tb));
        let n = ya.elem_count();
        let weights: Vec<f32> = (0..n).map(|i| ((i * 37 % 11) as f32 - 5.0) / 3.0).collect();
        let weights = Tensor::from_vec(weights, ya.shape(), &dev).unwrap();
        let max_diff = |x: &Tensor, y: &Tensor| -> f32 {
            (x - y)
                .unwrap()
                .abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar()
                .unwrap()
        };
        let mut worst = max_diff(&ya, &yb);
        let ga = (ya * &weights)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let gb = (yb * &weights)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        for (x, y) in ta.iter().zip(&tb) {
            worst = worst.max(max_diff(ga.get(x).unwrap(), gb.get(y).unwrap()));
        }
        worst
    }

    /// `n` deterministic values in [-2, 2), varied by `salt`: test inputs for the kernels.
    pub(in crate::model) fn data(n: usize, salt: usize) -> Vec<f32> {
        (0..n)
            .map(|i| (((i + salt) * 7919 % 113) as f32 / 29.0) - 2.0)
            .collect()
    }

    #[test]
    fn label_log_softmax_matches_log_softmax_and_gather_and_their_gradients() {
        let labels = Tensor::new(&[0u32, 36, 5, 5, 17, 2], &Device::Cpu).unwrap();
        let inputs = [(data(6 * 37, 8), vec![6, 37])];
        let diff = compare(
            &inputs,
            |t| label_log_softmax(&t[0], &labels).unwrap(),
            |t| {
                candle_nn::ops::log_softmax(&t[0], D::Minus1)
                    .and_then(|l| l.gather(&labels.unsqueeze(1)?, 1))
                    .and_then(|p| p.squeeze(1))
                    .unwrap()
            },
        );
        assert!(diff < 1e-5, "{diff}");
    }

    #[test]
    fn rms_norm_matches_the_composed_norm_and_its_gradients() {
        let inputs = [
            (data(5 * 3 * 16, 1), vec![5, 3, 16]),
            (data(16, 2), vec![16]),
        ];
        let diff = compare(
            &inputs,
            |t| rms_norm(&t[0], &t[1], 1e-6).unwrap(),
            |t| candle_nn::ops::rms_norm_slow(&t[0], &t[1], 1e-6).unwrap(),
        );
        assert!(diff < 1e-5, "{diff}");
    }

    #[test]
    fn softmax_matches_the_composed_softmax_and_its_gradient() {
        let inputs = [(data(4 * 6 * 9, 3), vec![4, 6, 9])];
        let diff = compare(
            &inputs,
            |t| softmax_last_dim(&t[0]).unwrap(),
            |t| candle_nn::ops::softmax(&t[0], D::Minus1).unwrap(),
        );
        assert!(diff < 1e-6, "{diff}");
        // Through a transposed (non-contiguous) input too.
        let diff = compare(
            &inputs,
            |t| softmax_last_dim(&t[0].transpose(1, 2).unwrap()).unwrap(),
            |t| candle_nn::ops::softmax(&t[0].transpose(1, 2).unwrap(), D::Minus1).unwrap(),
        );
        assert!(diff < 1e-6, "{diff}");
    }

    #[test]
    fn the_normaliser_exp_is_within_a_few_ulps_of_the_library_exp() {
        let mut worst = 0f32;
        // Below -87 the result is held at e^-87: beside the maximum's 1 it adds nothing.
        for i in 0..=200_000 {
            let x = -(i as f32) * 87.0 / 200_000.0;
            let (got, want) = (exp_nonpositive(x), x.exp());
            worst = worst.max(((got - want) / want).abs());
        }
        assert!(worst < 5e-7, "relative error {worst}");
        assert_eq!(exp_nonpositive(0.0), 1.0);
        assert!(exp_nonpositive(-1000.0) < 1e-37);
        assert!(exp_nonpositive(f32::NEG_INFINITY) < 1e-37);
    }

    #[test]
    fn the_vectorised_gelu_is_within_a_few_ulps_of_candles() {
        let xs: Vec<f32> = (-4000..=4000).map(|i| i as f32 / 500.0).collect();
        let want: Vec<f32> = Tensor::new(xs.as_slice(), &Device::Cpu)
            .unwrap()
            .gelu_erf()
            .unwrap()
            .to_vec1()
            .unwrap();
        let mut got = xs.clone();
        gelu_erf_in_place(&mut got);
        for ((x, g), w) in xs.iter().zip(&got).zip(&want) {
            assert!(
                (g - w).abs() <= 2e-7 * (1.0 + x.abs()),
                "gelu({x}): {g} vs {w}"
            );
        }
        let mut extremes = [f32::MAX, -f32::MAX, 0.0, -0.0];
        gelu_erf_in_place(&mut extremes);
        assert_eq!(extremes, [f32::MAX, -0.0, 0.0, -0.0]);
    }

    #[test]
    fn rejects_a_label_outside_the_logits() {
        let dev = Device::Cpu;
        let logits = Tensor::zeros((2, 4), candle_core::DType::F32, &dev).unwrap();
        let labels = Tensor::new(&[1u32, 4], &dev).unwrap();
        let err = label_log_softmax(&logits, &labels).unwrap_err().to_string();
        assert!(err.contains("label 4 outside 4 logits"), "{err}");
    }
}
