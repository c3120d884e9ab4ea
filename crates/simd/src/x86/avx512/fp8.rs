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
//! Tiles: 4 rows × 1 token for decode (4 block + 4 total accumulators, 4 weight streams), one
//! tile over all of 2 to 8 tokens (a server step), two a row pass for 9 to 15, 4 rows × 3
//! tokens for more (24 accumulators).
//!
//! Decode on CPUs with VBMI (Ice Lake and later, Zen 4) takes another route, [`gemv_table`]:
//! bf16 patterns looked up with `vpermi2b`, 10 ops per 64 codes instead of 22, and a software
//! prefetch of the next rows, summing in the tiles' order (a lone token gets the same bits as in a
//! batch).

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
    if p.n_tok == 1
        && p.k.is_multiple_of(64)
        && p.block_k.is_multiple_of(64)
        && is_x86_feature_detected!("avx512vbmi")
    {
        // SAFETY: the feature check adds VBMI to the level; the caller checked the shapes.
        return unsafe { gemv_table::<E4M3>(p, rows, out) };
    }
    // A server step's running sequences (2 to 8 tokens) get one tile that covers every token,
    // so each row is decoded once (the 4 × 3 tile decoded an 8-token step's rows four times),
    // with as many rows as 32 zmm registers hold: 2 accumulators per (row, token). 8 tokens run
    // as two 3 × 4 tiles: a 1 × 8 tile re-reads all 8 tokens' activations (80 KB at Qwen3's
    // 2560 inputs, past L1) for every row. Measured (`few_tokens` bench, e4m3 2560 → 9728
    // from DRAM, Zen 4): 4 tokens 4.9 → 7.8 GiB/s, 8 tokens 2.5 → 3.4 (2.5 as 1 × 8). 9 to 15
    // tokens (decodes beside a prompt chunk) run two tiles a row pass: 9 tokens 1.8 → 3.3, 12
    // tokens 1.4 → 2.6, 13 tokens 1.2 → 1.5 (one row a pass: two rows would not fit).
    // SAFETY (every arm): the tokens exist and the caller checked the shapes.
    unsafe {
        match p.n_tok {
            1 => passes::<E4M3, 4, 1>(p, rows, out),
            2 => passes::<E4M3, 6, 2>(p, rows, out),
            4 => passes::<E4M3, 3, 4>(p, rows, out),
            5 => passes::<E4M3, 2, 5>(p, rows, out),
            6 => passes::<E4M3, 2, 6>(p, rows, out),
            7 => passes::<E4M3, 2, 7>(p, rows, out),
            8 => passes::<E4M3, 3, 4>(p, rows, out),
            9 => passes_two::<E4M3, 2, 5, 4>(p, rows, out),
            10 => passes_two::<E4M3, 2, 5, 5>(p, rows, out),
            11 => passes_two::<E4M3, 2, 6, 5>(p, rows, out),
            12 => passes_two::<E4M3, 2, 6, 6>(p, rows, out),
            13 => passes_two::<E4M3, 1, 7, 6>(p, rows, out),
            14 => passes_two::<E4M3, 1, 7, 7>(p, rows, out),
            15 => passes_two::<E4M3, 1, 8, 7>(p, rows, out),
            _ => passes::<E4M3, 4, 3>(p, rows, out),
        }
    }
}

/// Every row in passes of `R` rows, then one by one, each pass one tile of `T1` tokens and one
/// of `T2` (9 to 15 tokens: decodes beside a prompt chunk), so each row is decoded twice.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
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
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
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
            if t0 == 0 && j.is_multiple_of(64) {
                // Decode, and the first token tile of a few tokens: fetch the next pass's rows
                // one pass ahead (see `gemv_table`).
                for i in 0..R {
                    let at = wp.wrapping_add((r0 + R + i) * k + j);
                    _mm_prefetch::<_MM_HINT_T0>(at.cast());
                }
            }
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

/// bf16 bit pattern of FP8 code `c` (sign clear, 0..128): exact for every finite code, the
/// infinities for E5M2's, `0x7fc0` (a NaN) for NaN codes.
const fn fp8_bf16_bits(e4m3: bool, c: u8) -> u16 {
    // (exponent bits, mantissa bits, bias) of the format.
    let (mb, bias) = if e4m3 { (3u16, 7u16) } else { (2, 15) };
    let e = (c as u16) >> mb;
    let m = (c as u16) & ((1 << mb) - 1);
    if e4m3 && e == 15 && m == 7 {
        0x7fc0
    } else if !e4m3 && e == 31 {
        if m == 0 {
            0x7f80
        } else {
            0x7fc0
        }
    } else if e == 0 {
        // Subnormal m·2^(1−bias−mb): normalise around m's leading bit p.
        if m == 0 {
            0
        } else {
            let p = 15 - m.leading_zeros() as u16;
            ((p + 128 - bias - mb) << 7) | ((m - (1 << p)) << (7 - p))
        }
    } else {
        ((e + 127 - bias) << 7) | (m << (7 - mb))
    }
}

/// Low (`[0]`) and high (`[1]`) bytes of [`fp8_bf16_bits`] for codes 0..128.
const fn bf16_tables(e4m3: bool) -> [[u8; 128]; 2] {
    let mut t = [[0u8; 128]; 2];
    let mut c = 0;
    while c < 128 {
        let bits = fp8_bf16_bits(e4m3, c as u8);
        t[0][c] = (bits & 0xff) as u8;
        t[1][c] = (bits >> 8) as u8;
        c += 1;
    }
    t
}

const E4M3_BF16: [[u8; 128]; 2] = bf16_tables(true);
const E5M2_BF16: [[u8; 128]; 2] = bf16_tables(false);

/// What [`gemv_table`] decodes code `c` to, as f32 (for the test against `fp8_to_f32`).
#[cfg(test)]
fn table_decode(e4m3: bool, c: u8) -> f32 {
    let t = if e4m3 { &E4M3_BF16 } else { &E5M2_BF16 };
    let i = (c & 0x7f) as usize;
    let bits = u32::from(t[0][i]) | (u32::from(t[1][i] | (c & 0x80)) << 8);
    f32::from_bits(bits << 16)
}

/// The `vpermb` index that puts 64 codes in the order in which [`gemv_table`]'s in-lane byte
/// interleaves bring them back out in input order: the interleaves leave input `p` of the
/// chunk in f32 vector `v`, lane `4L + i` for `p = 16L + [0, 1, 8, 9][v] + 2i`, so the code
/// stored at `p` must be input `16v + 4L + i`.
const fn code_order() -> [u8; 64] {
    let first = [0usize, 1, 8, 9];
    let mut index = [0u8; 64];
    let mut v = 0;
    while v < 4 {
        let mut lane = 0;
        while lane < 4 {
            let mut i = 0;
            while i < 4 {
                index[16 * lane + first[v] + 2 * i] = (16 * v + 4 * lane + i) as u8;
                i += 1;
            }
            lane += 1;
        }
        v += 1;
    }
    index
}

const CODE_ORDER: [u8; 64] = code_order();

/// One token, `k` and `block_k` multiples of 64, on CPUs with VBMI: the decode-time GEMV.
///
/// Why: the f16-trick decode spends 11 ops per 32 codes (NaN check, widen, shift, mask, two
/// `vcvtph2ps` of 2 uops each) before its 2 FMAs, which makes FP8 decode compute-bound. Every
/// FP8 value (E4M3 and E5M2, subnormals, infinities, NaN) is exact in bf16, and a bf16 pattern
/// is an f32's high half. So per 64 codes: one `vpermb` reorders the codes ([`CODE_ORDER`]),
/// two `vpermi2b` look the low and high bytes of the bf16 pattern up in 128-entry tables
/// indexed by the code's low 7 bits, one `vpternlogd` ORs the code's sign in, and two byte
/// interleaves make each dword a pair of bf16 patterns. A pair's high word is one input's f32
/// once the low word is masked off, and the other input's f32 is the dword shifted left by 16:
/// 10 ops per 64 codes instead of 22, and NaN codes decode to NaN (no separate check). The
/// mask and shift run on two ports where word interleaves with zero (the first version) ran on
/// the one shuffle port with the byte lookups.
///
/// The reorder makes the four f32 vectors hold inputs `0..16`, `16..32`, `32..48`, `48..64` of
/// the chunk, summed in one accumulator per row and folded in with one FMA by the block's
/// scale: the tiles' order, so a lone token gets the same bits as the same token in a
/// multi-token call, and a server request's answer does not depend on who else is served.
/// (E4M3's tiles decode to `2⁻⁸` times the value and scale by `256·s`: the same real numbers,
/// so the same roundings, unless an intermediate falls below f32's normal range, which needs
/// inputs under ~2⁻¹⁰⁰.) Until the reorder, the inputs stayed permuted within 128-bit lanes
/// (the activations were permuted to match, per call) and two accumulators summed them:
/// outputs differed from the tiles' in the last bits. The `vpermb` costs nothing measurable
/// (one core, in L2, e4m3: 19.1/19.0 → 19.6/20.6 GiB/s, e5m2 19.2/18.8 → 18.9/18.4,
/// alternating runs; pairing with two cross-lane `vpermt2b` instead cost 11%).
///
/// Prefetch: a pass reads 4 rows of `k` bytes side by side, too short for the hardware stream
/// prefetcher to train on, so each pass prefetches the next pass's lines as it goes.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vbmi,avx2,fma,f16c")]
unsafe fn gemv_table<const E4M3: bool>(p: &Fp8<'_>, rows: usize, out: &mut [f32]) {
    let mut r = 0;
    // SAFETY (all calls): rows r..r+N exist; the caller proved the level and the shapes.
    while r + 4 <= rows {
        unsafe { gemv_table_rows::<E4M3, 4>(p, r, out) };
        r += 4;
    }
    while r < rows {
        unsafe { gemv_table_rows::<E4M3, 1>(p, r, out) };
        r += 1;
    }
}

#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vbmi,avx2,fma,f16c")]
#[allow(clippy::needless_range_loop)] // index loops over the register tile read clearer here
unsafe fn gemv_table_rows<const E4M3: bool, const N: usize>(
    p: &Fp8<'_>,
    r0: usize,
    out: &mut [f32],
) {
    // SAFETY (whole body): rows r0..r0+N of w and their scales exist; k and block_k are
    // multiples of 64 (checked by the caller), so every 64-byte chunk read is inside.
    unsafe {
        let t = if E4M3 { &E4M3_BF16 } else { &E5M2_BF16 };
        let lo0 = _mm512_loadu_si512(t[0].as_ptr().cast());
        let lo1 = _mm512_loadu_si512(t[0].as_ptr().add(64).cast());
        let hi0 = _mm512_loadu_si512(t[1].as_ptr().cast());
        let hi1 = _mm512_loadu_si512(t[1].as_ptr().add(64).cast());
        let order = _mm512_loadu_si512(CODE_ORDER.as_ptr().cast());
        let sign = _mm512_set1_epi8(-128);
        let high = _mm512_set1_epi32(-65536);
        let (wp, xp) = (p.w.as_ptr(), p.x.as_ptr());
        let (k, chunks, per_block) = (p.k, p.k / 64, p.block_k / 64);
        let mut total = [_mm512_setzero_ps(); N];
        for b in 0..p.blocks {
            let mut acc = [_mm512_setzero_ps(); N];
            for c in b * per_block..((b + 1) * per_block).min(chunks) {
                let xc = xp.add(c * 64);
                let xv = [
                    _mm512_loadu_ps(xc),
                    _mm512_loadu_ps(xc.add(16)),
                    _mm512_loadu_ps(xc.add(32)),
                    _mm512_loadu_ps(xc.add(48)),
                ];
                for i in 0..N {
                    let at = (r0 + i) * k + c * 64;
                    // The same line of the next pass's row (see `gemv_table`).
                    _mm_prefetch::<_MM_HINT_T0>(wp.wrapping_add(at + N * k).cast());
                    let codes = _mm512_loadu_si512(wp.add(at).cast());
                    let codes = _mm512_permutexvar_epi8(order, codes);
                    let lo = _mm512_permutex2var_epi8(lo0, codes, lo1);
                    let hi = _mm512_permutex2var_epi8(hi0, codes, hi1);
                    // hi | (codes & 0x80): the sign.
                    let hi = _mm512_ternarylogic_epi32::<0xf8>(hi, codes, sign);
                    let w0 = _mm512_unpacklo_epi8(lo, hi); // inputs 0..16 and 16..32
                    let w1 = _mm512_unpackhi_epi8(lo, hi); // 32..48 and 48..64
                    let f = [
                        _mm512_castsi512_ps(_mm512_slli_epi32::<16>(w0)),
                        _mm512_castsi512_ps(_mm512_and_si512(w0, high)),
                        _mm512_castsi512_ps(_mm512_slli_epi32::<16>(w1)),
                        _mm512_castsi512_ps(_mm512_and_si512(w1, high)),
                    ];
                    for (fv, xv) in f.into_iter().zip(xv) {
                        acc[i] = _mm512_fmadd_ps(fv, xv, acc[i]);
                    }
                }
            }
            for i in 0..N {
                let s = _mm512_set1_ps(*p.scales.get_unchecked((r0 + i) * p.blocks + b));
                total[i] = _mm512_fmadd_ps(acc[i], s, total[i]);
            }
        }
        for i in 0..N {
            // `+ 0.0` as the tiles add their scalar tail (empty here): −0 comes out +0 alike.
            out[r0 + i] = _mm512_reduce_add_ps(total[i]) + 0.0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code_order_is_a_permutation() {
        let mut seen = [false; 64];
        for &p in &CODE_ORDER {
            assert!(!seen[p as usize], "input {p} twice");
            seen[p as usize] = true;
        }
    }

    #[test]
    fn bf16_tables_decode_every_code_exactly() {
        for (e4m3, format) in [(true, Fp8Format::E4M3), (false, Fp8Format::E5M2)] {
            for c in 0..=255u8 {
                let want = scalar::fp8_to_f32(format, c);
                let got = table_decode(e4m3, c);
                assert!(
                    got.to_bits() == want.to_bits() || (got.is_nan() && want.is_nan()),
                    "{format:?} code {c:#04x}: {got} vs {want}"
                );
            }
        }
    }
}
