#![doc = include_str!("../README.md")]
#![warn(missing_docs)]
#![forbid(unsafe_code)]

mod assembler;
mod cancel;
mod codec;
mod continuous;
mod error;
mod events;
mod generator;
pub mod json;
mod logprob;
mod perplexity;
mod picker;
mod request;
mod stop;
mod tools;

pub use cancel::CancelToken;
pub use codec::TextCodec;
pub use continuous::{Batcher, BatcherStats, EventSink, PACED_STEP_RATIO};
pub use error::GenerateError;
pub use events::{
    Alternative, Channel, Event, Finish, FinishReason, StopCause, TokenLogprob, Usage,
};
pub use generator::{ChatSession, Generator, Prepared, DEFAULT_PREFILL_CHUNK};
pub use logprob::{log_softmax_at, log_sum_exp};
pub use nano_infer_constrain::{CompiledGrammar, ConstraintError, Grammar, Vocabulary};
pub use perplexity::{perplexity, Perplexity, WindowDone, BATCH as PERPLEXITY_BATCH};
pub use picker::ConstraintReport;
pub use request::{
    draw_seed, Params, Prompt, Request, Settings, MAX_STOP_STRINGS, MAX_TOP_LOGPROBS,
};
pub use stop::{StopMatcher, StopScan};
pub use tools::{ToolCall, ToolChoice};
