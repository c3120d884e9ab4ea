//! `cargo xtask bench-offload-io`: how fast one streamed layer comes in from a file, by the two
//! designs issue #7 weighed for `nano-infer-offload`: `pread` into a reused buffer, or the
//! memory map the engine uses (`madvise(WILLNEED)`, touch every page, and `MADV_DONTNEED`
//! after use, exactly what `Streamer` does through `nano_infer::tensor::Tensor`).
//!
//! Design: one safetensors file holding one Qwen3-4B-BF16-sized decoder layer (192.5 MiB) is
//! written to the spill directory (a real disk where there is one: `/tmp` is often a tmpfs,
//! where "cold" means nothing), then each method runs `--repeat` times per condition:
//! *warm* (the file in the page cache, the usual case when RAM holds the file but the budget
//! does not) and *cold* (`posix_fadvise(DONTNEED)` evicts the file's clean pages before each
//! run: no root, no effect on other files). Each run is timed twice: bringing the layer in,
//! and the full cycle with one read pass over the bytes (what the kernels then do) and the
//! release. Medians are reported; the figures are quoted in `crates/offload/src/lib.rs`.

use std::fs::File;
use std::hint::black_box;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use nano_infer::tensor::{evict_page_cache, Paging, SafetensorsFile, SpillFile, Tensor};

/// One Qwen3-4B decoder layer in BF16: q (4096×2560), k and v (1024×2560 each), o
/// (2560×4096), gate, up (9728×2560 each) and down (2560×9728), 2 bytes each.
const LAYER_4B_BF16: usize = 2 * (4096 * 2560 + 2 * 1024 * 2560 + 2560 * 4096 + 3 * 9728 * 2560);

#[derive(Debug, clap::Args)]
pub(crate) struct IoArgs {
    /// Directory for the scratch file [default: the spill directory, ~/.cache/nano-infer].
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
    /// Bytes of the layer [default: one Qwen3-4B BF16 decoder layer].
    #[arg(long, default_value_t = LAYER_4B_BF16)]
    bytes: usize,
    /// Runs per method and condition; the table shows medians.
    #[arg(long, default_value_t = 5)]
    repeat: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Method {
    /// `pread` of the whole layer into one buffer allocated once and reused.
    Pread,
    /// WILLNEED + touch one byte per page; DONTNEED after use.
    Mmap,
}

/// Seconds to bring the layer in, and for the whole cycle (in, one read pass, release).
struct Sample {
    bring_in: f64,
    cycle: f64,
}

/// Sums the bytes as little-endian u64 words: one pass at memory speed, not optimised away.
fn read_pass(bytes: &[u8]) -> u64 {
    bytes
        .chunks_exact(8)
        .map(|w| u64::from_le_bytes(w.try_into().expect("chunks of 8")))
        .fold(0u64, u64::wrapping_add)
}

/// Writes a safetensors file with one U8 tensor `layer` of `bytes` bytes; returns its path.
fn write_layer_file(dir: &std::path::Path, bytes: usize) -> Result<PathBuf> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let path = dir.join(format!("offload-io-{}.safetensors", std::process::id()));
    let mut header =
        format!(r#"{{"layer":{{"dtype":"U8","shape":[{bytes}],"data_offsets":[0,{bytes}]}}}}"#);
    // Pad with spaces (valid JSON) so the data starts 8-byte aligned.
    while header.len() % 8 != 0 {
        header.push(' ');
    }
    let mut file =
        File::create(&path).with_context(|| format!("cannot create {}", path.display()))?;
    file.write_all(&(header.len() as u64).to_le_bytes())?;
    file.write_all(header.as_bytes())?;
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut chunk = vec![0u8; 8 << 20];
    let mut left = bytes;
    while left > 0 {
        let n = left.min(chunk.len());
        for w in chunk[..n].chunks_mut(8) {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            w.copy_from_slice(&state.to_le_bytes()[..w.len()]);
        }
        file.write_all(&chunk[..n])?;
        left -= n;
    }
    // Written back, the pages are clean, which is what lets `evict_page_cache` drop them.
    file.sync_all()?;
    Ok(path)
}

fn run_once(
    method: Method,
    file: &File,
    data_offset: u64,
    tensor: &Tensor,
    buf: &mut [u8],
) -> Result<Sample> {
    let start = Instant::now();
    let bring_in;
    match method {
        Method::Pread => {
            file.read_exact_at(buf, data_offset)?;
            bring_in = start.elapsed().as_secs_f64();
            black_box(read_pass(buf));
        }
        Method::Mmap => {
            tensor.advise(Paging::WillNeed)?;
            black_box(tensor.touch());
            bring_in = start.elapsed().as_secs_f64();
            black_box(read_pass(tensor.bytes()));
            tensor.advise(Paging::DontNeed)?;
        }
    }
    Ok(Sample {
        bring_in,
        cycle: start.elapsed().as_secs_f64(),
    })
}

pub(crate) fn run(args: &IoArgs) -> Result<()> {
    if args.bytes == 0 || args.repeat == 0 {
        bail!("--bytes and --repeat must be at least 1");
    }
    let dir = match &args.dir {
        Some(d) => d.clone(),
        None => SpillFile::default_dirs()
            .into_iter()
            .find(|d| std::fs::create_dir_all(d).is_ok())
            .context("no writable directory for the scratch file")?,
    };
    let path = write_layer_file(&dir, args.bytes)?;
    let result = measure(args, &path);
    let _ = std::fs::remove_file(&path);
    result
}

fn measure(args: &IoArgs, path: &std::path::Path) -> Result<()> {
    let st = SafetensorsFile::open(path)?;
    let tensor = st.get("layer")?;
    let file = File::open(path)?;
    let data_offset = (st.len_bytes() - args.bytes) as u64;
    // The pool of one layer-sized buffer, faulted in once: reuse is the point of the design.
    let mut buf = vec![1u8; args.bytes];
    let cold_ok = evict_page_cache(&file).is_ok();
    let gb = |secs: f64| args.bytes as f64 / secs / 1e9;
    println!(
        "# Streaming one layer in: pread vs mmap\n\n{} bytes ({:.1} MiB) in {}; median of {} runs; GB/s = layer bytes / time.\n",
        args.bytes,
        args.bytes as f64 / (1 << 20) as f64,
        path.display(),
        args.repeat
    );
    println!("| method | page cache | bring in GB/s | in + one read pass + release GB/s |");
    println!("|---|---|---:|---:|");
    for cold in [false, true] {
        if cold && !cold_ok {
            println!("| (cold runs skipped: posix_fadvise is not available here) | | | |");
            continue;
        }
        for method in [Method::Pread, Method::Mmap] {
            // One untimed run: the warm condition starts with the file in the page cache.
            run_once(method, &file, data_offset, &tensor, &mut buf)?;
            let mut samples = Vec::with_capacity(args.repeat);
            for _ in 0..args.repeat {
                if cold {
                    evict_page_cache(&file)?;
                }
                samples.push(run_once(method, &file, data_offset, &tensor, &mut buf)?);
            }
            let median = |f: &dyn Fn(&Sample) -> f64| {
                let mut v: Vec<f64> = samples.iter().map(f).collect();
                v.sort_by(f64::total_cmp);
                v[v.len() / 2]
            };
            println!(
                "| {} | {} | {:.2} | {:.2} |",
                match method {
                    Method::Pread => "pread into a reused buffer",
                    Method::Mmap => "mmap: WILLNEED + touch, DONTNEED after",
                },
                if cold { "cold (evicted)" } else { "warm" },
                gb(median(&|s| s.bring_in)),
                gb(median(&|s| s.cycle)),
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_layer_is_a_4b_layer() {
        // 100,925,440 weights: 36 of them make the 3.63 G non-embedding parameters of Qwen3-4B.
        assert_eq!(LAYER_4B_BF16, 201_850_880);
    }

    #[test]
    fn both_methods_read_the_same_bytes() {
        let dir = std::env::temp_dir().join(format!("nano-infer-io-test-{}", std::process::id()));
        let bytes = 3 * 4096 + 24;
        let path = write_layer_file(&dir, bytes).unwrap();
        let st = SafetensorsFile::open(&path).unwrap();
        let tensor = st.get("layer").unwrap();
        let file = File::open(&path).unwrap();
        let mut buf = vec![0u8; bytes];
        for method in [Method::Pread, Method::Mmap] {
            run_once(
                method,
                &file,
                (st.len_bytes() - bytes) as u64,
                &tensor,
                &mut buf,
            )
            .unwrap();
        }
        assert_eq!(buf, tensor.bytes(), "pread and the map see the same layer");
        assert_ne!(read_pass(&buf), 0);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
