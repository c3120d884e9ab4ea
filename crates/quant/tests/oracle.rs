//! Every format's `Linear::forward`, on every ISA level the host has, equals the scalar oracle
//! "dequantize by the format's definition, then multiply" on awkward shapes: 1..20 rows, k not a
//! multiple of anything convenient, FP8 blocks that do not divide the matrix in either
//! direction, 1..5 tokens, and row counts past the 64-row task split.
//!
//! The oracle's W is built here from the generated codes and scales by the fixtures README's
//! rules, independently of the crate's repacking; the crate's own dequantization must equal it
//! bit for bit, and the forward must be within [`crate::util::bound`].

use crate::util::{
    awq_config, check_forward, ct_config, finite_code, fp8_block_config, Rng, StBuilder,
};
use nano_infer_quant::{awq_pack, Linear, QuantScheme};
use nano_infer_simd::{fp8_to_f32, Fp8Format};
use proptest::prelude::*;
use serde_json::Value;

const SCALE_DTYPES: [&str; 3] = ["F32", "BF16", "F16"];

/// Rounds `v` to the nearest value of `dtype` (so the stored scale is exactly `v`).
fn exact_in(dtype: &str, v: f32) -> f32 {
    match dtype {
        "BF16" => half::bf16::from_f32(v).to_f32(),
        "F16" => half::f16::from_f32(v).to_f32(),
        _ => v,
    }
}

/// A positive scale with a spread of exponents, exact in `dtype`.
fn scale(rng: &mut Rng, dtype: &str) -> f32 {
    exact_in(
        dtype,
        (1.0 + rng.unit().abs()) * 2f32.powi(-(rng.below(8) as i32)),
    )
}

fn fp8_codes(rng: &mut Rng, e5m2: bool, n: usize) -> Vec<u8> {
    (0..n)
        .map(|_| loop {
            let c = rng.below(256) as u8;
            if finite_code(e5m2, c) {
                break c;
            }
        })
        .collect()
}

struct Case {
    linear: Linear,
    /// The oracle's `(rows, k)` weight.
    w: Vec<f32>,
}

fn load(b: &StBuilder, cfg: Option<Value>, prefix: &str, rows: usize, k: usize) -> Linear {
    let scheme = QuantScheme::from_config(cfg.as_ref()).unwrap();
    Linear::load(&b.store(), prefix, &scheme, rows, k).unwrap()
}

fn dense_case(rng: &mut Rng, dtype: &str, rows: usize, k: usize) -> Case {
    let w: Vec<f32> = (0..rows * k).map(|_| exact_in(dtype, rng.unit())).collect();
    let mut b = StBuilder::default();
    b.scales("d.weight", dtype, &[rows, k], &w);
    Case {
        linear: load(&b, None, "d", rows, k),
        w,
    }
}

fn awq_case(rng: &mut Rng, scale_dtype: &str, rows: usize, group: usize, groups: usize) -> Case {
    let k = group * groups;
    let q: Vec<u8> = (0..k * rows).map(|_| rng.below(16) as u8).collect(); // (k, rows)
    let z: Vec<u8> = (0..groups * rows).map(|_| rng.below(16) as u8).collect(); // (groups, rows)
    let s: Vec<f32> = (0..groups * rows)
        .map(|_| scale(rng, scale_dtype))
        .collect(); // (groups, rows)
    let mut w = vec![0f32; rows * k];
    for r in 0..rows {
        for i in 0..k {
            let g = (i / group) * rows + r;
            w[r * k + i] = (q[i * rows + r] as f32 - z[g] as f32) * s[g];
        }
    }
    let mut b = StBuilder::default();
    b.i32s("a.qweight", &[k, rows / 8], &awq_pack(&q, rows))
        .i32s("a.qzeros", &[groups, rows / 8], &awq_pack(&z, rows))
        .scales("a.scales", scale_dtype, &[groups, rows], &s);
    Case {
        linear: load(&b, Some(awq_config(group)), "a", rows, k),
        w,
    }
}

/// FP8 with scales on a `(rows/br, k/bc)` grid (rounded up); `strategy` picks the config:
/// `fp8` block, or compressed-tensors `block` / `channel` (br = 1, bc = k) / `tensor`.
#[allow(clippy::too_many_arguments)]
fn fp8_case(
    rng: &mut Rng,
    strategy: &str,
    e5m2: bool,
    scale_dtype: &str,
    rows: usize,
    k: usize,
    br: usize,
    bc: usize,
) -> Case {
    let (br, bc) = match strategy {
        "channel" => (1, k),
        "tensor" => (rows, k),
        _ => (br, bc),
    };
    let (gr, gc) = (rows.div_ceil(br), k.div_ceil(bc));
    let codes = fp8_codes(rng, e5m2, rows * k);
    let s: Vec<f32> = (0..gr * gc).map(|_| scale(rng, scale_dtype)).collect();
    let format = if e5m2 {
        Fp8Format::E5M2
    } else {
        Fp8Format::E4M3
    };
    let w: Vec<f32> = (0..rows * k)
        .map(|i| fp8_to_f32(format, codes[i]) * s[(i / k / br) * gc + (i % k) / bc])
        .collect();
    let (cfg, scale_name, shape) = match strategy {
        "fp8" => {
            let mut cfg = fp8_block_config(br, bc);
            cfg["fmt"] = if e5m2 { "e5m2" } else { "e4m3" }.into();
            (cfg, "f.weight_scale_inv", vec![gr, gc])
        }
        "block" => {
            let mut cfg = ct_config("block");
            cfg["config_groups"]["group_0"]["weights"]["block_structure"] =
                serde_json::json!([br, bc]);
            (cfg, "f.weight_scale", vec![gr, gc])
        }
        "channel" => (ct_config("channel"), "f.weight_scale", vec![rows, 1]),
        _ => (ct_config("tensor"), "f.weight_scale", vec![1]),
    };
    let mut b = StBuilder::default();
    b.add(
        "f.weight",
        if e5m2 { "F8_E5M2" } else { "F8_E4M3" },
        &[rows, k],
        codes,
    )
    .scales(scale_name, scale_dtype, &shape, &s);
    Case {
        linear: load(&b, Some(cfg), "f", rows, k),
        w,
    }
}

fn check(case: &Case, rng: &mut Rng, n_tok: usize) {
    let got = case.linear.dequantize();
    assert!(
        got.iter()
            .zip(&case.w)
            .all(|(a, b)| a.to_bits() == b.to_bits()),
        "{}: dequantized weight differs from the oracle's",
        case.linear.format_name()
    );
    let x = rng.vec(n_tok * case.linear.in_features());
    check_forward(&case.linear, &case.w, &x);
}

/// Token counts for the few-token kernels and for the prefill (panel) path, which starts at 16.
fn n_toks() -> impl Strategy<Value = usize> {
    prop_oneof![1usize..6, 16usize..40]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn dense_matches_oracle(dtype in 0usize..3, rows in 1usize..20, k in 1usize..40, n_tok in n_toks(), seed in any::<u64>()) {
        let mut rng = Rng::new(seed);
        check(&dense_case(&mut rng, SCALE_DTYPES[dtype], rows, k), &mut rng, n_tok);
    }

    #[test]
    fn awq_matches_oracle(
        f16 in any::<bool>(), rows8 in 1usize..4, group in prop::sample::select(vec![2usize, 4, 6, 8, 32, 64]),
        groups in 1usize..5, n_tok in n_toks(), seed in any::<u64>(),
    ) {
        let mut rng = Rng::new(seed);
        let dtype = if f16 { "F16" } else { "BF16" };
        check(&awq_case(&mut rng, dtype, rows8 * 8, group, groups), &mut rng, n_tok);
    }

    #[test]
    fn fp8_matches_oracle(
        strategy in prop::sample::select(vec!["fp8", "block", "channel", "tensor"]), e5m2 in any::<bool>(),
        scale_dtype in 0usize..3, rows in 1usize..20, k in 1usize..40, br in 1usize..9, bc in 1usize..17,
        n_tok in n_toks(), seed in any::<u64>(),
    ) {
        let mut rng = Rng::new(seed);
        let case = fp8_case(&mut rng, strategy, e5m2, SCALE_DTYPES[scale_dtype], rows, k, br, bc);
        check(&case, &mut rng, n_tok);
    }
}

/// Shapes past the 64-row (few tokens) and 96-row (prefill) task splits, with partial 128-wide
/// FP8 blocks in both directions (the fp8_block fixture's 704 = 5.5 blocks, and 200 rows = 1.56
/// blocks), which the prefill path's 128-input weight blocks also cut.
#[test]
fn large_shapes() {
    let mut rng = Rng::new(7);
    for n_tok in [1, 5, 21, 40] {
        check(&dense_case(&mut rng, "BF16", 130, 96), &mut rng, n_tok);
        check(&awq_case(&mut rng, "F16", 136, 64, 3), &mut rng, n_tok);
        check(
            &fp8_case(&mut rng, "fp8", false, "BF16", 200, 704, 128, 128),
            &mut rng,
            n_tok,
        );
        check(
            &fp8_case(&mut rng, "channel", true, "F32", 129, 300, 0, 0),
            &mut rng,
            n_tok,
        );
        check(
            &fp8_case(&mut rng, "tensor", false, "F16", 65, 77, 0, 0),
            &mut rng,
            n_tok,
        );
    }
}
