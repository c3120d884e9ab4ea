//! Greedy generation through the public library API only.
//!
//! ```text
//! cargo run --release --example greedy -- testdata/fixtures/bf16 "4,17,99" 16
//! ```
//! Arguments: a model directory, comma-separated prompt token ids, and how many tokens to
//! generate. Prints the generated ids and the decode speed.

use nano_infer::qwen3::{LoadOptions, Model};
use std::time::Instant;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: greedy MODEL_DIR IDS [N]";
    let dir = args.next().ok_or(usage)?;
    let prompt: Vec<u32> = args
        .next()
        .ok_or(usage)?
        .split(',')
        .map(|s| s.trim().parse())
        .collect::<Result<_, _>>()?;
    let n: usize = args.next().map(|s| s.parse()).transpose()?.unwrap_or(16);

    let model = Model::load(&dir, &LoadOptions::default())?;
    let mut session = model.session();
    let argmax = |logits: &[f32]| {
        logits
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .map_or(0, |(i, _)| i as u32)
    };

    let mut next = argmax(session.prefill(&prompt)?);
    let start = Instant::now();
    let mut generated = vec![next];
    for _ in 1..n {
        next = argmax(session.decode(next)?);
        generated.push(next);
    }
    let secs = start.elapsed().as_secs_f64();
    println!("{generated:?}");
    eprintln!(
        "{} tokens decoded in {secs:.3} s ({:.1} tok/s)",
        n - 1,
        (n - 1) as f64 / secs.max(1e-9)
    );
    Ok(())
}
