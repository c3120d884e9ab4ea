//! The one error type of this crate. Every variant names the file and, where there is one, the
//! tensor, and says what was expected.

use crate::Dtype;
use std::path::PathBuf;

/// Something is wrong with a model directory, a safetensors file or a tensor in it.
#[derive(Debug, thiserror::Error)]
pub enum TensorError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{dir}: no model.safetensors or model.safetensors.index.json (expected a Hugging Face model directory)")]
    NoWeights { dir: PathBuf },
    #[error("{path}: is {kind}, not a regular file")]
    NotAFile { path: PathBuf, kind: &'static str },
    #[error(
        "{path}: file is {file_len} bytes, too short for a safetensors header (need at least 8)"
    )]
    TooShort { path: PathBuf, file_len: u64 },
    #[error("{path}: header claims {header_len} bytes but the file has only {available} after the length prefix (truncated or not a safetensors file)")]
    HeaderBeyondFile {
        path: PathBuf,
        header_len: u64,
        available: u64,
    },
    #[error("{path}: header length {header_len} exceeds the {max}-byte limit of the safetensors format (corrupt length prefix?)")]
    HeaderTooLarge {
        path: PathBuf,
        header_len: u64,
        max: u64,
    },
    #[error("{path}: malformed header: {reason}")]
    BadHeader { path: PathBuf, reason: String },
    #[error("{path}: tensor `{tensor}` has dtype {dtype}, which no Qwen3 checkpoint uses (expected BF16, F16, F32, F8_E4M3, F8_E5M2, I32 or U8)")]
    UnknownDtype {
        path: PathBuf,
        tensor: String,
        dtype: String,
    },
    #[error("{path}: tensor `{tensor}` spans bytes {begin}..{end} of the data section, but the file holds only {data_len} (truncated file?)")]
    OutOfBounds {
        path: PathBuf,
        tensor: String,
        begin: u64,
        end: u64,
        data_len: u64,
    },
    #[error("{path}: tensors `{first}` and `{second}` overlap in the data section")]
    Overlap {
        path: PathBuf,
        first: String,
        second: String,
    },
    #[error("{path}: tensor `{tensor}` begins at byte {begin} of the data section, but the previous tensor ends at {expected} (a gap: corrupt offsets or length prefix?)")]
    Gap {
        path: PathBuf,
        tensor: String,
        begin: u64,
        expected: u64,
    },
    #[error("{path}: the tensors cover {covered} bytes of the data section, but it holds {data_len} (trailing bytes: corrupt length prefix or offsets?)")]
    TrailingBytes {
        path: PathBuf,
        covered: u64,
        data_len: u64,
    },
    /// `expected` is `u64::MAX` when the shape's byte size overflows a `u64`.
    #[error("{path}: tensor `{tensor}` has shape {shape:?} of {dtype} = {expected} bytes, but its offsets span {actual}")]
    SizeMismatch {
        path: PathBuf,
        tensor: String,
        shape: Vec<usize>,
        dtype: Dtype,
        expected: u64,
        actual: u64,
    },
    #[error("tensor `{tensor}` not found in {location}")]
    MissingTensor { tensor: String, location: PathBuf },
    #[error("tensor `{tensor}` ({path}): expected shape {expected:?}, found {actual:?}")]
    WrongShape {
        path: PathBuf,
        tensor: String,
        expected: Vec<usize>,
        actual: Vec<usize>,
    },
    #[error("tensor `{tensor}` ({path}): expected dtype {expected}, found {actual}")]
    WrongDtype {
        path: PathBuf,
        tensor: String,
        expected: String,
        actual: Dtype,
    },
    /// A NaN or infinity where only finite numbers make sense (a weight, a scale): it would
    /// turn every logit it reaches into NaN, i.e. a wrong answer rather than an error.
    #[error(
        "tensor `{tensor}` ({path}): element {index} is {value}; weights and scales must be finite"
    )]
    NonFinite {
        path: PathBuf,
        tensor: String,
        index: usize,
        value: f32,
    },
    #[error("{path}: malformed index: {reason}")]
    BadIndex { path: PathBuf, reason: String },
    #[error("{index}: names shard `{shard}` for tensor `{tensor}`, but {shard} does not exist in the directory")]
    MissingShard {
        index: PathBuf,
        shard: String,
        tensor: String,
    },
    #[error("{index}: maps tensor `{tensor}` to `{shard}`, but that shard has no such tensor")]
    IndexTensorMissing {
        index: PathBuf,
        tensor: String,
        shard: String,
    },
}
