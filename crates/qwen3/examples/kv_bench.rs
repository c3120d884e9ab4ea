//! KV-cache benchmark: time to first token for a long shared system prompt plus a short
//! question, cold (empty prefix cache) and warm (the system prompt cached), and decode
//! throughput with 1, 4 and 8 sequences decoded together in one forward pass.
//!
//! ```text
//! cargo run --release -p nano-infer-qwen3 --example kv_bench -- /work/models/synth-4b-bf16 \
//!     [--kv-type bf16] [--prefix-index radix|hash] [--system 1000] [--question 24] [--steps 8] [--batches 1,4,8]
//! ```
//!
//! Prompts are deterministic pseudo-random token ids (the synthetic checkpoints have random
//! weights, so text would mean nothing); only their lengths matter for timing. Greedy decoding.

use std::time::Instant;

use nano_infer_qwen3::{
    BatchEngine, EngineOptions, KvDtype, LoadOptions, Logits, Model, PrefixIndex, SeqId,
};

struct Args {
    dir: String,
    kv_dtype: KvDtype,
    prefix_index: PrefixIndex,
    system: usize,
    question: usize,
    steps: usize,
    batches: Vec<usize>,
}

fn parse() -> Result<Args, Box<dyn std::error::Error>> {
    let usage = "usage: kv_bench MODEL_DIR [--kv-type f32|bf16|f16] [--prefix-index radix|hash] \
                 [--system N] [--question N] [--steps N] [--batches 1,4,8]";
    let mut it = std::env::args().skip(1);
    let mut a = Args {
        dir: String::new(),
        kv_dtype: KvDtype::Bf16,
        prefix_index: PrefixIndex::Radix,
        system: 1000,
        question: 24,
        steps: 8,
        batches: vec![1, 4, 8],
    };
    while let Some(arg) = it.next() {
        let mut value = || it.next().ok_or(usage);
        match arg.as_str() {
            "--kv-type" => a.kv_dtype = value()?.parse()?,
            "--prefix-index" => a.prefix_index = value()?.parse()?,
            "--system" => a.system = value()?.parse()?,
            "--question" => a.question = value()?.parse()?,
            "--steps" => a.steps = value()?.parse()?,
            "--batches" => {
                a.batches = value()?
                    .split(',')
                    .map(str::parse)
                    .collect::<Result<_, _>>()?
            }
            _ if a.dir.is_empty() && !arg.starts_with('-') => a.dir = arg,
            _ => return Err(usage.into()),
        }
    }
    if a.dir.is_empty() || a.question == 0 || a.steps == 0 {
        return Err(usage.into());
    }
    Ok(a)
}

/// `n` deterministic token ids below `vocab` (xorshift, seeded per prompt).
fn ids(n: usize, vocab: usize, seed: u64) -> Vec<u32> {
    let mut s = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s % vocab as u64) as u32
        })
        .collect()
}

fn argmax(logits: &[f32]) -> u32 {
    logits
        .iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .map_or(0, |(i, _)| i as u32)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let a = parse()?;
    let max_batch = a.batches.iter().copied().max().unwrap_or(1);
    let ctx = a.system + a.question + a.steps + 16;
    let t = Instant::now();
    let model = Model::load(
        &a.dir,
        &LoadOptions {
            kv_dtype: a.kv_dtype,
            ctx_size: Some(ctx),
            ..LoadOptions::default()
        },
    )?;
    let c = model.config();
    // Real vocabularies end in special tokens; stay in the first 150k ids.
    let vocab = model.vocab_size().min(150_000);
    eprintln!(
        "model {} ({} layers, hidden {}, {:.2} GB of weights per token), KV {}, ISA {}, loaded in {:.1} s",
        a.dir,
        c.num_hidden_layers,
        c.hidden_size,
        model.bytes_per_token() as f64 / 1e9,
        a.kv_dtype,
        model.kernels().isa(),
        t.elapsed().as_secs_f64()
    );
    let options = EngineOptions {
        kv_budget_bytes: 4 << 30,
        max_batch,
        prefix_index: a.prefix_index,
        ..EngineOptions::default()
    };
    let mut engine = BatchEngine::new(&model, &options)?;
    let system = ids(a.system, vocab, 1);
    let prompt = |q: u64| {
        let mut p = system.clone();
        p.extend(ids(a.question, vocab, 100 + q));
        p
    };

    // 1. Time to first token, cold then warm.
    let ttft = |engine: &mut BatchEngine<'_>,
                q: u64|
     -> Result<(f64, usize, usize, SeqId), Box<dyn std::error::Error>> {
        let p = prompt(q);
        let t = Instant::now();
        let seq = engine.add_sequence(&p)?;
        let first = argmax(engine.prefill(seq, Logits::Last)?);
        let secs = t.elapsed().as_secs_f64();
        std::hint::black_box(first);
        Ok((secs, engine.cached_tokens(seq)?, p.len(), seq))
    };
    let (cold, cold_hit, n, seq) = ttft(&mut engine, 0)?;
    engine.remove_sequence(seq)?;
    let (warm, warm_hit, _, seq) = ttft(&mut engine, 1)?;
    engine.remove_sequence(seq)?;
    println!(
        "TTFT, {n}-token prompt ({} system + {} question): cold {cold:.2} s ({cold_hit} cached), \
         warm {warm:.2} s ({warm_hit} cached = {:.1}% of prefill skipped), speed-up {:.1}x",
        a.system,
        a.question,
        100.0 * warm_hit as f64 / n as f64,
        cold / warm
    );

    // 2. Decode throughput: B sequences (warm prompts), `steps` batched greedy steps.
    for &b in &a.batches {
        let mut seqs = Vec::new();
        let mut next = Vec::new();
        for q in 0..b {
            let seq = engine.add_sequence(&prompt(10 + q as u64))?;
            next.push(argmax(engine.prefill(seq, Logits::Last)?));
            seqs.push(seq);
        }
        let vocab = model.vocab_size();
        let t = Instant::now();
        for _ in 0..a.steps {
            let batch: Vec<(SeqId, u32)> = seqs.iter().copied().zip(next.iter().copied()).collect();
            let logits = engine.decode(&batch)?;
            for (i, row) in logits.chunks_exact(vocab).enumerate() {
                next[i] = argmax(row);
            }
        }
        let secs = t.elapsed().as_secs_f64();
        let step = secs / a.steps as f64;
        println!(
            "decode, {b} sequence(s) together: {:.2} tok/s total, {:.3} s per step ({:.1} GB/s of weights)",
            (b * a.steps) as f64 / secs,
            step,
            model.bytes_per_token() as f64 / step / 1e9
        );
        for seq in seqs {
            engine.remove_sequence(seq)?;
        }
    }
    let s = engine.stats();
    println!(
        "prefix cache: {} of {} prompt tokens reused, {} tokens cached, {} of {} blocks in use",
        s.cached_tokens, s.prompt_tokens, s.tree_tokens, s.blocks_used, s.blocks_total
    );
    Ok(())
}
