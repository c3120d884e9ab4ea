//! Instruction-set levels, detected once and capped by the caller.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::OnceLock;

/// A level of vector instructions, ordered from least to most capable on each architecture.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Isa {
    /// Plain Rust: always available, the oracle for every other level.
    Scalar,
    /// x86_64 AVX2 + FMA + F16C.
    Avx2,
    /// x86_64 AVX-512 F/BW/VL (plus VNNI/BF16 where the CPU has them).
    Avx512,
    /// aarch64 NEON.
    Neon,
}

impl Isa {
    /// The level's name as the CLI's `--isa` spells it.
    pub fn name(self) -> &'static str {
        match self {
            Isa::Scalar => "scalar",
            Isa::Avx2 => "avx2",
            Isa::Avx512 => "avx512",
            Isa::Neon => "neon",
        }
    }

    /// Parses a `--isa` value.
    pub fn parse(name: &str) -> Option<Isa> {
        Self::ALL.into_iter().find(|isa| isa.name() == name)
    }

    const ALL: [Isa; 4] = [Isa::Scalar, Isa::Avx2, Isa::Avx512, Isa::Neon];

    /// Whether the host CPU can run this level.
    pub fn is_available(self) -> bool {
        match self {
            Isa::Scalar => true,
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => {
                is_x86_feature_detected!("avx2")
                    && is_x86_feature_detected!("fma")
                    && is_x86_feature_detected!("f16c")
            }
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => {
                Isa::Avx2.is_available()
                    && is_x86_feature_detected!("avx512f")
                    && is_x86_feature_detected!("avx512bw")
                    && is_x86_feature_detected!("avx512vl")
            }
            #[cfg(target_arch = "aarch64")]
            Isa::Neon => std::arch::is_aarch64_feature_detected!("neon"),
            #[allow(unreachable_patterns)]
            _ => false,
        }
    }

    /// Every level the host has, scalar first.
    pub fn available() -> Vec<Isa> {
        Self::ALL
            .into_iter()
            .filter(|isa| isa.is_available())
            .collect()
    }

    /// The host's best level, detected once.
    pub fn best() -> Isa {
        static BEST: OnceLock<Isa> = OnceLock::new();
        *BEST.get_or_init(|| Self::available().into_iter().max().unwrap_or(Isa::Scalar))
    }

    /// The best level under the cap set by [`set_max_isa`].
    pub fn active() -> Isa {
        let cap = MAX_ISA.load(Ordering::Relaxed);
        Self::available()
            .into_iter()
            .filter(|isa| (*isa as u8) <= cap)
            .max()
            .unwrap_or(Isa::Scalar)
    }
}

impl std::fmt::Display for Isa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

static MAX_ISA: AtomicU8 = AtomicU8::new(u8::MAX);

/// Caps the level [`Isa::active`] (and so [`crate::Kernels::best`]) may pick, process-wide.
pub fn set_max_isa(cap: Isa) {
    MAX_ISA.store(cap as u8, Ordering::Relaxed);
}
