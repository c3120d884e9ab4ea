//! Streams [`TensorSpec`]s into safetensors files, sharded like `save_pretrained`.
//!
//! safetensors layout: an 8-byte little-endian header length, a JSON header
//! (`__metadata__` first, then each tensor's dtype/shape/data_offsets) padded with
//! spaces to a multiple of 8, then the raw little-endian data. Because every size is
//! known from the specs, the header is written first and the data streamed after it.
//!
//! Generation is chunked: each tensor is cut into runs of whole rows of about
//! [`CHUNK_BYTES`]. `threads` chunks are generated at once on scoped threads while
//! the calling thread writes the previous batch, so disk and CPU overlap and memory
//! stays at two batches of chunk buffers (tens of MB) for any model size.

use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};
use serde_json::{json, Map, Value};

use super::codec::{self, awq_pack, Rng};
use super::{Dtype, Fill, TensorSpec, AWQ_CODE_STD, GROUP};

/// Target bytes per generated chunk. Part of the output's definition: the PRNG
/// stream restarts per chunk, so changing this changes the weights of a seed.
const CHUNK_BYTES: usize = 4 << 20;

/// What [`write_weights`] wrote.
#[derive(Debug)]
pub(crate) struct Summary {
    pub(crate) files: Vec<PathBuf>,
    /// Sum of tensor data sizes: the index's `metadata.total_size`.
    pub(crate) tensor_bytes: u64,
    /// Sum of file sizes, headers included.
    pub(crate) file_bytes: u64,
}

/// Deletes weight files of an earlier run in `dir`, so that a loader can never pick
/// up, say, an old `model.safetensors` next to a new sharded index.
pub(crate) fn remove_stale(dir: &Path) -> Result<()> {
    for entry in fs::read_dir(dir).with_context(|| format!("cannot list {}", dir.display()))? {
        let entry = entry?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let is_ours = name == "model.safetensors.index.json"
            || (name.starts_with("model") && name.ends_with(".safetensors"));
        if is_ours && entry.file_type()?.is_file() {
            fs::remove_file(entry.path())
                .with_context(|| format!("cannot remove stale {}", entry.path().display()))?;
            println!("  removed stale {name}");
        }
    }
    Ok(())
}

/// Splits `specs` (in state_dict order) into shards the way transformers'
/// `shard_checkpoint` does: a tensor opens a new shard when it would push a
/// non-empty shard past `max_bytes`. `max_bytes == 0` means one shard.
pub(crate) fn plan_shards(specs: &[TensorSpec], max_bytes: u64) -> Vec<Vec<usize>> {
    let mut shards: Vec<Vec<usize>> = vec![Vec::new()];
    let mut size = 0u64;
    for (i, t) in specs.iter().enumerate() {
        let b = t.bytes() as u64;
        let last = shards.last_mut().expect("never empty");
        if max_bytes > 0 && !last.is_empty() && size + b > max_bytes {
            shards.push(vec![i]);
            size = b;
        } else {
            last.push(i);
            size += b;
        }
    }
    shards
}

/// Orders one file's tensors as the safetensors serializer does (dtype descending,
/// then name) and builds its padded header. Returns the header bytes (length prefix
/// included) and the ordered spec indices.
pub(crate) fn file_header(specs: &[TensorSpec], members: &[usize]) -> (Vec<u8>, Vec<usize>) {
    let mut order = members.to_vec();
    order.sort_by(|&a, &b| {
        let (a, b) = (&specs[a], &specs[b]);
        b.dtype
            .st_rank()
            .cmp(&a.dtype.st_rank())
            .then_with(|| a.name.cmp(&b.name))
    });
    // Written by hand rather than through serde_json's Map, which would sort the keys;
    // the real files list tensors in data order after `__metadata__`.
    let mut json = String::from(r#"{"__metadata__":{"format":"pt"}"#);
    let mut offset = 0usize;
    for &i in &order {
        let t = &specs[i];
        let shape: Vec<String> = t.shape.iter().map(usize::to_string).collect();
        let end = offset + t.bytes();
        json += &format!(
            r#",{}:{{"dtype":"{}","shape":[{}],"data_offsets":[{offset},{end}]}}"#,
            Value::String(t.name.clone()),
            t.dtype.name(),
            shape.join(",")
        );
        offset = end;
    }
    json.push('}');
    while json.len() % 8 != 0 {
        json.push(' ');
    }
    let mut bytes = (json.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(json.as_bytes());
    (bytes, order)
}

/// One unit of generation work: rows `rows` of tensor `tensor`, chunk number `chunk`.
#[derive(Debug, Clone)]
struct Job {
    tensor: usize,
    chunk: u64,
    rows: Range<usize>,
}

fn jobs_for(specs: &[TensorSpec], order: &[usize]) -> Vec<Job> {
    let mut jobs = Vec::new();
    for &i in order {
        let t = &specs[i];
        let rows = t.shape.first().copied().unwrap_or(1);
        let row_bytes = t.bytes() / rows.max(1);
        let per_chunk = (CHUNK_BYTES / row_bytes.max(1)).max(1);
        for (chunk, start) in (0..rows).step_by(per_chunk).enumerate() {
            jobs.push(Job {
                tensor: i,
                chunk: chunk as u64,
                rows: start..rows.min(start + per_chunk),
            });
        }
    }
    jobs
}

/// Writes every shard (plus the index when there is more than one) into `dir`.
pub(crate) fn write_weights(
    dir: &Path,
    specs: &[TensorSpec],
    seed: u64,
    shard_bytes: u64,
    threads: usize,
) -> Result<Summary> {
    let shards = plan_shards(specs, shard_bytes);
    let n = shards.len();
    let names: Vec<String> = if n == 1 {
        vec!["model.safetensors".into()]
    } else {
        (1..=n)
            .map(|k| format!("model-{k:05}-of-{n:05}.safetensors"))
            .collect()
    };
    let tensor_bytes: u64 = specs.iter().map(|t| t.bytes() as u64).sum();
    let mut progress = Progress::new(tensor_bytes);
    let mut summary = Summary {
        files: Vec::new(),
        tensor_bytes,
        file_bytes: 0,
    };
    let mut weight_map = Map::new();

    for (members, name) in shards.iter().zip(&names) {
        let path = dir.join(name);
        let (header, order) = file_header(specs, members);
        let file =
            File::create(&path).with_context(|| format!("cannot create {}", path.display()))?;
        let mut w = BufWriter::with_capacity(1 << 20, file);
        w.write_all(&header)
            .with_context(|| format!("writing {}", path.display()))?;
        let data = write_data(&mut w, specs, &order, seed, threads, &mut progress)
            .with_context(|| format!("writing {}", path.display()))?;
        // No fsync: the data is in the page cache and visible to readers, and the
        // timing then measures generation, not the disk's writeback.
        w.flush()
            .with_context(|| format!("flushing {}", path.display()))?;
        summary.file_bytes += header.len() as u64 + data;
        println!(
            "  wrote {name} ({:.3} GB, {} tensors)",
            (header.len() as u64 + data) as f64 / 1e9,
            order.len()
        );
        for &i in members {
            weight_map.insert(specs[i].name.clone(), Value::String(name.clone()));
        }
        summary.files.push(path);
    }

    if n > 1 {
        let index = json!({ "metadata": { "total_size": tensor_bytes }, "weight_map": weight_map });
        let path = dir.join("model.safetensors.index.json");
        super::write_json(&path, &index)?;
        summary.files.push(path);
    }
    Ok(summary)
}

/// Streams the data section of one file; returns the bytes written.
fn write_data(
    w: &mut impl Write,
    specs: &[TensorSpec],
    order: &[usize],
    seed: u64,
    threads: usize,
    progress: &mut Progress,
) -> Result<u64> {
    let jobs = jobs_for(specs, order);
    let mut written = 0u64;
    // Two sets of buffers: one being filled by the workers, one being written.
    let mut pending: Vec<Vec<u8>> = Vec::new();
    let mut spare: Vec<Vec<u8>> = Vec::new();
    for batch in jobs.chunks(threads.max(1)) {
        let mut bufs: Vec<Vec<u8>> = batch
            .iter()
            .map(|_| spare.pop().unwrap_or_default())
            .collect();
        let io = std::thread::scope(|s| -> std::io::Result<()> {
            for (job, buf) in batch.iter().zip(bufs.iter_mut()) {
                s.spawn(move || fill_chunk(&specs[job.tensor], seed, job, buf));
            }
            for buf in &pending {
                w.write_all(buf)?;
                written += buf.len() as u64;
                progress.advance(buf.len() as u64);
            }
            Ok(())
        });
        io?;
        spare.append(&mut pending);
        pending = bufs;
    }
    for buf in &pending {
        w.write_all(buf)?;
        written += buf.len() as u64;
        progress.advance(buf.len() as u64);
    }
    Ok(written)
}

/// Prints a line at every 10% of the tensor data.
#[derive(Debug)]
struct Progress {
    total: u64,
    done: u64,
    next_report: u64,
    start: Instant,
}

impl Progress {
    fn new(total: u64) -> Self {
        Self {
            total,
            done: 0,
            next_report: total / 10,
            start: Instant::now(),
        }
    }

    fn advance(&mut self, bytes: u64) {
        self.done += bytes;
        // Small models finish in a blink; only report what a person would wait for.
        if self.total < 500_000_000 || self.done < self.next_report {
            return;
        }
        self.next_report += self.total / 10;
        let secs = self.start.elapsed().as_secs_f64();
        println!(
            "  {:5.1}%  {:.2} / {:.2} GB  {:.2} GB/s",
            100.0 * self.done as f64 / self.total as f64,
            self.done as f64 / 1e9,
            self.total as f64 / 1e9,
            self.done as f64 / 1e9 / secs
        );
    }
}

/// Generates the bytes of `job` into `out` (resized to fit).
fn fill_chunk(t: &TensorSpec, seed: u64, job: &Job, out: &mut Vec<u8>) {
    let rows = t.shape.first().copied().unwrap_or(1);
    let row_bytes = t.bytes() / rows.max(1);
    out.clear();
    out.resize(job.rows.len() * row_bytes, 0);
    let stream = codec::splitmix64(seed ^ codec::hash_name(&t.name)).wrapping_add(job.chunk);
    let mut rng = Rng::new(stream);
    match t.fill {
        Fill::Normal { std } => fill_float(t.dtype, out, || std * rng.normal()),
        Fill::Norm => fill_float(t.dtype, out, || 1.0 + 0.02 * rng.normal()),
        Fill::Scale { mean } => fill_float(t.dtype, out, || mean * (0.75 + 0.5 * rng.uniform())),
        Fill::Fp8 { fmt, code_std } => {
            for b in out.iter_mut() {
                *b = fmt.encode(code_std * rng.normal());
            }
        }
        Fill::AwqZeros { zeros_seed } => {
            // Rows of qzeros are groups.
            for (g, row) in job.rows.clone().zip(out.chunks_exact_mut(row_bytes)) {
                for (c, word) in row.chunks_exact_mut(4).enumerate() {
                    let vals: [u8; 8] = std::array::from_fn(|j| awq_zero(zeros_seed, g, 8 * c + j));
                    word.copy_from_slice(&awq_pack(&vals).to_le_bytes());
                }
            }
        }
        Fill::AwqWeights { zeros_seed } => {
            // Rows of qweight are input features; each row uses its group's zeros.
            let cols = row_bytes / 4 * 8;
            let mut zeros = vec![0u8; cols];
            let mut zeros_group = usize::MAX;
            for (k, row) in job.rows.clone().zip(out.chunks_exact_mut(row_bytes)) {
                if k / GROUP != zeros_group {
                    zeros_group = k / GROUP;
                    for (col, z) in zeros.iter_mut().enumerate() {
                        *z = awq_zero(zeros_seed, zeros_group, col);
                    }
                }
                for (word, z) in row.chunks_exact_mut(4).zip(zeros.chunks_exact(8)) {
                    let vals: [u8; 8] = std::array::from_fn(|j| {
                        (f32::from(z[j]) + AWQ_CODE_STD * rng.normal())
                            .round()
                            .clamp(0.0, 15.0) as u8
                    });
                    word.copy_from_slice(&awq_pack(&vals).to_le_bytes());
                }
            }
        }
    }
}

/// The AWQ zero point of (group, column): a hash rather than a stream, so qweight
/// and qzeros chunks can each compute it independently.
fn awq_zero(zeros_seed: u64, group: usize, col: usize) -> u8 {
    let h = codec::splitmix64(zeros_seed ^ ((group as u64) << 32) ^ col as u64);
    6 + (h & 3) as u8
}

/// Fills `out` with little-endian values of a float dtype drawn from `f`.
#[inline]
fn fill_float(dtype: Dtype, out: &mut [u8], mut f: impl FnMut() -> f32) {
    match dtype {
        Dtype::BF16 => {
            for b in out.chunks_exact_mut(2) {
                b.copy_from_slice(&codec::f32_to_bf16_bits(f()).to_le_bytes());
            }
        }
        Dtype::F16 => {
            for b in out.chunks_exact_mut(2) {
                b.copy_from_slice(&half::f16::from_f32(f()).to_bits().to_le_bytes());
            }
        }
        Dtype::F32 => {
            for b in out.chunks_exact_mut(4) {
                b.copy_from_slice(&f().to_le_bytes());
            }
        }
        Dtype::I32 | Dtype::F8E4M3 | Dtype::F8E5M2 => {
            unreachable!("{dtype:?} is not a float dtype")
        }
    }
}
