//! simd: how does a loop run with the CPU's widest vector instructions, when genret is
//! compiled for a baseline every x86-64 CPU runs?
//!
//! [`widest`] runs a closure inside a function compiled for AVX-512 where the CPU has it:
//! loops inlined into it (an elementwise pass, a normaliser) are vectorised 16 lanes wide
//! instead of the baseline's 4. The answer is the same either way: Rust never fuses a multiply and an
//! add, or reorders float sums, unless told to.

/// Runs `f` compiled for AVX-512 where the CPU has it (`f` and what it calls should be
/// inlined, `#[inline(always)]` on a closure), else as compiled.
#[inline(always)]
pub(crate) fn widest<R>(f: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    if has_avx512() {
        // SAFETY: the CPU has every feature the function enables (checked just above).
        return unsafe { avx512(f) };
    }
    f()
}

/// Whether the CPU runs AVX-512 F, BW and VL (and so AVX2 and FMA).
/// `is_x86_feature_detected` caches what it finds, so this is a few loads.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
pub(crate) fn has_avx512() -> bool {
    use std::arch::is_x86_feature_detected as has;
    has!("avx512f") && has!("avx512bw") && has!("avx512vl") && has!("avx2") && has!("fma")
}

/// Whether the CPU also runs AVX-512 VNNI (`vpdpbusd`, the int8 products).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
pub(crate) fn has_avx512_vnni() -> bool {
    has_avx512() && std::arch::is_x86_feature_detected!("avx512vnni")
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma")]
unsafe fn avx512<R>(f: impl FnOnce() -> R) -> R {
    f()
}
