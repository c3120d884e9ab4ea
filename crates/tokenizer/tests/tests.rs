//! Integration tests of nano-infer-tokenizer against the Qwen3 fixtures in `testdata/`.
//!
//! One binary (see `autotests = false` in Cargo.toml) so the tokenizer is loaded once and
//! shared through a `OnceLock`; the modules live in `suite/`.

mod suite;
