//! Helpers: temporary directories, fixture paths, and safetensors images built in memory.

use nano_infer_tensor::{Dtype, SafetensorsFile, TensorError};
use safetensors::tensor::TensorView;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

/// A directory under `std::env::temp_dir()`, unique to this process and call, removed on drop.
#[derive(Debug)]
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!(
            "nano-infer-tensor-{}-{n}-{tag}",
            std::process::id()
        ));
        // A leftover from a crashed run with the same pid would make the test see stale files.
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("create temp dir");
        Self(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    /// Writes `bytes` to `name` inside the directory and returns the file's path.
    pub fn write(&self, name: &str, bytes: impl AsRef<[u8]>) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, bytes).expect("write temp file");
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A committed fixture directory, e.g. `fixture("bf16")`.
pub fn fixture(name: &str) -> PathBuf {
    Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../testdata/fixtures"
    ))
    .join(name)
}

/// One tensor to serialise: name, dtype, shape and raw little-endian bytes.
pub type Spec<'a> = (&'a str, Dtype, &'a [usize], &'a [u8]);

/// The `safetensors` crate's name for a dtype.
pub fn st_dtype(dtype: Dtype) -> safetensors::Dtype {
    match dtype {
        Dtype::BF16 => safetensors::Dtype::BF16,
        Dtype::F16 => safetensors::Dtype::F16,
        Dtype::F32 => safetensors::Dtype::F32,
        Dtype::F8E4M3 => safetensors::Dtype::F8_E4M3,
        Dtype::F8E5M2 => safetensors::Dtype::F8_E5M2,
        Dtype::I32 => safetensors::Dtype::I32,
        Dtype::U8 => safetensors::Dtype::U8,
    }
}

/// A valid safetensors image, written by the reference implementation.
pub fn serialize(tensors: &[Spec<'_>]) -> Vec<u8> {
    let views = tensors.iter().map(|&(name, dtype, shape, data)| {
        (
            name,
            TensorView::new(st_dtype(dtype), shape.to_vec(), data).expect("valid tensor view"),
        )
    });
    safetensors::serialize(views, None).expect("serialize")
}

/// An image with exactly this header text (no padding) followed by `data`: for corrupt files
/// and for controlling the data section's alignment.
pub fn raw(header: &str, data: &[u8]) -> Vec<u8> {
    let mut out = (header.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(data);
    out
}

pub fn f32_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

pub fn i32_bytes(values: &[i32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

pub fn bf16_bytes(values: &[f32]) -> Vec<u8> {
    values
        .iter()
        .flat_map(|&v| half::bf16::from_f32(v).to_le_bytes())
        .collect()
}

pub fn f16_bytes(values: &[f32]) -> Vec<u8> {
    values
        .iter()
        .flat_map(|&v| half::f16::from_f32(v).to_le_bytes())
        .collect()
}

pub const A_F32: [f32; 6] = [1.0, -2.5, 3.25, 0.0, 1e-3, -7.0];
pub const B_BF16: [f32; 4] = [0.5, -1.0, 2.0, 96.0];
pub const D_I32: [i32; 2] = [i32::MIN, 0x1234_5678];
pub const E_F16: [f32; 3] = [1.5, -0.25, 65504.0];

/// A small valid image with one tensor of every dtype family and an empty tensor.
pub fn small_image() -> Vec<u8> {
    let a = f32_bytes(&A_F32);
    let b = bf16_bytes(&B_BF16);
    let c = [1u8, 2, 3, 4, 5];
    let d = i32_bytes(&D_I32);
    let e = f16_bytes(&E_F16);
    let f = [0x38u8, 0xC0, 0x7E];
    serialize(&[
        ("a", Dtype::F32, &[2, 3], &a),
        ("b", Dtype::BF16, &[4], &b),
        ("c", Dtype::U8, &[5], &c),
        ("d", Dtype::I32, &[1, 2], &d),
        ("e", Dtype::F16, &[3], &e),
        ("f", Dtype::F8E4M3, &[3], &f),
        ("empty", Dtype::F32, &[0, 4], &[]),
    ])
}

/// The header length of an image.
pub fn header_len(image: &[u8]) -> usize {
    u64::from_le_bytes(image[..8].try_into().unwrap()) as usize
}

/// Every tensor of an opened file is readable and self-consistent; the invariant the fuzz tests
/// check on every image that opens.
pub fn check_all_tensors(file: &SafetensorsFile) {
    for name in file.names() {
        let t = file
            .get(name)
            .unwrap_or_else(|e| panic!("listed tensor `{name}` not fetchable: {e}"));
        assert_eq!(t.name(), name);
        assert_eq!(t.bytes().len(), t.numel() * t.dtype().size(), "{name}");
        let n = match t.dtype() {
            Dtype::BF16 => t.as_slice::<half::bf16>().unwrap().len(),
            Dtype::F16 => t.as_slice::<half::f16>().unwrap().len(),
            Dtype::F32 => t.as_slice::<f32>().unwrap().len(),
            Dtype::I32 => t.as_slice::<i32>().unwrap().len(),
            Dtype::U8 | Dtype::F8E4M3 | Dtype::F8E5M2 => t.as_slice::<u8>().unwrap().len(),
        };
        assert_eq!(n, t.numel(), "{name}");
        if matches!(t.dtype(), Dtype::BF16 | Dtype::F16 | Dtype::F32) {
            assert_eq!(t.to_f32_vec().unwrap().len(), t.numel(), "{name}");
        }
    }
}

/// Unwraps the error of `result`, panicking with context if it is `Ok`.
pub fn expect_err<T>(result: Result<T, TensorError>, what: &str) -> TensorError {
    match result {
        Ok(_) => panic!("{what}: expected an error, got Ok"),
        Err(e) => e,
    }
}

/// Asserts that the error's message contains every needle (file names, tensor names).
pub fn assert_mentions(err: &TensorError, needles: &[&str]) {
    let msg = err.to_string();
    for needle in needles {
        assert!(
            msg.contains(needle),
            "message `{msg}` does not mention `{needle}`"
        );
    }
}

/// Asserts the error variant (a pattern) and that the message names each needle; returns the error.
macro_rules! assert_err {
    ($result:expr, $variant:pat, [$($needle:expr),* $(,)?]) => {{
        let err = $crate::util::expect_err($result, stringify!($result));
        assert!(matches!(err, $variant), "wrong variant for {}: {err:?}", stringify!($result));
        $crate::util::assert_mentions(&err, &[$($needle),*]);
        err
    }};
}
pub(crate) use assert_err;
