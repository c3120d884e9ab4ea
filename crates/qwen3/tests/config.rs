//! `config.json` parsing and validation, and RoPE / YaRN parameters.

use nano_infer_qwen3::{ModelError, Qwen3Config, Rope};
use std::path::Path;

const QWEN3_4B: &str = r#"{
  "architectures": ["Qwen3ForCausalLM"], "attention_bias": false, "bos_token_id": 151643,
  "eos_token_id": 151645, "head_dim": 128, "hidden_act": "silu", "hidden_size": 2560,
  "intermediate_size": 9728, "max_position_embeddings": 40960, "model_type": "qwen3",
  "num_attention_heads": 32, "num_hidden_layers": 36, "num_key_value_heads": 8,
  "rms_norm_eps": 1e-06, "rope_scaling": null, "rope_theta": 1000000,
  "tie_word_embeddings": true, "torch_dtype": "bfloat16", "vocab_size": 151936
}"#;

fn parse(text: &str) -> Result<Qwen3Config, ModelError> {
    Qwen3Config::from_json(text, Path::new("config.json"))
}

fn edit(key: &str, value: serde_json::Value) -> String {
    let mut json: serde_json::Value = serde_json::from_str(QWEN3_4B).unwrap();
    json[key] = value;
    json.to_string()
}

fn error_of(text: &str) -> String {
    parse(text)
        .expect_err("config must be rejected")
        .to_string()
}

#[test]
fn qwen3_4b_shape_with_explicit_head_dim() {
    let c = parse(QWEN3_4B).unwrap();
    assert_eq!(
        (c.hidden_size, c.head_dim(), c.q_dim(), c.kv_dim()),
        (2560, 128, 4096, 1024)
    );
    assert!(c.tie_word_embeddings);
    assert_eq!(c.torch_dtype.as_deref(), Some("bfloat16"));
}

#[test]
fn newer_dtype_key_is_accepted() {
    let mut json: serde_json::Value = serde_json::from_str(QWEN3_4B).unwrap();
    json.as_object_mut().unwrap().remove("torch_dtype");
    json["dtype"] = "float16".into();
    assert_eq!(
        parse(&json.to_string()).unwrap().torch_dtype.as_deref(),
        Some("float16")
    );
}

#[test]
fn rejects_other_architectures() {
    let mut json: serde_json::Value = serde_json::from_str(QWEN3_4B).unwrap();
    json["architectures"] = serde_json::json!(["LlamaForCausalLM"]);
    json["model_type"] = "llama".into();
    let msg = error_of(&json.to_string());
    assert!(
        msg.contains("LlamaForCausalLM") && msg.contains("config.json"),
        "{msg}"
    );
}

#[test]
fn rejects_inconsistent_sizes() {
    assert!(error_of(&edit("num_key_value_heads", 7.into()))
        .contains("multiple of num_key_value_heads"));
    assert!(error_of(&edit("hidden_size", 0.into())).contains("hidden_size must be positive"));
    assert!(error_of(&edit("head_dim", 127.into())).contains("even"));
    assert!(error_of(&edit("hidden_act", "gelu".into())).contains("gelu"));
    assert!(error_of(&edit("use_sliding_window", true.into())).contains("use_sliding_window"));
    assert!(error_of(&edit("vocab_size", "many".into())).contains("not a valid Qwen3 config"));
    let unknown_rope = serde_json::json!({"rope_type": "longrope", "factor": 2.0});
    assert!(error_of(&edit("rope_scaling", unknown_rope)).contains("longrope"));
}

#[test]
fn missing_directory_and_file_are_clear() {
    let msg = Qwen3Config::from_dir(Path::new("/nonexistent/model"))
        .unwrap_err()
        .to_string();
    assert!(msg.contains("/nonexistent/model"), "{msg}");
    let dir = std::env::temp_dir().join(format!("nano-infer-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let msg = Qwen3Config::from_dir(&dir).unwrap_err().to_string();
    assert!(msg.contains("config.json"), "{msg}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn default_rope_frequencies() {
    let c = parse(QWEN3_4B).unwrap();
    let rope = Rope::new(&c);
    assert_eq!(rope.inv_freq().len(), 64);
    assert_eq!(rope.inv_freq()[0], 1.0);
    // theta^(-2i/d) with theta = 1e6, d = 128, i = 32: 1e6^-0.5 = 1e-3.
    assert!((rope.inv_freq()[32] - 1e-3).abs() < 1e-9);
    assert_eq!(rope.attention_factor(), 1.0);
}

/// Qwen3's documented YaRN setting. Expected values computed independently from transformers'
/// `_compute_yarn_parameters` formula in float64 Python: correction range [23, 40],
/// attention factor 0.1·ln(4) + 1.
#[test]
fn yarn_matches_transformers() {
    let yarn = serde_json::json!({"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32768});
    let c = parse(&edit("rope_scaling", yarn)).unwrap();
    let rope = Rope::new(&c);
    let expected = [
        (0, 1.0),
        (10, 0.1154781984689458),
        (20, 0.01333521432163324),
        (30, 0.0010643609812470017),
        (40, 4.445698525097307e-05),
        (50, 5.133812566142866e-06),
        (63, 3.102344401879299e-07),
    ];
    for (i, want) in expected {
        let got = rope.inv_freq()[i] as f64;
        // Stored as f32: one rounding of a value computed in f64.
        assert!(
            (got - want).abs() <= want * 1e-7,
            "inv_freq[{i}] = {got}, want {want}"
        );
    }
    assert!((rope.attention_factor() as f64 - 1.138629436111989).abs() < 1e-7);
}

#[test]
fn rope_rotation_is_neox_rotate_half() {
    let c = parse(QWEN3_4B).unwrap();
    let rope = Rope::new(&c);
    // One 4-dim "head" at position 1 with inv_freq[0] = 1: pairs (x0, x2) and (x1, x3) rotate.
    let mut x = vec![0.0f32; 128];
    x[0] = 1.0;
    x[64] = 0.0;
    rope.apply(&mut x, 128, 1);
    assert!(
        (x[0] - 1f32.cos()).abs() < 1e-6 && (x[64] - 1f32.sin()).abs() < 1e-6,
        "{} {}",
        x[0],
        x[64]
    );
}
