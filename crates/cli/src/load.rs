//! Loading what a command needs: the thread pool, the model, and the tokenizer, chat template
//! and generation defaults that sit beside it.
//!
//! The tokenizer and template are optional: a directory of weights alone still runs with
//! `--ids`, and the error for a text prompt is raised where the text is encoded, naming the
//! missing file. Loading shows a spinner on a terminal when it takes over a second.

use crate::args::EngineArgs;
use anyhow::{anyhow, Context, Result};
use indicatif::ProgressBar;
use nano_infer_qwen3::{GenerationDefaults, LoadOptions, Model};
use nano_infer_tokenizer::{ChatTemplate, Tokenizer, TokenizerError};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// A loaded model and its companions.
#[derive(Debug)]
pub struct Loaded {
    pub model: Model,
    pub tokenizer: Option<Tokenizer>,
    /// The template, or why there is none (shown when a chat needs it).
    pub template: std::result::Result<ChatTemplate, String>,
    pub defaults: GenerationDefaults,
    pub load_time: Duration,
    pub threads: usize,
}

impl Loaded {
    /// The tokenizer, or an error saying a text input needs one.
    pub fn tokenizer(&self) -> Result<&Tokenizer> {
        self.tokenizer
            .as_ref()
            .ok_or_else(|| no_tokenizer(self.model.dir()))
    }

    /// The chat template, or an error suggesting `--raw`.
    pub fn template(&self) -> Result<&ChatTemplate> {
        self.template
            .as_ref()
            .map_err(|why| anyhow!("{why}; use --raw to feed the prompt as plain text"))
    }
}

/// The error for a text input when the model folder has no `tokenizer.json`.
pub fn no_tokenizer(dir: &Path) -> anyhow::Error {
    anyhow!(
        "{} has no tokenizer.json: a text prompt needs the tokenizer files (pass token ids with --ids instead)",
        dir.display()
    )
}

/// Context size under `--max-memory` when `--ctx-size` is not given.
const OFFLOAD_DEFAULT_CTX: usize = 4096;

/// Builds the global rayon pool with `--threads` workers. Must run before anything touches rayon.
pub fn init_threads(engine: &EngineArgs) -> Result<usize> {
    let n = engine.threads()?;
    rayon::ThreadPoolBuilder::new()
        .num_threads(n)
        .build_global()
        .context("starting the thread pool")?;
    Ok(n)
}

/// Loads the model in `dir` with the engine options, and its tokenizer, template and defaults.
pub fn load(dir: &Path, engine: &EngineArgs, ctx_size: Option<usize>) -> Result<Loaded> {
    let threads = init_threads(engine)?;
    let max_memory = engine.max_memory()?;
    let options = LoadOptions {
        isa: engine.isa()?,
        kv_dtype: engine.kv_dtype()?,
        // Under a budget the KV cache is reserved for the whole context: a default of the
        // model's 40k positions would leave no room for weights.
        ctx_size: ctx_size.or(max_memory.map(|_| OFFLOAD_DEFAULT_CTX)),
        lm_head: engine.lm_head()?,
        awq_activations: engine.awq_activations(),
        max_memory,
    };
    let start = Instant::now();
    let model = with_spinner(&format!("loading {}", dir.display()), || {
        Model::load(dir, &options)
    })
    .with_context(|| format!("loading the model from {}", dir.display()))?;
    if let Some(report) = model.offload_report() {
        // A budget the user did not ask for is always announced; one they set, with -v.
        if max_memory.is_none() || engine.verbose {
            note!("{report}");
        }
    }
    let tokenizer = load_tokenizer(dir)?;
    let template = match ChatTemplate::from_dir(dir) {
        Ok(t) => Ok(t),
        Err(e) => Err(format!("the model has no usable chat template ({e})")),
    };
    let defaults = GenerationDefaults::from_dir(dir, model.config().eos_token_id.as_ref())?;
    Ok(Loaded {
        model,
        tokenizer,
        template,
        defaults,
        load_time: start.elapsed(),
        threads,
    })
}

/// `tokenizer.json` if the folder has one; a file that exists but does not load is an error.
pub fn load_tokenizer(dir: &Path) -> Result<Option<Tokenizer>> {
    match Tokenizer::from_dir(dir) {
        Ok(t) => Ok(Some(t)),
        Err(TokenizerError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
            Ok(None)
        }
        Err(e) => Err(e.into()),
    }
}

/// Reads a prompt file, `-` meaning stdin.
pub fn read_text(path: &PathBuf) -> Result<String> {
    if path.as_os_str() == "-" {
        return std::io::read_to_string(std::io::stdin()).context("reading the prompt from stdin");
    }
    std::fs::read_to_string(path)
        .with_context(|| format!("cannot read prompt file {}", path.display()))
}

/// Runs `work`, showing a spinner on stderr if it is still running after a second and stderr is
/// a terminal (a fast load, or output to a log, shows nothing).
pub fn with_spinner<T>(message: &str, work: impl FnOnce() -> T) -> T {
    if !std::io::stderr().is_terminal() {
        return work();
    }
    let (done, wait) = mpsc::channel::<()>();
    std::thread::scope(|scope| {
        scope.spawn(move || {
            if wait.recv_timeout(Duration::from_secs(1)) != Err(mpsc::RecvTimeoutError::Timeout) {
                return;
            }
            let spinner = ProgressBar::new_spinner().with_message(message.to_string());
            spinner.enable_steady_tick(Duration::from_millis(100));
            let _ = wait.recv();
            spinner.finish_and_clear();
        });
        let out = work();
        drop(done);
        out
    })
}
