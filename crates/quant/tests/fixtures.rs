//! Golden tests against the transformers reference fixtures in testdata/fixtures: each format's
//! `k_proj` must dequantize to exactly the reference f32 weight, and its forward must match
//! `x · Wᵀ` within the f32 bound of [`crate::util::bound`]; every layer-0 linear (including the
//! 704-input `down_proj` with half-filled edge blocks) must match its own dequantization.

use crate::util::{check_forward, fixture_dir, layer0_linears, Rng};
use nano_infer_quant::{Linear, QuantScheme};
use nano_infer_simd::Fp8Format;
use nano_infer_tensor::{SafetensorsFile, WeightStore};
use std::path::PathBuf;

fn read_json(path: PathBuf) -> serde_json::Value {
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

/// The variant and format name each fixture must load as.
const FIXTURES: [(&str, &str); 8] = [
    ("awq", "awq-int4"),
    ("awq_f16", "awq-int4"),
    ("fp8_block", "fp8-e4m3"),
    ("fp8_block_f16scale", "fp8-e4m3"),
    ("fp8_block_f32scale", "fp8-e4m3"),
    ("fp8_dynamic", "fp8-e4m3"),
    ("fp8_tensor", "fp8-e4m3"),
    ("fp8_tensor_e5m2", "fp8-e5m2"),
];

fn scheme_of(name: &str) -> QuantScheme {
    let config = read_json(fixture_dir(name).join("config.json"));
    QuantScheme::from_config(config.get("quantization_config")).unwrap()
}

#[test]
fn schemes_parse() {
    use nano_infer_quant::Fp8Strategy;
    for (name, _) in FIXTURES {
        let scheme = scheme_of(name);
        match (name, &scheme) {
            ("awq", QuantScheme::Awq(c)) => assert_eq!((c.bits, c.group_size), (4, 64)),
            ("awq_f16", QuantScheme::Awq(c)) => assert_eq!(c.group_size, 128),
            (n, QuantScheme::Fp8Block(c)) if n.starts_with("fp8_block") => {
                assert_eq!((c.block, c.format), ([128, 128], Fp8Format::E4M3))
            }
            ("fp8_dynamic", QuantScheme::CompressedFp8(c)) => {
                assert_eq!(c.groups[0].strategy, Fp8Strategy::Channel);
                assert_eq!(c.ignore[0].source(), "lm_head");
            }
            (n, QuantScheme::CompressedFp8(c)) if n.starts_with("fp8_tensor") => {
                assert_eq!(c.groups[0].strategy, Fp8Strategy::Tensor)
            }
            other => panic!("{name}: unexpected scheme {other:?}"),
        }
    }
}

#[test]
fn k_proj_matches_reference_dequant() {
    for (name, format) in FIXTURES {
        let dir = fixture_dir(name);
        let reference = read_json(dir.join("reference.json"));
        let tensors = reference["dequant_tensors"]
            .as_array()
            .expect("dequant_tensors");
        let refs = SafetensorsFile::open(dir.join("reference.safetensors")).unwrap();
        let store = WeightStore::open_dir(&dir).unwrap();
        let scheme = scheme_of(name);
        for tensor in tensors {
            let tensor = tensor.as_str().unwrap();
            let prefix = tensor
                .strip_prefix("dequant.")
                .and_then(|p| p.strip_suffix(".weight"))
                .unwrap();
            let want = refs.get(tensor).unwrap();
            let &[rows, k] = want.shape() else {
                panic!("{tensor}: not 2-D")
            };
            let want = want.to_f32_vec().unwrap();
            let linear = Linear::load(&store, prefix, &scheme, rows, k).unwrap();
            assert_eq!(linear.format_name(), format, "{name}");
            let got = linear.dequantize();
            let mismatches = got
                .iter()
                .zip(&want)
                .filter(|(a, b)| a.to_bits() != b.to_bits())
                .count();
            assert_eq!(
                mismatches, 0,
                "{name} {prefix}: {mismatches} elements differ from the reference dequant"
            );

            let mut rng = Rng::new(rows as u64 * 31 + k as u64);
            // 20 and 37 tokens take the prefill (panel) path.
            for n_tok in [1, 3, 7, 20, 37] {
                let x = rng.vec(n_tok * k);
                let worst = check_forward(&linear, &want, &x);
                eprintln!("{name} {prefix} n_tok {n_tok}: worst |err|/bound {worst:.2e}");
            }
        }
    }
}

/// Every linear of layer 0 loads, and its forward equals its own exact dequantization times x.
/// Also prints the memory each format keeps per layer (the numbers quoted in the crate docs).
#[test]
fn every_layer0_linear() {
    for (name, _) in FIXTURES {
        let dir = fixture_dir(name);
        let cfg = read_json(dir.join("config.json"));
        let store = WeightStore::open_dir(&dir).unwrap();
        let scheme = scheme_of(name);
        let (mut bytes, mut weights) = (0usize, 0usize);
        for (i, (prefix, rows, k)) in layer0_linears(&cfg).into_iter().enumerate() {
            let linear = Linear::load(&store, &prefix, &scheme, rows, k).unwrap();
            let x = Rng::new(i as u64).vec(2 * k);
            check_forward(&linear, &linear.dequantize(), &x);
            bytes += linear.weight_bytes();
            weights += rows * k;
        }
        eprintln!(
            "{name}: layer 0 linears keep {bytes} bytes for {weights} weights = {:.3} bits/weight",
            bytes as f64 * 8.0 / weights as f64
        );
    }
}

/// AWQ with int8 activations ([`AwqActivations::Int8`]): every layer-0 linear of both AWQ
/// fixtures against the exact f32 product of its own dequantization, on every ISA. The error
/// comes from the activations only: each element moves by at most half a step, `amax_b/254` of
/// its 32-block, so `|Δy_r| ≤ Σ_j |w_rj|·amax_b(j)/254` (plus f32 rounding, far smaller).
#[test]
fn awq_int8_activations_error_bound() {
    use nano_infer_quant::{AwqActivations, LinearOptions};
    use nano_infer_simd::{Isa, Kernels};
    let opts = LinearOptions {
        awq_activations: AwqActivations::Int8,
    };
    for name in ["awq", "awq_f16"] {
        let dir = fixture_dir(name);
        let store = WeightStore::open_dir(&dir).unwrap();
        let scheme = scheme_of(name);
        for (layer, rows, k) in [
            ("self_attn.q_proj", 0, 0),
            ("mlp.gate_proj", 0, 0),
            ("mlp.down_proj", 0, 0),
        ] {
            let prefix = format!("model.layers.0.{layer}");
            let exact = Linear::load(&store, &prefix, &scheme, 0, 0)
                .or_else(|_| {
                    let cfg = read_json(dir.join("config.json"));
                    let dim = |key: &str| cfg[key].as_u64().unwrap() as usize;
                    let (h, i, q) = (
                        dim("hidden_size"),
                        dim("intermediate_size"),
                        dim("num_attention_heads") * dim("head_dim"),
                    );
                    let (r, c) = match layer {
                        "self_attn.q_proj" => (q, h),
                        "mlp.gate_proj" => (i, h),
                        _ => (h, i),
                    };
                    let _ = (rows, k);
                    Linear::load(&store, &prefix, &scheme, r, c)
                })
                .unwrap();
            let (rows, k) = (exact.out_features(), exact.in_features());
            let int8 = Linear::load_with(&store, &prefix, &scheme, rows, k, opts).unwrap();
            assert_eq!(int8.format_name(), "awq-int4-q8act");
            let w = exact.dequantize();
            assert_eq!(
                int8.dequantize(),
                w,
                "{name} {prefix}: same weights in both layouts"
            );
            let x = Rng::new(k as u64).vec(3 * k);
            let mut worst = 0f64;
            for isa in Isa::available() {
                let kernels = Kernels::for_isa(isa).unwrap();
                let mut out = vec![0f32; 3 * rows];
                int8.forward(kernels, &x, &mut out, &mut Vec::new());
                for t in 0..3 {
                    let xt = &x[t * k..(t + 1) * k];
                    for r in 0..rows {
                        let wr = &w[r * k..(r + 1) * k];
                        let exact: f64 =
                            wr.iter().zip(xt).map(|(a, b)| *a as f64 * *b as f64).sum();
                        let bound: f64 = wr
                            .iter()
                            .enumerate()
                            .map(|(j, a)| {
                                let b = &xt[j / 32 * 32..j / 32 * 32 + 32];
                                let amax = b.iter().fold(0f32, |m, v| m.max(v.abs()));
                                (*a as f64).abs() * amax as f64 / 254.0
                            })
                            .sum::<f64>()
                            * 1.001
                            + 1e-5;
                        let err = (out[t * rows + r] as f64 - exact).abs();
                        assert!(
                            err <= bound,
                            "{name} {prefix} {isa} t{t} r{r}: err {err} > {bound}"
                        );
                        worst = worst.max(err / bound);
                    }
                }
            }
            eprintln!("{name} {prefix}: worst error / bound {worst:.3}");
        }
    }
}

/// [`Linear::forward_fused`] (q/k/v, gate/up) writes exactly what the layers' own forwards
/// write, one after another, bit for bit: the same row kernels (1 and 3 tokens) or panel
/// kernel (17 tokens) over the same rows, in one loop instead of one per layer. Every format,
/// int8 activations (quantized once for all the layers), an int8 copy, and layers that take
/// their activations differently (which run one by one), on every ISA.
#[test]
fn fused_forward_equals_separate_forwards() {
    use nano_infer_quant::{AwqActivations, LinearOptions};
    use nano_infer_simd::{Isa, Kernels};
    let int8 = LinearOptions {
        awq_activations: AwqActivations::Int8,
    };
    let mut names: Vec<&str> = FIXTURES.iter().map(|(n, _)| *n).collect();
    names.extend(["bf16", "f16", "f32"]);
    for name in names {
        let dir = fixture_dir(name);
        let cfg = read_json(dir.join("config.json"));
        let store = WeightStore::open_dir(&dir).unwrap();
        let scheme = scheme_of(name);
        let linears = layer0_linears(&cfg);
        let load = |i: usize, opts: LinearOptions| {
            let (prefix, rows, k) = &linears[i];
            Linear::load_with(&store, prefix, &scheme, *rows, *k, opts).unwrap()
        };
        let qkv: Vec<Linear> = (0..3).map(|i| load(i, LinearOptions::default())).collect();
        let gate_up: Vec<Linear> = (4..6).map(|i| load(i, LinearOptions::default())).collect();
        let mut groups = vec![qkv.clone(), gate_up];
        groups.push((0..3).map(|i| load(i, int8)).collect());
        groups.push(qkv.iter().map(|l| l.to_q8().unwrap()).collect());
        // An int8 copy beside the checkpoint's format: different activations, not fused.
        groups.push(vec![qkv[0].to_q8().unwrap(), qkv[1].clone()]);
        for layers in &groups {
            let refs: Vec<&Linear> = layers.iter().collect();
            let k = refs[0].in_features();
            let rows: Vec<usize> = refs.iter().map(|l| l.out_features()).collect();
            for isa in Isa::available() {
                let kernels = Kernels::for_isa(isa).unwrap();
                for n_tok in [1, 3, 17] {
                    let x = Rng::new((k * n_tok) as u64).vec(n_tok * k);
                    let mut want = Vec::new();
                    for l in &refs {
                        let mut o = vec![0f32; n_tok * l.out_features()];
                        l.forward(kernels, &x, &mut o, &mut Vec::new());
                        want.extend(o);
                    }
                    let mut got = vec![f32::NAN; want.len()];
                    Linear::forward_fused(kernels, &refs, &x, &mut got, &mut Vec::new());
                    let same = got
                        .iter()
                        .zip(&want)
                        .all(|(a, b)| a.to_bits() == b.to_bits());
                    assert!(same, "{name} {rows:?} {isa:?} n_tok {n_tok}");
                }
            }
        }
    }
}
