//! Criterion benches of the facade's forward pass: one decode step and a 32-token prefill on
//! the committed fixtures (`testdata/fixtures/{bf16,awq,fp8_block}`: 4 layers, hidden 256,
//! vocabulary 1024), one format each.
//!
//! These are small enough to sit in the CPU's caches, so they track kernel and per-token
//! overhead (dispatch, attention, norms, allocation) from commit to commit in seconds; they
//! say nothing about memory bandwidth. Whole-model speed on Qwen3-4B-sized checkpoints is
//! `cargo xtask bench`, recorded per machine under `bench/`.
//!
//! Decode reports `Throughput::Bytes(bytes_per_token)`, the weight bytes one step reads,
//! because decode is bandwidth-bound on real models; prefill reports tokens. Threads: the
//! rayon global pool (all cores unless `RAYON_NUM_THREADS` says otherwise).

use std::hint::black_box;
use std::path::Path;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use nano_infer::qwen3::{LoadOptions, Model};

const FIXTURES: [&str; 3] = ["bf16", "awq", "fp8_block"];
/// Prompt length of the prefill bench, and the position every decode step runs at.
const PROMPT: usize = 32;

fn load(name: &str) -> Model {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("testdata/fixtures")
        .join(name);
    let options = LoadOptions {
        ctx_size: Some(4 * PROMPT),
        ..LoadOptions::default()
    };
    Model::load(&dir, &options).unwrap_or_else(|e| panic!("cannot load {}: {e}", dir.display()))
}

/// A fixed, spread-out prompt: the same tokens in every run.
fn prompt(vocab: usize) -> Vec<u32> {
    (0..PROMPT)
        .map(|i| u32::try_from((i * 7919 + 13) % vocab).expect("vocabulary fits in u32"))
        .collect()
}

/// One decode step at position `PROMPT`: each iteration truncates the KV cache back, so
/// every step attends over the same 32 positions.
fn decode(c: &mut Criterion) {
    let mut group = c.benchmark_group("decode");
    for name in FIXTURES {
        let model = load(name);
        let ids = prompt(model.vocab_size());
        let mut session = model.session();
        session.prefill(&ids).expect("prefill");
        group.throughput(Throughput::Bytes(model.bytes_per_token() as u64));
        group.bench_function(BenchmarkId::from_parameter(name), |b| {
            b.iter(|| {
                session.truncate(PROMPT);
                black_box(session.decode(black_box(ids[0])).expect("decode")[0])
            })
        });
    }
    group.finish();
}

/// A 32-token prompt into an emptied session.
fn prefill(c: &mut Criterion) {
    let mut group = c.benchmark_group("prefill_32");
    for name in FIXTURES {
        let model = load(name);
        let ids = prompt(model.vocab_size());
        let mut session = model.session();
        group.throughput(Throughput::Elements(PROMPT as u64));
        group.bench_function(BenchmarkId::from_parameter(name), |b| {
            b.iter(|| {
                session.reset();
                black_box(session.prefill(black_box(&ids)).expect("prefill")[0])
            })
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    // Sub-millisecond iterations: 30 samples over 3 s each are stable and keep the run short.
    config = Criterion::default().sample_size(30).measurement_time(Duration::from_secs(3));
    targets = decode, prefill
}
criterion_main!(benches);
