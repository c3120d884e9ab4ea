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
//! Why mmap + madvise rather than `pread` into a buffer pool: both read the same bytes from the
//! page cache or disk, but the mmap path needs no copy into a second buffer, keeps every kernel
//! reading weights from one kind of memory, and lets a quantized layer move in exactly its packed
//! on-disk form. Its cost: the budget bounds this process's resident set, while the kernel's page
//! cache may keep dropped pages around as reclaimable cache (which is what makes a re-read cheap
//! when memory is free, and is given back first when it is not).
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
    #[error(
        "invalid memory size `{0}` (expected a number with an optional unit: 512M, 3GiB, 2.5G)"
    )]
    BadSize(String),
    #[error("a memory budget of {budget} cannot hold the parts that must stay resident: {needed} ({detail})")]
    BudgetTooSmall {
        budget: String,
        needed: String,
        detail: String,
    },
}
