//! NEON integer-dot matmuls over the row-interleaved tiles of [`crate::q8`].
//!
//! A 64-byte chunk is four 128-bit registers of 4 rows × 4 bytes each, so one 32-bit lane of a
//! 4-byte-group dot *is* one row, as on x86. The activation's 4 bytes of the chunk are broadcast
//! to all lanes. The 4-byte-group dot itself is the [`IDot`] parameter of the shared drivers:
//!
//! - [`Widen`] (plain NEON, every aarch64 CPU): `smull`/`smull2` to 16-bit products, `sadalp`
//!   pair-accumulates them into two 32-bit accumulators per register, and one `addp` per block
//!   folds the pairs into row sums. Products fit 16 bits (`|−128·−127| = 16256`).
//! - `Sdot` (Armv8.2 dot-product extension, in [`crate::aarch64::dotprod`]): one `sdot` per
//!   register. [`gemm_q4x16_q8`] and [`gemm_q8x16_q8`] switch to it when the CPU has `dotprod`,
//!   the way the AVX-512 level switches to VNNI.
//!
//! Both are exact integer sums, and the float epilogue is the scalar twin's fused operations in
//! its order, lane by lane, so every path is bit-identical to `scalar::gemm_q4x16_q8`.
//!
//! One token per pass over a tile (16 rows): 12 accumulators (integer, group, output) of 32
//! registers. Prefill re-unpacks the tile per token; the tile (`16·k/2` bytes) stays in L1/L2.

use super::Neon;
use crate::aarch64::{dotprod, NeonDotprod};
use crate::q8::{q4x16_shape, q8x16_shape, store_tile_result, Q8Acts, CHUNK_BYTES, TILE_ROWS};
use core::arch::aarch64::*;

/// A 4-row integer dot: lane `i` accumulates the 4 products of bytes `4i..4i+4` of `w` and `x`.
pub(crate) trait IDot {
    type Acc: Copy;
    /// # Safety
    /// The CPU has the instructions of the implementation.
    unsafe fn zero() -> Self::Acc;
    /// # Safety
    /// As for [`IDot::zero`].
    unsafe fn dot(acc: Self::Acc, w: int8x16_t, x: int8x16_t) -> Self::Acc;
    /// The 4 row sums.
    /// # Safety
    /// As for [`IDot::zero`].
    unsafe fn finish(acc: Self::Acc) -> int32x4_t;
}

/// Plain NEON: widening multiplies and pairwise accumulation (see the module docs).
pub(crate) struct Widen;

impl IDot for Widen {
    /// Pair sums of bytes 0..8 (rows 0, 1) and 8..16 (rows 2, 3).
    type Acc = (int32x4_t, int32x4_t);
    #[inline(always)]
    unsafe fn zero() -> Self::Acc {
        // SAFETY: register arithmetic; callers run under neon.
        unsafe { (vdupq_n_s32(0), vdupq_n_s32(0)) }
    }
    #[inline(always)]
    unsafe fn dot(acc: Self::Acc, w: int8x16_t, x: int8x16_t) -> Self::Acc {
        // SAFETY: register arithmetic; callers run under neon.
        unsafe {
            (
                vpadalq_s16(acc.0, vmull_s8(vget_low_s8(w), vget_low_s8(x))),
                vpadalq_s16(acc.1, vmull_high_s8(w, x)),
            )
        }
    }
    #[inline(always)]
    unsafe fn finish(acc: Self::Acc) -> int32x4_t {
        // SAFETY: register arithmetic; callers run under neon.
        unsafe { vpaddq_s32(acc.0, acc.1) }
    }
}

/// The 4 activation codes at `p` in every 32-bit lane.
///
/// # Safety
/// `p..p+4` is readable and the CPU has NEON.
#[inline(always)]
unsafe fn bcast4(p: *const i8) -> int8x16_t {
    // SAFETY: the caller guarantees 4 readable bytes; unaligned reads are fine.
    unsafe { vreinterpretq_s8_s32(vdupq_n_s32(p.cast::<i32>().read_unaligned())) }
}

/// Stores the 16 row results of one token, keeping only the tile's live rows.
///
/// # Safety
/// The CPU has NEON.
#[inline(always)]
unsafe fn store_rows(
    acc: &[float32x4_t; 4],
    r0: usize,
    live: usize,
    t: usize,
    n_tok: usize,
    out: &mut [f32],
) {
    let mut res = [0f32; TILE_ROWS];
    for (q, a) in acc.iter().enumerate() {
        // SAFETY: res holds 16 floats, 4q + 4 <= 16.
        unsafe { vst1q_f32(res.as_mut_ptr().add(4 * q), *a) };
    }
    store_tile_result(&[res], live, out, n_tok, r0, t);
}

/// q4x16 × int8 with the integer dot `D`.
///
/// # Safety
/// `q4x16_shape` accepted the arguments (`rows` is what it returned) and the CPU has `D`'s
/// instructions.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn q4x16<D: IDot>(
    w: &[u8],
    scales: &[f32],
    zero_scaled: &[f32],
    group: usize,
    x: &Q8Acts,
    rows: usize,
    groups: usize,
    out: &mut [f32],
) {
    let (k, n_tok, block) = (x.k, x.n_tok, x.block);
    let blocks = k / block;
    let per_group = group / block;
    let tile_bytes = k / 8 * CHUNK_BYTES;
    // SAFETY (whole body): the shape check guarantees whole tiles of k/8 chunks in `w`,
    // `(tiles, groups, 16)` parameters, `(n_tok, k)` codes, `(n_tok, blocks)` scales and
    // `(n_tok, groups)` group sums, so every pointer below stays inside its slice.
    unsafe {
        let (mask, zero) = (vdupq_n_u8(15), vdupq_n_f32(0.0));
        for (tile, r0) in (0..rows).step_by(TILE_ROWS).enumerate() {
            let live = (rows - r0).min(TILE_ROWS);
            let wt = w.as_ptr().add(tile * tile_bytes);
            let sp = scales.as_ptr().add(tile * groups * TILE_ROWS);
            let zp = zero_scaled.as_ptr().add(tile * groups * TILE_ROWS);
            for t in 0..n_tok {
                let xq = x.xq.as_ptr().add(t * k);
                let xs = x.xs.as_ptr().add(t * blocks);
                let gsum = x.gsum.as_ptr().add(t * groups);
                let mut acc = [zero; 4];
                for g in 0..groups {
                    let mut ga = [zero; 4];
                    for b in g * per_group..(g + 1) * per_group {
                        let mut ia = [D::zero(); 4];
                        for c in b * block / 8..(b + 1) * block / 8 {
                            let cp = wt.add(c * CHUNK_BYTES);
                            let xlo = bcast4(xq.add(8 * c));
                            let xhi = bcast4(xq.add(8 * c + 4));
                            for (q, ia) in ia.iter_mut().enumerate() {
                                let v = vld1q_u8(cp.add(16 * q));
                                let lo = vreinterpretq_s8_u8(vandq_u8(v, mask));
                                let hi = vreinterpretq_s8_u8(vshrq_n_u8::<4>(v));
                                *ia = D::dot(D::dot(*ia, lo, xlo), hi, xhi);
                            }
                        }
                        let sx = vdupq_n_f32(*xs.add(b));
                        for (ga, ia) in ga.iter_mut().zip(ia) {
                            *ga = vfmaq_f32(*ga, vcvtq_f32_s32(D::finish(ia)), sx);
                        }
                    }
                    let gs = vdupq_n_f32(*gsum.add(g));
                    let (sg, zg) = (sp.add(g * TILE_ROWS), zp.add(g * TILE_ROWS));
                    for (q, (acc, ga)) in acc.iter_mut().zip(ga).enumerate() {
                        *acc = vfmaq_f32(*acc, vld1q_f32(sg.add(4 * q)), ga);
                        *acc = vfmaq_f32(*acc, vnegq_f32(vld1q_f32(zg.add(4 * q))), gs);
                    }
                }
                store_rows(&acc, r0, live, t, n_tok, out);
            }
        }
    }
}

/// q8x16 × int8 with the integer dot `D`.
///
/// # Safety
/// `q8x16_shape` accepted the arguments (`rows` is what it returned) and the CPU has `D`'s
/// instructions.
#[inline(always)]
pub(crate) unsafe fn q8x16<D: IDot>(
    w: &[i8],
    scales: &[f32],
    x: &Q8Acts,
    rows: usize,
    out: &mut [f32],
) {
    let (k, n_tok, block) = (x.k, x.n_tok, x.block);
    let blocks = k / block;
    let tile_bytes = k / 4 * CHUNK_BYTES;
    // SAFETY (whole body): the shape check guarantees whole tiles of k/4 chunks in `w`,
    // `(tiles·16)` scales, `(n_tok, k)` codes and `(n_tok, blocks)` block scales.
    unsafe {
        let zero = vdupq_n_f32(0.0);
        for (tile, r0) in (0..rows).step_by(TILE_ROWS).enumerate() {
            let live = (rows - r0).min(TILE_ROWS);
            let wt = w.as_ptr().add(tile * tile_bytes);
            let sp = scales.as_ptr().add(tile * TILE_ROWS);
            for t in 0..n_tok {
                let xq = x.xq.as_ptr().add(t * k);
                let xs = x.xs.as_ptr().add(t * blocks);
                let mut acc = [zero; 4];
                for b in 0..blocks {
                    let mut ia = [D::zero(); 4];
                    for c in b * block / 4..(b + 1) * block / 4 {
                        let cp = wt.add(c * CHUNK_BYTES);
                        let xv = bcast4(xq.add(4 * c));
                        for (q, ia) in ia.iter_mut().enumerate() {
                            *ia = D::dot(*ia, vld1q_s8(cp.add(16 * q)), xv);
                        }
                    }
                    let sx = vdupq_n_f32(*xs.add(b));
                    for (acc, ia) in acc.iter_mut().zip(ia) {
                        *acc = vfmaq_f32(*acc, vcvtq_f32_s32(D::finish(ia)), sx);
                    }
                }
                for (q, acc) in acc.iter_mut().enumerate() {
                    *acc = vmulq_f32(*acc, vld1q_f32(sp.add(4 * q)));
                }
                store_rows(&acc, r0, live, t, n_tok, out);
            }
        }
    }
}

#[target_feature(enable = "neon")]
#[allow(clippy::too_many_arguments)]
unsafe fn q4x16_neon(
    w: &[u8],
    scales: &[f32],
    zero_scaled: &[f32],
    group: usize,
    x: &Q8Acts,
    rows: usize,
    groups: usize,
    out: &mut [f32],
) {
    // SAFETY: forwarded from the caller; this function runs with neon.
    unsafe { q4x16::<Widen>(w, scales, zero_scaled, group, x, rows, groups, out) }
}

#[target_feature(enable = "neon")]
unsafe fn q8x16_neon(w: &[i8], scales: &[f32], x: &Q8Acts, rows: usize, out: &mut [f32]) {
    // SAFETY: forwarded from the caller; this function runs with neon.
    unsafe { q8x16::<Widen>(w, scales, x, rows, out) }
}

/// See [`crate::Kernels::gemm_q4x16_q8`]: `sdot` when the CPU has it, widening multiplies
/// otherwise.
pub fn gemm_q4x16_q8(
    _: Neon,
    w: &[u8],
    scales: &[f32],
    zero_scaled: &[f32],
    group: usize,
    x: &Q8Acts,
    out: &mut [f32],
) {
    if let Some(d) = NeonDotprod::try_new() {
        return dotprod::gemm_q4x16_q8(d, w, scales, zero_scaled, group, x, out);
    }
    let (rows, _, groups) = q4x16_shape(w, scales, zero_scaled, group, x, out);
    // SAFETY: the token proves NEON; q4x16_shape checked the layout.
    unsafe { q4x16_neon(w, scales, zero_scaled, group, x, rows, groups, out) }
}

/// See [`crate::Kernels::gemm_q8x16_q8`]: `sdot` when the CPU has it, widening multiplies
/// otherwise.
pub fn gemm_q8x16_q8(_: Neon, w: &[i8], scales: &[f32], x: &Q8Acts, out: &mut [f32]) {
    if let Some(d) = NeonDotprod::try_new() {
        return dotprod::gemm_q8x16_q8(d, w, scales, x, out);
    }
    let (rows, _) = q8x16_shape(w, scales, x, out);
    // SAFETY: the token proves NEON; q8x16_shape checked the layout.
    unsafe { q8x16_neon(w, scales, x, rows, out) }
}

/// The public dispatch above hides the widening path on CPUs with `dotprod`; these tests reach
/// it directly, so both paths are checked on any aarch64 host (the proptests in
/// `tests/kernels/int8.rs` cover whichever one the host dispatches to).
#[cfg(test)]
mod tests {
    use super::*;
    use crate::q8::{pack_q4x16, pack_q8x16, tile_params, tiles};
    use crate::scalar;

    /// splitmix64, as in the integration tests.
    fn rng(seed: &mut u64) -> u64 {
        *seed = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = *seed;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn f32s(seed: &mut u64, n: usize) -> Vec<f32> {
        (0..n)
            .map(|_| (rng(seed) >> 40) as f32 / (1u64 << 23) as f32 - 1.0)
            .collect()
    }

    fn same_bits(got: &[f32], want: &[f32], what: &str) {
        for (i, (g, w)) in got.iter().zip(want).enumerate() {
            assert_eq!(g.to_bits(), w.to_bits(), "{what} out[{i}]: {g} vs {w}");
        }
    }

    /// `cargo xtask cross` sets `NANO_INFER_EXPECT_DOTPROD` per `QEMU_CPU`, so a detection bug
    /// cannot silently leave one of the two paths untested.
    #[test]
    fn dotprod_detection_as_expected() {
        let has = NeonDotprod::try_new().is_some();
        eprintln!("dotprod: {has}");
        match std::env::var("NANO_INFER_EXPECT_DOTPROD").as_deref() {
            Ok("1") => assert!(has, "this CPU should have dotprod"),
            Ok("0") => assert!(!has, "this CPU should not have dotprod"),
            _ => {}
        }
    }

    #[test]
    fn widening_path_matches_scalar() {
        assert!(Neon::try_new().is_some(), "aarch64 without NEON");
        let mut seed = 7;
        for &(group, groups) in &[(8, 3), (16, 2), (24, 1), (32, 4), (128, 2)] {
            for &rows in &[1, 15, 16, 17, 33] {
                for n_tok in 0..4 {
                    let k = group * groups;
                    let block = crate::q8::q8_block_for_group(group).unwrap();
                    let codes: Vec<u8> = (0..rows * k).map(|_| rng(&mut seed) as u8 & 15).collect();
                    let s: Vec<f32> = f32s(&mut seed, rows * groups)
                        .iter()
                        .map(|v| v.abs() * 0.02 + 1e-3)
                        .collect();
                    let zs: Vec<f32> = s.iter().map(|s| s * (rng(&mut seed) % 16) as f32).collect();
                    let x = f32s(&mut seed, n_tok * k);
                    let mut xa = Q8Acts::new();
                    xa.quantize(&x, k, block, group);
                    let (w, ts, tz) = (
                        pack_q4x16(&codes, rows, k),
                        tile_params(&s, rows, groups),
                        tile_params(&zs, rows, groups),
                    );
                    let mut want = vec![0.0; rows * n_tok];
                    scalar::gemm_q4x16_q8(&w, &ts, &tz, group, &xa, &mut want);
                    let mut got = vec![f32::NAN; rows * n_tok];
                    let (r, _, g) = q4x16_shape(&w, &ts, &tz, group, &xa, &got);
                    // SAFETY: NEON checked above; q4x16_shape accepted the arguments.
                    unsafe { q4x16_neon(&w, &ts, &tz, group, &xa, r, g, &mut got) };
                    same_bits(
                        &got,
                        &want,
                        &format!("q4x16 group {group} rows {rows} n_tok {n_tok}"),
                    );

                    let codes: Vec<i8> = (0..rows * k).map(|_| rng(&mut seed) as i8).collect();
                    let mut xa = Q8Acts::new();
                    xa.quantize(&x, k, block, block);
                    let w = pack_q8x16(&codes, rows, k);
                    let mut ts = f32s(&mut seed, rows);
                    ts.resize(tiles(rows) * TILE_ROWS, 0.0);
                    scalar::gemm_q8x16_q8(&w, &ts, &xa, &mut want);
                    let mut got = vec![f32::NAN; rows * n_tok];
                    let (r, _) = q8x16_shape(&w, &ts, &xa, &got);
                    // SAFETY: NEON checked above; q8x16_shape accepted the arguments.
                    unsafe { q8x16_neon(&w, &ts, &xa, r, &mut got) };
                    same_bits(
                        &got,
                        &want,
                        &format!("q8x16 block {block} rows {rows} n_tok {n_tok}"),
                    );
                }
            }
        }
    }
}
