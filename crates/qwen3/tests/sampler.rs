//! Sampler properties (proptest) and the generation loop on a fixture.

use nano_infer_qwen3::{
    generate, GenerateOptions, GenerateStep, GenerationDefaults, LoadOptions, Model, Sampler,
    SamplingParams, StopReason,
};
use proptest::prelude::*;
use std::ops::ControlFlow;

mod common;
use common::fixture_dir as fixture;

fn params(temperature: f32, top_k: usize, top_p: f32, min_p: f32) -> SamplingParams {
    SamplingParams {
        temperature,
        top_k,
        top_p,
        min_p,
        ..SamplingParams::default()
    }
}

/// Logits with NaN and ±∞ mixed in, as a broken model row could give.
fn logits_strategy() -> impl Strategy<Value = Vec<f32>> {
    prop::collection::vec(
        prop_oneof![
            8 => -30.0f32..30.0,
            1 => Just(f32::NAN),
            1 => Just(f32::NEG_INFINITY),
            1 => Just(f32::INFINITY),
        ],
        1..200,
    )
}

proptest! {
    /// A mask narrows every setting to the allowed ids: the pick is always allowed, and greedy
    /// is the best allowed logit (lowest id on ties), whatever the logits hold.
    #[test]
    fn a_masked_pick_is_allowed_and_greedy_is_the_best_allowed(
        logits in logits_strategy(),
        bits in prop::collection::vec(any::<u32>(), 7),
        temperature in prop_oneof![Just(0.0f32), 0.1f32..2.0],
        top_k in 0usize..5,
        seed in any::<u64>(),
    ) {
        let n = logits.len();
        let allowed = |i: usize| bits[i / 32] >> (i % 32) & 1 == 1;
        prop_assume!((0..n).any(allowed));
        let sp = SamplingParams { temperature, top_k, seed, ..SamplingParams::default() };
        let id = Sampler::new(sp).sample_allowed(&logits, &[], Some(&bits)) as usize;
        prop_assert!(id < n && allowed(id), "picked {id}");
        if temperature == 0.0 {
            let key = |i: usize| if logits[i].is_nan() { f32::NEG_INFINITY } else { logits[i] };
            let best = (0..n).filter(|&i| allowed(i)).fold(None, |b: Option<usize>, i| match b {
                Some(b) if key(b) >= key(i) => Some(b),
                _ => Some(i),
            });
            prop_assert_eq!(Some(id), best);
        }
    }

    #[test]
    fn top_k_keeps_at_most_k_and_they_are_the_largest(logits in prop::collection::vec(-30.0f32..30.0, 1..300), k in 1usize..50) {
        let mut sampler = Sampler::new(params(1.0, k, 1.0, 0.0));
        let dist = sampler.distribution(&logits, &[]);
        prop_assert!(dist.len() <= k);
        prop_assert_eq!(dist.len(), k.min(logits.len()));
        let smallest_kept = dist.iter().map(|c| logits[c.0 as usize]).fold(f32::INFINITY, f32::min);
        let dropped_larger = (0..logits.len() as u32)
            .filter(|id| !dist.iter().any(|c| c.0 == *id))
            .any(|id| logits[id as usize] > smallest_kept);
        prop_assert!(!dropped_larger, "a dropped token outranks a kept one");
    }

    #[test]
    fn top_p_keeps_the_smallest_set_reaching_p(logits in prop::collection::vec(-10.0f32..10.0, 1..300), p in 0.05f32..1.0) {
        let full = Sampler::new(params(1.0, 0, 1.0, 0.0)).distribution(&logits, &[]);
        let kept = Sampler::new(params(1.0, 0, p, 0.0)).distribution(&logits, &[]);
        // The kept set is a prefix of the full sorted distribution...
        for (a, b) in kept.iter().zip(&full) {
            prop_assert_eq!(a.0, b.0);
        }
        // ...whose mass reaches p, while one token fewer would not (up to f32 rounding).
        let mass = |n: usize| full[..n].iter().map(|c| c.1).sum::<f32>();
        prop_assert!(mass(kept.len()) >= p - 1e-5);
        prop_assert!(kept.len() == 1 || mass(kept.len() - 1) < p + 1e-5);
    }

    #[test]
    fn probabilities_sum_to_one_and_nonfinite_logits_never_crash(
        logits in logits_strategy(),
        t in 0.0f32..2.0, k in 0usize..40, p in 0.05f32..=1.0, min_p in 0.0f32..0.5,
        rep in 0.5f32..2.0, presence in -1.0f32..1.0, seed: u64,
        history in prop::collection::vec(0u32..250, 0..20),
    ) {
        let sp = SamplingParams { temperature: t, top_k: k, top_p: p, min_p, repetition_penalty: rep, presence_penalty: presence, frequency_penalty: 0.0, seed };
        let mut sampler = Sampler::new(sp.clone());
        let dist = sampler.distribution(&logits, &history);
        prop_assert!(!dist.is_empty());
        let sum: f32 = dist.iter().map(|c| c.1).sum();
        prop_assert!((sum - 1.0).abs() < 1e-4, "sum {}", sum);
        prop_assert!(dist.iter().all(|c| c.1.is_finite() && c.1 >= 0.0 && (c.0 as usize) < logits.len()));
        let id = Sampler::new(sp).sample(&logits, &history);
        prop_assert!((id as usize) < logits.len());
    }

    #[test]
    fn same_seed_same_tokens(logits in prop::collection::vec(-5.0f32..5.0, 2..100), seed: u64) {
        let sp = SamplingParams { temperature: 1.0, seed, ..SamplingParams::default() };
        let (mut a, mut b) = (Sampler::new(sp.clone()), Sampler::new(sp));
        let draws_a: Vec<u32> = (0..20).map(|_| a.sample(&logits, &[])).collect();
        let draws_b: Vec<u32> = (0..20).map(|_| b.sample(&logits, &[])).collect();
        prop_assert_eq!(draws_a, draws_b);
    }
}

#[test]
fn greedy_is_argmax_and_ignores_nan() {
    let mut s = Sampler::new(SamplingParams::default());
    assert_eq!(s.sample(&[1.0, f32::NAN, 3.0, 2.0], &[]), 2);
}

#[test]
fn min_p_drops_unlikely_tokens() {
    // Probabilities ∝ e^0, e^-1, e^-5: with min_p 0.2, e^-5 / 1 < 0.2 is dropped, e^-1 ≈ 0.37 kept.
    let dist = Sampler::new(params(1.0, 0, 1.0, 0.2)).distribution(&[0.0, -1.0, -5.0], &[]);
    assert_eq!(dist.iter().map(|c| c.0).collect::<Vec<_>>(), vec![0, 1]);
}

#[test]
fn penalties_follow_hf_semantics() {
    let sp = SamplingParams {
        repetition_penalty: 2.0,
        ..SamplingParams::default()
    };
    // Token 0 (logit 3, seen) becomes 1.5 < token 1's 2: greedy moves to 1.
    assert_eq!(Sampler::new(sp).sample(&[3.0, 2.0, -1.0], &[0]), 1);
    // A negative seen logit is multiplied: -1 → -2, still last.
    let sp = SamplingParams {
        presence_penalty: 1.5,
        ..SamplingParams::default()
    };
    assert_eq!(
        Sampler::new(sp).sample(&[3.0, 2.0], &[0, 0, 0]),
        1,
        "presence counts once: 3 - 1.5 < 2"
    );
    // Frequency counts every occurrence: 3 - 3 × 0.4 = 1.8 < 2 with three, 2.2 > 2 with two.
    let sp = SamplingParams {
        frequency_penalty: 0.4,
        ..SamplingParams::default()
    };
    assert_eq!(Sampler::new(sp.clone()).sample(&[3.0, 2.0], &[0, 0, 0]), 1);
    assert_eq!(Sampler::new(sp).sample(&[3.0, 2.0], &[0, 0]), 0);
}

#[test]
fn validation_names_the_setting() {
    assert!(params(-1.0, 0, 1.0, 0.0)
        .validate()
        .unwrap_err()
        .contains("temperature"));
    assert!(params(1.0, 0, 0.0, 0.0)
        .validate()
        .unwrap_err()
        .contains("top-p"));
    assert!(params(1.0, 0, 1.5, 0.0)
        .validate()
        .unwrap_err()
        .contains("top-p"));
    assert!(params(1.0, 0, 1.0, 2.0)
        .validate()
        .unwrap_err()
        .contains("min-p"));
    assert!(
        params(0.0, 0, 1.0, 0.0).validate().is_ok(),
        "top-k 0 is off, temperature 0 greedy"
    );
}

#[test]
fn generation_defaults_from_files() {
    // No generation_config.json: the documented fallback, stop id from config.json.
    let d = GenerationDefaults::from_dir(&fixture("bf16"), Some(&serde_json::json!(1023))).unwrap();
    assert_eq!(
        (
            d.sampling.temperature,
            d.sampling.top_k,
            d.sampling.top_p,
            d.max_new_tokens
        ),
        (0.7, 20, 0.9, 512)
    );
    assert_eq!(d.stop_ids, vec![1023]);
    // Qwen3's shipped generation_config.json.
    let dir = std::env::temp_dir().join(format!("nano-infer-genconf-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("generation_config.json"),
        r#"{"bos_token_id": 151643, "do_sample": true, "eos_token_id": [151645, 151643], "pad_token_id": 151643, "temperature": 0.6, "top_k": 20, "top_p": 0.95}"#,
    )
    .unwrap();
    let d = GenerationDefaults::from_dir(&dir, None).unwrap();
    assert_eq!(
        (d.sampling.temperature, d.sampling.top_k, d.sampling.top_p),
        (0.6, 20, 0.95)
    );
    assert_eq!(d.stop_ids, vec![151645, 151643]);
    std::fs::write(dir.join("generation_config.json"), "{not json").unwrap();
    assert!(GenerationDefaults::from_dir(&dir, None)
        .unwrap_err()
        .to_string()
        .contains("generation_config.json"));
    std::fs::remove_dir_all(&dir).unwrap();
}

fn reference_greedy(name: &str, prompt: usize) -> (Vec<u32>, Vec<u32>) {
    let text = std::fs::read_to_string(fixture(name).join("reference.json")).unwrap();
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    let ids = |v: &serde_json::Value| {
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap() as u32)
            .collect()
    };
    let p = &json["prompts"][prompt];
    (ids(&p["input_ids"]), ids(&p["greedy_ids"]))
}

#[test]
fn generate_greedy_matches_reference_and_reuses_the_prefix() {
    let model = Model::load(fixture("bf16"), &LoadOptions::default()).unwrap();
    let (prompt, expected) = reference_greedy("bf16", 1);
    let mut session = model.session();
    let mut sampler = Sampler::new(SamplingParams::default());
    let opts = GenerateOptions {
        max_new_tokens: 32,
        stop_ids: vec![],
        ignore_eos: false,
        ..GenerateOptions::default()
    };
    let mut streamed = Vec::new();
    let out = generate(&mut session, &prompt, &mut sampler, &opts, |step| {
        if let GenerateStep::Token(t) = step {
            streamed.push(t.id);
        }
        ControlFlow::Continue(())
    })
    .unwrap();
    assert_eq!(out.ids, expected);
    assert_eq!(streamed, expected);
    assert_eq!(out.stop_reason, StopReason::Length);
    assert_eq!(out.prompt_tokens, prompt.len());

    // A second turn that extends the conversation prefills only its new tokens.
    let mut turn2 = prompt.clone();
    turn2.extend_from_slice(&out.ids[..31]);
    turn2.extend_from_slice(&[5, 6, 7]);
    let out2 = generate(&mut session, &turn2, &mut sampler, &opts, |_| {
        ControlFlow::Continue(())
    })
    .unwrap();
    assert_eq!(out2.prompt_tokens, 3, "turn 2 prefills only its new tokens");
    let mut fresh = model.session();
    let out_fresh = generate(
        &mut fresh,
        &turn2,
        &mut Sampler::new(SamplingParams::default()),
        &opts,
        |_| ControlFlow::Continue(()),
    )
    .unwrap();
    assert_eq!(
        out2.ids, out_fresh.ids,
        "prefix reuse gives the same tokens as a fresh prefill"
    );
}

#[test]
fn generate_stops_on_stop_id_and_cancel() {
    let model = Model::load(fixture("bf16"), &LoadOptions::default()).unwrap();
    let (prompt, expected) = reference_greedy("bf16", 0);
    let stop = expected[3];
    let first = expected.iter().position(|&t| t == stop).unwrap();
    let opts = GenerateOptions {
        max_new_tokens: 32,
        stop_ids: vec![stop],
        ignore_eos: false,
        ..GenerateOptions::default()
    };
    let mut sampler = Sampler::new(SamplingParams::default());
    let out = generate(&mut model.session(), &prompt, &mut sampler, &opts, |_| {
        ControlFlow::Continue(())
    })
    .unwrap();
    assert_eq!(out.stop_reason, StopReason::Stop);
    assert_eq!(out.ids, expected[..=first]);
    let ignore = GenerateOptions {
        ignore_eos: true,
        ..opts.clone()
    };
    let out = generate(&mut model.session(), &prompt, &mut sampler, &ignore, |_| {
        ControlFlow::Continue(())
    })
    .unwrap();
    assert_eq!(out.ids.len(), 32);
    let mut n = 0;
    let out = generate(&mut model.session(), &prompt, &mut sampler, &opts, |_| {
        n += 1;
        if n == 2 {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    })
    .unwrap();
    assert_eq!((out.stop_reason, out.ids.len()), (StopReason::Cancelled, 2));
}

#[test]
fn generate_reports_a_full_context() {
    let model = Model::load(
        fixture("bf16"),
        &LoadOptions {
            ctx_size: Some(10),
            ..LoadOptions::default()
        },
    )
    .unwrap();
    let opts = GenerateOptions {
        max_new_tokens: 32,
        stop_ids: vec![],
        ignore_eos: false,
        ..GenerateOptions::default()
    };
    let mut sampler = Sampler::new(SamplingParams::default());
    let out = generate(
        &mut model.session(),
        &[1, 2, 3, 4],
        &mut sampler,
        &opts,
        |_| ControlFlow::Continue(()),
    )
    .unwrap();
    assert_eq!(out.stop_reason, StopReason::ContextFull);
    assert_eq!(
        out.ids.len(),
        7,
        "positions 4..10 decoded, plus the token sampled from the last logits"
    );
    let err = generate(&mut model.session(), &[1; 11], &mut sampler, &opts, |_| {
        ControlFlow::Continue(())
    })
    .unwrap_err();
    assert!(err.to_string().contains("context full"));
}

#[test]
fn chunked_prefill_gives_the_same_tokens_and_can_be_cancelled_between_chunks() {
    let model = Model::load(fixture("bf16"), &LoadOptions::default()).unwrap();
    let (prompt, expected) = reference_greedy("bf16", 1);
    assert!(prompt.len() > 3, "the fixture prompt spans several chunks");
    let opts = GenerateOptions {
        max_new_tokens: 32,
        prefill_chunk: 2,
        ..GenerateOptions::default()
    };
    let mut sampler = Sampler::new(SamplingParams::default());
    let mut chunks = Vec::new();
    let out = generate(&mut model.session(), &prompt, &mut sampler, &opts, |step| {
        if let GenerateStep::Prefill { done, total } = step {
            assert_eq!(total, prompt.len());
            chunks.push(done);
        }
        ControlFlow::Continue(())
    })
    .unwrap();
    assert_eq!(
        out.ids, expected,
        "chunked prefill keeps the reference tokens"
    );
    let between: Vec<usize> = (1..)
        .map(|i| 2 * i)
        .take_while(|&d| d < prompt.len())
        .collect();
    assert_eq!(chunks, between, "one progress step between chunks");

    // Stopped after the first chunk: nothing sampled, the chunk stays, and the next call
    // reuses it and still gives the reference answer.
    let mut session = model.session();
    let out = generate(&mut session, &prompt, &mut sampler, &opts, |_| {
        ControlFlow::Break(())
    })
    .unwrap();
    assert_eq!(out.stop_reason, StopReason::Cancelled);
    assert!(out.ids.is_empty());
    assert_eq!((out.prompt_tokens, session.position()), (2, 2));
    let out = generate(&mut session, &prompt, &mut sampler, &opts, |_| {
        ControlFlow::Continue(())
    })
    .unwrap();
    assert_eq!(out.cached_tokens, 2);
    assert_eq!(
        out.ids, expected,
        "the session stays usable after a cancelled prefill"
    );
}
