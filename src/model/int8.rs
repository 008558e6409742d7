//! int8 panels: a linear layer's weight quantized per output column to 8 bits, multiplied
//! with inputs quantized per row as they arrive, sums in i32 (`--precision int8`).
//!
//! Why: a product on few rows waits for its weights' bytes, and on many rows for its
//! multiply-adds; int8 takes a quarter of f32's bytes, and AVX-512 VNNI's `vpdpbusd` does 64
//! multiply-adds per instruction where an f32 FMA does 16.
//!
//! Layout: panels of [`WIDTH`] output columns; within a panel, for each group of 4 inputs,
//! the 32 columns' 4 weights side by side (`[k / 4][32][4]`), which is what one `vpdpbusd`
//! lane multiplies with 4 inputs. `vpdpbusd` multiplies unsigned by signed bytes, so inputs
//! are stored shifted by 128 and the shift is taken out with each column's weight sum.
//!
//! Error: each weight is within half a step (`max |w_j| / 254`) of its column's largest, each
//! input within half of `max |x_r| / 254`; products and sums are exact in i32 and scaled back
//! in f32. What that does to answers is measured in docs/BENCHMARKS.md; f32 stays the default.
//!
//! Cost: packing reads the weight once; each product first quantizes its inputs (one pass).

use std::ops::Range;

use super::kernels::lane_max;
use super::panels::{Out, WIDTH, blocks};
#[cfg(target_arch = "x86_64")]
use crate::simd::has_avx512_vnni as has_vnni;

/// Inputs per 32-bit lane of `vpdpbusd`.
const GROUP: usize = 4;

/// Input rows the kernel computes together: 24 accumulators and 2 weight registers.
const ROWS: usize = 12;

/// A weight `(n, k)` in int8 panels (see the module docs).
pub(super) struct Int8Panels {
    data: Vec<i8>,
    /// Per column: the value of one step.
    scales: Vec<f32>,
    /// Per column: the sum of its quantized weights (the inputs' shift times it is removed).
    sums: Vec<i32>,
    n: usize,
    k: usize,
}

/// Inputs `(rows, k)` quantized per row: `u8 = round(x / scale) + 128`, each row padded to a
/// whole group with 128 (zero).
pub(super) struct Int8Rows {
    data: Vec<u8>,
    scales: Vec<f32>,
    /// Bytes per row: `k` rounded up to a group.
    stride: usize,
}

/// `max |v| / 127`, or 1 for an all-zero (or empty) slice so that everything rounds to 0.
fn step(v: &[f32]) -> f32 {
    let m = crate::simd::widest(
        #[inline(always)]
        || lane_max(v, 0.0, f32::abs),
    );
    if m > 0.0 && m.is_finite() {
        m / 127.0
    } else {
        1.0
    }
}

impl Int8Rows {
    /// Quantizes the `rows` rows of `x` `(rows, k)`.
    pub(super) fn new(x: &[f32], rows: usize, k: usize) -> Int8Rows {
        let stride = k.div_ceil(GROUP) * GROUP;
        let mut data = vec![128u8; rows * stride];
        let mut scales = Vec::with_capacity(rows);
        for (row, out) in x[..rows * k].chunks(k.max(1)).zip(data.chunks_mut(stride)) {
            let s = step(row);
            quantize_row(row, s.recip(), out);
            scales.push(s);
        }
        Int8Rows {
            data,
            scales,
            stride,
        }
    }
}

/// `out[t] = round(row[t] * inv) + 128`, rounded to even and saturated to [1, 255] (NaN to
/// 128).
fn quantize_row(row: &[f32], inv: f32, out: &mut [u8]) {
    #[cfg(target_arch = "x86_64")]
    if crate::simd::has_avx512() {
        // SAFETY: the CPU has AVX-512 F, BW and VL (checked just above).
        return unsafe { quantize_avx512(row, inv, out) };
    }
    quantize_scalar(row, inv, out)
}

fn quantize_scalar(row: &[f32], inv: f32, out: &mut [u8]) {
    for (o, &v) in out.iter_mut().zip(row) {
        let q = (v * inv).round_ties_even();
        let q = if q.is_nan() {
            0.0
        } else {
            q.clamp(-127.0, 127.0)
        };
        *o = (q as i32 + 128) as u8;
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
unsafe fn quantize_avx512(row: &[f32], inv: f32, out: &mut [u8]) {
    use std::arch::x86_64::*;
    let (scale, lo, hi) = (
        _mm512_set1_ps(inv),
        _mm512_set1_epi32(-127),
        _mm512_set1_epi32(127),
    );
    let n = row.len().min(out.len());
    let mut t = 0;
    while t < n {
        let lanes = (n - t).min(16);
        let mask: __mmask16 = ((1u32 << lanes) - 1) as __mmask16;
        // SAFETY: the `lanes` elements from `t` are inside both slices.
        unsafe {
            let v = _mm512_mul_ps(_mm512_maskz_loadu_ps(mask, row.as_ptr().add(t)), scale);
            // Rounds to even (the default mode); NaN becomes i32::MIN, saturated below.
            let q = _mm512_cvtps_epi32(v);
            let nan = _mm512_cmp_ps_mask::<_CMP_UNORD_Q>(v, v);
            let q = _mm512_mask_mov_epi32(q, nan, _mm512_setzero_si512());
            let q = _mm512_add_epi32(
                _mm512_min_epi32(_mm512_max_epi32(q, lo), hi),
                _mm512_set1_epi32(128),
            );
            _mm_mask_storeu_epi8(
                out.as_mut_ptr().add(t).cast(),
                mask,
                _mm512_cvtepi32_epi8(q),
            );
        }
        t += lanes;
    }
}

impl Int8Panels {
    /// Quantizes and packs `w` `(n, k)`, row-major.
    pub(super) fn pack(w: &[f32], n: usize, k: usize) -> Int8Panels {
        assert_eq!(w.len(), n * k, "a ({n}, {k}) weight");
        let groups = k.div_ceil(GROUP);
        let panel = groups * WIDTH * GROUP;
        let mut data = vec![0i8; n.div_ceil(WIDTH) * panel];
        let mut scales = Vec::with_capacity(n);
        let mut sums = Vec::with_capacity(n);
        for (j, row) in w.chunks(k.max(1)).enumerate() {
            let s = step(row);
            let mut sum = 0i32;
            let base = j / WIDTH * panel + j % WIDTH * GROUP;
            for (t, &v) in row.iter().enumerate() {
                let q = (v / s).round().clamp(-127.0, 127.0) as i8;
                data[base + t / GROUP * WIDTH * GROUP + t % GROUP] = q;
                sum += q as i32;
            }
            scales.push(s);
            sums.push(sum);
        }
        Int8Panels {
            data,
            scales,
            sums,
            n,
            k,
        }
    }

    pub(super) fn n(&self) -> usize {
        self.n
    }

    pub(super) fn k(&self) -> usize {
        self.k
    }

    /// `dst[r * rs + c * cs] (+)= x[r] . w[first + c]` for the rows of `x` and the columns of
    /// `panels` (`first` the first of them), on the calling thread. Panics if `dst` is too
    /// short or `x` is not of this weight's `k`.
    pub(super) fn apply(
        &self,
        panels: Range<usize>,
        dst: &mut [f32],
        strides: (usize, usize),
        x: &Int8Rows,
        accumulate: bool,
    ) {
        #[cfg(target_arch = "x86_64")]
        let vnni = has_vnni();
        #[cfg(not(target_arch = "x86_64"))]
        let vnni = false;
        self.apply_with(vnni, panels, dst, strides, x, accumulate)
    }

    /// [`Int8Panels::apply`] with VNNI (which the CPU must have) or without.
    fn apply_with(
        &self,
        vnni: bool,
        panels: Range<usize>,
        dst: &mut [f32],
        (rs, cs): (usize, usize),
        x: &Int8Rows,
        accumulate: bool,
    ) {
        let rows = x.scales.len();
        let first = panels.start * WIDTH;
        let cols = (panels.end * WIDTH).min(self.n).saturating_sub(first);
        if rows == 0 || cols == 0 {
            return;
        }
        let groups = self.k.div_ceil(GROUP);
        assert_eq!(x.stride, groups * GROUP, "inputs of another width");
        assert!(panels.end <= self.n.div_ceil(WIDTH));
        assert!(dst.len() > (rows - 1) * rs + (cols - 1) * cs);
        let out = Out { rs, cs, accumulate };
        let size = groups * WIDTH * GROUP;
        for p in panels {
            let panel = &self.data[p * size..(p + 1) * size];
            let at = Tile {
                col: p * WIDTH - first,
                j: p * WIDTH,
                valid: (self.n - p * WIDTH).min(WIDTH),
                groups,
            };
            #[cfg(target_arch = "x86_64")]
            if vnni {
                assert!(has_vnni(), "VNNI on a CPU without it");
                // SAFETY: the CPU has the instructions; the asserts above keep every read and
                // write inside its slice.
                unsafe { rows_vnni(self, panel, x, rows, dst, out, at) };
                continue;
            }
            for r in 0..rows {
                let xr = &x.data[r * x.stride..(r + 1) * x.stride];
                for c in 0..at.valid {
                    let mut acc = 0i32;
                    for (t, &v) in xr.iter().enumerate() {
                        let w = panel[t / GROUP * WIDTH * GROUP + c * GROUP + t % GROUP];
                        acc += v as i32 * w as i32;
                    }
                    let j = at.j + c;
                    let v = self.finish(acc, j, x.scales[r]);
                    out.store(dst, (r, at.col + c), v);
                }
            }
        }
    }

    /// A column's output from its i32 sum over shifted inputs.
    #[inline]
    fn finish(&self, acc: i32, j: usize, x_scale: f32) -> f32 {
        (acc - 128 * self.sums[j]) as f32 * (self.scales[j] * x_scale)
    }
}

/// One panel's place: its first column in the output and in the weight, how many of its
/// columns are real, and the input groups.
#[derive(Clone, Copy)]
struct Tile {
    col: usize,
    j: usize,
    valid: usize,
    groups: usize,
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn rows_vnni(
    w: &Int8Panels,
    panel: &[i8],
    x: &Int8Rows,
    rows: usize,
    dst: &mut [f32],
    out: Out,
    at: Tile,
) {
    blocks(rows, ROWS, |r, rn| {
        // SAFETY: VNNI is enabled here; rows r..r+rn of x exist.
        unsafe {
            match rn {
                12 => panel_vnni::<12>(w, panel, x, r, dst, out, at),
                11 => panel_vnni::<11>(w, panel, x, r, dst, out, at),
                10 => panel_vnni::<10>(w, panel, x, r, dst, out, at),
                9 => panel_vnni::<9>(w, panel, x, r, dst, out, at),
                8 => panel_vnni::<8>(w, panel, x, r, dst, out, at),
                7 => panel_vnni::<7>(w, panel, x, r, dst, out, at),
                6 => panel_vnni::<6>(w, panel, x, r, dst, out, at),
                5 => panel_vnni::<5>(w, panel, x, r, dst, out, at),
                4 => panel_vnni::<4>(w, panel, x, r, dst, out, at),
                3 => panel_vnni::<3>(w, panel, x, r, dst, out, at),
                2 => panel_vnni::<2>(w, panel, x, r, dst, out, at),
                _ => panel_vnni::<1>(w, panel, x, r, dst, out, at),
            }
        }
    });
}

/// `R` input rows from `r` against one panel: `R x 32` i32 sums in 2R registers, each step
/// 4 inputs of a row broadcast against the panel's 32 x 4 weights.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
#[inline]
unsafe fn panel_vnni<const R: usize>(
    w: &Int8Panels,
    panel: &[i8],
    x: &Int8Rows,
    r: usize,
    dst: &mut [f32],
    out: Out,
    at: Tile,
) {
    use std::arch::x86_64::*;
    let mut acc = [[_mm512_setzero_si512(); 2]; R];
    let (wp, xp) = (panel.as_ptr(), x.data.as_ptr());
    for g in 0..at.groups {
        // SAFETY: the panel holds `groups` x 128 bytes; rows r..r+R of x hold `stride` bytes,
        // 4 of them at each group.
        unsafe {
            let w0 = _mm512_loadu_si512(wp.add(g * WIDTH * GROUP).cast());
            let w1 = _mm512_loadu_si512(wp.add(g * WIDTH * GROUP + 64).cast());
            for (b, acc) in acc.iter_mut().enumerate() {
                let four = xp
                    .add((r + b) * x.stride + g * GROUP)
                    .cast::<i32>()
                    .read_unaligned();
                let xb = _mm512_set1_epi32(four);
                acc[0] = _mm512_dpbusd_epi32(acc[0], xb, w0);
                acc[1] = _mm512_dpbusd_epi32(acc[1], xb, w1);
            }
        }
    }
    for (b, acc) in acc.iter().enumerate() {
        let xs = _mm512_set1_ps(x.scales[r + b]);
        for (h, v) in acc.iter().enumerate() {
            let lanes = at.valid.saturating_sub(h * 16).min(16);
            if lanes == 0 {
                continue;
            }
            let mask: __mmask16 = ((1u32 << lanes) - 1) as __mmask16;
            let j = at.j + h * 16;
            // SAFETY: columns j..j+lanes have scales and sums; the `lanes` outputs from the
            // destination address are inside `dst` (asserted by the caller for every column).
            unsafe {
                let sums = _mm512_maskz_loadu_epi32(mask, w.sums.as_ptr().add(j));
                let scales = _mm512_maskz_loadu_ps(mask, w.scales.as_ptr().add(j));
                let ints = _mm512_sub_epi32(*v, _mm512_slli_epi32::<7>(sums));
                let y = _mm512_mul_ps(_mm512_cvtepi32_ps(ints), _mm512_mul_ps(scales, xs));
                if out.cs == 1 {
                    let d = dst.as_mut_ptr().add((r + b) * out.rs + at.col + h * 16);
                    let y = if out.accumulate {
                        _mm512_add_ps(_mm512_maskz_loadu_ps(mask, d), y)
                    } else {
                        y
                    };
                    _mm512_mask_storeu_ps(d, mask, y);
                } else {
                    let mut spill = [0f32; 16];
                    _mm512_storeu_ps(spill.as_mut_ptr(), y);
                    for (c, &s) in spill[..lanes].iter().enumerate() {
                        out.store(dst, (r + b, at.col + h * 16 + c), s);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::kernels::tests::data;

    /// The product equals the plain product of the dequantized weights and inputs (the kernel
    /// and the scalar path), and is within the quantization's error of the f32 product: row
    /// counts over and under a block, k not a multiple of 4, a partial last panel, a
    /// sub-range of panels, a transposed destination, accumulation.
    #[test]
    fn int8_panels_equal_the_dequantized_product() {
        for (rows, n, k) in [(13, 70, 257), (1, 5, 8), (25, 33, 37), (12, 96, 3)] {
            let w = data(n * k, 1);
            let x = data(rows * k, 2);
            let p = Int8Panels::pack(&w, n, k);
            let q = Int8Rows::new(&x, rows, k);
            // Dequantized copies.
            let wd: Vec<f64> = (0..n * k)
                .map(|i| {
                    let (j, t) = (i / k, i % k);
                    let panel = j / WIDTH * k.div_ceil(GROUP) * WIDTH * GROUP;
                    let at = panel + t / GROUP * WIDTH * GROUP + j % WIDTH * GROUP + t % GROUP;
                    p.data[at] as f64 * p.scales[j] as f64
                })
                .collect();
            let xd: Vec<f64> = (0..rows * k)
                .map(|i| (q.data[i / k * q.stride + i % k] as f64 - 128.0) * q.scales[i / k] as f64)
                .collect();
            let total = n.div_ceil(WIDTH);
            for panels in [0..total, total.saturating_sub(1)..total] {
                let first = panels.start * WIDTH;
                let cols = n - first;
                for (rs, cs) in [(cols + 3, 1), (1, rows)] {
                    for accumulate in [false, true] {
                        let len = (rows - 1) * rs + (cols - 1) * cs + 1;
                        let before = data(len, 3);
                        let mut got = before.clone();
                        let mut scalar = before.clone();
                        p.apply(panels.clone(), &mut got, (rs, cs), &q, accumulate);
                        let ps = panels.clone();
                        p.apply_with(false, ps, &mut scalar, (rs, cs), &q, accumulate);
                        assert_eq!(got, scalar, "the kernel and the scalar path");
                        for r in 0..rows {
                            for c in 0..cols {
                                let j = first + c;
                                let dot: f64 = (0..k).map(|t| wd[j * k + t] * xd[r * k + t]).sum();
                                let exact: f64 = (0..k)
                                    .map(|t| w[j * k + t] as f64 * x[r * k + t] as f64)
                                    .sum();
                                let at = r * rs + c * cs;
                                let keep = if accumulate { before[at] as f64 } else { 0.0 };
                                let g = got[at] as f64 - keep;
                                assert!((g - dot).abs() < 1e-4 * (1.0 + dot.abs()), "{g} vs {dot}");
                                // Half a step of each factor, summed over k: a loose bound.
                                let bound = (0..k)
                                    .map(|t| {
                                        (w[j * k + t].abs() as f64 * q.scales[r] as f64
                                            + x[r * k + t].abs() as f64 * p.scales[j] as f64)
                                            * 0.5
                                            + 0.25 * (q.scales[r] * p.scales[j]) as f64
                                    })
                                    .sum::<f64>();
                                assert!((g - exact).abs() <= bound + 1e-5, "{g} vs {exact}");
                            }
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn quantizing_with_avx512_equals_the_scalar_rounding() {
        let mut row = data(37, 7).iter().map(|v| v * 300.0).collect::<Vec<_>>();
        row[3] = f32::NAN;
        row[4] = 2.5; // ties to even: 2
        row[5] = -1e30;
        let (mut a, mut b) = (vec![0u8; 37], vec![0u8; 37]);
        quantize_row(&row, 1.0, &mut a);
        quantize_scalar(&row, 1.0, &mut b);
        assert_eq!(a, b);
        assert_eq!((b[3], b[4], b[5]), (128, 130, 1));
    }

    #[test]
    fn zero_rows_and_columns_quantize_to_zero() {
        let (n, k) = (3, 8);
        let mut w = data(n * k, 4);
        w[k..2 * k].fill(0.0);
        let p = Int8Panels::pack(&w, n, k);
        let x = vec![0f32; 2 * k];
        let q = Int8Rows::new(&x, 2, k);
        let mut out = vec![1f32; 2 * n];
        p.apply(0..1, &mut out, (n, 1), &q, false);
        assert!(out.iter().all(|&v| v == 0.0), "{out:?}");
    }
}
