//! nano-infer: CPU inference for Qwen3 checkpoints straight from a Hugging Face model directory
//! — BF16/F16/F32, AWQ int4 and FP8 weights, multiplied in the format they are stored in, with
//! the answers of transformers' `Qwen3ForCausalLM`.
//!
//! This facade re-exports every layer so an embedding program needs one dependency, the way
//! ripgrep's `grep` crate does. The project is used three ways: embedded through this crate,
//! from the command line (`qwen3-infer`), and one crate at a time (`quant` or `kvcache` in
//! someone else's engine).
//!
//! # Text in, text out
//!
//! [`generate`] takes requests (chat messages through the model's own template, raw text or
//! token ids, with OpenAI-style settings) and streams events: text split into the model's
//! thinking and its answer, token ids, a final [`Finish`](generate::Finish) with the finish
//! reason and usage.
//!
//! ```no_run
//! use nano_infer::generate::{CancelToken, Channel, Event, Generator, Prompt, Request};
//! use nano_infer::qwen3::LoadOptions;
//! # fn main() -> Result<(), nano_infer::generate::GenerateError> {
//! let generator = Generator::load("models/Qwen3-4B", &LoadOptions::default(), &mut |_| {})?;
//! let mut request = Request::new(Prompt::user("Why is the sky blue?", None, Some(true)));
//! request.params.max_tokens = Some(256);
//! let prepared = generator.prepare(&request)?;
//! let finish = generator.session().generate(&prepared, &CancelToken::new(), |event| match event {
//!     Event::Text { channel: Channel::Reasoning, text } => eprint!("{text}"),
//!     Event::Text { channel: Channel::Content, text } => print!("{text}"),
//!     _ => {}
//! })?;
//! println!("\n[{}, seed {}]", finish.reason().as_str(), finish.seed);
//! # Ok(())
//! # }
//! ```
//!
//! # Token ids in, logits out
//!
//! ```no_run
//! use nano_infer::qwen3::{LoadOptions, Model};
//! let model = Model::load("models/Qwen3-4B", &LoadOptions::default())?;
//! let mut session = model.session();
//! let logits = session.prefill(&[9707, 11, 1879])?; // "Hello, world"
//! println!("{} logits", logits.len());
//! # Ok::<(), nano_infer::qwen3::ModelError>(())
//! ```
//!
//! # The layers
//!
//! From the bottom of the stack up; each is its own crate with its own page and README, and
//! dependencies only point down (`ARCHITECTURE.md` in the repository draws the map):
//!
//! | module | crate | what it holds |
//! |---|---|---|
//! | [`simd`] | `nano-infer-simd` | kernels with runtime CPU-feature dispatch (AVX2, AVX-512, NEON) and scalar twins |
//! | [`team`] | `nano-infer-team` | the spinning thread team that runs the matmuls' and attention's parallel loops |
//! | [`tensor`] | `nano-infer-tensor` | memory-mapped safetensors files and directories, validated, zero-copy |
//! | [`quant`] | `nano-infer-quant` | weight formats (dense, AWQ int4, FP8), `quantization_config`, [`Linear`](quant::Linear) |
//! | [`kvcache`] | `nano-infer-kvcache` | KV storage: contiguous, paged pool, prefix cache, radix tree |
//! | [`offload`] | `nano-infer-offload` | weight residency under a memory budget, with a prefetch thread |
//! | [`tokenizer`] | `nano-infer-tokenizer` | `tokenizer.json`, streaming detokenizer, chat template |
//! | [`qwen3`] | `nano-infer-qwen3` | the model: config, forward pass, sessions, sampling, batch engine |
//! | [`generate`] | `nano-infer-generate` | requests in, streamed text events out; OpenAI-shaped JSON |
//!
//! # Examples
//!
//! Each is a short program in the repository's [`examples/`] that uses only the public API
//! and runs on the small random-weight checkpoints in `testdata/fixtures` (their text is
//! noise, but every step runs); `tests/examples.rs` runs them all in `cargo test`.
//!
//! | example | shows | run |
//! |---|---|---|
//! | [`chat.rs`] | a streamed two-turn chat, thinking apart from the answer ([`generate`]) | `cargo run --release --example chat` |
//! | [`batch.rs`] | four requests sharing a system prompt, decoded together, prefix cache hits ([`Generator::run_batch`](generate::Generator::run_batch)) | `cargo run --release --example batch` |
//! | [`quant_matvec.rs`] | an AWQ or FP8 layer opened with [`tensor`] + [`quant`] alone and multiplied by a vector | `cargo run --release --example quant_matvec -- testdata/fixtures/fp8_block` |
//! | [`kvcache_prefix.rs`] | a paged pool and a radix tree serving two sequences that share a prefix ([`kvcache`] alone) | `cargo run --release --example kvcache_prefix` |
//! | [`offload.rs`] | loading under a memory budget: streamed layers, the residency report, identical results ([`offload`]) | `cargo run --release --example offload -- testdata/fixtures/bf16 13MiB` |
//! | [`greedy.rs`] | token ids in, greedy ids and decode speed out ([`qwen3`]) | `cargo run --release --example greedy -- testdata/fixtures/bf16 "4,17,99" 16` |
//!
//! # The command line
//!
//! The `qwen3-infer` binary (crate `nano-infer-cli`) runs the same library calls: a one-shot
//! answer (`qwen3-infer -m Qwen/Qwen3-4B -p "Hello"`), an interactive chat (`-i`), `batch`,
//! `perplexity` and `tokenize`. The repository README documents
//! [building](https://github.com/nano-infer/nano-infer#build),
//! [getting a model](https://github.com/nano-infer/nano-infer#get-a-model),
//! [every option](https://github.com/nano-infer/nano-infer#run),
//! [the JSON output](https://github.com/nano-infer/nano-infer#json-output),
//! [batch input](https://github.com/nano-infer/nano-infer#batch) and
//! [the supported CPUs](https://github.com/nano-infer/nano-infer#platforms).
//!
//! # The server
//!
//! `qwen3-infer serve` puts a model behind the OpenAI API with continuous batching; the HTTP
//! layer is its own crate, `nano-infer-server` (not re-exported here, so embedding the engine
//! pulls in no async runtime). The README's
//! [Serve](https://github.com/nano-infer/nano-infer#serve) section shows `curl` and `openai`
//! client calls, the endpoints, the limits and an nginx setup for many replicas.
//!
//! [`examples/`]: https://github.com/nano-infer/nano-infer/tree/main/examples
//! [`chat.rs`]: https://github.com/nano-infer/nano-infer/blob/main/examples/chat.rs
//! [`batch.rs`]: https://github.com/nano-infer/nano-infer/blob/main/examples/batch.rs
//! [`quant_matvec.rs`]: https://github.com/nano-infer/nano-infer/blob/main/examples/quant_matvec.rs
//! [`kvcache_prefix.rs`]: https://github.com/nano-infer/nano-infer/blob/main/examples/kvcache_prefix.rs
//! [`offload.rs`]: https://github.com/nano-infer/nano-infer/blob/main/examples/offload.rs
//! [`greedy.rs`]: https://github.com/nano-infer/nano-infer/blob/main/examples/greedy.rs
#![warn(missing_docs)]
#![forbid(unsafe_code)]

pub use nano_infer_constrain as constrain;
pub use nano_infer_generate as generate;
pub use nano_infer_kvcache as kvcache;
pub use nano_infer_offload as offload;
pub use nano_infer_quant as quant;
pub use nano_infer_qwen3 as qwen3;
pub use nano_infer_simd as simd;
pub use nano_infer_team as team;
pub use nano_infer_tensor as tensor;
pub use nano_infer_tokenizer as tokenizer;
