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

/// A directory under `std::env::temp_dir()`, unique to this process and call, removed on drop.
#[derive(Debug)]
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let path =
            std::env::temp_dir().join(format!("nano-infer-qwen3-{}-{n}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("create temp dir");
        Self(path)
    }

    pub fn path(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A copy of fixture `name`'s model files (config, weights, index; not the reference outputs)
/// in a fresh temporary directory, for tests that alter them.
pub fn copy_fixture(name: &str) -> TempDir {
    let tmp = TempDir::new(name);
    for entry in std::fs::read_dir(fixture_dir(name)).expect("fixture dir") {
        let entry = entry.unwrap();
        let file = entry.file_name().to_string_lossy().into_owned();
        if !file.starts_with("reference") {
            std::fs::copy(entry.path(), tmp.path().join(&file)).expect("copy fixture file");
        }
    }
    tmp
}

/// The byte range of tensor `name` in a safetensors image, and its dtype.
pub fn tensor_range(image: &[u8], name: &str) -> (std::ops::Range<usize>, String) {
    let n = u64::from_le_bytes(image[..8].try_into().unwrap()) as usize;
    let header: Value = serde_json::from_slice(&image[8..8 + n]).unwrap();
    let entry = &header[name];
    let offsets = entry["data_offsets"].as_array().expect("tensor in header");
    let (b, e) = (offsets[0].as_u64().unwrap(), offsets[1].as_u64().unwrap());
    (
        8 + n + b as usize..8 + n + e as usize,
        entry["dtype"].as_str().unwrap().to_owned(),
    )
}

/// Rewrites the bytes of tensor `name` in `dir/file` in place with `edit(bytes, dtype)`.
pub fn patch_tensor(
    dir: &std::path::Path,
    file: &str,
    name: &str,
    edit: impl FnOnce(&mut [u8], &str),
) {
    let path = dir.join(file);
    let mut image = std::fs::read(&path).unwrap();
    let (range, dtype) = tensor_range(&image, name);
    edit(&mut image[range], &dtype);
    std::fs::write(&path, image).unwrap();
}

/// The little-endian bytes of a NaN (or, with `inf`, +infinity) in a float dtype.
pub fn non_finite_bytes(dtype: &str, inf: bool) -> Vec<u8> {
    match (dtype, inf) {
        ("F32", false) => f32::NAN.to_le_bytes().to_vec(),
        ("F32", true) => f32::INFINITY.to_le_bytes().to_vec(),
        ("BF16", false) => 0x7FC0u16.to_le_bytes().to_vec(),
        ("BF16", true) => 0x7F80u16.to_le_bytes().to_vec(),
        ("F16", false) => 0x7E00u16.to_le_bytes().to_vec(),
        ("F16", true) => 0x7C00u16.to_le_bytes().to_vec(),
        ("F8_E4M3", _) => vec![0x7F],
        (other, _) => panic!("no non-finite encoding for {other}"),
    }
}

/// Sets element `index` of tensor `name` in `dir/model.safetensors` to NaN (or +infinity).
pub fn poison_tensor(dir: &std::path::Path, name: &str, index: usize, inf: bool) {
    patch_tensor(dir, "model.safetensors", name, |bytes, dtype| {
        let v = non_finite_bytes(dtype, inf);
        bytes[index * v.len()..(index + 1) * v.len()].copy_from_slice(&v);
    });
}

/// Edits `dir/config.json` as JSON.
pub fn edit_config(dir: &std::path::Path, edit: impl FnOnce(&mut Value)) {
    let path = dir.join("config.json");
    let mut config: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    edit(&mut config);
    std::fs::write(&path, serde_json::to_string_pretty(&config).unwrap()).unwrap();
}
