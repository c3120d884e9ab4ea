//! Prompt-cache files (llama.cpp's `--prompt-cache`): a [`Session`]'s tokens and KV saved to
//! disk, so a later run whose prompt starts the same way skips that part of the prefill.
//!
//! Format (little-endian throughout; version 1):
//!
//! ```text
//! 0   magic        8 bytes  "NANOKVPC"
//! 8   version      u32      1
//! 12  kv dtype     u8       0 = f32, 1 = bf16, 2 = f16; then 3 zero bytes
//! 16  fingerprint  u64      model_fingerprint() of the model that wrote it
//! 24  n_layers     u32
//! 28  n_kv_heads   u32
//! 32  head_dim     u32
//! 36  n_tokens     u64
//! 44  tokens       n_tokens × u32
//! ..  KV           for each layer, for each KV head: keys (n_tokens, head_dim), then values
//!                  (n_tokens, head_dim), in the stored dtype
//! ```
//!
//! KV is written in the cache's own element type, so a round trip is exact and a bf16 file is
//! half the size of an f32 one. Heads are laid out whole so that loading a prefix of `n`
//! tokens reads `n` rows per (layer, head) and seeks over the rest.
//!
//! Integrity, in the order a load checks it:
//! - A file is refused, before anything is loaded, when its fingerprint (a hash of
//!   `config.json` and the names and sizes of the weight files) or its KV dtype differs from
//!   the session's, or when its length does not match its header.
//! - Every loaded key and value must be finite (a NaN would spread to every later logit).
//! - The fingerprint cannot see the weights' *content* (hashing gigabytes at every start is too
//!   slow, and sampling them misses a changed tensor), so the load then recomputes the last
//!   loaded position with the model, over the loaded KV, and compares its keys and values with
//!   the file's: weights that differ in any tensor the cached KV depends on (every layer's
//!   attention inputs, every earlier layer's MLP) move them far past the kernels' rounding.
//!   A mismatch empties the session and returns [`PromptCacheError::WeightsMismatch`]
//!   ([`PromptCacheError::is_stale`]: the caller says so in one line and goes on without the
//!   cache). It costs one decode step.
//! - Writes go to a temporary file unique to the writer (process id, a counter, the clock) in
//!   the same directory, created with `create_new` and mode 0600, fsynced, then renamed over
//!   the target; on failure the temporary file is removed. Concurrent writers of one path
//!   therefore never share a temporary file, and a reader sees either some writer's complete
//!   file or the previous one, never a mixture or a half-written file.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use half::{bf16, f16};
use nano_infer_kvcache::{KvDtype, KvRows};

use crate::{Logits, Model, ModelError, Session};

const MAGIC: &[u8; 8] = b"NANOKVPC";
const VERSION: u32 = 1;
const HEADER_BYTES: u64 = 44;

/// Why a prompt-cache file could not be written or used.
#[derive(Debug, thiserror::Error)]
pub enum PromptCacheError {
    /// The file could not be created, written or read.
    #[error("{path}: {source}")]
    Io {
        /// The file at fault.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The file does not start with a prompt cache's magic bytes.
    #[error("{path}: not a nano-infer prompt cache (bad magic bytes)")]
    NotAPromptCache {
        /// The file at fault.
        path: PathBuf,
    },
    /// The file was written in another format version.
    #[error(
        "{path}: prompt cache format version {found}, but this build reads version {expected}"
    )]
    Version {
        /// The file at fault.
        path: PathBuf,
        /// The file's format version.
        found: u32,
        /// The version this build reads.
        expected: u32,
    },
    /// The file's model fingerprint (config, file names and sizes) is not this model's.
    #[error("{path}: prompt cache was written for a different model (fingerprint {file:016x}, this model has {model:016x}); delete it or choose another file")]
    ModelMismatch {
        /// The file at fault.
        path: PathBuf,
        /// The file's fingerprint.
        file: u64,
        /// This model's fingerprint.
        model: u64,
    },
    /// The file's KV element type is not the session's.
    #[error("{path}: prompt cache holds {file} KV but this model's KV cache is {session}; delete it or load the model with a {file} KV cache")]
    KvTypeMismatch {
        /// The file at fault.
        path: PathBuf,
        /// The file's KV type.
        file: KvDtype,
        /// The session's KV type.
        session: KvDtype,
    },
    /// The file is truncated or its header is inconsistent.
    #[error("{path}: prompt cache is corrupt: {reason}")]
    Corrupt {
        /// The file at fault.
        path: PathBuf,
        /// What is wrong, in words.
        reason: String,
    },
    /// A cached key or value is NaN or infinite.
    #[error("{path}: prompt cache is corrupt: a {what} of layer {layer} at position {position} is {value}")]
    NonFinite {
        /// The file at fault.
        path: PathBuf,
        /// Which tensor ("key" or "value").
        what: &'static str,
        /// The decoder layer.
        layer: usize,
        /// The token position.
        position: usize,
        /// The non-finite value.
        value: f32,
    },
    /// Recomputing the last cached position gave other keys or values than the file holds:
    /// the file was written by a model of the same shapes but other weights.
    #[error("{path}: prompt cache was written with different weights (recomputed {what} of layer {layer} at position {position} differ by {diff:.3e}, more than {tolerance:.3e}); not using it")]
    WeightsMismatch {
        /// The file at fault.
        path: PathBuf,
        /// Which tensor ("key" or "value").
        what: &'static str,
        /// The decoder layer.
        layer: usize,
        /// The token position.
        position: usize,
        /// The largest absolute difference found.
        diff: f32,
        /// The largest accepted: a fraction of the layer's largest cached value.
        tolerance: f32,
    },
    /// Recomputing the check position failed.
    #[error(transparent)]
    Model(#[from] ModelError),
}

impl PromptCacheError {
    /// Whether the file is a valid prompt cache of another model (other shapes, other weights):
    /// not an error of the run, only a cache to ignore (and overwrite) with a one-line notice.
    pub fn is_stale(&self) -> bool {
        matches!(
            self,
            PromptCacheError::ModelMismatch { .. } | PromptCacheError::WeightsMismatch { .. }
        )
    }
}

/// Relative tolerance of the recomputed keys and values against the cached ones, per layer, as
/// a fraction of the largest cached magnitude. Measured on the fixtures (`tests/integrity.rs`):
/// the writing model itself differs by at most 6e-4 (the recomputation is a one-token pass
/// while the cached rows came from a prefill, whose kernels sum in another order, ~1e-6; a
/// bf16/f16 cache rounds each element, the rest), and one reversed weight tensor of the same
/// shape moves them by 116–143%. 5% sits about a hundred times above the first and twenty
/// below the second. A cache written with int8 AWQ activations and read by an f32 run differs
/// by up to 3.3%: accepted, near the bound; refusing such a file would cost a re-prefill, while
/// accepting other weights' KV would cost wrong answers, so the bound errs towards refusing.
const KV_REL_TOL: f32 = 0.05;

/// A stable 64-bit identity of a model directory: FNV-1a over `config.json`'s bytes and the
/// name and size of every `*.safetensors` file, in name order. Cheap (no weight is read);
/// differs between checkpoints that differ in shape, format or any file's size.
pub fn model_fingerprint(model: &Model) -> Result<u64, PromptCacheError> {
    let dir = model.dir();
    let io = |path: PathBuf| move |source| PromptCacheError::Io { path, source };
    let config_path = dir.join("config.json");
    let config = std::fs::read(&config_path).map_err(io(config_path.clone()))?;
    let mut h = Fnv::default();
    h.write(&config);
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io(dir.to_owned()))? {
        let entry = entry.map_err(io(dir.to_owned()))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.ends_with(".safetensors") {
            let len = entry.metadata().map_err(io(entry.path()))?.len();
            files.push((name, len));
        }
    }
    files.sort();
    for (name, len) in files {
        h.write(name.as_bytes());
        h.write(&[0]);
        h.write(&len.to_le_bytes());
    }
    Ok(h.0)
}

impl Session<'_> {
    /// Writes every token of the session and its KV to `path` (see the module doc), atomically:
    /// through a private temporary file in the same directory, renamed over `path` once
    /// complete and synced. A failure leaves `path` as it was and removes the temporary file.
    pub fn save_prompt_cache(&self, path: impl AsRef<Path>) -> Result<(), PromptCacheError> {
        let path = path.as_ref();
        let fingerprint = model_fingerprint(self.model())?;
        let tmp = temporary_path(path)?;
        let result = self.write_prompt_cache(&tmp, fingerprint).and_then(|()| {
            std::fs::rename(&tmp, path).map_err(|source| PromptCacheError::Io {
                path: path.to_owned(),
                source,
            })
        });
        match result {
            Ok(()) => {
                sync_parent(path);
                Ok(())
            }
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                Err(e)
            }
        }
    }

    /// Writes the cache file to `tmp`, which must not exist yet, and syncs it.
    fn write_prompt_cache(&self, tmp: &Path, fingerprint: u64) -> Result<(), PromptCacheError> {
        let cache = self.cache();
        let io = |source| PromptCacheError::Io {
            path: tmp.to_owned(),
            source,
        };
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut w = BufWriter::new(options.open(tmp).map_err(io)?);
        let mut header = Vec::with_capacity(HEADER_BYTES as usize);
        header.extend_from_slice(MAGIC);
        header.extend_from_slice(&VERSION.to_le_bytes());
        header.extend_from_slice(&[dtype_code(cache.dtype()), 0, 0, 0]);
        header.extend_from_slice(&fingerprint.to_le_bytes());
        for v in [cache.n_layers(), cache.n_kv_heads(), cache.head_dim()] {
            header.extend_from_slice(&(v as u32).to_le_bytes());
        }
        header.extend_from_slice(&(self.tokens().len() as u64).to_le_bytes());
        w.write_all(&header).map_err(io)?;
        for &t in self.tokens() {
            w.write_all(&t.to_le_bytes()).map_err(io)?;
        }
        for layer in 0..cache.n_layers() {
            for head in 0..cache.n_kv_heads() {
                write_rows(&mut w, cache.keys(layer, head)).map_err(io)?;
                write_rows(&mut w, cache.values(layer, head)).map_err(io)?;
            }
        }
        w.into_inner()
            .map_err(|e| io(e.into_error()))?
            .sync_all()
            .map_err(io)
    }

    /// Empties the session, then loads from `path` the longest prefix of its tokens that
    /// `prompt` starts with, KV included. Returns the number of tokens loaded; a following
    /// [`crate::generate`] with `prompt` prefills only the rest (and re-runs the last prompt
    /// token when the whole prompt was loaded, since its logits are not stored).
    ///
    /// Refuses, leaving the session as it was, a file from another model, with another KV
    /// dtype, or whose length does not match its header. Refuses, leaving the session empty, a
    /// file whose KV holds NaN or infinity, or whose last loaded position the model recomputes
    /// differently ([`PromptCacheError::WeightsMismatch`]: written by other weights; the
    /// position is recomputed with one decode step, compared, and then holds the file's values
    /// again, so an accepted load is exact). [`PromptCacheError::is_stale`] tells
    /// the refusals a caller should report in one line and then run without the cache.
    pub fn load_prompt_cache(
        &mut self,
        path: impl AsRef<Path>,
        prompt: &[u32],
    ) -> Result<usize, PromptCacheError> {
        let path = path.as_ref();
        let io = |source| PromptCacheError::Io {
            path: path.to_owned(),
            source,
        };
        let corrupt = |reason: String| PromptCacheError::Corrupt {
            path: path.to_owned(),
            reason,
        };
        // A FIFO would block the open until a writer appears; a directory fails less clearly.
        if !std::fs::metadata(path).map_err(io)?.is_file() {
            return Err(io(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "not a regular file",
            )));
        }
        let file = File::open(path).map_err(io)?;
        let file_len = file.metadata().map_err(io)?.len();
        let mut r = BufReader::new(file);
        let mut header = [0u8; HEADER_BYTES as usize];
        if file_len < HEADER_BYTES {
            return Err(if file_len >= 8 {
                r.read_exact(&mut header[..8]).map_err(io)?;
                if &header[..8] == MAGIC {
                    corrupt(format!("{file_len} bytes is shorter than the header"))
                } else {
                    PromptCacheError::NotAPromptCache {
                        path: path.to_owned(),
                    }
                }
            } else {
                PromptCacheError::NotAPromptCache {
                    path: path.to_owned(),
                }
            });
        }
        r.read_exact(&mut header).map_err(io)?;
        if &header[..8] != MAGIC {
            return Err(PromptCacheError::NotAPromptCache {
                path: path.to_owned(),
            });
        }
        let u32_at = |o: usize| u32::from_le_bytes(header[o..o + 4].try_into().expect("4 bytes"));
        let u64_at = |o: usize| u64::from_le_bytes(header[o..o + 8].try_into().expect("8 bytes"));
        let version = u32_at(8);
        if version != VERSION {
            return Err(PromptCacheError::Version {
                path: path.to_owned(),
                found: version,
                expected: VERSION,
            });
        }
        let model = self.model();
        let fingerprint = model_fingerprint(model)?;
        if u64_at(16) != fingerprint {
            return Err(PromptCacheError::ModelMismatch {
                path: path.to_owned(),
                file: u64_at(16),
                model: fingerprint,
            });
        }
        let dtype = dtype_from_code(header[12])
            .ok_or_else(|| corrupt(format!("unknown KV dtype code {}", header[12])))?;
        if dtype != model.kv_dtype() {
            return Err(PromptCacheError::KvTypeMismatch {
                path: path.to_owned(),
                file: dtype,
                session: model.kv_dtype(),
            });
        }
        let c = model.config();
        let shape = (
            u32_at(24) as usize,
            u32_at(28) as usize,
            u32_at(32) as usize,
        );
        let expected_shape = (c.num_hidden_layers, c.n_kv_heads(), c.head_dim());
        if shape != expected_shape {
            return Err(corrupt(format!(
                "KV shape (layers, kv heads, head_dim) {shape:?} but the model has {expected_shape:?}"
            )));
        }
        let (n_layers, n_heads, hd) = shape;
        let n_tokens = u64_at(36);
        let bpe = dtype.bytes_per_element() as u64;
        let head_bytes = n_tokens
            .checked_mul(hd as u64 * bpe)
            .ok_or_else(|| corrupt(format!("{n_tokens} tokens overflows")))?;
        let expected_len = (n_layers as u64 * n_heads as u64 * 2)
            .checked_mul(head_bytes)
            .and_then(|kv| kv.checked_add(HEADER_BYTES + 4 * n_tokens))
            .ok_or_else(|| corrupt(format!("{n_tokens} tokens overflows")))?;
        if file_len != expected_len {
            return Err(corrupt(format!(
                "{file_len} bytes, but a header of {n_tokens} tokens needs {expected_len}"
            )));
        }
        let n_tokens = n_tokens as usize;
        let mut bytes = vec![0u8; 4 * n_tokens];
        r.read_exact(&mut bytes).map_err(io)?;
        let tokens: Vec<u32> = bytes
            .chunks_exact(4)
            .map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")))
            .collect();
        let n = tokens
            .iter()
            .zip(prompt)
            .take_while(|(a, b)| a == b)
            .count()
            .min(model.ctx_size());

        self.reset();
        if n == 0 {
            return Ok(0);
        }
        let kv_dim = n_heads * hd;
        let (mut k, mut v) = (vec![0.0f32; n * kv_dim], vec![0.0f32; n * kv_dim]);
        // (n_layers, kv_dim) each: the file's keys and values of the last loaded position.
        let (mut last_k, mut last_v) = (Vec::new(), Vec::new());
        let mut raw = vec![0u8; n * hd * bpe as usize];
        let data0 = HEADER_BYTES + 4 * n_tokens as u64;
        let loaded = (|| {
            let (cache, session_tokens) = self.parts_mut();
            for layer in 0..n_layers {
                for head in 0..n_heads {
                    for (i, dst) in [&mut k, &mut v].into_iter().enumerate() {
                        let at = data0 + ((layer * n_heads + head) * 2 + i) as u64 * head_bytes;
                        r.seek(SeekFrom::Start(at)).map_err(io)?;
                        r.read_exact(&mut raw).map_err(io)?;
                        let elem = bpe as usize;
                        for (t, row) in raw.chunks_exact(hd * elem).enumerate() {
                            let out =
                                &mut dst[t * kv_dim + head * hd..t * kv_dim + (head + 1) * hd];
                            decode_row(dtype, row, out);
                            if let Some(&value) = out.iter().find(|x| !x.is_finite()) {
                                return Err(PromptCacheError::NonFinite {
                                    path: path.to_owned(),
                                    what: ["key", "value"][i],
                                    layer,
                                    position: t,
                                    value,
                                });
                            }
                        }
                    }
                }
                last_k.extend_from_slice(&k[(n - 1) * kv_dim..]);
                last_v.extend_from_slice(&v[(n - 1) * kv_dim..]);
                cache.append(layer, &k, &v).map_err(ModelError::from)?;
            }
            cache.advance(n);
            session_tokens.extend_from_slice(&tokens[..n]);
            self.verify_last_position(path, &last_k, &last_v)
        })();
        match loaded {
            Ok(()) => Ok(n),
            Err(e) => {
                // Nothing of a refused file stays in the session.
                self.reset();
                Err(e)
            }
        }
    }

    /// Recomputes the session's last position from the model over the KV before it, and
    /// compares its keys and values `(n_layers, kv_dim)` with `file_k`/`file_v` (see the
    /// module doc and [`KV_REL_TOL`]).
    fn verify_last_position(
        &mut self,
        path: &Path,
        file_k: &[f32],
        file_v: &[f32],
    ) -> Result<(), PromptCacheError> {
        let n = self.tokens().len();
        let last = self.tokens()[n - 1];
        self.truncate(n - 1);
        self.forward(&[last], Logits::Last)?;
        let cache = self.cache();
        let (n_heads, hd) = (cache.n_kv_heads(), cache.head_dim());
        let kv_dim = n_heads * hd;
        let mut row = vec![0.0f32; hd];
        for layer in 0..cache.n_layers() {
            for (what, file, rows_of) in [
                ("keys", file_k, KvCacheRows::Keys),
                ("values", file_v, KvCacheRows::Values),
            ] {
                let expected = &file[layer * kv_dim..(layer + 1) * kv_dim];
                let scale = expected.iter().fold(0.0f32, |m, x| m.max(x.abs()));
                let tolerance = KV_REL_TOL * scale + f32::MIN_POSITIVE;
                let mut diff = 0.0f32;
                for head in 0..n_heads {
                    let rows = match rows_of {
                        KvCacheRows::Keys => cache.keys(layer, head),
                        KvCacheRows::Values => cache.values(layer, head),
                    };
                    rows_to_f32(rows, n - 1, &mut row);
                    for (a, b) in row.iter().zip(&expected[head * hd..(head + 1) * hd]) {
                        // `max` would skip a NaN: count it as the largest difference.
                        let d = (a - b).abs();
                        diff = diff.max(if d.is_nan() { f32::INFINITY } else { d });
                    }
                }
                if diff > tolerance {
                    return Err(PromptCacheError::WeightsMismatch {
                        path: path.to_owned(),
                        what,
                        layer,
                        position: n - 1,
                        diff,
                        tolerance,
                    });
                }
            }
        }
        // The position holds the file's own keys and values again: a load is an exact round
        // trip. The recomputation ran another kernel path (one decode step, where the file's
        // came from a prefill), whose last bits differ (on NEON with a bf16 cache, enough to
        // move later logits by 2.7e-3).
        let n_layers = cache.n_layers();
        self.truncate(n - 1);
        let (cache, tokens) = self.parts_mut();
        for layer in 0..n_layers {
            let at = layer * kv_dim..(layer + 1) * kv_dim;
            cache
                .append(layer, &file_k[at.clone()], &file_v[at])
                .map_err(ModelError::from)?;
        }
        cache.advance(1);
        tokens.push(last);
        Ok(())
    }
}

#[derive(Clone, Copy)]
enum KvCacheRows {
    Keys,
    Values,
}

/// Row `row` of `rows` (`(n, out.len())`), widened to f32.
fn rows_to_f32(rows: KvRows<'_>, row: usize, out: &mut [f32]) {
    let hd = out.len();
    let range = row * hd..(row + 1) * hd;
    match rows {
        KvRows::F32(s) => out.copy_from_slice(&s[range]),
        KvRows::Bf16(s) => out
            .iter_mut()
            .zip(&s[range])
            .for_each(|(o, x)| *o = x.to_f32()),
        KvRows::F16(s) => out
            .iter_mut()
            .zip(&s[range])
            .for_each(|(o, x)| *o = x.to_f32()),
    }
}

/// A temporary name beside `path`, unique to this writer: process id, a per-process counter
/// and the clock's nanoseconds (the counter separates threads, the pid processes, the clock a
/// pid reused after a crash). Hidden (a leading dot) so a half-written file is not mistaken
/// for a cache.
fn temporary_path(path: &Path) -> Result<PathBuf, PromptCacheError> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let name = path.file_name().ok_or_else(|| PromptCacheError::Io {
        path: path.to_owned(),
        source: std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "a prompt cache path must name a file",
        ),
    })?;
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let mut tmp = std::ffi::OsString::from(".");
    tmp.push(name);
    tmp.push(format!(
        ".{}.{}.{nanos}.tmp",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    Ok(path.with_file_name(tmp))
}

/// Syncs the directory holding `path`, so the rename itself survives a crash. Best effort: the
/// file is complete either way, and not every platform can open a directory.
fn sync_parent(path: &Path) {
    #[cfg(unix)]
    if let Some(dir) = path.parent() {
        let dir = if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        };
        if let Ok(d) = File::open(dir) {
            let _ = d.sync_all();
        }
    }
    #[cfg(not(unix))]
    let _ = path;
}

fn dtype_code(d: KvDtype) -> u8 {
    match d {
        KvDtype::F32 => 0,
        KvDtype::Bf16 => 1,
        KvDtype::F16 => 2,
    }
}

fn dtype_from_code(code: u8) -> Option<KvDtype> {
    match code {
        0 => Some(KvDtype::F32),
        1 => Some(KvDtype::Bf16),
        2 => Some(KvDtype::F16),
        _ => None,
    }
}

/// Writes rows in their stored type, little-endian.
fn write_rows(w: &mut impl Write, rows: KvRows<'_>) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(rows.len() * 4);
    match rows {
        KvRows::F32(s) => s
            .iter()
            .for_each(|x| buf.extend_from_slice(&x.to_le_bytes())),
        KvRows::Bf16(s) => s
            .iter()
            .for_each(|x| buf.extend_from_slice(&x.to_bits().to_le_bytes())),
        KvRows::F16(s) => s
            .iter()
            .for_each(|x| buf.extend_from_slice(&x.to_bits().to_le_bytes())),
    }
    w.write_all(&buf)
}

/// Widens one stored row to f32 (exact: the cache narrows it back to the same bits).
fn decode_row(dtype: KvDtype, bytes: &[u8], out: &mut [f32]) {
    let bpe = dtype.bytes_per_element();
    for (o, b) in out.iter_mut().zip(bytes.chunks_exact(bpe)) {
        *o = match dtype {
            KvDtype::F32 => f32::from_le_bytes(b.try_into().expect("4 bytes")),
            KvDtype::Bf16 => bf16::from_bits(u16::from_le_bytes([b[0], b[1]])).to_f32(),
            KvDtype::F16 => f16::from_bits(u16::from_le_bytes([b[0], b[1]])).to_f32(),
        };
    }
}

/// FNV-1a, 64-bit: deterministic across runs and platforms, which a file format needs.
struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 ^= u64::from(b);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }
}
