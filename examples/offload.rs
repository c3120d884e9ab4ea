//! Memory-budgeted loading: give the model less memory than it needs, and the decoder layers
//! that do not fit are streamed from the weight files (the next one read in while the current
//! one computes) instead of staying resident. Results are bit-identical; only speed changes.
//!
//! ```text
//! cargo run --release --example offload -- [MODEL_DIR] [BUDGET]
//! ```
//! Defaults: `testdata/fixtures/bf16` (4 layers, 6 MiB) and a budget of 13 MiB, which keeps one
//! layer resident and streams three (on so tiny a model the activation buffers, 7 MiB, outweigh
//! the weights). BUDGET takes units: `512M`, `3GiB`, `13MiB`.

use nano_infer::offload::{format_size, parse_size};
use nano_infer::qwen3::{LoadOptions, Model, ModelError};
use std::error::Error;
use std::io::Write;

fn main() -> Result<(), Box<dyn Error>> {
    let mut args = std::env::args().skip(1);
    let dir = args
        .next()
        .unwrap_or_else(|| format!("{}/testdata/fixtures/bf16", env!("CARGO_MANIFEST_DIR")));
    let budget = parse_size(&args.next().unwrap_or_else(|| "13MiB".into()))?;
    run(&dir, budget, &mut std::io::stdout())?;
    Ok(())
}

/// What [`run`] found, for the test that runs this example.
#[derive(Debug)]
pub struct Outcome {
    /// Decoder layers streamed under the budget.
    pub streamed_layers: Vec<usize>,
    /// Whether greedy decoding gave the same ids with and without the budget.
    pub same_tokens: bool,
}

/// Loads the model in `dir` with and without a budget of `budget` bytes, prints the plan and
/// decodes a few tokens greedily with both.
pub fn run(dir: &str, budget: u64, out: &mut dyn Write) -> Result<Outcome, ModelError> {
    // The budget covers weights, the KV cache at the full context and the activations, so a
    // shorter context leaves more of it for weights.
    let ctx_size = Some(256);
    let plain = Model::load(
        dir,
        &LoadOptions {
            ctx_size,
            ..LoadOptions::default()
        },
    )?;
    let budgeted = Model::load(
        dir,
        &LoadOptions {
            ctx_size,
            max_memory: Some(budget),
            ..LoadOptions::default()
        },
    )?;

    // The plan is made before anything is read: which layers stay, which stream, and why.
    // `offload_report` is the paragraph the CLI prints with `-v`. Without `max_memory` a
    // plan exists only when the model would not fit in the memory the system has available.
    let _ = writeln!(out, "weights: {}", format_size(plain.file_bytes() as u64));
    let streamed_layers = match budgeted.residency_plan() {
        Some(plan) => plan.streamed_layers(),
        None => Vec::new(),
    };
    let _ = writeln!(out, "{}", budgeted.offload_report().unwrap_or("no budget"));
    let _ = writeln!(out, "streamed layers: {streamed_layers:?}");

    // Greedy decoding with both: the budgeted model reads its streamed layers back from the
    // page cache or the disk at every token, and computes exactly the same numbers.
    let prompt = [4, 17, 99, 250];
    let greedy = |model: &Model| -> Result<Vec<u32>, ModelError> {
        let mut session = model.session();
        let mut ids = vec![argmax(session.prefill(&prompt)?)];
        for _ in 0..7 {
            let next = argmax(session.decode(*ids.last().unwrap())?);
            ids.push(next);
        }
        Ok(ids)
    };
    let (a, b) = (greedy(&plain)?, greedy(&budgeted)?);
    let _ = writeln!(out, "greedy ids without budget {a:?}, with {b:?}");
    Ok(Outcome {
        streamed_layers,
        same_tokens: a == b,
    })
}

fn argmax(logits: &[f32]) -> u32 {
    let best = logits.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1));
    best.map_or(0, |(i, _)| i as u32)
}
