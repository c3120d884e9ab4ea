//! The integration tests of `nano-infer-tensor`, one binary (ripgrep's layout).
//!
//! - `fixtures`: the committed Qwen3 fixture directories, checked against the `safetensors` crate.
//! - `errors`: every `TensorError` path, asserting the variant and that the message names the
//!   file and the tensor.
//! - `store`: model directories built at test time (single file, sharded, in memory).
//! - `alignment`: misaligned data is copied and still reads correctly; aligned data is not.
//! - `fuzz`: proptest over corrupted images: `from_bytes` returns, never panics.

mod util;

mod alignment;
mod errors;
mod fixtures;
mod fuzz;
mod store;
