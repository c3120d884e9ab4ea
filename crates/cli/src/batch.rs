//! `qwen3-infer batch`: many requests from a JSON-lines file, decoded together through the
//! paged KV cache, with prompts that share a prefix (a system prompt) reusing its KV through the
//! radix cache. One JSON line out per request, in input order.
//!
//! Input lines: `{"messages": [{"role": "system"|"user"|"assistant", "content": "..."}, ...]}`,
//! `{"prompt": "..."}` (one user turn through the chat template; with `"raw": true` plain text),
//! or `{"ids": [1, 2, 3]}`; optional fields: `max_tokens`, `temperature`, `top_k`, `top_p`,
//! `min_p`, `repeat_penalty`, `presence_penalty`, `seed`, `think` (bool), `system` (text).

use crate::args::BatchArgs;
use crate::load::{self, Loaded};
use crate::{hub, run};
use anyhow::{bail, Context, Result};
use nano_infer_qwen3::{BatchEngine, BatchRequest, EngineOptions, SamplingParams};
use nano_infer_tokenizer::{ChatMessage, RenderOptions};
use serde::Deserialize;
use serde_json::json;
use std::ops::ControlFlow;
use std::process::ExitCode;

/// One input line.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Line {
    #[serde(default)]
    messages: Option<Vec<ChatMessage>>,
    #[serde(default)]
    prompt: Option<String>,
    #[serde(default)]
    ids: Option<Vec<u32>>,
    #[serde(default)]
    raw: bool,
    #[serde(default)]
    system: Option<String>,
    #[serde(default)]
    think: Option<bool>,
    #[serde(default)]
    max_tokens: Option<usize>,
    #[serde(default)]
    temperature: Option<f32>,
    #[serde(default)]
    top_k: Option<usize>,
    #[serde(default)]
    top_p: Option<f32>,
    #[serde(default)]
    min_p: Option<f32>,
    #[serde(default)]
    repeat_penalty: Option<f32>,
    #[serde(default)]
    presence_penalty: Option<f32>,
    #[serde(default)]
    seed: Option<u64>,
}

pub fn run(args: &BatchArgs) -> Result<ExitCode> {
    let text = load::read_text(&args.file)?;
    let lines: Vec<(usize, Line)> = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l)
                .map(|line| (i + 1, line))
                .with_context(|| {
                    format!(
                        "{} line {}: not a valid request",
                        args.file.display(),
                        i + 1
                    )
                })
        })
        .collect::<Result<_>>()?;
    if lines.is_empty() {
        bail!(
            "{}: no requests (one JSON object per line)",
            args.file.display()
        );
    }
    let kv_budget = nano_infer_offload::parse_size(&args.kv_budget)
        .map_err(|e| anyhow::anyhow!("--kv-budget: {e}"))?;

    let dir = hub::resolve(args.model.model.as_deref())?;
    let loaded = load::load(&dir, &args.engine, args.ctx_size()?)?;
    let stop_ids = run::stop_ids(&loaded);
    let requests = lines
        .iter()
        .map(|(n, line)| {
            request(&loaded, line, &stop_ids)
                .with_context(|| format!("{} line {n}", args.file.display()))
        })
        .collect::<Result<Vec<_>>>()?;

    let options = EngineOptions {
        max_batch: args.max_batch,
        kv_budget_bytes: kv_budget as usize,
        prefix_cache: !args.no_prefix_cache,
        prefix_index: args.prefix_index,
        ..EngineOptions::default()
    };
    let mut engine = BatchEngine::new(&loaded.model, &options)?;
    let outputs = engine.run(&requests, |_, _| ControlFlow::Continue(()))?;
    for ((n, _), out) in lines.iter().zip(&outputs) {
        let mut line = json!({
            "line": n,
            "ids": out.ids,
            "stop_reason": out.stop_reason.as_str(),
            "prompt_tokens": out.prompt_tokens,
            "cached_tokens": out.cached_tokens,
            "prefill_s": out.prefill_time.as_secs_f64(),
            "decode_s": out.decode_time.as_secs_f64(),
        });
        if let Some(tok) = &loaded.tokenizer {
            line["text"] = json!(tok.decode(run::answer_ids(&out.ids, out.stop_reason), false)?);
        }
        outln!("{}", serde_json::to_string(&line)?)?;
    }
    let stats = engine.stats();
    note!(
        "batch: {} requests, {} prompt tokens, {} reused from the prefix cache ({:.1}%)",
        outputs.len(),
        stats.prompt_tokens,
        stats.cached_tokens,
        100.0 * stats.cached_tokens as f64 / stats.prompt_tokens.max(1) as f64
    );
    Ok(ExitCode::SUCCESS)
}

/// Turns one input line into a request: its prompt ids and its sampling settings.
fn request(loaded: &Loaded, line: &Line, stop_ids: &[u32]) -> Result<BatchRequest> {
    let given = [
        line.messages.is_some(),
        line.prompt.is_some(),
        line.ids.is_some(),
    ];
    if given.iter().filter(|g| **g).count() != 1 {
        bail!("give exactly one of `messages`, `prompt` or `ids`");
    }
    let prompt = if let Some(ids) = &line.ids {
        ids.clone()
    } else if let (Some(text), true) = (&line.prompt, line.raw) {
        loaded.tokenizer()?.encode(text)?
    } else {
        let mut messages = Vec::new();
        if let Some(system) = &line.system {
            messages.push(ChatMessage::new("system", system));
        }
        match (&line.messages, &line.prompt) {
            (Some(list), _) => messages.extend(list.iter().cloned()),
            (None, Some(text)) => messages.push(ChatMessage::new("user", text)),
            (None, None) => unreachable!("checked above"),
        }
        let rendered = loaded.template()?.render(
            &messages,
            &RenderOptions {
                add_generation_prompt: true,
                enable_thinking: line.think,
            },
        )?;
        loaded.tokenizer()?.encode(&rendered)?
    };
    run::check_prompt(loaded, &prompt)?;
    let d = &loaded.defaults.sampling;
    let sampling = SamplingParams {
        temperature: line.temperature.unwrap_or(d.temperature),
        top_k: line.top_k.unwrap_or(d.top_k),
        top_p: line.top_p.unwrap_or(d.top_p),
        min_p: line.min_p.unwrap_or(d.min_p),
        repetition_penalty: line.repeat_penalty.unwrap_or(d.repetition_penalty),
        presence_penalty: line.presence_penalty.unwrap_or(d.presence_penalty),
        seed: line.seed.unwrap_or(d.seed),
    };
    sampling.validate().map_err(|e| anyhow::anyhow!(e))?;
    Ok(BatchRequest {
        prompt,
        sampling,
        max_new_tokens: line.max_tokens.unwrap_or(loaded.defaults.max_new_tokens),
        stop_ids: stop_ids.to_vec(),
        ignore_eos: false,
    })
}
