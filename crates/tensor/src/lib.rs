//! Safetensors model directories, memory-mapped into zero-copy typed views.
//!
//! A Hugging Face model directory holds either one `model.safetensors` or several shards named
//! by `model.safetensors.index.json`. [`WeightStore::open_dir`] maps every file (no copy: the
//! kernels read weights straight from the page cache, so resident memory stays near the file
//! size) and validates each header completely before any tensor is handed out: a truncated or
//! corrupted file is a [`TensorError`] that names the file and the tensor, never a panic.
//!
//! Design costs: validation is O(number of tensors) at open time; a tensor whose data offset is
//! not aligned for its element type (the format does not promise alignment, though every writer
//! we know pads the header to 8 bytes) is copied once into an aligned buffer when it is fetched.
//!
//! [`SpillFile`] maps bytes computed at load (repacked AWQ layers) from an unlinked scratch file,
//! so a memory budget can stream them like the checkpoint's tensors.
//!
//! This crate and `simd` are the only ones allowed `unsafe`: here for `mmap` (and the paging
//! hints that go with it) alone.
#![warn(missing_docs)]

mod dtype;
mod error;
mod file;
mod page_cache;
mod spill;
mod store;
mod tensor;

pub use dtype::{Dtype, Element};
pub use error::TensorError;
pub use file::{SafetensorsFile, MAX_HEADER_BYTES};
pub use page_cache::evict_page_cache;
pub use spill::SpillFile;
pub use store::WeightStore;
pub use tensor::Tensor;

/// Paging hints for memory-mapped tensor data (`madvise`), used to keep resident memory under
/// a budget when layers are streamed from disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Paging {
    /// Start reading the pages in ahead of use.
    WillNeed,
    /// Drop the pages from this process's resident set; they are read back from the file on
    /// the next access.
    DontNeed,
}

/// The result type of this crate.
pub type Result<T, E = TensorError> = std::result::Result<T, E>;
