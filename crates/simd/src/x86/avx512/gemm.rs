//! AVX-512 matmuls for the dense formats and f32-activation q4, on the shared [`crate::tile`]
//! driver (FP8 has its own kernel in `fp8.rs`).
//!
//! Same decoding as the AVX2 level, 16 lanes wide: bf16 is zero-extend + shift, f16 one
//! `vcvtph2ps zmm`, q4 duplicates each of 8
//! bytes and shifts the pairs by 0/4. Tile: 4 rows × 6 tokens = 24 accumulators + 4 weight
//! vectors out of 32 zmm registers. `vdpbf16ps` (AVX512-BF16) is not used: it rounds the
//! activations to bf16, which the f32 reference does not.
//!
//! This level cannot be tested on a host without AVX-512; the property tests run it wherever
//! `Isa::Avx512.is_available()`.

use super::Avx512;
use crate::scalar::{self, q4_shape};
use crate::tile::{self, Decode, Lanes};
use core::arch::x86_64::*;
use half::{bf16, f16};

const R: usize = 4;
const T: usize = 6;

impl Lanes for Avx512 {
    type V = __m512;
    const N: usize = 16;
    #[inline(always)]
    unsafe fn zero() -> __m512 {
        // SAFETY: the caller runs under the avx512f target feature.
        unsafe { _mm512_setzero_ps() }
    }
    #[inline(always)]
    unsafe fn fma(a: __m512, b: __m512, c: __m512) -> __m512 {
        // SAFETY: the caller runs under the avx512f target feature.
        unsafe { _mm512_fmadd_ps(a, b, c) }
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> __m512 {
        // SAFETY: the caller guarantees 16 readable floats.
        unsafe { _mm512_loadu_ps(p) }
    }
    #[inline(always)]
    unsafe fn hsum(v: __m512) -> f32 {
        // SAFETY: the caller runs under the avx512f target feature.
        unsafe { _mm512_reduce_add_ps(v) }
    }
}

/// Element types that load as 16 f32 lanes.
trait Elem16: Copy {
    /// # Safety
    /// `p..p+16` is readable and the CPU has AVX-512F.
    unsafe fn load16(p: *const Self) -> __m512;
    fn to_f32(self) -> f32;
}

impl Elem16 for f32 {
    #[inline(always)]
    unsafe fn load16(p: *const f32) -> __m512 {
        // SAFETY: the caller guarantees 16 readable floats.
        unsafe { _mm512_loadu_ps(p) }
    }
    fn to_f32(self) -> f32 {
        self
    }
}

impl Elem16 for bf16 {
    #[inline(always)]
    unsafe fn load16(p: *const bf16) -> __m512 {
        // SAFETY: the caller guarantees 16 readable bf16 (32 bytes); loadu has no alignment need.
        unsafe {
            let h = _mm256_loadu_si256(p.cast());
            _mm512_castsi512_ps(_mm512_slli_epi32::<16>(_mm512_cvtepu16_epi32(h)))
        }
    }
    fn to_f32(self) -> f32 {
        bf16::to_f32(self)
    }
}

impl Elem16 for f16 {
    #[inline(always)]
    unsafe fn load16(p: *const f16) -> __m512 {
        // SAFETY: the caller guarantees 16 readable f16 (32 bytes); loadu has no alignment need.
        unsafe { _mm512_cvtph_ps(_mm256_loadu_si256(p.cast())) }
    }
    fn to_f32(self) -> f32 {
        f16::to_f32(self)
    }
}

struct Dense<'a, E> {
    w: &'a [E],
    k: usize,
}

impl<E: Elem16> Decode for Dense<'_, E> {
    type L = Avx512;
    type P = ();
    fn seg(&self) -> usize {
        self.k
    }
    #[inline(always)]
    unsafe fn params(&self, _: usize, _: usize) {}
    #[inline(always)]
    unsafe fn load(&self, r: usize, j: usize, _: ()) -> __m512 {
        // SAFETY: (r, j..j+16) is inside the (rows, k) weight (caller's contract).
        unsafe { E::load16(self.w.as_ptr().add(r * self.k + j)) }
    }
    fn scalar(&self, r: usize, j: usize, _: usize) -> f32 {
        self.w[r * self.k + j].to_f32()
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
    type L = Avx512;
    type P = (__m512, __m512);
    fn seg(&self) -> usize {
        self.group
    }
    #[inline(always)]
    unsafe fn params(&self, r: usize, g: usize) -> (__m512, __m512) {
        let i = r * self.groups + g;
        // SAFETY: i < rows·groups and both parameter slices hold that many entries (checked).
        unsafe {
            let s = *self.scales.get_unchecked(i);
            let z = *self.zero_scaled.get_unchecked(i);
            (_mm512_set1_ps(s), _mm512_set1_ps(-z))
        }
    }
    #[inline(always)]
    unsafe fn load(&self, r: usize, j: usize, (s, neg_z): (__m512, __m512)) -> __m512 {
        // SAFETY: j is even, so the 8 bytes holding weights (r, j..j+16) start at (r·k + j)/2 and
        // are inside w (caller's contract); the rest is register arithmetic under avx512f.
        unsafe {
            let b = _mm_loadl_epi64(self.w.as_ptr().add((r * self.k + j) / 2).cast());
            // b0 b0 b1 b1 … b7 b7: lane 2i takes the low nibble of byte i, lane 2i+1 the high one.
            let pairs = _mm512_cvtepu8_epi32(_mm_unpacklo_epi8(b, b));
            let shifts = _mm512_set_epi32(4, 0, 4, 0, 4, 0, 4, 0, 4, 0, 4, 0, 4, 0, 4, 0);
            let q = _mm512_and_si512(_mm512_srlv_epi32(pairs, shifts), _mm512_set1_epi32(15));
            _mm512_fmadd_ps(_mm512_cvtepi32_ps(q), s, neg_z)
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

#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
unsafe fn gemm_imp<D: Decode<L = Avx512>>(
    d: &D,
    x: &[f32],
    k: usize,
    rows: usize,
    n_tok: usize,
    out: &mut [f32],
) {
    // SAFETY: the caller checked the shapes, and this function runs with the whole level.
    unsafe { tile::gemm::<_, R, T>(d, x, k, rows, n_tok, out) }
}

/// See [`crate::Kernels::gemm_f32`].
pub fn gemm_f32(_: Avx512, w: &[f32], x: &[f32], k: usize, out: &mut [f32]) {
    let (rows, n_tok) = scalar::gemm_shape(w.len(), x.len(), k, out.len());
    // SAFETY: the token proves the level; gemm_shape checked the layout.
    unsafe { gemm_imp(&Dense { w, k }, x, k, rows, n_tok, out) }
}

/// See [`crate::Kernels::gemm_bf16`].
pub fn gemm_bf16(_: Avx512, w: &[bf16], x: &[f32], k: usize, out: &mut [f32]) {
    let (rows, n_tok) = scalar::gemm_shape(w.len(), x.len(), k, out.len());
    // SAFETY: the token proves the level; gemm_shape checked the layout.
    unsafe { gemm_imp(&Dense { w, k }, x, k, rows, n_tok, out) }
}

/// See [`crate::Kernels::gemm_f16`].
pub fn gemm_f16(_: Avx512, w: &[f16], x: &[f32], k: usize, out: &mut [f32]) {
    let (rows, n_tok) = scalar::gemm_shape(w.len(), x.len(), k, out.len());
    // SAFETY: the token proves the level; gemm_shape checked the layout.
    unsafe { gemm_imp(&Dense { w, k }, x, k, rows, n_tok, out) }
}

/// See [`crate::Kernels::gemm_q4`].
#[allow(clippy::too_many_arguments)]
pub fn gemm_q4(
    _: Avx512,
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
    // SAFETY: the token proves the level; q4_shape checked the layout and the parameters.
    unsafe { gemm_imp(&d, x, k, rows, n_tok, out) }
}
