//! `qwen3-infer batch`: many requests from a JSON-lines file, decoded together through the
//! paged KV cache, prompts that share a prefix (a system prompt) reusing its KV through the
//! radix cache. One JSON line out per request, in input order.
//!
//! Two input forms (README "Batch"), told apart per line:
//! - our own lines, `{"prompt": ...} | {"messages": [...]} | {"ids": [...]}` plus settings,
//!   answered with the fields of `--json` and `line`; a bad line stops the run before anything
//!   is generated, naming the line;
//! - OpenAI Batch API lines, `{"custom_id", "method": "POST", "url": "/v1/chat/completions",
//!   "body": {...}}`, answered in the Batch API's output shape; a bad request gets its own
//!   error line (status 400) and the others still run, as the Batch API does.

use crate::args::BatchArgs;
use crate::load::{self, Loaded};
use crate::{hub, interrupt, run};
use anyhow::{bail, Context, Result};
use nano_infer_generate::json::{
    chat_completion_json, error_json, parse_batch_line, parse_chat_completion,
};
use nano_infer_generate::{Finish, GenerateError, Prepared, Request};
use nano_infer_qwen3::EngineOptions;
use serde_json::{json, Value};
use std::process::ExitCode;

/// One input line, parsed.
enum Line {
    /// Our own format; `n` is the line number.
    Native { n: usize, request: Request },
    /// An OpenAI Batch API line, or the error its request gets.
    OpenAi {
        custom_id: Value,
        request: Result<Request, GenerateError>,
    },
}

pub fn run(args: &BatchArgs) -> Result<ExitCode> {
    let kv_budget = nano_infer_offload::parse_size(&args.kv_budget)
        .map_err(|e| anyhow::anyhow!("--kv-budget: {e}"))?;
    let max_batch = args.max_batch()?;
    let text = load::read_text(&args.file)?;
    let file = args.file.display();
    let mut lines = Vec::new();
    for (i, l) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let n = i + 1;
        let value: Value = serde_json::from_str(l)
            .with_context(|| format!("{file} line {n}: not a valid JSON request"))?;
        lines.push(parse_line(&value, n).with_context(|| format!("{file} line {n}"))?);
    }
    if lines.is_empty() {
        bail!("{file}: no requests (one JSON object per line)");
    }

    let dir = hub::resolve(args.model.model.as_deref())?;
    let loaded = load::load(&dir, &args.engine, args.ctx_size()?)?;
    let generator = &loaded.generator;
    // Requests that could be prepared run; an OpenAI line's bad request keeps its error.
    let mut prepared: Vec<Prepared> = Vec::new();
    // Per line: the index of its prepared request, or the error body of an OpenAI line.
    let mut slots: Vec<Result<usize, Value>> = Vec::new();
    for line in &lines {
        let slot = match line {
            Line::Native { n, request } => {
                let p = generator
                    .prepare(request)
                    .map_err(crate::args::flag_error)
                    .with_context(|| format!("{file} line {n}"))?;
                prepared.push(p);
                Ok(prepared.len() - 1)
            }
            Line::OpenAi { request, .. } => match request {
                Ok(r) => match generator.prepare(r) {
                    Ok(p) => {
                        prepared.push(p);
                        Ok(prepared.len() - 1)
                    }
                    Err(e) => Err(error_json(&e)),
                },
                Err(e) => Err(error_json(e)),
            },
        };
        slots.push(slot);
    }

    let options = EngineOptions {
        max_batch,
        kv_budget_bytes: kv_budget as usize,
        prefix_cache: !args.no_prefix_cache,
        prefix_index: args.prefix_index,
        ..EngineOptions::default()
    };
    let cancel = interrupt::install();
    let finishes = generator.run_batch(&prepared, &options, &cancel, |_, _| {})?;
    let model_name = dir.file_name().map_or_else(
        || dir.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    );
    let created = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    for (k, (line, slot)) in lines.iter().zip(&slots).enumerate() {
        let out = match (line, slot) {
            (Line::Native { n, .. }, Ok(i)) => native_line(&loaded, *n, &finishes[*i])?,
            (Line::OpenAi { custom_id, .. }, slot) => {
                let (status, body) = match slot {
                    Ok(i) => (
                        200,
                        chat_completion_json(
                            &finishes[*i],
                            &format!("chatcmpl-{k}"),
                            &model_name,
                            created,
                        ),
                    ),
                    Err(body) => (400, body.clone()),
                };
                json!({
                    "id": format!("batch_req_{k}"),
                    "custom_id": custom_id,
                    "response": { "status_code": status, "request_id": format!("req_{k}"), "body": body },
                    "error": null,
                })
            }
            (Line::Native { .. }, Err(_)) => unreachable!("native lines stop the run on error"),
        };
        outln!("{}", serde_json::to_string(&out)?)?;
    }
    let prompt: usize = finishes.iter().map(|f| f.usage.prompt_tokens).sum();
    let cached: usize = finishes.iter().map(|f| f.usage.cached_tokens).sum();
    note!(
        "batch: {} requests, {prompt} prompt tokens, {cached} reused from the prefix cache ({:.1}%)",
        finishes.len(),
        100.0 * cached as f64 / prompt.max(1) as f64
    );
    Ok(ExitCode::SUCCESS)
}

/// Our own line or an OpenAI Batch API line (it has `custom_id` or `body`).
fn parse_line(value: &Value, n: usize) -> Result<Line> {
    let Some(obj) = value
        .as_object()
        .filter(|o| o.contains_key("custom_id") || o.contains_key("body"))
    else {
        return Ok(Line::Native {
            n,
            request: parse_batch_line(value).map_err(crate::args::flag_error)?,
        });
    };
    let custom_id = obj.get("custom_id").cloned().unwrap_or(Value::Null);
    let request = match (
        obj.get("method").and_then(Value::as_str),
        obj.get("url").and_then(Value::as_str),
    ) {
        (Some("POST"), Some("/v1/chat/completions")) => match obj.get("body") {
            Some(body) => parse_chat_completion(body).map(|(request, _)| request),
            None => Err(GenerateError::field("body", "is required")),
        },
        (method, url) => Err(GenerateError::field(
            "url",
            format!(
                "only POST /v1/chat/completions is supported (got {} {})",
                method.unwrap_or("?"),
                url.unwrap_or("?")
            ),
        )),
    };
    Ok(Line::OpenAi { custom_id, request })
}

/// One answer in our own line format.
fn native_line(loaded: &Loaded, n: usize, finish: &Finish) -> Result<Value> {
    let mut out = run::answer_json(loaded, finish)?;
    out["line"] = json!(n);
    Ok(out)
}
