//! nano-infer: CPU inference for Qwen3 checkpoints straight from a Hugging Face model directory.
//!
//! This facade re-exports every layer so an embedding user needs one dependency, the way ripgrep's
//! `grep` crate does. The layers, from the bottom of the stack up:
//!
//! - [`simd`]: kernels with runtime CPU-feature dispatch and scalar twins;
//! - [`team`]: the spinning thread team that runs the matmuls' and attention's parallel loops;
//! - [`tensor`]: memory-mapped safetensors, single and sharded;
//! - [`quant`]: weight formats (dense, AWQ int4, FP8) and their matmuls;
//! - [`kvcache`]: KV storage;
//! - [`offload`]: weight residency under a memory budget;
//! - [`tokenizer`]: `tokenizer.json` and the chat template;
//! - [`qwen3`]: the model, sessions and token-level generation;
//! - [`generate`]: requests (chat messages, text, ids) in, streamed text events out.
//!
//! ```no_run
//! use nano_infer::qwen3::{Model, LoadOptions};
//! let model = Model::load("path/to/Qwen3-4B", &LoadOptions::default()).unwrap();
//! let mut session = model.session();
//! let logits = session.prefill(&[9707, 11, 1879]).unwrap();
//! println!("{} logits", logits.len());
//! ```
#![warn(missing_docs)]
#![forbid(unsafe_code)]

pub use nano_infer_generate as generate;
pub use nano_infer_kvcache as kvcache;
pub use nano_infer_offload as offload;
pub use nano_infer_quant as quant;
pub use nano_infer_qwen3 as qwen3;
pub use nano_infer_simd as simd;
pub use nano_infer_team as team;
pub use nano_infer_tensor as tensor;
pub use nano_infer_tokenizer as tokenizer;
