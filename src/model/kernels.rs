//! Hand-written CPU kernels: a single-threaded gemm for the decoder step's small products, and
//! fused training ops with their backward passes (label log-probabilities, RMS norm, softmax).
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

/// `dst[r * rs + j * cs] (+)= w[j] . x[r]` for `n` weight rows `w` `(n, k)` and `rows` inputs
/// `x` `(rows, k)`, both row-major: `x @ w^T`, the product of a linear layer on a few rows.
///
/// Written for the decoder step's shapes (10 rows, k of 256 or 1024), where a general gemm
/// packs the weight (a copy of it per call) and fills its register tiles a third empty: each
/// weight row is read once from memory, dotted with every input row from L1, 4 weight rows x 3
/// input rows at a time in AVX2 registers (a scalar loop where the CPU lacks AVX2 and FMA).
pub(super) fn skinny_gemm(
    dst: &mut [f32],
    (rs, cs): (usize, usize),
    w: &[f32],
    x: &[f32],
    (rows, n, k): (usize, usize, usize),
    accumulate: bool,
) {
    if rows == 0 || n == 0 {
        return;
    }
    assert!(w.len() >= n * k && x.len() >= rows * k);
    assert!(dst.len() >= extent(rows, n, (rs, cs)));
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        // SAFETY: the CPU has AVX2 and FMA (checked just above); the asserts above keep every
        // read and write inside its slice.
        unsafe { skinny_avx2(dst, (rs, cs), w, x, (rows, n, k), accumulate) };
        return;
    }
    for r in 0..rows {
        let xr = &x[r * k..(r + 1) * k];
        for j in 0..n {
            let dot: f32 = w[j * k..(j + 1) * k]
                .iter()
                .zip(xr)
                .map(|(a, b)| a * b)
                .sum();
            let o = &mut dst[r * rs + j * cs];
            *o = if accumulate { *o + dot } else { dot };
        }
    }
}

/// [`skinny_gemm`] into a row-major `dst` (row stride `dst_rs`), with the weight rows split
/// over rayon's threads when the product is large enough to pay for waking them (each thread
/// writes its columns into a buffer of its own, copied into place after).
pub(super) fn skinny_gemm_par(
    dst: &mut [f32],
    dst_rs: usize,
    w: &[f32],
    x: &[f32],
    (rows, n, k): (usize, usize, usize),
    accumulate: bool,
) {
    let threads = rayon::current_num_threads();
    if threads < 2 || rows * n * k < PARALLEL_MACS || n < 2 * threads {
        return skinny_gemm(dst, (dst_rs, 1), w, x, (rows, n, k), accumulate);
    }
    let chunk = n.div_ceil(threads);
    let parts: Vec<Vec<f32>> = w
        .par_chunks(chunk * k)
        .map(|w| {
            let cols = w.len() / k;
            let mut part = vec![0f32; rows * cols];
            skinny_gemm(&mut part, (cols, 1), w, x, (rows, cols, k), false);
            part
        })
        .collect();
    for (c, part) in parts.iter().enumerate() {
        let cols = part.len() / rows.max(1);
        for r in 0..rows {
            let out = &mut dst[r * dst_rs + c * chunk..r * dst_rs + c * chunk + cols];
            let src = &part[r * cols..(r + 1) * cols];
            if accumulate {
                out.iter_mut().zip(src).for_each(|(o, v)| *o += v);
            } else {
                out.copy_from_slice(src);
            }
        }
    }
}

/// Multiply-adds above which a product is split over threads: about 0.1 ms of one core's work,
/// several times what waking a second thread costs.
const PARALLEL_MACS: usize = 1 << 22;

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn skinny_avx2(
    dst: &mut [f32],
    dst_rs: (usize, usize),
    w: &[f32],
    x: &[f32],
    (rows, n, k): (usize, usize, usize),
    accumulate: bool,
) {
    let mut j = 0;
    while j < n {
        let jn = (n - j).min(4);
        let mut r = 0;
        while r < rows {
            let rn = (rows - r).min(3);
            // SAFETY: AVX2 and FMA are enabled here; the tile stays inside the asserted bounds.
            unsafe {
                match (jn, rn) {
                    (4, 3) => skinny_tile::<4, 3>(dst, dst_rs, w, x, (j, r, k), accumulate),
                    (4, 2) => skinny_tile::<4, 2>(dst, dst_rs, w, x, (j, r, k), accumulate),
                    (4, 1) => skinny_tile::<4, 1>(dst, dst_rs, w, x, (j, r, k), accumulate),
                    (_, 3) => {
                        for jj in j..j + jn {
                            skinny_tile::<1, 3>(dst, dst_rs, w, x, (jj, r, k), accumulate)
                        }
                    }
                    (_, 2) => {
                        for jj in j..j + jn {
                            skinny_tile::<1, 2>(dst, dst_rs, w, x, (jj, r, k), accumulate)
                        }
                    }
                    _ => {
                        for jj in j..j + jn {
                            skinny_tile::<1, 1>(dst, dst_rs, w, x, (jj, r, k), accumulate)
                        }
                    }
                }
            }
            r += rn;
        }
        j += jn;
    }
}

/// Eight floats from an address of any alignment, in one instruction: `vlddqu`, because
/// for `_mm256_loadu_ps` the compiler, tuned for the baseline CPU, emits two 16-byte halves.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn load8(p: *const f32) -> std::arch::x86_64::__m256 {
    use std::arch::x86_64::*;
    // SAFETY: the caller guarantees 8 readable floats at `p`.
    unsafe { _mm256_castsi256_ps(_mm256_lddqu_si256(p.cast())) }
}

/// `J` weight rows from `j` times `R` input rows from `r`: `J x R` dot products of length `k`
/// in 8-wide accumulators, summed across lanes at the end.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn skinny_tile<const J: usize, const R: usize>(
    dst: &mut [f32],
    (rs, cs): (usize, usize),
    w: &[f32],
    x: &[f32],
    (j, r, k): (usize, usize, usize),
    accumulate: bool,
) {
    use std::arch::x86_64::*;
    let mut acc = [[_mm256_setzero_ps(); R]; J];
    let body = k - k % 8;
    let (wp, xp) = (w.as_ptr(), x.as_ptr());
    let mut kk = 0;
    while kk < body {
        // SAFETY: rows j..j+J of w and r..r+R of x hold k elements each (asserted by the
        // caller), and kk + 8 <= k.
        unsafe {
            let mut xv = [_mm256_setzero_ps(); R];
            for (b, v) in xv.iter_mut().enumerate() {
                *v = load8(xp.add((r + b) * k + kk));
            }
            for (a, acc) in acc.iter_mut().enumerate() {
                let wv = load8(wp.add((j + a) * k + kk));
                for (b, acc) in acc.iter_mut().enumerate() {
                    *acc = _mm256_fmadd_ps(wv, xv[b], *acc);
                }
            }
        }
        kk += 8;
    }
    for (a, acc) in acc.iter().enumerate() {
        for (b, acc) in acc.iter().enumerate() {
            let mut lanes = [0f32; 8];
            // SAFETY: `lanes` holds 8 floats.
            unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), *acc) };
            let mut dot = ((lanes[0] + lanes[4]) + (lanes[1] + lanes[5]))
                + ((lanes[2] + lanes[6]) + (lanes[3] + lanes[7]));
            for t in body..k {
                dot += w[(j + a) * k + t] * x[(r + b) * k + t];
            }
            let o = &mut dst[(r + b) * rs + (j + a) * cs];
            *o = if accumulate { *o + dot } else { dot };
        }
    }
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
mod tests {
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

    fn data(n: usize, salt: usize) -> Vec<f32> {
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
    fn skinny_gemm_equals_the_plain_product_for_every_tile_shape() {
        // 1..=11 rows and weight counts cover every tile and remainder; k = 37 has a tail.
        for (rows, n, k) in [
            (10, 9, 256),
            (1, 1, 8),
            (7, 11, 37),
            (3, 4, 16),
            (11, 6, 1024),
        ] {
            let w = data(n * k, 1);
            let x = data(rows * k, 2);
            let dst_rs = n + 3;
            for accumulate in [false, true] {
                let mut got = data(rows * dst_rs, 3);
                let before = got.clone();
                skinny_gemm(&mut got, (dst_rs, 1), &w, &x, (rows, n, k), accumulate);
                for r in 0..rows {
                    for j in 0..n {
                        let dot: f64 = (0..k)
                            .map(|t| w[j * k + t] as f64 * x[r * k + t] as f64)
                            .sum();
                        let want = dot
                            + if accumulate {
                                before[r * dst_rs + j] as f64
                            } else {
                                0.0
                            };
                        let g = got[r * dst_rs + j] as f64;
                        assert!(
                            (g - want).abs() < 1e-3 * (1.0 + want.abs()),
                            "{rows}x{n}x{k}: {g} vs {want}"
                        );
                    }
                    // Padding between rows is untouched.
                    for j in n..dst_rs {
                        assert_eq!(got[r * dst_rs + j], before[r * dst_rs + j]);
                    }
                }
            }
        }
    }

    #[test]
    fn the_threaded_skinny_gemm_equals_the_one_thread_one() {
        // Large enough to be split over threads (when there are several).
        let (rows, n, k) = (40, 301, 512);
        assert!(rows * n * k >= PARALLEL_MACS);
        let (w, x) = (data(n * k, 4), data(rows * k, 5));
        let dst_rs = n + 2;
        for accumulate in [false, true] {
            let mut one = data(rows * dst_rs, 6);
            let mut par = one.clone();
            skinny_gemm(&mut one, (dst_rs, 1), &w, &x, (rows, n, k), accumulate);
            skinny_gemm_par(&mut par, dst_rs, &w, &x, (rows, n, k), accumulate);
            assert_eq!(one, par);
        }
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
