//! `qwen3-infer tokenize`: the ids of a text, as llama.cpp's `llama-tokenize` prints them.
//!
//! Needs only the tokenizer files (the weights are not loaded). With `--chat` the text becomes
//! one user turn rendered with the generation prompt, exactly the prompt the default command
//! would feed. The plain output is one comma-separated line that `--ids` accepts back.

use crate::args::{self, TokenizeArgs};
use crate::{hub, load};
use anyhow::{anyhow, bail, Result};
use nano_infer_generate::{Prompt, TextCodec};
use serde_json::json;
use std::process::ExitCode;

pub fn run(args: &TokenizeArgs) -> Result<ExitCode> {
    let text = match (&args.text, &args.file) {
        (Some(text), _) => text.clone(),
        (None, Some(path)) => load::read_text(path)?,
        (None, None) => bail!("tokenize needs a TEXT argument or -f FILE"),
    };
    let dir = hub::resolve(args.model.model.as_deref())?;
    let codec = TextCodec::from_dir(&dir)?.ok_or_else(|| {
        anyhow!(
            "{} has no tokenizer.json: a text prompt needs the tokenizer files (pass token ids with --ids instead)",
            dir.display()
        )
    })?;
    let prompt = if args.chat {
        Prompt::user(
            text,
            args.system.as_deref(),
            args::thinking(args.think, args.no_think),
        )
    } else {
        Prompt::Text(text)
    };
    let prompt = codec.prompt_text(&prompt)?.unwrap_or_default();
    let ids = codec.encode(&prompt, usize::MAX)?;
    if args.json {
        outln!("{}", json!({ "ids": ids, "prompt": prompt }))?;
    } else {
        let ids: Vec<String> = ids.iter().map(u32::to_string).collect();
        outln!("{}", ids.join(","))?;
    }
    Ok(ExitCode::SUCCESS)
}
