//! `cargo xtask bench-one` (hidden): one benchmark configuration in this process, printed
//! as one JSON line on stdout. `bench` runs it in a fresh child per configuration, so the
//! rayon pool size (fixed once per process) and the peak RSS belong to that run alone.
//!
//! Sequence: load; one throwaway decode step that faults the mapped weights in (reported
//! as `first_token_s`, kept out of the throughput figures); then for each prompt length a
//! fresh session prefilled with random ids; the first prompt's session then decodes
//! greedily. Ids come from a seeded SplitMix64, so every run sees the same tokens.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use nano_infer::qwen3::{AwqActivations, Isa, KvDtype, LoadOptions, Model};
use serde::{Deserialize, Serialize};

#[derive(Debug, clap::Args)]
pub(crate) struct OneArgs {
    /// Model directory.
    #[arg(long, value_name = "DIR")]
    pub(crate) model: PathBuf,
    /// Size of the rayon global pool.
    #[arg(long)]
    pub(crate) threads: usize,
    /// Prompt lengths to prefill, each in a fresh session.
    #[arg(long, value_delimiter = ',', required = true)]
    pub(crate) prompt: Vec<usize>,
    /// Greedy decode steps after the first prompt.
    #[arg(long)]
    pub(crate) decode: usize,
    /// Cap on the kernels' instruction set.
    #[arg(long)]
    pub(crate) isa: Option<String>,
    /// Seed of the random prompt ids.
    #[arg(long, default_value_t = 0)]
    pub(crate) seed: u64,
    /// Memory budget in bytes (`LoadOptions::max_memory`): layers that do not fit stream.
    #[arg(long, value_name = "BYTES")]
    pub(crate) max_memory: Option<u64>,
    /// Element type of the KV cache (f32, bf16, f16).
    #[arg(long, default_value = "f16")]
    pub(crate) kv_type: String,
    /// AWQ layers take int8 activations (`AwqActivations::Int8`, the CLI's `--awq-int8`).
    #[arg(long)]
    pub(crate) awq_int8: bool,
}

/// What one configuration measured. Times in seconds, sizes in bytes.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct OneResult {
    pub(crate) model: PathBuf,
    /// `quantization_config.quant_method`, or the dense `torch_dtype`.
    pub(crate) format: String,
    pub(crate) isa: String,
    /// `LoadOptions` as `Debug` prints them: the figures depend on them.
    pub(crate) load_options: String,
    pub(crate) threads: usize,
    pub(crate) file_bytes: usize,
    pub(crate) bytes_per_token: usize,
    pub(crate) load_s: f64,
    pub(crate) first_token_s: f64,
    pub(crate) prefill: Vec<Timed>,
    pub(crate) decode: Option<Timed>,
    /// `VmHWM`: peak resident set, mapped weight pages included.
    pub(crate) peak_rss: u64,
    /// `RssAnon` / `RssFile` at the end: heap (KV cache, repacked weights, activations)
    /// versus mapped files.
    pub(crate) rss_anon: u64,
    pub(crate) rss_file: u64,
    /// Under `--max-memory`: what the residency plan decided.
    pub(crate) offload: Option<Offload>,
}

/// The residency plan of a run under a memory budget.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Offload {
    pub(crate) budget: u64,
    /// `ResidencyPlan::peak_bytes`: weights kept resident + streaming window + KV + activations.
    pub(crate) planned_peak: u64,
    pub(crate) layers: usize,
    pub(crate) streamed_layers: usize,
    /// `Model::offload_report`, as `-v` prints it.
    pub(crate) report: String,
}

/// `tokens` processed in `secs`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub(crate) struct Timed {
    pub(crate) tokens: usize,
    pub(crate) secs: f64,
}

impl Timed {
    pub(crate) fn tok_s(&self) -> f64 {
        self.tokens as f64 / self.secs
    }
}

pub(crate) fn run(args: &OneArgs) -> Result<()> {
    rayon::ThreadPoolBuilder::new()
        .num_threads(args.threads)
        .build_global()
        .context("cannot size the rayon pool")?;
    let isa = match &args.isa {
        None => None,
        Some(name) => match Isa::parse(name) {
            Some(isa) if isa.is_available() => Some(isa),
            Some(_) => bail!("this CPU lacks --isa {name}"),
            None => bail!("unknown --isa {name}"),
        },
    };
    let longest = args.prompt.iter().copied().max().unwrap_or(0);
    let kv_dtype: KvDtype = args
        .kv_type
        .parse()
        .with_context(|| format!("--kv-type {}", args.kv_type))?;
    let options = LoadOptions {
        isa,
        kv_dtype,
        awq_activations: if args.awq_int8 {
            AwqActivations::Int8
        } else {
            AwqActivations::F32
        },
        ctx_size: Some(longest + args.decode + 1),
        max_memory: args.max_memory,
        // Everything else as a library user gets it by default.
        ..LoadOptions::default()
    };

    let start = Instant::now();
    let model = Model::load(&args.model, &options)
        .with_context(|| format!("cannot load {}", args.model.display()))?;
    let load_s = start.elapsed().as_secs_f64();
    let vocab = u64::try_from(model.vocab_size())?;
    let mut rng = SplitMix64(args.seed);

    let start = Instant::now();
    model.session().decode(rng.below(vocab))?;
    let first_token_s = start.elapsed().as_secs_f64();

    let mut prefill = Vec::new();
    let mut decode = None;
    for (i, &n) in args.prompt.iter().enumerate() {
        let ids: Vec<u32> = (0..n).map(|_| rng.below(vocab)).collect();
        let mut session = model.session();
        let start = Instant::now();
        let mut next = argmax(session.prefill(&ids)?);
        prefill.push(Timed {
            tokens: n,
            secs: start.elapsed().as_secs_f64(),
        });
        if i == 0 && args.decode > 0 {
            let start = Instant::now();
            for _ in 0..args.decode {
                next = argmax(session.decode(next)?);
            }
            decode = Some(Timed {
                tokens: args.decode,
                secs: start.elapsed().as_secs_f64(),
            });
        }
    }

    let config = model.config();
    let format = config
        .quantization_config
        .as_ref()
        .and_then(|q| q.get("quant_method")?.as_str().map(str::to_owned))
        .or_else(|| config.torch_dtype.clone())
        .unwrap_or_else(|| "unknown".into());
    let offload = match (args.max_memory, model.residency_plan()) {
        (Some(budget), Some(plan)) => Some(Offload {
            budget,
            planned_peak: plan.peak_bytes(),
            layers: plan.inputs().layers.len(),
            streamed_layers: plan.streamed_layers().len(),
            report: model.offload_report().unwrap_or_default().to_owned(),
        }),
        _ => None,
    };
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let result = OneResult {
        model: args.model.clone(),
        format,
        isa: model.kernels().isa().name().into(),
        load_options: format!("{options:?}"),
        threads: rayon::current_num_threads(),
        file_bytes: model.file_bytes(),
        bytes_per_token: model.bytes_per_token(),
        load_s,
        first_token_s,
        prefill,
        decode,
        peak_rss: status_kib(&status, "VmHWM:") * 1024,
        rss_anon: status_kib(&status, "RssAnon:") * 1024,
        rss_file: status_kib(&status, "RssFile:") * 1024,
        offload,
    };
    println!("{}", serde_json::to_string(&result)?);
    Ok(())
}

/// A `/proc/self/status` field in kB (0 where the kernel does not report it).
fn status_kib(status: &str, key: &str) -> u64 {
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// Greedy choice: the first index of the largest logit.
fn argmax(logits: &[f32]) -> u32 {
    let (mut best, mut best_v) = (0, f32::NEG_INFINITY);
    for (i, &v) in logits.iter().enumerate() {
        if v > best_v {
            (best, best_v) = (i, v);
        }
    }
    u32::try_from(best).expect("vocabulary fits in u32")
}

/// SplitMix64: tiny, seedable, good enough for picking token ids.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A value in `0..n` (modulo bias is irrelevant here).
    fn below(&mut self, n: u64) -> u32 {
        u32::try_from(self.next() % n).expect("vocabulary fits in u32")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_fields_parse() {
        let s = "Name:\tx\nVmHWM:\t  123456 kB\nRssAnon:\t 42 kB\n";
        assert_eq!(status_kib(s, "VmHWM:"), 123_456);
        assert_eq!(status_kib(s, "RssAnon:"), 42);
        assert_eq!(status_kib(s, "RssFile:"), 0);
    }

    #[test]
    fn argmax_takes_first_maximum() {
        assert_eq!(argmax(&[1.0, 3.0, 3.0, -1.0]), 1);
    }
}
