//! Perplexity: how well the model predicts a text, token by token.
//!
//! `logprobs[i] = log p(ids[i+1] | ids[..=i])`, natural log, from a log-softmax in f64. A
//! sequence longer than `ctx` is cut into windows of at most `ctx` tokens that overlap by one, so
//! every token but the first is predicted exactly once; a window's first tokens see only that
//! window as context (llama.cpp's chunked perplexity makes the same trade). Each window is fed
//! in batches of at most [`BATCH`] tokens, which bounds the `(batch, vocab)` logits buffer
//! whatever `ctx` is. perplexity = exp(mean negative log-likelihood).

use crate::logprob::log_softmax_at;
use crate::{CancelToken, GenerateError};
use nano_infer_qwen3::{Logits, Model};

/// Tokens per forward pass inside a window.
pub const BATCH: usize = 512;

/// The result of [`perplexity`].
#[derive(Clone, Debug, PartialEq)]
pub struct Perplexity {
    /// One per predicted token (`ids.len() - 1`).
    pub logprobs: Vec<f64>,
    /// Mean negative log-likelihood per predicted token (nats).
    pub mean_nll: f64,
    /// `exp(mean_nll)`.
    pub perplexity: f64,
    /// The window length used (`ctx`, capped at the model's context).
    pub ctx: usize,
    /// Windows scored.
    pub windows: usize,
}

/// Progress after each window, with the running value as llama-perplexity prints it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct WindowDone {
    /// Windows done.
    pub done: usize,
    /// Windows in all.
    pub total: usize,
    /// Perplexity over every token scored so far.
    pub perplexity: f64,
}

/// Scores `ids` in windows of `ctx` tokens (see the module doc). `on_window` sees each window
/// finish; `cancel` is checked between batches (`GenerateError::Cancelled`).
pub fn perplexity(
    model: &Model,
    ids: &[u32],
    ctx: usize,
    cancel: &CancelToken,
    mut on_window: impl FnMut(WindowDone),
) -> Result<Perplexity, GenerateError> {
    if ctx < 2 {
        return Err(GenerateError::field(
            "ctx",
            format!("must be at least 2: a window needs one token to predict from and one to predict (got {ctx})"),
        ));
    }
    if ids.len() < 2 {
        return Err(GenerateError::field(
            "prompt",
            format!("perplexity needs at least 2 tokens (got {})", ids.len()),
        ));
    }
    let vocab_size = model.vocab_size();
    if let Some(&id) = ids.iter().find(|&&id| id as usize >= vocab_size) {
        return Err(GenerateError::TokenOutOfVocab { id, vocab_size });
    }
    let ctx = ctx.min(model.ctx_size());
    let total = (ids.len() - 1).div_ceil(ctx - 1);

    let mut session = model.session();
    let mut logprobs = Vec::with_capacity(ids.len() - 1);
    let mut windows = 0;
    let mut begin = 0;
    while begin + 1 < ids.len() {
        let window = &ids[begin..(begin + ctx).min(ids.len())];
        session.reset();
        for (b, batch) in window.chunks(BATCH).enumerate() {
            if cancel.is_cancelled() {
                return Err(GenerateError::Cancelled);
            }
            let logits = session.forward(batch, Logits::All)?;
            // Row r predicts the token after batch[r], which is window[b * BATCH + r + 1].
            for (r, row) in logits.chunks_exact(vocab_size).enumerate() {
                if let Some(&next) = window.get(b * BATCH + r + 1) {
                    logprobs.push(log_softmax_at(row, next as usize));
                }
            }
        }
        windows += 1;
        begin += window.len() - 1;
        on_window(WindowDone {
            done: windows,
            total,
            perplexity: (-logprobs.iter().sum::<f64>() / logprobs.len() as f64).exp(),
        });
    }
    let mean_nll = -logprobs.iter().sum::<f64>() / logprobs.len() as f64;
    Ok(Perplexity {
        perplexity: mean_nll.exp(),
        mean_nll,
        logprobs,
        ctx,
        windows,
    })
}
