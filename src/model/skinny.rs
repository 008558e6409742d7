//! Linear layers on a few rows with the weight `w` `(n, k)` as the checkpoint stores it:
//! `x @ w^T` for a model not prepared for search (`super::panels` serves one that is), on the
//! decoder step's 10-odd rows or one short query's tokens through an encoder.
//!
//! Written by hand because a general gemm packs the weight (a copy of it per call) and fills
//! its register tiles a third empty at these shapes. Here each weight row is streamed from
//! memory once and dotted with every input row from L1: 4 weight rows x up to 6 input rows at
//! a time in AVX-512 registers, 4 x 3 in AVX2 ones, or a scalar loop on a CPU with neither.
//!
//! [`Weight`] is the element type the host kernels read, f32 or f16 (half the bytes of a step
//! on few rows, which waits on memory), widened to f32 in a register: products and sums are
//! f32 whatever the weight type. The panels hold f16 weights (`--precision f16`); a model as
//! built has only f32 ones, so the f16 kernels here serve the tests and a caller to come.

use half::f16;
use rayon::prelude::*;

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::{__m256, __m512, __mmask16};

/// A weight element the kernels widen to f32 as they load it: `f32` or `half::f16`.
pub(super) trait Weight: Copy + Send + Sync + Default + sealed::Sealed + 'static {
    fn to_f32(self) -> f32;

    /// The nearest value (ties to even).
    fn from_f32(v: f32) -> Self;

    /// 8 weights from `p` (any alignment) as f32.
    ///
    /// # Safety
    /// 8 elements are readable at `p`; the CPU has AVX2, FMA and F16C.
    #[cfg(target_arch = "x86_64")]
    unsafe fn load8(p: *const Self) -> __m256;

    /// 16 weights from `p` as f32, lanes outside `mask` zero (and not read).
    ///
    /// # Safety
    /// The lanes of `mask` are readable at `p`; the CPU has AVX512F, BW and VL.
    #[cfg(target_arch = "x86_64")]
    unsafe fn load16(p: *const Self, mask: __mmask16) -> __m512;
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for f32 {}
    impl Sealed for half::f16 {}
}

impl Weight for f32 {
    fn to_f32(self) -> f32 {
        self
    }

    fn from_f32(v: f32) -> f32 {
        v
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    unsafe fn load8(p: *const f32) -> __m256 {
        use std::arch::x86_64::*;
        // `vlddqu`: for `_mm256_loadu_ps` the compiler, tuned for the baseline CPU, emits two
        // 16-byte halves. SAFETY: the caller guarantees 8 readable floats at `p`.
        unsafe { _mm256_castsi256_ps(_mm256_lddqu_si256(p.cast())) }
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    #[inline]
    unsafe fn load16(p: *const f32, mask: __mmask16) -> __m512 {
        // SAFETY: the caller guarantees the lanes of `mask` readable at `p`.
        unsafe { std::arch::x86_64::_mm512_maskz_loadu_ps(mask, p) }
    }
}

impl Weight for f16 {
    fn to_f32(self) -> f32 {
        f16::to_f32(self)
    }

    fn from_f32(v: f32) -> f16 {
        f16::from_f32(v)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    unsafe fn load8(p: *const f16) -> __m256 {
        use std::arch::x86_64::*;
        // SAFETY: the caller guarantees 8 readable halves (16 bytes) at `p`.
        unsafe { _mm256_cvtph_ps(_mm_loadu_si128(p.cast())) }
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    #[inline]
    unsafe fn load16(p: *const f16, mask: __mmask16) -> __m512 {
        use std::arch::x86_64::*;
        // SAFETY: the caller guarantees the lanes of `mask` readable at `p`.
        unsafe { _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(mask, p.cast())) }
    }
}

/// The instructions a kernel runs with: the widest the CPU has, or one named by a test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Isa {
    Avx512,
    Avx2,
    Scalar,
}

impl Isa {
    /// The widest set this CPU runs.
    pub(super) fn best() -> Isa {
        Isa::all()
            .into_iter()
            .find(|i| i.available())
            .unwrap_or(Isa::Scalar)
    }

    pub(super) fn all() -> [Isa; 3] {
        [Isa::Avx512, Isa::Avx2, Isa::Scalar]
    }

    /// Whether this CPU runs the set (`is_x86_feature_detected` caches what it finds).
    pub(super) fn available(self) -> bool {
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::is_x86_feature_detected as has;
            match self {
                Isa::Avx512 => crate::simd::has_avx512(),
                Isa::Avx2 => has!("avx2") && has!("fma") && has!("f16c"),
                Isa::Scalar => true,
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            self == Isa::Scalar
        }
    }
}

/// `dst[r * rs + j * cs] (+)= w[j] . x[r]` for `n` weight rows `w` `(n, k)` and `rows` inputs
/// `x` `(rows, k)`, both row-major: `x @ w^T`, on the calling thread. Panics if `dst`, `w` or
/// `x` is too short for the shapes.
pub(super) fn skinny_gemm<W: Weight>(
    dst: &mut [f32],
    dst_strides: (usize, usize),
    w: &[W],
    x: &[f32],
    dims: (usize, usize, usize),
    accumulate: bool,
) {
    skinny_gemm_isa(Isa::best(), dst, dst_strides, w, x, dims, accumulate)
}

/// [`skinny_gemm`] with the instruction set named (which must be [`Isa::available`]).
pub(super) fn skinny_gemm_isa<W: Weight>(
    isa: Isa,
    dst: &mut [f32],
    (rs, cs): (usize, usize),
    w: &[W],
    x: &[f32],
    (rows, n, k): (usize, usize, usize),
    accumulate: bool,
) {
    if rows == 0 || n == 0 {
        return;
    }
    assert!(w.len() >= n * k && x.len() >= rows * k);
    assert!(dst.len() > (rows - 1) * rs + (n - 1) * cs);
    assert!(isa.available(), "{isa:?} on a CPU without it");
    let shape = Shape {
        dst: (rs, cs),
        k,
        accumulate,
    };
    match isa {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the CPU has the instructions (asserted above); the asserts above keep every
        // read and write inside its slice.
        Isa::Avx512 => unsafe { tiles_avx512(dst, shape, w, x, (rows, n)) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as for AVX-512.
        Isa::Avx2 => unsafe { tiles_avx2(dst, shape, w, x, (rows, n)) },
        _ => {
            for r in 0..rows {
                let xr = &x[r * k..(r + 1) * k];
                for j in 0..n {
                    let dot: f32 = w[j * k..(j + 1) * k]
                        .iter()
                        .zip(xr)
                        .map(|(a, b)| a.to_f32() * b)
                        .sum();
                    shape.store(dst, (r, j), dot);
                }
            }
        }
    }
}

/// [`skinny_gemm`] into a row-major `dst` (row stride `dst_rs`), its weight rows split over
/// rayon's threads when the product is large ([`split_columns`]).
pub(super) fn skinny_gemm_par<W: Weight>(
    dst: &mut [f32],
    dst_rs: usize,
    w: &[W],
    x: &[f32],
    (rows, n, k): (usize, usize, usize),
    accumulate: bool,
) {
    let threads = rayon::current_num_threads();
    if threads < 2 || rows * n * k < PARALLEL_MACS || n < 2 * threads {
        return skinny_gemm(dst, (dst_rs, 1), w, x, (rows, n, k), accumulate);
    }
    let chunk = n.div_ceil(threads);
    split_columns(
        dst,
        dst_rs,
        (rows, n),
        chunk,
        accumulate,
        |first, cols, part| {
            let w = &w[first * k..(first + cols) * k];
            skinny_gemm(part, (cols, 1), w, x, (rows, cols, k), false)
        },
    );
}

/// Computes the `n` columns of a row-major `dst` (`rows` rows, row stride `dst_rs`) in chunks
/// of `chunk` columns on rayon's threads: `f(first, cols, part)` writes columns
/// `first..first + cols` into a `(rows, cols)` buffer of its own, copied (or with `accumulate`
/// added) into place after, as the threads' columns of one row are not disjoint slices.
pub(super) fn split_columns(
    dst: &mut [f32],
    dst_rs: usize,
    (rows, n): (usize, usize),
    chunk: usize,
    accumulate: bool,
    f: impl Fn(usize, usize, &mut [f32]) + Sync,
) {
    let parts: Vec<(usize, Vec<f32>)> = (0..n.div_ceil(chunk.max(1)))
        .into_par_iter()
        .map(|c| {
            let (first, cols) = (c * chunk, chunk.min(n - c * chunk));
            let mut part = vec![0f32; rows * cols];
            f(first, cols, &mut part);
            (first, part)
        })
        .collect();
    for (first, part) in parts {
        let cols = part.len() / rows.max(1);
        for r in 0..rows {
            let out = &mut dst[r * dst_rs + first..r * dst_rs + first + cols];
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
pub(super) const PARALLEL_MACS: usize = 1 << 22;

/// Where a tile's dot products go.
#[derive(Clone, Copy)]
struct Shape {
    dst: (usize, usize),
    k: usize,
    accumulate: bool,
}

impl Shape {
    #[inline]
    fn store(&self, dst: &mut [f32], (r, j): (usize, usize), dot: f32) {
        let o = &mut dst[r * self.dst.0 + j * self.dst.1];
        *o = if self.accumulate { *o + dot } else { dot };
    }
}

/// Walks `n` weight rows 4 at a time (then one at a time), and for each group the input rows
/// up to `max_r` at a time, calling `tile(jn, rn, j, r)` for `jn` weight rows from `j` and `rn`
/// input rows from `r`: the weight rows of a group stay in L1 while every input row passes.
#[inline]
fn walk(rows: usize, n: usize, max_r: usize, mut tile: impl FnMut(usize, usize, usize, usize)) {
    let mut j = 0;
    while j < n {
        let jn = (n - j).min(4);
        let mut r = 0;
        while r < rows {
            let rn = (rows - r).min(max_r);
            if jn == 4 {
                tile(4, rn, j, r);
            } else {
                (j..j + jn).for_each(|jj| tile(1, rn, jj, r));
            }
            r += rn;
        }
        j += jn;
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
unsafe fn tiles_avx512<W: Weight>(
    dst: &mut [f32],
    shape: Shape,
    w: &[W],
    x: &[f32],
    (rows, n): (usize, usize),
) {
    walk(rows, n, 6, |jn, rn, j, r| {
        let at = (j, r);
        // SAFETY: AVX-512 is enabled here, and the tile stays inside the caller's bounds.
        unsafe {
            match (jn, rn) {
                (4, 6) => tile_avx512::<W, 4, 6>(dst, shape, w, x, at),
                (4, 5) => tile_avx512::<W, 4, 5>(dst, shape, w, x, at),
                (4, 4) => tile_avx512::<W, 4, 4>(dst, shape, w, x, at),
                (4, 3) => tile_avx512::<W, 4, 3>(dst, shape, w, x, at),
                (4, 2) => tile_avx512::<W, 4, 2>(dst, shape, w, x, at),
                (4, _) => tile_avx512::<W, 4, 1>(dst, shape, w, x, at),
                (_, 6) => tile_avx512::<W, 1, 6>(dst, shape, w, x, at),
                (_, 5) => tile_avx512::<W, 1, 5>(dst, shape, w, x, at),
                (_, 4) => tile_avx512::<W, 1, 4>(dst, shape, w, x, at),
                (_, 3) => tile_avx512::<W, 1, 3>(dst, shape, w, x, at),
                (_, 2) => tile_avx512::<W, 1, 2>(dst, shape, w, x, at),
                _ => tile_avx512::<W, 1, 1>(dst, shape, w, x, at),
            }
        }
    });
}

/// `J` weight rows from `j` times `R` input rows from `r`: `J x R` dot products of length `k`
/// in 16-wide accumulators (the last 16 masked), summed across lanes at the end.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
#[inline]
unsafe fn tile_avx512<W: Weight, const J: usize, const R: usize>(
    dst: &mut [f32],
    shape: Shape,
    w: &[W],
    x: &[f32],
    (j, r): (usize, usize),
) {
    use std::arch::x86_64::*;
    let k = shape.k;
    let mut acc = [[_mm512_setzero_ps(); R]; J];
    let (wp, xp) = (w.as_ptr(), x.as_ptr());
    let mut kk = 0;
    while kk < k {
        let left = k - kk;
        let mask: __mmask16 = if left >= 16 { !0 } else { (1 << left) - 1 };
        // SAFETY: rows j..j+J of w and r..r+R of x hold k elements each (asserted by the
        // caller), and the mask stops at k.
        unsafe {
            let mut xv = [_mm512_setzero_ps(); R];
            for (b, v) in xv.iter_mut().enumerate() {
                *v = _mm512_maskz_loadu_ps(mask, xp.add((r + b) * k + kk));
            }
            for (a, acc) in acc.iter_mut().enumerate() {
                let wv = W::load16(wp.add((j + a) * k + kk), mask);
                for (b, acc) in acc.iter_mut().enumerate() {
                    *acc = _mm512_fmadd_ps(wv, xv[b], *acc);
                }
            }
        }
        kk += 16;
    }
    for (a, acc) in acc.iter().enumerate() {
        for (b, acc) in acc.iter().enumerate() {
            shape.store(dst, (r + b, j + a), _mm512_reduce_add_ps(*acc));
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn tiles_avx2<W: Weight>(
    dst: &mut [f32],
    shape: Shape,
    w: &[W],
    x: &[f32],
    (rows, n): (usize, usize),
) {
    walk(rows, n, 3, |jn, rn, j, r| {
        let at = (j, r);
        // SAFETY: AVX2, FMA and F16C are enabled here, and the tile stays inside the caller's
        // bounds.
        unsafe {
            match (jn, rn) {
                (4, 3) => tile_avx2::<W, 4, 3>(dst, shape, w, x, at),
                (4, 2) => tile_avx2::<W, 4, 2>(dst, shape, w, x, at),
                (4, _) => tile_avx2::<W, 4, 1>(dst, shape, w, x, at),
                (_, 3) => tile_avx2::<W, 1, 3>(dst, shape, w, x, at),
                (_, 2) => tile_avx2::<W, 1, 2>(dst, shape, w, x, at),
                _ => tile_avx2::<W, 1, 1>(dst, shape, w, x, at),
            }
        }
    });
}

/// [`tile_avx512`] in 8-wide AVX2 accumulators, with a scalar tail.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
unsafe fn tile_avx2<W: Weight, const J: usize, const R: usize>(
    dst: &mut [f32],
    shape: Shape,
    w: &[W],
    x: &[f32],
    (j, r): (usize, usize),
) {
    use std::arch::x86_64::*;
    let k = shape.k;
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
                *v = f32::load8(xp.add((r + b) * k + kk));
            }
            for (a, acc) in acc.iter_mut().enumerate() {
                let wv = W::load8(wp.add((j + a) * k + kk));
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
                dot += w[(j + a) * k + t].to_f32() * x[(r + b) * k + t];
            }
            shape.store(dst, (r + b, j + a), dot);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::kernels::tests::data;

    /// Every instruction set this CPU has, for f32 and f16 weights, equals the plain product
    /// of the (widened) weights, on 1..=13 rows and weight counts that cover every tile and
    /// remainder, and k with and without a tail.
    #[test]
    fn skinny_gemm_equals_the_plain_product_for_every_tile_shape_and_isa() {
        let isas: Vec<Isa> = Isa::all().into_iter().filter(|i| i.available()).collect();
        assert!(isas.contains(&Isa::Scalar));
        for (rows, n, k) in [
            (10, 9, 256),
            (1, 1, 8),
            (7, 11, 37),
            (3, 4, 16),
            (13, 6, 1024),
            (6, 5, 15),
        ] {
            let w32 = data(n * k, 1);
            let w16: Vec<f16> = w32.iter().map(|&v| f16::from_f32(v)).collect();
            let x = data(rows * k, 2);
            let dst_rs = n + 3;
            for &isa in &isas {
                for accumulate in [false, true] {
                    let before = data(rows * dst_rs, 3);
                    let (mut g32, mut g16) = (before.clone(), before.clone());
                    let dims = (rows, n, k);
                    skinny_gemm_isa(isa, &mut g32, (dst_rs, 1), &w32, &x, dims, accumulate);
                    skinny_gemm_isa(isa, &mut g16, (dst_rs, 1), &w16, &x, dims, accumulate);
                    for (got, w) in [(&g32, w32.clone()), (&g16, widen(&w16))] {
                        for r in 0..rows {
                            for j in 0..n {
                                let dot: f64 = (0..k)
                                    .map(|t| w[j * k + t] as f64 * x[r * k + t] as f64)
                                    .sum();
                                let keep = before[r * dst_rs + j] as f64;
                                let want = dot + if accumulate { keep } else { 0.0 };
                                let g = got[r * dst_rs + j] as f64;
                                assert!(
                                    (g - want).abs() < 1e-3 * (1.0 + want.abs()),
                                    "{isa:?} {rows}x{n}x{k}: {g} vs {want}"
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
        }
    }

    fn widen(w: &[f16]) -> Vec<f32> {
        w.iter().map(|v| v.to_f32()).collect()
    }

    #[test]
    fn a_transposed_destination_is_written_in_place() {
        let (rows, n, k) = (5, 7, 40);
        let (w, x) = (data(n * k, 7), data(rows * k, 8));
        let mut plain = vec![0f32; rows * n];
        let mut transposed = vec![0f32; n * rows];
        skinny_gemm(&mut plain, (n, 1), &w, &x, (rows, n, k), false);
        skinny_gemm(&mut transposed, (1, rows), &w, &x, (rows, n, k), false);
        for r in 0..rows {
            for j in 0..n {
                assert_eq!(plain[r * n + j], transposed[j * rows + r]);
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
}
