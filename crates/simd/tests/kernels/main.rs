//! Every vector level the host has, against the scalar twins (memchr-style), plus known-answer
//! tests for the FP8 decoders. One test binary; a module per kernel family.
//!
//! Tolerances. The vector kernels sum in a different order (several accumulators, a horizontal
//! sum, fused multiply-adds) than the scalar twins' left-to-right sums. For a length-`k` sum of
//! products the classic bound on either order's error is `γ_k · Σ|aᵢbᵢ|` with `γ_k ≈ k·ε`, so two
//! different orders differ by at most about `2·k·ε·Σ|aᵢbᵢ|`. We use that bound (with a small
//! constant slack), scaled by the magnitude sum rather than the result, because cancellation can
//! make the result itself arbitrarily small.

mod fp8;
mod gemm;
mod int8;
mod panel;
mod vec;

use nano_infer_simd::{Isa, Kernels};

/// Kernel tables for every level the host has, scalar excluded (it is the oracle).
pub fn vector_levels() -> Vec<Kernels> {
    Isa::available()
        .into_iter()
        .filter(|&isa| isa != Isa::Scalar)
        .map(|isa| Kernels::for_isa(isa).expect("available level builds"))
        .collect()
}

pub fn scalar() -> Kernels {
    Kernels::for_isa(Isa::Scalar).unwrap()
}

/// Awkward lengths: 0, 1, lane±1 for 8 and 16 lanes, non-multiples of every group size, and the
/// sizes real models use.
pub const LENGTHS: &[usize] = &[
    0, 1, 2, 3, 7, 8, 9, 15, 16, 17, 31, 32, 33, 47, 63, 64, 65, 127, 128, 129, 255, 256, 257, 511,
    1000, 1024,
];

/// A tiny deterministic generator: proptest drives the seed and the shapes, the data follows.
#[derive(Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed ^ 0x9e37_79b9_7f4a_7c15)
    }
    pub fn next_u64(&mut self) -> u64 {
        // splitmix64
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// Uniform in `[-1, 1)`.
    pub fn f32(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }
    pub fn vec(&mut self, n: usize) -> Vec<f32> {
        (0..n).map(|_| self.f32()).collect()
    }
    pub fn u8(&mut self) -> u8 {
        self.next_u64() as u8
    }
}

/// Asserts `|got − want| ≤ 2·(k+4)·ε·mag + 1e-30`: see the module docs. `mag` is `Σ|aᵢbᵢ|` (or
/// the analogous magnitude) of the entry; the absolute floor covers subnormal results.
#[track_caller]
pub fn assert_close(got: f32, want: f32, k: usize, mag: f64, what: &str) {
    let tol = 2.0 * (k as f64 + 4.0) * f32::EPSILON as f64 * mag + 1e-30;
    let err = (got as f64 - want as f64).abs();
    assert!(
        err <= tol || (got.is_nan() && want.is_nan()) || got == want,
        "{what}: got {got}, want {want}, err {err:e} > tol {tol:e} (k = {k}, mag = {mag:e})"
    );
}

/// The suite is only as good as the levels it reaches: print them, and on x86_64 insist that a
/// host with AVX2 actually runs the AVX2 kernels.
#[test]
fn levels_under_test() {
    let levels: Vec<Isa> = vector_levels().iter().map(|k| k.isa()).collect();
    let features = nano_infer_simd::CpuFeatures::get();
    eprintln!("vector levels under test: {levels:?}; CPU features: {features}");
    // The feature report agrees with the levels the host offers.
    assert_eq!(features.avx512, Isa::Avx512.is_available());
    assert_eq!(features.avx2_fma_f16c, Isa::Avx2.is_available());
    assert_eq!(features.neon, Isa::Neon.is_available());
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("avx2")
        && is_x86_feature_detected!("fma")
        && is_x86_feature_detected!("f16c")
    {
        assert!(levels.contains(&Isa::Avx2));
    }
}

/// Dispatch is decided at run time, never by compile-time target features: `cargo xtask cross`
/// builds this suite with `-C target-cpu=x86-64` (no AVX at compile time), and the best level
/// must still be AVX2 or better on a CPU that has it (and NEON on every aarch64 CPU).
#[test]
fn best_level_is_detected_at_run_time() {
    let best = Isa::best();
    eprintln!(
        "best level: {best} (compiled with avx2: {})",
        cfg!(target_feature = "avx2")
    );
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("avx2")
        && is_x86_feature_detected!("fma")
        && is_x86_feature_detected!("f16c")
    {
        assert!(best >= Isa::Avx2, "AVX2 CPU, but the best level is {best}");
    }
    #[cfg(target_arch = "aarch64")]
    assert_eq!(best, Isa::Neon);
}
