//! AVX2 FP8 matmul with per-block accumulators.
//!
//! Both formats decode through F16C: E5M2 *is* the top byte of an f16, so `code << 8` is its
//! exact f16 pattern. E4M3 (bias 7) placed as `sign << 15 | (code & 0x7f) << 7` is an f16 (bias
//! 15) worth exactly `2⁻⁸` times the value, for normals and subnormals alike (E4M3 subnormals land
//! on f16 subnormals); the `2⁸` is folded into the block scale. That pattern is one sign-extending
//! widen, a shift by 7 and a mask (`0xbf80` drops the copy of the sign that lands in bit 14).
//! E4M3's NaN code `S.1111.111` would land on a finite f16; instead of patching every weight, the
//! raw bytes are checked (`code & 0x7f` is `0x7f` only for NaN: a running byte maximum of it per
//! row) and a row that has one returns NaN, which is what a NaN weight does to a dot product
//! anyway.
//!
//! Per 16 codes: widen, shift, mask (E4M3), two `vcvtph2ps`, two FMAs per token, plus 2 ops of
//! NaN check.
//!
//! One E4M3 token (decode) skips F16C: the code sign-extended to 32 bits, shifted left by 20 and
//! masked is an f32 worth exactly `2⁻¹²⁰` times the value (subnormals included), and the inputs
//! are multiplied by `2¹¹²` once per call ([`gemv_int`]), so every product is the f16 decode's
//! `(2⁻⁸·w)·x` to the bit and the sums round alike: a lone token gets the bits it gets in a
//! batch. Two integer ops per 8 codes replace F16C's widen, shift, mask and 2-uop conversion
//! (measured at `--isa avx2` on a Zen 4 guest, alternating runs: in-cache margin 13.3/10.3 →
//! 16.7/16.4 GB/s, whole-model decode 2.43/2.71 → 2.64/2.78 tok/s on one thread, 4.59/4.90 →
//! 4.89/5.04 on two). An earlier version multiplied the unscaled inputs, which left the partial
//! sums subnormal for small inputs and rounded them differently.
//!
//! Scales apply once per k-block: each `(row, token)` keeps a block accumulator that one FMA by
//! the block's scale folds into the total. Tiles: 4 rows × 1 token for decode (8
//! accumulators), up to 6 tokens wide for a server step's 2 to 12 tokens (two tiles a row pass
//! past 6), 2 × 2 for more.

use super::{hsum, Avx2Fma};
use crate::scalar::{self, fp8_shape};
use crate::Fp8Format;
use core::arch::x86_64::*;

/// See [`crate::Kernels::gemm_fp8`].
#[allow(clippy::too_many_arguments)]
pub fn gemm_fp8(
    _: Avx2Fma,
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
        x_scaled: None,
    };
    // SAFETY: the token proves avx2+fma+f16c; fp8_shape checked the layout and the scales.
    unsafe {
        match format {
            Fp8Format::E4M3 => gemm_imp::<true>(&p, rows, out),
            Fp8Format::E5M2 => gemm_imp::<false>(&p, rows, out),
        }
    }
}

#[derive(Clone, Copy)]
struct Fp8<'a> {
    w: &'a [u8],
    scales: &'a [f32],
    block_k: usize,
    blocks: usize,
    k: usize,
    x: &'a [f32],
    n_tok: usize,
    /// One E4M3 token's inputs times 2¹¹², when it runs on the integer decode ([`gemv_int`]).
    x_scaled: Option<&'a [f32]>,
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn gemm_imp<const E4M3: bool>(p: &Fp8<'_>, rows: usize, out: &mut [f32]) {
    // A server step's running sequences (2 to 8 tokens): tiles as wide in tokens as 16 ymm
    // registers allow at 2 accumulators per (row, token), so each row is decoded once or twice
    // rather than once per 2 tokens. Measured (`few_tokens` bench, e4m3 2560 → 9728 from DRAM,
    // Zen 4): 4 tokens 3.3 → 5.4 GiB/s, 8 tokens 2.0 → 2.5-2.7; 9 to 12 tokens as two tiles a
    // row: 9 tokens 2.0 → 2.5, 12 tokens 1.6 → 1.8.
    // SAFETY (every arm): the tokens exist and the caller checked the shapes.
    if E4M3 && p.n_tok == 1 {
        // SAFETY: the caller's contract.
        return unsafe { gemv_int(p, rows, out) };
    }
    unsafe {
        match p.n_tok {
            1 => passes::<E4M3, 4, 1>(p, rows, out),
            2 => passes::<E4M3, 3, 2>(p, rows, out),
            3 => passes::<E4M3, 2, 3>(p, rows, out),
            4 | 8 => passes::<E4M3, 1, 4>(p, rows, out),
            5 => passes::<E4M3, 1, 5>(p, rows, out),
            6 | 7 => passes::<E4M3, 1, 6>(p, rows, out),
            9 => passes_two::<E4M3, 1, 5, 4>(p, rows, out),
            10 => passes_two::<E4M3, 1, 5, 5>(p, rows, out),
            11 => passes_two::<E4M3, 1, 6, 5>(p, rows, out),
            12 => passes_two::<E4M3, 1, 6, 6>(p, rows, out),
            _ => passes::<E4M3, 2, 2>(p, rows, out),
        }
    }
}

/// One E4M3 token on the integer decode ([`fma16_int`]) when its inputs times 2¹¹² stay finite,
/// else on the f16 decode: the same bits either way.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn gemv_int(p: &Fp8<'_>, rows: usize, out: &mut [f32]) {
    crate::x86::few::with_scratch(p.k, |xs| {
        // SAFETY: the caller's contract; xs holds k floats.
        let fits = unsafe { scale_inputs(p.x, xs) };
        let p = Fp8 {
            x_scaled: fits.then_some(&xs[..]),
            ..*p
        };
        // SAFETY: the caller's contract.
        unsafe { passes::<true, 4, 1>(&p, rows, out) }
    })
}

/// `dst = x · 2¹¹²` (exact: a power of two), and whether every `|x| < 2¹⁶`, so that no
/// product overflowed (a NaN input answers false too).
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn scale_inputs(x: &[f32], dst: &mut [f32]) -> bool {
    let two_112 = f32::from_bits((127 + 112) << 23);
    let mut ok = true;
    let mut i = 0;
    // SAFETY: loads and stores of 8 floats at i < len - 7 of x and dst (same length).
    unsafe {
        let (scale, limit) = (_mm256_set1_ps(two_112), _mm256_set1_ps(65536.0));
        let abs = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fff_ffff));
        let mut small = _mm256_castsi256_ps(_mm256_set1_epi32(-1));
        while i + 8 <= x.len() {
            let v = _mm256_loadu_ps(x.as_ptr().add(i));
            _mm256_storeu_ps(dst.as_mut_ptr().add(i), _mm256_mul_ps(v, scale));
            let lt = _mm256_cmp_ps::<_CMP_LT_OQ>(_mm256_and_ps(v, abs), limit);
            small = _mm256_and_ps(small, lt);
            i += 8;
        }
        ok &= _mm256_movemask_ps(small) == 0xff;
    }
    for (d, &v) in dst[i..].iter_mut().zip(&x[i..]) {
        *d = v * two_112;
        ok &= v.abs() < 65536.0;
    }
    ok
}

/// Every row in passes of `R` rows, then one by one, each pass one tile of `T1` tokens and one
/// of `T2` (9 to 12 tokens: decodes beside a prompt chunk), so each row is decoded twice.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn passes_two<const E4M3: bool, const R: usize, const T1: usize, const T2: usize>(
    p: &Fp8<'_>,
    rows: usize,
    out: &mut [f32],
) {
    debug_assert_eq!(p.n_tok, T1 + T2);
    let mut r = 0;
    // SAFETY (all calls): rows r.. and tokens 0..T1, T1..T1+T2 exist; the caller checked the
    // shapes.
    while r + R <= rows {
        unsafe {
            tile::<E4M3, R, T1>(p, r, 0, out);
            tile::<E4M3, R, T2>(p, r, T1, out);
        }
        r += R;
    }
    while r < rows {
        unsafe {
            tile::<E4M3, 1, T1>(p, r, 0, out);
            tile::<E4M3, 1, T2>(p, r, T1, out);
        }
        r += 1;
    }
}

/// Every row in passes of `R` rows, then one by one, `T` tokens to a tile.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn passes<const E4M3: bool, const R: usize, const T: usize>(
    p: &Fp8<'_>,
    rows: usize,
    out: &mut [f32],
) {
    let mut r = 0;
    // SAFETY (all calls): rows r.. and the tokens exist; the caller checked the shapes.
    while r + R <= rows {
        unsafe { row_pass::<E4M3, R, T>(p, r, out) };
        r += R;
    }
    while r < rows {
        unsafe { row_pass::<E4M3, 1, T>(p, r, out) };
        r += 1;
    }
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
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

/// 16 codes at `c` as two vectors of 8 f32 (unscaled; E4M3 is `2⁻⁸` times its value), and
/// whether one of them is an E4M3 NaN (a bit per code).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn decode16<const E4M3: bool>(c: *const u8) -> (__m256, __m256, i32) {
    // SAFETY: the caller guarantees 16 readable bytes and the level.
    let v = unsafe { _mm_loadu_si128(c.cast()) };
    let nan = if E4M3 {
        _mm_movemask_epi8(_mm_cmpeq_epi8(
            _mm_or_si128(v, _mm_set1_epi8(-128)),
            _mm_set1_epi8(-1),
        ))
    } else {
        0
    };
    // SAFETY: the caller guarantees the level.
    let (lo, hi) = unsafe { widen16::<E4M3>(v) };
    (lo, hi, nan)
}

/// The 16 codes of `v` as two vectors of 8 f32, as [`decode16`] without the NaN check.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn widen16<const E4M3: bool>(v: __m128i) -> (__m256, __m256) {
    let h = if E4M3 {
        let h = _mm256_slli_epi16::<7>(_mm256_cvtepi8_epi16(v));
        _mm256_and_si256(h, _mm256_set1_epi16(0xbf80_u16 as i16))
    } else {
        _mm256_slli_epi16::<8>(_mm256_cvtepu8_epi16(v))
    };
    let lo = _mm256_cvtph_ps(_mm256_castsi256_si128(h));
    let hi = _mm256_cvtph_ps(_mm256_extracti128_si256::<1>(h));
    (lo, hi)
}

/// The first token tile over rows `r0..r0+R` (all of decode), at every 64th input: fetches the
/// next pass's rows one pass ahead (rows of a few KB side by side are too short for the hardware
/// prefetcher to train on); later token tiles find the rows in cache.
#[inline(always)]
fn prefetch_next_pass<const R: usize>(wp: *const u8, r0: usize, t0: usize, k: usize, j: usize) {
    if t0 == 0 && j.is_multiple_of(64) {
        for i in 0..R {
            let at = wp.wrapping_add((r0 + R + i) * k + j);
            // SAFETY: SSE is part of x86_64, and a prefetch never faults, whatever the address.
            unsafe { _mm_prefetch::<_MM_HINT_T0>(at.cast()) };
        }
    }
}

/// Adds the 16 codes of `v` times each token's 16 inputs into `bacc`: token `t`'s at `x + t·k`.
///
/// # Safety
/// The CPU has AVX2+FMA+F16C, and `x + t·k .. + 16` is readable for every `t < T`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn fma16<const E4M3: bool, const T: usize>(
    v: __m128i,
    x: *const f32,
    k: usize,
    bacc: &mut [__m256; T],
) {
    // SAFETY: the caller guarantees the level and the inputs.
    unsafe {
        let (lo, hi) = widen16::<E4M3>(v);
        for (t, acc) in bacc.iter_mut().enumerate() {
            let xr = x.add(t * k);
            *acc = _mm256_fmadd_ps(lo, _mm256_loadu_ps(xr), *acc);
            *acc = _mm256_fmadd_ps(hi, _mm256_loadu_ps(xr.add(8)), *acc);
        }
    }
}

/// [`fma16`] for E4M3 on the integer decode: code `c` sign-extended, shifted left by 20 and
/// masked to `0x87f0_0000` is the f32 worth exactly `2⁻¹²⁰` times its value (normals and
/// subnormals alike), and the inputs at `x` are `2¹¹²` times the token's, so each product is
/// the f16 decode's `(2⁻⁸·w)·x` exactly.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn fma16_int<const T: usize>(c: *const u8, x: *const f32, k: usize, bacc: &mut [__m256; T]) {
    // SAFETY: the caller guarantees the level, 16 codes at c and the inputs.
    unsafe {
        let m = _mm256_set1_epi32(0x87f0_0000_u32 as i32);
        let lo = _mm256_cvtepi8_epi32(_mm_loadl_epi64(c.cast()));
        let hi = _mm256_cvtepi8_epi32(_mm_loadl_epi64(c.add(8).cast()));
        let lo = _mm256_castsi256_ps(_mm256_and_si256(_mm256_slli_epi32::<20>(lo), m));
        let hi = _mm256_castsi256_ps(_mm256_and_si256(_mm256_slli_epi32::<20>(hi), m));
        for (t, acc) in bacc.iter_mut().enumerate() {
            let xr = x.add(t * k);
            *acc = _mm256_fmadd_ps(lo, _mm256_loadu_ps(xr), *acc);
            *acc = _mm256_fmadd_ps(hi, _mm256_loadu_ps(xr.add(8)), *acc);
        }
    }
}

/// One `R × T` output tile.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
#[allow(clippy::needless_range_loop)] // index loops over the register tile read clearer here
unsafe fn tile<const E4M3: bool, const R: usize, const T: usize>(
    p: &Fp8<'_>,
    r0: usize,
    t0: usize,
    out: &mut [f32],
) {
    // SAFETY (both calls): the caller's contract.
    match p.x_scaled {
        // The integer decode is E4M3's, for one token (`gemv_int`).
        Some(xs) if E4M3 && T == 1 => unsafe { tile_with::<true, R, 1, true>(p, xs, r0, t0, out) },
        _ => unsafe { tile_with::<E4M3, R, T, false>(p, p.x, r0, t0, out) },
    }
}

/// [`tile`], the vector loops reading their inputs from `xv` (`p.x`, or `p.x · 2¹¹²` for the
/// integer decode, `INT`); the scalar tail reads `p.x`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
#[allow(clippy::needless_range_loop)]
unsafe fn tile_with<const E4M3: bool, const R: usize, const T: usize, const INT: bool>(
    p: &Fp8<'_>,
    xv: &[f32],
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
    let (wp, xp) = (p.w.as_ptr(), xv.as_ptr());
    let mut acc = [[_mm256_setzero_ps(); T]; R];
    let mut tail = [[0f32; T]; R];
    let mut nan = [_mm_setzero_si128(); R];
    let low7 = _mm_set1_epi8(0x7f);
    let low7_32 = _mm256_set1_epi8(0x7f);
    let mut nan32 = [_mm256_setzero_si256(); R];
    let (mut s, mut s0) = (0, 0);
    while s0 < k {
        let s1 = (s0 + p.block_k).min(k);
        let mut bacc = [[_mm256_setzero_ps(); T]; R];
        let mut btail = [[0f32; T]; R];
        let mut j = s0;
        // `code & 0x7f` is 0x7f only for NaN: a running byte maximum finds one. In 32-code steps
        // the check reads the codes again as one 32-byte load (a load port is free; the vector
        // ALUs are not): one and + max per 32 codes.
        while j + 32 <= s1 {
            prefetch_next_pass::<R>(wp, r0, t0, k, j);
            for i in 0..R {
                // SAFETY: (r0+i, j..j+32) is inside w; tokens t0+t have x[j..j+32].
                unsafe {
                    let c = wp.add((r0 + i) * k + j);
                    if E4M3 {
                        let v = _mm256_loadu_si256(c.cast());
                        nan32[i] = _mm256_max_epu8(nan32[i], _mm256_and_si256(v, low7_32));
                    }
                    for h in 0..2 {
                        if INT {
                            fma16_int::<T>(
                                c.add(16 * h),
                                xp.add(t0 * k + j + 16 * h),
                                k,
                                &mut bacc[i],
                            );
                        } else {
                            let v = _mm_loadu_si128(c.add(16 * h).cast());
                            fma16::<E4M3, T>(v, xp.add(t0 * k + j + 16 * h), k, &mut bacc[i]);
                        }
                    }
                }
            }
            j += 32;
        }
        while j + 16 <= s1 {
            prefetch_next_pass::<R>(wp, r0, t0, k, j);
            for i in 0..R {
                // SAFETY: (r0+i, j..j+16) is inside w; tokens t0+t have x[j..j+16].
                unsafe {
                    let v = _mm_loadu_si128(wp.add((r0 + i) * k + j).cast());
                    if E4M3 {
                        nan[i] = _mm_max_epu8(nan[i], _mm_and_si128(v, low7));
                    }
                    if INT {
                        fma16_int::<T>(
                            wp.add((r0 + i) * k + j),
                            xp.add(t0 * k + j),
                            k,
                            &mut bacc[i],
                        );
                    } else {
                        fma16::<E4M3, T>(v, xp.add(t0 * k + j), k, &mut bacc[i]);
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
            let sv = _mm256_set1_ps(if E4M3 { scale * 256.0 } else { scale });
            for t in 0..T {
                acc[i][t] = _mm256_fmadd_ps(bacc[i][t], sv, acc[i][t]);
                tail[i][t] += btail[i][t] * scale;
            }
        }
        s0 = s1;
        s += 1;
    }
    for i in 0..R {
        for t in 0..T {
            // SAFETY: this function runs inside the avx2 target feature.
            let v = unsafe { hsum(acc[i][t]) } + tail[i][t];
            let nan = _mm_max_epu8(
                nan[i],
                _mm_max_epu8(
                    _mm256_castsi256_si128(nan32[i]),
                    _mm256_extracti128_si256::<1>(nan32[i]),
                ),
            );
            let has_nan = _mm_movemask_epi8(_mm_cmpeq_epi8(nan, low7)) != 0;
            out[(r0 + i) * n_tok + t0 + t] = if has_nan { f32::NAN } else { v };
        }
    }
}
