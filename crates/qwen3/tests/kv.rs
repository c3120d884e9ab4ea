//! KV-cache features against the plain single-session path on the reference fixtures: 16-bit
//! KV, paged attention, batched decode, prefix reuse and eviction, the batch runner and
//! prompt-cache files.
//!
//! Tolerances. Paths that store the same f32 (or the same 16-bit) KV and differ only in how the
//! work is split (blocks, batch rows, prefill chunks, reused prefixes) differ only in summation
//! order, so they get the golden tests' `LOGIT_ATOL` (1e-3, see `golden.rs`). 16-bit KV against
//! f32 KV is a real approximation; see [`kv16_tolerance`].

use std::ops::ControlFlow;
use std::path::PathBuf;

use nano_infer_qwen3::{
    generate, run_batch, AwqActivations, BatchEngine, BatchRequest, EngineOptions, GenerateOptions,
    Isa, KvDtype, LmHead, LoadOptions, Logits, Model, ModelError, PrefixIndex, PromptCacheError,
    Sampler, SamplingParams, StopReason,
};
use serde_json::Value;

mod common;
use common::{argmax, fixture_dir, max_abs_diff};

/// Summation-order differences only: the golden tests' bound.
const LOGIT_ATOL: f32 = 1e-3;

/// The reference prompts of a fixture, shortest first (lengths 1, 7, 33, 200).
fn prompts(name: &str) -> Vec<Vec<u32>> {
    let text = std::fs::read_to_string(fixture_dir(name).join("reference.json")).unwrap();
    let reference: Value = serde_json::from_str(&text).unwrap();
    reference["prompts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            p["input_ids"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_u64().unwrap() as u32)
                .collect()
        })
        .collect()
}

fn load(name: &str, kv_dtype: KvDtype) -> Model {
    Model::load(
        fixture_dir(name),
        &LoadOptions {
            kv_dtype,
            ..LoadOptions::default()
        },
    )
    .unwrap()
}

/// Prefill logits and the `n`-token greedy continuation of one plain session, with the logits
/// of every step.
fn session_greedy(model: &Model, prompt: &[u32], n: usize) -> (Vec<u32>, Vec<Vec<f32>>) {
    let mut s = model.session();
    let mut logits = vec![s.prefill(prompt).unwrap().to_vec()];
    let mut ids = vec![argmax(&logits[0])];
    while ids.len() < n {
        logits.push(s.decode(*ids.last().unwrap()).unwrap().to_vec());
        ids.push(argmax(logits.last().unwrap()));
    }
    (ids, logits)
}

fn tmp_path(tag: &str) -> PathBuf {
    std::env::temp_dir().join(format!("nano-infer-kv-{}-{tag}.bin", std::process::id()))
}

fn small_engine(block_size: usize, prefix_cache: bool) -> EngineOptions {
    EngineOptions {
        block_size,
        kv_budget_bytes: 64 << 20,
        max_batch: 4,
        prefix_cache,
        prefix_index: PrefixIndex::Radix,
        prefill_chunk: 512,
    }
}

/// Runs a prefix-cache test once per [`PrefixIndex`]: both designs must give the same hits,
/// evictions and tokens.
macro_rules! for_each_prefix_index {
    ($body:ident: $radix:ident, $hash:ident) => {
        #[test]
        fn $radix() {
            $body(PrefixIndex::Radix);
        }

        #[test]
        fn $hash() {
            $body(PrefixIndex::Hash);
        }
    };
}

/// Tolerance of bf16/f16 KV against f32 KV on the fixtures. Rounding K and V to bf16 is a
/// relative error of at most 2^-9 per element (f16: 2^-12; the fixtures' values are far from
/// its range limits). These random-weight models amplify it: a 1-token prompt, whose attention
/// output is exactly the rounded V row, already moves logits (magnitude up to ~60) by 0.36 with
/// bf16 and 0.05 with f16; longer contexts add perturbed scores. Measured over the fixtures
/// below, 4 prompts each, 32 greedy steps: at most 0.71 (bf16) and 0.104 (f16), 8x apart like
/// the mantissas. We allow 1.0 and 0.15: still 60x under the logit scale, so a wrong read (a
/// wrong block, head or position, garbage bits) fails, as those move logits by whole units to
/// tens.
fn kv16_tolerance(dtype: KvDtype) -> f32 {
    match dtype {
        KvDtype::Bf16 => 1.0,
        KvDtype::F16 => 0.15,
        KvDtype::F32 => LOGIT_ATOL,
    }
}

/// Difference between the largest and second-largest logit.
fn top2_gap(logits: &[f32]) -> f32 {
    let best = argmax(logits) as usize;
    let second = logits
        .iter()
        .enumerate()
        .filter(|&(i, _)| i != best)
        .map(|(_, &v)| v)
        .fold(f32::NEG_INFINITY, f32::max);
    logits[best] - second
}

/// 16-bit KV against f32 KV: logits within [`kv16_tolerance`] for as long as the greedy tokens
/// agree, and the tokens identical on every prompt except where f32's own top-2 margin is a
/// near tie that the measured error can flip (a flip needs margin <= 2 x error). f16 KV gives
/// identical greedy tokens everywhere, bf16 KV on every prompt of the `f16` and `f32` fixtures.
#[test]
fn kv16_logits_track_f32_kv_and_greedy_is_identical() {
    for fixture in ["bf16", "f16", "f32"] {
        let exact = load(fixture, KvDtype::F32);
        for dtype in [KvDtype::Bf16, KvDtype::F16] {
            let model = load(fixture, dtype);
            let mut worst = 0.0f32;
            let mut flips = 0;
            for prompt in prompts(fixture) {
                let (want_ids, want_logits) = session_greedy(&exact, &prompt, 32);
                let (ids, logits) = session_greedy(&model, &prompt, 32);
                // Step i's logits are comparable while the tokens fed so far agree.
                let agree = ids
                    .iter()
                    .zip(&want_ids)
                    .position(|(a, b)| a != b)
                    .unwrap_or(ids.len());
                for (a, b) in logits.iter().zip(&want_logits).take(agree + 1) {
                    worst = worst.max(max_abs_diff(a, b));
                }
                if agree < ids.len() {
                    flips += 1;
                    let gap = top2_gap(&want_logits[agree]);
                    let err = max_abs_diff(&logits[agree], &want_logits[agree]);
                    assert!(
                        gap <= 2.0 * err,
                        "{fixture} {dtype} KV, {} tokens: greedy step {agree} differs with a \
                         margin of {gap} but logits moved only {err}",
                        prompt.len()
                    );
                }
            }
            eprintln!("{fixture} {dtype} KV: max |logit - f32 KV logit| = {worst}, {flips} near-tie flips");
            assert!(
                worst <= kv16_tolerance(dtype),
                "{fixture} {dtype} KV: logits differ from f32 KV by {worst}"
            );
            if dtype == KvDtype::F16 || fixture != "bf16" {
                assert_eq!(flips, 0, "{fixture} {dtype} KV: greedy tokens differ");
            }
        }
    }
}

#[test]
fn paged_logits_equal_contiguous_logits() {
    for dtype in [KvDtype::F32, KvDtype::Bf16] {
        let model = load("bf16", dtype);
        let vocab = model.vocab_size();
        for prompt in prompts("bf16") {
            // The contiguous session runs the same 4-token chunks: a whole prompt of 16 or
            // more tokens takes the panel matmul, whose summation order differs from the
            // few-token kernel's, and with bf16 KV one rounding flip of a stored K or V moves
            // logits by ~1e-2. Same chunks, same kernels: only the cache layout differs.
            let mut session = model.session();
            let mut want = Vec::with_capacity(prompt.len() * vocab);
            for chunk in prompt.chunks(4) {
                want.extend_from_slice(session.forward(chunk, Logits::All).unwrap());
            }
            // Blocks of 3 and 4-token prefill chunks: block edges, chunk edges and partial
            // last blocks all fall inside the prompt.
            let mut engine = BatchEngine::new(
                &model,
                &EngineOptions {
                    prefill_chunk: 4,
                    ..small_engine(3, false)
                },
            )
            .unwrap();
            let seq = engine.add_sequence(&prompt).unwrap();
            let got = engine.prefill(seq, Logits::All).unwrap();
            assert_eq!(got.len(), prompt.len() * vocab);
            let diff = max_abs_diff(got, &want);
            assert!(
                diff <= LOGIT_ATOL,
                "{dtype} KV, {} tokens: paged logits differ by {diff}",
                prompt.len()
            );
        }
    }
}

#[test]
fn batched_decode_equals_single_sessions() {
    let model = load("bf16", KvDtype::F32);
    let vocab = model.vocab_size();
    let prompts = prompts("bf16");
    let steps = 24;
    let want: Vec<_> = prompts
        .iter()
        .map(|p| session_greedy(&model, p, steps))
        .collect();

    let mut engine = BatchEngine::new(&model, &small_engine(4, false)).unwrap();
    let mut seqs = Vec::new();
    let mut next = Vec::new();
    for (p, (_, want_logits)) in prompts.iter().zip(&want) {
        let seq = engine.add_sequence(p).unwrap();
        let logits = engine.prefill(seq, Logits::Last).unwrap();
        assert!(max_abs_diff(logits, &want_logits[0]) <= LOGIT_ATOL);
        seqs.push(seq);
        next.push(argmax(logits));
    }
    let mut got: Vec<Vec<u32>> = next.iter().map(|&t| vec![t]).collect();
    for step in 1..steps {
        let batch: Vec<_> = seqs.iter().copied().zip(next.iter().copied()).collect();
        let logits = engine.decode(&batch).unwrap().to_vec();
        assert_eq!(logits.len(), seqs.len() * vocab);
        for (i, row) in logits.chunks_exact(vocab).enumerate() {
            let diff = max_abs_diff(row, &want[i].1[step]);
            assert!(
                diff <= LOGIT_ATOL,
                "sequence {i}, step {step}: differs by {diff}"
            );
            next[i] = argmax(row);
            got[i].push(next[i]);
        }
    }
    for (i, (g, (w, _))) in got.iter().zip(&want).enumerate() {
        assert_eq!(g, w, "sequence {i}: batched greedy tokens");
    }

    // Misuse is an error, not a wrong answer.
    assert!(matches!(
        engine.decode(&[(seqs[0], 1), (seqs[0], 2)]),
        Err(ModelError::DuplicateSequence(_))
    ));
    let fresh = engine.add_sequence(&[1, 2, 3]).unwrap();
    assert!(matches!(
        engine.decode(&[(fresh, 1)]),
        Err(ModelError::NotPrefilled(_))
    ));
    for seq in seqs.into_iter().chain([fresh]) {
        engine.remove_sequence(seq).unwrap();
    }
    assert_eq!(engine.pool().n_used(), 0, "every block returned");
}

/// A server serves a request alone or beside others, and its answer should not depend on
/// which: a sequence's decode logits are the same bits whether the engine steps it alone or in
/// a batch of three, at every level this CPU has. (Each matmul then multiplies 1 or 3 tokens,
/// which the kernels tile differently; attention runs per sequence either way.) Bits, not a
/// tolerance: with random weights a last-bit difference flips a near-tie between greedy tokens
/// now and then.
///
/// Two known exceptions. AWQ with f32 activations (the default) is left out: its one-token
/// GEMVs sum `s·Σq·x − zs·Σx` per group, while its few-token kernels dequantize each weight
/// (`q·s − zs`) before the dot product (and AVX2's splits `k` into chunks sized by the token
/// count), so its outputs differ in the last bits from one token count to another
/// (`--awq-int8` is included: its integer sums are exact). And a step whose forward pass,
/// decodes and a prompt chunk together, multiplies 16 or more tokens runs the prefill (panel)
/// kernels, whose blocking orders the sums differently.
#[test]
fn decode_logits_are_the_same_bits_alone_and_in_a_batch() {
    let configs = [
        ("bf16", AwqActivations::F32, LmHead::Exact),
        ("bf16", AwqActivations::F32, LmHead::Q8),
        ("f16", AwqActivations::F32, LmHead::Exact),
        ("fp8_block", AwqActivations::F32, LmHead::Exact),
        ("fp8_tensor_e5m2", AwqActivations::F32, LmHead::Exact),
        ("awq", AwqActivations::Int8, LmHead::Exact),
    ];
    let steps = 6;
    for (name, awq_activations, lm_head) in configs {
        // The 1-, 7- and 33-token prompts: the 200-token one adds only prefill time (the tests
        // run under qemu for the NEON levels too).
        let prompts = &prompts(name)[..3];
        for isa in Isa::available() {
            let model = Model::load(
                fixture_dir(name),
                &LoadOptions {
                    isa: Some(isa),
                    awq_activations,
                    lm_head,
                    ..LoadOptions::default()
                },
            )
            .unwrap();
            let vocab = model.vocab_size();
            // Each sequence prefilled on its own, then `steps` greedy decode steps of `group`
            // sequences at a time; every step's logits.
            let run = |group: usize| -> Vec<Vec<Vec<f32>>> {
                let mut all = Vec::new();
                for chunk in prompts.chunks(group) {
                    let mut engine = BatchEngine::new(&model, &small_engine(4, false)).unwrap();
                    let mut seqs = Vec::new();
                    let mut logits = Vec::new();
                    for p in chunk {
                        let seq = engine.add_sequence(p).unwrap();
                        logits.push(vec![engine.prefill(seq, Logits::Last).unwrap().to_vec()]);
                        seqs.push(seq);
                    }
                    for _ in 1..steps {
                        let batch: Vec<_> = seqs
                            .iter()
                            .zip(&logits)
                            .map(|(&s, l)| (s, argmax(l.last().unwrap())))
                            .collect();
                        let step = engine.decode(&batch).unwrap().to_vec();
                        for (l, row) in logits.iter_mut().zip(step.chunks_exact(vocab)) {
                            l.push(row.to_vec());
                        }
                    }
                    all.extend(logits);
                }
                all
            };
            let (alone, together) = (run(1), run(prompts.len()));
            for (i, (a, t)) in alone.iter().zip(&together).enumerate() {
                for (step, (a, t)) in a.iter().zip(t).enumerate() {
                    let same = a.iter().zip(t).all(|(x, y)| x.to_bits() == y.to_bits());
                    assert!(
                        same,
                        "{name} ({awq_activations:?}, {lm_head:?} lm_head) at {isa}, sequence {i}, step {step}: \
                         alone and batched logits differ by up to {}",
                        max_abs_diff(a, t)
                    );
                }
            }
        }
    }
}

for_each_prefix_index!(prefix_reuse_skips_prefill_and_matches_plain_prefill:
    prefix_reuse_with_radix_index, prefix_reuse_with_hash_index);

fn prefix_reuse_skips_prefill_and_matches_plain_prefill(index: PrefixIndex) {
    let model = load("bf16", KvDtype::Bf16);
    let long = prompts("bf16")[3].clone(); // 200 tokens
    let options = EngineOptions {
        prefix_index: index,
        ..small_engine(8, true)
    };
    let mut engine = BatchEngine::new(&model, &options).unwrap();

    // Cold: nothing cached.
    let a = &long[..50];
    let seq = engine.add_sequence(a).unwrap();
    assert_eq!(engine.cached_tokens(seq).unwrap(), 0);
    engine.prefill(seq, Logits::Last).unwrap();
    engine.remove_sequence(seq).unwrap();

    // Shares 37 tokens with `a`: the 4 whole blocks (32 tokens) are reused.
    let mut b = long[..37].to_vec();
    b.extend_from_slice(&long[100..120]);
    let seq = engine.add_sequence(&b).unwrap();
    assert_eq!(engine.cached_tokens(seq).unwrap(), 32);
    let got = engine.prefill(seq, Logits::All).unwrap().to_vec();
    assert_eq!(got.len(), (b.len() - 32) * model.vocab_size());
    let want = model.session().forward(&b, Logits::All).unwrap().to_vec();
    let diff = max_abs_diff(&got, &want[32 * model.vocab_size()..]);
    assert!(diff <= LOGIT_ATOL, "reused-prefix logits differ by {diff}");
    engine.remove_sequence(seq).unwrap();

    // The same prompt again: all whole blocks of its first len - 1 tokens (48 of 50).
    let seq = engine.add_sequence(a).unwrap();
    assert_eq!(engine.cached_tokens(seq).unwrap(), 48);
    let got = engine.prefill(seq, Logits::Last).unwrap().to_vec();
    let want = model.session().prefill(a).unwrap().to_vec();
    assert!(max_abs_diff(&got, &want) <= LOGIT_ATOL);
    engine.remove_sequence(seq).unwrap();

    let stats = engine.stats();
    assert_eq!(stats.prompt_tokens, (50 + 57 + 50) as u64);
    assert_eq!(stats.cached_tokens, 32 + 48);
    // Cached: a's 6 blocks, b's 3 blocks after the shared 4 (57 tokens: 7 whole blocks).
    assert_eq!(stats.tree_tokens, (6 + 3) * 8);
    assert_eq!(stats.blocks_used, 9, "only the cache holds blocks now");
    assert_eq!(engine.clear_prefix_cache().unwrap(), 72);
    assert_eq!(engine.pool().n_used(), 0);
}

for_each_prefix_index!(eviction_under_a_small_pool_frees_blocks_and_stays_correct:
    eviction_with_radix_index, eviction_with_hash_index);

fn eviction_under_a_small_pool_frees_blocks_and_stays_correct(index: PrefixIndex) {
    let model = load("bf16", KvDtype::F32);
    let long = prompts("bf16")[3].clone();
    let c = model.config();
    let bs = 4;
    let block_bytes = 2 * c.num_hidden_layers * c.n_kv_heads() * bs * c.head_dim() * 4;
    // 12 blocks: one request of <= 30 + 6 tokens needs at most 9.
    let options = EngineOptions {
        kv_budget_bytes: 12 * block_bytes,
        max_batch: 1,
        prefix_index: index,
        ..small_engine(bs, true)
    };
    let mut engine = BatchEngine::new(&model, &options).unwrap();
    assert_eq!(engine.stats().blocks_total, 12);
    // Eight distinct prompts, then the first again (evicted by then: recomputed, still right).
    let mut requests: Vec<BatchRequest> = (0..8)
        .map(|i| BatchRequest {
            prompt: long[i * 20..i * 20 + 22 + i].to_vec(),
            sampling: SamplingParams::default(),
            max_new_tokens: 6,
            stop_ids: Vec::new(),
            ignore_eos: false,
        })
        .collect();
    requests.push(requests[0].clone());
    let outputs = engine
        .run(&requests, |_| ControlFlow::Continue(()))
        .unwrap();
    for (r, out) in requests.iter().zip(&outputs) {
        let (want, _) = session_greedy(&model, &r.prompt, 6);
        assert_eq!(out.ids, want);
        assert_eq!(out.stop_reason, StopReason::Length);
    }
    let stats = engine.stats();
    assert!(
        stats.evicted_tokens > 0,
        "the pool is too small to keep all"
    );
    assert!(stats.blocks_used <= stats.blocks_total);
    assert_eq!(
        outputs[8].cached_tokens, 0,
        "request 0's prefix was evicted"
    );
    // What the cache still holds is exactly what it owns: clearing it frees the whole pool.
    engine.clear_prefix_cache().unwrap();
    assert_eq!(engine.pool().n_used(), 0);

    // A request that cannot fit even alone is refused, not half-run.
    let too_big = BatchRequest {
        max_new_tokens: 100,
        ..requests[0].clone()
    };
    assert!(matches!(
        engine.run(&[too_big], |_| ControlFlow::Continue(())),
        Err(ModelError::Kv(_))
    ));
    assert_eq!(engine.n_sequences(), 0);
    assert_eq!(engine.pool().n_used(), 0);
}

for_each_prefix_index!(run_batch_matches_generate_and_reports_cache_hits:
    run_batch_with_radix_index, run_batch_with_hash_index);

fn run_batch_matches_generate_and_reports_cache_hits(index: PrefixIndex) {
    let model = load("bf16", KvDtype::Bf16);
    let long = prompts("bf16")[3].clone();
    let system = &long[..40];
    let greedy = SamplingParams::default();
    let sampled = SamplingParams {
        temperature: 0.8,
        top_k: 20,
        seed: 7,
        ..SamplingParams::default()
    };
    // A stop id that greedy decoding of request 0 reaches after a few tokens.
    let mut p0 = system.to_vec();
    p0.extend_from_slice(&long[150..155]);
    let (g0, _) = session_greedy(&model, &p0, 12);
    let stop = g0[5];
    let requests: Vec<BatchRequest> = (0..5)
        .map(|i| {
            let mut prompt = system.to_vec();
            prompt.extend_from_slice(&long[150 + i * 5..155 + i * 5]);
            BatchRequest {
                prompt,
                sampling: if i % 2 == 0 {
                    greedy.clone()
                } else {
                    sampled.clone()
                },
                max_new_tokens: 12,
                stop_ids: if i == 0 { vec![stop] } else { Vec::new() },
                ignore_eos: false,
            }
        })
        .collect();
    let options = EngineOptions {
        max_batch: 3,
        prefix_index: index,
        ..small_engine(8, true)
    };
    let mut streamed = vec![Vec::new(); requests.len()];
    let outputs = run_batch(&model, &requests, &options, |t| {
        assert_eq!(
            t.logits.len(),
            model.vocab_size(),
            "one logits row per token"
        );
        streamed[t.request].push(t.id);
        ControlFlow::Continue(())
    })
    .unwrap();

    for (i, (r, out)) in requests.iter().zip(&outputs).enumerate() {
        let mut session = model.session();
        let mut sampler = Sampler::new(r.sampling.clone());
        let want = generate(
            &mut session,
            &r.prompt,
            &mut sampler,
            &GenerateOptions {
                max_new_tokens: r.max_new_tokens,
                stop_ids: r.stop_ids.clone(),
                ignore_eos: false,
                ..GenerateOptions::default()
            },
            |_| ControlFlow::Continue(()),
        )
        .unwrap();
        assert_eq!(out.ids, want.ids, "request {i}: tokens");
        assert_eq!(out.stop_reason, want.stop_reason, "request {i}");
        assert_eq!(out.ids, streamed[i], "request {i}: streamed tokens");
        assert_eq!(out.prompt_tokens, r.prompt.len());
        // The first prefill is cold; every later one reuses the system prompt's 5 blocks.
        let hit = if i == 0 { 0 } else { 40 };
        assert_eq!(out.cached_tokens, hit, "request {i}: cached tokens");
    }
    assert_eq!(outputs[0].stop_reason, StopReason::Stop);
    assert_eq!(*outputs[0].ids.last().unwrap(), stop);
    assert_eq!(outputs[1].stop_reason, StopReason::Length);

    // Cancelling one request leaves the others running.
    let outputs = run_batch(&model, &requests[1..3], &options, |t| {
        if t.request == 0 {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    })
    .unwrap();
    assert_eq!(outputs[0].stop_reason, StopReason::Cancelled);
    assert_eq!(outputs[0].ids.len(), 1);
    assert_eq!(outputs[1].ids.len(), 12);
}

#[test]
fn prompt_cache_round_trip_reuses_the_longest_prefix() {
    for dtype in [KvDtype::F32, KvDtype::Bf16] {
        let model = load("bf16", dtype);
        let long = prompts("bf16")[3].clone();
        let path = tmp_path(&format!("round-trip-{dtype}"));
        let mut s = model.session();
        s.prefill(&long[..60]).unwrap();
        s.save_prompt_cache(&path).unwrap();

        // A prompt extending the saved one reuses all 60 tokens; one diverging at 45, 45.
        for (prompt, reused) in [
            (&long[..90], 60),
            (&[&long[..45], &long[120..130]].concat()[..], 45),
        ] {
            let mut loaded = model.session();
            loaded.prefill(&[1, 2, 3]).unwrap(); // replaced by the load
            assert_eq!(loaded.load_prompt_cache(&path, prompt).unwrap(), reused);
            assert_eq!(loaded.tokens(), &prompt[..reused]);
            assert_eq!(loaded.position(), reused);
            let got = loaded.prefill(&prompt[reused..]).unwrap().to_vec();
            // The reference runs the same two prefill calls, so both sides use the same
            // matmul kernels (see `paged_logits_equal_contiguous_logits`): only the file
            // round trip differs.
            let mut fresh = model.session();
            fresh.prefill(&prompt[..reused]).unwrap();
            let want = fresh.prefill(&prompt[reused..]).unwrap().to_vec();
            let diff = max_abs_diff(&got, &want);
            assert!(
                diff <= LOGIT_ATOL,
                "{dtype}: loaded-prefix logits differ by {diff}"
            );
        }
        // Through generate: the whole prompt is in the file, so only its last token re-runs.
        let mut loaded = model.session();
        loaded.load_prompt_cache(&path, &long[..60]).unwrap();
        let g = generate(
            &mut loaded,
            &long[..60],
            &mut Sampler::new(SamplingParams::default()),
            &GenerateOptions {
                max_new_tokens: 8,
                stop_ids: Vec::new(),
                ignore_eos: false,
                ..GenerateOptions::default()
            },
            |_| ControlFlow::Continue(()),
        )
        .unwrap();
        assert_eq!(g.prompt_tokens, 1);
        assert_eq!(g.ids, session_greedy(&model, &long[..60], 8).0);
        std::fs::remove_file(&path).unwrap();
    }
}

#[test]
fn prompt_cache_refuses_other_models_kv_types_and_damage() {
    let model = load("bf16", KvDtype::Bf16);
    let prompt = prompts("bf16")[2].clone();
    let path = tmp_path("refusal");
    let mut s = model.session();
    s.prefill(&prompt).unwrap();
    s.save_prompt_cache(&path).unwrap();

    let other = load("f16", KvDtype::Bf16);
    let err = other
        .session()
        .load_prompt_cache(&path, &prompt)
        .unwrap_err();
    assert!(
        matches!(err, PromptCacheError::ModelMismatch { .. }),
        "{err}"
    );
    assert!(err.to_string().contains("different model"), "{err}");

    let f32_kv = load("bf16", KvDtype::F32);
    let mut session = f32_kv.session();
    session.prefill(&[5, 6]).unwrap();
    let err = session.load_prompt_cache(&path, &prompt).unwrap_err();
    assert!(
        matches!(
            err,
            PromptCacheError::KvTypeMismatch {
                file: KvDtype::Bf16,
                session: KvDtype::F32,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("a bf16 KV cache"), "{err}");
    assert_eq!(session.tokens(), &[5, 6], "a refused load changes nothing");

    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() - 10]).unwrap();
    let err = model
        .session()
        .load_prompt_cache(&path, &prompt)
        .unwrap_err();
    assert!(matches!(err, PromptCacheError::Corrupt { .. }), "{err}");
    std::fs::write(&path, b"GGUF and other things entirely").unwrap();
    let err = model
        .session()
        .load_prompt_cache(&path, &prompt)
        .unwrap_err();
    assert!(
        matches!(err, PromptCacheError::NotAPromptCache { .. }),
        "{err}"
    );
    std::fs::remove_file(&path).unwrap();
    let err = model
        .session()
        .load_prompt_cache(&path, &prompt)
        .unwrap_err();
    assert!(matches!(err, PromptCacheError::Io { .. }), "{err}");
}
