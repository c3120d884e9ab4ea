//! The crate's one error type.
//!
//! Every variant that comes from a file names that file, so a user pointing the CLI at the wrong
//! folder sees which path was tried and why it failed. Errors from `tokenizers` are boxed trait
//! objects; they are kept as the `source` rather than flattened to strings so callers can still
//! walk the chain.

use std::path::PathBuf;

/// The boxed error type `tokenizers` returns.
pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Everything that can go wrong loading a tokenizer or template, encoding, decoding or rendering.
#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    /// A file could not be read (missing, unreadable).
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file at fault.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// `tokenizer.json` was read but `tokenizers` rejected it (corrupt or unsupported).
    #[error("cannot load tokenizer from {path}: {source}")]
    Load {
        /// The file at fault.
        path: PathBuf,
        /// The error `tokenizers` returned.
        #[source]
        source: BoxError,
    },
    /// A JSON file (e.g. `tokenizer_config.json`) is not valid JSON.
    #[error("invalid JSON in {path}: {source}")]
    Json {
        /// The file at fault.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: serde_json::Error,
    },
    /// The config has no usable `chat_template` string and no `chat_template.jinja` is beside it.
    #[error("no chat template in {path}: {reason}")]
    NoChatTemplate {
        /// The config file searched for a template.
        path: PathBuf,
        /// What is wrong, in words.
        reason: String,
    },
    /// The chat template does not parse as Jinja.
    #[error("chat template from {path} does not compile: {source}")]
    TemplateSyntax {
        /// The file at fault.
        path: PathBuf,
        /// minijinja's parse error (with the line).
        #[source]
        source: minijinja::Error,
    },
    /// Rendering failed, including a `raise_exception(...)` called by the template itself.
    #[error("rendering the chat template failed: {source}")]
    TemplateRender {
        /// minijinja's error (a `raise_exception` message, an undefined value, ...).
        #[source]
        source: minijinja::Error,
    },
    /// The chat template ran past its instruction budget (a runaway loop).
    #[error("rendering the chat template took more than {fuel} instructions (a runaway loop in the template?)")]
    TemplateBudget {
        /// The instruction budget the render ran out of.
        fuel: u64,
    },
    /// `tokenizer.json` loaded but its model has no tokens: every text would encode to `[]`.
    #[error("{path}: the tokenizer's vocabulary is empty")]
    EmptyVocabulary {
        /// The file at fault.
        path: PathBuf,
    },
    /// `tokenizers` failed to encode the text.
    #[error("encoding failed: {source}")]
    Encode {
        /// The error `tokenizers` returned.
        #[source]
        source: BoxError,
    },
    /// `tokenizers` failed to decode the ids.
    #[error("decoding failed: {source}")]
    Decode {
        /// The error `tokenizers` returned.
        #[source]
        source: BoxError,
    },
}
