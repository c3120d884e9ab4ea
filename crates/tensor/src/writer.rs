//! Writing a safetensors file whose tensors are computed one at a time (a cache of weights
//! repacked at load), so that no more than one tensor has to be in memory, and so that a reader
//! never sees a half-written file.
//!
//! Design. The tensor list (names, dtypes, shapes, in file order) is known before any data is,
//! so [`SafetensorsWriter::create`] writes the header first, padded with spaces (which the
//! format allows) to a reserved length: the data section starts on a 4 KiB boundary and the
//! final `__metadata__` (which may carry hashes of the data, known only at the end) can replace
//! the placeholder in place. Each [`SafetensorsWriter::write`] appends the next tensor's bytes;
//! [`SafetensorsWriter::finish`] rewrites the header and renames the temporary file over the
//! destination. The temporary file is unique to the writer (process id, a counter, the clock in
//! its name; `create_new`), so concurrent writers of one destination never share one, and the
//! rename makes the switch atomic: a reader opens either a complete file or the previous one.
//! A writer dropped before `finish` (an error, a panic) removes its temporary file; one killed
//! leaves it behind, so `create` removes the temporary files of the same destination that
//! nobody has written to for [`STALE_TEMP`] (a live writer appends continuously).
//!
//! No fsync: the only user is a cache whose readers verify a hash of every tensor, so a file
//! torn by a crash after the rename is refused and rebuilt; syncing gigabytes would cost the
//! first start seconds for nothing the hashes do not already give.

use crate::{Dtype, Element, Result, TensorError};
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// The data section starts on this boundary (a page on common systems), so that a memory map
/// of the file sees every tensor aligned for any element type.
const DATA_ALIGN: usize = 4096;

/// Bytes kept free in the header beyond the placeholder metadata, for the final one.
const HEADER_SLACK: usize = 4096;

/// A temporary file of the same destination untouched for this long belongs to a writer that
/// died (writers append for seconds per tensor at most), and is removed by the next `create`.
const STALE_TEMP: std::time::Duration = std::time::Duration::from_secs(3600);

/// A safetensors file being written under a temporary name; see the module docs.
#[derive(Debug)]
pub struct SafetensorsWriter {
    file: Option<BufWriter<File>>,
    tmp: PathBuf,
    dest: PathBuf,
    /// `(name, dtype, shape, byte length)` in file order.
    tensors: Vec<(String, Dtype, Vec<usize>, u64)>,
    /// Tensors written so far.
    next: usize,
    /// Length of the JSON header (after the 8-byte prefix), padding included.
    header_len: usize,
}

impl SafetensorsWriter {
    /// Creates the temporary file beside `dest` (its directory is created if missing) and
    /// writes the header for `tensors` (name, dtype, shape; the data follow in this order) with
    /// `metadata` as a placeholder: [`SafetensorsWriter::finish`] may replace it with a
    /// metadata map up to 4 KiB longer.
    pub fn create(
        dest: &Path,
        tensors: &[(String, Dtype, Vec<usize>)],
        metadata: &BTreeMap<String, String>,
    ) -> Result<Self> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let dir = dest.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        remove_stale_temps(dest);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let mut tmp = dest.as_os_str().to_owned();
        tmp.push(format!(
            ".tmp-{}-{}-{nanos}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let tmp = PathBuf::from(tmp);
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .map_err(io(&tmp))?;
        let tensors: Vec<_> = tensors
            .iter()
            .map(|(name, dtype, shape)| {
                let len = shape.iter().product::<usize>() * dtype.size();
                (name.clone(), *dtype, shape.clone(), len as u64)
            })
            .collect();
        let json = header_json(&tensors, metadata);
        let header_len = (8 + json.len() + HEADER_SLACK).next_multiple_of(DATA_ALIGN) - 8;
        let mut writer = Self {
            file: Some(BufWriter::with_capacity(1 << 20, file)),
            tmp,
            dest: dest.to_owned(),
            tensors,
            next: 0,
            header_len,
        };
        writer.write_header(&json)?;
        Ok(writer)
    }

    /// The temporary file being written (renamed to the destination by `finish`).
    pub fn temp_path(&self) -> &Path {
        &self.tmp
    }

    /// Appends the data of the next tensor, which must be `name` with as many elements of `T`
    /// (of the dtype declared at `create`) as its shape says.
    pub fn write<T: Element>(&mut self, name: &str, data: &[T]) -> Result<()> {
        let bytes: &[u8] = bytemuck::cast_slice(data);
        let Some((expected, dtype, shape, len)) = self.tensors.get(self.next) else {
            return Err(self.bad(format!("tensor `{name}` written after the last one")));
        };
        if expected != name || !T::DTYPES.contains(dtype) || *len != bytes.len() as u64 {
            return Err(self.bad(format!(
                "tensor `{name}` ({} bytes) written where `{expected}` ({dtype} {shape:?}, {len} bytes) comes next",
                bytes.len()
            )));
        }
        let tmp = self.tmp.clone();
        self.file_mut().write_all(bytes).map_err(|e| io(&tmp)(e))?;
        self.next += 1;
        Ok(())
    }

    /// Rewrites the header with the final `metadata` and renames the file over the destination.
    /// Every tensor must have been written. Returns the destination.
    pub fn finish(mut self, metadata: &BTreeMap<String, String>) -> Result<PathBuf> {
        if self.next != self.tensors.len() {
            let missing = self.tensors[self.next].0.clone();
            return Err(self.bad(format!("finished before tensor `{missing}` was written")));
        }
        let json = header_json(&self.tensors, metadata);
        if json.len() > self.header_len {
            return Err(self.bad(format!(
                "the final header ({} bytes) outgrew the {} reserved",
                json.len(),
                self.header_len
            )));
        }
        self.write_header(&json)?;
        let file = self.file.take().expect("the file is open until finish");
        let file = file
            .into_inner()
            .map_err(|e| io(&self.tmp)(e.into_error()))?;
        drop(file);
        std::fs::rename(&self.tmp, &self.dest).map_err(io(&self.dest))?;
        Ok(self.dest.clone())
    }

    /// Writes the length prefix and `json` padded with spaces to `header_len` at the start of
    /// the file, then returns to the end.
    fn write_header(&mut self, json: &str) -> Result<()> {
        let mut header = Vec::with_capacity(8 + self.header_len);
        header.extend_from_slice(&(self.header_len as u64).to_le_bytes());
        header.extend_from_slice(json.as_bytes());
        header.resize(8 + self.header_len, b' ');
        let tmp = self.tmp.clone();
        let file = self.file_mut();
        let mut write = || -> std::io::Result<()> {
            let end = file.stream_position()?;
            file.seek(SeekFrom::Start(0))?;
            file.write_all(&header)?;
            if end > 0 {
                file.seek(SeekFrom::Start(end))?;
            }
            Ok(())
        };
        write().map_err(io(&tmp))
    }

    fn file_mut(&mut self) -> &mut BufWriter<File> {
        self.file.as_mut().expect("the file is open until finish")
    }

    fn bad(&self, reason: String) -> TensorError {
        TensorError::BadHeader {
            path: self.tmp.clone(),
            reason,
        }
    }
}

impl Drop for SafetensorsWriter {
    fn drop(&mut self) {
        // Not finished: the temporary file is garbage. (After `finish` it no longer exists
        // under this name and the removal fails harmlessly.)
        if self.file.take().is_some() {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

/// Removes `dest`'s temporary files (`<dest>.tmp-*`) not modified for [`STALE_TEMP`]. Best
/// effort: a failure only leaves the file for the next time.
fn remove_stale_temps(dest: &Path) {
    let (Some(dir), Some(name)) = (dest.parent(), dest.file_name()) else {
        return;
    };
    let prefix = format!("{}.tmp-", name.to_string_lossy());
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let stale = entry
            .metadata()
            .ok()
            .and_then(|m| m.modified().ok())
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age > STALE_TEMP);
        if stale && entry.file_name().to_string_lossy().starts_with(&prefix) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// The JSON header: `__metadata__` first, then the tensors with consecutive offsets.
fn header_json(
    tensors: &[(String, Dtype, Vec<usize>, u64)],
    metadata: &BTreeMap<String, String>,
) -> String {
    let mut header = serde_json::Map::new();
    header.insert(
        "__metadata__".to_owned(),
        serde_json::to_value(metadata).expect("a map of strings is JSON"),
    );
    let mut offset = 0u64;
    for (name, dtype, shape, len) in tensors {
        header.insert(
            name.clone(),
            serde_json::json!({
                "dtype": dtype.safetensors_name(),
                "shape": shape,
                "data_offsets": [offset, offset + len],
            }),
        );
        offset += len;
    }
    serde_json::Value::Object(header).to_string()
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> TensorError {
    let path = path.to_owned();
    move |source| TensorError::Io { path, source }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SafetensorsFile;

    fn scratch(tag: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("nano-infer-writer-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    fn meta(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn a_finished_file_reads_back_with_its_final_metadata_and_aligned_data() {
        let dir = scratch("roundtrip");
        let dest = dir.join("cache.safetensors");
        let specs = vec![
            ("a".to_owned(), Dtype::U8, vec![5]),
            ("b".to_owned(), Dtype::F32, vec![2, 3]),
        ];
        let mut w = SafetensorsWriter::create(&dest, &specs, &meta(&[("h", "0000")])).unwrap();
        let tmp = w.temp_path().to_owned();
        w.write("a", &[1u8, 2, 3, 4, 5]).unwrap();
        // The next tensor must be `b`, with six f32s.
        assert!(w.write("a", &[0u8; 5]).is_err());
        assert!(w.write("b", &[0f32; 5]).is_err());
        w.write("b", &[0.5f32, 1.5, 2.5, 3.5, 4.5, 5.5]).unwrap();
        assert!(!dest.exists(), "nothing at the destination before finish");
        w.finish(&meta(&[("h", "abcdef0123")])).unwrap();
        assert!(!tmp.exists(), "the temporary file was renamed");
        let file = SafetensorsFile::open(&dest).unwrap();
        assert_eq!(file.metadata(), &meta(&[("h", "abcdef0123")]));
        assert_eq!(
            file.get("a").unwrap().as_slice::<u8>().unwrap(),
            &[1, 2, 3, 4, 5]
        );
        let b = file.get("b").unwrap();
        assert_eq!(b.shape(), &[2, 3]);
        assert_eq!(b.as_slice::<f32>().unwrap()[5], 5.5);
        // The data section starts on a page boundary.
        let header_len = u64::from_le_bytes(std::fs::read(&dest).unwrap()[..8].try_into().unwrap());
        assert_eq!((8 + header_len) % DATA_ALIGN as u64, 0);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_killed_writers_old_temporary_file_is_removed_and_a_live_ones_kept() {
        let dir = scratch("stale");
        std::fs::create_dir_all(&dir).unwrap();
        let dest = dir.join("cache.safetensors");
        let old = dir.join("cache.safetensors.tmp-1-0-0");
        let live = dir.join("cache.safetensors.tmp-2-0-0");
        let other = dir.join("other.safetensors.tmp-1-0-0");
        for f in [&old, &live, &other] {
            std::fs::write(f, b"partial").unwrap();
        }
        let long_ago = std::time::SystemTime::now() - 2 * STALE_TEMP;
        for f in [&old, &other] {
            std::fs::File::options()
                .write(true)
                .open(f)
                .unwrap()
                .set_modified(long_ago)
                .unwrap();
        }
        let w = SafetensorsWriter::create(&dest, &[], &BTreeMap::new()).unwrap();
        assert!(
            !old.exists(),
            "a dead writer's file of this destination is removed"
        );
        assert!(live.exists(), "a recent one may belong to a live writer");
        assert!(other.exists(), "another destination's files are not ours");
        w.finish(&BTreeMap::new()).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn an_unfinished_writer_leaves_no_file() {
        let dir = scratch("dropped");
        let dest = dir.join("cache.safetensors");
        let specs = vec![("a".to_owned(), Dtype::U8, vec![3])];
        let w = SafetensorsWriter::create(&dest, &specs, &BTreeMap::new()).unwrap();
        let tmp = w.temp_path().to_owned();
        assert!(tmp.exists());
        // Finishing early is an error, and the file is removed with the writer.
        let err = w.finish(&BTreeMap::new()).unwrap_err();
        assert!(err.to_string().contains("before tensor `a`"), "{err}");
        assert!(!tmp.exists() && !dest.exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
