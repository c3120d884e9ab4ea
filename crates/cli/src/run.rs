//! The default command: build the prompt, generate once, stream the text or print JSON.
//!
//! Everything that can be checked without the model (flag ranges, the prompt file) is checked
//! before loading it, so a typo fails at once rather than after a multi-gigabyte load.

use crate::args::{self, GenerateArgs};
use crate::error::INTERRUPTED;
use crate::interrupt::Interrupt;
use crate::load::{self, Loaded};
use crate::output::{TextStream, ThinkStyle};
use crate::{chat, hub, stats};
use anyhow::{bail, Result};
use nano_infer_qwen3::{
    generate, GenerateOptions, Generation, Sampler, SamplingParams, StopReason,
};
use nano_infer_tokenizer::{ChatMessage, RenderOptions};
use serde_json::json;
use std::io::IsTerminal;
use std::ops::ControlFlow;
use std::process::ExitCode;

/// What the user gave as the prompt.
enum Input {
    Ids(Vec<u32>),
    Text(String),
    /// `-i` without a prompt: the chat asks for one.
    None,
}

pub fn run(args: &GenerateArgs) -> Result<ExitCode> {
    // Flag ranges first: generation_config.json can only supply valid values.
    args.sampling(&SamplingParams::default())?;
    args.max_new_tokens(1)?;
    let ctx_size = args.ctx_size()?;
    let input = read_input(args)?;

    let dir = hub::resolve(args.model.model.as_deref())?;
    let loaded = load::load(&dir, &args.engine, ctx_size)?;
    if args.engine.verbose {
        stats::print_load(&loaded);
    }
    let sampling = args.sampling(&loaded.defaults.sampling)?;
    let options = GenerateOptions {
        max_new_tokens: args.max_new_tokens(loaded.defaults.max_new_tokens)?,
        stop_ids: stop_ids(&loaded),
        ignore_eos: args.ignore_eos,
    };
    if args.engine.verbose {
        stats::print_sampling(&sampling, options.max_new_tokens);
    }

    if args.interactive {
        let first = match input {
            Input::Text(text) => Some(text),
            _ => None,
        };
        return chat::run(args, &loaded, Sampler::new(sampling), &options, first);
    }
    let ids = match input {
        Input::Ids(ids) => ids,
        Input::Text(text) => encode_prompt(args, &loaded, &text)?,
        // read_input only returns None with -i, handled above.
        Input::None => bail!("no prompt: give -p TEXT, -f FILE or --ids IDS, or -i for a chat"),
    };
    check_prompt(&loaded, &ids)?;
    one_shot(args, &loaded, &ids, Sampler::new(sampling), &options)
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

/// The prompt text as ids: through the chat template unless `--raw`.
fn encode_prompt(args: &GenerateArgs, loaded: &Loaded, text: &str) -> Result<Vec<u32>> {
    let tokenizer = loaded.tokenizer()?;
    if args.raw {
        return Ok(tokenizer.encode(text)?);
    }
    let mut messages = Vec::new();
    if let Some(system) = &args.system {
        messages.push(ChatMessage::new("system", system.as_str()));
    }
    messages.push(ChatMessage::new("user", text));
    let options = RenderOptions {
        add_generation_prompt: true,
        enable_thinking: args::thinking(args.think, args.no_think),
    };
    let rendered = loaded.template()?.render(&messages, &options)?;
    if args.engine.verbose {
        note!("rendered prompt: {rendered:?}");
    }
    Ok(tokenizer.encode(&rendered)?)
}

/// The generated ids less the stop token that ended them, if one did: the answer as the user
/// sees it (for `text` fields and chat history).
pub fn answer_ids(ids: &[u32], stop_reason: StopReason) -> &[u32] {
    match stop_reason {
        StopReason::Stop => &ids[..ids.len().saturating_sub(1)],
        _ => ids,
    }
}

/// Stop ids: the model's, plus Qwen's end-of-turn and end-of-text tokens when the tokenizer
/// knows them (a checkpoint without generation_config.json would otherwise run to -l).
pub fn stop_ids(loaded: &Loaded) -> Vec<u32> {
    let mut ids = loaded.defaults.stop_ids.clone();
    if let Some(tok) = &loaded.tokenizer {
        for name in ["<|im_end|>", "<|endoftext|>"] {
            if let Some(id) = tok.token_id(name) {
                if (id as usize) < loaded.model.vocab_size() && !ids.contains(&id) {
                    ids.push(id);
                }
            }
        }
    }
    ids
}

/// Checks a prompt before any compute: not empty, in the vocabulary, within the context.
pub fn check_prompt(loaded: &Loaded, ids: &[u32]) -> Result<()> {
    let model = &loaded.model;
    if ids.is_empty() {
        bail!("the prompt is empty: at least one token is needed");
    }
    if let Some(&id) = ids.iter().find(|&&id| id as usize >= model.vocab_size()) {
        bail!(
            "token id {id} is outside the vocabulary (ids go from 0 to {})",
            model.vocab_size() - 1
        );
    }
    if ids.len() > model.ctx_size() {
        bail!(
            "the prompt is {} tokens, longer than the context ({} tokens): shorten it or raise --ctx-size (this model allows up to {})",
            ids.len(),
            model.ctx_size(),
            model.config().max_position_embeddings
        );
    }
    Ok(())
}

fn one_shot(
    args: &GenerateArgs,
    loaded: &Loaded,
    ids: &[u32],
    mut sampler: Sampler,
    options: &GenerateOptions,
) -> Result<ExitCode> {
    let interrupt = Interrupt::install();
    let mut session = loaded.model.session();
    if let Some(path) = args.prompt_cache.as_ref().filter(|p| p.exists()) {
        let reused = session.load_prompt_cache(path, ids)?;
        if args.engine.verbose {
            note!(
                "prompt cache: reused {reused} of {} prompt tokens from {}",
                ids.len(),
                path.display()
            );
        }
    }
    let mut stream = (!args.json).then(|| {
        TextStream::new(
            loaded.tokenizer.as_ref(),
            ThinkStyle::choose(args.hide_think),
        )
    });
    let mut print_error = None;
    let generation = generate(&mut session, ids, &mut sampler, options, |id| {
        if let Some(stream) = &mut stream {
            if let Err(e) = stream.push(id) {
                print_error = Some(e);
                return ControlFlow::Break(());
            }
        }
        if interrupt.is_set() {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    })?;
    if let Some(e) = print_error {
        return Err(e);
    }
    if let Some(path) = &args.prompt_cache {
        session.save_prompt_cache(path)?;
    }
    if let Some(stream) = &mut stream {
        if stream.finish()? {
            outln!()?;
        }
    }
    if args.json {
        outln!("{}", generation_json(loaded, &generation)?)?;
    }
    if args.engine.verbose {
        stats::print_generation(&generation, 0, &session);
    }
    match generation.stop_reason {
        StopReason::Cancelled => {
            note!("[interrupted]");
            Ok(ExitCode::from(INTERRUPTED))
        }
        StopReason::ContextFull => {
            note!(
                "[stopped: the context is full ({} tokens); raise --ctx-size for longer answers]",
                loaded.model.ctx_size()
            );
            Ok(ExitCode::SUCCESS)
        }
        StopReason::Stop | StopReason::Length => Ok(ExitCode::SUCCESS),
    }
}

/// The `--json` object. `text` is the generated text as the model wrote it, special tokens
/// included, less the stop token that ended it; it is left out without a tokenizer.
fn generation_json(loaded: &Loaded, g: &Generation) -> Result<String> {
    let mut out = json!({
        "ids": g.ids,
        "stop_reason": g.stop_reason.as_str(),
        "prompt_tokens": g.prompt_tokens,
        "timings": stats::timings_json(loaded.load_time, g),
    });
    if let Some(tok) = &loaded.tokenizer {
        out["text"] = json!(tok.decode(answer_ids(&g.ids, g.stop_reason), false)?);
    }
    Ok(serde_json::to_string(&out)?)
}
