//! A linear layer's weight packed once for the host decoder step: `w` `(n, k)` as the
//! checkpoint stores it, transposed into panels of [`WIDTH`] output columns, each `(k, WIDTH)`
//! row-major (the last zero-padded), in f32 or f16 ([`Weight`]).
//!
//! Why: in the checkpoint's layout a product on few rows is a set of dot products, each summed
//! across a register's lanes at its end ([`super::skinny`]), and at the step's k of 256 the
//! lane sums cost about what the multiplies do. In a panel every input value is broadcast
//! against 32 weights and accumulated lane by lane into 32 outputs: no lane sums, and each
//! weight is read once per 12 input rows (AVX-512; 6 with AVX2). f16 halves the bytes, which is
//! what a step on few rows waits for; products and sums stay f32.
//!
//! Cost: a copy of the weights (half their size in f16), made once when a model is prepared
//! for inference ([`super::T5ForConditionalGeneration::for_inference`]).

use std::ops::Range;

use candle_core::Tensor;
use half::f16;

use super::int8::{Int8Panels, Int8Rows};
use super::skinny::{Isa, PARALLEL_MACS, Weight, split_columns};
use crate::device::Precision;

/// Output columns per panel: two AVX-512 registers.
pub(super) const WIDTH: usize = 32;

/// A weight `(n, k)` in panels (see the module docs).
pub(super) struct Panels<W> {
    data: Vec<W>,
    n: usize,
    k: usize,
}

/// Where a kernel writes: element `(r, j)` of the output at `r * rs + j * cs`, added to what is
/// there when `accumulate`.
#[derive(Clone, Copy)]
pub(super) struct Out {
    pub(super) rs: usize,
    pub(super) cs: usize,
    pub(super) accumulate: bool,
}

impl Out {
    #[inline]
    pub(super) fn store(&self, dst: &mut [f32], (r, j): (usize, usize), v: f32) {
        let o = &mut dst[r * self.rs + j * self.cs];
        *o = if self.accumulate { *o + v } else { v };
    }
}

impl<W: Weight> Panels<W> {
    /// Packs `w` `(n, k)`, row-major, rounding each weight to `W`.
    pub(super) fn pack(w: &[f32], n: usize, k: usize) -> Panels<W> {
        assert_eq!(w.len(), n * k, "a ({n}, {k}) weight");
        let mut data = vec![W::default(); n.div_ceil(WIDTH) * k * WIDTH];
        for (j, row) in w.chunks(k.max(1)).enumerate() {
            let panel = &mut data[j / WIDTH * k * WIDTH..];
            for (t, &v) in row.iter().enumerate() {
                panel[t * WIDTH + j % WIDTH] = W::from_f32(v);
            }
        }
        Panels { data, n, k }
    }

    /// Number of panels: `ceil(n / WIDTH)`.
    pub(super) fn panels(&self) -> usize {
        self.n.div_ceil(WIDTH)
    }

    /// `dst[r * rs + c * cs] (+)= x[r] . w[first + c]` for the `rows` rows of `x` `(rows, k)`
    /// and the columns of `panels` (`first` the first of them), on the calling thread. Panics
    /// if `x` or `dst` is too short.
    pub(super) fn apply(
        &self,
        panels: Range<usize>,
        dst: &mut [f32],
        (rs, cs): (usize, usize),
        x: &[f32],
        rows: usize,
        accumulate: bool,
    ) {
        self.apply_isa(Isa::best(), panels, dst, (rs, cs), x, rows, accumulate)
    }

    /// [`Panels::apply`] with the instruction set named (which must be [`Isa::available`]).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn apply_isa(
        &self,
        isa: Isa,
        panels: Range<usize>,
        dst: &mut [f32],
        (rs, cs): (usize, usize),
        x: &[f32],
        rows: usize,
        accumulate: bool,
    ) {
        let k = self.k;
        let first = panels.start * WIDTH;
        let cols = (panels.end * WIDTH).min(self.n).saturating_sub(first);
        if rows == 0 || cols == 0 {
            return;
        }
        assert!(panels.end <= self.panels() && x.len() >= rows * k);
        assert!(dst.len() > (rows - 1) * rs + (cols - 1) * cs);
        assert!(isa.available(), "{isa:?} on a CPU without it");
        let out = Out { rs, cs, accumulate };
        for p in panels {
            let panel = &self.data[p * k * WIDTH..(p + 1) * k * WIDTH];
            let col = p * WIDTH - first;
            let valid = (self.n - p * WIDTH).min(WIDTH);
            let at = Tile { col, valid, k };
            match isa {
                #[cfg(target_arch = "x86_64")]
                // SAFETY: the CPU has the instructions (asserted above); the asserts above keep
                // every read and write inside its slice.
                Isa::Avx512 => unsafe { rows_avx512(panel, x, rows, dst, out, at) },
                #[cfg(target_arch = "x86_64")]
                // SAFETY: as for AVX-512.
                Isa::Avx2 => unsafe { rows_avx2(panel, x, rows, dst, out, at) },
                _ => {
                    for r in 0..rows {
                        let xr = &x[r * k..(r + 1) * k];
                        for c in 0..valid {
                            let dot: f32 = xr
                                .iter()
                                .enumerate()
                                .map(|(t, v)| panel[t * WIDTH + c].to_f32() * v)
                                .sum();
                            out.store(dst, (r, col + c), dot);
                        }
                    }
                }
            }
        }
    }
}

/// A weight in panels of f32, f16 or int8: what [`Precision`] asks of the host kernels.
pub(super) enum PackedWeight {
    F32(Panels<f32>),
    F16(Panels<f16>),
    I8(Int8Panels),
}

impl std::fmt::Debug for PackedWeight {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (kind, n, k) = match self {
            PackedWeight::F32(p) => ("f32", p.n, p.k),
            PackedWeight::F16(p) => ("f16", p.n, p.k),
            PackedWeight::I8(p) => ("int8", p.n(), p.k()),
        };
        write!(f, "PackedWeight({kind}, {n} x {k})")
    }
}

impl PackedWeight {
    /// Packs a weight tensor `(n, k)`: in f16 for [`Precision::F16`], quantized for
    /// [`Precision::Int8`], else in f32.
    pub(super) fn pack(t: &Tensor, precision: Precision) -> candle_core::Result<PackedWeight> {
        let (n, k) = t.dims2()?;
        let t = t.contiguous()?;
        super::kernels::with_slice(&t, |w| {
            let w = &w[..n * k];
            match precision {
                Precision::F16 => PackedWeight::F16(Panels::pack(w, n, k)),
                Precision::Int8 => PackedWeight::I8(Int8Panels::pack(w, n, k)),
                Precision::F32 | Precision::Tf32 => PackedWeight::F32(Panels::pack(w, n, k)),
            }
        })
    }

    /// Output columns.
    pub(super) fn n(&self) -> usize {
        match self {
            PackedWeight::F32(p) => p.n,
            PackedWeight::F16(p) => p.n,
            PackedWeight::I8(p) => p.n(),
        }
    }

    /// Input columns.
    pub(super) fn k(&self) -> usize {
        match self {
            PackedWeight::F32(p) => p.k,
            PackedWeight::F16(p) => p.k,
            PackedWeight::I8(p) => p.k(),
        }
    }

    /// [`Panels::apply`].
    pub(super) fn apply(
        &self,
        panels: Range<usize>,
        dst: &mut [f32],
        strides: (usize, usize),
        x: &[f32],
        rows: usize,
        accumulate: bool,
    ) {
        match self {
            PackedWeight::F32(p) => p.apply(panels, dst, strides, x, rows, accumulate),
            PackedWeight::F16(p) => p.apply(panels, dst, strides, x, rows, accumulate),
            PackedWeight::I8(p) => {
                let x = Int8Rows::new(x, rows, p.k());
                p.apply(panels, dst, strides, &x, accumulate)
            }
        }
    }

    /// `dst[r * dst_rs + j] (+)= x[r] . w[j]` for every column, split over rayon's threads
    /// by whole panels when the product is large enough to pay for waking them
    /// ([`split_columns`]).
    pub(super) fn apply_par(
        &self,
        dst: &mut [f32],
        dst_rs: usize,
        x: &[f32],
        rows: usize,
        accumulate: bool,
    ) {
        let n = self.n();
        let k = x.len() / rows.max(1);
        let panels = n.div_ceil(WIDTH);
        let threads = rayon::current_num_threads();
        if threads < 2 || rows * n * k < PARALLEL_MACS || panels < 2 * threads {
            return self.apply(0..panels, dst, (dst_rs, 1), x, rows, accumulate);
        }
        let chunk = panels.div_ceil(threads) * WIDTH;
        // int8 inputs are quantized once, for every thread.
        let quantized = match self {
            PackedWeight::I8(p) => Some((p, Int8Rows::new(x, rows, p.k()))),
            _ => None,
        };
        split_columns(
            dst,
            dst_rs,
            (rows, n),
            chunk,
            accumulate,
            |first, cols, part| {
                let range = first / WIDTH..(first + cols).div_ceil(WIDTH);
                match &quantized {
                    Some((p, q)) => p.apply(range, part, (cols, 1), q, false),
                    None => self.apply(range, part, (cols, 1), x, rows, false),
                }
            },
        );
    }
}

/// One panel's place in the output: its first column, how many of its columns are real, and
/// the inner dimension.
#[derive(Clone, Copy)]
struct Tile {
    col: usize,
    valid: usize,
    k: usize,
}

/// Calls `f(r, rn)` for the rows in blocks of at most `max`.
#[inline]
pub(super) fn blocks(rows: usize, max: usize, mut f: impl FnMut(usize, usize)) {
    let mut r = 0;
    while r < rows {
        let rn = (rows - r).min(max);
        f(r, rn);
        r += rn;
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
unsafe fn rows_avx512<W: Weight>(
    panel: &[W],
    x: &[f32],
    rows: usize,
    dst: &mut [f32],
    out: Out,
    at: Tile,
) {
    blocks(rows, 12, |r, rn| {
        // SAFETY: AVX-512 is enabled here; rows r..r+rn of x exist (asserted by the caller).
        unsafe {
            match rn {
                12 => panel_avx512::<W, 12>(panel, x, r, dst, out, at),
                11 => panel_avx512::<W, 11>(panel, x, r, dst, out, at),
                10 => panel_avx512::<W, 10>(panel, x, r, dst, out, at),
                9 => panel_avx512::<W, 9>(panel, x, r, dst, out, at),
                8 => panel_avx512::<W, 8>(panel, x, r, dst, out, at),
                7 => panel_avx512::<W, 7>(panel, x, r, dst, out, at),
                6 => panel_avx512::<W, 6>(panel, x, r, dst, out, at),
                5 => panel_avx512::<W, 5>(panel, x, r, dst, out, at),
                4 => panel_avx512::<W, 4>(panel, x, r, dst, out, at),
                3 => panel_avx512::<W, 3>(panel, x, r, dst, out, at),
                2 => panel_avx512::<W, 2>(panel, x, r, dst, out, at),
                _ => panel_avx512::<W, 1>(panel, x, r, dst, out, at),
            }
        }
    });
}

/// `R` input rows from `r` against one panel: `R x 32` outputs in 2R AVX-512 accumulators.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
#[inline]
unsafe fn panel_avx512<W: Weight, const R: usize>(
    panel: &[W],
    x: &[f32],
    r: usize,
    dst: &mut [f32],
    out: Out,
    Tile { col, valid, k }: Tile,
) {
    use std::arch::x86_64::*;
    let mut acc = [[_mm512_setzero_ps(); 2]; R];
    let (wp, xp) = (panel.as_ptr(), x.as_ptr());
    for t in 0..k {
        // SAFETY: the panel holds k rows of WIDTH weights, and x rows r..r+R of k values.
        unsafe {
            let w0 = W::load16(wp.add(t * WIDTH), !0);
            let w1 = W::load16(wp.add(t * WIDTH + 16), !0);
            for (b, acc) in acc.iter_mut().enumerate() {
                let xb = _mm512_set1_ps(*xp.add((r + b) * k + t));
                acc[0] = _mm512_fmadd_ps(w0, xb, acc[0]);
                acc[1] = _mm512_fmadd_ps(w1, xb, acc[1]);
            }
        }
    }
    for (b, acc) in acc.iter().enumerate() {
        for (h, v) in acc.iter().enumerate() {
            let lanes = valid.saturating_sub(h * 16).min(16);
            if lanes == 0 {
                continue;
            }
            if out.cs == 1 {
                let mask: __mmask16 = ((1u32 << lanes) - 1) as __mmask16;
                // SAFETY: the `lanes` outputs from this address are inside `dst` (asserted by
                // the caller for every valid column).
                unsafe {
                    let d = dst.as_mut_ptr().add((r + b) * out.rs + col + h * 16);
                    let v = if out.accumulate {
                        _mm512_add_ps(_mm512_maskz_loadu_ps(mask, d), *v)
                    } else {
                        *v
                    };
                    _mm512_mask_storeu_ps(d, mask, v);
                }
            } else {
                let mut spill = [0f32; 16];
                // SAFETY: `spill` holds 16 floats.
                unsafe { _mm512_storeu_ps(spill.as_mut_ptr(), *v) };
                for (c, &s) in spill[..lanes].iter().enumerate() {
                    out.store(dst, (r + b, col + h * 16 + c), s);
                }
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn rows_avx2<W: Weight>(
    panel: &[W],
    x: &[f32],
    rows: usize,
    dst: &mut [f32],
    out: Out,
    at: Tile,
) {
    // Half a panel (16 columns) at a time: 2R accumulators of 8 lanes fit 16 registers.
    for half in 0..2 {
        blocks(rows, 6, |r, rn| {
            // SAFETY: AVX2 is enabled here; rows r..r+rn of x exist (asserted by the caller).
            unsafe {
                match rn {
                    6 => panel_avx2::<W, 6>(panel, x, r, dst, out, at, half),
                    5 => panel_avx2::<W, 5>(panel, x, r, dst, out, at, half),
                    4 => panel_avx2::<W, 4>(panel, x, r, dst, out, at, half),
                    3 => panel_avx2::<W, 3>(panel, x, r, dst, out, at, half),
                    2 => panel_avx2::<W, 2>(panel, x, r, dst, out, at, half),
                    _ => panel_avx2::<W, 1>(panel, x, r, dst, out, at, half),
                }
            }
        });
    }
}

/// [`panel_avx512`] on half a panel in AVX2 registers.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
unsafe fn panel_avx2<W: Weight, const R: usize>(
    panel: &[W],
    x: &[f32],
    r: usize,
    dst: &mut [f32],
    out: Out,
    Tile { col, valid, k }: Tile,
    half: usize,
) {
    use std::arch::x86_64::*;
    let mut acc = [[_mm256_setzero_ps(); 2]; R];
    let (wp, xp) = (panel.as_ptr(), x.as_ptr());
    for t in 0..k {
        // SAFETY: the panel holds k rows of WIDTH weights, and x rows r..r+R of k values.
        unsafe {
            let w0 = W::load8(wp.add(t * WIDTH + half * 16));
            let w1 = W::load8(wp.add(t * WIDTH + half * 16 + 8));
            for (b, acc) in acc.iter_mut().enumerate() {
                let xb = _mm256_set1_ps(*xp.add((r + b) * k + t));
                acc[0] = _mm256_fmadd_ps(w0, xb, acc[0]);
                acc[1] = _mm256_fmadd_ps(w1, xb, acc[1]);
            }
        }
    }
    for (b, acc) in acc.iter().enumerate() {
        for (h, v) in acc.iter().enumerate() {
            let first = half * 16 + h * 8;
            let lanes = valid.saturating_sub(first).min(8);
            let mut spill = [0f32; 8];
            // SAFETY: `spill` holds 8 floats.
            unsafe { _mm256_storeu_ps(spill.as_mut_ptr(), *v) };
            for (c, &s) in spill[..lanes].iter().enumerate() {
                out.store(dst, (r + b, col + first + c), s);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::kernels::tests::data;
    use half::f16;

    #[test]
    fn the_threaded_product_equals_the_one_thread_one() {
        // Large enough to be split over threads (when there are several), n not a multiple of
        // a panel.
        let (rows, n, k) = (40, 301, 512);
        assert!(rows * n * k >= PARALLEL_MACS);
        let (w, x) = (data(n * k, 4), data(rows * k, 5));
        for packed in [
            PackedWeight::F32(Panels::pack(&w, n, k)),
            PackedWeight::F16(Panels::pack(&w, n, k)),
        ] {
            let dst_rs = n + 2;
            for accumulate in [false, true] {
                let mut one = data(rows * dst_rs, 6);
                let mut par = one.clone();
                packed.apply(
                    0..n.div_ceil(WIDTH),
                    &mut one,
                    (dst_rs, 1),
                    &x,
                    rows,
                    accumulate,
                );
                packed.apply_par(&mut par, dst_rs, &x, rows, accumulate);
                assert_eq!(one, par);
            }
        }
    }

    /// Every instruction set this CPU has, for f32 and f16 panels, equals the plain product of
    /// the (rounded) weights: row counts over and under a block, n with a partial last panel,
    /// a sub-range of panels, a row-major and a transposed destination, with and without
    /// accumulation.
    #[test]
    fn panels_equal_the_plain_product_for_every_isa_shape_and_destination() {
        let isas: Vec<Isa> = Isa::all().into_iter().filter(|i| i.available()).collect();
        for (rows, n, k) in [(10, 70, 256), (1, 5, 8), (13, 33, 37), (25, 96, 16)] {
            let w = data(n * k, 1);
            let x = data(rows * k, 2);
            let p32 = Panels::<f32>::pack(&w, n, k);
            let p16 = Panels::<f16>::pack(&w, n, k);
            let w16: Vec<f32> = w.iter().map(|&v| f16::from_f32(v).to_f32()).collect();
            let total = p32.panels();
            for panels in [0..total, total.saturating_sub(2)..total] {
                let first = panels.start * WIDTH;
                let cols = n - first;
                // Row-major with padding between rows, and transposed (`[column][row]`).
                for (rs, cs) in [(cols + 3, 1), (1, rows)] {
                    let len = (rows - 1) * rs + (cols - 1) * cs + 1;
                    for &isa in &isas {
                        for accumulate in [false, true] {
                            let before = data(len, 3);
                            let (mut g32, mut g16) = (before.clone(), before.clone());
                            let ps = panels.clone();
                            p32.apply_isa(isa, ps, &mut g32, (rs, cs), &x, rows, accumulate);
                            let ps = panels.clone();
                            p16.apply_isa(isa, ps, &mut g16, (rs, cs), &x, rows, accumulate);
                            for (got, w) in [(&g32, &w), (&g16, &w16)] {
                                let mut written = vec![false; len];
                                for r in 0..rows {
                                    for c in 0..cols {
                                        let j = first + c;
                                        let dot: f64 = (0..k)
                                            .map(|t| w[j * k + t] as f64 * x[r * k + t] as f64)
                                            .sum();
                                        let at = r * rs + c * cs;
                                        written[at] = true;
                                        let keep = if accumulate { before[at] as f64 } else { 0.0 };
                                        let want = dot + keep;
                                        let g = got[at] as f64;
                                        assert!(
                                            (g - want).abs() < 1e-3 * (1.0 + want.abs()),
                                            "{isa:?} {rows}x{n}x{k} {panels:?} ({rs}, {cs}): \
                                             {g} vs {want}"
                                        );
                                    }
                                }
                                // Nothing outside the outputs is touched.
                                for (i, w) in written.iter().enumerate() {
                                    if !w {
                                        assert_eq!(got[i], before[i]);
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}
