//! AVX2 integer-dot matmuls over the row-interleaved tiles of [`crate::q8`].
//!
//! A 64-byte chunk is two 256-bit halves (rows 0–7 and 8–15). `vpmaddubsw` multiplies unsigned
//! weight bytes by the broadcast signed activation bytes and adds adjacent pairs into i16;
//! `vpmaddwd` by ones then sums the pairs into one i32 per row. q4: a pair is at most
//! `2·15·128 = 3840`, so the i16 sums of a whole 32-input block (8 pairs per lane) stay below
//! 30720 and `vpmaddwd` runs once per block. q8: weights are signed, so the sign moves onto the
//! activations (`|w|` × `sign(x, w)`, ggml's trick); a pair is at most `2·128·127 = 32512`, so the
//! widening runs once per chunk.
//!
//! Decode runs `q4_tile` (1–2 tokens, both halves of a tile at once); prefill runs
//! `q4_half_wide`, 6 tokens per pass over one 8-row half (~1.1× in a one-core microbenchmark,
//! 96 × 2560 weights × 128 tokens: 85 vs 79 G multiply-adds/s). Not one kernel for both: at
//! 1–2 tokens the half passes broadcast each activation twice, and `q4_half_wide` ran decode
//! shapes ~25% slower (2560 × 9728 from L3, 1 token: 29 vs 38).
//!
//! The decode kernels (`q4_tile`, `q8_tile`) prefetch [`crate::q8::PREFETCH_AHEAD`] bytes ahead.

use super::Avx2Fma;
use crate::q8::{
    prefetch_ahead, q4x16_shape, q8x16_shape, quantize_shape, store_tile_result, Q8Acts,
    CHUNK_BYTES, TILE_ROWS,
};
use core::arch::x86_64::*;

const T: usize = 2;
/// Tokens per pass of [`q4_half_wide`] (prefill).
const WIDE: usize = 6;

/// See [`crate::Kernels::gemm_q4x16_q8`].
pub fn gemm_q4x16_q8(
    _: Avx2Fma,
    w: &[u8],
    scales: &[f32],
    zero_scaled: &[f32],
    group: usize,
    x: &Q8Acts,
    out: &mut [f32],
) {
    let (rows, _, groups) = q4x16_shape(w, scales, zero_scaled, group, x, out);
    let tile_bytes = x.k / 8 * CHUNK_BYTES;
    let pb = groups * TILE_ROWS;
    for (tile, r0) in (0..rows).step_by(TILE_ROWS).enumerate() {
        let live = (rows - r0).min(TILE_ROWS);
        let tw = &w[tile * tile_bytes..(tile + 1) * tile_bytes];
        let (ts, tz) = (
            &scales[tile * pb..(tile + 1) * pb],
            &zero_scaled[tile * pb..(tile + 1) * pb],
        );
        let mut t0 = 0;
        while t0 < x.n_tok {
            let mut res = [[0f32; TILE_ROWS]; WIDE];
            // One pass for every token up to WIDE: a pass re-unpacks the tile's nibbles, so 3
            // tokens as 2 + 1 cost almost two passes' work (the server's steps are mostly such
            // counts: one token per stream plus a few prompt tokens).
            let n = (x.n_tok - t0).min(WIDE);
            // SAFETY: the token proves avx2+fma; q4x16_shape checked the tile, its parameters and
            // tokens t0...
            unsafe {
                match n {
                    1 => q4_tile::<1>(tw, ts, tz, group, x, t0, &mut res),
                    2 => q4_tile::<T>(tw, ts, tz, group, x, t0, &mut res),
                    _ => {
                        for half in 0..2 {
                            match n {
                                3 => q4_half_wide::<3>(tw, ts, tz, group, x, t0, half, &mut res),
                                4 => q4_half_wide::<4>(tw, ts, tz, group, x, t0, half, &mut res),
                                5 => q4_half_wide::<5>(tw, ts, tz, group, x, t0, half, &mut res),
                                _ => q4_half_wide::<WIDE>(tw, ts, tz, group, x, t0, half, &mut res),
                            }
                        }
                    }
                }
            }
            store_tile_result(&res[..n], live, out, x.n_tok, r0, t0);
            t0 += n;
        }
    }
}

/// Tokens `t0..t0+N` of one q4x16 tile into `res[t][row]`.
///
/// # Safety
/// AVX2+FMA are available; the tile has `x.k/8` chunks and `k/group` parameter rows; tokens
/// `t0..t0+N` exist in `x`; `x.block <= 32` (the i16 bound in the module docs).
#[target_feature(enable = "avx2,fma,f16c")]
#[allow(clippy::needless_range_loop, clippy::too_many_arguments)]
unsafe fn q4_tile<const N: usize>(
    w: &[u8],
    s: &[f32],
    z: &[f32],
    group: usize,
    x: &Q8Acts,
    t0: usize,
    res: &mut [[f32; TILE_ROWS]; WIDE],
) {
    let (k, block) = (x.k, x.block);
    let (blocks, groups, per_group) = (k / block, k / group, group / block);
    let mask = _mm256_set1_epi8(0x0f);
    let ones = _mm256_set1_epi16(1);
    let wp = w.as_ptr();
    let xq = x.xq.as_ptr();
    let mut acc = [[_mm256_setzero_ps(); 2]; N];
    let mut c = 0;
    for g in 0..groups {
        let mut ga = [[_mm256_setzero_ps(); 2]; N];
        for b in g * per_group..(g + 1) * per_group {
            let mut a16 = [[_mm256_setzero_si256(); 2]; N];
            for _ in 0..block / 8 {
                prefetch_ahead(wp, c);
                for h in 0..2 {
                    // SAFETY: chunk c < k/8 of the tile; bytes 8c..8c+8 of each token row exist.
                    unsafe {
                        let v = _mm256_loadu_si256(wp.add(c * CHUNK_BYTES + 32 * h).cast());
                        let ql = _mm256_and_si256(v, mask);
                        let qh = _mm256_and_si256(_mm256_srli_epi16::<4>(v), mask);
                        for t in 0..N {
                            let xp = xq.add((t0 + t) * k + 8 * c);
                            let xl = _mm256_set1_epi32(xp.cast::<i32>().read_unaligned());
                            let xh = _mm256_set1_epi32(xp.add(4).cast::<i32>().read_unaligned());
                            let pair = _mm256_add_epi16(
                                _mm256_maddubs_epi16(ql, xl),
                                _mm256_maddubs_epi16(qh, xh),
                            );
                            a16[t][h] = _mm256_add_epi16(a16[t][h], pair);
                        }
                    }
                }
                c += 1;
            }
            for t in 0..N {
                // SAFETY: block b of token t0+t exists.
                let sx = _mm256_set1_ps(unsafe { *x.xs.get_unchecked((t0 + t) * blocks + b) });
                for h in 0..2 {
                    let dot = _mm256_cvtepi32_ps(_mm256_madd_epi16(a16[t][h], ones));
                    ga[t][h] = _mm256_fmadd_ps(dot, sx, ga[t][h]);
                }
            }
        }
        for h in 0..2 {
            // SAFETY: parameter row g of the tile holds 16 floats.
            let (sv, zv) = unsafe {
                (
                    _mm256_loadu_ps(s.as_ptr().add(g * TILE_ROWS + 8 * h)),
                    _mm256_loadu_ps(z.as_ptr().add(g * TILE_ROWS + 8 * h)),
                )
            };
            for t in 0..N {
                // SAFETY: group g of token t0+t exists.
                let gs = unsafe { *x.gsum.get_unchecked((t0 + t) * groups + g) };
                acc[t][h] = _mm256_fmadd_ps(sv, ga[t][h], acc[t][h]);
                acc[t][h] = _mm256_fnmadd_ps(zv, _mm256_set1_ps(gs), acc[t][h]);
            }
        }
    }
    for t in 0..N {
        for h in 0..2 {
            // SAFETY: res[t] holds 16 floats.
            unsafe { _mm256_storeu_ps(res[t].as_mut_ptr().add(8 * h), acc[t][h]) };
        }
    }
}

/// Tokens `t0..t0+N` of rows `8·half..8·half+8` of one q4x16 tile into `res[t][row]`, for
/// many tokens: both nibble halves of a chunk go into one i16 accumulator per token (the same
/// block bound as in [`q4_tile`]), the chunk's unpacking is shared by `N` tokens and the outputs
/// stay in `res` between groups, so 16 registers hold `N` = 6 tokens' integer and block
/// accumulators. Same float operations in the same order as [`q4_tile`] and the scalar twin.
///
/// # Safety
/// As [`q4_tile`]; `half` is 0 or 1.
#[target_feature(enable = "avx2,fma,f16c")]
#[allow(clippy::needless_range_loop, clippy::too_many_arguments)]
unsafe fn q4_half_wide<const N: usize>(
    w: &[u8],
    s: &[f32],
    z: &[f32],
    group: usize,
    x: &Q8Acts,
    t0: usize,
    half: usize,
    res: &mut [[f32; TILE_ROWS]; WIDE],
) {
    let (k, block) = (x.k, x.block);
    let (blocks, groups, per_group) = (k / block, k / group, group / block);
    let mask = _mm256_set1_epi8(0x0f);
    let ones = _mm256_set1_epi16(1);
    // SAFETY: the half's bytes start 32·half into the first chunk; token t0's row exists.
    let (wp, xq) = unsafe { (w.as_ptr().add(32 * half), x.xq.as_ptr().add(t0 * k)) };
    for r in res[..N].iter_mut() {
        r[8 * half..8 * half + 8].fill(0.0);
    }
    let mut c = 0;
    for g in 0..groups {
        let mut ga = [_mm256_setzero_ps(); N];
        for b in g * per_group..(g + 1) * per_group {
            let mut a16 = [_mm256_setzero_si256(); N];
            for _ in 0..block / 8 {
                // SAFETY: chunk c < k/8 of the tile; bytes 8c..8c+8 of each token row exist.
                unsafe {
                    let v = _mm256_loadu_si256(wp.add(c * CHUNK_BYTES).cast());
                    let ql = _mm256_and_si256(v, mask);
                    let qh = _mm256_and_si256(_mm256_srli_epi16::<4>(v), mask);
                    for t in 0..N {
                        let xp = xq.add(t * k + 8 * c);
                        let xl = _mm256_set1_epi32(xp.cast::<i32>().read_unaligned());
                        let xh = _mm256_set1_epi32(xp.add(4).cast::<i32>().read_unaligned());
                        a16[t] = _mm256_add_epi16(a16[t], _mm256_maddubs_epi16(ql, xl));
                        a16[t] = _mm256_add_epi16(a16[t], _mm256_maddubs_epi16(qh, xh));
                    }
                }
                c += 1;
            }
            for t in 0..N {
                // SAFETY: block b of token t0+t exists.
                let sx = _mm256_set1_ps(unsafe { *x.xs.get_unchecked((t0 + t) * blocks + b) });
                let dot = _mm256_cvtepi32_ps(_mm256_madd_epi16(a16[t], ones));
                ga[t] = _mm256_fmadd_ps(dot, sx, ga[t]);
            }
        }
        // SAFETY: parameter row g of the tile holds 16 floats.
        let (sv, zv) = unsafe {
            (
                _mm256_loadu_ps(s.as_ptr().add(g * TILE_ROWS + 8 * half)),
                _mm256_loadu_ps(z.as_ptr().add(g * TILE_ROWS + 8 * half)),
            )
        };
        for t in 0..N {
            // SAFETY: group g of token t0+t exists; res[t] holds 16 floats.
            unsafe {
                let gs = *x.gsum.get_unchecked((t0 + t) * groups + g);
                let r = res[t].as_mut_ptr().add(8 * half);
                let acc = _mm256_fmadd_ps(sv, ga[t], _mm256_loadu_ps(r));
                _mm256_storeu_ps(r, _mm256_fnmadd_ps(zv, _mm256_set1_ps(gs), acc));
            }
        }
    }
}

/// See [`crate::Kernels::gemm_q8x16_q8`].
pub fn gemm_q8x16_q8(_: Avx2Fma, w: &[i8], scales: &[f32], x: &Q8Acts, out: &mut [f32]) {
    let (rows, _) = q8x16_shape(w, scales, x, out);
    let tile_bytes = x.k / 4 * CHUNK_BYTES;
    for (tile, r0) in (0..rows).step_by(TILE_ROWS).enumerate() {
        let live = (rows - r0).min(TILE_ROWS);
        let tw = &w[tile * tile_bytes..(tile + 1) * tile_bytes];
        let ts = &scales[tile * TILE_ROWS..(tile + 1) * TILE_ROWS];
        let mut t0 = 0;
        while t0 < x.n_tok {
            let mut res = [[0f32; TILE_ROWS]; T];
            let n = (x.n_tok - t0).min(T);
            // SAFETY: the token proves avx2+fma; q8x16_shape checked the tile, its scales and
            // tokens t0...
            unsafe {
                if n == T {
                    q8_tile::<T>(tw, ts, x, t0, &mut res);
                } else {
                    q8_tile::<1>(tw, ts, x, t0, &mut res);
                }
            }
            store_tile_result(&res[..n], live, out, x.n_tok, r0, t0);
            t0 += n;
        }
    }
}

/// # Safety
/// As [`q4_tile`], for a q8x16 tile of `x.k/4` chunks and 16 scales.
#[target_feature(enable = "avx2,fma,f16c")]
#[allow(clippy::needless_range_loop)]
unsafe fn q8_tile<const N: usize>(
    w: &[i8],
    scales: &[f32],
    x: &Q8Acts,
    t0: usize,
    res: &mut [[f32; TILE_ROWS]; T],
) {
    let (k, block) = (x.k, x.block);
    let blocks = k / block;
    let ones = _mm256_set1_epi16(1);
    let wp = w.as_ptr();
    let xq = x.xq.as_ptr();
    let mut acc = [[_mm256_setzero_ps(); 2]; N];
    let mut c = 0;
    for b in 0..blocks {
        let mut d = [[_mm256_setzero_si256(); 2]; N];
        for _ in 0..block / 4 {
            prefetch_ahead(wp, c);
            for h in 0..2 {
                // SAFETY: chunk c < k/4 of the tile; bytes 4c..4c+4 of each token row exist.
                unsafe {
                    let v = _mm256_loadu_si256(wp.add(c * CHUNK_BYTES + 32 * h).cast());
                    let av = _mm256_abs_epi8(v);
                    for t in 0..N {
                        let xp = xq.add((t0 + t) * k + 4 * c);
                        let xv = _mm256_set1_epi32(xp.cast::<i32>().read_unaligned());
                        let p16 = _mm256_maddubs_epi16(av, _mm256_sign_epi8(xv, v));
                        d[t][h] = _mm256_add_epi32(d[t][h], _mm256_madd_epi16(p16, ones));
                    }
                }
            }
            c += 1;
        }
        for t in 0..N {
            // SAFETY: block b of token t0+t exists.
            let sx = _mm256_set1_ps(unsafe { *x.xs.get_unchecked((t0 + t) * blocks + b) });
            for h in 0..2 {
                acc[t][h] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(d[t][h]), sx, acc[t][h]);
            }
        }
    }
    for h in 0..2 {
        // SAFETY: the tile has 16 scales.
        let s = unsafe { _mm256_loadu_ps(scales.as_ptr().add(8 * h)) };
        for t in 0..N {
            // SAFETY: res[t] holds 16 floats.
            unsafe {
                _mm256_storeu_ps(res[t].as_mut_ptr().add(8 * h), _mm256_mul_ps(acc[t][h], s))
            };
        }
    }
}

/// See [`crate::Kernels::quantize_q8`]: 8 inputs per vector, the same operations as the scalar
/// twin (`vmaxps` with the running maximum second ignores NaN as `f32::max` does; `vroundps` to
/// nearest is ties-to-even), so the same bits.
pub fn quantize_q8(
    _: Avx2Fma,
    x: &[f32],
    block: usize,
    xq: &mut [i8],
    xs: &mut [f32],
    isum: &mut [i32],
) {
    quantize_shape(x, block, xq, xs, isum);
    // SAFETY: the token proves avx2; quantize_shape checked the lengths and that `block` is
    // 8, 16 or 32.
    unsafe {
        match block {
            8 => quantize_q8_imp::<1>(x, xq, xs, isum),
            16 => quantize_q8_imp::<2>(x, xq, xs, isum),
            _ => quantize_q8_imp::<4>(x, xq, xs, isum),
        }
    }
}

/// Blocks of `8·PER` inputs.
///
/// # Safety
/// AVX2 is available; the lengths are as `quantize_shape` checks for `block = 8·PER`.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn quantize_q8_imp<const PER: usize>(
    x: &[f32],
    xq: &mut [i8],
    xs: &mut [f32],
    isum: &mut [i32],
) {
    let sign = _mm256_set1_ps(-0.0);
    let (lo, hi) = (_mm256_set1_ps(-127.0), _mm256_set1_ps(127.0));
    let block = 8 * PER;
    for b in 0..xs.len() {
        let mut v = [_mm256_setzero_ps(); PER];
        let mut m = _mm256_setzero_ps();
        for (j, v) in v.iter_mut().enumerate() {
            // SAFETY: inputs b·block + 8j .. +8 exist (whole blocks).
            *v = unsafe { _mm256_loadu_ps(x.as_ptr().add(b * block + 8 * j)) };
            m = _mm256_max_ps(_mm256_andnot_ps(sign, *v), m);
        }
        let m = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps::<1>(m));
        let m = _mm_max_ps(m, _mm_movehl_ps(m, m));
        let amax = _mm_cvtss_f32(_mm_max_ss(m, _mm_movehdup_ps(m)));
        let inv = _mm256_set1_ps(if amax > 0.0 { 127.0 / amax } else { 0.0 });
        let mut sum = _mm256_setzero_si256();
        for (j, v) in v.iter().enumerate() {
            let r = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
                _mm256_mul_ps(*v, inv),
            );
            let r = _mm256_and_ps(r, _mm256_cmp_ps::<_CMP_ORD_Q>(r, r));
            let q = _mm256_cvtps_epi32(_mm256_min_ps(_mm256_max_ps(r, lo), hi));
            sum = _mm256_add_epi32(sum, q);
            let q16 = _mm_packs_epi32(_mm256_castsi256_si128(q), _mm256_extracti128_si256::<1>(q));
            // SAFETY: codes b·block + 8j .. +8 exist.
            unsafe {
                _mm_storel_epi64(
                    xq.as_mut_ptr().add(b * block + 8 * j).cast(),
                    _mm_packs_epi16(q16, q16),
                )
            };
        }
        let s = _mm_add_epi32(
            _mm256_castsi256_si128(sum),
            _mm256_extracti128_si256::<1>(sum),
        );
        let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b01_00_11_10>(s));
        let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b10_11_00_01>(s));
        xs[b] = amax / 127.0;
        isum[b] = _mm_cvtsi128_si32(s);
    }
}
