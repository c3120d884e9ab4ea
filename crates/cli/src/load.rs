//! Loading what a command needs: the thread pool, then the model with its tokenizer, template
//! and generation defaults (one `Generator`), with a progress bar on a terminal.
//!
//! The tokenizer and template are optional: a directory of weights alone still runs with
//! `--ids`, and the error for a text prompt is raised where the text is encoded, naming the
//! missing file.

use crate::args::EngineArgs;
use anyhow::{Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use nano_infer_generate::Generator;
use nano_infer_qwen3::{AwqCacheStatus, LoadOptions, LoadProgress};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// A loaded model and how long it took.
#[derive(Debug)]
pub struct Loaded {
    pub generator: Generator,
    pub load_time: Duration,
    pub threads: usize,
}

/// Context size under `--max-memory` when `--ctx-size` is not given: the KV cache is reserved
/// for the whole context under a budget, and the model's 40k positions would leave no room for
/// weights.
pub const OFFLOAD_DEFAULT_CTX: usize = 4096;

/// Builds the global rayon pool with `--threads` workers. Must run before anything touches rayon.
pub fn init_threads(engine: &EngineArgs) -> Result<usize> {
    let n = engine.threads()?;
    rayon::ThreadPoolBuilder::new()
        .num_threads(n)
        .build_global()
        .context("starting the thread pool")?;
    Ok(n)
}

/// The library's load options from the engine flags.
pub fn load_options(engine: &EngineArgs, ctx_size: Option<usize>) -> Result<LoadOptions> {
    let max_memory = engine.max_memory()?;
    Ok(LoadOptions {
        isa: engine.isa()?,
        kv_dtype: engine.kv_dtype()?,
        ctx_size: ctx_size.or(max_memory.map(|_| OFFLOAD_DEFAULT_CTX)),
        lm_head: engine.lm_head()?,
        awq_activations: engine.awq_activations(),
        max_memory,
        check_tensors: engine.check_tensors,
        awq_cache: engine.awq_cache(),
    })
}

/// What a load decided that the user should know: the AWQ cache's state and the memory
/// budget's plan (`serve` calls it on its loading thread too).
pub fn announce(generator: &Generator, verbose: bool, budget_given: bool) {
    match generator.model().awq_cache_status() {
        // A cache that could not be written is always announced (every start repacks); the
        // others with -v.
        Some(status @ AwqCacheStatus::Unavailable { .. }) => note!("{status}"),
        Some(status) if verbose => note!("{status}"),
        _ => {}
    }
    if let Some(report) = generator.model().offload_report() {
        // A budget the user did not ask for is always announced; one they set, with -v.
        if !budget_given || verbose {
            note!("{report}");
        }
    }
}

/// Loads the model in `dir` with the engine options, and its tokenizer, template and defaults.
pub fn load(dir: &Path, engine: &EngineArgs, ctx_size: Option<usize>) -> Result<Loaded> {
    let threads = init_threads(engine)?;
    let options = load_options(engine, ctx_size)?;
    let max_memory = options.max_memory;
    let start = Instant::now();
    let mut bar = Bar::new("loading", "layers");
    let generator = Generator::load(dir, &options, &mut |p: LoadProgress| {
        bar.set(p.layers_done as u64, p.layers_total as u64, "")
    })
    .with_context(|| format!("loading the model from {}", dir.display()))?;
    bar.finish();
    announce(&generator, engine.verbose > 0, max_memory.is_some());
    Ok(Loaded {
        generator,
        load_time: start.elapsed(),
        threads,
    })
}

/// Reads a prompt file, `-` meaning stdin.
pub fn read_text(path: &PathBuf) -> Result<String> {
    if path.as_os_str() == "-" {
        return std::io::read_to_string(std::io::stdin()).context("reading the prompt from stdin");
    }
    std::fs::read_to_string(path)
        .with_context(|| format!("cannot read prompt file {}", path.display()))
}

/// A progress bar on stderr for work that reports `done` of `total`: shown only on a terminal
/// and only once the work has taken a second, so fast work, `--json` and logs show nothing.
#[derive(Debug)]
pub struct Bar {
    what: &'static str,
    unit: &'static str,
    start: Instant,
    enabled: bool,
    bar: Option<ProgressBar>,
}

impl Bar {
    pub fn new(what: &'static str, unit: &'static str) -> Self {
        Self::when(std::io::stderr().is_terminal(), what, unit)
    }

    /// A bar that is never shown unless `enabled` (and stderr is a terminal).
    pub fn when(enabled: bool, what: &'static str, unit: &'static str) -> Self {
        Self {
            what,
            unit,
            start: Instant::now(),
            enabled: enabled && std::io::stderr().is_terminal(),
            bar: None,
        }
    }

    pub fn set(&mut self, done: u64, total: u64, message: &str) {
        if !self.enabled || (self.bar.is_none() && self.start.elapsed() < Duration::from_secs(1)) {
            return;
        }
        let bar = self.bar.get_or_insert_with(|| {
            let bar = ProgressBar::new(total);
            let style = format!(
                "{} {{bar:30}} {{pos}}/{{len}} {} {{msg}}",
                self.what, self.unit
            );
            if let Ok(style) = ProgressStyle::with_template(&style) {
                bar.set_style(style);
            }
            bar
        });
        bar.set_length(total);
        bar.set_position(done);
        bar.set_message(message.to_string());
    }

    pub fn finish(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }
}
