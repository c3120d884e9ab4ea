//! [`LinearSource`]: the sizes a memory budget plans with equal what the finished layers hold,
//! and a layer finished into a spill file is all mapped (nothing owned) yet computes exactly
//! what the in-memory layer computes.

use crate::util::{fixture_dir, layer0_linears, Rng};
use nano_infer_quant::{AwqActivations, Linear, LinearOptions, LinearSource, QuantScheme};
use nano_infer_simd::Kernels;
use nano_infer_tensor::{SpillFile, WeightStore};

/// Every layer-0 linear of a fixture, with its store and scheme.
fn layer0(name: &str) -> (WeightStore, QuantScheme, Vec<(String, usize, usize)>) {
    let dir = fixture_dir(name);
    let cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    let scheme = QuantScheme::from_config(cfg.get("quantization_config")).unwrap();
    (
        WeightStore::open_dir(&dir).unwrap(),
        scheme,
        layer0_linears(&cfg),
    )
}

fn forward(linear: &Linear, x: &[f32]) -> Vec<f32> {
    let mut out = vec![0f32; x.len() / linear.in_features() * linear.out_features()];
    linear.forward(Kernels::best(), x, &mut out, &mut Vec::new());
    out
}

#[test]
fn planned_sizes_are_the_finished_sizes_and_spilled_layers_own_nothing() {
    let dir = std::env::temp_dir().join(format!("nano-infer-quant-spill-{}", std::process::id()));
    let mut spill = SpillFile::create_in(&dir).unwrap();
    let mut checked_awq = 0;
    for name in ["awq", "awq_f16", "bf16", "fp8_block", "fp8_dynamic"] {
        let (store, scheme, linears) = layer0(name);
        for activations in [AwqActivations::F32, AwqActivations::Int8] {
            let options = LinearOptions {
                awq_activations: activations,
            };
            for (i, (prefix, rows, k)) in linears.iter().enumerate() {
                let open = || LinearSource::open(&store, prefix, &scheme, *rows, *k, options);
                let source = open().unwrap();
                let (planned, movable) = (source.weight_bytes(), source.movable_bytes());
                let awq = source.needs_spill();
                let memory = source.finish().unwrap();
                let spilled = open().unwrap().finish_spilled(&mut spill).unwrap();
                let what = format!("{name} {prefix} {activations:?}");
                assert_eq!(memory.weight_bytes(), planned, "{what}: planned size");
                assert_eq!(spilled.weight_bytes(), planned, "{what}: spilled size");
                let mapped: usize = spilled
                    .mapped_tensors()
                    .iter()
                    .map(|t| t.bytes().len())
                    .sum();
                // What the budget may page out is exactly what the finished layer maps.
                assert_eq!(mapped, movable, "{what}: movable bytes");
                assert_eq!(
                    spilled.owned_bytes(),
                    planned - movable,
                    "{what}: owned bytes"
                );
                if awq {
                    checked_awq += 1;
                    assert_eq!(movable, planned, "{what}: all of an AWQ layer moves");
                    assert_eq!(spilled.owned_bytes(), 0, "{what}: nothing left on the heap");
                    assert_eq!(
                        memory.mapped_tensors().len(),
                        0,
                        "{what}: heap copy maps nothing"
                    );
                    assert_eq!(memory.owned_bytes(), planned, "{what}: heap copy owns all");
                }
                assert_eq!(memory.format_name(), spilled.format_name(), "{what}");
                // Same bytes, same kernels: bit-identical results from the file mapping.
                let x = Rng::new(i as u64 + 7).vec(3 * k);
                assert_eq!(forward(&memory, &x), forward(&spilled, &x), "{what}");
                assert_eq!(memory.dequantize(), spilled.dequantize(), "{what}");
            }
        }
    }
    assert_eq!(checked_awq, 2 * 2 * 7, "both AWQ fixtures, both layouts");
    drop(spill);
    std::fs::remove_dir_all(&dir).unwrap();
}
