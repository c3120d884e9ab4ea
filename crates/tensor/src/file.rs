//! One safetensors file: an 8-byte little-endian header length, a JSON header mapping tensor
//! names to `{dtype, shape, data_offsets}`, then the data section.
//!
//! The header is validated completely at open: dtypes known, every shape's byte size equal to its
//! offsets' span, every span inside the file, no two spans overlapping. After that, fetching a
//! tensor cannot fail on the file's account.

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
                // SAFETY: MADV_DONTNEED on a read-only, file-backed private mapping only drops
                // the pages from this process; the next access reads the same bytes back from
                // the file (the mapping was never written, so there are no private copies to
                // lose). memmap2 marks the advice unsafe because on anonymous or written
                // private memory it would zero the contents, which cannot happen here.
                crate::Paging::DontNeed => unsafe {
                    map.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, start, len)
                },
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
        let tensors = parse_header(&path, storage.bytes())?;
        Ok(Self {
            path: Arc::new(path),
            storage: Arc::new(storage),
            tensors,
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

/// Parses and validates the header of a safetensors image.
fn parse_header(path: &Path, bytes: &[u8]) -> Result<BTreeMap<String, TensorInfo>> {
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
            continue;
        }
        let field = |key: &str| {
            entry
                .get(key)
                .ok_or_else(|| bad(format!("tensor `{name}` has no `{key}`")))
        };
        let dtype_name = field("dtype")?
            .as_str()
            .ok_or_else(|| bad(format!("tensor `{name}`: dtype is not a string")))?;
        let dtype =
            Dtype::from_safetensors(dtype_name).ok_or_else(|| TensorError::UnknownDtype {
                path: path.to_owned(),
                tensor: name.clone(),
                dtype: dtype_name.to_owned(),
            })?;
        let shape = u64_list(field("shape")?)
            .ok_or_else(|| bad(format!("tensor `{name}`: shape is not a list of integers")))?;
        let offsets = u64_list(field("data_offsets")?)
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
        // The byte size is computed from the header's u64 dims, before any conversion to usize,
        // so a dim that does not fit a 32-bit usize cannot be truncated into a matching size.
        let expected = shape
            .iter()
            .try_fold(dtype.size() as u64, |acc, &d| acc.checked_mul(d));
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

    // Overlap check: sort the non-empty spans by start; each must begin at or after the previous end.
    let mut spans: Vec<(&String, &TensorInfo)> =
        tensors.iter().filter(|(_, t)| t.end > t.start).collect();
    spans.sort_by_key(|(_, t)| t.start);
    for pair in spans.windows(2) {
        if pair[1].1.start < pair[0].1.end {
            return Err(TensorError::Overlap {
                path: path.to_owned(),
                first: pair[0].0.clone(),
                second: pair[1].0.clone(),
            });
        }
    }
    Ok(tensors)
}

fn u64_list(value: &serde_json::Value) -> Option<Vec<u64>> {
    value
        .as_array()?
        .iter()
        .map(serde_json::Value::as_u64)
        .collect()
}
