//! aarch64 levels: NEON (Advanced SIMD).
//!
//! NEON is architecturally mandatory on aarch64, but the token is still checked at run time
//! (`is_aarch64_feature_detected!`) so the dispatch looks the same as on x86_64.

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
