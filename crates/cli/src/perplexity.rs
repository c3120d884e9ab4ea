//! `qwen3-infer perplexity`: how well the model predicts a text, token by token. The windows
//! and the log-softmax are the library's (`nano_infer_generate::perplexity`); this prints them.

use crate::args::{self, PerplexityArgs};
use crate::load::{self, Bar};
use crate::{hub, interrupt, stats};
use anyhow::{bail, Result};
use serde_json::json;
use std::process::ExitCode;

pub fn run(args: &PerplexityArgs) -> Result<ExitCode> {
    let ctx = args::positive("--ctx-size", args.ctx)?;
    if ctx < 2 {
        bail!("--ctx-size must be at least 2 (a window needs one token to predict from and one to predict)");
    }
    let ids = match &args.ids {
        Some(ids) => Some(args::parse_ids(ids)?),
        None => None,
    };
    let text = match (&args.prompt, &args.file) {
        _ if ids.is_some() => None,
        (Some(text), _) => Some(text.clone()),
        (None, Some(path)) => Some(load::read_text(path)?),
        (None, None) => bail!("perplexity needs an input: -f FILE, -p TEXT or --ids IDS"),
    };

    let dir = hub::resolve(args.model.model.as_deref())?;
    let loaded = load::load(&dir, &args.engine, Some(ctx))?;
    if args.engine.verbose > 0 {
        stats::print_load(&loaded);
    }
    let generator = &loaded.generator;
    let ids = match (ids, text) {
        (Some(ids), _) => ids,
        // Plain text, as llama-perplexity scores it: no template. Any length: windows cut it.
        (None, Some(text)) => generator.require_codec()?.encode(&text, usize::MAX)?,
        (None, None) => unreachable!("an input was required above"),
    };

    let start = std::time::Instant::now();
    let cancel = interrupt::install();
    let mut bar = Bar::when(!args.json, "perplexity", "windows");
    let result = nano_infer_generate::perplexity(generator.model(), &ids, ctx, &cancel, |w| {
        bar.set(
            w.done as u64,
            w.total as u64,
            &format!("ppl {:.4}", w.perplexity),
        )
    })
    .map_err(args::flag_error)?;
    bar.finish();
    let elapsed = start.elapsed();

    if args.json {
        let out = json!({
            "perplexity": result.perplexity,
            "mean_nll": result.mean_nll,
            "tokens": ids.len(),
            "ctx": result.ctx,
            "windows": result.windows,
            "logprobs": result.logprobs,
            "seconds": elapsed.as_secs_f64(),
        });
        outln!("{out}")?;
    } else {
        // Random or badly mismatched models give astronomically large values: show those in
        // scientific notation rather than as 25 digits.
        if result.perplexity < 1e6 {
            outln!("perplexity: {:.4}", result.perplexity)?;
        } else {
            outln!("perplexity: {:.4e}", result.perplexity)?;
        }
        note!(
            "{} tokens, {} predicted, mean NLL {:.4}, {} window(s) of at most {} tokens, {:.2} s",
            ids.len(),
            result.logprobs.len(),
            result.mean_nll,
            result.windows,
            result.ctx,
            elapsed.as_secs_f64()
        );
    }
    Ok(ExitCode::SUCCESS)
}
