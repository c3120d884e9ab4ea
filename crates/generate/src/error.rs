//! Why a request could not be prepared or run.

use nano_infer_qwen3::ModelError;
use nano_infer_tokenizer::TokenizerError;
use std::path::PathBuf;

/// A failure of this crate. Request errors name the field at fault by its OpenAI name
/// (`temperature`, `messages[1].role`), so the CLI can map it to its flag and a server to its
/// `param`.
#[derive(Debug, thiserror::Error)]
pub enum GenerateError {
    /// Loading or running the model failed.
    #[error(transparent)]
    Model(#[from] ModelError),
    /// Loading the tokenizer or template, encoding, decoding or rendering failed.
    #[error(transparent)]
    Tokenizer(#[from] TokenizerError),
    /// Constrained decoding could not be set up or followed.
    #[error(transparent)]
    Constraint(#[from] nano_infer_constrain::ConstraintError),
    /// One request of a batch failed while it ran (the message names why).
    #[error("a request of the batch failed: {message}")]
    RequestFailed {
        /// The request's own error, on one line.
        message: String,
    },
    /// A request field with a value out of range or of the wrong type.
    #[error("invalid `{field}`: {reason}")]
    InvalidField {
        /// The field's OpenAI name (`temperature`, `messages[1].role`).
        field: String,
        /// What is wrong, in words.
        reason: String,
    },
    /// A text prompt for a model folder without `tokenizer.json`.
    #[error("{dir} has no tokenizer.json: a text prompt needs the tokenizer files (give token ids instead)")]
    NoTokenizer {
        /// The model directory.
        dir: PathBuf,
    },
    /// Chat messages for a model without a usable chat template.
    #[error("{dir}: the model has no usable chat template ({reason})")]
    NoChatTemplate {
        /// The model directory.
        dir: PathBuf,
        /// What is wrong, in words.
        reason: String,
    },
    /// A [`crate::CancelToken`] stopped work that has no partial result (perplexity).
    #[error("cancelled")]
    Cancelled,
    /// The prompt has no tokens.
    #[error("the prompt is empty: at least one token is needed")]
    EmptyPrompt,
    /// A prompt token id is not in the vocabulary.
    #[error("token id {id} is outside the vocabulary (ids go from 0 to {})", vocab_size - 1)]
    TokenOutOfVocab {
        /// The token id.
        id: u32,
        /// The model's vocabulary size.
        vocab_size: usize,
    },
    /// The prompt does not fit the context (`max` is the model's own limit).
    #[error("the prompt is {tokens} tokens, longer than the context ({ctx} tokens; this model allows up to {max})")]
    PromptTooLong {
        /// The prompt's length in tokens.
        tokens: usize,
        /// The context size in tokens.
        ctx: usize,
        /// The model's `max_position_embeddings`.
        max: usize,
    },
    /// A prompt text so long that even at the vocabulary's longest token it needs more tokens
    /// than the context holds: refused before it is tokenized.
    #[error("the prompt is {bytes} bytes of text, at least {min_tokens} tokens, longer than the context ({ctx} tokens)")]
    PromptTextTooLong {
        /// The prompt text's length in bytes.
        bytes: usize,
        /// The fewest tokens it can encode to.
        min_tokens: usize,
        /// The context size in tokens.
        ctx: usize,
    },
}

impl GenerateError {
    /// An [`GenerateError::InvalidField`].
    pub fn field(field: impl Into<String>, reason: impl Into<String>) -> Self {
        GenerateError::InvalidField {
            field: field.into(),
            reason: reason.into(),
        }
    }

    /// Whether the request was at fault (a client error), rather than the model or the engine.
    pub fn is_request_error(&self) -> bool {
        matches!(
            self,
            GenerateError::InvalidField { .. }
                | GenerateError::EmptyPrompt
                | GenerateError::TokenOutOfVocab { .. }
                | GenerateError::PromptTooLong { .. }
                | GenerateError::PromptTextTooLong { .. }
                | GenerateError::Tokenizer(TokenizerError::TemplateRender { .. })
        )
    }
}
