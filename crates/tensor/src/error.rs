//! The one error type of this crate. Every variant names the file and, where there is one, the
//! tensor, and says what was expected.

use crate::Dtype;
use std::path::PathBuf;

/// Something is wrong with a model directory, a safetensors file or a tensor in it.
#[derive(Debug, thiserror::Error)]
pub enum TensorError {
    /// A file could not be opened, read or mapped.
    #[error("{path}: {source}")]
    Io {
        /// The file at fault.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The directory holds neither `model.safetensors` nor a shard index.
    #[error("{dir}: no model.safetensors or model.safetensors.index.json (expected a Hugging Face model directory)")]
    NoWeights {
        /// The model directory.
        dir: PathBuf,
    },
    /// A path that must be a regular file is something else (a directory, a FIFO, ...).
    #[error("{path}: is {kind}, not a regular file")]
    NotAFile {
        /// The file at fault.
        path: PathBuf,
        /// What the path is instead ("a directory", "a FIFO", ...).
        kind: &'static str,
    },
    /// The file is shorter than the 8-byte header-length prefix.
    #[error(
        "{path}: file is {file_len} bytes, too short for a safetensors header (need at least 8)"
    )]
    TooShort {
        /// The file at fault.
        path: PathBuf,
        /// The file's length in bytes.
        file_len: u64,
    },
    /// The header length prefix points past the end of the file.
    #[error("{path}: header claims {header_len} bytes but the file has only {available} after the length prefix (truncated or not a safetensors file)")]
    HeaderBeyondFile {
        /// The file at fault.
        path: PathBuf,
        /// The header length the prefix claims, in bytes.
        header_len: u64,
        /// Bytes in the file after the prefix.
        available: u64,
    },
    /// The header length prefix exceeds the format's limit ([`MAX_HEADER_BYTES`](crate::MAX_HEADER_BYTES)).
    #[error("{path}: header length {header_len} exceeds the {max}-byte limit of the safetensors format (corrupt length prefix?)")]
    HeaderTooLarge {
        /// The file at fault.
        path: PathBuf,
        /// The header length the prefix claims, in bytes.
        header_len: u64,
        /// The largest header the format allows, in bytes.
        max: u64,
    },
    /// The JSON header does not parse, or breaks a rule of the format.
    #[error("{path}: malformed header: {reason}")]
    BadHeader {
        /// The file at fault.
        path: PathBuf,
        /// What is wrong, in words.
        reason: String,
    },
    /// A tensor has a dtype outside [`Dtype`].
    #[error("{path}: tensor `{tensor}` has dtype {dtype}, which no Qwen3 checkpoint uses (expected BF16, F16, F32, F8_E4M3, F8_E5M2, I32 or U8)")]
    UnknownDtype {
        /// The file at fault.
        path: PathBuf,
        /// The tensor's name.
        tensor: String,
        /// The dtype string as the header spells it.
        dtype: String,
    },
    /// A tensor's byte span reaches past the data section.
    #[error("{path}: tensor `{tensor}` spans bytes {begin}..{end} of the data section, but the file holds only {data_len} (truncated file?)")]
    OutOfBounds {
        /// The file at fault.
        path: PathBuf,
        /// The tensor's name.
        tensor: String,
        /// Start of the tensor's span, relative to the data section.
        begin: u64,
        /// End of the tensor's span, relative to the data section.
        end: u64,
        /// Length of the data section in bytes.
        data_len: u64,
    },
    /// Two tensors share bytes of the data section.
    #[error("{path}: tensors `{first}` and `{second}` overlap in the data section")]
    Overlap {
        /// The file at fault.
        path: PathBuf,
        /// One of the overlapping tensors.
        first: String,
        /// The other.
        second: String,
    },
    /// Bytes of the data section belong to no tensor, between two tensors.
    #[error("{path}: tensor `{tensor}` begins at byte {begin} of the data section, but the previous tensor ends at {expected} (a gap: corrupt offsets or length prefix?)")]
    Gap {
        /// The file at fault.
        path: PathBuf,
        /// The tensor's name.
        tensor: String,
        /// Start of the tensor's span, relative to the data section.
        begin: u64,
        /// Where the previous tensor ends.
        expected: u64,
    },
    /// Bytes at the end of the data section belong to no tensor.
    #[error("{path}: the tensors cover {covered} bytes of the data section, but it holds {data_len} (trailing bytes: corrupt length prefix or offsets?)")]
    TrailingBytes {
        /// The file at fault.
        path: PathBuf,
        /// Bytes the tensors cover.
        covered: u64,
        /// Length of the data section in bytes.
        data_len: u64,
    },
    /// `expected` is `u64::MAX` when the shape's byte size overflows a `u64`.
    #[error("{path}: tensor `{tensor}` has shape {shape:?} of {dtype} = {expected} bytes, but its offsets span {actual}")]
    SizeMismatch {
        /// The file at fault.
        path: PathBuf,
        /// The tensor's name.
        tensor: String,
        /// The tensor's shape.
        shape: Vec<usize>,
        /// The tensor's dtype.
        dtype: Dtype,
        /// Bytes the shape and dtype need (`u64::MAX` on overflow).
        expected: u64,
        /// Bytes its offsets span.
        actual: u64,
    },
    /// A tensor the caller needs is not in the file or directory.
    #[error("tensor `{tensor}` not found in {location}")]
    MissingTensor {
        /// The tensor's name.
        tensor: String,
        /// The file or directory searched.
        location: PathBuf,
    },
    /// A tensor has another shape than the caller needs.
    #[error("tensor `{tensor}` ({path}): expected shape {expected:?}, found {actual:?}")]
    WrongShape {
        /// The file at fault.
        path: PathBuf,
        /// The tensor's name.
        tensor: String,
        /// The shape the caller needs.
        expected: Vec<usize>,
        /// The tensor's shape.
        actual: Vec<usize>,
    },
    /// A tensor has another dtype than the caller needs.
    #[error("tensor `{tensor}` ({path}): expected dtype {expected}, found {actual}")]
    WrongDtype {
        /// The file at fault.
        path: PathBuf,
        /// The tensor's name.
        tensor: String,
        /// The dtype (or dtypes) the caller accepts.
        expected: String,
        /// The tensor's dtype.
        actual: Dtype,
    },
    /// A NaN or infinity where only finite numbers make sense (a weight, a scale): it would
    /// turn every logit it reaches into NaN, i.e. a wrong answer rather than an error.
    #[error(
        "tensor `{tensor}` ({path}): element {index} is {value}; weights and scales must be finite"
    )]
    NonFinite {
        /// The file at fault.
        path: PathBuf,
        /// The tensor's name.
        tensor: String,
        /// Index of the first non-finite element.
        index: usize,
        /// Its value (NaN or an infinity).
        value: f32,
    },
    /// `model.safetensors.index.json` does not parse or maps a tensor twice.
    #[error("{path}: malformed index: {reason}")]
    BadIndex {
        /// The index file.
        path: PathBuf,
        /// What is wrong, in words.
        reason: String,
    },
    /// The index names a shard file that is not in the directory.
    #[error("{index}: names shard `{shard}` for tensor `{tensor}`, but {shard} does not exist in the directory")]
    MissingShard {
        /// The index file.
        index: PathBuf,
        /// The shard file name, as the index gives it.
        shard: String,
        /// The tensor's name.
        tensor: String,
    },
    /// The index maps a tensor to a shard that does not hold it.
    #[error("{index}: maps tensor `{tensor}` to `{shard}`, but that shard has no such tensor")]
    IndexTensorMissing {
        /// The index file.
        index: PathBuf,
        /// The tensor's name.
        tensor: String,
        /// The shard file name, as the index gives it.
        shard: String,
    },
}
