//! AVX2 dequantization of FP8 and 4-bit stretches to f32: the weight blocks of the prefill
//! matmul (`crate::panel`), where a scalar table lookup per weight cost more than a tenth of
//! the FMA work.

use super::fp8::decode16;
use super::Avx2Fma;
use crate::scalar::{self, dequant_shape_q4};
use crate::Fp8Format;
use core::arch::x86_64::*;

/// See [`crate::Kernels::dequant_fp8`].
pub fn dequant_fp8(_: Avx2Fma, format: Fp8Format, codes: &[u8], scale: f32, dst: &mut [f32]) {
    assert_eq!(codes.len(), dst.len(), "dequant_fp8: length mismatch");
    // SAFETY: the token proves avx2+fma+f16c; the lengths match.
    unsafe {
        match format {
            Fp8Format::E4M3 => dequant_fp8_imp::<true>(codes, scale, dst),
            Fp8Format::E5M2 => dequant_fp8_imp::<false>(codes, scale, dst),
        }
    }
}

/// 16 codes per step through F16C (see `fp8.rs`); the `2⁸` of E4M3's pattern goes into the
/// scale (`(v·2⁻⁸)·(s·2⁸)` rounds once, exactly as `v·s`), and E4M3 NaN codes, which decode to a
/// finite f16, are patched afterwards.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dequant_fp8_imp<const E4M3: bool>(codes: &[u8], scale: f32, dst: &mut [f32]) {
    let n = codes.len();
    let s = _mm256_set1_ps(if E4M3 { scale * 256.0 } else { scale });
    let mut i = 0;
    while i + 16 <= n {
        // SAFETY: i + 16 <= n = codes.len() = dst.len().
        unsafe {
            let (lo, hi, nan) = decode16::<E4M3>(codes.as_ptr().add(i));
            _mm256_storeu_ps(dst.as_mut_ptr().add(i), _mm256_mul_ps(lo, s));
            _mm256_storeu_ps(dst.as_mut_ptr().add(i + 8), _mm256_mul_ps(hi, s));
            if nan != 0 {
                for b in 0..16 {
                    if nan & (1 << b) != 0 {
                        dst[i + b] = f32::NAN;
                    }
                }
            }
        }
        i += 16;
    }
    let format = if E4M3 {
        Fp8Format::E4M3
    } else {
        Fp8Format::E5M2
    };
    scalar::dequant_fp8(format, &codes[i..], scale, &mut dst[i..]);
}

/// See [`crate::Kernels::dequant_q4`].
pub fn dequant_q4(_: Avx2Fma, bytes: &[u8], scale: f32, zero_scaled: f32, dst: &mut [f32]) {
    dequant_shape_q4(bytes, dst);
    // SAFETY: the token proves avx2+fma+f16c; dst holds two floats per byte.
    unsafe { dequant_q4_imp(bytes, scale, zero_scaled, dst) }
}

/// 16 bytes = 32 weights per step: low and high nibbles split with a mask and a shift,
/// interleaved back into input order (`unpacklo/hi_epi8`), widened 8 at a time.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dequant_q4_imp(bytes: &[u8], scale: f32, zero_scaled: f32, dst: &mut [f32]) {
    let n = bytes.len();
    let (s, neg_z) = (_mm256_set1_ps(scale), _mm256_set1_ps(-zero_scaled));
    let mask = _mm_set1_epi8(15);
    let mut i = 0;
    while i + 16 <= n {
        // SAFETY: i + 16 <= n bytes, and dst holds 2n floats.
        unsafe {
            let b = _mm_loadu_si128(bytes.as_ptr().add(i).cast());
            let lo = _mm_and_si128(b, mask);
            let hi = _mm_and_si128(_mm_srli_epi16::<4>(b), mask);
            let q = [_mm_unpacklo_epi8(lo, hi), _mm_unpackhi_epi8(lo, hi)];
            for (h, q) in q.into_iter().enumerate() {
                let d = dst.as_mut_ptr().add(2 * i + 16 * h);
                let a = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(q));
                let b = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_srli_si128::<8>(q)));
                _mm256_storeu_ps(d, _mm256_fmadd_ps(a, s, neg_z));
                _mm256_storeu_ps(d.add(8), _mm256_fmadd_ps(b, s, neg_z));
            }
        }
        i += 16;
    }
    scalar::dequant_q4(&bytes[i..], scale, zero_scaled, &mut dst[2 * i..]);
}
