//! AVX-512 FP8 matmul with per-block accumulators.
//!
//! Decoding goes through f16 bit patterns exactly as documented on the AVX2 level
//! (`x86::avx2::fp8`), 32 codes at a time: one sign- (E4M3) or zero- (E5M2) extending widen of a
//! 256-bit load into 32 i16 lanes, a shift, a mask (E4M3 only), and two `vcvtph2ps`. Scales are
//! not applied per weight: each `(row, token)` sums `decode(w)·x` over a k-block in its own
//! accumulator and folds it in with one FMA by the block's scale (`× 2⁸` for E4M3's f16 trick)
//! at the block's end. E4M3's NaN code (`S.1111.111`, which the shift would turn into a finite
//! value) is detected on the raw bytes, 32 at a time (OR the sign in, compare with `0xff`), and
//! turns the row's outputs into NaN — which is what any NaN weight does to a dot product.
//!
//! Tiles: 4 rows × 1 token for decode (4 block + 4 total accumulators, 4 weight streams), 4 rows ×
//! 3 tokens for prefill (24 accumulators).

use super::Avx512;
use crate::scalar::{self, fp8_shape};
use crate::Fp8Format;
use core::arch::x86_64::*;

/// See [`crate::Kernels::gemm_fp8`].
#[allow(clippy::too_many_arguments)]
pub fn gemm_fp8(
    _: Avx512,
    format: Fp8Format,
    w: &[u8],
    scales: &[f32],
    block_k: usize,
    x: &[f32],
    k: usize,
    out: &mut [f32],
) {
    let (rows, n_tok, blocks) = fp8_shape(w, scales, block_k, x, k, out);
    let p = Fp8 {
        w,
        scales,
        block_k,
        blocks,
        k,
        x,
        n_tok,
    };
    // SAFETY: the token proves the level; fp8_shape checked the layout and the scales.
    unsafe {
        match format {
            Fp8Format::E4M3 => gemm_imp::<true>(&p, rows, out),
            Fp8Format::E5M2 => gemm_imp::<false>(&p, rows, out),
        }
    }
}

struct Fp8<'a> {
    w: &'a [u8],
    scales: &'a [f32],
    block_k: usize,
    blocks: usize,
    k: usize,
    x: &'a [f32],
    n_tok: usize,
}

#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
unsafe fn gemm_imp<const E4M3: bool>(p: &Fp8<'_>, rows: usize, out: &mut [f32]) {
    let mut r = 0;
    // SAFETY (all calls): rows r.. and the tokens exist; the caller checked the shapes.
    if p.n_tok == 1 {
        while r + 4 <= rows {
            unsafe { row_pass::<E4M3, 4, 1>(p, r, out) };
            r += 4;
        }
    } else {
        while r + 4 <= rows {
            unsafe { row_pass::<E4M3, 4, 3>(p, r, out) };
            r += 4;
        }
    }
    while r < rows {
        unsafe { row_pass::<E4M3, 1, 3>(p, r, out) };
        r += 1;
    }
}

#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
unsafe fn row_pass<const E4M3: bool, const R: usize, const T: usize>(
    p: &Fp8<'_>,
    r0: usize,
    out: &mut [f32],
) {
    let mut t = 0;
    while t + T <= p.n_tok {
        // SAFETY: rows r0..r0+R and tokens t..t+T exist.
        unsafe { tile::<E4M3, R, T>(p, r0, t, out) };
        t += T;
    }
    while t < p.n_tok {
        // SAFETY: rows r0..r0+R and token t exist.
        unsafe { tile::<E4M3, R, 1>(p, r0, t, out) };
        t += 1;
    }
}

/// 32 codes at `c` as two vectors of 16 f32 (unscaled; E4M3 is `2⁻⁸` times its value), and the
/// mask of E4M3 NaN codes among them.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
unsafe fn decode32<const E4M3: bool>(c: *const u8) -> (__m512, __m512, u32) {
    // SAFETY: the caller guarantees 32 readable bytes and the level.
    unsafe {
        let v = _mm256_loadu_si256(c.cast());
        let (h, nan) = if E4M3 {
            let nan = _mm256_cmpeq_epi8_mask(
                _mm256_or_si256(v, _mm256_set1_epi8(-128)),
                _mm256_set1_epi8(-1),
            );
            let h = _mm512_slli_epi16::<7>(_mm512_cvtepi8_epi16(v));
            (
                _mm512_and_si512(h, _mm512_set1_epi16(0xbf80_u16 as i16)),
                nan,
            )
        } else {
            (_mm512_slli_epi16::<8>(_mm512_cvtepu8_epi16(v)), 0)
        };
        let lo = _mm512_cvtph_ps(_mm512_castsi512_si256(h));
        let hi = _mm512_cvtph_ps(_mm512_extracti64x4_epi64::<1>(h));
        (lo, hi, nan)
    }
}

/// 16 codes at `c`, as [`decode32`].
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
unsafe fn decode16<const E4M3: bool>(c: *const u8) -> (__m512, u16) {
    // SAFETY: the caller guarantees 16 readable bytes and the level.
    unsafe {
        let v = _mm_loadu_si128(c.cast());
        if E4M3 {
            let nan = _mm_cmpeq_epi8_mask(_mm_or_si128(v, _mm_set1_epi8(-128)), _mm_set1_epi8(-1));
            let h = _mm256_slli_epi16::<7>(_mm256_cvtepi8_epi16(v));
            let h = _mm256_and_si256(h, _mm256_set1_epi16(0xbf80_u16 as i16));
            (_mm512_cvtph_ps(h), nan)
        } else {
            (
                _mm512_cvtph_ps(_mm256_slli_epi16::<8>(_mm256_cvtepu8_epi16(v))),
                0,
            )
        }
    }
}

/// One `R × T` output tile.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
#[allow(clippy::needless_range_loop)] // index loops over the register tile read clearer here
unsafe fn tile<const E4M3: bool, const R: usize, const T: usize>(
    p: &Fp8<'_>,
    r0: usize,
    t0: usize,
    out: &mut [f32],
) {
    let (k, n_tok) = (p.k, p.n_tok);
    let format = if E4M3 {
        Fp8Format::E4M3
    } else {
        Fp8Format::E5M2
    };
    let (wp, xp) = (p.w.as_ptr(), p.x.as_ptr());
    let mut acc = [[_mm512_setzero_ps(); T]; R];
    let mut tail = [[0f32; T]; R];
    let mut nan = [0u32; R];
    let (mut s, mut s0) = (0, 0);
    while s0 < k {
        let s1 = (s0 + p.block_k).min(k);
        let mut bacc = [[_mm512_setzero_ps(); T]; R];
        let mut btail = [[0f32; T]; R];
        let mut j = s0;
        while j + 32 <= s1 {
            for i in 0..R {
                // SAFETY: (r0+i, j..j+32) is inside w; tokens t0+t have x[j..j+32].
                unsafe {
                    let (lo, hi, m) = decode32::<E4M3>(wp.add((r0 + i) * k + j));
                    nan[i] |= m;
                    for t in 0..T {
                        let xr = xp.add((t0 + t) * k + j);
                        bacc[i][t] = _mm512_fmadd_ps(lo, _mm512_loadu_ps(xr), bacc[i][t]);
                        bacc[i][t] = _mm512_fmadd_ps(hi, _mm512_loadu_ps(xr.add(16)), bacc[i][t]);
                    }
                }
            }
            j += 32;
        }
        if j + 16 <= s1 {
            for i in 0..R {
                // SAFETY: (r0+i, j..j+16) is inside w; tokens t0+t have x[j..j+16].
                unsafe {
                    let (v, m) = decode16::<E4M3>(wp.add((r0 + i) * k + j));
                    nan[i] |= m as u32;
                    for t in 0..T {
                        let xv = _mm512_loadu_ps(xp.add((t0 + t) * k + j));
                        bacc[i][t] = _mm512_fmadd_ps(v, xv, bacc[i][t]);
                    }
                }
            }
            j += 16;
        }
        while j < s1 {
            for i in 0..R {
                let wj = scalar::fp8_to_f32(format, p.w[(r0 + i) * k + j]);
                for t in 0..T {
                    btail[i][t] += wj * p.x[(t0 + t) * k + j];
                }
            }
            j += 1;
        }
        for i in 0..R {
            // SAFETY: s < blocks, and scales holds rows·blocks entries (checked).
            let scale = unsafe { *p.scales.get_unchecked((r0 + i) * p.blocks + s) };
            let sv = _mm512_set1_ps(if E4M3 { scale * 256.0 } else { scale });
            for t in 0..T {
                acc[i][t] = _mm512_fmadd_ps(bacc[i][t], sv, acc[i][t]);
                tail[i][t] += btail[i][t] * scale;
            }
        }
        s0 = s1;
        s += 1;
    }
    for i in 0..R {
        for t in 0..T {
            let v = _mm512_reduce_add_ps(acc[i][t]) + tail[i][t];
            out[(r0 + i) * n_tok + t0 + t] = if nan[i] != 0 { f32::NAN } else { v };
        }
    }
}
