//! `cargo xtask synth-model`: random-weight Qwen3 checkpoints in the exact on-disk
//! layouts of the real Hugging Face releases (Qwen/Qwen3-4B, -AWQ, -FP8 and the
//! compressed-tensors FP8 variants), for load tests and benchmarks without
//! downloading 8 GB.
//!
//! Design: the model is first described as a flat list of [`TensorSpec`]s in
//! PyTorch `state_dict` order (this file). The writer (`writer.rs`) splits that list
//! into shards the way `save_pretrained` does and streams each tensor to disk in
//! fixed-size row chunks, so memory stays at a few chunk buffers whatever the model
//! size. Each chunk has its own PRNG stream derived from (seed, tensor name, chunk
//! index), which makes the output byte-identical for a given seed regardless of the
//! thread count. Cost: output also depends on the chunk size constant, which is
//! fixed for that reason.
//!
//! The weights carry no meaning: linears and embeddings are ~N(0, 0.02^2) after
//! dequantization, norms are 1 +- a little. Quantized formats draw their codes
//! directly (no float round trip) and pick scales for that magnitude.

mod codec;
#[cfg(test)]
mod tests;
mod writer;

use std::fs;
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, ensure, Context, Result};
use clap::ValueEnum;
use serde_json::{json, Value};

use codec::Fp8;

/// Standard deviation of every dense weight after dequantization (Qwen3's
/// `initializer_range`).
const WEIGHT_STD: f32 = 0.02;
/// AWQ and FP8-block group/block edge, as in the released checkpoints.
const GROUP: usize = 128;
/// Spread of AWQ codes around their zero point, in quantization steps.
const AWQ_CODE_STD: f32 = 2.5;

#[derive(Debug, clap::Args)]
#[command(after_help = "\
Files written to --out: config.json, generation_config.json, tokenizer.json,
tokenizer_config.json, and either model.safetensors or model-0000K-of-0000N.safetensors
plus model.safetensors.index.json. Stale model*.safetensors / index files already in
--out are removed first so loaders never see a mix of two runs.

Layouts (per linear layer q/k/v/o/gate/up/down; embeddings and norms stay dense):
  bf16, f16     .weight [out, in] in that dtype; everything else in that dtype too
  awq           .qweight I32 [in, out/8], .qzeros I32 [in/128, out/8], .scales F16 [in/128, out]
                (AutoAWQ GEMM nibble order); dense tensors BF16, torch_dtype float16
  fp8-block     .weight F8_E4M3 [out, in], .weight_scale_inv BF16 [ceil(out/128), ceil(in/128)]
  fp8-channel   .weight F8_E4M3 [out, in], .weight_scale BF16 [out, 1]  (compressed-tensors)
  fp8-tensor    .weight F8_E4M3 [out, in], .weight_scale BF16 [1]       (compressed-tensors)
  e5m2          .weight F8_E5M2 [out, in], .weight_scale F32 [1]        (compressed-tensors)

The same --seed always gives byte-identical files, whatever the thread count.")]
pub(crate) struct SynthArgs {
    /// Output directory; created if missing.
    #[arg(long, value_name = "DIR")]
    out: PathBuf,

    /// Model shape: `qwen3-4b` is Qwen/Qwen3-4B (8.0 GB in BF16); `tiny` is
    /// hidden 256 / 2 layers with the real 151936-token vocabulary (~80 MB in BF16).
    #[arg(long, value_enum, default_value_t = Preset::Qwen3_4b)]
    preset: Preset,

    /// Weight format, each as its public checkpoint stores it (see below).
    #[arg(long, value_enum, default_value_t = WeightFormat::Bf16)]
    dtype: WeightFormat,

    /// PRNG seed.
    #[arg(long, default_value_t = 0)]
    seed: u64,

    /// Largest shard in GB (10^9 bytes, as `save_pretrained(max_shard_size="4GB")`).
    /// A model that fits in one shard is written as a single model.safetensors;
    /// 0 forces a single file.
    #[arg(long, value_name = "X", default_value_t = 4.0)]
    shard_size_gb: f64,

    /// Where tokenizer.json and tokenizer_config.json are copied from
    /// [default: <repo>/testdata/qwen3-tokenizer].
    #[arg(long, value_name = "DIR")]
    tokenizer_dir: Option<PathBuf>,

    /// Generator threads [default: available cores].
    #[arg(long)]
    threads: Option<NonZeroUsize>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Preset {
    /// Qwen/Qwen3-4B.
    #[value(name = "qwen3-4b")]
    Qwen3_4b,
    /// A 2-layer toy with the full vocabulary, so the real tokenizer works.
    Tiny,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum WeightFormat {
    /// All tensors BF16 (Qwen/Qwen3-4B).
    Bf16,
    /// All tensors F16.
    F16,
    /// AutoAWQ GEMM int4, group 128 (Qwen/Qwen3-4B-AWQ).
    Awq,
    /// FP8 E4M3 with 128x128 block scales (Qwen/Qwen3-4B-FP8).
    #[value(name = "fp8-block")]
    Fp8Block,
    /// compressed-tensors FP8 E4M3, per-output-channel scales (FP8-dynamic).
    #[value(name = "fp8-channel")]
    Fp8Channel,
    /// compressed-tensors FP8 E4M3, one scale per tensor.
    #[value(name = "fp8-tensor")]
    Fp8Tensor,
    /// compressed-tensors FP8 E5M2, one F32 scale per tensor.
    E5m2,
}

/// The `config.json` numbers of a Qwen3 model.
#[derive(Debug, Clone)]
pub(crate) struct Shape {
    pub(crate) vocab: usize,
    pub(crate) hidden: usize,
    pub(crate) intermediate: usize,
    pub(crate) layers: usize,
    pub(crate) heads: usize,
    pub(crate) kv_heads: usize,
    pub(crate) head_dim: usize,
}

impl Preset {
    pub(crate) fn shape(self) -> Shape {
        match self {
            Preset::Qwen3_4b => Shape {
                vocab: 151_936,
                hidden: 2560,
                intermediate: 9728,
                layers: 36,
                heads: 32,
                kv_heads: 8,
                head_dim: 128,
            },
            Preset::Tiny => Shape {
                vocab: 151_936,
                hidden: 256,
                intermediate: 512,
                layers: 2,
                heads: 4,
                kv_heads: 2,
                head_dim: 64,
            },
        }
    }
}

/// safetensors dtypes this tool writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dtype {
    F32,
    I32,
    BF16,
    F16,
    F8E4M3,
    F8E5M2,
}

impl Dtype {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Dtype::F32 => "F32",
            Dtype::I32 => "I32",
            Dtype::BF16 => "BF16",
            Dtype::F16 => "F16",
            Dtype::F8E4M3 => "F8_E4M3",
            Dtype::F8E5M2 => "F8_E5M2",
        }
    }

    pub(crate) fn size(self) -> usize {
        match self {
            Dtype::F32 | Dtype::I32 => 4,
            Dtype::BF16 | Dtype::F16 => 2,
            Dtype::F8E4M3 | Dtype::F8E5M2 => 1,
        }
    }

    /// Position in the safetensors crate's `Dtype` enum. Its serializer orders the
    /// tensors of a file by this, descending, then by name; we match it so the
    /// files are laid out byte-for-byte like `save_file`'s.
    pub(crate) fn st_rank(self) -> u8 {
        match self {
            Dtype::F8E5M2 => 6,
            Dtype::F8E4M3 => 7,
            Dtype::F16 => 11,
            Dtype::BF16 => 12,
            Dtype::I32 => 13,
            Dtype::F32 => 15,
        }
    }
}

/// How a tensor's values are drawn.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Fill {
    /// ~N(0, std^2), in a float dtype.
    Normal { std: f32 },
    /// RMSNorm gains: 1 + N(0, 0.02^2), so a loader that ignores them is caught.
    Norm,
    /// Positive scales, uniform in [0.75, 1.25] * mean.
    Scale { mean: f32 },
    /// FP8 codes of ~N(0, code_std^2), never NaN/inf.
    Fp8 { fmt: Fp8, code_std: f32 },
    /// AWQ `qzeros`: packed zero points in 6..=9, a function of (zeros_seed, group, column).
    AwqZeros { zeros_seed: u64 },
    /// AWQ `qweight`: packed codes `clamp(round(z + AWQ_CODE_STD * n), 0, 15)` around
    /// the zero point `z` of the code's group and column.
    AwqWeights { zeros_seed: u64 },
}

/// One tensor of the checkpoint.
#[derive(Debug, Clone)]
pub(crate) struct TensorSpec {
    pub(crate) name: String,
    pub(crate) dtype: Dtype,
    pub(crate) shape: Vec<usize>,
    pub(crate) fill: Fill,
}

impl TensorSpec {
    pub(crate) fn bytes(&self) -> usize {
        self.shape.iter().product::<usize>() * self.dtype.size()
    }
}

impl WeightFormat {
    /// The dtype of embeddings and norms.
    fn dense_dtype(self) -> Dtype {
        match self {
            WeightFormat::F16 => Dtype::F16,
            // AWQ: as Qwen3-4B-AWQ ships them, BF16 under `torch_dtype: float16`.
            _ => Dtype::BF16,
        }
    }

    fn torch_dtype(self) -> &'static str {
        match self {
            WeightFormat::F16 | WeightFormat::Awq => "float16",
            _ => "bfloat16",
        }
    }

    /// The `quantization_config` object, copied from the real serializations (see
    /// testdata/fixtures/*/config.json); `None` for dense formats.
    fn quantization_config(self) -> Option<Value> {
        let compressed_tensor_weights = json!({
            "dynamic": false,
            "group_size": null,
            "num_bits": 8,
            "observer": "minmax",
            "strategy": "tensor",
            "symmetric": true,
            "type": "float"
        });
        match self {
            WeightFormat::Bf16 | WeightFormat::F16 => None,
            WeightFormat::Awq => Some(json!({
                "bits": 4,
                "group_size": GROUP,
                "modules_to_not_convert": null,
                "quant_method": "awq",
                "version": "gemm",
                "zero_point": true
            })),
            WeightFormat::Fp8Block => Some(json!({
                "activation_scheme": "dynamic",
                "fmt": "e4m3",
                "quant_method": "fp8",
                "weight_block_size": [GROUP, GROUP]
            })),
            // compressed-tensors 0.9.4, as in RedHatAI's FP8-dynamic releases.
            WeightFormat::Fp8Channel => Some(json!({
                "config_groups": {
                    "group_0": {
                        "input_activations": {
                            "actorder": null,
                            "block_structure": null,
                            "dynamic": true,
                            "group_size": null,
                            "num_bits": 8,
                            "observer": null,
                            "observer_kwargs": {},
                            "strategy": "token",
                            "symmetric": true,
                            "type": "float"
                        },
                        "output_activations": null,
                        "targets": ["Linear"],
                        "weights": {
                            "actorder": null,
                            "block_structure": null,
                            "dynamic": false,
                            "group_size": null,
                            "num_bits": 8,
                            "observer": "minmax",
                            "observer_kwargs": {},
                            "strategy": "channel",
                            "symmetric": true,
                            "type": "float"
                        }
                    }
                },
                "format": "float-quantized",
                "global_compression_ratio": null,
                "ignore": ["lm_head"],
                "kv_cache_scheme": null,
                "quant_method": "compressed-tensors",
                "quantization_status": "compressed"
            })),
            // compressed-tensors 0.20.0. The E5M2 file uses the same config: the
            // safetensors dtype is the only thing that marks it.
            WeightFormat::Fp8Tensor | WeightFormat::E5m2 => Some(json!({
                "config_groups": {
                    "group_0": {
                        "format": null,
                        "input_activations": null,
                        "output_activations": null,
                        "targets": ["Linear"],
                        "weights": compressed_tensor_weights
                    }
                },
                "format": "float-quantized",
                "global_compression_ratio": null,
                "ignore": ["lm_head"],
                "kv_cache_scheme": null,
                "moe_sparsity_config": null,
                "quant_method": "compressed-tensors",
                "quantization_status": "compressed",
                "sparsity_config": {},
                "transform_config": {},
                "version": "0.20.0"
            })),
        }
    }

    /// Appends the tensors of one linear layer `prefix` (`.weight` or its quantized
    /// replacement). `out_f`/`in_f` are PyTorch's `out_features`/`in_features`.
    fn push_linear(
        self,
        specs: &mut Vec<TensorSpec>,
        prefix: &str,
        out_f: usize,
        in_f: usize,
        seed: u64,
    ) {
        let mut push = |suffix: &str, dtype, shape: Vec<usize>, fill| {
            specs.push(TensorSpec {
                name: format!("{prefix}.{suffix}"),
                dtype,
                shape,
                fill,
            });
        };
        let fp8 = |fmt: Fp8| Fill::Fp8 {
            fmt,
            // Irwin-Hall tails end at ~3.46 sigma, so max/4 never saturates, while
            // still using most of the code range as an amax-scaled quantizer would.
            code_std: fmt.max_value() / 4.0,
        };
        let fp8_scale = |fmt: Fp8| Fill::Scale {
            mean: WEIGHT_STD * 4.0 / fmt.max_value(),
        };
        match self {
            WeightFormat::Bf16 | WeightFormat::F16 => {
                let fill = Fill::Normal { std: WEIGHT_STD };
                push("weight", self.dense_dtype(), vec![out_f, in_f], fill);
            }
            WeightFormat::Awq => {
                // qweight and qzeros must agree on the zero points: both derive them
                // from this per-layer seed.
                let zeros_seed = codec::splitmix64(seed ^ codec::hash_name(prefix));
                let groups = in_f / GROUP;
                push(
                    "qweight",
                    Dtype::I32,
                    vec![in_f, out_f / 8],
                    Fill::AwqWeights { zeros_seed },
                );
                push(
                    "qzeros",
                    Dtype::I32,
                    vec![groups, out_f / 8],
                    Fill::AwqZeros { zeros_seed },
                );
                let mean = WEIGHT_STD / AWQ_CODE_STD;
                push(
                    "scales",
                    Dtype::F16,
                    vec![groups, out_f],
                    Fill::Scale { mean },
                );
            }
            WeightFormat::Fp8Block => {
                push("weight", Dtype::F8E4M3, vec![out_f, in_f], fp8(Fp8::E4M3));
                let grid = vec![out_f.div_ceil(GROUP), in_f.div_ceil(GROUP)];
                push("weight_scale_inv", Dtype::BF16, grid, fp8_scale(Fp8::E4M3));
            }
            WeightFormat::Fp8Channel => {
                push("weight", Dtype::F8E4M3, vec![out_f, in_f], fp8(Fp8::E4M3));
                push(
                    "weight_scale",
                    Dtype::BF16,
                    vec![out_f, 1],
                    fp8_scale(Fp8::E4M3),
                );
            }
            WeightFormat::Fp8Tensor => {
                push("weight", Dtype::F8E4M3, vec![out_f, in_f], fp8(Fp8::E4M3));
                push("weight_scale", Dtype::BF16, vec![1], fp8_scale(Fp8::E4M3));
            }
            WeightFormat::E5m2 => {
                push("weight", Dtype::F8E5M2, vec![out_f, in_f], fp8(Fp8::E5M2));
                push("weight_scale", Dtype::F32, vec![1], fp8_scale(Fp8::E5M2));
            }
        }
    }
}

/// Every tensor of the checkpoint, in `state_dict` order (which decides the shard
/// split, as in `save_pretrained`). Tied embeddings: there is no `lm_head.weight`.
pub(crate) fn tensor_specs(s: &Shape, fmt: WeightFormat, seed: u64) -> Result<Vec<TensorSpec>> {
    let q_dim = s.heads * s.head_dim;
    let kv_dim = s.kv_heads * s.head_dim;
    ensure!(
        s.heads.is_multiple_of(s.kv_heads),
        "{} query heads are not a multiple of {} KV heads",
        s.heads,
        s.kv_heads
    );
    if fmt == WeightFormat::Awq {
        for (what, d) in [
            ("hidden", s.hidden),
            ("intermediate", s.intermediate),
            ("heads*head_dim", q_dim),
        ] {
            ensure!(
                d % GROUP == 0,
                "AWQ needs {what} ({d}) to be a multiple of the group size {GROUP}"
            );
        }
        ensure!(
            kv_dim.is_multiple_of(8),
            "AWQ packs 8 columns per int32, but kv_heads*head_dim is {kv_dim}"
        );
    }

    let dense = fmt.dense_dtype();
    let mut specs = Vec::with_capacity(2 + 11 * s.layers);
    let push_dense = |specs: &mut Vec<TensorSpec>, name: String, shape: Vec<usize>, fill| {
        specs.push(TensorSpec {
            name,
            dtype: dense,
            shape,
            fill,
        });
    };
    let normal = Fill::Normal { std: WEIGHT_STD };
    push_dense(
        &mut specs,
        "model.embed_tokens.weight".into(),
        vec![s.vocab, s.hidden],
        normal,
    );
    for i in 0..s.layers {
        let p = format!("model.layers.{i}");
        let attn = format!("{p}.self_attn");
        fmt.push_linear(&mut specs, &format!("{attn}.q_proj"), q_dim, s.hidden, seed);
        fmt.push_linear(
            &mut specs,
            &format!("{attn}.k_proj"),
            kv_dim,
            s.hidden,
            seed,
        );
        fmt.push_linear(
            &mut specs,
            &format!("{attn}.v_proj"),
            kv_dim,
            s.hidden,
            seed,
        );
        fmt.push_linear(&mut specs, &format!("{attn}.o_proj"), s.hidden, q_dim, seed);
        push_dense(
            &mut specs,
            format!("{attn}.q_norm.weight"),
            vec![s.head_dim],
            Fill::Norm,
        );
        push_dense(
            &mut specs,
            format!("{attn}.k_norm.weight"),
            vec![s.head_dim],
            Fill::Norm,
        );
        let mlp = format!("{p}.mlp");
        fmt.push_linear(
            &mut specs,
            &format!("{mlp}.gate_proj"),
            s.intermediate,
            s.hidden,
            seed,
        );
        fmt.push_linear(
            &mut specs,
            &format!("{mlp}.up_proj"),
            s.intermediate,
            s.hidden,
            seed,
        );
        fmt.push_linear(
            &mut specs,
            &format!("{mlp}.down_proj"),
            s.hidden,
            s.intermediate,
            seed,
        );
        push_dense(
            &mut specs,
            format!("{p}.input_layernorm.weight"),
            vec![s.hidden],
            Fill::Norm,
        );
        push_dense(
            &mut specs,
            format!("{p}.post_attention_layernorm.weight"),
            vec![s.hidden],
            Fill::Norm,
        );
    }
    push_dense(
        &mut specs,
        "model.norm.weight".into(),
        vec![s.hidden],
        Fill::Norm,
    );
    Ok(specs)
}

/// `config.json` as `save_pretrained` writes it for Qwen3-4B (keys sorted), with the
/// shape and format filled in.
pub(crate) fn config_json(s: &Shape, fmt: WeightFormat) -> Value {
    let mut cfg = json!({
        "architectures": ["Qwen3ForCausalLM"],
        "attention_bias": false,
        "attention_dropout": 0.0,
        "bos_token_id": 151_643,
        "eos_token_id": 151_645,
        "head_dim": s.head_dim,
        "hidden_act": "silu",
        "hidden_size": s.hidden,
        "initializer_range": 0.02,
        "intermediate_size": s.intermediate,
        "max_position_embeddings": 40_960,
        "max_window_layers": s.layers,
        "model_type": "qwen3",
        "num_attention_heads": s.heads,
        "num_hidden_layers": s.layers,
        "num_key_value_heads": s.kv_heads,
        "rms_norm_eps": 1e-6,
        "rope_scaling": null,
        "rope_theta": 1_000_000,
        "sliding_window": null,
        "tie_word_embeddings": true,
        "torch_dtype": fmt.torch_dtype(),
        "transformers_version": "4.51.0",
        "use_cache": true,
        "use_sliding_window": false,
        "vocab_size": s.vocab
    });
    if let Some(q) = fmt.quantization_config() {
        cfg["quantization_config"] = q;
    }
    cfg
}

/// `generation_config.json` exactly as Qwen/Qwen3-4B ships it.
fn generation_config_json() -> Value {
    json!({
        "bos_token_id": 151_643,
        "do_sample": true,
        "eos_token_id": [151_645, 151_643],
        "pad_token_id": 151_643,
        "temperature": 0.6,
        "top_k": 20,
        "top_p": 0.95,
        "transformers_version": "4.51.0"
    })
}

/// Writes `value` the way transformers does: 2-space indent, sorted keys, trailing newline.
pub(crate) fn write_json(path: &Path, value: &Value) -> Result<()> {
    let text = serde_json::to_string_pretty(value)? + "\n";
    fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
}

/// The spelling a value has on the command line (`qwen3-4b`, `fp8-block`).
fn value_name(v: impl ValueEnum) -> String {
    v.to_possible_value()
        .map_or_else(String::new, |p| p.get_name().to_string())
}

fn default_tokenizer_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/qwen3-tokenizer")
}

pub(crate) fn run(args: &SynthArgs) -> Result<()> {
    ensure!(
        args.shard_size_gb.is_finite() && args.shard_size_gb >= 0.0,
        "--shard-size-gb must be a non-negative number of GB, got {}",
        args.shard_size_gb
    );
    // Resolve the tokenizer before writing gigabytes, so a missing one fails fast.
    let tok_dir = args
        .tokenizer_dir
        .clone()
        .unwrap_or_else(default_tokenizer_dir);
    let tok_files = ["tokenizer.json", "tokenizer_config.json"].map(|f| tok_dir.join(f));
    for f in &tok_files {
        if !f.is_file() {
            bail!(
                "tokenizer file {} not found (pass --tokenizer-dir DIR)",
                f.display()
            );
        }
    }

    let out = &args.out;
    if out.exists() && !out.is_dir() {
        bail!("--out {} exists and is not a directory", out.display());
    }
    fs::create_dir_all(out)
        .with_context(|| format!("cannot create output directory {}", out.display()))?;

    let shape = args.preset.shape();
    let specs = tensor_specs(&shape, args.dtype, args.seed)?;
    let shard_bytes = (args.shard_size_gb * 1e9) as u64;
    let threads = args
        .threads
        .or_else(|| std::thread::available_parallelism().ok())
        .map_or(1, NonZeroUsize::get);

    println!(
        "synth-model: {} {}, seed {}, {} tensors -> {} ({} threads)",
        value_name(args.preset),
        value_name(args.dtype),
        args.seed,
        specs.len(),
        out.display(),
        threads
    );
    let start = Instant::now();
    writer::remove_stale(out)?;
    write_json(&out.join("config.json"), &config_json(&shape, args.dtype))?;
    write_json(
        &out.join("generation_config.json"),
        &generation_config_json(),
    )?;
    for f in &tok_files {
        let dst = out.join(f.file_name().expect("joined a file name"));
        fs::copy(f, &dst)
            .with_context(|| format!("cannot copy {} to {}", f.display(), dst.display()))?;
    }
    let summary = writer::write_weights(out, &specs, args.seed, shard_bytes, threads)?;
    let secs = start.elapsed().as_secs_f64();
    println!(
        "done: {} file(s), {} tensors, {:.3} GB of tensor data ({} bytes on disk) in {:.1} s ({:.2} GB/s)",
        summary.files.len(),
        specs.len(),
        summary.tensor_bytes as f64 / 1e9,
        summary.file_bytes,
        secs,
        summary.file_bytes as f64 / 1e9 / secs
    );
    Ok(())
}
