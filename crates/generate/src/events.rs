//! What a generation reports: [`Event`]s while it runs, one [`Finish`] at the end, and their
//! JSON in OpenAI's names (shared by the CLI's `--json`, `batch` and the server).

use crate::{ConstraintReport, ToolCall};
use serde_json::{json, Value};
use std::time::Duration;

/// Which part of a Qwen3 answer a piece of text belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Channel {
    /// Inside `<think>…</think>` (OpenAI-style servers call it `reasoning_content`).
    Reasoning,
    /// The answer itself.
    Content,
}

/// One alternative in a token's log-probability report.
#[derive(Clone, Debug, PartialEq)]
pub struct Alternative {
    /// The token id.
    pub id: u32,
    /// The token's text on its own (U+FFFD where it is part of a multi-byte character).
    pub token: String,
    /// The token's exact bytes.
    pub bytes: Vec<u8>,
    /// Natural log of its probability under the model's distribution.
    pub logprob: f32,
}

/// The chosen token's log-probability and, when asked, the most likely alternatives (most
/// likely first). Log-probabilities are those of the model's own distribution — a log-softmax
/// of the logits, before temperature, penalties or truncation — as vLLM reports by default, so
/// they equal `perplexity`'s for the same text.
#[derive(Clone, Debug, PartialEq)]
pub struct TokenLogprob {
    /// The generated token.
    pub chosen: Alternative,
    /// The most likely tokens at this step (empty unless asked for).
    pub top: Vec<Alternative>,
}

/// Something that happened during a generation, in order.
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    /// A prefill chunk finished: `done` of `total` new prompt tokens are in the cache.
    Prefill {
        /// New prompt tokens in the cache so far.
        done: usize,
        /// New prompt tokens in all.
        total: usize,
    },
    /// A token was generated; `logprob` when the request asked for it. Comes before the text
    /// the token completes.
    Token {
        /// The token id.
        id: u32,
        /// Its log-probability and alternatives, when asked.
        logprob: Option<TokenLogprob>,
    },
    /// Text that is final: whole UTF-8 characters, never part of a stop string.
    Text {
        /// Reasoning or content.
        channel: Channel,
        /// The text.
        text: String,
    },
    /// The model called a function (a `<tool_call>` block that parsed); `index` counts the
    /// calls of this answer from 0.
    ToolCall {
        /// Which call of the answer this is.
        index: usize,
        /// The call.
        call: ToolCall,
    },
    /// The last event.
    Finished(Finish),
    /// The request could not run (a [`crate::Batcher`] reports it so, to the request's own
    /// sink, instead of failing its neighbours); no `Finished` follows.
    Failed {
        /// Why, in one line.
        message: String,
    },
}

/// Why a generation ended, as OpenAI names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FinishReason {
    /// An end-of-sequence token or a stop string.
    Stop,
    /// `max_tokens`, or the context is full.
    Length,
    /// The answer ended after calling functions.
    ToolCalls,
    /// Cancelled (Ctrl-C, a client gone).
    Cancelled,
}

impl FinishReason {
    /// OpenAI's name (`stop`, `length`, `tool_calls`; `cancelled` is ours).
    pub fn as_str(self) -> &'static str {
        match self {
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
            FinishReason::ToolCalls => "tool_calls",
            FinishReason::Cancelled => "cancelled",
        }
    }
}

/// The detail behind a [`FinishReason`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StopCause {
    /// This end-of-sequence id was generated (it is the last of `Finish::ids`).
    Eos(u32),
    /// The answer reached this stop string (left out of the text).
    StopString(String),
    /// `max_tokens` were generated.
    MaxTokens,
    /// The context is full.
    ContextFull,
    /// A [`CancelToken`](crate::CancelToken) or the caller stopped it.
    Cancelled,
}

impl StopCause {
    /// The OpenAI finish reason this cause maps to.
    pub fn reason(&self) -> FinishReason {
        match self {
            StopCause::Eos(_) | StopCause::StopString(_) => FinishReason::Stop,
            StopCause::MaxTokens | StopCause::ContextFull => FinishReason::Length,
            StopCause::Cancelled => FinishReason::Cancelled,
        }
    }
}

/// Token counts of one request.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    /// The whole prompt, cached part included.
    pub prompt_tokens: usize,
    /// Of the prompt, tokens whose KV was reused (a session's earlier turns, a prompt-cache
    /// file, the batch engine's prefix cache) instead of computed.
    pub cached_tokens: usize,
    /// Generated tokens, the end-of-sequence token included.
    pub completion_tokens: usize,
    /// Of those, tokens of the reasoning (`<think>` to `</think>`, tags included).
    pub reasoning_tokens: usize,
}

impl Usage {
    /// OpenAI's `usage` object.
    pub fn to_json(&self) -> Value {
        json!({
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
            "prompt_tokens_details": { "cached_tokens": self.cached_tokens },
            "completion_tokens_details": { "reasoning_tokens": self.reasoning_tokens },
        })
    }
}

/// The outcome of one request.
#[derive(Clone, Debug, PartialEq)]
pub struct Finish {
    /// Why it ended.
    pub cause: StopCause,
    /// Token counts.
    pub usage: Usage,
    /// The sampler's seed (given or drawn): the same request with this seed gives the same ids.
    pub seed: u64,
    /// Generated ids, the end-of-sequence id included when there was one.
    pub ids: Vec<u32>,
    /// The answer's text (after the reasoning, without a stop string).
    pub content: String,
    /// The reasoning's text, when the answer had any.
    pub reasoning: Option<String>,
    /// One entry per generated token, when the request asked for log-probabilities.
    pub logprobs: Option<Vec<TokenLogprob>>,
    /// Wall time of the prefill.
    pub prefill_time: Duration,
    /// Wall time of the decode steps.
    pub decode_time: Duration,
    /// The functions the answer called, in order (their blocks are not in `content`).
    pub tool_calls: Vec<ToolCall>,
    /// What the grammar did, when the request had one.
    pub constraint: Option<ConstraintReport>,
}

impl Finish {
    /// Why it ended, as OpenAI names it: `tool_calls` when the answer ended (at an
    /// end-of-sequence token) after calling functions.
    pub fn reason(&self) -> FinishReason {
        match self.cause {
            StopCause::Eos(_) if !self.tool_calls.is_empty() => FinishReason::ToolCalls,
            _ => self.cause.reason(),
        }
    }

    /// The generated ids less the end-of-sequence id that ended them, if one did.
    pub fn answer_ids(&self) -> &[u32] {
        match self.cause {
            StopCause::Eos(_) => &self.ids[..self.ids.len().saturating_sub(1)],
            _ => &self.ids,
        }
    }

    /// Forward passes of the decode phase: the first token comes from the prefill's logits.
    pub fn decode_steps(&self) -> usize {
        self.ids.len().saturating_sub(1)
    }

    /// OpenAI's `logprobs` object of a chat choice (`{"content": [...]}`), when asked for.
    pub fn logprobs_json(&self) -> Option<Value> {
        self.logprobs.as_ref().map(
            |list| json!({ "content": list.iter().map(TokenLogprob::to_json).collect::<Vec<_>>() }),
        )
    }

    /// The fields every JSON answer carries, in OpenAI's names: `content`,
    /// `reasoning_content` (when there was reasoning), `tool_calls` (when there were calls),
    /// `finish_reason`, `stop` (the stop string that matched, when one did), `ids`, `seed`,
    /// `usage`, `logprobs` when asked, and `constraint_complete` under a grammar.
    pub fn to_json(&self) -> Value {
        let mut out = json!({
            "content": self.content,
            "finish_reason": self.reason().as_str(),
            "ids": self.ids,
            "seed": self.seed,
            "usage": self.usage.to_json(),
        });
        if let Some(reasoning) = &self.reasoning {
            out["reasoning_content"] = json!(reasoning);
        }
        if let StopCause::StopString(stop) = &self.cause {
            out["stop"] = json!(stop);
        }
        if let Some(logprobs) = self.logprobs_json() {
            out["logprobs"] = logprobs;
        }
        if !self.tool_calls.is_empty() {
            out["tool_calls"] = self.tool_calls.iter().map(ToolCall::to_json).collect();
        }
        if let Some(report) = &self.constraint {
            out["constraint_complete"] = json!(report.complete);
        }
        out
    }
}

impl Alternative {
    fn to_json(&self) -> Value {
        json!({ "token": self.token, "logprob": self.logprob, "bytes": self.bytes })
    }
}

impl TokenLogprob {
    /// One entry of OpenAI's `logprobs.content`.
    pub fn to_json(&self) -> Value {
        let mut out = self.chosen.to_json();
        out["top_logprobs"] = self.top.iter().map(Alternative::to_json).collect();
        out
    }
}
