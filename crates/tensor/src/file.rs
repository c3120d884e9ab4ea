//! One safetensors file: an 8-byte little-endian header length, a JSON header mapping tensor
//! names to `{dtype, shape, data_offsets}`, then the data section.
//!
//! The header is validated completely at open, as strictly as the reference `safetensors` crate
//! (whose acceptance the fuzz tests compare against): dtypes known, every shape's byte size
//! equal to its offsets' span, and the spans tiling the data section exactly (no gap, no
//! overlap, no trailing bytes). The tiling matters beyond tidiness: a length prefix one byte
//! short still parses as JSON (the header's padding absorbs it) and would shift every tensor by
//! a byte; only the exact-cover rule catches that. After open, fetching a tensor cannot fail on
//! the file's account.

use crate::{Dtype, Result, Tensor, TensorError};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The bytes behind a file: a read-only memory map, or a buffer for data that came from memory.
pub(crate) enum Storage {
    Mmap(memmap2::Mmap),
    Owned(Vec<u8>),
}

impl Storage {
    pub(crate) fn bytes(&self) -> &[u8] {
        match self {
            Storage::Mmap(m) => m,
            Storage::Owned(v) => v,
        }
    }

    /// Passes a paging hint for `start..end` to the kernel. Memory that is not a file mapping
    /// (or a platform without `madvise`) ignores hints.
    pub(crate) fn advise(
        &self,
        paging: crate::Paging,
        start: usize,
        end: usize,
    ) -> std::io::Result<()> {
        #[cfg(unix)]
        if let Storage::Mmap(map) = self {
            let len = end - start;
            return match paging {
                crate::Paging::WillNeed => map.advise_range(memmap2::Advice::WillNeed, start, len),
                crate::Paging::DontNeed => {
                    // Only the pages wholly inside the range: a page shared with a neighbouring
                    // tensor stays, so using that neighbour never faults it back in (a fault
                    // maps a whole page-cache folio, which can hold many tensors: see
                    // `nano_infer_offload`'s streamer).
                    let base = map.as_ptr() as usize;
                    let page = crate::page_cache::page_size();
                    let first = (base + start).next_multiple_of(page) - base;
                    let last = (base + end) / page * page - base;
                    if last <= first {
                        return Ok(());
                    }
                    // SAFETY: MADV_DONTNEED on a read-only, file-backed private mapping only
                    // drops the pages from this process; the next access reads the same bytes
                    // back from the file (the mapping was never written, so there are no
                    // private copies to lose). memmap2 marks the advice unsafe because on
                    // anonymous or written private memory it would zero the contents, which
                    // cannot happen here.
                    unsafe {
                        map.unchecked_advise_range(
                            memmap2::UncheckedAdvice::DontNeed,
                            first,
                            last - first,
                        )
                    }
                }
            };
        }
        let _ = (paging, start, end);
        Ok(())
    }
}

/// Where a tensor sits in its file.
#[derive(Clone, Debug)]
pub(crate) struct TensorInfo {
    pub(crate) dtype: Dtype,
    pub(crate) shape: Vec<usize>,
    /// Absolute byte range in the file.
    pub(crate) start: usize,
    pub(crate) end: usize,
}

/// A validated safetensors file.
pub struct SafetensorsFile {
    path: Arc<PathBuf>,
    storage: Arc<Storage>,
    tensors: BTreeMap<String, TensorInfo>,
    /// The header's `__metadata__` (empty when absent or `null`).
    metadata: BTreeMap<String, String>,
}

impl std::fmt::Debug for SafetensorsFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SafetensorsFile")
            .field("path", &self.path)
            .field("tensors", &self.tensors.len())
            .finish()
    }
}

impl SafetensorsFile {
    /// Memory-maps and validates `path`.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let io = |source| TensorError::Io {
            path: path.to_owned(),
            source,
        };
        // Opening a FIFO would block until a writer appears, and a directory would fail at
        // the map with a puzzling message: say what is there instead. (Nothing there: the open
        // below reports it.)
        crate::store::probe_file(path)?;
        let file = std::fs::File::open(path).map_err(io)?;
        // SAFETY: the map is read-only. Another process truncating or rewriting the file while
        // it is mapped would be undefined behaviour; every mmap-based loader (safetensors,
        // llama.cpp, candle) accepts that risk in exchange for zero-copy loading.
        let mmap = unsafe { memmap2::Mmap::map(&file) }.map_err(io)?;
        Self::from_storage(path.to_owned(), Storage::Mmap(mmap))
    }

    /// Validates an in-memory safetensors image; `path` is used in error messages only.
    pub fn from_bytes(path: impl Into<PathBuf>, bytes: Vec<u8>) -> Result<Self> {
        Self::from_storage(path.into(), Storage::Owned(bytes))
    }

    fn from_storage(path: PathBuf, storage: Storage) -> Result<Self> {
        let (tensors, metadata) = parse_header(&path, storage.bytes())?;
        Ok(Self {
            path: Arc::new(path),
            storage: Arc::new(storage),
            tensors,
            metadata,
        })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Names of the tensors in this file, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.tensors.keys().map(String::as_str)
    }

    /// Whether the file holds `name`.
    pub fn contains(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }

    /// The header's `__metadata__` strings (empty when the file has none).
    pub fn metadata(&self) -> &BTreeMap<String, String> {
        &self.metadata
    }

    /// Size of the file in bytes.
    pub fn len_bytes(&self) -> usize {
        self.storage.bytes().len()
    }

    /// The tensor `name`, as a zero-copy view when its data is aligned for its element type.
    pub fn get(&self, name: &str) -> Result<Tensor> {
        let info = self
            .tensors
            .get(name)
            .ok_or_else(|| TensorError::MissingTensor {
                tensor: name.to_owned(),
                location: self.path.as_ref().clone(),
            })?;
        Ok(Tensor::new(
            name,
            Arc::clone(&self.path),
            Arc::clone(&self.storage),
            info,
        ))
    }
}

/// The `safetensors` crate's bound on the JSON header (`MAX_HEADER_SIZE`): a larger length
/// prefix is refused before anything is read, so a corrupt prefix never sizes an allocation.
pub const MAX_HEADER_BYTES: u64 = 100_000_000;

/// Parses and validates the header of a safetensors image, accepting exactly what the
/// reference `safetensors` crate (0.6, `SafeTensors::read_metadata`) accepts, minus dtypes no
/// Qwen3 checkpoint uses.
///
/// The reference decides: it is the format's definition, and it settles the exotic corners
/// (duplicate keys, a tensor entry written as an array of its fields) that a restatement would
/// get subtly wrong. When it refuses, [`diagnose`] names what is wrong (the tensor, the offsets);
/// only a case it does not know falls back to the reference's own message.
#[allow(clippy::type_complexity)]
fn parse_header(
    path: &Path,
    bytes: &[u8],
) -> Result<(BTreeMap<String, TensorInfo>, BTreeMap<String, String>)> {
    let (header_len, metadata) = match safetensors::SafeTensors::read_metadata(bytes) {
        Ok(parsed) => parsed,
        Err(reference) => {
            return Err(match diagnose(path, bytes) {
                Err(ours) => ours,
                Ok(_) => TensorError::BadHeader {
                    path: path.to_owned(),
                    reason: reference.to_string(),
                },
            })
        }
    };
    let data_start = 8 + header_len;
    // Sorted by name, so that of several unknown dtypes the same one is always reported.
    let infos: BTreeMap<String, &safetensors::tensor::TensorInfo> =
        metadata.tensors().into_iter().collect();
    let mut tensors = BTreeMap::new();
    for (name, info) in infos {
        let dtype = Dtype::from_safetensors(&format!("{:?}", info.dtype)).ok_or_else(|| {
            TensorError::UnknownDtype {
                path: path.to_owned(),
                tensor: name.clone(),
                dtype: format!("{:?}", info.dtype),
            }
        })?;
        let (begin, end) = info.data_offsets;
        tensors.insert(
            name,
            TensorInfo {
                dtype,
                shape: info.shape.clone(),
                start: data_start + begin,
                end: data_start + end,
            },
        );
    }
    let strings = metadata
        .metadata()
        .iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    Ok((tensors, strings))
}

/// Our restatement of the format's rules: a header of at most [`MAX_HEADER_BYTES`], a JSON
/// object whose optional `__metadata__` is `null` or an object of strings, and tensors whose
/// spans, sorted, tile the data section exactly (no gap, no overlap, nothing after the last
/// one). Run when the reference refuses a file, for an error that names the fault.
fn diagnose(path: &Path, bytes: &[u8]) -> Result<BTreeMap<String, TensorInfo>> {
    let bad = |reason: String| TensorError::BadHeader {
        path: path.to_owned(),
        reason,
    };
    let file_len = bytes.len() as u64;
    if bytes.len() < 8 {
        return Err(TensorError::TooShort {
            path: path.to_owned(),
            file_len,
        });
    }
    let header_len = u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes"));
    if header_len > MAX_HEADER_BYTES {
        return Err(TensorError::HeaderTooLarge {
            path: path.to_owned(),
            header_len,
            max: MAX_HEADER_BYTES,
        });
    }
    if header_len > file_len - 8 {
        return Err(TensorError::HeaderBeyondFile {
            path: path.to_owned(),
            header_len,
            available: file_len - 8,
        });
    }
    let data_start = 8 + header_len as usize;
    let header: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&bytes[8..data_start])
            .map_err(|e| bad(format!("not a JSON object: {e}")))?;
    let data_len = (bytes.len() - data_start) as u64;

    let mut tensors = BTreeMap::new();
    for (name, entry) in header {
        if name == "__metadata__" {
            check_metadata(&entry).map_err(bad)?;
            continue;
        }
        let (dtype_value, shape_value, offsets_value) = entry_fields(&name, &entry).map_err(bad)?;
        let dtype_name = dtype_value
            .as_str()
            .ok_or_else(|| bad(format!("tensor `{name}`: dtype is not a string")))?;
        let dtype =
            Dtype::from_safetensors(dtype_name).ok_or_else(|| TensorError::UnknownDtype {
                path: path.to_owned(),
                tensor: name.clone(),
                dtype: dtype_name.to_owned(),
            })?;
        let shape = u64_list(shape_value)
            .ok_or_else(|| bad(format!("tensor `{name}`: shape is not a list of integers")))?;
        let offsets = u64_list(offsets_value)
            .filter(|o| o.len() == 2)
            .ok_or_else(|| bad(format!("tensor `{name}`: data_offsets is not [begin, end]")))?;
        let (begin, end) = (offsets[0], offsets[1]);
        if begin > end {
            return Err(bad(format!(
                "tensor `{name}`: data_offsets [{begin}, {end}] end before they begin"
            )));
        }
        if end > data_len {
            return Err(TensorError::OutOfBounds {
                path: path.to_owned(),
                tensor: name,
                begin,
                end,
                data_len,
            });
        }
        // The element count is folded from 1 the way the reference does (so an empty tensor
        // with one huge dim is accepted or refused exactly as there), from the header's u64
        // dims before any conversion to usize, so a dim that does not fit a 32-bit usize cannot
        // be truncated into a matching size.
        let expected = shape
            .iter()
            .try_fold(1u64, |acc, &d| acc.checked_mul(d))
            .and_then(|numel| numel.checked_mul(dtype.size() as u64));
        if expected != Some(end - begin) {
            return Err(TensorError::SizeMismatch {
                path: path.to_owned(),
                tensor: name,
                shape: shape
                    .iter()
                    .map(|&d| usize::try_from(d).unwrap_or(usize::MAX))
                    .collect(),
                dtype,
                expected: expected.unwrap_or(u64::MAX),
                actual: end - begin,
            });
        }
        // Only an empty tensor's dims can exceed the file size, and so a 32-bit usize.
        let Ok(shape) = shape
            .iter()
            .map(|&d| usize::try_from(d))
            .collect::<Result<Vec<usize>, _>>()
        else {
            return Err(bad(format!(
                "tensor `{name}`: shape {shape:?} does not fit in usize"
            )));
        };
        let start = data_start + begin as usize;
        tensors.insert(
            name,
            TensorInfo {
                dtype,
                shape,
                start,
                end: data_start + end as usize,
            },
        );
    }

    // Tiling check, as the reference's `Metadata::validate`: sorted by (begin, end), each span
    // starts exactly where the previous one ended (empty spans included), and the last one
    // ends at the end of the file. A gap or trailing bytes are refused, not skipped: they are
    // what a wrong length prefix looks like (every tensor read a few bytes off).
    let mut spans: Vec<(&String, &TensorInfo)> = tensors.iter().collect();
    spans.sort_by_key(|(_, t)| (t.start, t.end));
    let mut covered = data_start;
    let mut previous: Option<&String> = None;
    for (name, t) in spans {
        if t.start < covered {
            return Err(TensorError::Overlap {
                path: path.to_owned(),
                first: previous.cloned().unwrap_or_default(),
                second: name.clone(),
            });
        }
        if t.start > covered {
            return Err(TensorError::Gap {
                path: path.to_owned(),
                tensor: name.clone(),
                begin: (t.start - data_start) as u64,
                expected: (covered - data_start) as u64,
            });
        }
        covered = t.end;
        previous = Some(name);
    }
    if covered != bytes.len() {
        return Err(TensorError::TrailingBytes {
            path: path.to_owned(),
            covered: (covered - data_start) as u64,
            data_len,
        });
    }
    Ok(tensors)
}

/// `__metadata__` as the reference reads it (`Option<HashMap<String, String>>`): `null`, or an
/// object whose values are all strings.
fn check_metadata(value: &serde_json::Value) -> std::result::Result<(), String> {
    match value {
        serde_json::Value::Null => Ok(()),
        serde_json::Value::Object(map) => match map.iter().find(|(_, v)| !v.is_string()) {
            Some((key, v)) => Err(format!(
                "`__metadata__` value of `{key}` is {v}, not a string"
            )),
            None => Ok(()),
        },
        other => Err(format!(
            "`__metadata__` is {other}, not an object of strings"
        )),
    }
}

/// The `dtype`, `shape` and `data_offsets` of a tensor entry. Like serde's derived
/// `Deserialize` (what the reference uses), an entry is an object with those three keys (other
/// keys ignored) or an array of exactly those three values in that order.
fn entry_fields<'a>(
    name: &str,
    entry: &'a serde_json::Value,
) -> std::result::Result<
    (
        &'a serde_json::Value,
        &'a serde_json::Value,
        &'a serde_json::Value,
    ),
    String,
> {
    match entry {
        serde_json::Value::Object(map) => {
            let field = |key: &str| {
                map.get(key)
                    .ok_or_else(|| format!("tensor `{name}` has no `{key}`"))
            };
            Ok((field("dtype")?, field("shape")?, field("data_offsets")?))
        }
        serde_json::Value::Array(list) if list.len() == 3 => Ok((&list[0], &list[1], &list[2])),
        other => Err(format!(
            "tensor `{name}`: entry is {}, not an object with dtype, shape and data_offsets",
            json_kind(other)
        )),
    }
}

fn json_kind(value: &serde_json::Value) -> &'static str {
    match value {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

fn u64_list(value: &serde_json::Value) -> Option<Vec<u64>> {
    value
        .as_array()?
        .iter()
        .map(serde_json::Value::as_u64)
        .collect()
}
