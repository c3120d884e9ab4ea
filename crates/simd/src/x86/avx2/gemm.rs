//! AVX2 matmuls for the dense formats and f32-activation q4, on the shared [`crate::tile`] driver
//! (FP8 has its own kernel with per-block accumulators in `fp8.rs`).
//!
//! Tile: 4 rows × 3 tokens = 12 accumulators + 4 decoded weight vectors = all 16 ymm registers
//! (activations are FMA memory operands). Decoding per 8 weights: bf16 is zero-extend + shift,
//! f16 is one `vcvtph2ps`, and q4 shifts a broadcast 32-bit word by 0, 4, …, 28 and masks.

use super::{Avx2Fma, Elem};
use crate::scalar::{self, q4_shape};
use crate::tile::{self, Decode};
use core::arch::x86_64::*;
use half::{bf16, f16};

const R: usize = 4;
const T: usize = 3;

/// Dense weights of element type `E`, one segment per row.
struct Dense<'a, E> {
    w: &'a [E],
    k: usize,
}

impl<E: Elem> Decode for Dense<'_, E> {
    type L = Avx2Fma;
    type P = ();
    fn seg(&self) -> usize {
        self.k
    }
    #[inline(always)]
    unsafe fn params(&self, _: usize, _: usize) {}
    #[inline(always)]
    unsafe fn load(&self, r: usize, j: usize, _: ()) -> __m256 {
        // SAFETY: (r, j..j+8) is inside the (rows, k) weight (caller's contract).
        unsafe { E::load8(self.w.as_ptr().add(r * self.k + j)) }
    }
    #[inline(always)]
    fn scalar(&self, r: usize, j: usize, _: usize) -> f32 {
        self.w[r * self.k + j].to_f32()
    }
}

/// 4-bit weights with a scale and a scaled zero per (row, group): `w = q·s − z·s`, one FMA after
/// the unpack.
struct Q4<'a> {
    w: &'a [u8],
    scales: &'a [f32],
    zero_scaled: &'a [f32],
    group: usize,
    groups: usize,
    k: usize,
}

impl Decode for Q4<'_> {
    type L = Avx2Fma;
    type P = (__m256, __m256);
    fn seg(&self) -> usize {
        self.group
    }
    #[inline(always)]
    unsafe fn params(&self, r: usize, g: usize) -> (__m256, __m256) {
        let i = r * self.groups + g;
        // SAFETY: i < rows·groups and both parameter slices hold that many entries (checked);
        // broadcasts need only the avx target feature the caller runs under.
        unsafe {
            let s = *self.scales.get_unchecked(i);
            let z = *self.zero_scaled.get_unchecked(i);
            (_mm256_set1_ps(s), _mm256_set1_ps(-z))
        }
    }
    #[inline(always)]
    unsafe fn load(&self, r: usize, j: usize, (s, neg_z): (__m256, __m256)) -> __m256 {
        // SAFETY: j is even, so the 4 bytes holding weights (r, j..j+8) start at (r·k + j)/2 and
        // are inside w (caller's contract); the rest is register arithmetic under avx2+fma.
        unsafe {
            let word = self
                .w
                .as_ptr()
                .add((r * self.k + j) / 2)
                .cast::<u32>()
                .read_unaligned();
            let shifts = _mm256_setr_epi32(0, 4, 8, 12, 16, 20, 24, 28);
            let q = _mm256_srlv_epi32(_mm256_set1_epi32(word as i32), shifts);
            let q = _mm256_and_si256(q, _mm256_set1_epi32(15));
            _mm256_fmadd_ps(_mm256_cvtepi32_ps(q), s, neg_z)
        }
    }
    #[inline(always)]
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

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn gemm_imp<D: Decode<L = Avx2Fma>>(
    d: &D,
    x: &[f32],
    k: usize,
    rows: usize,
    n_tok: usize,
    out: &mut [f32],
) {
    // SAFETY: the caller checked the shapes, and this function runs with avx2+fma+f16c.
    unsafe { tile::gemm::<_, R, T>(d, x, k, rows, n_tok, out) }
}

/// See [`crate::Kernels::gemm_f32`].
pub fn gemm_f32(_: Avx2Fma, w: &[f32], x: &[f32], k: usize, out: &mut [f32]) {
    let (rows, n_tok) = scalar::gemm_shape(w.len(), x.len(), k, out.len());
    // SAFETY: the token proves avx2+fma+f16c; gemm_shape checked the layout.
    unsafe { gemm_imp(&Dense { w, k }, x, k, rows, n_tok, out) }
}

/// See [`crate::Kernels::gemm_bf16`].
pub fn gemm_bf16(_: Avx2Fma, w: &[bf16], x: &[f32], k: usize, out: &mut [f32]) {
    let (rows, n_tok) = scalar::gemm_shape(w.len(), x.len(), k, out.len());
    // SAFETY: the token proves avx2+fma+f16c; gemm_shape checked the layout.
    unsafe { gemm_imp(&Dense { w, k }, x, k, rows, n_tok, out) }
}

/// See [`crate::Kernels::gemm_f16`].
pub fn gemm_f16(_: Avx2Fma, w: &[f16], x: &[f32], k: usize, out: &mut [f32]) {
    let (rows, n_tok) = scalar::gemm_shape(w.len(), x.len(), k, out.len());
    // SAFETY: the token proves avx2+fma+f16c; gemm_shape checked the layout.
    unsafe { gemm_imp(&Dense { w, k }, x, k, rows, n_tok, out) }
}

/// See [`crate::Kernels::gemm_q4`].
#[allow(clippy::too_many_arguments)]
pub fn gemm_q4(
    _: Avx2Fma,
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
    // SAFETY: the token proves avx2+fma+f16c; q4_shape checked the layout and the parameters.
    unsafe { gemm_imp(&d, x, k, rows, n_tok, out) }
}
