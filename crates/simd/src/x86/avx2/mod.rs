//! AVX2 + FMA + F16C kernels (256-bit, 8 f32 lanes).
//!
//! Every public function takes an [`Avx2Fma`] token as proof that the CPU has the level, checks
//! its shapes like the scalar twin, and calls a `#[target_feature(enable = "avx2,fma,f16c")]`
//! implementation. Results differ from [`crate::scalar`] only by summation order (several
//! accumulators, then a horizontal sum) and by fused multiply-adds.

mod dequant;
mod fp8;
mod gemm;
mod int8;
mod vec;

pub use dequant::{dequant_fp8, dequant_q4};
pub use fp8::gemm_fp8;
pub use gemm::{gemm_bf16, gemm_f16, gemm_f32, gemm_panel, gemm_q4};
pub use int8::{gemm_q4x16_q8, gemm_q8x16_q8, quantize_q8};
pub use vec::{
    axpy, axpy_bf16, axpy_f16, dot_bf16, dot_f16, dot_f32, mix_rows_bf16, mix_rows_f16,
    mix_rows_f32, rms_norm, silu_mul, softmax, widen_bf16, widen_f16,
};

pub use super::Avx2Fma;
use core::arch::x86_64::*;
use half::{bf16, f16};

/// Element types that load as 8 f32 lanes.
pub(crate) trait Elem: Copy {
    /// # Safety
    /// `p..p+8` is readable and the CPU has AVX2+F16C.
    unsafe fn load8(p: *const Self) -> __m256;
    fn to_f32(self) -> f32;
}

impl<E: Elem> crate::mix::LoadLanes<Avx2Fma> for E {
    #[inline(always)]
    unsafe fn load(p: *const E) -> __m256 {
        // SAFETY: the caller's contract is load8's.
        unsafe { E::load8(p) }
    }
    #[inline(always)]
    fn to_f32(self) -> f32 {
        Elem::to_f32(self)
    }
}

impl Elem for f32 {
    #[inline(always)]
    unsafe fn load8(p: *const f32) -> __m256 {
        // SAFETY: the caller guarantees 8 readable floats.
        unsafe { _mm256_loadu_ps(p) }
    }
    #[inline(always)]
    fn to_f32(self) -> f32 {
        self
    }
}

impl Elem for bf16 {
    /// bf16 is the top half of an f32: zero-extend to 32 bits and shift left by 16 (exact).
    #[inline(always)]
    unsafe fn load8(p: *const bf16) -> __m256 {
        // SAFETY: the caller guarantees 8 readable bf16 (16 bytes); loadu has no alignment need.
        unsafe {
            let h = _mm_loadu_si128(p.cast());
            _mm256_castsi256_ps(_mm256_slli_epi32::<16>(_mm256_cvtepu16_epi32(h)))
        }
    }
    #[inline(always)]
    fn to_f32(self) -> f32 {
        bf16::to_f32(self)
    }
}

impl Elem for f16 {
    /// F16C's `vcvtph2ps` converts exactly, subnormals, infinities and NaNs included.
    #[inline(always)]
    unsafe fn load8(p: *const f16) -> __m256 {
        // SAFETY: the caller guarantees 8 readable f16 (16 bytes); loadu has no alignment need.
        unsafe { _mm256_cvtph_ps(_mm_loadu_si128(p.cast())) }
    }
    #[inline(always)]
    fn to_f32(self) -> f32 {
        f16::to_f32(self)
    }
}

/// Sum of the 8 lanes.
#[inline(always)]
unsafe fn hsum(v: __m256) -> f32 {
    // SAFETY: plain AVX arithmetic; the caller runs under the avx2 target feature.
    unsafe {
        let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_movehdup_ps(s));
        _mm_cvtss_f32(s)
    }
}

impl crate::tile::Lanes for Avx2Fma {
    type V = __m256;
    const N: usize = 8;
    #[inline(always)]
    unsafe fn zero() -> __m256 {
        // SAFETY: the caller runs under the avx2 target feature.
        unsafe { _mm256_setzero_ps() }
    }
    #[inline(always)]
    unsafe fn fma(a: __m256, b: __m256, c: __m256) -> __m256 {
        // SAFETY: the caller runs under the fma target feature.
        unsafe { _mm256_fmadd_ps(a, b, c) }
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> __m256 {
        // SAFETY: the caller guarantees 8 readable floats.
        unsafe { _mm256_loadu_ps(p) }
    }
    #[inline(always)]
    unsafe fn hsum(v: __m256) -> f32 {
        // SAFETY: the caller runs under the avx2 target feature.
        unsafe { hsum(v) }
    }
    #[inline(always)]
    unsafe fn splat(v: f32) -> __m256 {
        // SAFETY: the caller runs under the avx target feature.
        unsafe { _mm256_set1_ps(v) }
    }
    #[inline(always)]
    unsafe fn store(p: *mut f32, v: __m256) {
        // SAFETY: the caller guarantees 8 writable floats.
        unsafe { _mm256_storeu_ps(p, v) }
    }
}
