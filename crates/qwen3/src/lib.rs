#![doc = include_str!("../README.md")]
#![warn(missing_docs)]
#![forbid(unsafe_code)]

mod attention;
mod batch;
mod config;
mod error;
mod generation;
mod model;
mod prompt_cache;
mod rope;
mod sampler;
mod session;
mod weights;

pub use batch::{
    run_batch, BatchEngine, BatchOutput, BatchRequest, CacheStats, EngineOptions, PrefixIndex,
    SampledToken,
};
pub use config::{Qwen3Config, RopeScaling};
pub use error::ModelError;
pub use generation::{
    generate, GenerateOptions, GenerateStep, Generation, GenerationDefaults, StopReason,
};
pub use model::{AwqCacheDir, LoadOptions, LoadProgress, Logits, Model};
pub use nano_infer_kvcache::{KvDtype, KvError, SeqId};
pub use nano_infer_quant::AwqActivations;
pub use nano_infer_simd::{CpuFeatures, Isa};
pub use prompt_cache::{model_fingerprint, PromptCacheError};
pub use rope::Rope;
pub use sampler::{Sampler, SamplingParams, TokenPicker};
pub use session::Session;
pub use weights::{AwqCacheStatus, LmHead};
