//! The Qwen3 model: `config.json`, weights, the forward pass, and sessions.
//!
//! ```no_run
//! use nano_infer_qwen3::{LoadOptions, Model};
//! let model = Model::load("Qwen3-4B", &LoadOptions::default())?;
//! let mut session = model.session();
//! let logits = session.prefill(&[9707, 11, 1879])?;
//! let next = logits.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).unwrap().0 as u32;
//! session.decode(next)?;
//! # Ok::<(), nano_infer_qwen3::ModelError>(())
//! ```
//!
//! The forward pass follows transformers' `modeling_qwen3.py` step for step, in f32 from the
//! stored weights; every matmul goes through `nano_infer_quant::Linear`, one kernel per weight
//! format.
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
pub use model::{LoadOptions, LoadProgress, Logits, Model};
pub use nano_infer_kvcache::{KvDtype, SeqId};
pub use nano_infer_quant::AwqActivations;
pub use nano_infer_simd::{CpuFeatures, Isa};
pub use prompt_cache::{model_fingerprint, PromptCacheError};
pub use rope::Rope;
pub use sampler::{Sampler, SamplingParams};
pub use session::Session;
pub use weights::LmHead;
