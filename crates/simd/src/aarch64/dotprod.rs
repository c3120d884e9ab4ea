//! The Armv8.2 dot-product extension (FEAT_DotProd: `sdot`/`udot`) for the integer matmuls.
//!
//! Not a level of its own: the NEON level's integer kernels switch to these when the CPU has
//! `dotprod` (as AVX-512 switches to VNNI), so [`crate::Isa`] stays one entry per architecture
//! family. The widening-multiply NEON path stays reachable for tests on such CPUs
//! (`neon::int8`'s unit tests), and `cargo xtask cross` runs both under qemu (`cortex-a72` has no
//! `dotprod`, `neoverse-n1` has it).
//!
//! `vdotq_s32` is not stable Rust yet, so `sdot` is written as inline assembly inside functions
//! compiled with `neon,dotprod`; everything else is shared with the NEON drivers.

use super::NeonDotprod;
use crate::aarch64::neon::int8::{q4x16, q8x16, IDot};
use crate::q8::{q4x16_shape, q8x16_shape, Q8Acts};
use core::arch::aarch64::*;
use core::arch::asm;

/// One `sdot` per register: lane `i` += the 4 products of bytes `4i..4i+4`.
struct Sdot;

impl IDot for Sdot {
    type Acc = int32x4_t;
    #[inline(always)]
    unsafe fn zero() -> int32x4_t {
        // SAFETY: register arithmetic; callers run under neon.
        unsafe { vdupq_n_s32(0) }
    }
    #[inline(always)]
    unsafe fn dot(acc: int32x4_t, w: int8x16_t, x: int8x16_t) -> int32x4_t {
        let mut acc = acc;
        // SAFETY: `sdot` reads two vector registers and updates a third, nothing else; callers
        // run under neon,dotprod.
        unsafe {
            asm!(
                "sdot {acc:v}.4s, {w:v}.16b, {x:v}.16b",
                acc = inout(vreg) acc,
                w = in(vreg) w,
                x = in(vreg) x,
                options(pure, nomem, nostack, preserves_flags),
            );
        }
        acc
    }
    #[inline(always)]
    unsafe fn finish(acc: int32x4_t) -> int32x4_t {
        acc
    }
}

#[target_feature(enable = "neon,dotprod")]
#[allow(clippy::too_many_arguments)]
unsafe fn q4x16_imp(
    w: &[u8],
    scales: &[f32],
    zero_scaled: &[f32],
    group: usize,
    x: &Q8Acts,
    rows: usize,
    groups: usize,
    out: &mut [f32],
) {
    // SAFETY: forwarded from the caller; this function runs with neon,dotprod.
    unsafe { q4x16::<Sdot>(w, scales, zero_scaled, group, x, rows, groups, out) }
}

#[target_feature(enable = "neon,dotprod")]
unsafe fn q8x16_imp(w: &[i8], scales: &[f32], x: &Q8Acts, rows: usize, out: &mut [f32]) {
    // SAFETY: forwarded from the caller; this function runs with neon,dotprod.
    unsafe { q8x16::<Sdot>(w, scales, x, rows, out) }
}

/// See [`crate::Kernels::gemm_q4x16_q8`].
pub fn gemm_q4x16_q8(
    _: NeonDotprod,
    w: &[u8],
    scales: &[f32],
    zero_scaled: &[f32],
    group: usize,
    x: &Q8Acts,
    out: &mut [f32],
) {
    let (rows, _, groups) = q4x16_shape(w, scales, zero_scaled, group, x, out);
    // SAFETY: the token proves neon+dotprod; q4x16_shape checked the layout.
    unsafe { q4x16_imp(w, scales, zero_scaled, group, x, rows, groups, out) }
}

/// See [`crate::Kernels::gemm_q8x16_q8`].
pub fn gemm_q8x16_q8(_: NeonDotprod, w: &[i8], scales: &[f32], x: &Q8Acts, out: &mut [f32]) {
    let (rows, _) = q8x16_shape(w, scales, x, out);
    // SAFETY: the token proves neon+dotprod; q8x16_shape checked the layout.
    unsafe { q8x16_imp(w, scales, x, rows, out) }
}
