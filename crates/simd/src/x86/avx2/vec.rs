//! AVX2 vector kernels: dots, axpys, RMSNorm, softmax and SwiGLU.
//!
//! Dots use 4 accumulators (32 elements per iteration) to hide the FMA latency, then a scalar
//! tail. `exp` is the Cephes `expf` scheme (Cody–Waite reduction by ln 2, degree-5 polynomial,
//! exponent bits built with integer adds): within 2 ulp of libm over the range we use, which keeps
//! softmax and SiLU within ~2.5e-7 relative of the scalar twin (the model needs 1e-4 absolute).

use super::{hsum, Avx2Fma, Elem};
use core::arch::x86_64::*;
use half::{bf16, f16};

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot_imp<E: Elem>(a: &[E], b: &[f32]) -> f32 {
    let n = a.len();
    let (pa, pb) = (a.as_ptr(), b.as_ptr());
    let mut acc = [_mm256_setzero_ps(); 4];
    let mut i = 0;
    // SAFETY (all loads below): i + 32 (resp. i + 8) <= n = a.len() = b.len().
    while i + 32 <= n {
        for (u, acc) in acc.iter_mut().enumerate() {
            let j = i + 8 * u;
            // SAFETY: j + 8 <= n, see the loop condition.
            *acc =
                unsafe { _mm256_fmadd_ps(E::load8(pa.add(j)), _mm256_loadu_ps(pb.add(j)), *acc) };
        }
        i += 32;
    }
    while i + 8 <= n {
        // SAFETY: i + 8 <= n.
        acc[0] =
            unsafe { _mm256_fmadd_ps(E::load8(pa.add(i)), _mm256_loadu_ps(pb.add(i)), acc[0]) };
        i += 8;
    }
    let v = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
    // SAFETY: this function runs with avx2.
    let mut s = unsafe { hsum(v) };
    for j in i..n {
        s += a[j].to_f32() * b[j];
    }
    s
}

/// See [`crate::Kernels::dot_f32`].
pub fn dot_f32(_: Avx2Fma, a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "dot_f32: length mismatch");
    // SAFETY: the token proves avx2+fma+f16c; the lengths match.
    unsafe { dot_imp(a, b) }
}

/// See [`crate::Kernels::dot_bf16`].
pub fn dot_bf16(_: Avx2Fma, a: &[bf16], x: &[f32]) -> f32 {
    assert_eq!(a.len(), x.len(), "dot_bf16: length mismatch");
    // SAFETY: the token proves avx2+fma+f16c; the lengths match.
    unsafe { dot_imp(a, x) }
}

/// See [`crate::Kernels::dot_f16`].
pub fn dot_f16(_: Avx2Fma, a: &[f16], x: &[f32]) -> f32 {
    assert_eq!(a.len(), x.len(), "dot_f16: length mismatch");
    // SAFETY: the token proves avx2+fma+f16c; the lengths match.
    unsafe { dot_imp(a, x) }
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn axpy_imp<E: Elem>(a: f32, x: &[E], y: &mut [f32]) {
    let n = x.len();
    let av = _mm256_set1_ps(a);
    let (px, py) = (x.as_ptr(), y.as_mut_ptr());
    let mut i = 0;
    while i + 8 <= n {
        // SAFETY: i + 8 <= n = x.len() = y.len().
        unsafe {
            _mm256_storeu_ps(
                py.add(i),
                _mm256_fmadd_ps(av, E::load8(px.add(i)), _mm256_loadu_ps(py.add(i))),
            )
        };
        i += 8;
    }
    for j in i..n {
        y[j] += a * x[j].to_f32();
    }
}

/// See [`crate::Kernels::axpy`].
pub fn axpy(_: Avx2Fma, a: f32, x: &[f32], y: &mut [f32]) {
    assert_eq!(x.len(), y.len(), "axpy: length mismatch");
    // SAFETY: the token proves avx2+fma+f16c; the lengths match.
    unsafe { axpy_imp(a, x, y) }
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn widen_imp<E: Elem>(src: &[E], dst: &mut [f32]) {
    let n = src.len();
    let mut i = 0;
    while i + 8 <= n {
        // SAFETY: i + 8 <= n = src.len() = dst.len().
        unsafe { _mm256_storeu_ps(dst.as_mut_ptr().add(i), E::load8(src.as_ptr().add(i))) };
        i += 8;
    }
    for (d, s) in dst[i..].iter_mut().zip(&src[i..]) {
        *d = s.to_f32();
    }
}

/// See [`crate::Kernels::widen_bf16`].
pub fn widen_bf16(_: Avx2Fma, src: &[bf16], dst: &mut [f32]) {
    assert_eq!(src.len(), dst.len(), "widen_bf16: length mismatch");
    // SAFETY: the token proves avx2+fma+f16c; the lengths match.
    unsafe { widen_imp(src, dst) }
}

/// See [`crate::Kernels::widen_f16`].
pub fn widen_f16(_: Avx2Fma, src: &[f16], dst: &mut [f32]) {
    assert_eq!(src.len(), dst.len(), "widen_f16: length mismatch");
    // SAFETY: the token proves avx2+fma+f16c; the lengths match.
    unsafe { widen_imp(src, dst) }
}

/// 16 columns (two vectors) × up to 4 query heads per pass: 8 accumulators ([`crate::mix`]).
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn mix_rows_imp<E: Elem>(p: &[f32], ldp: usize, v: &[E], d: usize, out: &mut [f32]) {
    // SAFETY: this function runs with the level.
    unsafe { crate::mix::mix_rows::<Avx2Fma, E, 2>(p, ldp, v, d, out) }
}

/// See [`crate::Kernels::mix_rows_f32`].
pub fn mix_rows_f32(_: Avx2Fma, p: &[f32], ldp: usize, v: &[f32], d: usize, out: &mut [f32]) {
    // SAFETY: the token proves avx2+fma+f16c; the shapes are checked inside.
    unsafe { mix_rows_imp(p, ldp, v, d, out) }
}

/// See [`crate::Kernels::mix_rows_bf16`].
pub fn mix_rows_bf16(_: Avx2Fma, p: &[f32], ldp: usize, v: &[bf16], d: usize, out: &mut [f32]) {
    // SAFETY: the token proves avx2+fma+f16c; the shapes are checked inside.
    unsafe { mix_rows_imp(p, ldp, v, d, out) }
}

/// See [`crate::Kernels::mix_rows_f16`].
pub fn mix_rows_f16(_: Avx2Fma, p: &[f32], ldp: usize, v: &[f16], d: usize, out: &mut [f32]) {
    // SAFETY: the token proves avx2+fma+f16c; the shapes are checked inside.
    unsafe { mix_rows_imp(p, ldp, v, d, out) }
}

/// See [`crate::Kernels::axpy_bf16`].
pub fn axpy_bf16(_: Avx2Fma, a: f32, x: &[bf16], y: &mut [f32]) {
    assert_eq!(x.len(), y.len(), "axpy_bf16: length mismatch");
    // SAFETY: the token proves avx2+fma+f16c; the lengths match.
    unsafe { axpy_imp(a, x, y) }
}

/// See [`crate::Kernels::axpy_f16`].
pub fn axpy_f16(_: Avx2Fma, a: f32, x: &[f16], y: &mut [f32]) {
    assert_eq!(x.len(), y.len(), "axpy_f16: length mismatch");
    // SAFETY: the token proves avx2+fma+f16c; the lengths match.
    unsafe { axpy_imp(a, x, y) }
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn rms_norm_imp(x: &[f32], weight: &[f32], eps: f32, out: &mut [f32]) {
    // SAFETY: the lengths match (checked by the caller) and this function runs with avx2+fma.
    let ss = unsafe { dot_imp(x, x) };
    let inv = 1.0 / (ss / x.len() as f32 + eps).sqrt();
    let iv = _mm256_set1_ps(inv);
    let n = x.len();
    let mut i = 0;
    while i + 8 <= n {
        // SAFETY: i + 8 <= n and all three slices have length n. Same operation order as the
        // scalar twin, `w · (x · inv)`, so only the sum of squares differs.
        unsafe {
            let v = _mm256_mul_ps(_mm256_loadu_ps(x.as_ptr().add(i)), iv);
            let o = _mm256_mul_ps(_mm256_loadu_ps(weight.as_ptr().add(i)), v);
            _mm256_storeu_ps(out.as_mut_ptr().add(i), o);
        }
        i += 8;
    }
    for j in i..n {
        out[j] = weight[j] * (x[j] * inv);
    }
}

/// See [`crate::Kernels::rms_norm`].
pub fn rms_norm(_: Avx2Fma, x: &[f32], weight: &[f32], eps: f32, out: &mut [f32]) {
    assert!(
        x.len() == weight.len() && x.len() == out.len(),
        "rms_norm: length mismatch"
    );
    // SAFETY: the token proves avx2+fma+f16c; the lengths match.
    unsafe { rms_norm_imp(x, weight, eps, out) }
}

/// `e^x` lane-wise: `x = n·ln2 + r` with `|r| ≤ ln2/2`, `e^r` by the Cephes polynomial, `2ⁿ` from
/// exponent bits. Below −87.3 (where `2ⁿ` would be subnormal) the result is 0, above 88.37 it is
/// +∞; NaN stays NaN (the clamps return their second operand, `x`, when it is NaN).
#[inline(always)]
pub(crate) unsafe fn exp(x: __m256) -> __m256 {
    const LO: f32 = -87.3;
    const HI: f32 = 88.37;
    // SAFETY: register arithmetic; callers run under avx2+fma.
    unsafe {
        let xc = _mm256_min_ps(_mm256_set1_ps(HI), _mm256_max_ps(_mm256_set1_ps(LO), x));
        let n = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
            _mm256_mul_ps(xc, _mm256_set1_ps(std::f32::consts::LOG2_E)),
        );
        let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693_359_4), xc);
        let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.121_944_4e-4), r);
        let mut p = _mm256_set1_ps(1.987_569_1e-4);
        p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.398_199_9e-3));
        p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.333_452e-3));
        p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.166_579_6e-2));
        p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.666_666_5e-1));
        p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(0.5));
        p = _mm256_fmadd_ps(
            p,
            _mm256_mul_ps(r, r),
            _mm256_add_ps(r, _mm256_set1_ps(1.0)),
        );
        let pow2 = _mm256_slli_epi32::<23>(_mm256_add_epi32(
            _mm256_cvtps_epi32(n),
            _mm256_set1_epi32(127),
        ));
        let y = _mm256_mul_ps(p, _mm256_castsi256_ps(pow2));
        let y = _mm256_blendv_ps(
            y,
            _mm256_setzero_ps(),
            _mm256_cmp_ps::<_CMP_LT_OQ>(x, _mm256_set1_ps(LO)),
        );
        _mm256_blendv_ps(
            y,
            _mm256_set1_ps(f32::INFINITY),
            _mm256_cmp_ps::<_CMP_GT_OQ>(x, _mm256_set1_ps(HI)),
        )
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn softmax_imp(x: &mut [f32]) {
    let n = x.len();
    let p = x.as_mut_ptr();
    let mut mv = _mm256_set1_ps(f32::NEG_INFINITY);
    let mut i = 0;
    while i + 8 <= n {
        // SAFETY: i + 8 <= n = x.len().
        mv = _mm256_max_ps(mv, unsafe { _mm256_loadu_ps(p.add(i)) });
        i += 8;
    }
    let mut lanes = [0.0f32; 8];
    // SAFETY: `lanes` holds 8 floats.
    unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), mv) };
    let max = lanes
        .iter()
        .chain(&x[i..])
        .copied()
        .fold(f32::NEG_INFINITY, f32::max);
    let maxv = _mm256_set1_ps(max);
    let mut sv = _mm256_setzero_ps();
    i = 0;
    while i + 8 <= n {
        // SAFETY: i + 8 <= n = x.len(); exp needs avx2+fma, which this function has.
        unsafe {
            let e = exp(_mm256_sub_ps(_mm256_loadu_ps(p.add(i)), maxv));
            _mm256_storeu_ps(p.add(i), e);
            sv = _mm256_add_ps(sv, e);
        }
        i += 8;
    }
    // SAFETY: this function runs with avx2.
    let mut sum = unsafe { hsum(sv) };
    for v in &mut x[i..] {
        *v = (*v - max).exp();
        sum += *v;
    }
    let sumv = _mm256_set1_ps(sum);
    i = 0;
    while i + 8 <= n {
        // SAFETY: i + 8 <= n = x.len(). Division, not a reciprocal, to round like the scalar twin.
        unsafe { _mm256_storeu_ps(p.add(i), _mm256_div_ps(_mm256_loadu_ps(p.add(i)), sumv)) };
        i += 8;
    }
    for v in &mut x[i..] {
        *v /= sum;
    }
}

/// See [`crate::Kernels::softmax`].
pub fn softmax(_: Avx2Fma, x: &mut [f32]) {
    // SAFETY: the token proves avx2+fma+f16c.
    unsafe { softmax_imp(x) }
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn silu_mul_imp(gate: &mut [f32], up: &[f32]) {
    let n = gate.len();
    let one = _mm256_set1_ps(1.0);
    let mut i = 0;
    while i + 8 <= n {
        // SAFETY: i + 8 <= n = gate.len() = up.len(); exp needs avx2+fma, which we have.
        unsafe {
            let g = _mm256_loadu_ps(gate.as_ptr().add(i));
            let u = _mm256_loadu_ps(up.as_ptr().add(i));
            let e = exp(_mm256_sub_ps(_mm256_setzero_ps(), g));
            let s = _mm256_div_ps(g, _mm256_add_ps(one, e));
            _mm256_storeu_ps(gate.as_mut_ptr().add(i), _mm256_mul_ps(s, u));
        }
        i += 8;
    }
    for (g, u) in gate[i..].iter_mut().zip(&up[i..]) {
        *g = *g / (1.0 + (-*g).exp()) * u;
    }
}

/// See [`crate::Kernels::silu_mul`].
pub fn silu_mul(_: Avx2Fma, gate: &mut [f32], up: &[f32]) {
    assert_eq!(gate.len(), up.len(), "silu_mul: length mismatch");
    // SAFETY: the token proves avx2+fma+f16c; the lengths match.
    unsafe { silu_mul_imp(gate, up) }
}
