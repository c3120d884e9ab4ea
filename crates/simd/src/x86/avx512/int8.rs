//! AVX-512 VNNI integer-dot matmuls over the row-interleaved tiles of [`crate::q8`].
//!
//! One 64-byte chunk load feeds the 16 rows of a tile; `vpdpbusd` multiplies unsigned weight
//! bytes by the broadcast signed activation bytes and sums 4 products per 32-bit lane = per row.
//! q4: 3 integer ops unpack 128 nibbles into two 64-byte vectors (`& 15`, `>> 4 & 15`), then two
//! `vpdpbusd`. q8: signed weights become unsigned by flipping the top bit (`w + 128`), and the
//! `128·Σxq` this adds is subtracted per block from the exact integer sum.
//!
//! q4 (`q4_tile`): one integer accumulator per token for both nibble halves, 12 tokens per pass
//! in prefill (the tile, `16·k/2` bytes, stays in L1/L2 between passes), and any smaller count in
//! one pass.
//! Sapphire Rapids issues `vpdpbusd` zmm on two ports (5.4 G/s per core measured here, as many
//! as `vfmadd`), so the kernel is bounded by the other vector operations sharing those ports:
//! ~1.4 per `vpdpbusd` at 12 tokens against ~1.75 in the earlier kernel, which kept two integer
//! accumulators (low/high nibbles) per token and ran 4 tokens per pass (one-core
//! microbenchmark, 96 × 2560 weights × 128 tokens: 194 vs 157 G multiply-adds/s; at decode
//! shapes, 2560 × 9728 from L3, 1 token: 40 vs 34, 4 tokens: 125 vs 99).
//!
//! Both kernels prefetch [`crate::q8::PREFETCH_AHEAD`] bytes ahead of the chunk they read.
//!
//! CPUs with AVX-512 but no VNNI (Skylake-X) use the AVX2 level's `vpmaddubsw` version.

use super::Avx512;
use crate::q8::{
    prefetch_ahead, q4x16_shape, q8x16_shape, store_tile_result, Q8Acts, CHUNK_BYTES, TILE_ROWS,
};
use crate::x86::avx2;
use core::arch::x86_64::*;

const T: usize = 4;
/// Tokens per pass of [`q4_tile`] in prefill.
const WIDE: usize = 12;

/// See [`crate::Kernels::gemm_q4x16_q8`].
pub fn gemm_q4x16_q8(
    t: Avx512,
    w: &[u8],
    scales: &[f32],
    zero_scaled: &[f32],
    group: usize,
    x: &Q8Acts,
    out: &mut [f32],
) {
    if !is_x86_feature_detected!("avx512vnni") {
        return avx2::gemm_q4x16_q8(t.avx2(), w, scales, zero_scaled, group, x, out);
    }
    let (rows, _, groups) = q4x16_shape(w, scales, zero_scaled, group, x, out);
    let tile_bytes = x.k / 8 * CHUNK_BYTES;
    for (tile, r0) in (0..rows).step_by(TILE_ROWS).enumerate() {
        let live = (rows - r0).min(TILE_ROWS);
        let mut t0 = 0;
        while t0 < x.n_tok {
            let p = Q4Tile {
                w: &w[tile * tile_bytes..(tile + 1) * tile_bytes],
                s: &scales[tile * groups * TILE_ROWS..(tile + 1) * groups * TILE_ROWS],
                z: &zero_scaled[tile * groups * TILE_ROWS..(tile + 1) * groups * TILE_ROWS],
                group,
                groups,
            };
            let mut res = [[0f32; TILE_ROWS]; WIDE];
            // One pass for every token up to WIDE: a pass re-unpacks the tile's nibbles, so 5
            // tokens as 4 + 1 cost almost two passes' work (the server's steps are mostly such
            // counts: one token per stream plus a few prompt tokens).
            let n = (x.n_tok - t0).min(WIDE);
            // SAFETY: the token and the feature check prove avx512f/bw/vl + vnni; q4x16_shape
            // checked that the tile, its parameters and tokens t0.. exist.
            unsafe {
                match n {
                    1 => q4_tile::<1>(&p, x, t0, &mut res),
                    2 => q4_tile::<2>(&p, x, t0, &mut res),
                    3 => q4_tile::<3>(&p, x, t0, &mut res),
                    4 => q4_tile::<4>(&p, x, t0, &mut res),
                    5 => q4_tile::<5>(&p, x, t0, &mut res),
                    6 => q4_tile::<6>(&p, x, t0, &mut res),
                    7 => q4_tile::<7>(&p, x, t0, &mut res),
                    8 => q4_tile::<8>(&p, x, t0, &mut res),
                    9 => q4_tile::<9>(&p, x, t0, &mut res),
                    10 => q4_tile::<10>(&p, x, t0, &mut res),
                    11 => q4_tile::<11>(&p, x, t0, &mut res),
                    _ => q4_tile::<WIDE>(&p, x, t0, &mut res),
                }
            }
            store_tile_result(&res[..n], live, out, x.n_tok, r0, t0);
            t0 += n;
        }
    }
}

/// One tile's weights and parameters.
struct Q4Tile<'a> {
    /// `(k/8, 16, 4)` bytes.
    w: &'a [u8],
    /// `(groups, 16)`.
    s: &'a [f32],
    z: &'a [f32],
    group: usize,
    groups: usize,
}

/// Tokens `t0..t0+N` of one tile into `res[t][row]`: both nibble halves of a chunk go into one
/// integer accumulator per token (an exact sum either way), so a block costs one conversion and
/// one FMA per token, and the chunk's unpacking is shared by `N` tokens. The f32 outputs stay in
/// `res` between groups. Blocks start fresh integer accumulators, so the out-of-order core
/// overlaps consecutive blocks and only the f32 chain (one FMA per block) is carried.
///
/// # Safety
/// AVX-512 F/BW/VL + VNNI are available; the tile has `x.k/8` chunks and `groups` parameter rows;
/// tokens `t0..t0+N` exist in `x`.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
#[allow(clippy::needless_range_loop)]
unsafe fn q4_tile<const N: usize>(
    p: &Q4Tile<'_>,
    x: &Q8Acts,
    t0: usize,
    res: &mut [[f32; TILE_ROWS]; WIDE],
) {
    let (k, block) = (x.k, x.block);
    let blocks = k / block;
    let per_group = p.group / block;
    let mask = _mm512_set1_epi8(0x0f);
    let wp = p.w.as_ptr();
    // SAFETY: token t0 exists, so its row start is in bounds.
    let xq = unsafe { x.xq.as_ptr().add(t0 * k) };
    // The f32 outputs live in `res` (touched once per group), leaving the registers to the
    // integer and block accumulators.
    for r in res[..N].iter_mut() {
        *r = [0.0; TILE_ROWS];
    }
    let mut c = 0;
    for g in 0..p.groups {
        let mut ga = [_mm512_setzero_ps(); N];
        for b in g * per_group..(g + 1) * per_group {
            let mut dot = [_mm512_setzero_si512(); N];
            for _ in 0..block / 8 {
                // SAFETY: chunk c < k/8 of the tile; bytes 8c..8c+8 of each token row exist.
                unsafe {
                    prefetch_ahead(wp, c);
                    let v = _mm512_loadu_si512(wp.add(c * CHUNK_BYTES).cast());
                    let ql = _mm512_and_si512(v, mask);
                    let qh = _mm512_and_si512(_mm512_srli_epi16::<4>(v), mask);
                    for t in 0..N {
                        let xp = xq.add(t * k + 8 * c);
                        let xl = _mm512_set1_epi32(xp.cast::<i32>().read_unaligned());
                        let xh = _mm512_set1_epi32(xp.add(4).cast::<i32>().read_unaligned());
                        dot[t] = _mm512_dpbusd_epi32(dot[t], ql, xl);
                        dot[t] = _mm512_dpbusd_epi32(dot[t], qh, xh);
                    }
                }
                c += 1;
            }
            for t in 0..N {
                // SAFETY: block b of token t0+t exists.
                let sx = unsafe { *x.xs.get_unchecked((t0 + t) * blocks + b) };
                ga[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot[t]), _mm512_set1_ps(sx), ga[t]);
            }
        }
        // SAFETY: parameter row g of the tile holds 16 floats.
        let (s, z) = unsafe {
            (
                _mm512_loadu_ps(p.s.as_ptr().add(g * TILE_ROWS)),
                _mm512_loadu_ps(p.z.as_ptr().add(g * TILE_ROWS)),
            )
        };
        for t in 0..N {
            // SAFETY: group g of token t0+t exists.
            let gs = unsafe { *x.gsum.get_unchecked((t0 + t) * p.groups + g) };
            let r = res[t].as_mut_ptr();
            // SAFETY: res[t] holds 16 floats.
            unsafe {
                let acc = _mm512_fmadd_ps(s, ga[t], _mm512_loadu_ps(r));
                _mm512_storeu_ps(r, _mm512_fnmadd_ps(z, _mm512_set1_ps(gs), acc));
            }
        }
    }
}

/// See [`crate::Kernels::gemm_q8x16_q8`].
pub fn gemm_q8x16_q8(t: Avx512, w: &[i8], scales: &[f32], x: &Q8Acts, out: &mut [f32]) {
    if !is_x86_feature_detected!("avx512vnni") {
        return avx2::gemm_q8x16_q8(t.avx2(), w, scales, x, out);
    }
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
            // SAFETY: the token and the feature check prove the level + VNNI; q8x16_shape checked
            // the tile, its scales and tokens t0...
            unsafe {
                match n {
                    1 => q8_tile::<1>(tw, ts, x, t0, &mut res),
                    2 => q8_tile::<2>(tw, ts, x, t0, &mut res),
                    3 => q8_tile::<3>(tw, ts, x, t0, &mut res),
                    _ => q8_tile::<T>(tw, ts, x, t0, &mut res),
                }
            }
            store_tile_result(&res[..n], live, out, x.n_tok, r0, t0);
            t0 += n;
        }
    }
}

/// # Safety
/// As [`q4_tile`], for a q8x16 tile of `x.k/4` chunks and 16 scales.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
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
    let flip = _mm512_set1_epi8(-128);
    let wp = w.as_ptr();
    let xq = x.xq.as_ptr();
    let mut acc = [_mm512_setzero_ps(); N];
    let mut c = 0;
    for b in 0..blocks {
        // Two accumulators per token (even and odd chunks) halve the dependency chain.
        let mut d0 = [_mm512_setzero_si512(); N];
        let mut d1 = [_mm512_setzero_si512(); N];
        for step in 0..block / 4 {
            // SAFETY: chunk c < k/4 of the tile; bytes 4c..4c+4 of each token row exist.
            unsafe {
                prefetch_ahead(wp, c);
                let v = _mm512_xor_si512(_mm512_loadu_si512(wp.add(c * CHUNK_BYTES).cast()), flip);
                for t in 0..N {
                    let xp = xq.add((t0 + t) * k + 4 * c);
                    let xv = _mm512_set1_epi32(xp.cast::<i32>().read_unaligned());
                    if step % 2 == 0 {
                        d0[t] = _mm512_dpbusd_epi32(d0[t], v, xv);
                    } else {
                        d1[t] = _mm512_dpbusd_epi32(d1[t], v, xv);
                    }
                }
            }
            c += 1;
        }
        for t in 0..N {
            // SAFETY: block b of token t0+t exists.
            let (sx, isum) = unsafe {
                (
                    *x.xs.get_unchecked((t0 + t) * blocks + b),
                    *x.isum.get_unchecked((t0 + t) * blocks + b),
                )
            };
            let dot = _mm512_sub_epi32(
                _mm512_add_epi32(d0[t], d1[t]),
                _mm512_set1_epi32(128 * isum),
            );
            acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot), _mm512_set1_ps(sx), acc[t]);
        }
    }
    // SAFETY: the tile has 16 scales.
    let s = unsafe { _mm512_loadu_ps(scales.as_ptr()) };
    for t in 0..N {
        // SAFETY: res[t] holds 16 floats.
        unsafe { _mm512_storeu_ps(res[t].as_mut_ptr(), _mm512_mul_ps(acc[t], s)) };
    }
}
