//! End-to-end forward-pass benchmarks live in `cargo xtask bench`; this target is filled by the
//! speed work. It exists so the facade owns `benches/` from the start.
fn main() {}
