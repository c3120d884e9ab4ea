#![doc = include_str!("../README.md")]
#![warn(missing_docs)]
#![forbid(unsafe_code)]
// `u64::is_multiple_of` is stable only since 1.87; the workspace MSRV is 1.85.

pub mod awq;
mod awq_cache;
mod dense;
mod error;
pub mod fp8;
mod linear;
mod panel;
mod pattern;
mod q8;
mod scheme;

pub use awq::{awq_pack, awq_unpack, AwqActivations, AwqSource, AwqWeight};
pub use awq_cache::{cache_file_name, AwqCache, AwqCacheKey, CacheMiss, AWQ_CACHE_VERSION};
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
