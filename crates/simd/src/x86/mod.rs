//! x86_64 levels: AVX2+FMA+F16C and AVX-512 F/BW/VL.
//!
//! Each level is a token type that only `try_new()` builds, after checking the CPU at run time
//! (`is_x86_feature_detected!`, which caches its answer). The kernels in [`avx2`] and [`avx512`]
//! take the token by value as proof, so their `unsafe` calls into `#[target_feature]` code are
//! sound by construction and the binary stays portable (no `-C target-cpu=native` needed).

pub mod avx2;
pub mod avx512;
mod few;

/// Proof that AVX2, FMA and F16C are available. Only [`Avx2Fma::try_new`] builds one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Avx2Fma(());

impl Avx2Fma {
    /// `Some` when the CPU has AVX2, FMA and F16C.
    pub fn try_new() -> Option<Self> {
        (is_x86_feature_detected!("avx2")
            && is_x86_feature_detected!("fma")
            && is_x86_feature_detected!("f16c"))
        .then_some(Self(()))
    }
}

/// Proof that AVX-512 F/BW/VL are available, on top of everything [`Avx2Fma`] proves.
/// Only [`Avx512::try_new`] builds one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Avx512(());

impl Avx512 {
    /// `Some` when the CPU has AVX-512 F, BW and VL as well as AVX2, FMA and F16C.
    pub fn try_new() -> Option<Self> {
        (Avx2Fma::try_new().is_some()
            && is_x86_feature_detected!("avx512f")
            && is_x86_feature_detected!("avx512bw")
            && is_x86_feature_detected!("avx512vl"))
        .then_some(Self(()))
    }

    /// Every AVX-512 CPU we accept also has AVX2+FMA+F16C (checked in `try_new`), so the lower
    /// level's kernels are usable where AVX-512 has no dedicated version.
    pub fn avx2(self) -> Avx2Fma {
        Avx2Fma(())
    }
}
