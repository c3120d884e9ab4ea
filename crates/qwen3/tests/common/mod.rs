//! Helpers shared by the test binaries of this crate: where the fixtures are, and the small
//! pieces of arithmetic every reference comparison needs. Each test binary uses a subset.
#![allow(dead_code)]

use serde_json::Value;
use std::path::PathBuf;

/// `testdata/fixtures/<name>`: the reference checkpoints copied into the repository.
pub fn fixture_dir(name: &str) -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../testdata/fixtures"
    ))
    .join(name)
}

/// The fixture's `reference.json`.
pub fn reference(name: &str) -> Value {
    let text =
        std::fs::read_to_string(fixture_dir(name).join("reference.json")).expect("reference.json");
    serde_json::from_str(&text).expect("reference.json parses")
}

/// A JSON list of token ids.
pub fn ids(value: &Value) -> Vec<u32> {
    value
        .as_array()
        .expect("id list")
        .iter()
        .map(|v| v.as_u64().expect("id") as u32)
        .collect()
}

/// The greedy choice: the first index of the largest logit, as `torch.argmax` picks it.
pub fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0;
    for (i, v) in logits.iter().enumerate() {
        if *v > logits[best] {
            best = i;
        }
    }
    best as u32
}

pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "length mismatch");
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}
