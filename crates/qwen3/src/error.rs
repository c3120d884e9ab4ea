//! Errors of loading and running a model. Each names the file, tensor or value at fault.

use std::path::PathBuf;

/// Why a model could not be loaded or a call could not run.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {reason}")]
    Config { path: PathBuf, reason: String },
    #[error("{path}: num_hidden_layers is {config}, but the checkpoint has {present} decoder layers (counting model.layers.N.input_layernorm.weight from N = 0)")]
    LayerCount {
        path: PathBuf,
        config: usize,
        present: usize,
    },
    #[error(transparent)]
    Tensor(#[from] nano_infer_tensor::TensorError),
    #[error(transparent)]
    Quant(#[from] nano_infer_quant::QuantError),
    #[error(transparent)]
    Kv(#[from] nano_infer_kvcache::KvError),
    #[error(transparent)]
    Offload(#[from] nano_infer_offload::OffloadError),
    #[error("token id {id} is outside the vocabulary (size {vocab_size})")]
    TokenOutOfRange { id: u32, vocab_size: usize },
    #[error("the prompt is empty: at least one token is needed")]
    EmptyInput,
    #[error("context full: {needed} positions needed but the context holds {max} (raise --ctx-size, up to the model's max_position_embeddings)")]
    ContextFull { needed: usize, max: usize },
    /// The logits of a forward pass hold a NaN or infinity: something in the weights or in the
    /// cached keys and values is not finite. `sequence` is the index of the sequence in the
    /// pass (0 for a session), `position` the token position whose logits are bad.
    #[error("the forward pass produced non-finite logits (NaN or infinity) at position {position} of sequence {sequence}: a weight or a cached key/value is not finite (checking the tensors at load names the culprit)")]
    NonFiniteLogits { sequence: usize, position: usize },
    #[error("instruction set `{0}` is not available on this CPU")]
    IsaUnavailable(nano_infer_simd::Isa),
    #[error(
        "sequence {0} still has prompt tokens to prefill: call BatchEngine::prefill before decode"
    )]
    NotPrefilled(u64),
    #[error("sequence {0} appears more than once in one decode step")]
    DuplicateSequence(u64),
}
