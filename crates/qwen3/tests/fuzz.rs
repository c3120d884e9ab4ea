//! Mutated checkpoints: `config.json` fields, `quantization_config` fields and the bytes of
//! `model.safetensors` (header and body) of small fixtures, copied into a temporary directory.
//! The property, for every mutation: `Model::load` returns `Ok` or a typed error, never
//! panics; and a model that loads runs a short prompt to finite logits or to a typed error
//! (`NonFiniteLogits` for a weight mutated into NaN, `ContextFull` for a tiny context...). A
//! panic, an abort (a huge allocation) or a hang fails the run.
//!
//! Bounded to a few seconds: the fixtures are the smallest ones (two layers, hidden 128) and
//! each property runs a few dozen cases; the case counts are the knob.

use nano_infer_qwen3::{LoadOptions, Model};
use proptest::prelude::*;
use serde_json::Value;
use std::path::Path;

mod common;
use common::{copy_fixture, tensor_range, TempDir};

/// Loads `dir`; if that works, runs a three-token prompt and one decode step. Errors are fine
/// (they are typed by construction: `ModelError`); non-finite logits returned as `Ok` are not.
fn load_and_run(dir: &Path) -> Result<(), TestCaseError> {
    let Ok(model) = Model::load(dir, &LoadOptions::default()) else {
        return Ok(());
    };
    let vocab = model.vocab_size();
    let mut session = model.session();
    let ids: Vec<u32> = [1u32, 2, 3].iter().map(|&i| i % vocab as u32).collect();
    if let Ok(logits) = session.prefill(&ids) {
        prop_assert_eq!(logits.len(), vocab);
        prop_assert!(
            logits.iter().all(|v| v.is_finite()),
            "non-finite logits returned as Ok"
        );
        if let Ok(logits) = session.decode(0) {
            prop_assert!(
                logits.iter().all(|v| v.is_finite()),
                "non-finite logits returned as Ok"
            );
        }
    }
    Ok(())
}

/// A JSON value of the kinds config files hold, biased towards the edges: zero, one, huge,
/// negative, fractional and out-of-range numbers, strings the parsers look for, nesting.
fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        (0u64..5).prop_map(Value::from),
        (0u64..300).prop_map(Value::from),
        prop_oneof![
            Just(64u64),
            Just(128),
            Just(256),
            Just(1 << 31),
            Just(1 << 32),
            Just(1_000_000_000),
            Just(u64::MAX)
        ]
        .prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        (-1i64..0).prop_map(Value::from),
        prop_oneof![
            Just(0.5f64),
            Just(-1.0),
            Just(1e-320),
            Just(1e10),
            Just(1e39),
            Just(1e308)
        ]
        .prop_map(Value::from),
        prop_oneof![
            Just("silu"),
            Just("gelu"),
            Just("yarn"),
            Just("default"),
            Just("linear"),
            Just("awq"),
            Just("gemm"),
            Just("fp8"),
            Just("e4m3"),
            Just("e5m2"),
            Just("compressed-tensors"),
            Just("float-quantized"),
            Just("tensor"),
            Just("channel"),
            Just("block"),
            Just("float"),
            Just("int"),
            Just("lm_head"),
            Just("Linear"),
            Just("qwen3"),
            Just("")
        ]
        .prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(
                prop_oneof![
                    Just("rope_type".to_string()),
                    Just("factor".to_string()),
                    Just("original_max_position_embeddings".to_string()),
                    Just("num_bits".to_string()),
                    Just("strategy".to_string()),
                    Just("type".to_string()),
                    Just("block_structure".to_string()),
                    "[a-z_]{1,8}"
                ],
                inner,
                0..4
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Every path to a value inside `v` (object keys and array indices), `v` itself included.
fn paths(v: &Value, prefix: &mut Vec<PathStep>, out: &mut Vec<Vec<PathStep>>) {
    out.push(prefix.clone());
    match v {
        Value::Object(map) => {
            for (k, child) in map {
                prefix.push(PathStep::Key(k.clone()));
                paths(child, prefix, out);
                prefix.pop();
            }
        }
        Value::Array(list) => {
            for (i, child) in list.iter().enumerate() {
                prefix.push(PathStep::Index(i));
                paths(child, prefix, out);
                prefix.pop();
            }
        }
        _ => {}
    }
}

#[derive(Clone, Debug)]
enum PathStep {
    Key(String),
    Index(usize),
}

fn at_path<'a>(v: &'a mut Value, path: &[PathStep]) -> &'a mut Value {
    path.iter().fold(v, |v, step| match step {
        PathStep::Key(k) => &mut v[k.as_str()],
        PathStep::Index(i) => &mut v[*i],
    })
}

/// One edit of a JSON document: replace the value at a path, delete an object key, or add a
/// key to an object.
#[derive(Clone, Debug)]
enum Edit {
    Replace(prop::sample::Index, Value),
    Delete(prop::sample::Index),
    Add(prop::sample::Index, String, Value),
}

fn arb_edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        6 => (any::<prop::sample::Index>(), arb_json()).prop_map(|(i, v)| Edit::Replace(i, v)),
        2 => any::<prop::sample::Index>().prop_map(Edit::Delete),
        1 => (any::<prop::sample::Index>(), "[a-z_]{1,12}", arb_json())
            .prop_map(|(i, k, v)| Edit::Add(i, k, v)),
    ]
}

/// Applies `edits` to the subtree of `doc` at `root` (the whole document when empty).
fn apply(doc: &mut Value, root: &[PathStep], edits: &[Edit]) {
    for edit in edits {
        let sub = at_path(doc, root);
        let mut all = Vec::new();
        paths(sub, &mut Vec::new(), &mut all);
        match edit {
            Edit::Replace(i, v) => *at_path(sub, i.get(&all).as_slice()) = v.clone(),
            Edit::Delete(i) => {
                let path = i.get(&all);
                if let Some((PathStep::Key(k), parent)) = path.split_last() {
                    if let Value::Object(map) = at_path(sub, parent) {
                        map.remove(k);
                    }
                }
            }
            Edit::Add(i, k, v) => {
                if let Value::Object(map) = at_path(sub, i.get(&all).as_slice()) {
                    map.insert(k.clone(), v.clone());
                }
            }
        }
    }
}

/// A fixture copy, and its `config.json` as parsed.
fn fixture_copy(name: &str) -> (TempDir, Value) {
    let dir = copy_fixture(name);
    let text = std::fs::read_to_string(dir.path().join("config.json")).unwrap();
    (dir, serde_json::from_str(&text).unwrap())
}

const QUANTIZED: [&str; 5] = [
    "awq_f16",
    "fp8_block_f32scale",
    "fp8_dynamic",
    "fp8_tensor",
    "fp8_tensor_e5m2",
];

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    /// `config.json` with one to three fields replaced, deleted or added, anywhere in it.
    #[test]
    fn config_json_mutations(edits in prop::collection::vec(arb_edit(), 1..4)) {
        let (dir, mut config) = fixture_copy("f16");
        apply(&mut config, &[], &edits);
        std::fs::write(dir.path().join("config.json"), config.to_string()).unwrap();
        load_and_run(dir.path())?;
    }

    /// The top-level counts and scalars, each set to an edge value: what sizes buffers.
    #[test]
    fn config_counts(
        field in prop::sample::select(&[
            "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
            "num_attention_heads", "num_key_value_heads", "head_dim", "max_position_embeddings",
            "rope_theta", "rms_norm_eps", "eos_token_id", "bos_token_id", "rope_scaling",
        ][..]),
        value in arb_json(),
    ) {
        let (dir, mut config) = fixture_copy("f16");
        config[field] = value;
        std::fs::write(dir.path().join("config.json"), config.to_string()).unwrap();
        load_and_run(dir.path())?;
    }

    /// `quantization_config` of an AWQ, FP8-block or compressed-tensors fixture, mutated
    /// inside (or replaced whole when the edit picks its root).
    #[test]
    fn quantization_config_mutations(
        fixture in prop::sample::select(&QUANTIZED[..]),
        edits in prop::collection::vec(arb_edit(), 1..4),
    ) {
        let (dir, mut config) = fixture_copy(fixture);
        apply(&mut config, &[PathStep::Key("quantization_config".into())], &edits);
        std::fs::write(dir.path().join("config.json"), config.to_string()).unwrap();
        load_and_run(dir.path())?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    /// Digits of the safetensors header changed (shapes and offsets move, the JSON stays
    /// valid) and bytes of the length prefix or header flipped.
    #[test]
    fn safetensors_header_mutations(
        fixture in prop::sample::select(&["f16", "awq_f16", "fp8_tensor"][..]),
        digits in prop::collection::vec((any::<prop::sample::Index>(), 0u8..10), 0..4),
        flips in prop::collection::vec((any::<prop::sample::Index>(), 0u8..8), 0..3),
    ) {
        let dir = copy_fixture(fixture);
        let path = dir.path().join("model.safetensors");
        let mut bytes = std::fs::read(&path).unwrap();
        let header_end = 8 + u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
        let positions: Vec<usize> = (8..header_end).filter(|&i| bytes[i].is_ascii_digit()).collect();
        for (at, d) in digits {
            bytes[*at.get(&positions)] = b'0' + d;
        }
        for (at, bit) in flips {
            bytes[at.index(header_end)] ^= 1 << bit;
        }
        std::fs::write(&path, bytes).unwrap();
        load_and_run(dir.path())?;
    }

    /// Bytes of one tensor overwritten (a weight, a scale, a norm, AWQ codes): NaN, infinity
    /// and huge values must end as a load error or a typed forward error, never as logits.
    #[test]
    fn safetensors_body_mutations(
        fixture in prop::sample::select(&["f16", "awq_f16", "fp8_block_f32scale", "fp8_tensor"][..]),
        tensor in any::<prop::sample::Index>(),
        writes in prop::collection::vec(
            // Biased towards the high bytes of NaN and infinity in every float format.
            (any::<prop::sample::Index>(), prop_oneof![any::<u8>(), Just(0x7Fu8), Just(0xFF)]),
            1..16,
        ),
    ) {
        let dir = copy_fixture(fixture);
        let path = dir.path().join("model.safetensors");
        let mut bytes = std::fs::read(&path).unwrap();
        let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
        let header: serde_json::Map<String, Value> = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
        let names: Vec<&String> = header.keys().filter(|k| *k != "__metadata__").collect();
        let (range, _) = tensor_range(&bytes, tensor.get(&names).as_str());
        if !range.is_empty() {
            for (at, value) in writes {
                bytes[range.start + at.index(range.len())] = value;
            }
        }
        std::fs::write(&path, bytes).unwrap();
        load_and_run(dir.path())?;
    }
}
