//! A streamed chat through the text-level API: messages in, text out, the model's thinking
//! (`<think>…</think>`) printed apart from its answer.
//!
//! ```text
//! cargo run --release --example chat -- [MODEL_DIR] ["first question" "second question" ...]
//! ```
//! Without arguments it runs on the repository's tiny random-weight fixture
//! (`testdata/fixtures/bf16_fullvocab`, the one with a tokenizer and chat template): its
//! answers are noise, but every step below runs. Answers go to stdout, thinking to stderr.

use nano_infer::generate::{
    CancelToken, Channel, ChatSession, Event, Finish, GenerateError, Generator, Prompt, Request,
};
use nano_infer::qwen3::LoadOptions;
use nano_infer::tokenizer::ChatMessage;
use std::io::Write;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let dir = args.next().unwrap_or_else(|| fixture("bf16_fullvocab"));
    let mut questions: Vec<String> = args.collect();
    if questions.is_empty() {
        questions = vec!["Why is the sky blue?".into(), "And at sunset?".into()];
    }
    run(
        &dir,
        &questions,
        &mut std::io::stdout(),
        &mut std::io::stderr(),
    )?;
    Ok(())
}

/// Answers `questions` as one conversation, streaming each answer to `out` and its thinking
/// to `thinking`; returns each turn's [`Finish`].
pub fn run(
    dir: &str,
    questions: &[String],
    out: &mut dyn Write,
    thinking: &mut dyn Write,
) -> Result<Vec<Finish>, GenerateError> {
    // Loads the weights, tokenizer.json, the chat template and generation_config.json. The
    // closure sees each decoder layer made ready (AWQ repacking takes a while on real models).
    let generator = Generator::load(dir, &LoadOptions::default(), &mut |_| {})?;
    // A session owns its KV cache: each turn's prompt starts with the last one, so only the new
    // tokens are prefilled (`usage.cached_tokens` below counts the rest).
    let mut chat: ChatSession = generator.session();
    let cancel = CancelToken::new(); // cancel() from another thread (Ctrl-C) stops an answer
    let mut messages = vec![ChatMessage::new("system", "You are a helpful assistant.")];
    let mut finishes = Vec::new();
    for question in questions {
        messages.push(ChatMessage::new("user", question.as_str()));
        let mut request = Request::new(Prompt::Chat {
            messages: messages.clone(),
            enable_thinking: Some(true), // Qwen3's switch; `None` keeps the template's default
            tools: Vec::new(),
        });
        // Only what differs from the model's generation_config.json; a fixed seed makes the
        // run repeatable (without one a seed is drawn and reported in `Finish::seed`).
        request.params.max_tokens = Some(24);
        request.params.temperature = Some(0.7);
        request.params.seed = Some(42);
        let prepared = generator.prepare(&request)?;

        let _ = writeln!(out, "> {question}");
        let finish = chat.generate(&prepared, &cancel, |event| match event {
            // Text arrives at UTF-8 boundaries, already split into reasoning and content.
            Event::Text {
                channel: Channel::Reasoning,
                text,
            } => {
                let _ = write!(thinking, "{text}");
            }
            Event::Text {
                channel: Channel::Content,
                text,
            } => {
                let _ = write!(out, "{text}");
                let _ = out.flush();
            }
            _ => {} // Prefill progress, token ids (and log-probs when asked), the Finish
        })?;
        let _ = writeln!(
            out,
            "\n[{}: {} tokens, {} of {} prompt tokens reused, seed {}]",
            finish.reason().as_str(),
            finish.usage.completion_tokens,
            finish.usage.cached_tokens,
            finish.usage.prompt_tokens,
            finish.seed
        );
        // The next turn's history holds the answer without its thinking, as Qwen3 expects.
        messages.push(ChatMessage::new("assistant", finish.content.as_str()));
        finishes.push(finish);
    }
    Ok(finishes)
}

/// A fixture folder of this repository.
fn fixture(name: &str) -> String {
    format!("{}/testdata/fixtures/{name}", env!("CARGO_MANIFEST_DIR"))
}
