//! Many requests with a shared system prompt through the batch engine
//! ([`Generator::run_batch`]): the requests decode together (each weight is read once per step
//! for all of them), and the KV blocks of the common prefix are computed once and shared,
//! which `usage.cached_tokens` reports.
//!
//! ```text
//! cargo run --release --example batch -- [MODEL_DIR]
//! ```
//! Without an argument it runs on the repository's `testdata/fixtures/bf16_fullvocab`.

use nano_infer::generate::{CancelToken, Event, Finish, GenerateError, Generator, Prompt, Request};
use nano_infer::qwen3::{EngineOptions, LoadOptions};
use std::io::Write;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::args().nth(1).unwrap_or_else(|| {
        format!(
            "{}/testdata/fixtures/bf16_fullvocab",
            env!("CARGO_MANIFEST_DIR")
        )
    });
    run(&dir, &mut std::io::stdout())?;
    Ok(())
}

/// A long system prompt every request starts with: the part the prefix cache shares.
const SYSTEM: &str = "You are a support agent for a bicycle shop. Answer in one short sentence, \
    be polite, never invent prices, and suggest visiting the shop when a repair is needed. \
    Opening hours are nine to six on weekdays and ten to four on Saturdays.";

/// Runs one request per question, all with [`SYSTEM`] first; prints one line per answer.
pub fn run(dir: &str, out: &mut dyn Write) -> Result<Vec<Finish>, GenerateError> {
    let generator = Generator::load(dir, &LoadOptions::default(), &mut |_| {})?;
    let questions = [
        "Do you fix flat tyres?",
        "When are you open on Saturday?",
        "Can you adjust my brakes?",
        "Do you sell helmets?",
    ];
    let prepared = questions
        .iter()
        .enumerate()
        .map(|(i, q)| {
            let mut request = Request::new(Prompt::user(*q, Some(SYSTEM), Some(false)));
            request.params.max_tokens = Some(12);
            request.params.temperature = Some(0.8);
            request.params.seed = Some(i as u64); // each request samples with its own seed
            generator.prepare(&request)
        })
        .collect::<Result<Vec<_>, _>>()?;

    // Up to 8 requests decode together (`EngineOptions::max_batch`). Each is prefilled when
    // admitted, and its prompt's whole 16-token KV blocks go into the prefix cache (a radix
    // tree) at once, so every later request finds the system prompt there.
    let options = EngineOptions::default();
    let mut answers = vec![String::new(); questions.len()];
    let finishes = generator.run_batch(&prepared, &options, &CancelToken::new(), |i, event| {
        // Events of all requests interleave; `i` says whose they are.
        if let Event::Text { text, .. } = event {
            answers[i].push_str(&text);
        }
    })?;
    for ((q, answer), finish) in questions.iter().zip(&answers).zip(&finishes) {
        let _ = writeln!(
            out,
            "{q:<32} cached {:>3} of {:>3} prompt tokens | {:?}",
            finish.usage.cached_tokens,
            finish.usage.prompt_tokens,
            answer.trim()
        );
    }
    Ok(finishes)
}
