//! The integration tests of nano-infer-quant, one binary with a module per concern.
// `u64::is_multiple_of` is stable only since 1.87; the workspace MSRV is 1.85.

mod awq_layout;
mod errors;
mod fixtures;
mod fp8_codes;
mod oracle;
mod sources;
mod util;
