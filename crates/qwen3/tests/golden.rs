//! Golden tests: our forward pass against Hugging Face transformers' `Qwen3ForCausalLM`, run in
//! float32 on the stored weights of small random-weight checkpoints (`testdata/fixtures`, copied
//! from the shared reference set; its README says how each was made).
//!
//! Tolerance. The reference is f32 arithmetic on exactly the weights we read, so the only
//! difference is summation order (and `exp`/`sin`/`cos` rounding). For these depths (2–4 layers)
//! and widths (≤ 704) we measured at most 2.0e-4 on logits of magnitude ≤ ~60 and 2.2e-4 on
//! log-probs (bf16, 200-token prompt: ~4 ulp of the largest values). We allow
//! `LOGIT_ATOL = 1e-3`: five times that, for other summation orders of the vector kernels, and
//! still 20× under the smallest greedy gap of any fixture (0.0225), so a pass here also means
//! every greedy step is decided the same way. A real bug (a wrong norm, RoPE or mask) moves
//! logits by whole units.
//!
//! Every check runs at every instruction-set level the host has (scalar and the vector paths).

use nano_infer_qwen3::{Isa, LoadOptions, Logits, Model};
use nano_infer_tensor::SafetensorsFile;
use serde_json::Value;
use std::path::PathBuf;

mod common;
use common::{argmax, fixture_dir, ids, max_abs_diff, reference};

/// See the module doc for why.
const LOGIT_ATOL: f32 = 1e-3;
/// Log-probs are differences of logits and a log-sum-exp: the same error budget.
const LOGPROB_ATOL: f32 = 1e-3;

struct Fixture {
    dir: PathBuf,
    reference: Value,
    tensors: SafetensorsFile,
}

fn fixture(name: &str) -> Fixture {
    let dir = fixture_dir(name);
    let reference = reference(name);
    let tensors =
        SafetensorsFile::open(dir.join("reference.safetensors")).expect("reference.safetensors");
    Fixture {
        dir,
        reference,
        tensors,
    }
}

/// Natural-log softmax probability of `target` under `logits`, in f64 for a stable reference.
fn log_prob(logits: &[f32], target: u32) -> f32 {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let sum: f64 = logits.iter().map(|&v| (v as f64 - max).exp()).sum();
    (logits[target as usize] as f64 - max - sum.ln()) as f32
}

fn load(fx: &Fixture, isa: Isa) -> Model {
    Model::load(
        &fx.dir,
        &LoadOptions {
            isa: Some(isa),
            ..LoadOptions::default()
        },
    )
    .expect("model loads")
}

/// Last-position logits of every prompt, and its 32-token greedy continuation, token for token.
fn check_prompts(name: &str) {
    let fx = fixture(name);
    for isa in Isa::available() {
        let model = load(&fx, isa);
        for prompt in fx.reference["prompts"].as_array().unwrap() {
            let label = format!("{name} {} at {isa}", prompt["name"]);
            let input = ids(&prompt["input_ids"]);
            let expected = fx
                .tensors
                .get(prompt["last_logits_tensor"].as_str().unwrap())
                .unwrap();
            let expected = expected.as_slice::<f32>().unwrap();

            let mut session = model.session();
            let logits = session.prefill(&input).unwrap().to_vec();
            let diff = max_abs_diff(&logits, expected);
            assert!(diff <= LOGIT_ATOL, "{label}: last logits differ by {diff}");

            let greedy = ids(&prompt["greedy_ids"]);
            let mut got = vec![argmax(&logits)];
            while got.len() < greedy.len() {
                let next = argmax(session.decode(*got.last().unwrap()).unwrap());
                got.push(next);
            }
            assert_eq!(got, greedy, "{label}: greedy continuation");
        }
    }
}

/// Per-position log-probs of the longest prompt from one all-positions forward pass.
fn check_perplexity(name: &str) {
    let fx = fixture(name);
    let ppl = &fx.reference["perplexity"];
    let prompt = fx.reference["prompts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == ppl["prompt"])
        .expect("perplexity prompt");
    let input = ids(&prompt["input_ids"]);
    let expected: Vec<f32> = ppl["token_logprobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap() as f32)
        .collect();
    for isa in Isa::available() {
        let model = load(&fx, isa);
        let vocab = model.vocab_size();
        let mut session = model.session();
        let logits = session.forward(&input, Logits::All).unwrap();
        let got: Vec<f32> = (0..input.len() - 1)
            .map(|i| log_prob(&logits[i * vocab..(i + 1) * vocab], input[i + 1]))
            .collect();
        let diff = max_abs_diff(&got, &expected);
        assert!(
            diff <= LOGPROB_ATOL,
            "{name} at {isa}: log-probs differ by {diff}"
        );
    }
}

/// Decoding token by token through the KV cache gives the logits of one prefill of the whole
/// sequence, at every position.
fn check_cache_consistency(name: &str) {
    let fx = fixture(name);
    let prompt = &fx.reference["prompts"][2];
    let input = ids(&prompt["input_ids"]);
    let model = load(&fx, Isa::best());
    let vocab = model.vocab_size();
    let mut full = model.session();
    let all = full.forward(&input, Logits::All).unwrap().to_vec();
    let mut stepwise = model.session();
    // A prefill of a few tokens first, so both prefill-then-decode and pure decode are covered.
    let first = stepwise.prefill(&input[..3]).unwrap().to_vec();
    assert!(max_abs_diff(&first, &all[2 * vocab..3 * vocab]) <= LOGIT_ATOL);
    for (i, &id) in input.iter().enumerate().skip(3) {
        let step = stepwise.decode(id).unwrap();
        let diff = max_abs_diff(step, &all[i * vocab..(i + 1) * vocab]);
        assert!(
            diff <= LOGIT_ATOL,
            "{name}: position {i} differs by {diff} between decode and prefill"
        );
    }
}

/// The residual stream after the embedding, after every layer and after the final norm, for the
/// 7-token prompt: where a logit check fails, this says which layer went wrong first. The
/// residual stream's entries are O(1)–O(10), so the logit tolerance bounds them comfortably.
fn check_hidden_trace(name: &str) {
    let fx = fixture(name);
    let prompt = fx.reference["prompts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "len7")
        .unwrap();
    let model = load(&fx, Isa::best());
    let trace = model
        .session()
        .hidden_states(&ids(&prompt["input_ids"]))
        .unwrap();
    let n_layers = model.config().num_hidden_layers;
    assert_eq!(trace.len(), n_layers + 2, "embedding + layers + final norm");
    let names = std::iter::once("hidden.embed.len7".to_owned())
        .chain((0..n_layers).map(|i| format!("hidden.layer{i}.len7")))
        .chain(std::iter::once("hidden.final_norm.len7".to_owned()));
    for (got, tensor) in trace.iter().zip(names) {
        let expected = fx.tensors.get(&tensor).unwrap();
        let diff = max_abs_diff(got, expected.as_slice::<f32>().unwrap());
        assert!(diff <= LOGIT_ATOL, "{name}: {tensor} differs by {diff}");
    }
}

macro_rules! golden {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[test]
            fn last_logits_and_greedy() {
                super::check_prompts(stringify!($name));
            }
            #[test]
            fn perplexity_logprobs() {
                super::check_perplexity(stringify!($name));
            }
            #[test]
            fn kv_cache_matches_prefill() {
                super::check_cache_consistency(stringify!($name));
            }
            #[test]
            fn hidden_trace_per_layer() {
                super::check_hidden_trace(stringify!($name));
            }
        }
    )*};
}

golden!(bf16, f16, f32, bf16_sharded, bf16_untied, bf16_fullvocab);

// Quantized checkpoints: the reference dequantizes exactly (README of the fixtures) and then
// runs in f32, so the same tolerance applies: our kernels multiply the same exact weight values.
golden!(
    awq,
    awq_f16,
    fp8_block,
    fp8_block_f16scale,
    fp8_block_f32scale,
    fp8_dynamic,
    fp8_tensor,
    fp8_tensor_e5m2
);
