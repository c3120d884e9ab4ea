//! [`Request`]: what to generate from, and how. Every front end (the CLI's flags, a `batch`
//! line, an HTTP body) fills the same [`Params`] overlay, and [`Params::resolve`] lays it over
//! the model's `generation_config.json` defaults field by field, checking each value.

use crate::{GenerateError, ToolChoice};
use nano_infer_constrain::Grammar;
use nano_infer_qwen3::{GenerationDefaults, SamplingParams};
use nano_infer_tokenizer::ChatMessage;
use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};

/// Most alternatives a token's log-probability report may list (OpenAI's limit).
pub const MAX_TOP_LOGPROBS: usize = 20;
/// Most stop strings one request may give.
pub const MAX_STOP_STRINGS: usize = 16;

/// The input of a request.
#[derive(Clone, Debug, PartialEq)]
pub enum Prompt {
    /// A conversation, rendered by the model's own chat template with the assistant's turn
    /// opened. `enable_thinking`: Qwen3's switch (`None`: the template's default).
    Chat {
        /// The conversation so far, oldest first.
        messages: Vec<ChatMessage>,
        /// Passed to the template as `enable_thinking` when set.
        enable_thinking: Option<bool>,
        /// Functions offered to the model (OpenAI's `tools`), rendered by the template.
        tools: Vec<serde_json::Value>,
    },
    /// Plain text, tokenized as it is (no template).
    Text(String),
    /// Token ids, fed as they are (no tokenizer needed).
    Ids(Vec<u32>),
}

impl Prompt {
    /// One user message through the chat template, after an optional system message.
    pub fn user(
        text: impl Into<String>,
        system: Option<&str>,
        enable_thinking: Option<bool>,
    ) -> Self {
        let mut messages = Vec::new();
        if let Some(system) = system {
            messages.push(ChatMessage::new("system", system));
        }
        messages.push(ChatMessage::new("user", text));
        Prompt::Chat {
            messages,
            enable_thinking,
            tools: Vec::new(),
        }
    }
}

/// One generation request: the prompt and the settings that differ from the model's defaults.
#[derive(Clone, Debug, PartialEq)]
pub struct Request {
    /// What to continue.
    pub prompt: Prompt,
    /// Settings laid over `generation_config.json`; `Default` changes nothing.
    pub params: Params,
}

impl Request {
    /// A request with the model's default settings.
    pub fn new(prompt: Prompt) -> Self {
        Self {
            prompt,
            params: Params::default(),
        }
    }
}

/// Settings of a request, each `None` (or empty, or false) to keep the model's default. Numbers
/// are taken wide (`f64`, `i64`) so that a value out of range is reported as given, not after a
/// conversion turned `1e308` into `inf` or `-1` into a huge count.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Params {
    /// Most tokens to generate (at least 1).
    pub max_tokens: Option<i64>,
    /// ≥ 0; 0 is greedy.
    pub temperature: Option<f64>,
    /// ≥ 0, or -1 (vLLM's spelling): 0 and -1 turn it off.
    pub top_k: Option<i64>,
    /// In (0, 1].
    pub top_p: Option<f64>,
    /// In [0, 1].
    pub min_p: Option<f64>,
    /// > 0; 1 turns it off.
    pub repetition_penalty: Option<f64>,
    /// In [-2, 2] (OpenAI's range).
    pub presence_penalty: Option<f64>,
    /// In [-2, 2] (OpenAI's range).
    pub frequency_penalty: Option<f64>,
    /// The sampler's seed; drawn (and reported) when not given.
    pub seed: Option<u64>,
    /// Strings that end the answer when it would contain them; never part of the output.
    pub stop: Vec<String>,
    /// Report each generated token's log-probability.
    pub logprobs: bool,
    /// Also report this many most likely alternatives per token (0..=20; implies `logprobs`).
    pub top_logprobs: Option<i64>,
    /// Keep generating past the model's end-of-sequence tokens.
    pub ignore_eos: bool,
    /// Leave `<think>…</think>` in the content as text instead of splitting it out as
    /// reasoning (OpenAI's legacy completions endpoint returns the raw text).
    pub no_reasoning_split: bool,
    /// What the answer must match (after the reasoning, when thinking is on).
    pub grammar: Option<Grammar>,
    /// Whether the model may, must or must not call the chat's tools.
    pub tool_choice: ToolChoice,
}

/// [`Params`] laid over the defaults and checked: what a generation runs with.
#[derive(Clone, Debug, PartialEq)]
pub struct Settings {
    /// Sampling, with the seed always set (given or drawn).
    pub sampling: SamplingParams,
    /// The most tokens to generate.
    pub max_tokens: usize,
    /// Stop strings: the text ends before the first that appears.
    pub stop: Vec<String>,
    /// `Some(n)`: report log-probabilities with `n` alternatives per token.
    pub logprobs: Option<usize>,
    /// Keep generating past end-of-sequence ids.
    pub ignore_eos: bool,
    /// Split `<think>…</think>` out as reasoning (the default).
    pub split_reasoning: bool,
}

impl Params {
    /// The settings of a request on a model whose defaults are `defaults`: each given field
    /// replaces the default, after a range check naming the field.
    pub fn resolve(&self, defaults: &GenerationDefaults) -> Result<Settings, GenerateError> {
        let mut s = defaults.sampling.clone();
        if let Some(t) = self.temperature {
            s.temperature = finite_f32("temperature", t)?;
            if t < 0.0 {
                return Err(GenerateError::field(
                    "temperature",
                    format!("must be >= 0 (got {})", show(t)),
                ));
            }
        }
        if let Some(k) = self.top_k {
            s.top_k = match k {
                -1 | 0 => 0,
                k if k > 0 => usize::try_from(k).unwrap_or(usize::MAX),
                k => {
                    return Err(GenerateError::field(
                        "top_k",
                        format!("must be >= 0, or -1 to turn it off (got {k})"),
                    ))
                }
            };
        }
        if let Some(p) = self.top_p {
            s.top_p = finite_f32("top_p", p)?;
            if !(p > 0.0 && p <= 1.0) {
                return Err(GenerateError::field(
                    "top_p",
                    format!("must be in (0, 1] (got {})", show(p)),
                ));
            }
        }
        if let Some(p) = self.min_p {
            s.min_p = finite_f32("min_p", p)?;
            if !(0.0..=1.0).contains(&p) {
                return Err(GenerateError::field(
                    "min_p",
                    format!("must be in [0, 1] (got {})", show(p)),
                ));
            }
        }
        if let Some(r) = self.repetition_penalty {
            s.repetition_penalty = finite_f32("repetition_penalty", r)?;
            if r <= 0.0 {
                return Err(GenerateError::field(
                    "repetition_penalty",
                    format!("must be > 0 (got {}; 1 turns it off)", show(r)),
                ));
            }
        }
        for (field, value, slot) in [
            (
                "presence_penalty",
                self.presence_penalty,
                &mut s.presence_penalty,
            ),
            (
                "frequency_penalty",
                self.frequency_penalty,
                &mut s.frequency_penalty,
            ),
        ] {
            if let Some(v) = value {
                *slot = finite_f32(field, v)?;
                if !(-2.0..=2.0).contains(&v) {
                    return Err(GenerateError::field(
                        field,
                        format!("must be in [-2, 2] (got {})", show(v)),
                    ));
                }
            }
        }
        s.seed = self.seed.unwrap_or_else(draw_seed);
        // The defaults come from a file: check the combination once more.
        s.validate()
            .map_err(|reason| GenerateError::field("generation_config", reason))?;

        let max_tokens = match self.max_tokens {
            None => defaults.max_new_tokens,
            Some(n) if n >= 1 => usize::try_from(n).unwrap_or(usize::MAX),
            Some(n) => {
                return Err(GenerateError::field(
                    "max_tokens",
                    format!("must be at least 1 (got {n})"),
                ))
            }
        };
        if self.stop.len() > MAX_STOP_STRINGS {
            return Err(GenerateError::field(
                "stop",
                format!(
                    "at most {MAX_STOP_STRINGS} strings (got {})",
                    self.stop.len()
                ),
            ));
        }
        if self.stop.iter().any(String::is_empty) {
            return Err(GenerateError::field("stop", "must not be an empty string"));
        }
        let logprobs = match self.top_logprobs {
            Some(n) if (0..=MAX_TOP_LOGPROBS as i64).contains(&n) => Some(n as usize),
            Some(n) => {
                return Err(GenerateError::field(
                    "top_logprobs",
                    format!("must be in 0..={MAX_TOP_LOGPROBS} (got {n})"),
                ))
            }
            None => self.logprobs.then_some(0),
        };
        Ok(Settings {
            sampling: s,
            max_tokens,
            stop: self.stop.clone(),
            logprobs,
            ignore_eos: self.ignore_eos,
            split_reasoning: !self.no_reasoning_split,
        })
    }
}

/// `v` as an `f32`, or an error naming `field` when it is not finite there (`1e308` included).
fn finite_f32(field: &str, v: f64) -> Result<f32, GenerateError> {
    let narrow = v as f32;
    if v.is_finite() && narrow.is_finite() {
        Ok(narrow)
    } else {
        Err(GenerateError::field(
            field,
            format!("must be a finite number (got {})", show(v)),
        ))
    }
}

/// A number as a user would write it back: `1e308`, not 309 digits.
fn show(v: f64) -> String {
    if v != 0.0 && !(1e-6..1e9).contains(&v.abs()) {
        format!("{v:e}")
    } else {
        format!("{v}")
    }
}

/// A seed that differs between calls and processes: the standard library's per-process random
/// hasher keys, the clock and a counter. Reported with the answer, so the run can be repeated.
pub fn draw_seed() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = RandomState::new().build_hasher();
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    h.write_u128(nanos);
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn defaults() -> GenerationDefaults {
        GenerationDefaults::fallback()
    }

    #[test]
    fn given_fields_replace_defaults_and_the_rest_stay() {
        let p = Params {
            temperature: Some(0.0),
            top_k: Some(-1),
            seed: Some(7),
            max_tokens: Some(9),
            frequency_penalty: Some(0.5),
            ..Params::default()
        };
        let s = p.resolve(&defaults()).unwrap();
        assert_eq!(s.sampling.temperature, 0.0);
        assert_eq!(s.sampling.top_k, 0);
        assert_eq!(s.sampling.top_p, defaults().sampling.top_p);
        assert_eq!(s.sampling.seed, 7);
        assert_eq!(s.sampling.frequency_penalty, 0.5);
        assert_eq!(s.max_tokens, 9);
        assert_eq!(s.logprobs, None);
    }

    #[test]
    fn every_bad_value_names_its_field() {
        let cases: Vec<(Params, &str)> = vec![
            (
                Params {
                    temperature: Some(-1.0),
                    ..Params::default()
                },
                "temperature",
            ),
            (
                Params {
                    temperature: Some(1e308),
                    ..Params::default()
                },
                "temperature",
            ),
            (
                Params {
                    temperature: Some(f64::NAN),
                    ..Params::default()
                },
                "temperature",
            ),
            (
                Params {
                    top_k: Some(-2),
                    ..Params::default()
                },
                "top_k",
            ),
            (
                Params {
                    top_p: Some(0.0),
                    ..Params::default()
                },
                "top_p",
            ),
            (
                Params {
                    top_p: Some(1.5),
                    ..Params::default()
                },
                "top_p",
            ),
            (
                Params {
                    min_p: Some(-0.1),
                    ..Params::default()
                },
                "min_p",
            ),
            (
                Params {
                    repetition_penalty: Some(0.0),
                    ..Params::default()
                },
                "repetition_penalty",
            ),
            (
                Params {
                    presence_penalty: Some(2.5),
                    ..Params::default()
                },
                "presence_penalty",
            ),
            (
                Params {
                    frequency_penalty: Some(-3.0),
                    ..Params::default()
                },
                "frequency_penalty",
            ),
            (
                Params {
                    max_tokens: Some(0),
                    ..Params::default()
                },
                "max_tokens",
            ),
            (
                Params {
                    top_logprobs: Some(21),
                    ..Params::default()
                },
                "top_logprobs",
            ),
            (
                Params {
                    stop: vec![String::new()],
                    ..Params::default()
                },
                "stop",
            ),
            (
                Params {
                    stop: vec!["x".into(); 17],
                    ..Params::default()
                },
                "stop",
            ),
        ];
        for (params, field) in cases {
            match params.resolve(&defaults()) {
                Err(GenerateError::InvalidField { field: f, .. }) => assert_eq!(f, field),
                other => panic!("{params:?}: expected an error naming {field}, got {other:?}"),
            }
        }
    }

    #[test]
    fn seeds_are_drawn_per_request_and_top_logprobs_implies_logprobs() {
        let a = Params::default().resolve(&defaults()).unwrap();
        let b = Params::default().resolve(&defaults()).unwrap();
        assert_ne!(a.sampling.seed, b.sampling.seed, "two requests, two seeds");
        let p = Params {
            top_logprobs: Some(3),
            ..Params::default()
        };
        assert_eq!(p.resolve(&defaults()).unwrap().logprobs, Some(3));
        let p = Params {
            logprobs: true,
            ..Params::default()
        };
        assert_eq!(p.resolve(&defaults()).unwrap().logprobs, Some(0));
    }
}
