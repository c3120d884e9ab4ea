//! A file that keeps AWQ layers in their repacked layout across runs, so that a second start
//! maps them instead of repacking (4.4 s for a 4B model on two Zen 1 cores, 19–30 s on one
//! thread of the AVX-512 host; mapping and checking the cache takes a fraction of a second).
//!
//! Format: a safetensors file, read by the same strict loader as checkpoints (a truncated or
//! garbage file fails its header checks: spans must tile the data section exactly). For each
//! AWQ layer `p`, three 1-D tensors in the exact layout [`AwqWeight`] reads: `p.awq_packed`
//! (U8), `p.awq_scales` and `p.awq_zero_scaled` (F32, little-endian). Rows are a multiple of 8
//! (16 for tiles), so every buffer's byte length is a multiple of 4 and every F32 tensor stays
//! aligned in the map (the data section starts on a page).
//!
//! Validation (all in `__metadata__`, compared before a byte of data is used):
//! - `nano_infer_awq_cache`: [`AWQ_CACHE_VERSION`], bumped whenever the repacked layout or this
//!   format changes; `endian`; `activations` (f32 rows or int8 tiles, which differ in layout);
//! - `sources`: every checkpoint file's canonical path, size and modification time, so a touched
//!   or replaced file makes the cache stale;
//! - `fingerprint`: a hash of every AWQ layer's name, shape, group and layout, its scales and
//!   zero points in full and three 4 KiB stretches of its codes (start, middle, end). That is
//!   ~2% of an AWQ checkpoint (read at every load anyway, the scales for their finiteness
//!   check), and it tells other weights with the same names and shapes apart without reading
//!   the gigabytes of codes, which a cache hit never needs;
//! - `hash:<tensor>`: a hash of every cached buffer, checked at every load (in parallel over
//!   the buffers; it also pages the cache in, which the first token would do anyway), so a
//!   file damaged on disk or torn by a crash is refused, never run.
//!
//! Any mismatch is a [`CacheMiss`] naming what differed; the caller rebuilds the file.
//! Writing goes through [`SafetensorsWriter`] (temporary file, rename), one layer at a time:
//! each layer is repacked into memory, hashed, written and dropped, so a first start holds at
//! most one layer's copy, and afterwards every layer reads from the file's map: the first and
//! the later starts run on the same bytes.

use crate::awq::AwqSource;
use crate::{AwqWeight, QuantError, Result};
use nano_infer_tensor::{Dtype, SafetensorsFile, SafetensorsWriter, TensorError, WeightStore};
use rayon::prelude::*;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Version of the cached layout and of this file format. Bump it with any change to
/// [`AwqWeight`]'s layouts, to the tile constants of `nano_infer_simd::q8`, or to the keys.
pub const AWQ_CACHE_VERSION: u32 = 1;

const VERSION_KEY: &str = "nano_infer_awq_cache";
const HASH_PREFIX: &str = "hash:";

/// Why a cache file could not be used (it is then rebuilt).
#[derive(Debug, thiserror::Error)]
pub enum CacheMiss {
    /// No file at the path.
    #[error("no cache file yet")]
    Absent,
    /// The file is not a readable safetensors file (truncated, garbage, unreadable).
    #[error("unreadable: {0}")]
    Unreadable(TensorError),
    /// The file was written for other weights, another layout or another version.
    #[error("stale: its {key} differs (cache {found:?}, expected {expected:?})")]
    Stale {
        /// The metadata key that differs.
        key: String,
        /// The cache's value (shortened), or `None` when it lacks the key.
        found: Option<String>,
        /// This checkpoint's value (shortened).
        expected: String,
    },
    /// The metadata matches but a tensor is missing, misshapen or its bytes do not hash to
    /// the recorded value.
    #[error("corrupt: {0}")]
    Corrupt(String),
}

/// The AWQ layers of a checkpoint and the identity a cache of them must match.
#[derive(Debug)]
pub struct AwqCacheKey {
    layers: Vec<(String, AwqSource)>,
    metadata: BTreeMap<String, String>,
}

/// A validated (or freshly written) cache file, mapped: the source of the layers' repacked data.
#[derive(Debug)]
pub struct AwqCache {
    file: SafetensorsFile,
}

impl AwqCacheKey {
    /// The key of `layers` (`(prefix, source)`, in the order the file holds them) of the
    /// checkpoint in `store`: reads the sources' identities and computes the fingerprint.
    pub fn new(store: &WeightStore, layers: Vec<(String, AwqSource)>) -> Result<Self> {
        let mut sources = Vec::new();
        for file in store.files() {
            let path = file.path();
            let io = |source| TensorError::Io {
                path: path.to_owned(),
                source,
            };
            let canonical = std::fs::canonicalize(path).map_err(io)?;
            let meta = std::fs::metadata(&canonical).map_err(io)?;
            let mtime = meta
                .modified()
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_nanos());
            sources.push(serde_json::json!({
                "path": canonical.to_string_lossy(),
                "size": meta.len(),
                "mtime_ns": mtime.to_string(),
            }));
        }
        let mut h = Hasher::new();
        for (prefix, source) in &layers {
            h.update(prefix.as_bytes());
            source.fingerprint(&mut h)?;
        }
        let activations = layers.first().map_or("none", |(_, s)| s.activations_name());
        let metadata = BTreeMap::from([
            (VERSION_KEY.to_owned(), AWQ_CACHE_VERSION.to_string()),
            (
                "endian".to_owned(),
                if cfg!(target_endian = "little") {
                    "little"
                } else {
                    "big"
                }
                .to_owned(),
            ),
            ("activations".to_owned(), activations.to_owned()),
            (
                "sources".to_owned(),
                serde_json::Value::Array(sources).to_string(),
            ),
            ("fingerprint".to_owned(), format!("{:016x}", h.finish())),
        ]);
        Ok(Self { layers, metadata })
    }

    /// AWQ layers the cache holds.
    pub fn len(&self) -> usize {
        self.layers.len()
    }

    /// Whether there is anything to cache.
    pub fn is_empty(&self) -> bool {
        self.layers.is_empty()
    }

    /// `(name, dtype, shape)` of every cached tensor, in file order.
    fn specs(&self) -> Vec<(String, Dtype, Vec<usize>)> {
        self.layers
            .iter()
            .flat_map(|(prefix, source)| source.cache_specs(prefix))
            .collect()
    }

    /// Opens and checks the cache at `path` against this key: metadata, tensor list and shapes,
    /// and the hash of every buffer.
    pub fn open(&self, path: &Path) -> std::result::Result<AwqCache, CacheMiss> {
        if !path.exists() {
            return Err(CacheMiss::Absent);
        }
        let file = SafetensorsFile::open(path).map_err(CacheMiss::Unreadable)?;
        let found = file.metadata();
        for (key, expected) in &self.metadata {
            if found.get(key) != Some(expected) {
                return Err(CacheMiss::Stale {
                    key: key.clone(),
                    found: found.get(key).map(|v| shorten(v)),
                    expected: shorten(expected),
                });
            }
        }
        let specs = self.specs();
        if file.names().count() != specs.len() {
            return Err(CacheMiss::Corrupt(format!(
                "{} tensors, expected {}",
                file.names().count(),
                specs.len()
            )));
        }
        let mut tensors = Vec::with_capacity(specs.len());
        for (name, dtype, shape) in specs {
            let t = file
                .get(&name)
                .map_err(|e| CacheMiss::Corrupt(e.to_string()))?;
            if t.dtype() != dtype || t.shape() != shape {
                return Err(CacheMiss::Corrupt(format!(
                    "tensor `{name}` is {} {:?}, expected {dtype} {shape:?}",
                    t.dtype(),
                    t.shape()
                )));
            }
            let recorded = found.get(&format!("{HASH_PREFIX}{name}")).cloned();
            tensors.push((t, recorded));
        }
        let bad = tensors.par_iter().find_any(|(t, recorded)| {
            recorded.as_deref() != Some(format!("{:016x}", hash(t.bytes())).as_str())
        });
        if let Some((t, _)) = bad {
            return Err(CacheMiss::Corrupt(format!(
                "tensor `{}`'s bytes do not match their recorded hash",
                t.name()
            )));
        }
        Ok(AwqCache { file })
    }

    /// Repacks every layer into a new cache file at `path` (written atomically, replacing any
    /// file there), reporting after each layer how many are done, and returns it mapped.
    pub fn write(&self, path: &Path, on_layer_done: &mut dyn FnMut(usize)) -> Result<AwqCache> {
        let mut writer = SafetensorsWriter::create(path, &self.specs(), &self.placeholder())?;
        let mut metadata = self.metadata.clone();
        for (i, (prefix, source)) in self.layers.iter().enumerate() {
            let weight = source.clone().repack()?;
            let [packed, scales, zero_scaled] = source.cache_specs(prefix).map(|s| s.0);
            let (p, s, z) = (weight.packed(), weight.scales(), weight.zero_scaled());
            let hashes = [hash(p), hash(bytemuck_f32(s)), hash(bytemuck_f32(z))];
            writer.write(&packed, p)?;
            writer.write(&scales, s)?;
            writer.write(&zero_scaled, z)?;
            for (name, h) in [packed, scales, zero_scaled].into_iter().zip(hashes) {
                metadata.insert(format!("{HASH_PREFIX}{name}"), format!("{h:016x}"));
            }
            on_layer_done(i + 1);
        }
        let dest = writer.finish(&metadata)?;
        let file = SafetensorsFile::open(&dest)?;
        // Another process may have renamed its own file over ours in between: use what is
        // there only if it is what this writer wrote (then it is byte for byte the same).
        if file.metadata() != &metadata {
            return Err(CacheMiss::Stale {
                key: "content".to_owned(),
                found: None,
                expected: "the file this load wrote (replaced by another process)".to_owned(),
            }
            .into());
        }
        Ok(AwqCache { file })
    }

    /// The metadata with every hash zeroed: the same length as the final one, so the header
    /// reserved at creation fits it.
    fn placeholder(&self) -> BTreeMap<String, String> {
        let mut m = self.metadata.clone();
        for (name, _, _) in self.specs() {
            m.insert(format!("{HASH_PREFIX}{name}"), "0".repeat(16));
        }
        m
    }
}

impl AwqCache {
    /// Where the cache was mapped from.
    pub fn path(&self) -> &Path {
        self.file.path()
    }

    /// The layer `prefix` (opened as `source`) bound to the cached buffers.
    pub fn weight(&self, prefix: &str, source: &AwqSource) -> Result<AwqWeight> {
        let [packed, scales, zero_scaled] = source.cache_specs(prefix).map(|s| s.0);
        AwqWeight::from_cache(
            source,
            self.file.get(&packed)?,
            self.file.get(&scales)?,
            self.file.get(&zero_scaled)?,
        )
    }
}

/// The default file name for the cache of the checkpoint in `model_dir` with `activations`:
/// the directory's name (for people looking in the cache directory) and a hash of its
/// canonical path (two models of one name never share a file).
pub fn cache_file_name(model_dir: &Path, activations: crate::AwqActivations) -> PathBuf {
    let canonical = std::fs::canonicalize(model_dir).unwrap_or_else(|_| model_dir.to_owned());
    let name: String = canonical
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '_'
            }
        })
        .take(64)
        .collect();
    let act = match activations {
        crate::AwqActivations::F32 => "f32",
        crate::AwqActivations::Int8 => "int8",
    };
    let h = hash(canonical.to_string_lossy().as_bytes());
    PathBuf::from(format!("{name}-{h:016x}-{act}.awq.safetensors"))
}

fn shorten(s: &str) -> String {
    if s.len() <= 80 {
        s.to_owned()
    } else {
        let cut = (0..=80).rev().find(|&i| s.is_char_boundary(i)).unwrap_or(0);
        format!("{}…", &s[..cut])
    }
}

fn bytemuck_f32(v: &[f32]) -> &[u8] {
    bytemuck::cast_slice(v)
}

impl From<CacheMiss> for QuantError {
    fn from(miss: CacheMiss) -> Self {
        QuantError::invalid("awq cache", miss.to_string())
    }
}

/// A 64-bit non-cryptographic hash (four xxHash64-style lanes over 32-byte stripes): it only
/// has to tell a damaged or foreign file from the right one, at memory speed.
#[derive(Debug, Clone)]
pub(crate) struct Hasher {
    lanes: [u64; 4],
    tail: Vec<u8>,
    len: u64,
}

const P1: u64 = 0x9E37_79B1_85EB_CA87;
const P2: u64 = 0xC2B2_AE3D_27D4_EB4F;
const P3: u64 = 0x1656_67B1_9E37_79F9;

impl Hasher {
    pub(crate) fn new() -> Self {
        Self {
            lanes: [P1.wrapping_add(P2), P2, 0, 0u64.wrapping_sub(P1)],
            tail: Vec::new(),
            len: 0,
        }
    }

    pub(crate) fn update(&mut self, mut bytes: &[u8]) {
        self.len += bytes.len() as u64;
        if !self.tail.is_empty() {
            let take = (32 - self.tail.len()).min(bytes.len());
            self.tail.extend_from_slice(&bytes[..take]);
            bytes = &bytes[take..];
            if self.tail.len() < 32 {
                return;
            }
            let stripe = std::mem::take(&mut self.tail);
            self.stripes(&stripe);
        }
        let whole = bytes.len() / 32 * 32;
        self.stripes(&bytes[..whole]);
        self.tail.extend_from_slice(&bytes[whole..]);
    }

    fn stripes(&mut self, bytes: &[u8]) {
        for stripe in bytes.chunks_exact(32) {
            for (lane, word) in self.lanes.iter_mut().zip(stripe.chunks_exact(8)) {
                let w = u64::from_le_bytes(word.try_into().expect("8 bytes"));
                *lane = lane
                    .wrapping_add(w.wrapping_mul(P2))
                    .rotate_left(31)
                    .wrapping_mul(P1);
            }
        }
    }

    pub(crate) fn finish(&self) -> u64 {
        let mut h = self.lanes[0].rotate_left(1)
            ^ self.lanes[1].rotate_left(7)
            ^ self.lanes[2].rotate_left(12)
            ^ self.lanes[3].rotate_left(18);
        h = h.wrapping_add(self.len);
        for &b in &self.tail {
            h = (h ^ (b as u64).wrapping_mul(P3))
                .rotate_left(11)
                .wrapping_mul(P1);
        }
        h ^= h >> 33;
        h = h.wrapping_mul(P2);
        h ^= h >> 29;
        h = h.wrapping_mul(P3);
        h ^ (h >> 32)
    }
}

/// [`Hasher`] over one buffer.
pub(crate) fn hash(bytes: &[u8]) -> u64 {
    let mut h = Hasher::new();
    h.update(bytes);
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hash_does_not_depend_on_how_the_bytes_are_split() {
        let bytes: Vec<u8> = (0..1000u32).map(|i| (i * 37 % 251) as u8).collect();
        let whole = hash(&bytes);
        for cut in [0, 1, 31, 32, 33, 500, 999, 1000] {
            let mut h = Hasher::new();
            h.update(&bytes[..cut]);
            h.update(&bytes[cut..]);
            assert_eq!(h.finish(), whole, "split at {cut}");
        }
        // One flipped bit anywhere changes it, and so does the length.
        for at in [0, 17, 500, 999] {
            let mut b = bytes.clone();
            b[at] ^= 4;
            assert_ne!(hash(&b), whole, "bit flip at {at}");
        }
        assert_ne!(hash(&bytes[..999]), whole);
    }
}
