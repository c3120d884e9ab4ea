#![doc = include_str!("../README.md")]
#![warn(missing_docs)]
#![forbid(unsafe_code)]

mod bytes;
mod chat;
mod error;
mod stream;
mod tokenizer;

pub use chat::{
    ChatFunctionCall, ChatMessage, ChatTemplate, ChatToolCall, RenderOptions, TEMPLATE_FUEL,
};
pub use error::TokenizerError;
pub use stream::StreamDecoder;
pub use tokenizer::Tokenizer;
