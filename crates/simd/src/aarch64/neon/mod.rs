//! NEON kernels (128-bit, 4 f32 lanes): dots and axpys, RMSNorm, softmax and SwiGLU (`vec`),
//! every f32-activation matmul on the shared [`crate::tile`] driver (4 rows × 4 tokens = 16
//! accumulators of 32 registers), and the integer-dot matmuls of [`crate::q8`] (`int8`, which
//! uses `sdot` from [`crate::aarch64::dotprod`] where the CPU has it).
//!
//! Half-precision conversion avoids the `fp16` intrinsics (their `float16x4_t` type is not
//! stable Rust): f16 bits `h` become f32 bits `(h & 0x7fff) << 13`, an f32 worth exactly `2⁻¹¹²`
//! times the value for normals and subnormals alike, so one multiply by `2¹¹²` finishes the job;
//! the all-ones exponent (inf/NaN) is patched with a select and the sign OR-ed back. aarch64
//! Linux runs with flush-to-zero off, so the subnormal intermediates are exact. FP8 codes are
//! first widened to f16 bit patterns exactly as on x86 (see `x86::avx2::gemm`).
//!
//! Tested under qemu-user from an x86_64 host (`cargo xtask cross`): `QEMU_CPU=cortex-a72` for
//! plain NEON, `neoverse-n1` for NEON + dotprod.

mod gemm;
pub(crate) mod int8;
mod vec;

pub use super::Neon;
pub use gemm::{gemm_bf16, gemm_f16, gemm_f32, gemm_fp8, gemm_panel, gemm_q4};
pub use int8::{gemm_q4x16_q8, gemm_q8x16_q8};
pub use vec::{rms_norm, silu_mul, softmax};

use core::arch::aarch64::*;
use half::{bf16, f16};

/// Element types that load as 4 f32 lanes.
pub(crate) trait Elem: Copy {
    /// # Safety
    /// `p..p+4` is readable and the CPU has NEON.
    unsafe fn load4(p: *const Self) -> float32x4_t;
    fn to_f32(self) -> f32;
}

impl<E: Elem> crate::mix::LoadLanes<Neon> for E {
    #[inline(always)]
    unsafe fn load(p: *const E) -> float32x4_t {
        // SAFETY: the caller's contract is load4's.
        unsafe { E::load4(p) }
    }
    #[inline(always)]
    fn to_f32(self) -> f32 {
        Elem::to_f32(self)
    }
}

impl Elem for f32 {
    #[inline(always)]
    unsafe fn load4(p: *const f32) -> float32x4_t {
        // SAFETY: the caller guarantees 4 readable floats.
        unsafe { vld1q_f32(p) }
    }
    fn to_f32(self) -> f32 {
        self
    }
}

impl Elem for bf16 {
    #[inline(always)]
    unsafe fn load4(p: *const bf16) -> float32x4_t {
        // SAFETY: the caller guarantees 4 readable bf16; vld1 has no alignment need beyond u16.
        unsafe { vreinterpretq_f32_u32(vshlq_n_u32::<16>(vmovl_u16(vld1_u16(p.cast())))) }
    }
    fn to_f32(self) -> f32 {
        bf16::to_f32(self)
    }
}

impl Elem for f16 {
    #[inline(always)]
    unsafe fn load4(p: *const f16) -> float32x4_t {
        // SAFETY: the caller guarantees 4 readable f16; the rest is register arithmetic.
        unsafe { f16_bits_to_f32(vmovl_u16(vld1_u16(p.cast()))) }
    }
    fn to_f32(self) -> f32 {
        f16::to_f32(self)
    }
}

/// Exact f16 → f32 of 4 bit patterns held in the low 16 bits of each lane (see the module docs).
#[inline(always)]
pub(crate) unsafe fn f16_bits_to_f32(h: uint32x4_t) -> float32x4_t {
    // SAFETY: register arithmetic; callers run under the neon target feature.
    unsafe {
        let em = vshlq_n_u32::<13>(vandq_u32(h, vdupq_n_u32(0x7fff)));
        let sign = vshlq_n_u32::<16>(vandq_u32(h, vdupq_n_u32(0x8000)));
        let finite = vreinterpretq_u32_f32(vmulq_f32(
            vreinterpretq_f32_u32(em),
            vdupq_n_f32(f32::from_bits((127 + 112) << 23)),
        ));
        let special = vceqq_u32(vandq_u32(h, vdupq_n_u32(0x7c00)), vdupq_n_u32(0x7c00));
        let inf_nan = vorrq_u32(em, vdupq_n_u32(0x7f80_0000));
        vreinterpretq_f32_u32(vorrq_u32(vbslq_u32(special, inf_nan, finite), sign))
    }
}

#[target_feature(enable = "neon")]
pub(crate) unsafe fn dot_imp<E: Elem>(a: &[E], b: &[f32]) -> f32 {
    let n = a.len();
    let (pa, pb) = (a.as_ptr(), b.as_ptr());
    let mut acc = [vdupq_n_f32(0.0); 4];
    let mut i = 0;
    while i + 16 <= n {
        for (u, acc) in acc.iter_mut().enumerate() {
            let j = i + 4 * u;
            // SAFETY: j + 4 <= i + 16 <= n = a.len() = b.len().
            *acc = unsafe { vfmaq_f32(*acc, E::load4(pa.add(j)), vld1q_f32(pb.add(j))) };
        }
        i += 16;
    }
    while i + 4 <= n {
        // SAFETY: i + 4 <= n = a.len() = b.len().
        acc[0] = unsafe { vfmaq_f32(acc[0], E::load4(pa.add(i)), vld1q_f32(pb.add(i))) };
        i += 4;
    }
    let mut s = vaddvq_f32(vaddq_f32(
        vaddq_f32(acc[0], acc[1]),
        vaddq_f32(acc[2], acc[3]),
    ));
    for j in i..n {
        s += a[j].to_f32() * b[j];
    }
    s
}

/// See [`crate::Kernels::dot_f32`].
pub fn dot_f32(_: Neon, a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "dot_f32: length mismatch");
    // SAFETY: the token proves NEON; the lengths match.
    unsafe { dot_imp(a, b) }
}

/// See [`crate::Kernels::dot_bf16`].
pub fn dot_bf16(_: Neon, a: &[bf16], x: &[f32]) -> f32 {
    assert_eq!(a.len(), x.len(), "dot_bf16: length mismatch");
    // SAFETY: the token proves NEON; the lengths match.
    unsafe { dot_imp(a, x) }
}

/// See [`crate::Kernels::dot_f16`].
pub fn dot_f16(_: Neon, a: &[f16], x: &[f32]) -> f32 {
    assert_eq!(a.len(), x.len(), "dot_f16: length mismatch");
    // SAFETY: the token proves NEON; the lengths match.
    unsafe { dot_imp(a, x) }
}

#[target_feature(enable = "neon")]
unsafe fn axpy_imp<E: Elem>(a: f32, x: &[E], y: &mut [f32]) {
    let n = x.len();
    let av = vdupq_n_f32(a);
    let (px, py) = (x.as_ptr(), y.as_mut_ptr());
    let mut i = 0;
    while i + 4 <= n {
        // SAFETY: i + 4 <= n = x.len() = y.len().
        unsafe {
            vst1q_f32(
                py.add(i),
                vfmaq_f32(vld1q_f32(py.add(i)), av, E::load4(px.add(i))),
            )
        };
        i += 4;
    }
    for j in i..n {
        y[j] += a * x[j].to_f32();
    }
}

/// See [`crate::Kernels::axpy`].
pub fn axpy(_: Neon, a: f32, x: &[f32], y: &mut [f32]) {
    assert_eq!(x.len(), y.len(), "axpy: length mismatch");
    // SAFETY: the token proves NEON; the lengths match.
    unsafe { axpy_imp(a, x, y) }
}

#[target_feature(enable = "neon")]
unsafe fn widen_imp<E: Elem>(src: &[E], dst: &mut [f32]) {
    let n = src.len();
    let mut i = 0;
    while i + 4 <= n {
        // SAFETY: i + 4 <= n = src.len() = dst.len().
        unsafe { vst1q_f32(dst.as_mut_ptr().add(i), E::load4(src.as_ptr().add(i))) };
        i += 4;
    }
    for (d, s) in dst[i..].iter_mut().zip(&src[i..]) {
        *d = s.to_f32();
    }
}

/// See [`crate::Kernels::widen_bf16`].
pub fn widen_bf16(_: Neon, src: &[bf16], dst: &mut [f32]) {
    assert_eq!(src.len(), dst.len(), "widen_bf16: length mismatch");
    // SAFETY: the token proves NEON; the lengths match.
    unsafe { widen_imp(src, dst) }
}

/// See [`crate::Kernels::widen_f16`].
pub fn widen_f16(_: Neon, src: &[f16], dst: &mut [f32]) {
    assert_eq!(src.len(), dst.len(), "widen_f16: length mismatch");
    // SAFETY: the token proves NEON; the lengths match.
    unsafe { widen_imp(src, dst) }
}

/// See [`crate::Kernels::dequant_fp8`]: the scalar twin for now (prefill only; its share of
/// the work is small next to the matmul).
pub fn dequant_fp8(_: Neon, format: crate::Fp8Format, codes: &[u8], scale: f32, dst: &mut [f32]) {
    crate::scalar::dequant_fp8(format, codes, scale, dst)
}

/// See [`crate::Kernels::quantize_q8`]: the scalar twin, which compiles to `frintn` and
/// `fmaxnm` here.
pub fn quantize_q8(
    _: Neon,
    x: &[f32],
    block: usize,
    xq: &mut [i8],
    xs: &mut [f32],
    isum: &mut [i32],
) {
    crate::scalar::quantize_q8(x, block, xq, xs, isum)
}

/// See [`crate::Kernels::dequant_q4`]: the scalar twin for now, as [`dequant_fp8`].
pub fn dequant_q4(_: Neon, bytes: &[u8], scale: f32, zero_scaled: f32, dst: &mut [f32]) {
    crate::scalar::dequant_q4(bytes, scale, zero_scaled, dst)
}

/// 16 columns (four vectors) × up to 4 query heads per pass: 16 accumulators ([`crate::mix`]).
#[target_feature(enable = "neon")]
unsafe fn mix_rows_imp<E: Elem>(p: &[f32], ldp: usize, v: &[E], d: usize, out: &mut [f32]) {
    // SAFETY: this function runs with neon.
    unsafe { crate::mix::mix_rows::<Neon, E, 4>(p, ldp, v, d, out) }
}

/// See [`crate::Kernels::mix_rows_f32`].
pub fn mix_rows_f32(_: Neon, p: &[f32], ldp: usize, v: &[f32], d: usize, out: &mut [f32]) {
    // SAFETY: the token proves NEON; the shapes are checked inside.
    unsafe { mix_rows_imp(p, ldp, v, d, out) }
}

/// See [`crate::Kernels::mix_rows_bf16`].
pub fn mix_rows_bf16(_: Neon, p: &[f32], ldp: usize, v: &[bf16], d: usize, out: &mut [f32]) {
    // SAFETY: the token proves NEON; the shapes are checked inside.
    unsafe { mix_rows_imp(p, ldp, v, d, out) }
}

/// See [`crate::Kernels::mix_rows_f16`].
pub fn mix_rows_f16(_: Neon, p: &[f32], ldp: usize, v: &[f16], d: usize, out: &mut [f32]) {
    // SAFETY: the token proves NEON; the shapes are checked inside.
    unsafe { mix_rows_imp(p, ldp, v, d, out) }
}

/// See [`crate::Kernels::axpy_bf16`].
pub fn axpy_bf16(_: Neon, a: f32, x: &[bf16], y: &mut [f32]) {
    assert_eq!(x.len(), y.len(), "axpy_bf16: length mismatch");
    // SAFETY: the token proves NEON; the lengths match.
    unsafe { axpy_imp(a, x, y) }
}

/// See [`crate::Kernels::axpy_f16`].
pub fn axpy_f16(_: Neon, a: f32, x: &[f16], y: &mut [f32]) {
    assert_eq!(x.len(), y.len(), "axpy_f16: length mismatch");
    // SAFETY: the token proves NEON; the lengths match.
    unsafe { axpy_imp(a, x, y) }
}

impl crate::tile::Lanes for Neon {
    type V = float32x4_t;
    const N: usize = 4;
    #[inline(always)]
    unsafe fn zero() -> float32x4_t {
        // SAFETY: the caller runs under the neon target feature.
        unsafe { vdupq_n_f32(0.0) }
    }
    #[inline(always)]
    unsafe fn fma(a: float32x4_t, b: float32x4_t, c: float32x4_t) -> float32x4_t {
        // SAFETY: the caller runs under the neon target feature. vfmaq_f32(c, a, b) = c + a·b.
        unsafe { vfmaq_f32(c, a, b) }
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> float32x4_t {
        // SAFETY: the caller guarantees 4 readable floats.
        unsafe { vld1q_f32(p) }
    }
    #[inline(always)]
    unsafe fn hsum(v: float32x4_t) -> f32 {
        // SAFETY: the caller runs under the neon target feature.
        unsafe { vaddvq_f32(v) }
    }
    #[inline(always)]
    unsafe fn splat(v: f32) -> float32x4_t {
        // SAFETY: the caller runs under the neon target feature.
        unsafe { vdupq_n_f32(v) }
    }
    #[inline(always)]
    unsafe fn store(p: *mut f32, v: float32x4_t) {
        // SAFETY: the caller guarantees 4 writable floats.
        unsafe { vst1q_f32(p, v) }
    }
}
