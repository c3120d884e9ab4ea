//! `generation_config.json` defaults and the generation loop.

use crate::{ModelError, SampledToken, SamplingParams, Session, TokenPicker};
use std::ops::ControlFlow;
use std::path::Path;
use std::time::{Duration, Instant};

/// What `generation_config.json` says (Qwen3 ships temperature 0.6, top-k 20, top-p 0.95 and
/// stop ids 151645 `<|im_end|>` and 151643 `<|endoftext|>`).
#[derive(Clone, Debug, PartialEq)]
pub struct GenerationDefaults {
    /// Temperature, top-k, top-p (and the rest) from the file, else greedy.
    pub sampling: SamplingParams,
    /// `eos_token_id` of the file (else of `config.json`).
    pub stop_ids: Vec<u32>,
    /// `max_new_tokens` of the file, else a default.
    pub max_new_tokens: usize,
}

/// The fields of `generation_config.json` we use, each checked for its type and range: a value
/// of the wrong type is an error naming the field, never a silent default (and a number past
/// f32's range is not read as infinity). `null` is "not set", as transformers writes it.
#[derive(Debug, Default)]
struct GenerationConfigFile {
    eos_token_id: Option<Vec<u32>>,
    do_sample: Option<bool>,
    temperature: Option<f32>,
    top_k: Option<usize>,
    top_p: Option<f32>,
    min_p: Option<f32>,
    repetition_penalty: Option<f32>,
    max_new_tokens: Option<usize>,
}

impl GenerationConfigFile {
    /// Parses the file's text; errors say which field is wrong (the caller adds the path).
    fn parse(text: &str) -> Result<Self, String> {
        let value: serde_json::Value =
            serde_json::from_str(text).map_err(|e| format!("not valid JSON: {e}"))?;
        let serde_json::Value::Object(map) = value else {
            return Err(format!(
                "expected a JSON object of generation settings, found {}",
                match value {
                    serde_json::Value::Array(_) => "an array",
                    serde_json::Value::String(_) => "a string",
                    serde_json::Value::Number(_) => "a number",
                    serde_json::Value::Bool(_) => "a boolean",
                    _ => "null",
                }
            ));
        };
        let get = |name: &str| map.get(name).filter(|v| !v.is_null());
        let f32_field = |name: &str| -> Result<Option<f32>, String> {
            let Some(v) = get(name) else { return Ok(None) };
            let x = v
                .as_f64()
                .ok_or_else(|| format!("{name}: {v} is not a number"))?;
            // `as f32` would turn 1e308 into infinity; out of range is an error instead.
            let narrowed = x as f32;
            if !narrowed.is_finite() {
                return Err(format!("{name}: {v} is out of the f32 range"));
            }
            Ok(Some(narrowed))
        };
        let usize_field = |name: &str| -> Result<Option<usize>, String> {
            let Some(v) = get(name) else { return Ok(None) };
            v.as_u64()
                .and_then(|n| usize::try_from(n).ok())
                .map(Some)
                .ok_or_else(|| format!("{name}: {v} is not a non-negative integer"))
        };
        Ok(Self {
            eos_token_id: get("eos_token_id")
                .map(crate::config::token_ids)
                .transpose()
                .map_err(|reason| format!("eos_token_id: {reason}"))?,
            do_sample: get("do_sample")
                .map(|v| {
                    v.as_bool()
                        .ok_or_else(|| format!("do_sample: {v} is not true or false"))
                })
                .transpose()?,
            temperature: f32_field("temperature")?,
            top_k: usize_field("top_k")?,
            top_p: f32_field("top_p")?,
            min_p: f32_field("min_p")?,
            repetition_penalty: f32_field("repetition_penalty")?,
            max_new_tokens: usize_field("max_new_tokens")?,
        })
    }
}

impl GenerationDefaults {
    /// Without a `generation_config.json`: temperature 0.7, top-k 20, top-p 0.9, 512 tokens.
    pub fn fallback() -> Self {
        Self {
            sampling: SamplingParams {
                temperature: 0.7,
                top_k: 20,
                top_p: 0.9,
                ..SamplingParams::default()
            },
            stop_ids: Vec::new(),
            max_new_tokens: 512,
        }
    }

    /// Reads `dir/generation_config.json` if present; stop ids also come from `config.json`'s
    /// `eos_token_id` when the generation config has none.
    pub fn from_dir(
        dir: &Path,
        config_eos: Option<&serde_json::Value>,
    ) -> Result<Self, ModelError> {
        let mut defaults = Self::fallback();
        let path = dir.join("generation_config.json");
        let config_error =
            |path: std::path::PathBuf| move |reason: String| ModelError::Config { path, reason };
        let file = match crate::config::read_config_file(&path) {
            Ok(text) => {
                Some(GenerationConfigFile::parse(&text).map_err(config_error(path.clone()))?)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(source) => return Err(ModelError::Io { path, source }),
        };
        // `config.json`'s ids were checked when it was loaded; checked again here for callers
        // that pass a value of their own.
        let mut stop_ids = config_eos
            .map(crate::config::token_ids)
            .transpose()
            .map_err(|reason| format!("eos_token_id: {reason}"))
            .map_err(config_error(dir.join("config.json")))?;
        if let Some(f) = file {
            let s = &mut defaults.sampling;
            if f.do_sample == Some(false) {
                s.temperature = 0.0;
            } else if let Some(t) = f.temperature {
                s.temperature = t;
            }
            s.top_k = f.top_k.unwrap_or(s.top_k);
            s.top_p = f.top_p.unwrap_or(s.top_p);
            s.min_p = f.min_p.unwrap_or(s.min_p);
            s.repetition_penalty = f.repetition_penalty.unwrap_or(s.repetition_penalty);
            defaults.max_new_tokens = f.max_new_tokens.unwrap_or(defaults.max_new_tokens);
            if f.eos_token_id.is_some() {
                stop_ids = f.eos_token_id;
            }
        }
        defaults.stop_ids = stop_ids.unwrap_or_default();
        Ok(defaults)
    }
}

/// Why generation ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopReason {
    /// A stop id was generated (it is included in the output ids).
    Stop,
    /// `max_new_tokens` reached.
    Length,
    /// The context is full.
    ContextFull,
    /// The callback asked to stop (Ctrl-C, a client gone, a stop string).
    Cancelled,
}

impl StopReason {
    /// The lower-case name (`stop`, `length`, `context_full`, `cancelled`).
    pub fn as_str(self) -> &'static str {
        match self {
            StopReason::Stop => "stop",
            StopReason::Length => "length",
            StopReason::ContextFull => "context_full",
            StopReason::Cancelled => "cancelled",
        }
    }
}

/// The outcome of [`generate`].
#[derive(Clone, Debug)]
pub struct Generation {
    /// Generated ids, the stop id included when there was one.
    pub ids: Vec<u32>,
    /// Why it ended.
    pub stop_reason: StopReason,
    /// Tokens the prefill processed (the prompt less any prefix already in the session; less
    /// than that when it was cancelled part way).
    pub prompt_tokens: usize,
    /// Leading prompt tokens the session already held, so not prefilled.
    pub cached_tokens: usize,
    /// Wall time of the prefill.
    pub prefill_time: Duration,
    /// Wall time of the decode steps.
    pub decode_time: Duration,
}

/// Options of one [`generate`] call.
#[derive(Clone, Debug, Default)]
pub struct GenerateOptions {
    /// The most tokens to generate.
    pub max_new_tokens: usize,
    /// Ids that end the generation (included in its output).
    pub stop_ids: Vec<u32>,
    /// Keep generating past stop ids (llama.cpp's `--ignore-eos`).
    pub ignore_eos: bool,
    /// Longest prefill forward pass in tokens (0: the whole prompt in one). Between chunks the
    /// callback sees [`GenerateStep::Prefill`] and may stop, so a long prompt can be
    /// interrupted within one chunk.
    pub prefill_chunk: usize,
}

/// What [`generate`]'s callback sees.
#[derive(Clone, Copy, Debug)]
pub enum GenerateStep<'a> {
    /// A prefill chunk finished: `done` of `total` new prompt tokens are in the cache.
    Prefill {
        /// New prompt tokens in the cache so far.
        done: usize,
        /// New prompt tokens in all.
        total: usize,
    },
    /// A token was sampled (`request` is 0).
    Token(SampledToken<'a>),
}

/// Feeds the part of `prompt` the session does not already hold, then picks tokens (with a
/// [`crate::Sampler`], or any [`TokenPicker`]) until a stop id,
/// `max_new_tokens`, a full context, or `on_step` returning `Break`.
///
/// Prefix reuse: if the session's tokens are a prefix of `prompt`, only the rest is prefilled
/// (a chat turn pays for its new tokens only); otherwise the session is cut back to the longest
/// common prefix first. A prefill stopped between chunks keeps the chunks that ran (they are
/// valid KV for this prompt, and a retry reuses them) and ends with `Cancelled` and no ids.
pub fn generate(
    session: &mut Session<'_>,
    prompt: &[u32],
    picker: &mut (impl TokenPicker + ?Sized),
    options: &GenerateOptions,
    mut on_step: impl FnMut(GenerateStep<'_>) -> ControlFlow<()>,
) -> Result<Generation, ModelError> {
    let common = session
        .tokens()
        .iter()
        .zip(prompt)
        .take_while(|(a, b)| a == b)
        .count();
    // At least one token must be fed to get logits for the next.
    let keep = common.min(prompt.len().saturating_sub(1));
    session.truncate(keep);
    let fresh = &prompt[keep..];
    if fresh.is_empty() {
        return Err(ModelError::EmptyInput);
    }
    if session.position() + fresh.len() > session.model().ctx_size() {
        return Err(ModelError::ContextFull {
            needed: session.position() + fresh.len(),
            max: session.model().ctx_size(),
        });
    }

    let start = Instant::now();
    let chunk = if options.prefill_chunk == 0 {
        fresh.len()
    } else {
        options.prefill_chunk
    };
    let mut done = 0;
    for part in fresh.chunks(chunk) {
        session.prefill(part)?;
        done += part.len();
        let step = GenerateStep::Prefill {
            done,
            total: fresh.len(),
        };
        if done < fresh.len() && on_step(step).is_break() {
            return Ok(Generation {
                ids: Vec::new(),
                stop_reason: StopReason::Cancelled,
                prompt_tokens: done,
                cached_tokens: keep,
                prefill_time: start.elapsed(),
                decode_time: Duration::ZERO,
            });
        }
    }
    let prefill_time = start.elapsed();
    let start = Instant::now();
    let mut ids = Vec::new();
    let stop_reason = loop {
        if ids.len() >= options.max_new_tokens {
            break StopReason::Length;
        }
        let next = picker.pick(session.logits(), session.tokens())?;
        ids.push(next);
        let step = GenerateStep::Token(SampledToken {
            request: 0,
            id: next,
            logits: session.logits(),
        });
        if on_step(step).is_break() {
            break StopReason::Cancelled;
        }
        if !options.ignore_eos && options.stop_ids.contains(&next) {
            break StopReason::Stop;
        }
        if ids.len() >= options.max_new_tokens {
            break StopReason::Length;
        }
        if session.remaining() == 0 {
            break StopReason::ContextFull;
        }
        session.decode(next)?;
    };
    Ok(Generation {
        ids,
        stop_reason,
        prompt_tokens: fresh.len(),
        cached_tokens: keep,
        prefill_time,
        decode_time: start.elapsed(),
    })
}
