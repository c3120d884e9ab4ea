//! NEON RMSNorm, softmax and SwiGLU: 4 lanes, scalar tails.
//!
//! `exp` is the same Cephes `expf` scheme as `x86::avx2::vec` (Cody–Waite reduction by ln 2,
//! degree-5 polynomial, exponent bits built with integer adds), within 2 ulp of libm over the
//! range used; the NaN and clamp behaviour match too (NEON `fmin`/`fmax` propagate NaN).

use super::{dot_imp, Neon};
use core::arch::aarch64::*;

#[target_feature(enable = "neon")]
unsafe fn rms_norm_imp(x: &[f32], weight: &[f32], eps: f32, out: &mut [f32]) {
    // SAFETY: the lengths match (checked by the caller) and this function runs with neon.
    let ss = unsafe { dot_imp(x, x) };
    let inv = 1.0 / (ss / x.len() as f32 + eps).sqrt();
    let iv = vdupq_n_f32(inv);
    let n = x.len();
    let mut i = 0;
    while i + 4 <= n {
        // SAFETY: i + 4 <= n and all three slices have length n. Same operation order as the
        // scalar twin, `w · (x · inv)`, so only the sum of squares differs.
        unsafe {
            let v = vmulq_f32(vld1q_f32(x.as_ptr().add(i)), iv);
            let o = vmulq_f32(vld1q_f32(weight.as_ptr().add(i)), v);
            vst1q_f32(out.as_mut_ptr().add(i), o);
        }
        i += 4;
    }
    for j in i..n {
        out[j] = weight[j] * (x[j] * inv);
    }
}

/// See [`crate::Kernels::rms_norm`].
pub fn rms_norm(_: Neon, x: &[f32], weight: &[f32], eps: f32, out: &mut [f32]) {
    assert!(
        x.len() == weight.len() && x.len() == out.len(),
        "rms_norm: length mismatch"
    );
    // SAFETY: the token proves NEON; the lengths match.
    unsafe { rms_norm_imp(x, weight, eps, out) }
}

/// `e^x` lane-wise: `x = n·ln2 + r` with `|r| ≤ ln2/2`, `e^r` by the Cephes polynomial, `2ⁿ` from
/// exponent bits. Below −87.3 (where `2ⁿ` would be subnormal) the result is 0, above 88.37 it is
/// +∞; NaN stays NaN.
#[inline(always)]
unsafe fn exp(x: float32x4_t) -> float32x4_t {
    const LO: f32 = -87.3;
    const HI: f32 = 88.37;
    // SAFETY: register arithmetic; callers run under neon.
    unsafe {
        let xc = vminq_f32(vdupq_n_f32(HI), vmaxq_f32(vdupq_n_f32(LO), x));
        let n = vrndnq_f32(vmulq_f32(xc, vdupq_n_f32(std::f32::consts::LOG2_E)));
        // vfmsq_f32(c, a, b) = c − a·b, fused.
        let r = vfmsq_f32(xc, n, vdupq_n_f32(0.693_359_4));
        let r = vfmsq_f32(r, n, vdupq_n_f32(-2.121_944_4e-4));
        let mut p = vdupq_n_f32(1.987_569_1e-4);
        p = vfmaq_f32(vdupq_n_f32(1.398_199_9e-3), p, r);
        p = vfmaq_f32(vdupq_n_f32(8.333_452e-3), p, r);
        p = vfmaq_f32(vdupq_n_f32(4.166_579_6e-2), p, r);
        p = vfmaq_f32(vdupq_n_f32(1.666_666_5e-1), p, r);
        p = vfmaq_f32(vdupq_n_f32(0.5), p, r);
        p = vfmaq_f32(vaddq_f32(r, vdupq_n_f32(1.0)), p, vmulq_f32(r, r));
        let pow2 = vshlq_n_s32::<23>(vaddq_s32(vcvtnq_s32_f32(n), vdupq_n_s32(127)));
        let y = vmulq_f32(p, vreinterpretq_f32_s32(pow2));
        let y = vbslq_f32(vcltq_f32(x, vdupq_n_f32(LO)), vdupq_n_f32(0.0), y);
        vbslq_f32(vcgtq_f32(x, vdupq_n_f32(HI)), vdupq_n_f32(f32::INFINITY), y)
    }
}

#[target_feature(enable = "neon")]
unsafe fn softmax_imp(x: &mut [f32]) {
    let n = x.len();
    let p = x.as_mut_ptr();
    let mut mv = vdupq_n_f32(f32::NEG_INFINITY);
    let mut i = 0;
    while i + 4 <= n {
        // SAFETY: i + 4 <= n = x.len().
        mv = vmaxq_f32(mv, unsafe { vld1q_f32(p.add(i)) });
        i += 4;
    }
    let max = x[i..].iter().copied().fold(vmaxvq_f32(mv), f32::max);
    let maxv = vdupq_n_f32(max);
    let mut sv = vdupq_n_f32(0.0);
    i = 0;
    while i + 4 <= n {
        // SAFETY: i + 4 <= n = x.len(); exp needs neon, which this function has.
        unsafe {
            let e = exp(vsubq_f32(vld1q_f32(p.add(i)), maxv));
            vst1q_f32(p.add(i), e);
            sv = vaddq_f32(sv, e);
        }
        i += 4;
    }
    let mut sum = vaddvq_f32(sv);
    for v in &mut x[i..] {
        *v = (*v - max).exp();
        sum += *v;
    }
    let sumv = vdupq_n_f32(sum);
    i = 0;
    while i + 4 <= n {
        // SAFETY: i + 4 <= n = x.len(). Division, not a reciprocal, to round like the scalar twin.
        unsafe { vst1q_f32(p.add(i), vdivq_f32(vld1q_f32(p.add(i)), sumv)) };
        i += 4;
    }
    for v in &mut x[i..] {
        *v /= sum;
    }
}

/// See [`crate::Kernels::softmax`].
pub fn softmax(_: Neon, x: &mut [f32]) {
    // SAFETY: the token proves NEON.
    unsafe { softmax_imp(x) }
}

#[target_feature(enable = "neon")]
unsafe fn silu_mul_imp(gate: &mut [f32], up: &[f32]) {
    let n = gate.len();
    let one = vdupq_n_f32(1.0);
    let mut i = 0;
    while i + 4 <= n {
        // SAFETY: i + 4 <= n = gate.len() = up.len(); exp needs neon, which we have.
        unsafe {
            let g = vld1q_f32(gate.as_ptr().add(i));
            let u = vld1q_f32(up.as_ptr().add(i));
            let e = exp(vnegq_f32(g));
            let s = vdivq_f32(g, vaddq_f32(one, e));
            vst1q_f32(gate.as_mut_ptr().add(i), vmulq_f32(s, u));
        }
        i += 4;
    }
    for (g, u) in gate[i..].iter_mut().zip(&up[i..]) {
        *g = *g / (1.0 + (-*g).exp()) * u;
    }
}

/// See [`crate::Kernels::silu_mul`].
pub fn silu_mul(_: Neon, gate: &mut [f32], up: &[f32]) {
    assert_eq!(gate.len(), up.len(), "silu_mul: length mismatch");
    // SAFETY: the token proves NEON; the lengths match.
    unsafe { silu_mul_imp(gate, up) }
}
