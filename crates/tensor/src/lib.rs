#![doc = include_str!("../README.md")]
#![warn(missing_docs)]

mod dtype;
mod error;
mod file;
mod page_cache;
mod spill;
mod store;
mod tensor;
mod writer;

pub use dtype::{Dtype, Element};
pub use error::TensorError;
pub use file::{SafetensorsFile, MAX_HEADER_BYTES};
pub use page_cache::evict_page_cache;
pub use spill::SpillFile;
pub use store::WeightStore;
pub use tensor::Tensor;
pub use writer::SafetensorsWriter;

/// Paging hints for memory-mapped tensor data (`madvise`), used to keep resident memory under
/// a budget when layers are streamed from disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Paging {
    /// Start reading the pages in ahead of use.
    WillNeed,
    /// Drop the pages wholly inside the tensor's bytes from this process's resident set (a page
    /// it shares with a neighbour stays); they are read back from the file on the next access.
    DontNeed,
}

/// The result type of this crate.
pub type Result<T, E = TensorError> = std::result::Result<T, E>;
