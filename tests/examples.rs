//! Runs every program of `examples/` on the repository's fixtures, so none of them rots.
//!
//! Each example keeps its body in a `pub fn run(..)` beside a `main` that only reads arguments;
//! this test compiles the example files as modules (`#[path]`) and calls `run` in process.
//! Against running the built example binaries, this needs no second cargo invocation (slow,
//! and it would contend for the build lock under `cargo test`) and no guess about where the
//! binaries are, and it can assert on what `run` returns, not only on its exit status.
//! `greedy.rs` is the exception: its `main` is all there is, so it is checked by building
//! (`cargo test` builds every example) and by the golden tests, which cover the same calls.

#[allow(dead_code)]
#[path = "../examples/batch.rs"]
mod batch;
#[allow(dead_code)] // `main` and its helpers: only `run` is called here.
#[path = "../examples/chat.rs"]
mod chat;
#[allow(dead_code)]
#[path = "../examples/kvcache_prefix.rs"]
mod kvcache_prefix;
#[allow(dead_code)]
#[path = "../examples/offload.rs"]
mod offload;
#[allow(dead_code)]
#[path = "../examples/quant_matvec.rs"]
mod quant_matvec;

use nano_infer::generate::FinishReason;

fn fixture(name: &str) -> String {
    format!("{}/testdata/fixtures/{name}", env!("CARGO_MANIFEST_DIR"))
}

fn text(bytes: Vec<u8>) -> String {
    String::from_utf8(bytes).expect("examples print UTF-8")
}

#[test]
fn chat_streams_each_turn_and_reuses_the_conversation() {
    let questions = [
        "Why is the sky blue?".to_owned(),
        "And at sunset?".to_owned(),
    ];
    let (mut out, mut thinking) = (Vec::new(), Vec::new());
    let finishes = chat::run(
        &fixture("bf16_fullvocab"),
        &questions,
        &mut out,
        &mut thinking,
    )
    .expect("chat example");
    let (out, thinking) = (text(out), text(thinking));
    assert_eq!(finishes.len(), 2);
    for f in &finishes {
        // max_tokens 24 and ids that are not end-of-turn on these random weights.
        assert_eq!(f.reason(), FinishReason::Length, "{f:?}");
        assert_eq!(f.usage.completion_tokens, 24);
        // Everything streamed to `out` is the answer; the reasoning went to `thinking` only.
        assert!(out.contains(&f.content), "{out:?} lacks {:?}", f.content);
        assert_eq!(f.seed, 42);
    }
    let reasoning: String = finishes
        .iter()
        .filter_map(|f| f.reasoning.clone())
        .collect();
    assert_eq!(thinking, reasoning);
    // The second turn's prompt starts with the first's: its KV is reused, not recomputed.
    assert_eq!(finishes[0].usage.cached_tokens, 0);
    assert!(finishes[1].usage.cached_tokens > finishes[0].usage.prompt_tokens / 2);
    assert!(out.starts_with("> Why is the sky blue?\n"), "{out}");
}

#[test]
fn batch_shares_the_system_prompt() {
    let mut out = Vec::new();
    let finishes = batch::run(&fixture("bf16_fullvocab"), &mut out).expect("batch example");
    let out = text(out);
    assert_eq!(finishes.len(), 4);
    assert_eq!(out.lines().count(), 4, "{out}");
    // The first request computes the system prompt; the later ones find its whole 16-token
    // blocks in the prefix cache (the prompts diverge after 48 tokens here).
    assert_eq!(finishes[0].usage.cached_tokens, 0);
    for f in &finishes[1..] {
        assert_eq!(f.usage.cached_tokens, 48, "{f:?}");
        assert!(f.usage.cached_tokens % 16 == 0 && f.usage.cached_tokens < f.usage.prompt_tokens);
    }
}

#[test]
fn quant_matvec_matches_the_reference_dequantization() {
    // AWQ: (q - z)·s is exact in f32, so the kernel's sum differs from the reference's only by
    // summation order; FP8 likewise. 256 products of values below 1: 1e-4 is far above that.
    for name in ["awq", "fp8_block", "fp8_dynamic"] {
        let mut out = Vec::new();
        let diff = quant_matvec::run(&fixture(name), "model.layers.0.self_attn.k_proj", &mut out)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(diff < 1e-4, "{name}: {diff}");
        assert!(text(out).contains("max |y - y_ref|"));
    }
}

#[test]
fn kvcache_serves_a_shared_prefix_from_one_set_of_blocks() {
    let mut out = Vec::new();
    let outcome = kvcache_prefix::run(&mut out).expect("kvcache example");
    // 10 shared tokens are 2 whole blocks of 4; the rest is computed.
    assert_eq!(outcome.reused_tokens, 8);
    assert!(outcome.keys_match);
    // A's 4 blocks + B's one own block; nothing is left after eviction.
    assert_eq!(outcome.blocks_used, (5, 0));
    assert_eq!(text(out).lines().count(), 3);
}

#[test]
fn offload_streams_layers_with_identical_results() {
    let mut out = Vec::new();
    let outcome = offload::run(&fixture("bf16"), 13 << 20, &mut out).expect("offload example");
    assert_eq!(outcome.streamed_layers, vec![1, 2, 3], "{}", text(out));
    assert!(outcome.same_tokens);
}
