//! Weight residency under a memory budget: which decoder layers stay in RAM, and a background
//! thread that pages the next streamed layer in while the current one computes.
//!
//! Design. Weights are memory-mapped (see `nano-infer-tensor`), so "offloading" a layer means
//! letting the kernel drop its pages (`MADV_DONTNEED`) after use, and "loading" it means reading
//! its pages back in before use. A [`ResidencyPlan`] decides, from a byte budget, which layers are
//! *resident* (touched once, never dropped) and which are *streamed*; a [`Streamer`] runs one
//! prefetch thread that touches every page of the next streamed layer while the current layer
//! computes, and drops a streamed layer's pages as soon as it is done.
//!
//! Why mmap + madvise rather than `pread` into a buffer pool: measured with
//! `cargo xtask bench-offload-io` (one Qwen3-4B BF16 decoder layer, 192.5 MiB, single thread,
//! median of 5; AMD EPYC, 2 cores, ext4, Linux 6.18; "cold" evicts the file with
//! `posix_fadvise(DONTNEED)` before each run):
//!
//! | page cache | pread into a reused buffer | mmap: WILLNEED + touch, DONTNEED after |
//! |---|---:|---:|
//! | warm: bring in | 4.1 GB/s | 112 GB/s |
//! | warm: in + one read pass + release | 2.7 GB/s | 8.9 GB/s |
//! | cold: bring in | 1.3 GB/s | 1.6 GB/s |
//! | cold: in + one read pass + release | 1.1 GB/s | 1.3 GB/s |
//!
//! Warm (the file fits the page cache but not the budget: the common case), `pread` must copy
//! every byte into its buffer, while mapping cached pages costs about one fault per 2 MiB (the
//! kernel maps whole cached folios: ~100 faults per layer), so streaming by mmap is nearly free
//! and the kernels read the page cache directly. Cold, both wait for the disk, and WILLNEED's
//! readahead of the whole range keeps mmap slightly ahead. The mmap path also keeps every
//! kernel reading weights from one kind of memory and lets a quantized layer move in exactly
//! its packed form: a streamed AWQ layer's repacked copy lives in a `SpillFile` mapping and
//! moves like any checkpoint tensor. Its cost: the budget bounds this process's resident set,
//! while the kernel's page cache may keep dropped pages around as reclaimable cache (which is
//! what makes a re-read cheap when memory is free, and is given back first when it is not).
#![warn(missing_docs)]
#![forbid(unsafe_code)]

mod budget;
mod plan;
mod streamer;

pub use budget::{available_memory, format_size, parse_size};
pub use plan::{PlanInputs, ResidencyPlan};
pub use streamer::Streamer;

/// Errors of planning residency.
#[derive(Debug, thiserror::Error)]
pub enum OffloadError {
    /// A memory size does not parse (the text is given).
    #[error(
        "invalid memory size `{0}` (expected a number with an optional unit: 512M, 3GiB, 2.5G)"
    )]
    BadSize(String),
    /// The budget cannot hold what must stay resident.
    #[error("a memory budget of {budget} cannot hold the parts that must stay resident: {needed} ({detail})")]
    BudgetTooSmall {
        /// The budget, formatted.
        budget: String,
        /// The bytes that must stay resident, formatted.
        needed: String,
        /// What those are (embeddings, norms, lm_head, ...).
        detail: String,
    },
}
