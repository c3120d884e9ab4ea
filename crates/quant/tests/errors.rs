//! Every way a quantized layer or config can be wrong gives its own error variant, and the
//! message names the tensor (or the config field). A layer missing its scale never loads.

use crate::util::{awq_config, ct_config, fp8_block_config, load, StBuilder};
use nano_infer_quant::{Linear, QuantError, QuantScheme};
use nano_infer_tensor::TensorError;
use serde_json::json;

const P: &str = "model.layers.0.self_attn.k_proj";

fn name(part: &str) -> String {
    format!("{P}.{part}")
}

/// A valid 16 × 8 AWQ layer (group 4), minus the parts listed in `skip`.
fn awq_parts(skip: &[&str]) -> StBuilder {
    let mut b = StBuilder::default();
    if !skip.contains(&"qweight") {
        b.i32s(&name("qweight"), &[8, 2], &[0; 16]);
    }
    if !skip.contains(&"qzeros") {
        b.i32s(&name("qzeros"), &[2, 2], &[0; 4]);
    }
    if !skip.contains(&"scales") {
        b.f16s(&name("scales"), &[2, 16], &[1.0; 32]);
    }
    b
}

/// A valid 4 × 8 FP8 weight.
fn fp8_weight() -> StBuilder {
    let mut b = StBuilder::default();
    b.add(&name("weight"), "F8_E4M3", &[4, 8], vec![0x38; 32]);
    b
}

fn assert_names(err: &QuantError, what: &str) {
    let msg = err.to_string();
    assert!(msg.contains(what), "message `{msg}` does not name `{what}`");
}

#[test]
fn valid_parts_load() {
    assert!(matches!(
        load(&awq_parts(&[]), awq_config(4), P, 16, 8).unwrap(),
        Linear::Awq(_)
    ));
    let mut b = fp8_weight();
    b.f32s(&name("weight_scale_inv"), &[1, 1], &[1.0]);
    assert!(matches!(
        load(&b, fp8_block_config(128, 128), P, 4, 8).unwrap(),
        Linear::Fp8(_)
    ));
}

#[test]
fn missing_scale_fp8_block() {
    let err = load(&fp8_weight(), fp8_block_config(128, 128), P, 4, 8).unwrap_err();
    assert!(
        matches!(&err, QuantError::MissingTensor { tensor, .. } if *tensor == name("weight_scale_inv")),
        "{err:?}"
    );
    assert_names(&err, &name("weight_scale_inv"));
}

#[test]
fn missing_scale_compressed_tensors() {
    for strategy in ["channel", "tensor"] {
        let err = load(&fp8_weight(), ct_config(strategy), P, 4, 8).unwrap_err();
        assert!(
            matches!(&err, QuantError::MissingTensor { tensor, .. } if *tensor == name("weight_scale")),
            "{err:?}"
        );
        assert_names(&err, &name("weight_scale"));
    }
}

#[test]
fn missing_awq_parts() {
    for part in ["qzeros", "scales", "qweight"] {
        let err = load(&awq_parts(&[part]), awq_config(4), P, 16, 8).unwrap_err();
        assert!(
            matches!(&err, QuantError::MissingTensor { tensor, .. } if *tensor == name(part)),
            "{err:?}"
        );
        assert_names(&err, &name(part));
    }
    // A dense weight where the config says AWQ: missing qweight, with a hint.
    let mut b = StBuilder::default();
    b.bf16s(&name("weight"), &[16, 8], &[0.0; 128]);
    let err = load(&b, awq_config(4), P, 16, 8).unwrap_err();
    assert!(matches!(err, QuantError::MissingTensor { .. }));
    assert_names(&err, "modules_to_not_convert");
}

#[test]
fn wrong_dtypes() {
    // Integer block scales.
    let mut b = fp8_weight();
    b.i32s(&name("weight_scale_inv"), &[1, 1], &[1]);
    let err = load(&b, fp8_block_config(128, 128), P, 4, 8).unwrap_err();
    assert!(
        matches!(&err, QuantError::Tensor(TensorError::WrongDtype { tensor, .. }) if *tensor == name("weight_scale_inv")),
        "{err:?}"
    );
    // A BF16 weight where FP8 codes are expected.
    let mut b = StBuilder::default();
    b.bf16s(&name("weight"), &[4, 8], &[0.0; 32])
        .f32s(&name("weight_scale"), &[4, 1], &[1.0; 4]);
    let err = load(&b, ct_config("channel"), P, 4, 8).unwrap_err();
    assert!(
        matches!(&err, QuantError::Tensor(TensorError::WrongDtype { tensor, .. }) if *tensor == name("weight")),
        "{err:?}"
    );
    // F32 AWQ scales (the repack's exactness argument needs 16-bit scales).
    let mut b = awq_parts(&["scales"]);
    b.f32s(&name("scales"), &[2, 16], &[1.0; 32]);
    let err = load(&b, awq_config(4), P, 16, 8).unwrap_err();
    assert!(
        matches!(&err, QuantError::Tensor(TensorError::WrongDtype { tensor, .. }) if *tensor == name("scales")),
        "{err:?}"
    );
    // FP8 codes of the other format than `fmt` says.
    let mut b = StBuilder::default();
    b.add(&name("weight"), "F8_E5M2", &[4, 8], vec![0x3C; 32])
        .f32s(&name("weight_scale_inv"), &[1, 1], &[1.0]);
    let err = load(&b, fp8_block_config(128, 128), P, 4, 8).unwrap_err();
    assert!(matches!(err, QuantError::Invalid { .. }), "{err:?}");
    assert_names(&err, &name("weight"));
}

#[test]
fn wrong_shapes() {
    // Block grid for 4 × 8 with 2 × 4 blocks is 2 × 2, not 1 × 2.
    let mut b = fp8_weight();
    b.f32s(&name("weight_scale_inv"), &[1, 2], &[1.0; 2]);
    let err = load(&b, fp8_block_config(2, 4), P, 4, 8).unwrap_err();
    assert!(
        matches!(&err, QuantError::Tensor(TensorError::WrongShape { tensor, expected, .. })
        if *tensor == name("weight_scale_inv") && *expected == [2, 2]),
        "{err:?}"
    );
    // Per-channel config with a per-tensor scale, and the reverse.
    let mut b = fp8_weight();
    b.f32s(&name("weight_scale"), &[1], &[1.0]);
    let err = load(&b, ct_config("channel"), P, 4, 8).unwrap_err();
    assert!(
        matches!(&err, QuantError::Tensor(TensorError::WrongShape { tensor, .. }) if *tensor == name("weight_scale")),
        "{err:?}"
    );
    let mut b = fp8_weight();
    b.f32s(&name("weight_scale"), &[4, 1], &[1.0; 4]);
    let err = load(&b, ct_config("tensor"), P, 4, 8).unwrap_err();
    assert!(
        matches!(&err, QuantError::Tensor(TensorError::WrongShape { tensor, .. }) if *tensor == name("weight_scale")),
        "{err:?}"
    );
    // AWQ zeros of the wrong group count.
    let mut b = awq_parts(&["qzeros"]);
    b.i32s(&name("qzeros"), &[1, 2], &[0; 2]);
    let err = load(&b, awq_config(4), P, 16, 8).unwrap_err();
    assert!(
        matches!(&err, QuantError::Tensor(TensorError::WrongShape { tensor, .. }) if *tensor == name("qzeros")),
        "{err:?}"
    );
    // The layer is not the shape the model expects.
    let err = load(&awq_parts(&[]), awq_config(4), P, 16, 16).unwrap_err();
    assert!(
        matches!(&err, QuantError::Tensor(TensorError::WrongShape { tensor, .. }) if *tensor == name("qweight")),
        "{err:?}"
    );
}

#[test]
fn group_not_dividing() {
    let err = load(&awq_parts(&[]), awq_config(6), P, 16, 8).unwrap_err();
    assert!(
        matches!(&err, QuantError::GroupSize { tensor, group_size: 6, in_features: 8 } if *tensor == name("qweight")),
        "{err:?}"
    );
    assert_names(&err, &name("qweight"));
}

#[test]
fn unsupported_configs() {
    let config_err = |cfg: serde_json::Value, field: &str| {
        let err = QuantScheme::from_config(Some(&cfg)).unwrap_err();
        assert!(
            matches!(&err, QuantError::Config { field: f, .. } if f == field),
            "{err:?}"
        );
        assert_names(&err, field);
        err
    };
    let mut cfg = awq_config(128);
    cfg["bits"] = 8.into();
    config_err(cfg, "bits");
    let err = config_err(json!({"quant_method": "gptq", "bits": 4}), "quant_method");
    assert_names(&err, "gptq");
    config_err(json!({"bits": 4}), "quant_method");
    let mut cfg = awq_config(128);
    cfg["version"] = "gemv".into();
    config_err(cfg, "version");
    let mut cfg = awq_config(128);
    cfg["zero_point"] = false.into();
    config_err(cfg, "zero_point");
    let mut cfg = fp8_block_config(128, 128);
    cfg["activation_scheme"] = "static".into();
    config_err(cfg, "activation_scheme");
    let mut cfg = ct_config("channel");
    cfg["ignore"] = json!(["re:.*(gate|up_proj"]);
    config_err(cfg, "ignore");
    let mut cfg = ct_config("channel");
    cfg["config_groups"]["group_0"]["weights"]["num_bits"] = 4.into();
    config_err(cfg, "config_groups.group_0.weights.num_bits");
    let mut cfg = ct_config("channel");
    cfg["config_groups"]["group_0"]["input_activations"] =
        json!({"dynamic": false, "num_bits": 8, "type": "float", "strategy": "tensor"});
    config_err(cfg, "config_groups.group_0.input_activations");
    let mut cfg = ct_config("channel");
    cfg["format"] = "pack-quantized".into();
    config_err(cfg, "config_groups.group_0.format");
}

#[test]
fn ignored_modules_are_dense() {
    let mut b = StBuilder::default();
    b.bf16s("lm_head.weight", &[4, 8], &[0.5; 32])
        .bf16s(&name("weight"), &[4, 8], &[0.5; 32]);
    for cfg in [
        ct_config("channel"),
        fp8_block_config(128, 128),
        awq_config(4),
    ] {
        assert!(matches!(
            load(&b, cfg, "lm_head", 4, 8).unwrap(),
            Linear::Dense(_)
        ));
    }
    // A regex ignore entry.
    let mut cfg = ct_config("channel");
    cfg["ignore"] = json!(["lm_head", "re:.*self_attn\\.k_proj$"]);
    assert!(matches!(
        load(&b, cfg.clone(), P, 4, 8).unwrap(),
        Linear::Dense(_)
    ));
    // FP8 codes in an ignored module would run without a scale: refused.
    let mut b = StBuilder::default();
    b.add("lm_head.weight", "F8_E4M3", &[4, 8], vec![0x38; 32]);
    let err = load(&b, ct_config("channel"), "lm_head", 4, 8).unwrap_err();
    assert!(matches!(err, QuantError::Invalid { .. }), "{err:?}");
    assert_names(&err, "lm_head.weight");
    // And so is an unquantized scheme meeting FP8 codes.
    let err = Linear::load(&b.store(), "lm_head", &QuantScheme::None, 4, 8).unwrap_err();
    assert_names(&err, "lm_head.weight");
}
