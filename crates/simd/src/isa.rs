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

/// The CPU features the kernels use or could use, detected once: what `-v` and the benchmark
/// report print, so a figure always comes with the instructions behind it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CpuFeatures {
    /// x86_64: AVX2, FMA and F16C (the `avx2` level).
    pub avx2_fma_f16c: bool,
    /// x86_64: AVX-512 F, BW and VL (the `avx512` level).
    pub avx512: bool,
    /// x86_64: AVX512-VNNI (`vpdpbusd` in the int8 kernels).
    pub avx512_vnni: bool,
    /// x86_64: AVX512-VBMI (`vpermi2b` in the FP8 decode GEMV).
    pub avx512_vbmi: bool,
    /// x86_64: AVX512-BF16.
    pub avx512_bf16: bool,
    /// x86_64: AVX-VNNI (VEX-encoded `vpdpbusd`).
    pub avx_vnni: bool,
    /// aarch64: NEON (the `neon` level).
    pub neon: bool,
    /// aarch64: the dot-product extension (`sdot` in the int8 kernels).
    pub dotprod: bool,
    /// aarch64: the int8 matrix-multiply extension.
    pub i8mm: bool,
    /// aarch64: half-precision arithmetic.
    pub fp16: bool,
}

impl CpuFeatures {
    /// The host's features, detected on the first call and cached.
    pub fn get() -> CpuFeatures {
        static FEATURES: OnceLock<CpuFeatures> = OnceLock::new();
        *FEATURES.get_or_init(Self::detect)
    }

    #[allow(unused_mut)] // only one architecture's block runs
    fn detect() -> CpuFeatures {
        let mut f = CpuFeatures::default();
        #[cfg(target_arch = "x86_64")]
        {
            f.avx2_fma_f16c = Isa::Avx2.is_available();
            f.avx512 = Isa::Avx512.is_available();
            f.avx512_vnni = is_x86_feature_detected!("avx512vnni");
            f.avx512_vbmi = is_x86_feature_detected!("avx512vbmi");
            f.avx512_bf16 = is_x86_feature_detected!("avx512bf16");
            f.avx_vnni = is_x86_feature_detected!("avxvnni");
        }
        #[cfg(target_arch = "aarch64")]
        {
            f.neon = std::arch::is_aarch64_feature_detected!("neon");
            f.dotprod = std::arch::is_aarch64_feature_detected!("dotprod");
            f.i8mm = std::arch::is_aarch64_feature_detected!("i8mm");
            f.fp16 = std::arch::is_aarch64_feature_detected!("fp16");
        }
        f
    }

    /// The names of the features present, in the order of the fields.
    pub fn names(&self) -> Vec<&'static str> {
        [
            (self.avx2_fma_f16c, "avx2+fma+f16c"),
            (self.avx512, "avx512f/bw/vl"),
            (self.avx512_vnni, "avx512vnni"),
            (self.avx512_vbmi, "avx512vbmi"),
            (self.avx512_bf16, "avx512bf16"),
            (self.avx_vnni, "avxvnni"),
            (self.neon, "neon"),
            (self.dotprod, "dotprod"),
            (self.i8mm, "i8mm"),
            (self.fp16, "fp16"),
        ]
        .into_iter()
        .filter_map(|(has, name)| has.then_some(name))
        .collect()
    }
}

impl std::fmt::Display for CpuFeatures {
    /// The present features separated by spaces (`none` when there are none).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names = self.names();
        if names.is_empty() {
            f.write_str("none")
        } else {
            f.write_str(&names.join(" "))
        }
    }
}
