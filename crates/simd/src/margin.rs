//! The compute margin of the decode kernels: each GEMV run on a weight matrix that fits in L2,
//! on one thread, so that its rate is what the core can compute rather than what memory feeds.
//!
//! Why. Decode streams every weight once per token, so a kernel is at the memory bound only if
//! it can digest weight bytes faster than one core's share of the bandwidth arrives. Measured
//! from DRAM, a fast kernel and a barely fast enough one look the same on a wide host, and the
//! second falls behind on a narrower core (Zen 1 splits each 256-bit op in two). In cache, the
//! ratio *in-cache bytes/s ÷ single-thread read bandwidth* is the headroom: the target
//! is ≥ 2.5 at `--isa avx2`, so that half the vector throughput still outruns memory.
//!
//! Shapes: `k = 2560` (Qwen3-4B's hidden size: the gate/up/q/k/v input) and as many rows (a
//! multiple of 16, for the int8 tiles) as keep the bytes read (codes and their scales, exactly
//! what `Model::bytes_per_token` counts for the layer) at most [`IN_CACHE_BYTES`]: 160–185 KiB,
//! inside the smallest L2 of the x86 cores we target (256 KiB on Skylake clients; 512 KiB on
//! Zen 1–3, 1 MiB on Zen 4). Used by the criterion benches (`benches/kernels.rs`,
//! `gemv_in_cache`) and by `cargo xtask bench`, which prints it beside the bandwidth.

use crate::q8::{pack_q4x16, tile_params};
use crate::{bf16, Fp8Format, Kernels, Q8Acts};

/// The most bytes one in-cache GEMV reads (codes plus scales).
pub const IN_CACHE_BYTES: usize = 192 << 10;
/// Input features of the in-cache GEMVs.
pub const IN_CACHE_K: usize = 2560;

/// A decode (one-token) kernel, in the configuration a checkpoint format runs it in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecodeKernel {
    /// BF16 weights (`gemm_bf16`).
    Bf16,
    /// FP8 E4M3 with 128×128 block scales (`gemm_fp8`, `block_k = 128`).
    Fp8E4m3Block,
    /// FP8 E4M3 with one scale per row (per-channel; per-tensor runs the same way).
    Fp8E4m3Channel,
    /// FP8 E5M2 with 128×128 block scales.
    Fp8E5m2Block,
    /// AWQ int4, group 128, f32 activations (`gemm_q4`, the default).
    AwqF32,
    /// AWQ int4, group 128, int8 activations (`gemm_q4x16_q8`, `--awq-int8`; quantizing the
    /// activations is timed too, as it runs once per matmul).
    AwqInt8,
}

impl DecodeKernel {
    /// Every decode kernel.
    pub const ALL: [DecodeKernel; 6] = [
        DecodeKernel::Bf16,
        DecodeKernel::Fp8E4m3Block,
        DecodeKernel::Fp8E4m3Channel,
        DecodeKernel::Fp8E5m2Block,
        DecodeKernel::AwqF32,
        DecodeKernel::AwqInt8,
    ];

    /// A short name for tables and benchmark ids.
    pub fn name(self) -> &'static str {
        match self {
            DecodeKernel::Bf16 => "bf16",
            DecodeKernel::Fp8E4m3Block => "fp8_e4m3_block128",
            DecodeKernel::Fp8E4m3Channel => "fp8_e4m3_channel",
            DecodeKernel::Fp8E5m2Block => "fp8_e5m2_block128",
            DecodeKernel::AwqF32 => "awq_g128_f32",
            DecodeKernel::AwqInt8 => "awq_g128_int8",
        }
    }

    /// Bytes one row reads at `k = IN_CACHE_K`: codes plus scales (and AWQ's zero·scales).
    fn row_bytes(self) -> usize {
        let k = IN_CACHE_K;
        match self {
            DecodeKernel::Bf16 => 2 * k,
            DecodeKernel::Fp8E4m3Block | DecodeKernel::Fp8E5m2Block => k + 4 * k.div_ceil(128),
            DecodeKernel::Fp8E4m3Channel => k + 4,
            DecodeKernel::AwqF32 | DecodeKernel::AwqInt8 => k / 2 + 8 * (k / 128),
        }
    }
}

/// One decode kernel's GEMV over an in-cache weight matrix, ready to run repeatedly.
#[derive(Debug)]
pub struct InCacheGemv {
    kernel: DecodeKernel,
    kernels: Kernels,
    rows: usize,
    codes: Vec<u8>,
    bf16: Vec<bf16>,
    scales: Vec<f32>,
    zeros: Vec<f32>,
    x: Vec<f32>,
    xq: Q8Acts,
    out: Vec<f32>,
}

impl InCacheGemv {
    /// Builds the weights (deterministic pseudo-random codes: the kernels' speed does not
    /// depend on them) for `kernel`, to run on `kernels`.
    pub fn new(kernel: DecodeKernel, kernels: Kernels) -> Self {
        let k = IN_CACHE_K;
        let rows = IN_CACHE_BYTES / kernel.row_bytes() / 16 * 16;
        let bytes = pseudo_random_bytes(rows * k, 1);
        let x: Vec<f32> = pseudo_random_bytes(k, 2)
            .iter()
            .map(|&b| b as f32 / 128.0 - 1.0)
            .collect();
        let groups = k / 128;
        let (codes, bf16, scales, zeros) = match kernel {
            DecodeKernel::Bf16 => {
                let w = bytes
                    .iter()
                    .map(|&b| bf16::from_f32(b as f32 / 128.0 - 1.0))
                    .collect();
                (Vec::new(), w, Vec::new(), Vec::new())
            }
            // Finite codes only (no E4M3 NaN `S.1111.111`, no E5M2 `S.11111.xx`): `& 0x77`.
            DecodeKernel::Fp8E4m3Block | DecodeKernel::Fp8E5m2Block => {
                let codes = bytes.iter().map(|&b| b & 0x77).collect();
                (
                    codes,
                    Vec::new(),
                    vec![0.01; rows * k.div_ceil(128)],
                    Vec::new(),
                )
            }
            DecodeKernel::Fp8E4m3Channel => {
                let codes = bytes.iter().map(|&b| b & 0x77).collect();
                (codes, Vec::new(), vec![0.01; rows], Vec::new())
            }
            DecodeKernel::AwqF32 => {
                let packed = bytes[..rows * k / 2].to_vec();
                let (s, z) = (vec![0.01; rows * groups], vec![0.08; rows * groups]);
                (packed, Vec::new(), s, z)
            }
            DecodeKernel::AwqInt8 => {
                let nibbles: Vec<u8> = bytes.iter().map(|&b| b & 15).collect();
                let s = tile_params(&vec![0.01; rows * groups], rows, groups);
                let z = tile_params(&vec![0.08; rows * groups], rows, groups);
                (pack_q4x16(&nibbles, rows, k), Vec::new(), s, z)
            }
        };
        Self {
            kernel,
            kernels,
            rows,
            codes,
            bf16,
            scales,
            zeros,
            x,
            xq: Q8Acts::new(),
            out: vec![0.0; rows],
        }
    }

    /// The kernel this runs.
    pub fn kernel(&self) -> DecodeKernel {
        self.kernel
    }

    /// Weight bytes one [`InCacheGemv::run`] reads: codes plus scales.
    pub fn weight_bytes(&self) -> u64 {
        (self.rows * self.kernel.row_bytes()) as u64
    }

    /// One GEMV; returns a value of the output so the work cannot be optimised away.
    pub fn run(&mut self) -> f32 {
        let (k, kern) = (IN_CACHE_K, self.kernels);
        match self.kernel {
            DecodeKernel::Bf16 => kern.gemm_bf16(&self.bf16, &self.x, k, &mut self.out),
            DecodeKernel::Fp8E4m3Block | DecodeKernel::Fp8E5m2Block => {
                let format = if self.kernel == DecodeKernel::Fp8E5m2Block {
                    Fp8Format::E5M2
                } else {
                    Fp8Format::E4M3
                };
                kern.gemm_fp8(
                    format,
                    &self.codes,
                    &self.scales,
                    128,
                    &self.x,
                    k,
                    &mut self.out,
                )
            }
            DecodeKernel::Fp8E4m3Channel => kern.gemm_fp8(
                Fp8Format::E4M3,
                &self.codes,
                &self.scales,
                k,
                &self.x,
                k,
                &mut self.out,
            ),
            DecodeKernel::AwqF32 => kern.gemm_q4(
                &self.codes,
                &self.scales,
                &self.zeros,
                128,
                &self.x,
                k,
                &mut self.out,
            ),
            DecodeKernel::AwqInt8 => {
                kern.quantize_q8(&self.x, k, 32, 128, &mut self.xq);
                kern.gemm_q4x16_q8(
                    &self.codes,
                    &self.scales,
                    &self.zeros,
                    128,
                    &self.xq,
                    &mut self.out,
                )
            }
        }
        self.out[self.rows / 2]
    }
}

/// xorshift bytes: deterministic, spread over all 256 values.
fn pseudo_random_bytes(n: usize, seed: u32) -> Vec<u8> {
    let mut s = seed.wrapping_mul(2_654_435_761) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            (s >> 11) as u8
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every kernel fits the budget, and its result on each level is the scalar twin's within
    /// the summation-order tolerance the kernel tests use: the benchmark times real work.
    #[test]
    fn in_cache_gemvs_fit_and_agree_with_scalar() {
        let scalar = Kernels::for_isa(crate::Isa::Scalar).expect("scalar is always there");
        for kernel in DecodeKernel::ALL {
            let mut want = InCacheGemv::new(kernel, scalar);
            assert!(want.weight_bytes() as usize <= IN_CACHE_BYTES, "{kernel:?}");
            assert!(want.rows >= 16, "{kernel:?}: {} rows", want.rows);
            want.run();
            for isa in crate::Isa::available() {
                let mut got = InCacheGemv::new(kernel, Kernels::for_isa(isa).unwrap());
                got.run();
                for (a, b) in got.out.iter().zip(&want.out) {
                    let tol = 1e-3 * (1.0 + b.abs());
                    assert!((a - b).abs() <= tol, "{kernel:?} at {isa}: {a} vs {b}");
                }
            }
        }
    }
}
