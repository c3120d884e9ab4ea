#![doc = include_str!("../README.md")]
#![warn(missing_docs)]
#![forbid(unsafe_code)]

mod budget;
mod plan;
mod streamer;

pub use budget::{available_memory, format_size, mapped_resident_bytes, parse_size};
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
