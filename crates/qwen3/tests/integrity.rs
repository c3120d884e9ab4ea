//! Inputs that must never become a wrong answer, a crash or a hang: prompt caches written
//! concurrently or by other weights, NaN and infinity in weights, scales and cached KV, and
//! `config.json` / `generation_config.json` values that are out of range. Each test alters a
//! copy of a fixture in a temporary directory.

use nano_infer_quant::QuantError;
use nano_infer_qwen3::{GenerationDefaults, LoadOptions, Model, ModelError};
use nano_infer_tensor::TensorError;
use std::path::Path;
use std::time::{Duration, Instant};

mod common;
use common::{copy_fixture, edit_config, fixture_dir, poison_tensor, TempDir};

fn load(dir: &Path) -> Result<Model, ModelError> {
    Model::load(dir, &LoadOptions::default())
}

/// The tensor error behind a load error, whichever layer wrapped it.
fn tensor_error(err: &ModelError) -> &TensorError {
    match err {
        ModelError::Tensor(e) => e,
        ModelError::Quant(QuantError::Tensor(e)) => e,
        other => panic!("not a tensor error: {other:?}"),
    }
}

mod non_finite {
    use super::*;

    /// A NaN in a weight matrix: loads (weights are not scanned by default), then the forward
    /// pass is an error naming the position instead of logits of NaN (greedy id 0); the
    /// session is unchanged. `check_tensors` names the tensor.
    #[test]
    fn nan_weight_gives_a_typed_forward_error_and_check_tensors_names_it() {
        let dir = copy_fixture("bf16");
        let name = "model.layers.2.mlp.down_proj.weight";
        poison_tensor(dir.path(), name, 1234, false);
        let model = load(dir.path()).unwrap();
        let mut session = model.session();
        let err = session.prefill(&[1, 2, 3, 4]).unwrap_err();
        assert!(
            matches!(
                err,
                ModelError::NonFiniteLogits {
                    sequence: 0,
                    position: 3
                }
            ),
            "{err:?}"
        );
        assert_eq!(session.position(), 0, "a failed pass appends nothing");

        let err = model.check_tensors().unwrap_err();
        let TensorError::NonFinite { tensor, index, .. } = tensor_error(&err) else {
            panic!("{err:?}");
        };
        assert_eq!((tensor.as_str(), *index), (name, 1234));
        assert!(err.to_string().contains(name), "{err}");

        // The unaltered fixture passes.
        load(&fixture_dir("bf16")).unwrap().check_tensors().unwrap();
    }

    /// Scales are always checked at load: AWQ `scales`, FP8 `weight_scale_inv` and
    /// compressed-tensors `weight_scale`; so are norms.
    #[test]
    fn non_finite_scales_and_norms_are_load_errors() {
        for (fixture, tensor, inf) in [
            ("awq", "model.layers.1.mlp.up_proj.scales", true),
            ("awq_f16", "model.layers.0.self_attn.k_proj.scales", false),
            (
                "fp8_block",
                "model.layers.0.self_attn.q_proj.weight_scale_inv",
                false,
            ),
            (
                "fp8_block_f32scale",
                "model.layers.1.mlp.down_proj.weight_scale_inv",
                true,
            ),
            (
                "fp8_dynamic",
                "model.layers.1.mlp.gate_proj.weight_scale",
                false,
            ),
            (
                "fp8_tensor",
                "model.layers.0.self_attn.o_proj.weight_scale",
                true,
            ),
            (
                "bf16",
                "model.layers.1.post_attention_layernorm.weight",
                false,
            ),
            ("bf16", "model.norm.weight", true),
        ] {
            let dir = copy_fixture(fixture);
            poison_tensor(dir.path(), tensor, 0, inf);
            let err = load(dir.path()).unwrap_err();
            let TensorError::NonFinite { tensor: found, .. } = tensor_error(&err) else {
                panic!("{fixture} {tensor}: {err:?}");
            };
            assert_eq!(found, tensor);
            assert!(err.to_string().contains(tensor), "{err}");
        }
    }
}

mod config {
    use super::*;

    /// A layer count far past the checkpoint's is an error naming both, quickly, without
    /// sizing anything by it (it used to abort on a 2.4 TB allocation).
    #[test]
    fn a_huge_layer_count_is_a_clean_error() {
        let dir = copy_fixture("bf16");
        for layers in [5u64, 1_000_000_000, u32::MAX as u64 * 4] {
            edit_config(dir.path(), |c| c["num_hidden_layers"] = layers.into());
            let start = Instant::now();
            let err = load(dir.path()).unwrap_err();
            assert!(start.elapsed() < Duration::from_secs(5));
            assert!(
                matches!(err, ModelError::LayerCount { present: 4, config, .. } if config as u64 == layers),
                "{err:?}"
            );
            let msg = err.to_string();
            assert!(
                msg.contains("config.json") && msg.contains("num_hidden_layers"),
                "{msg}"
            );
        }
        // Fewer layers than the checkpoint holds is what transformers accepts too.
        edit_config(dir.path(), |c| c["num_hidden_layers"] = 2.into());
        assert_eq!(load(dir.path()).unwrap().config().num_hidden_layers, 2);
    }

    /// Counts whose products overflow are refused before anything multiplies them.
    #[test]
    fn overflowing_products_are_config_errors() {
        let dir = copy_fixture("bf16");
        edit_config(dir.path(), |c| {
            c["num_attention_heads"] = (1u64 << 40).into();
            c["num_key_value_heads"] = (1u64 << 40).into();
            c["head_dim"] = (1u64 << 40).into();
        });
        let err = load(dir.path()).unwrap_err();
        assert!(matches!(err, ModelError::Config { .. }), "{err:?}");
        assert!(err.to_string().contains("overflows"), "{err}");
    }

    /// `eos_token_id` that is not a token id is an error naming the file and the field, in
    /// config.json and in generation_config.json; never an empty stop list.
    #[test]
    fn invalid_eos_token_ids_are_errors() {
        let bad: [serde_json::Value; 5] = [
            "x".into(),
            (-1).into(),
            1e10.into(),
            serde_json::json!([151645, "x"]),
            serde_json::json!({"id": 1}),
        ];
        for value in &bad {
            let dir = copy_fixture("f16");
            edit_config(dir.path(), |c| c["eos_token_id"] = value.clone());
            let err = load(dir.path()).unwrap_err();
            let msg = err.to_string();
            assert!(
                msg.contains("config.json") && msg.contains("eos_token_id"),
                "{value}: {msg}"
            );
            assert!(
                GenerationDefaults::from_dir(dir.path(), Some(value)).is_err(),
                "{value}"
            );

            let dir = TempDir::new("gen-eos");
            let text = serde_json::json!({ "eos_token_id": value }).to_string();
            std::fs::write(dir.path().join("generation_config.json"), text).unwrap();
            let err = GenerationDefaults::from_dir(dir.path(), None).unwrap_err();
            let msg = err.to_string();
            assert!(
                msg.contains("generation_config.json") && msg.contains("eos_token_id"),
                "{value}: {msg}"
            );
        }
        // The valid forms still work, and null is "none".
        let dir = TempDir::new("gen-eos-ok");
        for (value, want) in [
            (serde_json::json!(7), vec![7]),
            (serde_json::json!([151645, 151643]), vec![151645, 151643]),
            (serde_json::json!(null), vec![3]),
        ] {
            let text = serde_json::json!({ "eos_token_id": value }).to_string();
            std::fs::write(dir.path().join("generation_config.json"), text).unwrap();
            let d = GenerationDefaults::from_dir(dir.path(), Some(&3.into())).unwrap();
            assert_eq!(d.stop_ids, want, "{value}");
        }
    }

    /// generation_config.json that is not an object, or whose numbers are of the wrong type or
    /// out of f32's range, is an error naming the file and the field.
    #[test]
    fn invalid_generation_configs_are_errors() {
        let dir = TempDir::new("gen-config");
        for (text, needle) in [
            ("[]", "array"),
            ("7", "number"),
            (r#"{"temperature": 1e308}"#, "temperature"),
            (r#"{"top_p": -1e39}"#, "top_p"),
            (r#"{"temperature": "hot"}"#, "temperature"),
            (r#"{"top_k": -1}"#, "top_k"),
            (r#"{"top_k": 2.5}"#, "top_k"),
            (r#"{"max_new_tokens": "many"}"#, "max_new_tokens"),
            (r#"{"do_sample": 1}"#, "do_sample"),
            ("{", "JSON"),
        ] {
            std::fs::write(dir.path().join("generation_config.json"), text).unwrap();
            let err = GenerationDefaults::from_dir(dir.path(), None).unwrap_err();
            let msg = err.to_string();
            assert!(
                msg.contains("generation_config.json") && msg.contains(needle),
                "{text}: {msg}"
            );
        }
        std::fs::write(
            dir.path().join("generation_config.json"),
            r#"{"temperature": 0.6, "top_k": 20, "top_p": 0.95, "min_p": null, "do_sample": true}"#,
        )
        .unwrap();
        let d = GenerationDefaults::from_dir(dir.path(), None).unwrap();
        assert_eq!(
            (d.sampling.temperature, d.sampling.top_k, d.sampling.top_p),
            (0.6, 20, 0.95)
        );
    }

    /// A config.json or generation_config.json that is a FIFO is reported, not waited on.
    #[cfg(unix)]
    #[test]
    fn json_files_that_are_fifos_do_not_hang() {
        let dir = copy_fixture("f16");
        let mkfifo = |path: &Path| {
            let status = std::process::Command::new("mkfifo")
                .arg(path)
                .status()
                .expect("run mkfifo");
            assert!(status.success());
        };
        mkfifo(&dir.path().join("generation_config.json"));
        std::fs::remove_file(dir.path().join("config.json")).unwrap();
        mkfifo(&dir.path().join("config.json"));
        let path = dir.path().to_owned();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let config = load(&path).map(|_| ()).map_err(|e| e.to_string());
            let generation = GenerationDefaults::from_dir(&path, None)
                .map(|_| ())
                .map_err(|e| e.to_string());
            let _ = tx.send((config, generation));
        });
        let (config, generation) = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("reading a FIFO hung");
        let config = config.unwrap_err();
        assert!(
            config.contains("config.json") && config.contains("not a regular file"),
            "{config}"
        );
        let generation = generation.unwrap_err();
        assert!(
            generation.contains("generation_config.json"),
            "{generation}"
        );
    }
}
