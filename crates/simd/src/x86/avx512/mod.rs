//! AVX-512 F/BW/VL kernels (512-bit, 16 f32 lanes) for the matmuls; the element-wise kernels,
//! which are a small share of a forward pass, reuse the AVX2 ones.

mod fp8;
mod gemm;
mod int8;

pub use super::Avx512;
pub use fp8::gemm_fp8;
pub use gemm::{gemm_bf16, gemm_f16, gemm_f32, gemm_panel, gemm_q4};
pub use int8::{gemm_q4x16_q8, gemm_q8x16_q8};

use super::avx2;
use half::{bf16, f16};

/// See [`crate::Kernels::dot_f32`].
pub fn dot_f32(t: Avx512, a: &[f32], b: &[f32]) -> f32 {
    avx2::dot_f32(t.avx2(), a, b)
}

/// See [`crate::Kernels::dot_bf16`].
pub fn dot_bf16(t: Avx512, a: &[bf16], x: &[f32]) -> f32 {
    avx2::dot_bf16(t.avx2(), a, x)
}

/// See [`crate::Kernels::dot_f16`].
pub fn dot_f16(t: Avx512, a: &[f16], x: &[f32]) -> f32 {
    avx2::dot_f16(t.avx2(), a, x)
}

/// See [`crate::Kernels::axpy`].
pub fn axpy(t: Avx512, a: f32, x: &[f32], y: &mut [f32]) {
    avx2::axpy(t.avx2(), a, x, y)
}

/// See [`crate::Kernels::axpy_bf16`].
pub fn axpy_bf16(t: Avx512, a: f32, x: &[bf16], y: &mut [f32]) {
    avx2::axpy_bf16(t.avx2(), a, x, y)
}

/// See [`crate::Kernels::axpy_f16`].
pub fn axpy_f16(t: Avx512, a: f32, x: &[f16], y: &mut [f32]) {
    avx2::axpy_f16(t.avx2(), a, x, y)
}

/// See [`crate::Kernels::widen_bf16`]: memory-bound, the AVX2 loop keeps up.
pub fn widen_bf16(t: Avx512, src: &[bf16], dst: &mut [f32]) {
    avx2::widen_bf16(t.avx2(), src, dst)
}

/// See [`crate::Kernels::widen_f16`]: memory-bound, the AVX2 loop keeps up.
pub fn widen_f16(t: Avx512, src: &[f16], dst: &mut [f32]) {
    avx2::widen_f16(t.avx2(), src, dst)
}

/// See [`crate::Kernels::dequant_fp8`]: a small share of prefill, the AVX2 loop serves.
pub fn dequant_fp8(t: Avx512, format: crate::Fp8Format, codes: &[u8], scale: f32, dst: &mut [f32]) {
    avx2::dequant_fp8(t.avx2(), format, codes, scale, dst)
}

/// See [`crate::Kernels::quantize_q8`]: a few percent of an int8 matmul, the AVX2 loop serves.
pub fn quantize_q8(
    t: Avx512,
    x: &[f32],
    block: usize,
    xq: &mut [i8],
    xs: &mut [f32],
    isum: &mut [i32],
) {
    avx2::quantize_q8(t.avx2(), x, block, xq, xs, isum)
}

/// See [`crate::Kernels::dequant_q4`]: a small share of prefill, the AVX2 loop serves.
pub fn dequant_q4(t: Avx512, bytes: &[u8], scale: f32, zero_scaled: f32, dst: &mut [f32]) {
    avx2::dequant_q4(t.avx2(), bytes, scale, zero_scaled, dst)
}

/// See [`crate::Kernels::mix_rows_f32`].
pub fn mix_rows_f32(t: Avx512, p: &[f32], ldp: usize, v: &[f32], d: usize, out: &mut [f32]) {
    avx2::mix_rows_f32(t.avx2(), p, ldp, v, d, out)
}

/// See [`crate::Kernels::mix_rows_bf16`].
pub fn mix_rows_bf16(t: Avx512, p: &[f32], ldp: usize, v: &[bf16], d: usize, out: &mut [f32]) {
    avx2::mix_rows_bf16(t.avx2(), p, ldp, v, d, out)
}

/// See [`crate::Kernels::mix_rows_f16`].
pub fn mix_rows_f16(t: Avx512, p: &[f32], ldp: usize, v: &[f16], d: usize, out: &mut [f32]) {
    avx2::mix_rows_f16(t.avx2(), p, ldp, v, d, out)
}

/// See [`crate::Kernels::rms_norm`].
pub fn rms_norm(t: Avx512, x: &[f32], weight: &[f32], eps: f32, out: &mut [f32]) {
    avx2::rms_norm(t.avx2(), x, weight, eps, out)
}

/// See [`crate::Kernels::softmax`].
pub fn softmax(t: Avx512, x: &mut [f32]) {
    avx2::softmax(t.avx2(), x)
}

/// See [`crate::Kernels::silu_mul`].
pub fn silu_mul(t: Avx512, gate: &mut [f32], up: &[f32]) {
    avx2::silu_mul(t.avx2(), gate, up)
}
