//! KV-cache storage for transformer inference, independent of any model code.
//!
//! Four mechanisms, from simplest to most shared:
//!
//! - [`KvCache`] (`contiguous`): one sequence, per-layer `(n_kv_heads, capacity, head_dim)`
//!   buffers grown by doubling; each head's rows are one slice. The single-user CPU path.
//! - [`BlockPool`] / [`BlockTable`] / [`PagedKvCache`] (`paged`): fixed-size refcounted blocks
//!   from one bounded pool, per-sequence block tables, fork with copy-on-write.
//! - [`PrefixCache`] (`prefix`): full blocks keyed by a chained hash of their token ids, longest
//!   cached prefix lookup, LRU eviction under a byte budget (vLLM's automatic prefix caching).
//!
//! The Qwen3 engine (`nano-infer-qwen3`'s `BatchEngine`) indexes its cached blocks with either
//! of the last two; both reuse the same whole blocks.
//! - [`RadixTree`] (`radix`): a radix tree over token sequences owning per-token KV handles,
//!   with lock counts and LRU leaf eviction (SGLang's RadixAttention).
//!
//! Keys and values enter as f32 and are stored as [`KvDtype`] (f32, bf16 or f16); reads hand
//! out [`KvRows`] in the stored type. Every fallible call returns [`KvError`] and leaves state
//! unchanged on error.
//!
//! ```
//! use nano_infer_kvcache::{KvCache, KvDtype};
//!
//! // 2 layers, 1 KV head of dim 4, at most 128 positions, stored as bf16.
//! let mut cache = KvCache::new(2, 1, 4, 128, KvDtype::Bf16);
//! let (k, v) = ([0.5f32; 3 * 4], [1.0f32; 3 * 4]); // (n_new = 3, n_kv_heads * head_dim)
//! for layer in 0..2 {
//!     cache.append(layer, &k, &v)?;
//! }
//! cache.advance(3);
//! let keys = cache.keys(1, 0); // (3, 4) rows of head 0, layer 1
//! let mut row = [0.0f32; 4];
//! keys.row_to_f32(2, 4, &mut row);
//! assert_eq!(row, [0.5; 4]);
//! # Ok::<(), nano_infer_kvcache::KvError>(())
//! ```
//!
//! Architecture invariant: this crate depends on nothing else in the workspace and has no
//! `unsafe`.

#![warn(missing_docs)]
#![forbid(unsafe_code)]

mod contiguous;
mod dtype;
mod error;
mod paged;
mod prefix;
mod radix;

pub use contiguous::KvCache;
pub use dtype::{KvDtype, KvRows};
pub use error::KvError;
pub use paged::{
    BlockId, BlockPool, BlockPoolConfig, BlockRows, BlockRowsIter, BlockTable, PagedKvCache, SeqId,
};
pub use prefix::{BlockHash, PrefixCache, PrefixMatch};
pub use radix::{NodeId, RadixMatch, RadixTree};
