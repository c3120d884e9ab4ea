//! The load options that trade exactness for speed, against the transformers fixtures:
//! `LmHead::Q8` (an int8 lm_head) and `AwqActivations::Int8` (int8 activations for AWQ layers).
//! Neither is the default; these tests state how far each moves the outputs.
//!
//! Error model. Symmetric int8 with scale `absmax/127` moves each element by at most half a step,
//! `absmax/254` (2⁻⁸ relative to the largest element of its row or block). A logit
//! `Σ_j w_j·x_j` then moves by at most `Σ_j (|x_j|·amax_w/254 + |w_j|·amax_x/254)`; with
//! independent rounding errors the typical move is ~√k smaller. The fixtures are random-weight
//! models with logits of magnitude up to ~60, so a ~1% relative error is ~0.5 logits.
//!
//! - **LmHead::Q8** changes one matmul: measured max |Δ log-prob| 0.44 (bf16) and 0.34
//!   (bf16_fullvocab), 0.43 (awq) over the 199 perplexity positions, max |Δ last logit| 0.58; every greedy
//!   continuation of the four prompts still matches token for token. Bound: 0.75.
//! - **AwqActivations::Int8** quantizes the input of every linear layer (28 per 4-layer fixture)
//!   and the errors compound through the residual stream and attention: measured max |Δ last
//!   logit| 2.37 (awq) / 1.09 (awq_f16), max |Δ log-prob| 2.96 / 2.32 (all ISA levels). That exceeds the
//!   fixtures' greedy gaps (≥ 0.2): greedy continuations diverge after 2–28 tokens, which is why
//!   it is opt-in. The bound here (4.0 logits, 5.0 log-probs) only guards against a broken
//!   kernel, which moves logits by tens; `nano-infer-quant`'s
//!   `awq_int8_activations_error_bound` checks each layer against the exact per-element bound.

use nano_infer_qwen3::{AwqActivations, Isa, LmHead, LoadOptions, Logits, Model};
use nano_infer_tensor::SafetensorsFile;
use serde_json::Value;
use std::path::PathBuf;

mod common;
use common::{argmax, ids};

fn log_prob(l: &[f32], t: u32) -> f64 {
    let m = l.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let s: f64 = l.iter().map(|&v| (v as f64 - m).exp()).sum();
    l[t as usize] as f64 - m - s.ln()
}

struct Measured {
    last_logit: f32,
    logprob: f64,
    greedy_all_match: bool,
}

/// Runs every prompt (last logits + greedy) and the perplexity prompt of fixture `name` at
/// every ISA level, returning the worst differences from the reference.
fn measure(name: &str, options: LoadOptions) -> Measured {
    let dir = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../testdata/fixtures"
    ))
    .join(name);
    let r: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("reference.json")).unwrap())
            .unwrap();
    let t = SafetensorsFile::open(dir.join("reference.safetensors")).unwrap();
    let mut m = Measured {
        last_logit: 0.0,
        logprob: 0.0,
        greedy_all_match: true,
    };
    for isa in Isa::available() {
        let model = Model::load(
            &dir,
            &LoadOptions {
                isa: Some(isa),
                ..options.clone()
            },
        )
        .unwrap();
        for p in r["prompts"].as_array().unwrap() {
            let input = ids(&p["input_ids"]);
            let want = t.get(p["last_logits_tensor"].as_str().unwrap()).unwrap();
            let want = want.as_slice::<f32>().unwrap();
            let mut s = model.session();
            let l = s.prefill(&input).unwrap().to_vec();
            let d = l
                .iter()
                .zip(want)
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            m.last_logit = m.last_logit.max(d);
            let greedy = ids(&p["greedy_ids"]);
            let mut got = vec![argmax(&l)];
            while got.len() < greedy.len() {
                got.push(argmax(s.decode(*got.last().unwrap()).unwrap()));
            }
            m.greedy_all_match &= got == greedy;
        }
        let ppl = &r["perplexity"];
        let p = r["prompts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == ppl["prompt"])
            .unwrap();
        let input = ids(&p["input_ids"]);
        let want: Vec<f64> = ppl["token_logprobs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        let vocab = model.vocab_size();
        let mut s = model.session();
        let l = s.forward(&input, Logits::All).unwrap();
        for (i, w) in want.iter().enumerate() {
            let got = log_prob(&l[i * vocab..(i + 1) * vocab], input[i + 1]);
            m.logprob = m.logprob.max((got - w).abs());
        }
    }
    eprintln!(
        "{name}: max |Δ last logit| {:.4}, max |Δ log-prob| {:.4}, greedy all match: {}",
        m.last_logit, m.logprob, m.greedy_all_match
    );
    m
}

/// See the module docs for the bound.
const LM_HEAD_Q8_ATOL: f64 = 0.75;

#[test]
fn lm_head_q8_within_bound_and_greedy_matches() {
    for name in ["bf16", "bf16_fullvocab", "awq"] {
        let m = measure(
            name,
            LoadOptions {
                lm_head: LmHead::Q8,
                ..LoadOptions::default()
            },
        );
        assert!(
            m.logprob <= LM_HEAD_Q8_ATOL,
            "{name}: log-probs moved by {}",
            m.logprob
        );
        assert!(
            m.last_logit as f64 <= LM_HEAD_Q8_ATOL,
            "{name}: logits moved by {}",
            m.last_logit
        );
        assert!(m.greedy_all_match, "{name}: greedy continuation changed");
    }
}

#[test]
fn awq_int8_activations_stay_near_the_reference() {
    for name in ["awq", "awq_f16"] {
        let m = measure(
            name,
            LoadOptions {
                awq_activations: AwqActivations::Int8,
                ..LoadOptions::default()
            },
        );
        assert!(
            m.last_logit <= 4.0,
            "{name}: logits moved by {}",
            m.last_logit
        );
        assert!(m.logprob <= 5.0, "{name}: log-probs moved by {}", m.logprob);
    }
}
