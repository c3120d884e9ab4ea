//! Inputs that must never become a wrong answer, a crash or a hang: prompt caches written
//! concurrently or by other weights, NaN and infinity in weights, scales and cached KV, and
//! `config.json` / `generation_config.json` values that are out of range. Each test alters a
//! copy of a fixture in a temporary directory.

use nano_infer_quant::QuantError;
use nano_infer_qwen3::{
    model_fingerprint, GenerationDefaults, KvDtype, LoadOptions, Model, ModelError,
    PromptCacheError,
};
use nano_infer_tensor::TensorError;
use std::path::Path;
use std::time::{Duration, Instant};

mod common;
use common::{copy_fixture, edit_config, fixture_dir, patch_tensor, poison_tensor, TempDir};

fn load(dir: &Path) -> Result<Model, ModelError> {
    Model::load(dir, &LoadOptions::default())
}

fn load_kv(dir: &Path, kv_dtype: KvDtype) -> Model {
    Model::load(
        dir,
        &LoadOptions {
            kv_dtype,
            ..LoadOptions::default()
        },
    )
    .unwrap()
}

/// A prompt of `n` tokens, different for each `seed`.
fn prompt(n: usize, seed: u32) -> Vec<u32> {
    (0..n as u32)
        .map(|i| (i * 37 + seed * 101 + 5) % 1000)
        .collect()
}

/// The tensor error behind a load error, whichever layer wrapped it.
fn tensor_error(err: &ModelError) -> &TensorError {
    match err {
        ModelError::Tensor(e) => e,
        ModelError::Quant(QuantError::Tensor(e)) => e,
        other => panic!("not a tensor error: {other:?}"),
    }
}

mod prompt_cache {
    use super::*;

    /// Same config, same file names and sizes, one tensor's bytes changed (its elements
    /// reversed): the fingerprint cannot tell, the recomputed last position does.
    #[test]
    fn a_cache_from_other_weights_of_the_same_shapes_is_refused() {
        for (tensor, kv_dtype) in [
            // An MLP weight of the first layer: reaches the cached KV of the later layers.
            ("model.layers.0.mlp.up_proj.weight", KvDtype::F32),
            // The last layer's value projection, with a bf16 cache.
            ("model.layers.3.self_attn.v_proj.weight", KvDtype::Bf16),
        ] {
            let original = copy_fixture("bf16");
            let changed = copy_fixture("bf16");
            patch_tensor(changed.path(), "model.safetensors", tensor, |bytes, _| {
                let mut elems: Vec<[u8; 2]> = bytes.chunks_exact(2).map(|c| [c[0], c[1]]).collect();
                elems.reverse();
                bytes.copy_from_slice(&elems.concat());
            });
            let (a, b) = (
                load_kv(original.path(), kv_dtype),
                load_kv(changed.path(), kv_dtype),
            );
            assert_eq!(
                model_fingerprint(&a).unwrap(),
                model_fingerprint(&b).unwrap(),
                "the test needs files the fingerprint cannot tell apart"
            );
            let cache = original.path().join("prompt.cache");
            let ids = prompt(40, 1);
            let mut s = a.session();
            s.prefill(&ids).unwrap();
            s.save_prompt_cache(&cache).unwrap();

            let mut other = b.session();
            other.prefill(&[1, 2]).unwrap();
            let err = other.load_prompt_cache(&cache, &ids).unwrap_err();
            assert!(
                matches!(err, PromptCacheError::WeightsMismatch { position: 39, .. }),
                "{tensor}: {err:?}"
            );
            assert!(err.is_stale());
            let msg = err.to_string();
            assert!(!msg.contains('\n') && msg.contains("prompt.cache"), "{msg}");
            assert_eq!(other.position(), 0, "a refused cache leaves nothing behind");
            assert!(other.tokens().is_empty());

            // The model that wrote it still uses it.
            assert_eq!(a.session().load_prompt_cache(&cache, &ids).unwrap(), 40);
        }
    }

    /// A cache written by a prefill (panel kernels) and checked by a one-token pass (GEMV
    /// kernels), on every fixture format and KV type: never a false mismatch.
    #[test]
    fn the_writing_model_always_passes_its_own_check() {
        for name in ["bf16", "f16", "awq", "fp8_block", "fp8_dynamic"] {
            for kv_dtype in [KvDtype::F32, KvDtype::Bf16, KvDtype::F16] {
                let model = load_kv(&fixture_dir(name), kv_dtype);
                let tmp = TempDir::new("own-check");
                let cache = tmp.path().join("c");
                let ids = prompt(50, 2);
                let mut s = model.session();
                s.prefill(&ids).unwrap();
                s.save_prompt_cache(&cache).unwrap();
                for n in [1, 17, 50] {
                    let loaded = model.session().load_prompt_cache(&cache, &ids[..n]);
                    assert_eq!(loaded.unwrap(), n, "{name} {kv_dtype} prefix {n}");
                }
            }
        }
    }

    /// NaN in the cached keys or values: refused at load, naming where.
    #[test]
    fn a_cache_holding_nan_is_refused() {
        let model = load_kv(&fixture_dir("bf16"), KvDtype::F32);
        let tmp = TempDir::new("nan-cache");
        let cache = tmp.path().join("c");
        let ids = prompt(10, 3);
        let mut s = model.session();
        s.prefill(&ids).unwrap();
        s.save_prompt_cache(&cache).unwrap();
        let mut bytes = std::fs::read(&cache).unwrap();
        // Header (44 bytes) and 10 token ids, then layer 0's head 0 keys (10, 64) in f32, then
        // its values: the value at position 3, dim 5.
        let at = 44 + 4 * 10 + 10 * 64 * 4 + (3 * 64 + 5) * 4;
        bytes[at..at + 4].copy_from_slice(&f32::NAN.to_le_bytes());
        std::fs::write(&cache, &bytes).unwrap();
        let mut session = model.session();
        let err = session.load_prompt_cache(&cache, &ids).unwrap_err();
        assert!(
            matches!(
                err,
                PromptCacheError::NonFinite {
                    what: "value",
                    layer: 0,
                    position: 3,
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(!err.is_stale());
        assert_eq!(session.position(), 0);
    }

    /// Several threads write the same cache path at once while others read it: every write
    /// succeeds, every read sees a whole file of one of the writers, the file is valid
    /// afterwards and no temporary file is left behind.
    #[test]
    fn concurrent_writers_of_one_path() {
        let model = load_kv(&fixture_dir("f16"), KvDtype::F32);
        let tmp = TempDir::new("concurrent");
        let cache = tmp.path().join("shared.cache");
        let prompts: Vec<Vec<u32>> = (0..4).map(|w| prompt(20 + 30 * w as usize, w)).collect();
        {
            let mut s = model.session();
            s.prefill(&prompts[0]).unwrap();
            s.save_prompt_cache(&cache).unwrap();
        }
        std::thread::scope(|scope| {
            for p in &prompts {
                let (model, cache) = (&model, &cache);
                scope.spawn(move || {
                    let mut s = model.session();
                    s.prefill(p).unwrap();
                    for _ in 0..5 {
                        s.save_prompt_cache(cache).unwrap();
                    }
                });
            }
            for p in &prompts {
                let (model, cache) = (&model, &cache);
                scope.spawn(move || {
                    for _ in 0..10 {
                        let n = model.session().load_prompt_cache(cache, p).unwrap();
                        // A reader sees this prompt's writer (all of it) or another (nothing
                        // in common: the prompts differ from the first token).
                        assert!(n == 0 || n == p.len(), "read {n} of {}", p.len());
                    }
                });
            }
        });
        let found = prompts
            .iter()
            .filter(|p| model.session().load_prompt_cache(&cache, p).unwrap() == p.len())
            .count();
        assert_eq!(found, 1, "the file is exactly one writer's");
        let names: Vec<String> = std::fs::read_dir(tmp.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["shared.cache"], "temporary files left behind");
    }

    /// A cache path that is a FIFO or a directory is an error naming it, without waiting.
    #[cfg(unix)]
    #[test]
    fn a_cache_path_that_is_not_a_file_is_refused_without_waiting() {
        let tmp = TempDir::new("fifo-cache");
        let fifo = tmp.path().join("fifo.cache");
        let status = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .expect("run mkfifo");
        assert!(status.success());
        std::fs::create_dir(tmp.path().join("dir.cache")).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let dir = tmp.path().to_owned();
        std::thread::spawn(move || {
            let model = load_kv(&fixture_dir("f16"), KvDtype::F32);
            let results: Vec<String> = ["fifo.cache", "dir.cache"]
                .iter()
                .map(|name| {
                    let err = model
                        .session()
                        .load_prompt_cache(dir.join(name), &[1, 2])
                        .unwrap_err();
                    assert!(matches!(err, PromptCacheError::Io { .. }), "{err:?}");
                    err.to_string()
                })
                .collect();
            let _ = tx.send(results);
        });
        let messages = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("loading a FIFO prompt cache hung");
        for (msg, name) in messages.iter().zip(["fifo.cache", "dir.cache"]) {
            assert!(
                msg.contains(name) && msg.contains("not a regular file"),
                "{msg}"
            );
        }
    }

    /// A write that cannot happen is a typed error, and leaves no temporary file.
    #[test]
    fn a_failed_write_is_an_error_and_leaves_nothing() {
        let model = load_kv(&fixture_dir("f16"), KvDtype::F32);
        let tmp = TempDir::new("failed-write");
        let mut s = model.session();
        s.prefill(&prompt(5, 4)).unwrap();
        // The target is a directory: the rename over it fails after the temporary file was
        // written.
        let target = tmp.path().join("dir.cache");
        std::fs::create_dir(&target).unwrap();
        std::fs::write(target.join("keep"), b"x").unwrap();
        let err = s.save_prompt_cache(&target).unwrap_err();
        assert!(matches!(err, PromptCacheError::Io { .. }), "{err:?}");
        assert!(err.to_string().contains("dir.cache"), "{err}");
        let mut names: Vec<String> = std::fs::read_dir(tmp.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, ["dir.cache"]);
        // A directory that does not exist.
        let err = s
            .save_prompt_cache(tmp.path().join("no/such/dir/c"))
            .unwrap_err();
        assert!(matches!(err, PromptCacheError::Io { .. }), "{err:?}");
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
