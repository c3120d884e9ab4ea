//! Text-level generation for nano-infer: requests in, events out.
//!
//! The layer every front end shares — the CLI's one-shot run, chat, `batch`, `tokenize` and
//! `perplexity`, an HTTP server, an embedding program — so none of them renders templates,
//! checks prompts, overlays sampling settings or matches stop strings on its own:
//!
//! - a [`Request`] is a [`Prompt`] (chat messages through the model's own template, raw text,
//!   or token ids) plus [`Params`], the settings that differ from `generation_config.json`;
//!   [`Params::resolve`] lays them over the defaults field by field and names the field of any
//!   bad value;
//! - a [`Generator`] holds the model in an `Arc` with its tokenizer and template ([`TextCodec`]);
//!   [`Generator::prepare`] turns a request into ids and checked [`Settings`] (drawing a seed
//!   when none is given, so every run can be repeated);
//! - a [`ChatSession`] runs prepared requests one after another over its own KV cache (a chat's
//!   next turn prefills only what is new), [`Generator::run_batch`] runs many together;
//! - both report [`Event`]s: prefill progress, each token (with its log-probability when
//!   asked), text split into reasoning (`<think>…</think>`) and content at UTF-8 boundaries,
//!   never any part of a stop string, and a last [`Finish`] with the finish reason, usage and
//!   seed; a [`CancelToken`] stops a generation within one decode step or prefill chunk;
//! - [`perplexity`] scores a text in windows; [`json`] reads OpenAI chat-completions bodies and
//!   our `batch` lines into requests and writes answers in OpenAI's shapes.
//!
//! ```no_run
//! use nano_infer_generate::{CancelToken, Channel, Event, Generator, Prompt, Request};
//! use nano_infer_qwen3::LoadOptions;
//! # fn main() -> Result<(), nano_infer_generate::GenerateError> {
//! let generator = Generator::load("Qwen3-4B", &LoadOptions::default(), &mut |_| {})?;
//! let mut request = Request::new(Prompt::user("Why is the sky blue?", None, Some(true)));
//! request.params.max_tokens = Some(256);
//! let prepared = generator.prepare(&request)?;
//! let mut chat = generator.session();
//! let finish = chat.generate(&prepared, &CancelToken::new(), |event| match event {
//!     Event::Text { channel: Channel::Reasoning, text } => eprint!("{text}"),
//!     Event::Text { channel: Channel::Content, text } => print!("{text}"),
//!     _ => {}
//! })?;
//! println!("\n[{}; {} tokens; seed {}]", finish.reason().as_str(), finish.usage.completion_tokens, finish.seed);
//! # Ok(())
//! # }
//! ```
#![warn(missing_docs)]
#![forbid(unsafe_code)]

mod assembler;
mod cancel;
mod codec;
mod error;
mod events;
mod generator;
pub mod json;
mod logprob;
mod perplexity;
mod request;
mod stop;

pub use cancel::CancelToken;
pub use codec::TextCodec;
pub use error::GenerateError;
pub use events::{
    Alternative, Channel, Event, Finish, FinishReason, StopCause, TokenLogprob, Usage,
};
pub use generator::{ChatSession, Generator, Prepared, DEFAULT_PREFILL_CHUNK};
pub use logprob::{log_softmax_at, log_sum_exp};
pub use perplexity::{perplexity, Perplexity, WindowDone, BATCH as PERPLEXITY_BATCH};
pub use request::{
    draw_seed, Params, Prompt, Request, Settings, MAX_STOP_STRINGS, MAX_TOP_LOGPROBS,
};
pub use stop::{StopMatcher, StopScan};
