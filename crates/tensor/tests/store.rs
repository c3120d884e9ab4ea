//! Model directories built at test time: a single file, shards behind an index, in memory.

use crate::util::{
    bf16_bytes, f32_bytes, serialize, small_image, TempDir, A_F32, B_BF16, D_I32, E_F16,
};
use half::bf16;
use nano_infer_tensor::{Dtype, SafetensorsFile, WeightStore};
use std::collections::BTreeSet;

fn sorted_names(store: &WeightStore) -> Vec<&str> {
    let set: BTreeSet<&str> = store.names().collect();
    set.into_iter().collect()
}

#[test]
fn single_file_directory() {
    let tmp = TempDir::new("single");
    let path = tmp.write("model.safetensors", small_image());
    let store = WeightStore::open_dir(tmp.path()).unwrap();
    assert_eq!(store.dir(), tmp.path());
    assert_eq!(store.files().len(), 1);
    assert_eq!(store.files()[0].path(), path);
    assert_eq!(
        store.total_bytes(),
        std::fs::metadata(&path).unwrap().len() as usize
    );
    assert_eq!(
        sorted_names(&store),
        ["a", "b", "c", "d", "e", "empty", "f"]
    );
    assert_eq!(
        store.files()[0].names().collect::<Vec<_>>(),
        ["a", "b", "c", "d", "e", "empty", "f"]
    );

    let a = store.get("a").unwrap();
    assert_eq!(
        (a.name(), a.dtype(), a.shape(), a.path()),
        ("a", Dtype::F32, &[2, 3][..], path.as_path())
    );
    assert_eq!(a.as_slice::<f32>().unwrap(), A_F32);
    assert_eq!(a.to_f32_vec().unwrap(), A_F32);
    let b = store.get("b").unwrap();
    assert_eq!(b.to_f32_vec().unwrap(), B_BF16);
    assert_eq!(b.as_slice::<bf16>().unwrap()[3], bf16::from_f32(96.0));
    assert_eq!(
        store.get("c").unwrap().as_slice::<u8>().unwrap(),
        [1, 2, 3, 4, 5]
    );
    assert_eq!(store.get("d").unwrap().as_slice::<i32>().unwrap(), D_I32);
    assert_eq!(store.get("e").unwrap().to_f32_vec().unwrap(), E_F16);
    let f = store.get("f").unwrap();
    assert_eq!(
        (f.dtype(), f.as_slice::<u8>().unwrap()),
        (Dtype::F8E4M3, &[0x38, 0xC0, 0x7E][..])
    );
    let empty = store.get("empty").unwrap();
    assert_eq!((empty.shape(), empty.numel()), (&[0, 4][..], 0));
    assert!(empty.as_slice::<f32>().unwrap().is_empty());
    assert!(empty.to_f32_vec().unwrap().is_empty());
    assert!(store.contains("a") && !store.contains("A"));
    assert!(store.get_opt("a").unwrap().is_some());
    assert_eq!(
        format!("{a:?}"),
        r#"Tensor { name: "a", dtype: F32, shape: [2, 3] }"#
    );
}

/// Two shards behind an index; the index wins over a stray `model.safetensors`.
#[test]
fn sharded_directory() {
    let tmp = TempDir::new("sharded");
    let embed = bf16_bytes(&[0.25; 12]);
    let norm = f32_bytes(&[1.0, 2.0, 3.0]);
    tmp.write(
        "one.safetensors",
        serialize(&[("embed", Dtype::BF16, &[4, 3], &embed)]),
    );
    tmp.write(
        "two.safetensors",
        serialize(&[
            ("norm", Dtype::F32, &[3], &norm),
            ("unlisted", Dtype::U8, &[1], &[9]),
        ]),
    );
    tmp.write("model.safetensors", [0u8; 3]); // corrupt, and must not be opened
    let index = serde_json::json!({
        "metadata": { "total_size": 36 },
        "weight_map": { "embed": "one.safetensors", "norm": "two.safetensors" },
    });
    tmp.write("model.safetensors.index.json", index.to_string());

    let store = WeightStore::open_dir(tmp.path()).unwrap();
    assert_eq!(store.files().len(), 2);
    // Only what the index names is reachable through the store.
    assert_eq!(sorted_names(&store), ["embed", "norm"]);
    assert!(!store.contains("unlisted"));
    let e = store.get("embed").unwrap();
    assert!(e.path().ends_with("one.safetensors"));
    assert_eq!(e.to_f32_vec().unwrap(), [0.25; 12]);
    let n = store.get("norm").unwrap();
    assert!(n.path().ends_with("two.safetensors"));
    assert_eq!(n.as_slice::<f32>().unwrap(), [1.0, 2.0, 3.0]);
    let expected: usize = ["one.safetensors", "two.safetensors"]
        .iter()
        .map(|f| std::fs::metadata(tmp.path().join(f)).unwrap().len() as usize)
        .sum();
    assert_eq!(store.total_bytes(), expected);
}

/// Many tensors in one shard open the shard once.
#[test]
fn a_shard_named_many_times_is_opened_once() {
    let tmp = TempDir::new("once");
    tmp.write("s.safetensors", small_image());
    let map: serde_json::Map<String, serde_json::Value> = ["a", "b", "c", "d", "e", "f", "empty"]
        .iter()
        .map(|t| (t.to_string(), "s.safetensors".into()))
        .collect();
    tmp.write(
        "model.safetensors.index.json",
        serde_json::json!({ "weight_map": map }).to_string(),
    );
    let store = WeightStore::open_dir(tmp.path()).unwrap();
    assert_eq!(store.files().len(), 1);
    assert_eq!(store.names().count(), 7);
}

#[test]
fn in_memory_store() {
    let one = SafetensorsFile::from_bytes("mem/one", small_image()).unwrap();
    let other = serialize(&[("z", Dtype::U8, &[2], &[4, 2])]);
    let two = SafetensorsFile::from_bytes("mem/two", other).unwrap();
    assert_eq!(
        format!("{two:?}"),
        r#"SafetensorsFile { path: "mem/two", tensors: 1 }"#
    );
    let store = WeightStore::from_files("mem", vec![one, two]).unwrap();
    assert_eq!(store.dir(), std::path::Path::new("mem"));
    assert_eq!(store.names().count(), 8);
    assert_eq!(
        store.get("z").unwrap().path(),
        std::path::Path::new("mem/two")
    );
    assert_eq!(
        store.get("a").unwrap().path(),
        std::path::Path::new("mem/one")
    );
}

/// The `__metadata__` written by the reference serialiser is skipped, not taken for a tensor.
#[test]
fn reference_metadata_is_ignored() {
    let data = f32_bytes(&[5.0]);
    let view =
        safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![1], &data).unwrap();
    let meta = std::collections::HashMap::from([("format".to_string(), "pt".to_string())]);
    let image = safetensors::serialize([("x", view)], Some(meta)).unwrap();
    let file = SafetensorsFile::from_bytes("meta", image).unwrap();
    assert_eq!(file.names().collect::<Vec<_>>(), ["x"]);
    assert_eq!(file.get("x").unwrap().to_f32_vec().unwrap(), [5.0]);
}
