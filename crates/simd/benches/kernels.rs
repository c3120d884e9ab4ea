//! Kernel throughput at Qwen3-4B shapes, for every level the host has.
//!
//! Decode is bandwidth-bound, so the GEMVs (`n_tok = 1`) report `Throughput::Bytes` of weights
//! streamed: compare with the machine's single-core memory bandwidth. The weights (25–50 MB) do
//! not fit in cache, so these are DRAM numbers. Prefill GEMMs (`n_tok = 128`) report elements =
//! flops (2 per multiply-add): the few-token kernels at 128 tokens, and `bf16_panel`, the path
//! prefill actually takes (`simd::panel`). `gemv_in_cache` runs every decode kernel on a weight
//! matrix that fits in L2 (`simd::margin`): bytes per second per core that the kernel can
//! digest, to compare with one core's read bandwidth (`cargo xtask bench` prints the ratio).
//! Run: `cargo bench -p nano-infer-simd --bench kernels`.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use nano_infer_simd::margin::{DecodeKernel, InCacheGemv, IN_CACHE_K};
use nano_infer_simd::q8::{pack_q4x16, pack_q8x16, tile_params};
use nano_infer_simd::{bf16, f16, Fp8Format, Isa, Kernels, PanelActs, Q8Acts, PANEL_K_BLOCK};
use std::hint::black_box;

/// Deterministic pseudo-random values in [-1, 1): the kernels' speed does not depend on them.
fn data(n: usize, seed: u32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(2_654_435_761) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            (s >> 8) as f32 / (1u32 << 23) as f32 - 1.0
        })
        .collect()
}

fn levels() -> Vec<Kernels> {
    Isa::available()
        .into_iter()
        .filter_map(Kernels::for_isa)
        .collect()
}

/// Weights of one `(rows, k)` projection in every format.
struct Weights {
    rows: usize,
    k: usize,
    bf16: Vec<bf16>,
    f16: Vec<f16>,
    fp8: Vec<u8>,
    fp8_scales: Vec<f32>,
    q4: Vec<u8>,
    q4_scales: Vec<f32>,
    q4_zeros: Vec<f32>,
    /// The same codes in the interleaved q4x16 layout, parameters `(tiles, groups, 16)`.
    q4x16: Vec<u8>,
    q4x16_scales: Vec<f32>,
    q4x16_zeros: Vec<f32>,
    /// Int8 codes in the q8x16 layout (the `--lm-head q8` format), one scale per row.
    q8x16: Vec<i8>,
    q8x16_scales: Vec<f32>,
}

const FP8_BLOCK: usize = 128;
const Q4_GROUP: usize = 128;

impl Weights {
    fn new(rows: usize, k: usize) -> Self {
        let w = data(rows * k, 1);
        let fp8 = w.iter().map(|v| ((v * 127.0) as i8 as u8) & 0x77).collect();
        let q4 = w[..rows * k / 2]
            .iter()
            .map(|v| (v * 255.0) as u8)
            .collect();
        let codes: Vec<u8> = w.iter().map(|v| ((v + 1.0) * 7.9) as u8).collect();
        let groups = k / Q4_GROUP;
        let i8codes: Vec<i8> = w.iter().map(|v| (v * 127.0) as i8).collect();
        Weights {
            rows,
            k,
            q4x16: pack_q4x16(&codes, rows, k),
            q4x16_scales: tile_params(&vec![0.01; rows * groups], rows, groups),
            q4x16_zeros: tile_params(&vec![0.08; rows * groups], rows, groups),
            q8x16: pack_q8x16(&i8codes, rows, k),
            q8x16_scales: vec![0.01; rows.div_ceil(16) * 16],
            bf16: w.iter().map(|&v| bf16::from_f32(v)).collect(),
            f16: w.iter().map(|&v| f16::from_f32(v)).collect(),
            fp8,
            fp8_scales: vec![0.01; rows * k.div_ceil(FP8_BLOCK)],
            q4,
            q4_scales: vec![0.01; rows * k / Q4_GROUP],
            q4_zeros: vec![0.08; rows * k / Q4_GROUP],
        }
    }

    /// Benchmarks every format on every level with `n_tok` tokens.
    fn bench(&self, c: &mut Criterion, group: &str, n_tok: usize) {
        let (rows, k) = (self.rows, self.k);
        let x = data(n_tok * k, 2);
        let mut out = vec![0.0f32; rows * n_tok];
        let mut g = c.benchmark_group(format!("{group}/{k}->{rows}/n_tok={n_tok}"));
        g.sample_size(10);
        let mut xa = Q8Acts::new();
        // Bytes per weight of the codes (parameters excluded, as before).
        let formats: [(&str, f64); 7] = [
            ("bf16", 2.0),
            ("f16", 2.0),
            ("fp8_e4m3", 1.0),
            ("fp8_e5m2", 1.0),
            ("q4_g128", 0.5),
            ("q4x16_q8_g128", 0.5),
            ("q8x16_q8", 1.0),
        ];
        for (name, bytes_per_weight) in formats {
            if n_tok == 1 {
                g.throughput(Throughput::Bytes(
                    ((rows * k) as f64 * bytes_per_weight) as u64,
                ));
            } else {
                g.throughput(Throughput::Elements(2 * (rows * k * n_tok) as u64));
            }
            for kern in levels() {
                if n_tok > 1 && kern.isa() == Isa::Scalar {
                    continue; // seconds per call; the GEMVs already show the scalar baseline
                }
                g.bench_function(BenchmarkId::new(name, kern.isa()), |b| {
                    b.iter(|| match name {
                        "bf16" => kern.gemm_bf16(black_box(&self.bf16), &x, k, &mut out),
                        "f16" => kern.gemm_f16(black_box(&self.f16), &x, k, &mut out),
                        "fp8_e4m3" => kern.gemm_fp8(
                            Fp8Format::E4M3,
                            black_box(&self.fp8),
                            &self.fp8_scales,
                            FP8_BLOCK,
                            &x,
                            k,
                            &mut out,
                        ),
                        "fp8_e5m2" => kern.gemm_fp8(
                            Fp8Format::E5M2,
                            black_box(&self.fp8),
                            &self.fp8_scales,
                            FP8_BLOCK,
                            &x,
                            k,
                            &mut out,
                        ),
                        // The activation quantization runs once per matmul: it is timed too.
                        "q4x16_q8_g128" => {
                            kern.quantize_q8(&x, k, 32, Q4_GROUP, &mut xa);
                            kern.gemm_q4x16_q8(
                                black_box(&self.q4x16),
                                &self.q4x16_scales,
                                &self.q4x16_zeros,
                                Q4_GROUP,
                                &xa,
                                &mut out,
                            )
                        }
                        "q8x16_q8" => {
                            kern.quantize_q8(&x, k, 32, 32, &mut xa);
                            kern.gemm_q8x16_q8(
                                black_box(&self.q8x16),
                                &self.q8x16_scales,
                                &xa,
                                &mut out,
                            )
                        }
                        _ => kern.gemm_q4(
                            black_box(&self.q4),
                            &self.q4_scales,
                            &self.q4_zeros,
                            Q4_GROUP,
                            &x,
                            k,
                            &mut out,
                        ),
                    })
                });
            }
        }
        g.finish();
    }
}

fn gemv(c: &mut Criterion) {
    // Qwen3-4B: hidden 2560, intermediate 9728 (gate/up: 2560 -> 9728, down: 9728 -> 2560).
    Weights::new(9728, 2560).bench(c, "gemv", 1);
    Weights::new(2560, 9728).bench(c, "gemv", 1);
}

/// Each decode kernel in cache, single thread: `Throughput::Bytes` of codes and scales read.
fn gemv_in_cache(c: &mut Criterion) {
    let mut g = c.benchmark_group(format!("gemv_in_cache/k={IN_CACHE_K}"));
    g.sample_size(20);
    for kernel in DecodeKernel::ALL {
        for kern in levels() {
            let mut gemv = InCacheGemv::new(kernel, kern);
            g.throughput(Throughput::Bytes(gemv.weight_bytes()));
            g.bench_function(BenchmarkId::new(kernel.name(), kern.isa()), |b| {
                b.iter(|| black_box(gemv.run()))
            });
        }
    }
    g.finish();
}

fn gemm(c: &mut Criterion) {
    // A 1024-row slice of gate/up (what one of several threads gets) at 128 prefill tokens.
    Weights::new(1024, 2560).bench(c, "gemm", 128);
}

/// The prefill path as `quant` drives it, for the same slice and prompt as [`gemm`]: pack the
/// activations, then per 96-row task and 128-input block widen the bf16 weights into an f32
/// block and run `gemm_panel` (everything timed).
fn panel(c: &mut Criterion) {
    let (rows, k, n_tok, task) = (1024, 2560, 128, 96);
    let w: Vec<bf16> = data(rows * k, 1).into_iter().map(bf16::from_f32).collect();
    let x = data(n_tok * k, 2);
    let mut out = vec![0.0f32; rows * n_tok];
    let mut acts = PanelActs::new();
    let mut block = vec![0.0f32; task * PANEL_K_BLOCK];
    let mut g = c.benchmark_group(format!("gemm/{k}->{rows}/n_tok={n_tok}"));
    g.sample_size(10);
    g.throughput(Throughput::Elements(2 * (rows * k * n_tok) as u64));
    for kern in levels().into_iter().filter(|k| k.isa() != Isa::Scalar) {
        g.bench_function(BenchmarkId::new("bf16_panel", kern.isa()), |b| {
            b.iter(|| {
                acts.pack(black_box(&x), k);
                for (t, out) in out.chunks_mut(task * n_tok).enumerate() {
                    let r0 = t * task;
                    let n = out.len() / n_tok;
                    for k0 in (0..k).step_by(PANEL_K_BLOCK) {
                        let kc = PANEL_K_BLOCK.min(k - k0);
                        for (i, dst) in block.chunks_exact_mut(PANEL_K_BLOCK).take(n).enumerate() {
                            let at = (r0 + i) * k + k0;
                            kern.widen_bf16(&w[at..at + kc], &mut dst[..kc]);
                        }
                        kern.gemm_panel(&block[..n * PANEL_K_BLOCK], &acts, k0, kc, out, k0 > 0);
                    }
                }
            })
        });
    }
    g.finish();
}

fn small(c: &mut Criterion) {
    let n = 9728;
    let (a, b) = (data(n, 3), data(n, 4));
    let mut g = c.benchmark_group("vec/9728");
    g.throughput(Throughput::Elements(n as u64));
    for kern in levels() {
        g.bench_function(BenchmarkId::new("silu_mul", kern.isa()), |bch| {
            let mut gate = a.clone();
            bch.iter(|| {
                gate.copy_from_slice(&a);
                kern.silu_mul(&mut gate, &b)
            })
        });
        g.bench_function(BenchmarkId::new("softmax", kern.isa()), |bch| {
            let mut v = a.clone();
            bch.iter(|| {
                v.copy_from_slice(&a);
                kern.softmax(&mut v)
            })
        });
    }
    g.finish();
}

/// The server's decode step formats, AWQ q4 (group 128, f32 activations), AWQ with int8
/// activations (`--awq-int8`), FP8 E4M3 (128-blocks) and BF16 (also the tied LM head of AWQ
/// and FP8 checkpoints), at 1,
/// 4 and 8 tokens on the same matrix: what batching a few sequences costs the server (`n_tok` =
/// running sequences, one token each). Reports weight bytes per call, so the ratio of two
/// `n_tok`'s throughputs is the inverse of their times: `time(8) / time(1)` = 8 means batching
/// buys nothing, 1 that the extra tokens come free. Two shapes: Qwen3-4B's gate/up (from DRAM)
/// and a 256-row slice of it that stays in L2 (compute).
fn few_tokens(c: &mut Criterion) {
    for rows in [9728, 256] {
        let k = 2560;
        let w = Weights::new(rows, k);
        let mut g = c.benchmark_group(format!("few_tokens/{k}->{rows}"));
        g.sample_size(20);
        let mut xa = Q8Acts::new();
        let formats = [
            ("q4_g128", 1),
            ("q4x16_q8_g128", 1),
            ("fp8_e4m3", 2),
            ("bf16", 4),
        ];
        for (format, half_bytes_per_weight) in formats {
            g.throughput(Throughput::Bytes(
                (rows * k * half_bytes_per_weight / 2) as u64,
            ));
            for kern in levels().into_iter().filter(|k| k.isa() != Isa::Scalar) {
                for n_tok in [1, 4, 8] {
                    let x = data(n_tok * k, 2);
                    let mut out = vec![0.0f32; rows * n_tok];
                    let id = BenchmarkId::new(
                        format!("{format}/{}", kern.isa()),
                        format!("n_tok={n_tok}"),
                    );
                    g.bench_function(id, |b| {
                        b.iter(|| match format {
                            "q4_g128" => kern.gemm_q4(
                                black_box(&w.q4),
                                &w.q4_scales,
                                &w.q4_zeros,
                                Q4_GROUP,
                                &x,
                                k,
                                &mut out,
                            ),
                            "q4x16_q8_g128" => {
                                kern.quantize_q8(&x, k, 32, Q4_GROUP, &mut xa);
                                kern.gemm_q4x16_q8(
                                    black_box(&w.q4x16),
                                    &w.q4x16_scales,
                                    &w.q4x16_zeros,
                                    Q4_GROUP,
                                    &xa,
                                    &mut out,
                                )
                            }
                            "fp8_e4m3" => kern.gemm_fp8(
                                Fp8Format::E4M3,
                                black_box(&w.fp8),
                                &w.fp8_scales,
                                FP8_BLOCK,
                                &x,
                                k,
                                &mut out,
                            ),
                            _ => kern.gemm_bf16(black_box(&w.bf16), &x, k, &mut out),
                        })
                    });
                }
            }
        }
        g.finish();
    }
}

/// One decode row's attention for one KV head over 1024 positions, as `qwen3::attention` runs
/// it: scores `K (1024, 128) · Q (4, 128)ᵀ` (4 query heads per KV head), then `probs · V`, the
/// BF16 cache read either as one chunk (a session's contiguous cache) or in 16-position blocks
/// (the server's paged pool): the difference is the per-block cost. Elements = positions.
fn attention(c: &mut Criterion) {
    let (n_ctx, hd, group) = (1024, 128, 4);
    let kv: Vec<bf16> = data(n_ctx * hd, 5)
        .into_iter()
        .map(bf16::from_f32)
        .collect();
    let q = data(group * hd, 6);
    let probs = data(group * n_ctx, 7);
    let mut g = c.benchmark_group("attention/1024x128");
    g.throughput(Throughput::Elements(n_ctx as u64));
    for kern in levels() {
        for block in [16, n_ctx] {
            let id = BenchmarkId::new(format!("{}", kern.isa()), format!("block={block}"));
            g.bench_function(id, |b| {
                let mut scores = vec![0.0f32; n_ctx * group];
                let mut out = vec![0.0f32; group * hd];
                b.iter(|| {
                    for p0 in (0..n_ctx).step_by(block) {
                        let rows = &kv[p0 * hd..(p0 + block) * hd];
                        kern.gemm_bf16(rows, &q, hd, &mut scores[p0 * group..(p0 + block) * group]);
                    }
                    out.fill(0.0);
                    for p0 in (0..n_ctx).step_by(block) {
                        let rows = &kv[p0 * hd..(p0 + block) * hd];
                        kern.mix_rows_bf16(&probs[p0..], n_ctx, rows, hd, &mut out);
                    }
                    black_box(&out);
                })
            });
        }
    }
    g.finish();
}

criterion_group!(
    benches,
    gemv_in_cache,
    gemv,
    gemm,
    panel,
    small,
    few_tokens,
    attention
);
criterion_main!(benches);
