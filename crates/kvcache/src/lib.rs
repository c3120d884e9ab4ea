#![doc = include_str!("../README.md")]
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
