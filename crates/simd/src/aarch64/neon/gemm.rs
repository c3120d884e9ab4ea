//! NEON matmuls for every weight format, on the shared [`crate::tile`] driver.

use super::{f16_bits_to_f32, Elem, Neon};
use crate::panel::{self, panel_shape, PanelActs};
use crate::scalar::{self, fp8_shape, q4_shape};
use crate::tile::{self, Decode};
use crate::Fp8Format;
use core::arch::aarch64::*;
use half::{bf16, f16};

const R: usize = 4;
const T: usize = 4;

struct Dense<'a, E> {
    w: &'a [E],
    k: usize,
}

impl<E: Elem> Decode for Dense<'_, E> {
    type L = Neon;
    type P = ();
    fn seg(&self) -> usize {
        self.k
    }
    #[inline(always)]
    unsafe fn params(&self, _: usize, _: usize) {}
    #[inline(always)]
    unsafe fn load(&self, r: usize, j: usize, _: ()) -> float32x4_t {
        // SAFETY: (r, j..j+4) is inside the (rows, k) weight (caller's contract).
        unsafe { E::load4(self.w.as_ptr().add(r * self.k + j)) }
    }
    fn scalar(&self, r: usize, j: usize, _: usize) -> f32 {
        self.w[r * self.k + j].to_f32()
    }
}

/// FP8 through f16 bit patterns (E5M2: `code << 8`; E4M3: `sign << 15 | (code & 0x7f) << 7`, worth
/// `2⁻⁸` of the value, with the NaN code forced to an f16 NaN), then [`f16_bits_to_f32`].
struct Fp8<'a, const E4M3: bool> {
    w: &'a [u8],
    scales: &'a [f32],
    block_k: usize,
    blocks: usize,
    k: usize,
}

impl<const E4M3: bool> Decode for Fp8<'_, E4M3> {
    type L = Neon;
    type P = float32x4_t;
    fn seg(&self) -> usize {
        self.block_k
    }
    #[inline(always)]
    unsafe fn params(&self, r: usize, s: usize) -> float32x4_t {
        // SAFETY: r < rows and s < blocks, and scales holds rows·blocks entries (checked).
        let scale = unsafe { *self.scales.get_unchecked(r * self.blocks + s) };
        let scale = if E4M3 { scale * 256.0 } else { scale };
        // SAFETY: the caller runs under the neon target feature.
        unsafe { vdupq_n_f32(scale) }
    }
    #[inline(always)]
    unsafe fn load(&self, r: usize, j: usize, scale: float32x4_t) -> float32x4_t {
        // SAFETY: the 4 bytes (r, j..j+4) are inside w (caller's contract); the rest is register
        // arithmetic under neon.
        unsafe {
            let word = self
                .w
                .as_ptr()
                .add(r * self.k + j)
                .cast::<u32>()
                .read_unaligned();
            let c = vmovl_u16(vget_low_u16(vmovl_u8(vcreate_u8(word as u64))));
            let bits = if E4M3 {
                let mag = vandq_u32(c, vdupq_n_u32(0x7f));
                let sign = vshlq_n_u32::<8>(vandq_u32(c, vdupq_n_u32(0x80)));
                // The NaN code (mag 0x7f) gets the all-ones f16 exponent.
                let nan = vandq_u32(vceqq_u32(mag, vdupq_n_u32(0x7f)), vdupq_n_u32(0x7c00));
                vorrq_u32(vorrq_u32(vshlq_n_u32::<7>(mag), sign), nan)
            } else {
                vshlq_n_u32::<8>(c)
            };
            vmulq_f32(f16_bits_to_f32(bits), scale)
        }
    }
    fn scalar(&self, r: usize, j: usize, s: usize) -> f32 {
        let format = if E4M3 {
            Fp8Format::E4M3
        } else {
            Fp8Format::E5M2
        };
        scalar::fp8_to_f32(format, self.w[r * self.k + j]) * self.scales[r * self.blocks + s]
    }
}

struct Q4<'a> {
    w: &'a [u8],
    scales: &'a [f32],
    zero_scaled: &'a [f32],
    group: usize,
    groups: usize,
    k: usize,
}

impl Decode for Q4<'_> {
    type L = Neon;
    type P = (float32x4_t, float32x4_t);
    fn seg(&self) -> usize {
        self.group
    }
    #[inline(always)]
    unsafe fn params(&self, r: usize, g: usize) -> (float32x4_t, float32x4_t) {
        let i = r * self.groups + g;
        // SAFETY: i < rows·groups and both parameter slices hold that many entries (checked).
        unsafe {
            let s = *self.scales.get_unchecked(i);
            let z = *self.zero_scaled.get_unchecked(i);
            (vdupq_n_f32(s), vdupq_n_f32(-z))
        }
    }
    #[inline(always)]
    unsafe fn load(
        &self,
        r: usize,
        j: usize,
        (s, neg_z): (float32x4_t, float32x4_t),
    ) -> float32x4_t {
        // SAFETY: j is even, so the 2 bytes holding weights (r, j..j+4) start at (r·k + j)/2 and
        // are inside w (caller's contract); the rest is register arithmetic under neon.
        unsafe {
            let word = self
                .w
                .as_ptr()
                .add((r * self.k + j) / 2)
                .cast::<u16>()
                .read_unaligned();
            // Negative counts shift right: lane i gets bits 4i..4i+4.
            let shifts = vld1q_s32([0, -4, -8, -12].as_ptr());
            let q = vandq_u32(vshlq_u32(vdupq_n_u32(word as u32), shifts), vdupq_n_u32(15));
            vfmaq_f32(neg_z, vcvtq_f32_u32(q), s)
        }
    }
    fn scalar(&self, r: usize, j: usize, g: usize) -> f32 {
        let byte = self.w[(r * self.k + j) / 2];
        let q = if j.is_multiple_of(2) {
            byte & 15
        } else {
            byte >> 4
        };
        let i = r * self.groups + g;
        q as f32 * self.scales[i] - self.zero_scaled[i]
    }
}

#[target_feature(enable = "neon")]
unsafe fn gemm_imp<D: Decode<L = Neon>>(
    d: &D,
    x: &[f32],
    k: usize,
    rows: usize,
    n_tok: usize,
    out: &mut [f32],
) {
    // SAFETY: the caller checked the shapes, and this function runs with neon.
    unsafe { tile::gemm::<_, R, T>(d, x, k, rows, n_tok, out) }
}

/// See [`crate::Kernels::gemm_f32`].
pub fn gemm_f32(_: Neon, w: &[f32], x: &[f32], k: usize, out: &mut [f32]) {
    let (rows, n_tok) = scalar::gemm_shape(w.len(), x.len(), k, out.len());
    // SAFETY: the token proves NEON; gemm_shape checked the layout.
    unsafe { gemm_imp(&Dense { w, k }, x, k, rows, n_tok, out) }
}

/// See [`crate::Kernels::gemm_bf16`].
pub fn gemm_bf16(_: Neon, w: &[bf16], x: &[f32], k: usize, out: &mut [f32]) {
    let (rows, n_tok) = scalar::gemm_shape(w.len(), x.len(), k, out.len());
    // SAFETY: the token proves NEON; gemm_shape checked the layout.
    unsafe { gemm_imp(&Dense { w, k }, x, k, rows, n_tok, out) }
}

/// See [`crate::Kernels::gemm_f16`].
pub fn gemm_f16(_: Neon, w: &[f16], x: &[f32], k: usize, out: &mut [f32]) {
    let (rows, n_tok) = scalar::gemm_shape(w.len(), x.len(), k, out.len());
    // SAFETY: the token proves NEON; gemm_shape checked the layout.
    unsafe { gemm_imp(&Dense { w, k }, x, k, rows, n_tok, out) }
}

/// See [`crate::Kernels::gemm_fp8`].
#[allow(clippy::too_many_arguments)]
pub fn gemm_fp8(
    _: Neon,
    format: Fp8Format,
    w: &[u8],
    scales: &[f32],
    block_k: usize,
    x: &[f32],
    k: usize,
    out: &mut [f32],
) {
    let (rows, n_tok, blocks) = fp8_shape(w, scales, block_k, x, k, out);
    // SAFETY: the token proves NEON; fp8_shape checked the layout and the scales.
    unsafe {
        match format {
            Fp8Format::E4M3 => {
                let d = Fp8::<true> {
                    w,
                    scales,
                    block_k,
                    blocks,
                    k,
                };
                gemm_imp(&d, x, k, rows, n_tok, out)
            }
            Fp8Format::E5M2 => {
                let d = Fp8::<false> {
                    w,
                    scales,
                    block_k,
                    blocks,
                    k,
                };
                gemm_imp(&d, x, k, rows, n_tok, out)
            }
        }
    }
}

/// See [`crate::Kernels::gemm_q4`].
#[allow(clippy::too_many_arguments)]
pub fn gemm_q4(
    _: Neon,
    w: &[u8],
    scales: &[f32],
    zero_scaled: &[f32],
    group: usize,
    x: &[f32],
    k: usize,
    out: &mut [f32],
) {
    let (rows, n_tok, groups) = q4_shape(w, scales, zero_scaled, group, x, k, out);
    let d = Q4 {
        w,
        scales,
        zero_scaled,
        group,
        groups,
        k,
    };
    // SAFETY: the token proves NEON; q4_shape checked the layout and the parameters.
    unsafe { gemm_imp(&d, x, k, rows, n_tok, out) }
}

/// See [`crate::Kernels::gemm_panel`]. Micro-kernel 6 rows × 16 tokens: 24 accumulators, four
/// token vectors and a broadcast weight out of 32 registers.
pub fn gemm_panel(
    _: Neon,
    w: &[f32],
    x: &PanelActs,
    k0: usize,
    kc: usize,
    out: &mut [f32],
    accumulate: bool,
) {
    let rows = panel_shape(w, x, k0, kc, out);
    // SAFETY: the token proves NEON; panel_shape checked the operands.
    unsafe { gemm_panel_imp(w, x, k0, kc, rows, out, accumulate) }
}

#[target_feature(enable = "neon")]
unsafe fn gemm_panel_imp(
    w: &[f32],
    x: &PanelActs,
    k0: usize,
    kc: usize,
    rows: usize,
    out: &mut [f32],
    accumulate: bool,
) {
    // SAFETY: the caller checked the operands, and this function runs with neon.
    unsafe { panel::gemm_panel::<Neon, 6, 4>(w, x, k0, kc, rows, out, accumulate) }
}
