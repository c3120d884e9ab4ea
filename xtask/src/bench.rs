//! `cargo xtask bench`: end-to-end speed of whole models on this machine, recorded per
//! machine under `bench/`.
//!
//! Design: the parent process first measures read bandwidth (`bandwidth.rs`), then, for
//! each model x thread count x repeat, re-invokes this binary as `bench-one`
//! (`one.rs`) and reads back one JSON line. A fresh process per configuration is what
//! makes the figures honest: rayon's global pool can be sized once per process, and
//! `VmHWM` (peak RSS) never goes down. Rows report medians over the repeats
//! (`report.rs`); the JSON output keeps every sample. Cost: each run pays a model load,
//! which with the weights in the page cache is an mmap (plus AWQ's repack).
//!
//! Models default to the synthetic Qwen3-4B checkpoints `models/synth-4b-<format>` under
//! the repository root (also looked for in `../models/`); missing ones are generated with
//! `synth-model`, in a child process too, so the parent never holds gigabytes.

mod bandwidth;
mod margin;
mod one;
mod report;

use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, ensure, Context, Result};
use clap::ValueEnum;

use crate::synth::WeightFormat;
use one::OneResult;
pub(crate) use one::{run as run_one, OneArgs};
pub(crate) use report::{loadavg, median, Machine};
use report::{Report, Row};

/// Bandwidth buffer: far beyond any last-level cache we expect (tens of MiB).
const BANDWIDTH_MIB: usize = 1024;
const BANDWIDTH_PASSES: usize = 5;

#[derive(Debug, clap::Args)]
#[command(after_help = "\
For each model and thread count, a fresh child process loads the model, runs one warm-up
token, prefills each --prompt length of random ids in a fresh session, then decodes --decode
tokens greedily after the first prompt; it reports load time, tok/s and peak RSS (VmHWM).
Decode is also shown as a fraction of its bound: read bandwidth at that thread count
(measured here first) / Model::bytes_per_token().

The report goes to stdout (markdown, or JSON with --json) and to
<out>/<cpu>-<cores>c-<YYYY-MM-DD>.{md,json}. Run nothing else meanwhile: the load average
before and after is recorded because it skews every figure.")]
pub(crate) struct BenchArgs {
    /// Model directories to benchmark, instead of the synthetic --formats.
    #[arg(long, num_args = 1.., value_name = "DIR", conflicts_with = "formats")]
    models: Vec<PathBuf>,

    /// Synthetic Qwen3-4B checkpoints to benchmark, from models/synth-4b-<format>
    /// (generated when missing).
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_values_t = [WeightFormat::Bf16, WeightFormat::Awq, WeightFormat::Fp8Block]
    )]
    formats: Vec<WeightFormat>,

    /// rayon thread counts [default: 1 and all cores].
    #[arg(long, value_delimiter = ',')]
    threads: Vec<NonZeroUsize>,

    /// Prompt lengths to prefill, each in a fresh session.
    #[arg(long, value_delimiter = ',', default_values_t = [128, 512])]
    prompt: Vec<usize>,

    /// Greedy decode steps after the first prompt (0: none).
    #[arg(long, default_value_t = 64)]
    decode: usize,

    /// Runs per configuration; rows show the median.
    #[arg(long, default_value_t = NonZeroUsize::MIN.saturating_add(2))]
    repeat: NonZeroUsize,

    /// Print the report as JSON instead of markdown.
    #[arg(long)]
    json: bool,

    /// Directory for the recorded report [default: <repo>/bench].
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,

    /// Print only; write nothing under --out.
    #[arg(long)]
    no_save: bool,

    /// Cap on the kernels' instruction set (scalar, avx2, avx512, neon).
    #[arg(long)]
    isa: Option<String>,

    /// Fail instead of generating a missing synthetic model.
    #[arg(long)]
    no_synth: bool,

    /// Memory budget (`--max-memory`) of the extra offload rows: each --offload-formats model
    /// (every --models directory) also runs under it, and the report checks its peak RSS
    /// against budget + OFFLOAD_MARGIN. `none`: no offload rows.
    #[arg(long, value_name = "SIZE", default_value = "3GiB")]
    offload_budget: String,

    /// Element type of the KV cache (f32, bf16, f16); f16 is the CLI's default.
    #[arg(long, default_value = "f16")]
    kv_type: String,

    /// Also run every AWQ model with int8 activations (`--awq-int8`), as rows `<label> int8`.
    #[arg(long)]
    awq_int8: bool,

    /// Measure only the read bandwidth and the decode kernels' in-cache compute margin (no
    /// model runs; nothing is written under --out).
    #[arg(long)]
    margin_only: bool,

    /// Synthetic formats that get an offload row.
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = [WeightFormat::Bf16])]
    offload_formats: Vec<WeightFormat>,
}

/// What a run under a budget may hold beyond the plan's peak (`ResidencyPlan::peak_bytes`,
/// itself at most the budget): the binary's code and libraries, the stacks of the rayon
/// workers and the prefetch thread, the allocator's slack, and page rounding at the edges of
/// partly read tensors. None of these grow with the model.
pub(crate) const OFFLOAD_MARGIN: u64 = 256 << 20;

pub(crate) fn repo_root() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    root.canonicalize().unwrap_or(root)
}

fn format_name(f: WeightFormat) -> String {
    f.to_possible_value()
        .map_or_else(String::new, |p| p.get_name().to_owned())
}

/// The directory of the synthetic 4B model in `fmt`, generating it if needed.
pub(crate) fn synth_model(root: &Path, fmt: WeightFormat, no_synth: bool) -> Result<PathBuf> {
    let name = format!("synth-4b-{}", format_name(fmt));
    let here = root.join("models").join(&name);
    for dir in [&here, &root.join("../models").join(&name)] {
        if dir.join("config.json").is_file() {
            return Ok(dir.clone());
        }
    }
    let cmd = format!(
        "cargo xtask synth-model --out {} --dtype {}",
        here.display(),
        format_name(fmt)
    );
    if no_synth {
        bail!("no model at {}; generate it with `{cmd}`", here.display());
    }
    eprintln!("bench: {} is missing, running `{cmd}`", here.display());
    let status = Command::new(std::env::current_exe()?)
        .arg("synth-model")
        .arg("--out")
        .arg(&here)
        .arg("--dtype")
        .arg(format_name(fmt))
        .stdout(Stdio::inherit())
        .status()
        .context("cannot run synth-model")?;
    ensure!(status.success(), "`{cmd}` failed");
    Ok(here)
}

/// One benchmark configuration: a row of the report.
#[derive(Clone)]
struct Config<'a> {
    label: String,
    dir: &'a Path,
    threads: usize,
    /// `--max-memory` of an offload row.
    max_memory: Option<u64>,
    awq_int8: bool,
}

/// Whether the checkpoint in `dir` is AWQ, as the loader reads its config (`false` when the
/// config does not parse: the model's own run then reports why).
fn is_awq(dir: &Path) -> bool {
    use nano_infer::quant::QuantScheme;
    nano_infer::qwen3::Qwen3Config::from_dir(dir)
        .ok()
        .and_then(|c| QuantScheme::from_config(c.quantization_config.as_ref()).ok())
        .is_some_and(|q| matches!(q, QuantScheme::Awq(_)))
}

/// One configuration in a fresh child process, under `max_memory` bytes if given.
fn run_child(
    args: &BenchArgs,
    model: &Path,
    threads: usize,
    max_memory: Option<u64>,
    awq_int8: bool,
) -> Result<OneResult> {
    let prompts: Vec<String> = args.prompt.iter().map(|p| p.to_string()).collect();
    let mut cmd = Command::new(std::env::current_exe()?);
    cmd.arg("bench-one")
        .arg("--model")
        .arg(model)
        .arg("--threads")
        .arg(threads.to_string())
        .arg("--prompt")
        .arg(prompts.join(","))
        .arg("--decode")
        .arg(args.decode.to_string())
        .arg("--kv-type")
        .arg(&args.kv_type)
        .stderr(Stdio::inherit());
    if awq_int8 {
        cmd.arg("--awq-int8");
    }
    if let Some(isa) = &args.isa {
        cmd.arg("--isa").arg(isa);
    }
    if let Some(bytes) = max_memory {
        cmd.arg("--max-memory").arg(bytes.to_string());
    }
    let out = cmd.output().context("cannot run bench-one")?;
    ensure!(
        out.status.success(),
        "bench-one on {} with {threads} threads failed ({})",
        model.display(),
        out.status
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .context("bench-one printed nothing")?;
    serde_json::from_str(line).with_context(|| format!("bench-one printed {line:?}"))
}

/// `--isa` as a cap on the levels measured.
fn isa_cap(args: &BenchArgs) -> Result<Option<nano_infer::simd::Isa>> {
    args.isa
        .as_deref()
        .map(|name| {
            nano_infer::simd::Isa::parse(name).with_context(|| format!("unknown --isa {name}"))
        })
        .transpose()
}

/// One core's share of the all-core read bandwidth (what each core must digest when every
/// core decodes), measured on all cores; `fallback` when there is one core.
fn per_core_share(fallback: f64) -> f64 {
    let cores = Machine::detect(&repo_root()).cores;
    if cores <= 1 {
        return fallback;
    }
    let all = bandwidth::measure(&[cores], BANDWIDTH_MIB << 20, BANDWIDTH_PASSES)[0].1;
    eprintln!(
        "bench: read bandwidth, {cores} threads: {:.1} GB/s",
        all / 1e9
    );
    all / cores as f64
}

pub(crate) fn run(args: &BenchArgs) -> Result<()> {
    ensure!(
        !args.prompt.is_empty() && !args.prompt.contains(&0),
        "--prompt lengths must be at least 1"
    );
    let budget = match args.offload_budget.trim() {
        "none" => None,
        size => Some(
            nano_infer::offload::parse_size(size)
                .with_context(|| format!("--offload-budget {size}"))?,
        ),
    };
    if args.margin_only {
        let isa_cap = isa_cap(args)?;
        let bandwidth = bandwidth::measure(&[1], BANDWIDTH_MIB << 20, BANDWIDTH_PASSES);
        let bw = bandwidth[0].1;
        eprintln!("bench: read bandwidth, 1 thread: {:.1} GB/s", bw / 1e9);
        let per_core = per_core_share(bw);
        print!(
            "{}",
            margin::markdown(&margin::measure(isa_cap, bw, per_core), bw, per_core)
        );
        return Ok(());
    }
    let root = repo_root();
    // (label, directory, whether it also gets an offload row, whether it is AWQ)
    let models: Vec<(String, PathBuf, bool, bool)> = if args.models.is_empty() {
        args.formats
            .iter()
            .map(|&f| {
                let dir = synth_model(&root, f, args.no_synth)?;
                let offload = args.offload_formats.contains(&f);
                Ok((format_name(f), dir, offload, f == WeightFormat::Awq))
            })
            .collect::<Result<_>>()?
    } else {
        args.models
            .iter()
            .map(|d| {
                ensure!(
                    d.join("config.json").is_file(),
                    "{} has no config.json",
                    d.display()
                );
                let label = d
                    .file_name()
                    .map_or_else(|| d.display().to_string(), |n| n.to_string_lossy().into());
                Ok((label, d.clone(), true, is_awq(d)))
            })
            .collect::<Result<_>>()?
    };

    let machine = Machine::detect(&root);
    let mut threads: Vec<usize> = args.threads.iter().map(|t| t.get()).collect();
    if threads.is_empty() {
        threads = vec![1, machine.cores];
    }
    // Keep the order given, drop repeats (1 and all cores coincide on a 1-core machine).
    let mut seen = Vec::new();
    threads.retain(|t| {
        !seen.contains(t) && {
            seen.push(*t);
            true
        }
    });
    // Bandwidth at 1, 2 and all cores, and at every thread count a row needs for its bound.
    let mut bw_threads: Vec<usize> = [1, 2.min(machine.cores), machine.cores]
        .into_iter()
        .chain(threads.iter().copied())
        .collect();
    bw_threads.sort_unstable();
    bw_threads.dedup();

    let isa_cap = isa_cap(args)?;
    let loadavg_before = report::loadavg();
    eprintln!(
        "bench: {} ({} cores), load average {loadavg_before}; measuring read bandwidth",
        machine.cpu, machine.cores
    );
    let bandwidth = bandwidth::measure(&bw_threads, BANDWIDTH_MIB << 20, BANDWIDTH_PASSES);
    for (t, bw) in &bandwidth {
        eprintln!("bench: read bandwidth, {t} threads: {:.1} GB/s", bw / 1e9);
    }
    let bandwidth_1t = bandwidth
        .iter()
        .find(|(t, _)| *t == 1)
        .map_or(f64::NAN, |b| b.1);
    let all_cores = bandwidth
        .iter()
        .find(|(t, _)| *t == machine.cores)
        .map_or(f64::NAN, |b| b.1);
    eprintln!("bench: decode kernels in cache, one thread");
    let margin = margin::measure(isa_cap, bandwidth_1t, all_cores / machine.cores as f64);

    let mut report = Report {
        machine,
        command: std::iter::once("cargo xtask".to_owned())
            .chain(std::env::args().skip(1))
            .collect::<Vec<_>>()
            .join(" "),
        repeat: args.repeat.get(),
        loadavg_before,
        loadavg_after: String::new(),
        bandwidth,
        bandwidth_buffer_bytes: BANDWIDTH_MIB << 20,
        margin,
        rows: Vec::new(),
        offload_margin: OFFLOAD_MARGIN,
        offload: Vec::new(),
    };
    let out_dir = args.out.clone().unwrap_or_else(|| root.join("bench"));
    let stem = report.free_stem(&out_dir);
    // Repeats are the outer loop: after the first round every configuration has a sample,
    // and the files are rewritten after each run, so a long run that is stopped still has a
    // complete table (with fewer repeats).
    // Each budget row follows the unbudgeted row of the same model and thread count, which is
    // what the report compares it with.
    let configs: Vec<Config> = models
        .iter()
        .flat_map(|(label, dir, offload, awq)| {
            threads.iter().flat_map(move |&t| {
                let plain = Config {
                    label: label.clone(),
                    dir,
                    threads: t,
                    max_memory: None,
                    awq_int8: false,
                };
                let budgeted = budget.filter(|_| *offload).map(|b| {
                    let size = nano_infer::offload::format_size(b).replace(' ', "");
                    Config {
                        label: format!("{label} @{size}"),
                        max_memory: Some(b),
                        ..plain.clone()
                    }
                });
                let int8 = (args.awq_int8 && *awq).then(|| Config {
                    label: format!("{label} int8"),
                    awq_int8: true,
                    ..plain.clone()
                });
                std::iter::once(plain.clone()).chain(budgeted).chain(int8)
            })
        })
        .collect();
    let mut samples: Vec<Vec<OneResult>> = vec![Vec::new(); configs.len()];
    for r in 0..args.repeat.get() {
        for (i, c) in configs.iter().enumerate() {
            let (label, t) = (&c.label, c.threads);
            let s = run_child(args, c.dir, t, c.max_memory, c.awq_int8)?;
            eprintln!(
                "bench: run {}/{}, {label}, {t} threads: load {:.2} s, prefill {}, decode {}",
                r + 1,
                args.repeat,
                s.load_s,
                s.prefill
                    .iter()
                    .map(|p| format!("{}: {:.2} tok/s", p.tokens, p.tok_s()))
                    .collect::<Vec<_>>()
                    .join(", "),
                s.decode
                    .map_or_else(|| "-".into(), |d| format!("{:.2} tok/s", d.tok_s()))
            );
            samples[i].push(s);
            report.rows = configs
                .iter()
                .zip(&samples)
                .filter(|(_, s)| !s.is_empty())
                .map(|(c, s)| {
                    let (label, t) = (&c.label, c.threads);
                    let bw = report
                        .bandwidth
                        .iter()
                        .find(|(bt, _)| *bt == t)
                        .map_or(f64::NAN, |b| b.1);
                    Row::from_samples(label.clone(), s.clone(), bw)
                })
                .collect();
            report.offload = report.offload();
            report.loadavg_after = report::loadavg();
            if !args.no_save {
                report.save(&out_dir, &stem)?;
            }
        }
    }

    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.markdown());
    }
    if !args.no_save {
        eprintln!(
            "bench: wrote {}.md and .json",
            out_dir.join(&stem).display()
        );
    }
    let over: Vec<String> = report
        .offload
        .iter()
        .filter(|o| !o.within_limit)
        .map(|o| {
            format!(
                "{} ({} threads): peak RSS {} > budget + margin {}",
                o.label,
                o.threads,
                nano_infer::offload::format_size(o.peak_rss),
                nano_infer::offload::format_size(o.limit)
            )
        })
        .collect();
    ensure!(
        over.is_empty(),
        "over the memory budget: {}",
        over.join("; ")
    );
    Ok(())
}
