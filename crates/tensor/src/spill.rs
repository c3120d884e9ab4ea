//! A scratch file for weight bytes computed at load (AWQ layers repacked into the kernels'
//! layout), mapped back so a memory budget can page them out and in like the checkpoint's own
//! tensors.
//!
//! Design. Each [`SpillFile::push`] appends one buffer at the next page boundary and maps that
//! region read-only as a [`Tensor`]; the caller then drops its heap copy. The mapped tensor
//! behaves like any tensor of a safetensors file: `advise(DontNeed)` drops its pages from the
//! process, the next access reads them back from the page cache or the disk.
//!
//! The file is *anonymous*: created under a unique name and unlinked at once, so the kernel
//! reclaims its blocks when the last mapping goes, even if the process is killed, and nothing
//! is ever left in the cache directory. It is the fallback for when the persistent AWQ repack
//! cache (`nano_infer_quant::AwqCacheKey`, written with [`crate::SafetensorsWriter`]) is off or
//! cannot be written: then every load repacks, and the streamed layers go here.
//!
//! Where: `$XDG_CACHE_HOME/nano-infer`, else `~/.cache/nano-infer`, else the temporary
//! directory. The cache directory comes first because `/tmp` is often a tmpfs, whose pages
//! are memory: spilling there would only move the bytes from this process to shmem.
//! Costs: one write of the spilled bytes at load (they stay dirty in the page cache until the
//! kernel writes them back, which it does before evicting them under memory pressure), and
//! one mapping per pushed buffer.

use crate::file::{Storage, TensorInfo};
use crate::{Element, Result, Tensor, TensorError};
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Buffers start on this boundary, so two buffers never share a page (on 4 KiB pages) and
/// dropping one never drops part of another. memmap2 aligns the mapping down to the real page
/// size itself, so larger pages only cost sharing, never correctness.
const ALIGN: u64 = 4096;

/// An unlinked scratch file whose pushed buffers come back as memory-mapped tensors.
#[derive(Debug)]
pub struct SpillFile {
    file: File,
    /// Where the file was created (it no longer has a name once unlinked); for messages.
    path: Arc<PathBuf>,
    /// Bytes written so far.
    len: u64,
}

impl SpillFile {
    /// Creates a spill file in the first usable directory of [`SpillFile::default_dirs`].
    pub fn create() -> Result<Self> {
        let mut last_err = None;
        for dir in Self::default_dirs() {
            match Self::create_in(&dir) {
                Ok(file) => return Ok(file),
                Err(e) => last_err = Some(e),
            }
        }
        Err(last_err.unwrap_or_else(|| TensorError::Io {
            path: std::env::temp_dir(),
            source: std::io::Error::other("no directory for a spill file"),
        }))
    }

    /// Candidate directories, best first: `$XDG_CACHE_HOME/nano-infer`, `~/.cache/nano-infer`,
    /// the temporary directory.
    pub fn default_dirs() -> Vec<PathBuf> {
        let mut dirs = Vec::new();
        if let Some(xdg) = std::env::var_os("XDG_CACHE_HOME").filter(|v| !v.is_empty()) {
            dirs.push(PathBuf::from(xdg).join("nano-infer"));
        }
        if let Some(home) = std::env::var_os("HOME").filter(|v| !v.is_empty()) {
            dirs.push(PathBuf::from(home).join(".cache").join("nano-infer"));
        }
        dirs.push(std::env::temp_dir());
        dirs
    }

    /// Creates a spill file in `dir` (created if missing) and unlinks it.
    pub fn create_in(dir: &Path) -> Result<Self> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let io = |path: &Path| {
            let path = path.to_owned();
            move |source| TensorError::Io { path, source }
        };
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let path = dir.join(format!(
            "spill-{}-{}-{nanos}.bin",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        // `create_new`: never open (and truncate) a file someone else made under this name.
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(io(&path))?;
        // Unlinked now, the blocks live as long as the descriptor and the mappings do. Where a
        // platform refuses to unlink an open file, `Drop` tries again.
        let _ = std::fs::remove_file(&path);
        Ok(Self {
            file,
            path: Arc::new(path),
            len: 0,
        })
    }

    /// The path the file was created under (unlinked since).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Bytes written so far, alignment padding included.
    pub fn len_bytes(&self) -> u64 {
        self.len
    }

    /// Writes `data` at the next page boundary and maps it back as the tensor `name`, of `T`'s
    /// dtype and shape `shape` (whose element count must be `data.len()`).
    pub fn push<T: Element>(&mut self, name: &str, shape: &[usize], data: &[T]) -> Result<Tensor> {
        let io = |source| TensorError::Io {
            path: self.path.as_ref().clone(),
            source,
        };
        let dtype = T::DTYPES[0];
        if shape.iter().product::<usize>() != data.len() {
            return Err(TensorError::SizeMismatch {
                path: self.path.as_ref().clone(),
                tensor: name.to_owned(),
                shape: shape.to_vec(),
                dtype,
                expected: (shape.iter().product::<usize>() * dtype.size()) as u64,
                actual: (data.len() * dtype.size()) as u64,
            });
        }
        let bytes: &[u8] = bytemuck::cast_slice(data);
        let storage = if bytes.is_empty() {
            // A zero-length mapping is an error; an empty tensor needs no file.
            Storage::Owned(Vec::new())
        } else {
            let start = self.len.next_multiple_of(ALIGN);
            let pad = (start - self.len) as usize;
            self.file
                .write_all(&[0u8; ALIGN as usize][..pad])
                .map_err(io)?;
            self.file.write_all(bytes).map_err(io)?;
            self.len = start + bytes.len() as u64;
            // SAFETY: the region was written above and is never written again (later pushes
            // append past it), and the file is unlinked, so no other process can open it by
            // name to change it under the read-only map.
            let map = unsafe {
                memmap2::MmapOptions::new()
                    .offset(start)
                    .len(bytes.len())
                    .map(&self.file)
            }
            .map_err(io)?;
            Storage::Mmap(map)
        };
        let info = TensorInfo {
            dtype,
            shape: shape.to_vec(),
            start: 0,
            end: bytes.len(),
        };
        Ok(Tensor::new(
            name,
            Arc::clone(&self.path),
            Arc::new(storage),
            &info,
        ))
    }
}

impl Drop for SpillFile {
    fn drop(&mut self) {
        // Normally already unlinked (`create_in`): then this fails harmlessly. The mappings
        // keep the data alive without the descriptor.
        let _ = std::fs::remove_file(self.path.as_ref());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch_dir(tag: &str) -> PathBuf {
        std::env::temp_dir().join(format!("nano-infer-spill-{tag}-{}", std::process::id()))
    }

    #[test]
    fn pushed_buffers_read_back_page_aligned_and_leave_no_file() {
        let dir = scratch_dir("roundtrip");
        let mut spill = SpillFile::create_in(&dir).unwrap();
        let floats: Vec<f32> = (0..1000).map(|i| i as f32 * 0.5).collect();
        let bytes: Vec<u8> = (0..5000).map(|i| (i % 251) as u8).collect();
        let a = spill.push("a", &[10, 100], &floats).unwrap();
        let b = spill.push("b", &[5000], &bytes).unwrap();
        let empty = spill.push::<f32>("e", &[0], &[]).unwrap();
        assert_eq!(a.as_slice::<f32>().unwrap(), &floats[..]);
        assert_eq!(a.shape(), &[10, 100]);
        assert_eq!(a.dtype(), crate::Dtype::F32);
        assert_eq!(b.as_slice::<u8>().unwrap(), &bytes[..]);
        assert!(empty.as_slice::<f32>().unwrap().is_empty());
        // `b` starts on the page after `a`'s 4000 bytes; the empty tensor takes no room.
        assert_eq!(spill.len_bytes(), ALIGN + 5000);
        // Dropping the pages and reading again gives the same bytes back from the file.
        a.advise(crate::Paging::DontNeed).unwrap();
        assert_eq!(a.as_slice::<f32>().unwrap(), &floats[..]);
        // The file was unlinked at creation: the directory holds nothing, yet the maps work.
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0);
        drop(spill);
        assert_eq!(b.as_slice::<u8>().unwrap(), &bytes[..]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_shape_that_disagrees_with_the_data_is_an_error() {
        let dir = scratch_dir("shape");
        let mut spill = SpillFile::create_in(&dir).unwrap();
        let err = spill.push("w", &[3, 3], &[0f32; 8]).unwrap_err();
        assert!(matches!(err, TensorError::SizeMismatch { .. }), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn default_dirs_end_with_the_temporary_directory() {
        let dirs = SpillFile::default_dirs();
        assert_eq!(dirs.last(), Some(&std::env::temp_dir()));
    }
}
