//! `qwen3-infer tokenize`: the ids of a text, as llama.cpp's `llama-tokenize` prints them.
//!
//! Needs only the tokenizer files (the weights are not loaded). With `--chat` the text becomes
//! one user turn rendered with the generation prompt, exactly the prompt the default command
//! would feed. The plain output is one comma-separated line that `--ids` accepts back.

use crate::args::{self, TokenizeArgs};
use crate::{hub, load};
use anyhow::{bail, Result};
use nano_infer_tokenizer::{ChatMessage, ChatTemplate, RenderOptions};
use serde_json::json;
use std::process::ExitCode;

pub fn run(args: &TokenizeArgs) -> Result<ExitCode> {
    let text = match (&args.text, &args.file) {
        (Some(text), _) => text.clone(),
        (None, Some(path)) => load::read_text(path)?,
        (None, None) => bail!("tokenize needs a TEXT argument or -f FILE"),
    };
    let dir = hub::resolve(args.model.model.as_deref())?;
    let tokenizer = load::load_tokenizer(&dir)?.ok_or_else(|| load::no_tokenizer(&dir))?;
    let prompt = if args.chat {
        let template = ChatTemplate::from_dir(&dir)?;
        let mut messages = Vec::new();
        if let Some(system) = &args.system {
            messages.push(ChatMessage::new("system", system.as_str()));
        }
        messages.push(ChatMessage::new("user", text));
        let options = RenderOptions {
            add_generation_prompt: true,
            enable_thinking: args::thinking(args.think, args.no_think),
        };
        template.render(&messages, &options)?
    } else {
        text
    };
    let ids = tokenizer.encode(&prompt)?;
    if args.json {
        outln!("{}", json!({ "ids": ids, "prompt": prompt }))?;
    } else {
        let ids: Vec<String> = ids.iter().map(u32::to_string).collect();
        outln!("{}", ids.join(","))?;
    }
    Ok(ExitCode::SUCCESS)
}
