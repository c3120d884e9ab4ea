//! Qwen3 text <-> token ids for nano-infer.
//!
//! Three pieces, one module each:
//! - [`Tokenizer`] wraps HuggingFace `tokenizers` loaded from a `tokenizer.json`, so ids match
//!   transformers exactly (NFC normalizer, byte-level BPE, added tokens matched as single ids).
//! - [`StreamDecoder`] turns ids arriving one at a time into text that is always whole UTF-8
//!   characters, for printing tokens as they are generated.
//! - [`ChatTemplate`] renders the model's Jinja chat template (from `tokenizer_config.json` or
//!   `chat_template.jinja`) with minijinja set up like transformers' jinja2 environment.
//!
//! Token ids are `u32` everywhere. Nothing here panics on user input: every failure is a
//! [`TokenizerError`] naming the file or id at fault.
//!
//! ```no_run
//! use nano_infer_tokenizer::{ChatMessage, ChatTemplate, RenderOptions, StreamDecoder, Tokenizer};
//! # fn main() -> Result<(), nano_infer_tokenizer::TokenizerError> {
//! let tok = Tokenizer::from_dir("models/Qwen3-4B")?;
//! let tpl = ChatTemplate::from_dir("models/Qwen3-4B")?;
//! let opts = RenderOptions { add_generation_prompt: true, enable_thinking: Some(false) };
//! let prompt = tpl.render(&[ChatMessage::new("user", "Hi")], &opts)?;
//! let ids = tok.encode(&prompt)?;
//! let mut stream = StreamDecoder::new(&tok, true);
//! for id in ids /* generated ids, in a real loop */ {
//!     if let Some(text) = stream.step(id)? {
//!         print!("{text}");
//!     }
//! }
//! print!("{}", stream.finish()?);
//! # Ok(())
//! # }
//! ```
//!
//! Architecture Invariant: this crate depends on nothing else in the workspace.
#![warn(missing_docs)]
#![forbid(unsafe_code)]

mod bytes;
mod chat;
mod error;
mod stream;
mod tokenizer;

pub use chat::{ChatMessage, ChatTemplate, RenderOptions, TEMPLATE_FUEL};
pub use error::TokenizerError;
pub use stream::StreamDecoder;
pub use tokenizer::Tokenizer;
