//! The default command: read the prompt, generate once, stream the text or print JSON.
//!
//! Everything that can be checked without the model (flag ranges, the prompt file) is checked
//! before loading it, so a typo fails at once rather than after a multi-gigabyte load.

use crate::args::{self, GenerateArgs};
use crate::error::INTERRUPTED;
use crate::load::{self, Bar, Loaded};
use crate::output::{Printer, ThinkStyle};
use crate::{chat, hub, interrupt, stats};
use anyhow::{bail, Result};
use nano_infer_generate::{Event, Finish, Prepared, Prompt, Request, StopCause, TextCodec};
use nano_infer_qwen3::{GenerationDefaults, PromptCacheError};
use serde_json::json;
use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::Instant;

/// What the user gave as the prompt.
enum Input {
    Ids(Vec<u32>),
    Text(String),
    /// `-i` without a prompt: the chat asks for one.
    None,
}

pub fn run(args: &GenerateArgs) -> Result<ExitCode> {
    // Flag ranges first (generation_config.json can only supply valid values).
    let params = args.params()?;
    params
        .resolve(&GenerationDefaults::fallback())
        .map_err(args::flag_error)?;
    let ctx_size = args.ctx_size()?;
    let input = read_input(args)?;

    let dir = hub::resolve(args.model.model.as_deref())?;
    if args.interactive {
        let loaded = load::load(&dir, &args.engine, ctx_size)?;
        if args.engine.verbose > 0 {
            stats::print_load(&loaded);
        }
        let first = match input {
            Input::Text(text) => Some(text),
            _ => None,
        };
        return chat::run(args, &loaded, params, first);
    }
    let prompt = match input {
        Input::Ids(ids) => Prompt::Ids(ids),
        Input::Text(text) if args.raw => Prompt::Text(text),
        Input::Text(text) => Prompt::user(
            text,
            args.system.as_deref(),
            args::thinking(args.think, args.no_think),
        ),
        // read_input only returns None with -i, handled above.
        Input::None => bail!("no prompt: give -p TEXT, -f FILE or --ids IDS, or -i for a chat"),
    };
    // Under a memory budget the KV cache is reserved for the whole context, so its default is
    // small; a one-shot run knows its prompt, so the context is sized to hold it and the answer.
    let ctx_size = match ctx_size {
        None if args.engine.max_memory.is_some() => {
            Some(budget_context(&dir, &prompt, params.max_tokens)?)
        }
        given => given,
    };
    let loaded = load::load(&dir, &args.engine, ctx_size)?;
    if args.engine.verbose > 0 {
        stats::print_load(&loaded);
    }
    let prepared = loaded
        .generator
        .prepare(&Request { prompt, params })
        .map_err(args::flag_error)?;
    if args.engine.verbose > 0 {
        stats::print_prepared(&prepared, args.engine.verbose);
    }
    one_shot(args, &loaded, &prepared)
}

/// The context of a one-shot run under `--max-memory` without `--ctx-size`: the prompt and
/// its answer (`-l`, else the default 512), at least `load::OFFLOAD_DEFAULT_CTX`. The prompt
/// is counted with the tokenizer alone, before the weights load.
fn budget_context(
    dir: &std::path::Path,
    prompt: &Prompt,
    max_tokens: Option<i64>,
) -> Result<usize> {
    let prompt_tokens = match prompt {
        Prompt::Ids(ids) => ids.len(),
        other => match TextCodec::from_dir(dir)? {
            Some(codec) => {
                let text = codec.prompt_text(other)?.unwrap_or_default();
                codec.encode(&text, usize::MAX)?.len()
            }
            // No tokenizer: the text prompt fails later with its own error.
            None => 0,
        },
    };
    let answer = max_tokens.map_or(512, |n| usize::try_from(n).unwrap_or(0));
    Ok((prompt_tokens + answer).max(load::OFFLOAD_DEFAULT_CTX))
}

/// `--ids`, `-p`, `-f`, or stdin when it is piped.
fn read_input(args: &GenerateArgs) -> Result<Input> {
    if let Some(ids) = &args.ids {
        return Ok(Input::Ids(args::parse_ids(ids)?));
    }
    if let Some(text) = &args.prompt {
        return Ok(Input::Text(text.clone()));
    }
    if let Some(path) = &args.file {
        return Ok(Input::Text(file_text(args, load::read_text(path)?)));
    }
    if args.interactive {
        return Ok(Input::None);
    }
    if !std::io::stdin().is_terminal() {
        return Ok(Input::Text(file_text(args, load::read_text(&"-".into())?)));
    }
    bail!("no prompt: give -p TEXT, -f FILE or --ids IDS, or -i for a chat")
}

/// A file or piped text ends with a newline that is not part of a chat message; `--raw` keeps
/// the text byte for byte. (`-p` is never trimmed: what was typed is what is sent.)
fn file_text(args: &GenerateArgs, text: String) -> String {
    if args.raw {
        text
    } else {
        text.trim_end_matches(['\n', '\r']).to_string()
    }
}

fn one_shot(args: &GenerateArgs, loaded: &Loaded, prepared: &Prepared) -> Result<ExitCode> {
    let start = Instant::now();
    let cancel = interrupt::install();
    let mut chat = loaded.generator.session();
    if let Some(path) = args.prompt_cache.as_ref().filter(|p| p.exists()) {
        match chat.load_prompt_cache(path, &prepared.ids) {
            Ok(reused) if args.engine.verbose > 0 => note!(
                "prompt cache: reused {reused} of {} prompt tokens from {}",
                prepared.ids.len(),
                path.display()
            ),
            Ok(_) => {}
            // A cache from other weights: worth a line, not the run; this run rewrites it.
            Err(e) if e.is_stale() => {
                chat.reset();
                note!("notice: {e}; running without it");
            }
            Err(e @ PromptCacheError::KvTypeMismatch { file, .. }) => {
                bail!("{e} (--kv-type {file})")
            }
            Err(e) => return Err(e.into()),
        }
    }
    let has_tokenizer = loaded.generator.codec().is_some();
    let mut printer =
        (!args.json).then(|| Printer::new(ThinkStyle::choose(args.hide_think), has_tokenizer));
    let mut bar = Bar::when(!args.json, "prefill", "tokens");
    let mut print_error = None;
    let finish = chat.generate(prepared, &cancel, |event| {
        if let Event::Prefill { done, total } = event {
            bar.set(done as u64, total as u64, "");
            return;
        }
        bar.finish();
        if let (Some(p), None) = (&mut printer, &print_error) {
            if let Err(e) = p.event(&event) {
                // Nobody reads the answer any more (a closed pipe): stop generating it.
                print_error = Some(e);
                cancel.cancel();
            }
        }
    })?;
    bar.finish();
    if let Some(e) = print_error {
        return Err(e);
    }
    if let Some(path) = &args.prompt_cache {
        // The answer is already out: a cache that cannot be written costs the next run time,
        // not this run its result.
        if let Err(e) = chat.save_prompt_cache(path) {
            note!("warning: the prompt cache was not saved: {e}");
        }
    }
    if let Some(printer) = &mut printer {
        if printer.finish()? {
            outln!()?;
        }
    }
    if args.json {
        outln!("{}", answer_json(loaded, &finish)?)?;
    }
    if args.engine.verbose > 0 {
        stats::print_generation(&finish, chat.session(), start.elapsed());
    }
    if finish.constraint.is_some_and(|c| !c.complete) && finish.cause != StopCause::Cancelled {
        note!(
            "warning: the answer stopped ({}) before its grammar was complete, so it does not parse; raise --max-length",
            finish.reason().as_str()
        );
    }
    match finish.cause {
        StopCause::Cancelled => {
            note!("[interrupted]");
            Ok(ExitCode::from(INTERRUPTED))
        }
        StopCause::ContextFull => {
            note!(
                "[stopped: the context is full ({} tokens); raise --ctx-size for longer answers]",
                loaded.generator.model().ctx_size()
            );
            Ok(ExitCode::SUCCESS)
        }
        _ => Ok(ExitCode::SUCCESS),
    }
}

/// The `--json` object: the library's fields (README "JSON output"), `text` (the answer as the
/// model wrote it, special tokens and thinking included, less the end-of-sequence token) and
/// `timings`. Without a tokenizer there is no text: `content` and `text` are left out.
pub fn answer_json(loaded: &Loaded, finish: &Finish) -> Result<serde_json::Value> {
    let mut out = finish.to_json();
    match loaded.generator.codec() {
        Some(codec) => out["text"] = json!(codec.decode_raw(finish.answer_ids())?),
        None => {
            if let Some(o) = out.as_object_mut() {
                o.remove("content");
            }
        }
    }
    out["timings"] = stats::timings_json(loaded.load_time, finish);
    Ok(out)
}
