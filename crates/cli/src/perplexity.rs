//! `qwen3-infer perplexity`: how well the model predicts a text, token by token.
//!
//! `logprobs[i] = log p(tokens[i+1] | tokens[..=i])`, natural log, from a log-softmax done in
//! f64 so the sum over a 150k vocabulary loses nothing. A sequence longer than `--ctx` is cut
//! into windows of at most `--ctx` tokens that overlap by one, so every token but the first is
//! predicted exactly once; a window's first tokens see only that window as context (llama.cpp's
//! chunked perplexity makes the same trade). Each window is fed in batches of at most
//! [`BATCH`] tokens, which bounds the `(batch, vocab)` logits buffer whatever `--ctx` is.
//!
//! perplexity = exp(mean negative log-likelihood).

use crate::args::{self, PerplexityArgs};
use crate::{hub, load, stats};
use anyhow::{bail, Result};
use nano_infer_qwen3::Logits;
use serde_json::json;
use std::process::ExitCode;

/// Tokens per forward pass inside a window.
const BATCH: usize = 512;

pub fn run(args: &PerplexityArgs) -> Result<ExitCode> {
    let ctx = args::positive("--ctx", args.ctx)?;
    if ctx < 2 {
        bail!("--ctx must be at least 2 (a window needs one token to predict from and one to predict)");
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
    if args.engine.verbose {
        stats::print_load(&loaded);
    }
    let ids = match (ids, text) {
        (Some(ids), _) => ids,
        (None, Some(text)) => loaded.tokenizer()?.encode(&text)?,
        (None, None) => bail!("perplexity needs an input: -f FILE, -p TEXT or --ids IDS"),
    };
    if ids.len() < 2 {
        bail!("perplexity needs at least 2 tokens (got {})", ids.len());
    }
    let vocab = loaded.model.vocab_size();
    if let Some(&id) = ids.iter().find(|&&id| id as usize >= vocab) {
        bail!(
            "token id {id} is outside the vocabulary (ids go from 0 to {})",
            vocab - 1
        );
    }
    // The model caps the context at max_position_embeddings.
    let ctx = loaded.model.ctx_size();

    let start = std::time::Instant::now();
    let mut session = loaded.model.session();
    let mut logprobs = Vec::with_capacity(ids.len() - 1);
    let mut windows = 0;
    let mut begin = 0;
    while begin + 1 < ids.len() {
        let window = &ids[begin..(begin + ctx).min(ids.len())];
        session.reset();
        for (b, batch) in window.chunks(BATCH).enumerate() {
            let logits = session.forward(batch, Logits::All)?;
            // Row r predicts the token after batch[r], which is window[b * BATCH + r + 1].
            for (r, row) in logits.chunks_exact(vocab).enumerate() {
                if let Some(&next) = window.get(b * BATCH + r + 1) {
                    logprobs.push(log_softmax_at(row, next as usize));
                }
            }
        }
        windows += 1;
        begin += window.len() - 1;
    }
    let elapsed = start.elapsed();

    let mean_nll = -logprobs.iter().sum::<f64>() / logprobs.len() as f64;
    let perplexity = mean_nll.exp();
    if args.json {
        let out = json!({
            "perplexity": perplexity,
            "mean_nll": mean_nll,
            "tokens": ids.len(),
            "ctx": ctx,
            "windows": windows,
            "logprobs": logprobs,
            "seconds": elapsed.as_secs_f64(),
        });
        outln!("{out}")?;
    } else {
        // Random or badly mismatched models give astronomically large values: show those in
        // scientific notation rather than as 25 digits.
        if perplexity < 1e6 {
            outln!("perplexity: {perplexity:.4}")?;
        } else {
            outln!("perplexity: {perplexity:.4e}")?;
        }
        note!(
            "{} tokens, {} predicted, mean NLL {mean_nll:.4}, {windows} window(s) of at most {ctx} tokens, {:.2} s",
            ids.len(),
            logprobs.len(),
            elapsed.as_secs_f64()
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `log softmax(row)[target]` in f64.
fn log_softmax_at(row: &[f32], target: usize) -> f64 {
    let max = row.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(v as f64));
    let sum: f64 = row.iter().map(|&v| (v as f64 - max).exp()).sum();
    row[target] as f64 - max - sum.ln()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_softmax_matches_the_definition() {
        let row = [1.0f32, 2.0, 3.0];
        let z: f64 = row.iter().map(|&v| (v as f64).exp()).sum();
        for t in 0..3 {
            assert!((log_softmax_at(&row, t) - ((row[t] as f64).exp() / z).ln()).abs() < 1e-12);
        }
        // Large logits must not overflow.
        assert!((log_softmax_at(&[1000.0, 1000.0], 0) - 0.5f64.ln()).abs() < 1e-12);
    }
}
