//! Weight formats of Qwen3 checkpoints and the matmuls that read them.
//!
//! A [`Linear`] is one `nn.Linear` weight in whatever format the checkpoint stores. Every format
//! computes `y = x · Wᵀ` through one entry, [`Linear::forward`], which splits the output rows over
//! the rayon pool and calls one `nano_infer_simd` kernel per row range. No format is ever
//! dequantized to a full f32 matrix on the forward path: memory stays near the file size.
//!
//! | format | `quantization_config` | stored | kept in memory | bits / weight |
//! |---|---|---|---|---|
//! | dense | none | `.weight` BF16/F16/F32 | the mapped tensor | 16 / 16 / 32 |
//! | AWQ ([`awq`]) | `awq`, `version: gemm`, `bits: 4` | `qweight`, `qzeros`, `scales` | repacked nibbles + f32 scale, zero·scale | 4 + 64/G (4.5 at G=128) |
//! | FP8 block ([`fp8`]) | `fp8`, `weight_block_size` | F8 `.weight` + `weight_scale_inv` | mapped codes + f32 scale per (row, block) | 8 + 32/128 |
//! | FP8 channel / tensor | `compressed-tensors` `float-quantized` | F8 `.weight` + `weight_scale` | mapped codes + one f32 per row | 8 + 32/in |
//! | int8 copy ([`Q8Weight`]) | none: built by [`Linear::to_q8`] | — | int8 tiles + f32 per row | 8 + 32/in |
//!
//! [`QuantScheme::from_config`] reads the config once per model; [`Linear::load`] then checks the
//! tensors each layer actually stores against it.
#![warn(missing_docs)]
#![forbid(unsafe_code)]
// `u64::is_multiple_of` is stable only since 1.87; the workspace MSRV is 1.85.

pub mod awq;
mod dense;
mod error;
pub mod fp8;
mod linear;
mod panel;
mod pattern;
mod q8;
mod scheme;

pub use awq::{awq_pack, awq_unpack, AwqActivations, AwqSource, AwqWeight};
pub use dense::DenseWeight;
pub use error::QuantError;
pub use fp8::Fp8Weight;
pub use linear::{Linear, LinearOptions, LinearSource};
pub use pattern::ModulePattern;
pub use q8::Q8Weight;
pub use scheme::{
    AwqConfig, CompressedFp8Config, CompressedGroup, Fp8BlockConfig, Fp8Strategy, QuantScheme,
};

/// The result type of this crate.
pub type Result<T, E = QuantError> = std::result::Result<T, E>;
