//! The crate's error type.
//!
//! Every fallible operation returns [`KvError`]. Messages name the quantity that was out of
//! range and the bound it broke, so an engine can surface them to a user verbatim ("the prompt
//! needs 5000 positions but the context holds 4096"). Errors are returned *before* any state is
//! modified: a failed append or allocation leaves the cache exactly as it was.

use thiserror::Error;

/// Errors from KV-cache operations.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum KvError {
    /// Appending would take the sequence past its context length.
    #[error("KV cache is full: {needed} positions needed but the context holds at most {max}")]
    ContextFull {
        /// Positions the sequence would hold after the append.
        needed: usize,
        /// The configured maximum.
        max: usize,
    },
    /// The block pool has no free block for an allocation or a copy-on-write.
    #[error("KV block pool exhausted: {needed} free blocks needed but only {free} available")]
    PoolExhausted {
        /// Blocks the operation needed.
        needed: usize,
        /// Blocks that were free (including not-yet-materialised ones).
        free: usize,
    },
    /// A layer index at or beyond the number of layers.
    #[error("layer {layer} out of range: the cache has {n_layers} layers")]
    LayerOutOfRange {
        /// The index passed.
        layer: usize,
        /// Number of layers in the cache.
        n_layers: usize,
    },
    /// A KV-head index at or beyond the number of KV heads.
    #[error("KV head {head} out of range: the cache has {n_kv_heads} KV heads")]
    HeadOutOfRange {
        /// The index passed.
        head: usize,
        /// Number of KV heads in the cache.
        n_kv_heads: usize,
    },
    /// A key or value buffer whose length does not fit the cache's row shape.
    #[error("{what} has {got} elements, expected {expected}")]
    ShapeMismatch {
        /// Which buffer (e.g. "values", "keys (n_new * n_kv_heads * head_dim)").
        what: &'static str,
        /// The length that was required.
        expected: usize,
        /// The length that was passed.
        got: usize,
    },
    /// A configuration value that cannot describe a cache (zero block size, zero head_dim, ...).
    #[error("invalid KV cache configuration: {0}")]
    InvalidConfig(String),
    /// `advance` asked to commit positions that some layer has not appended yet.
    #[error("cannot advance by {requested}: layer {layer} has only {appended} appended positions")]
    NotAppended {
        /// Positions `advance` was asked to commit.
        requested: usize,
        /// The first layer that is behind.
        layer: usize,
        /// Positions that layer has pending.
        appended: usize,
    },
    /// A block id that the pool never handed out.
    #[error("block {block} does not exist: the pool has {n_blocks} blocks")]
    InvalidBlock {
        /// The id passed.
        block: u32,
        /// The pool's bound.
        n_blocks: usize,
    },
    /// Releasing or retaining a block whose refcount is already zero.
    #[error("block {0} is free: it was released more times than it was retained")]
    BlockNotInUse(u32),
    /// A sequence id the paged cache does not know (never added, or already removed).
    #[error("unknown sequence {0}")]
    UnknownSequence(u64),
    /// A radix-tree node handle that refers to an evicted (or never created) node.
    #[error("radix node {index} (generation {generation}) no longer exists")]
    StaleNode {
        /// Arena slot of the node.
        index: u32,
        /// Generation the handle was issued for.
        generation: u32,
    },
    /// `unlock` on a radix node whose lock count is already zero.
    #[error("radix node {0} is not locked")]
    NotLocked(u32),
    /// A KV dtype name that is not one of "f32", "bf16", "f16".
    #[error("unknown KV dtype {0:?}: expected one of \"f32\", \"bf16\", \"f16\"")]
    UnknownDtype(String),
}
