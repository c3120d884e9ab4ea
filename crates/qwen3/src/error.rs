//! Errors of loading and running a model. Each names the file, tensor or value at fault.

use std::path::PathBuf;

/// Why a model could not be loaded or a call could not run.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// A file of the model directory could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The file at fault.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// `config.json` is malformed or asks for something this engine does not implement.
    #[error("{path}: {reason}")]
    Config {
        /// The `config.json` at fault.
        path: PathBuf,
        /// What is wrong, in words.
        reason: String,
    },
    /// `num_hidden_layers` disagrees with the decoder layers the checkpoint holds.
    #[error("{path}: num_hidden_layers is {config}, but the checkpoint has {present} decoder layers (counting model.layers.N.input_layernorm.weight from N = 0)")]
    LayerCount {
        /// The `config.json` at fault.
        path: PathBuf,
        /// `num_hidden_layers` in the config.
        config: usize,
        /// Decoder layers found in the checkpoint.
        present: usize,
    },
    /// A safetensors file or tensor is unusable.
    #[error(transparent)]
    Tensor(#[from] nano_infer_tensor::TensorError),
    /// A weight or the quantization config is unusable.
    #[error(transparent)]
    Quant(#[from] nano_infer_quant::QuantError),
    /// A KV-cache operation failed (a full pool, a bad index).
    #[error(transparent)]
    Kv(#[from] nano_infer_kvcache::KvError),
    /// The memory budget is malformed or too small.
    #[error(transparent)]
    Offload(#[from] nano_infer_offload::OffloadError),
    /// An input token id is not in the vocabulary.
    #[error("token id {id} is outside the vocabulary (size {vocab_size})")]
    TokenOutOfRange {
        /// The token id.
        id: u32,
        /// The model's vocabulary size.
        vocab_size: usize,
    },
    /// The token picker (a grammar constraint around the sampler) could not choose.
    #[error("choosing the next token: {reason}")]
    TokenChoice {
        /// What went wrong, on one line.
        reason: String,
    },
    /// A forward pass was asked for no tokens.
    #[error("the prompt is empty: at least one token is needed")]
    EmptyInput,
    /// The sequence would grow past the session's context size.
    #[error("context full: {needed} positions needed but the context holds {max} (raise --ctx-size, up to the model's max_position_embeddings)")]
    ContextFull {
        /// Positions the sequence would hold.
        needed: usize,
        /// The context size.
        max: usize,
    },
    /// The logits of a forward pass hold a NaN or infinity: something in the weights or in the
    /// cached keys and values is not finite. `sequence` is the index of the sequence in the
    /// pass (0 for a session), `position` the token position whose logits are bad.
    #[error("the forward pass produced non-finite logits (NaN or infinity) at position {position} of sequence {sequence}: a weight or a cached key/value is not finite (checking the tensors at load names the culprit)")]
    NonFiniteLogits {
        /// Index of the sequence in the forward pass (0 in a session).
        sequence: usize,
        /// The token position whose logits are not finite.
        position: usize,
    },
    /// A capped or requested instruction set is not available on this CPU.
    #[error("instruction set `{0}` is not available on this CPU")]
    IsaUnavailable(nano_infer_simd::Isa),
    /// A [`BatchEngine`](crate::BatchEngine) sequence was decoded before its prompt was prefilled.
    #[error(
        "sequence {0} still has prompt tokens to prefill: call BatchEngine::prefill before decode"
    )]
    NotPrefilled(u64),
    /// A sequence id was given twice to one batch decode step.
    #[error("sequence {0} appears more than once in one decode step")]
    DuplicateSequence(u64),
}
