//! aarch64 levels: NEON (Advanced SIMD), plus the dot-product extension for the integer matmuls.
//!
//! NEON is architecturally mandatory on aarch64, but the token is still checked at run time
//! (`is_aarch64_feature_detected!`) so the dispatch looks the same as on x86_64. `dotprod`
//! (Armv8.2, e.g. Neoverse N1, Apple M1, Cortex-A76) is not a separate [`crate::Isa`]: the NEON
//! integer kernels use it when [`NeonDotprod::try_new`] succeeds, as AVX-512 uses VNNI.

pub mod dotprod;
pub mod neon;

/// Proof that NEON is available. Only [`Neon::try_new`] builds one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Neon(());

impl Neon {
    /// `Some` when the CPU has NEON.
    pub fn try_new() -> Option<Self> {
        std::arch::is_aarch64_feature_detected!("neon").then_some(Self(()))
    }
}

/// Proof that NEON and the dot-product instructions (`sdot`/`udot`) are available. Only
/// [`NeonDotprod::try_new`] builds one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NeonDotprod(());

impl NeonDotprod {
    /// `Some` when the CPU has NEON and `dotprod`.
    pub fn try_new() -> Option<Self> {
        (Neon::try_new().is_some() && std::arch::is_aarch64_feature_detected!("dotprod"))
            .then_some(Self(()))
    }

    /// The NEON token this one implies.
    pub fn neon(self) -> Neon {
        Neon(())
    }
}
