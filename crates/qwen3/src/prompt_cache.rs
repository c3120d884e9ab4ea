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
//! tokens reads `n` rows per (layer, head) and seeks over the rest. A file is refused, before
//! anything is loaded, when its fingerprint (a hash of `config.json` and the names and sizes of
//! the weight files) or its KV dtype differs from the session's, or when its length does not
//! match its header. Files are written to `PATH.tmp` and renamed, so a crash never leaves a
//! half-written cache under the real name.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use half::{bf16, f16};
use nano_infer_kvcache::{KvDtype, KvRows};

use crate::{Model, ModelError, Session};

const MAGIC: &[u8; 8] = b"NANOKVPC";
const VERSION: u32 = 1;
const HEADER_BYTES: u64 = 44;

/// Why a prompt-cache file could not be written or used.
#[derive(Debug, thiserror::Error)]
pub enum PromptCacheError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: not a nano-infer prompt cache (bad magic bytes)")]
    NotAPromptCache { path: PathBuf },
    #[error(
        "{path}: prompt cache format version {found}, but this build reads version {expected}"
    )]
    Version {
        path: PathBuf,
        found: u32,
        expected: u32,
    },
    #[error("{path}: prompt cache was written for a different model (fingerprint {file:016x}, this model has {model:016x}); delete it or choose another file")]
    ModelMismatch {
        path: PathBuf,
        file: u64,
        model: u64,
    },
    #[error("{path}: prompt cache holds {file} KV but this run uses --kv-type {session}; delete it or run with --kv-type {file}")]
    KvTypeMismatch {
        path: PathBuf,
        file: KvDtype,
        session: KvDtype,
    },
    #[error("{path}: prompt cache is corrupt: {reason}")]
    Corrupt { path: PathBuf, reason: String },
    #[error(transparent)]
    Model(#[from] ModelError),
}

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
    /// Writes every token of the session and its KV to `path` (see the module doc).
    pub fn save_prompt_cache(&self, path: impl AsRef<Path>) -> Result<(), PromptCacheError> {
        let path = path.as_ref();
        let model = self.model();
        let fingerprint = model_fingerprint(model)?;
        let cache = self.cache();
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(".tmp");
        let tmp = PathBuf::from(tmp);
        let io = |source| PromptCacheError::Io {
            path: tmp.clone(),
            source,
        };
        let mut w = BufWriter::new(File::create(&tmp).map_err(io)?);
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
            .map_err(io)?;
        std::fs::rename(&tmp, path).map_err(|source| PromptCacheError::Io {
            path: path.to_owned(),
            source,
        })
    }

    /// Empties the session, then loads from `path` the longest prefix of its tokens that
    /// `prompt` starts with, KV included. Returns the number of tokens loaded; a following
    /// [`crate::generate`] with `prompt` prefills only the rest (and re-runs the last prompt
    /// token when the whole prompt was loaded, since its logits are not stored).
    ///
    /// Refuses (loading nothing) a file from another model, with another KV dtype, or whose
    /// length does not match its header.
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
        let mut raw = vec![0u8; n * hd * bpe as usize];
        let data0 = HEADER_BYTES + 4 * n_tokens as u64;
        let (cache, session_tokens) = self.parts_mut();
        for layer in 0..n_layers {
            for head in 0..n_heads {
                for (i, dst) in [&mut k, &mut v].into_iter().enumerate() {
                    let at = data0 + ((layer * n_heads + head) * 2 + i) as u64 * head_bytes;
                    r.seek(SeekFrom::Start(at)).map_err(io)?;
                    r.read_exact(&mut raw).map_err(io)?;
                    let elem = bpe as usize;
                    for (t, row) in raw.chunks_exact(hd * elem).enumerate() {
                        let out = &mut dst[t * kv_dim + head * hd..t * kv_dim + (head + 1) * hd];
                        decode_row(dtype, row, out);
                    }
                }
            }
            cache.append(layer, &k, &v).map_err(ModelError::from)?;
        }
        cache.advance(n);
        session_tokens.extend_from_slice(&tokens[..n]);
        Ok(n)
    }
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
