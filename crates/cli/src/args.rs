//! Command-line arguments: the clap definitions and the checks clap cannot express.
//!
//! The short options are those of the original C tool (`-m -p -t -k -P -l -s -i -v -h`); the long
//! ones follow llama.cpp's names where it has one (`--ctx-size`, `--repeat-penalty`, `--min-p`,
//! `--ignore-eos`). Range checks live here and in `SamplingParams::validate` rather than in clap
//! value parsers, so every bad value gives the same one-line `error: ...` as any other mistake.

use anyhow::{bail, Context, Result};
use clap::{ArgAction, Args, Parser, Subcommand};
use nano_infer_generate::{GenerateError, Grammar, Params};
use nano_infer_qwen3::{Isa, KvDtype};
use std::path::{Path, PathBuf};

/// Where `-m` points when it is not given (the original tool's default). When that folder does
/// not exist either, [`DEFAULT_REPO`] is looked up in the Hugging Face cache.
pub const DEFAULT_MODEL_DIR: &str = "../models/Qwen/Qwen3-4B/";
/// The Hugging Face repository used when no model is given and [`DEFAULT_MODEL_DIR`] is absent.
pub const DEFAULT_REPO: &str = "Qwen/Qwen3-4B";

const EXAMPLES: &str = "\
Examples:
  qwen3-infer -p \"Why is the sky blue?\"              chat template, sampling from generation_config.json
  qwen3-infer -m Qwen/Qwen3-4B -i                    interactive chat; the model comes from the HF cache
  qwen3-infer -p \"Once upon a time\" --raw -t 0 -l 64  raw text, greedy, 64 tokens
  qwen3-infer --ids 9707,11,1879 -t 0 --json         token ids in, one JSON object out
  qwen3-infer perplexity -f wiki.txt -c 512          perplexity of a text file
  qwen3-infer tokenize --chat --no-think \"Hello\"     the ids the model would see

Chat commands (-i): /clear /system <text> /think /no_think /help /exit; Ctrl-C stops an answer, Ctrl-D quits.
Environment: HF_HOME, HF_HUB_CACHE (where Hugging Face repo ids are looked up), HF_HUB_OFFLINE=1 (never download).";

/// Run Qwen3 models on the CPU: generate text, chat, measure perplexity, tokenize.
#[derive(Debug, Parser)]
#[command(name = "qwen3-infer", version, after_help = EXAMPLES, args_conflicts_with_subcommands = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub generate: GenerateArgs,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Perplexity of a text or a token sequence (log-softmax in f64, windows of -c tokens).
    Perplexity(PerplexityArgs),
    /// Print the token ids of a text, optionally rendered through the chat template.
    Tokenize(TokenizeArgs),
    /// Run many requests from a JSON-lines file together, sharing cached prompt prefixes;
    /// one JSON line out per request.
    Batch(BatchArgs),
    /// Serve the model over an OpenAI-compatible HTTP API (/v1/chat/completions,
    /// /v1/completions, /v1/models, /health, /metrics, /tokenize, /detokenize), many clients at
    /// once with continuous batching.
    Serve(ServeArgs),
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Address to listen on (0.0.0.0 to serve other machines)
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1")]
    pub host: String,
    /// Port to listen on
    #[arg(long, value_name = "PORT", default_value_t = 8080)]
    pub port: u16,
    /// Require `Authorization: Bearer KEY` on every endpoint but /health
    #[arg(
        long = "api-key",
        value_name = "KEY",
        env = "QWEN3_INFER_API_KEY",
        hide_env_values = true
    )]
    pub api_key: Option<String>,
    /// Requests decoded together; more wait in a queue (--queue)
    #[arg(
        long,
        value_name = "N",
        default_value_t = 8,
        allow_negative_numbers = true
    )]
    pub parallel: i64,
    /// Requests that may wait for a slot; past it the server answers 503 with Retry-After
    #[arg(long, value_name = "N", default_value_t = 64)]
    pub queue: usize,
    /// Context size in tokens per request [default: the model's max_position_embeddings]
    #[arg(
        short = 'c',
        long = "ctx-size",
        value_name = "N",
        allow_negative_numbers = true
    )]
    pub ctx_size: Option<i64>,
    /// Memory for the paged KV pool (running requests and cached prefixes)
    #[arg(long = "kv-budget", value_name = "SIZE", default_value = "2GiB")]
    pub kv_budget: String,
    /// Most prompt tokens fed per step while other requests stream (fewer when measured step
    /// times say more would slow their steps past 2x); a prompt alone is fed 512 at a time
    #[arg(
        long = "prefill-chunk",
        value_name = "N",
        default_value_t = 8,
        allow_negative_numbers = true
    )]
    pub prefill_chunk: i64,
    /// The model's name in /v1/models and answers [default: the model folder's name]
    #[arg(long, value_name = "NAME")]
    pub alias: Option<String>,
    #[command(flatten)]
    pub engine: EngineArgs,
}

#[derive(Debug, Args)]
pub struct BatchArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Requests, one JSON object per line ('-' for stdin): {"prompt": ...} | {"messages": [...]}
    /// | {"ids": [...]}, with optional max_tokens, temperature, top_k, top_p, min_p,
    /// repeat_penalty, presence_penalty, seed, think, system, raw
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    pub file: PathBuf,
    /// Most sequences decoded together in one forward pass
    #[arg(
        long = "max-batch",
        value_name = "N",
        default_value_t = 8,
        allow_negative_numbers = true
    )]
    pub max_batch: i64,
    /// Memory for the paged KV pool (running sequences and cached prefixes)
    #[arg(long = "kv-budget", value_name = "SIZE", default_value = "2GiB")]
    pub kv_budget: String,
    /// Prefill every prompt in full instead of reusing cached prefixes
    #[arg(long = "no-prefix-cache")]
    pub no_prefix_cache: bool,
    /// How cached prefixes are found: radix (a radix tree over tokens, SGLang's design) or hash
    /// (whole blocks keyed by a chained hash, vLLM's); both give the same results
    #[arg(
        long = "prefix-index",
        value_name = "radix|hash",
        default_value = "radix"
    )]
    pub prefix_index: nano_infer_qwen3::PrefixIndex,
    /// Context size in tokens per sequence [default: the model's max_position_embeddings]
    #[arg(
        short = 'c',
        long = "ctx-size",
        value_name = "N",
        allow_negative_numbers = true
    )]
    pub ctx_size: Option<i64>,
    #[command(flatten)]
    pub engine: EngineArgs,
}

impl BatchArgs {
    pub fn ctx_size(&self) -> Result<Option<usize>> {
        self.ctx_size.map(|n| positive("--ctx-size", n)).transpose()
    }

    pub fn max_batch(&self) -> Result<usize> {
        positive("--max-batch", self.max_batch)
    }
}

/// Which model to load: shared by every command.
#[derive(Debug, Args)]
pub struct ModelArgs {
    /// Model directory, or a Hugging Face repo id (e.g. Qwen/Qwen3-4B) looked up in the HF cache
    /// and downloaded when missing [default: ../models/Qwen/Qwen3-4B/, else Qwen/Qwen3-4B]
    #[arg(short = 'm', long = "model", value_name = "PATH|REPO")]
    pub model: Option<String>,
}

/// How to run the engine: shared by generation and perplexity.
#[derive(Debug, Args)]
pub struct EngineArgs {
    /// Worker threads [default: the number of CPUs]
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,
    /// Highest instruction set the kernels may use: scalar, avx2, avx512, neon [default: the best the CPU has]
    #[arg(long, value_name = "ISA")]
    pub isa: Option<String>,
    /// Element type of the KV cache: f32, bf16, f16. f16 (as llama.cpp) halves the cache and
    /// keeps 11 bits of precision; f32 reproduces the reference implementation's arithmetic
    #[arg(
        long = "kv-type",
        value_name = "TYPE",
        default_value = "f16",
        env = "QWEN3_INFER_KV_TYPE"
    )]
    pub kv_type: String,
    /// Memory budget for weights, KV cache and activations (e.g. 3GiB, 512M); layers that do
    /// not fit are streamed from disk with the next one prefetched [default: none, unless the
    /// model does not fit in available memory]
    #[arg(long = "max-memory", value_name = "SIZE")]
    pub max_memory: Option<String>,
    /// lm_head format: exact (the checkpoint's) or q8 (an int8 copy built at load: faster
    /// decode, log-probs within ~0.5 of exact)
    #[arg(long = "lm-head", value_name = "FORMAT", default_value = "exact")]
    pub lm_head: String,
    /// AWQ layers multiply int8-quantized activations with integer dot products (3-6x faster
    /// kernels; not bit-faithful to the reference, so off by default)
    #[arg(long = "awq-int8")]
    pub awq_int8: bool,
    /// Where AWQ models keep their repacked layers between runs, so that later starts skip the
    /// repack: a directory, or `off` [default: $XDG_CACHE_HOME/nano-infer/awq, else
    /// ~/.cache/nano-infer/awq]
    #[arg(
        long = "awq-cache",
        value_name = "DIR|off",
        env = "QWEN3_INFER_AWQ_CACHE"
    )]
    pub awq_cache: Option<PathBuf>,
    /// Scan every weight for NaN and infinity at load and name the first one found (reads all
    /// of the files; scales, norms and biases are always checked)
    #[arg(long = "check-tensors")]
    pub check_tensors: bool,
    /// Print load time, speeds, peak memory, ISA and threads on stderr (-vv: also the rendered
    /// prompt)
    #[arg(short, long, action = ArgAction::Count)]
    pub verbose: u8,
}

/// The default command: one-shot generation or, with `-i`, a chat.
#[derive(Debug, Args)]
pub struct GenerateArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Prompt text (a user message unless --raw)
    #[arg(short, long)]
    pub prompt: Option<String>,
    /// Read the prompt from a file ('-' for stdin)
    #[arg(
        short = 'f',
        long = "file",
        value_name = "FILE",
        conflicts_with = "prompt"
    )]
    pub file: Option<PathBuf>,
    /// Token ids to feed directly, comma-separated; no tokenizer or template is needed
    #[arg(long, value_name = "IDS", conflicts_with_all = ["prompt", "file", "raw", "system", "think", "no_think", "interactive"])]
    pub ids: Option<String>,
    /// Interactive chat: line editing, history, the KV cache kept across turns
    #[arg(short, long)]
    pub interactive: bool,
    /// Sampling temperature; 0 is greedy [default: generation_config.json]
    #[arg(short = 't', long, value_name = "T", allow_negative_numbers = true)]
    pub temperature: Option<f64>,
    /// Keep only the K most likely tokens; 0 turns it off [default: generation_config.json]
    #[arg(
        short = 'k',
        long = "top-k",
        value_name = "K",
        allow_negative_numbers = true
    )]
    pub top_k: Option<i64>,
    /// Nucleus sampling mass in (0, 1]; 1 turns it off [default: generation_config.json]
    #[arg(
        short = 'P',
        long = "top-p",
        value_name = "P",
        allow_negative_numbers = true
    )]
    pub top_p: Option<f64>,
    /// Drop tokens less likely than P times the most likely one; 0 turns it off
    #[arg(long = "min-p", value_name = "P", allow_negative_numbers = true)]
    pub min_p: Option<f64>,
    /// Repetition penalty over the prompt and output (> 0; 1 turns it off)
    #[arg(
        long = "repeat-penalty",
        value_name = "X",
        allow_negative_numbers = true
    )]
    pub repeat_penalty: Option<f64>,
    /// Subtracted once from the logit of every token already seen; 0 turns it off
    #[arg(
        long = "presence-penalty",
        value_name = "X",
        allow_negative_numbers = true
    )]
    pub presence_penalty: Option<f64>,
    /// Subtracted from a token's logit once per time it was already seen; 0 turns it off
    #[arg(
        long = "frequency-penalty",
        value_name = "X",
        allow_negative_numbers = true
    )]
    pub frequency_penalty: Option<f64>,
    /// End the answer before this text (repeatable); it is never printed
    #[arg(long = "stop", value_name = "TEXT")]
    pub stop: Vec<String>,
    /// Constrain the answer to JSON valid against the JSON schema in FILE
    #[arg(long = "json-schema", value_name = "FILE", group = "constraint")]
    pub json_schema: Option<PathBuf>,
    /// Constrain the answer to a JSON object (any; --json is the output format)
    #[arg(long = "json-object", group = "constraint")]
    pub json_object: bool,
    /// Constrain the answer to match the regular expression R (Rust regex syntax)
    #[arg(long = "regex", value_name = "R", group = "constraint")]
    pub regex: Option<String>,
    /// Constrain the answer to the Lark grammar in FILE (llguidance's syntax)
    #[arg(long = "grammar", value_name = "FILE", group = "constraint")]
    pub grammar: Option<PathBuf>,
    /// With --json: each generated token's log-probability
    #[arg(long)]
    pub logprobs: bool,
    /// With --json: also the N most likely alternatives of each token (0-20)
    #[arg(long = "top-logprobs", value_name = "N", allow_negative_numbers = true)]
    pub top_logprobs: Option<i64>,
    /// Maximum number of tokens to generate (per answer in a chat) [default: generation_config.json, else 512]
    #[arg(
        short = 'l',
        long = "max-length",
        value_name = "N",
        allow_negative_numbers = true
    )]
    pub max_length: Option<i64>,
    /// Random seed for sampling [default: from the clock]
    #[arg(short, long, value_name = "N")]
    pub seed: Option<u64>,
    /// Context size in tokens [default: the model's max_position_embeddings; with
    /// --max-memory, whose budget reserves the KV cache for the whole context, the prompt plus
    /// -l (at least 4096; 4096 in a chat)]
    #[arg(
        long = "ctx-size",
        short = 'c',
        value_name = "N",
        allow_negative_numbers = true
    )]
    pub ctx_size: Option<i64>,
    /// Turn thinking on in the chat template
    #[arg(long, conflicts_with = "no_think")]
    pub think: bool,
    /// Turn thinking off in the chat template (the template's default is used otherwise)
    #[arg(long = "no-think")]
    pub no_think: bool,
    /// System message for the chat template
    #[arg(long, value_name = "TEXT")]
    pub system: Option<String>,
    /// Feed the prompt as plain text, without the chat template
    #[arg(long, conflicts_with_all = ["system", "think", "no_think", "interactive"])]
    pub raw: bool,
    /// Keep generating past end-of-sequence tokens
    #[arg(long = "ignore-eos")]
    pub ignore_eos: bool,
    /// Do not print the <think>...</think> part of answers
    #[arg(long = "hide-think")]
    pub hide_think: bool,
    /// Print one JSON object (content, finish_reason, usage, seed, ids, logprobs, timings; see
    /// README "JSON output") instead of streaming text
    #[arg(long, conflicts_with = "interactive")]
    pub json: bool,
    /// Save the prompt's KV cache to FILE after the run, and reuse the longest matching prefix
    /// from it next time (refused if FILE is from another model or KV type)
    #[arg(
        long = "prompt-cache",
        value_name = "FILE",
        conflicts_with = "interactive"
    )]
    pub prompt_cache: Option<PathBuf>,
    #[command(flatten)]
    pub engine: EngineArgs,
}

#[derive(Debug, Args)]
pub struct PerplexityArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Text file to score (needs the tokenizer files)
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    pub file: Option<PathBuf>,
    /// Text to score (needs the tokenizer files)
    #[arg(short, long, conflicts_with = "file")]
    pub prompt: Option<String>,
    /// Token ids to score, comma-separated
    #[arg(long, value_name = "IDS", conflicts_with_all = ["file", "prompt"])]
    pub ids: Option<String>,
    /// Tokens per window (spelled as the main command's context size; `--ctx` also works);
    /// longer inputs are scored in windows that overlap by one token
    #[arg(
        short = 'c',
        long = "ctx-size",
        visible_alias = "ctx",
        value_name = "N",
        default_value_t = 512,
        allow_negative_numbers = true
    )]
    pub ctx: i64,
    /// Print one JSON object, with every token's log-probability
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub engine: EngineArgs,
}

#[derive(Debug, Args)]
pub struct TokenizeArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Text to tokenize
    #[arg(value_name = "TEXT")]
    pub text: Option<String>,
    /// Read the text from a file ('-' for stdin)
    #[arg(
        short = 'f',
        long = "file",
        value_name = "FILE",
        conflicts_with = "text"
    )]
    pub file: Option<PathBuf>,
    /// Render the text as one user turn of the chat template, with the generation prompt
    #[arg(long)]
    pub chat: bool,
    /// With --chat: thinking on
    #[arg(long, requires = "chat", conflicts_with = "no_think")]
    pub think: bool,
    /// With --chat: thinking off
    #[arg(long = "no-think", requires = "chat")]
    pub no_think: bool,
    /// With --chat: a system message
    #[arg(long, value_name = "TEXT", requires = "chat")]
    pub system: Option<String>,
    /// Print {"ids": [...], "prompt": "..."}
    #[arg(long)]
    pub json: bool,
}

/// `--think` / `--no-think` as the template's `enable_thinking` (None: the template's default).
pub fn thinking(think: bool, no_think: bool) -> Option<bool> {
    match (think, no_think) {
        (true, _) => Some(true),
        (_, true) => Some(false),
        _ => None,
    }
}

/// Parses `--ids "1,2,3"` (spaces allowed around the commas).
pub fn parse_ids(text: &str) -> Result<Vec<u32>> {
    let ids = text
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<u32>().with_context(|| {
                format!("--ids: `{s}` is not a token id (expected comma-separated integers)")
            })
        })
        .collect::<Result<Vec<_>>>()?;
    if ids.is_empty() {
        bail!("--ids is empty: give at least one token id");
    }
    Ok(ids)
}

/// A count that must be at least 1 (clap parses it as i64 so a negative value gets our message).
pub fn positive(name: &str, value: i64) -> Result<usize> {
    if value < 1 {
        bail!("{name} must be at least 1 (got {value})");
    }
    Ok(value as usize)
}

impl EngineArgs {
    /// The `--isa` cap, checked against the CPU.
    pub fn isa(&self) -> Result<Option<Isa>> {
        let Some(name) = &self.isa else {
            return Ok(None);
        };
        let isa = Isa::parse(&name.to_ascii_lowercase()).with_context(|| {
            format!(
                "--isa: unknown instruction set `{name}` (expected scalar, avx2, avx512 or neon)"
            )
        })?;
        if !isa.is_available() {
            let have: Vec<&str> = Isa::available().into_iter().map(Isa::name).collect();
            bail!(
                "--isa {isa}: this CPU does not have it (available: {})",
                have.join(", ")
            );
        }
        Ok(Some(isa))
    }

    pub fn kv_dtype(&self) -> Result<KvDtype> {
        self.kv_type.parse().map_err(|_| {
            anyhow::anyhow!(
                "--kv-type: unknown type `{}` (expected f32, bf16 or f16)",
                self.kv_type
            )
        })
    }

    /// `--max-memory` in bytes.
    pub fn max_memory(&self) -> Result<Option<u64>> {
        self.max_memory
            .as_deref()
            .map(|text| {
                nano_infer_offload::parse_size(text)
                    .map_err(|e| anyhow::anyhow!("--max-memory: {e}"))
            })
            .transpose()
    }

    pub fn lm_head(&self) -> Result<nano_infer_qwen3::LmHead> {
        match self.lm_head.as_str() {
            "exact" => Ok(nano_infer_qwen3::LmHead::Exact),
            "q8" => Ok(nano_infer_qwen3::LmHead::Q8),
            other => bail!("--lm-head: unknown format `{other}` (expected exact or q8)"),
        }
    }

    pub fn awq_cache(&self) -> nano_infer_qwen3::AwqCacheDir {
        match &self.awq_cache {
            None => nano_infer_qwen3::AwqCacheDir::User,
            Some(p) if p.as_os_str() == "off" => nano_infer_qwen3::AwqCacheDir::Off,
            Some(p) => nano_infer_qwen3::AwqCacheDir::Dir(p.clone()),
        }
    }

    pub fn awq_activations(&self) -> nano_infer_qwen3::AwqActivations {
        if self.awq_int8 {
            nano_infer_qwen3::AwqActivations::Int8
        } else {
            nano_infer_qwen3::AwqActivations::F32
        }
    }

    /// `--threads`, or the number of CPUs the process may use. More than
    /// [`MAX_THREADS_PER_CPU`] per CPU is refused: each thread spins between the matmuls of a
    /// token, so thousands of them only take turns (4,000 took a minute to start).
    pub fn threads(&self) -> Result<usize> {
        // available_parallelism counts logical CPUs; good enough as a default, and it honours
        // cgroup and affinity limits, which a physical-core count would not.
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        match self.threads {
            Some(0) => bail!("--threads must be at least 1 (got 0)"),
            Some(n) if n > cpus * MAX_THREADS_PER_CPU => bail!(
                "--threads {n} is more than {MAX_THREADS_PER_CPU} per CPU this process may use ({cpus} CPUs, so at most {})",
                cpus * MAX_THREADS_PER_CPU
            ),
            Some(n) => Ok(n),
            None => Ok(cpus),
        }
    }
}

/// Most `--threads` per CPU the process may use.
pub const MAX_THREADS_PER_CPU: usize = 8;

impl GenerateArgs {
    /// The flags as a request's settings overlay; the library checks the values (see
    /// [`flag_error`] for the names in its errors). Fails only on an unreadable constraint
    /// file.
    pub fn params(&self) -> Result<Params> {
        // Only a value that is a valid temperature: an invalid one gets its error instead.
        if let Some(t) = self
            .temperature
            .filter(|&t| t > 2.0 && (t as f32).is_finite())
        {
            note!("warning: -t sets the temperature ({t} is very high); the thread count is --threads");
        }
        Ok(Params {
            max_tokens: self.max_length,
            temperature: self.temperature,
            top_k: self.top_k,
            top_p: self.top_p,
            min_p: self.min_p,
            repetition_penalty: self.repeat_penalty,
            presence_penalty: self.presence_penalty,
            frequency_penalty: self.frequency_penalty,
            seed: self.seed,
            stop: self.stop.clone(),
            logprobs: self.logprobs,
            top_logprobs: self.top_logprobs,
            ignore_eos: self.ignore_eos,
            no_reasoning_split: false,
            grammar: self.constraint()?,
            tool_choice: Default::default(),
        })
    }

    /// The grammar of `--json-schema`, `--json-object`, `--regex` or `--grammar`.
    fn constraint(&self) -> Result<Option<Grammar>> {
        let read = |flag: &str, path: &Path| {
            std::fs::read_to_string(path)
                .with_context(|| format!("{flag} {}: cannot read the file", path.display()))
        };
        Ok(if let Some(path) = &self.json_schema {
            let text = read("--json-schema", path)?;
            let schema = serde_json::from_str(&text)
                .with_context(|| format!("--json-schema {}: not valid JSON", path.display()))?;
            Some(Grammar::JsonSchema(schema))
        } else if self.json_object {
            Some(Grammar::JsonObject)
        } else if let Some(rx) = &self.regex {
            Some(Grammar::Regex(rx.clone()))
        } else if let Some(path) = &self.grammar {
            Some(Grammar::Lark(read("--grammar", path)?))
        } else {
            None
        })
    }

    pub fn ctx_size(&self) -> Result<Option<usize>> {
        self.ctx_size.map(|n| positive("--ctx-size", n)).transpose()
    }
}

/// The flag that sets a request field, for error messages.
fn flag_of(field: &str) -> Option<&'static str> {
    Some(match field {
        "temperature" => "--temperature",
        "top_k" => "--top-k",
        "top_p" => "--top-p",
        "min_p" => "--min-p",
        "repetition_penalty" => "--repeat-penalty",
        "presence_penalty" => "--presence-penalty",
        "frequency_penalty" => "--frequency-penalty",
        "max_tokens" => "--max-length",
        "stop" => "--stop",
        "top_logprobs" => "--top-logprobs",
        "ctx" => "--ctx-size",
        "response_format.json_schema.schema" => "--json-schema",
        "response_format" => "--json-object",
        "regex" => "--regex",
        "grammar" => "--grammar",
        "ignore_eos" => "--ignore-eos",
        _ => return None,
    })
}

/// A library error, with a request field's name replaced by the flag that sets it
/// (`--top-p must be in (0, 1] (got 0)`).
pub fn flag_error(err: GenerateError) -> anyhow::Error {
    match &err {
        GenerateError::InvalidField { field, reason } => match flag_of(field) {
            Some(flag) => anyhow::anyhow!("{flag} {reason}"),
            None => err.into(),
        },
        _ => err.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn clap_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn ids_parse_with_spaces_and_reject_junk() {
        assert_eq!(parse_ids("1, 2,3").unwrap(), vec![1, 2, 3]);
        assert!(parse_ids("1,x").is_err());
        assert!(parse_ids(" , ").is_err());
        assert!(parse_ids("-1").is_err());
    }

    #[test]
    fn thinking_switch() {
        assert_eq!(thinking(false, false), None);
        assert_eq!(thinking(true, false), Some(true));
        assert_eq!(thinking(false, true), Some(false));
    }
}
