//! The committed fixture directories: counts, dtypes and shapes, and every tensor's bytes
//! compared against the `safetensors` crate's own reading of the same file.

use crate::util::{assert_err, fixture, st_dtype};
use half::{bf16, f16};
use nano_infer_tensor::{Dtype, TensorError, WeightStore};
use std::collections::BTreeSet;

fn open(name: &str) -> WeightStore {
    WeightStore::open_dir(fixture(name)).unwrap_or_else(|e| panic!("open fixture {name}: {e}"))
}

/// Every tensor of the store against the reference implementation, file by file.
fn check_against_reference(store: &WeightStore) {
    let mut seen = 0;
    for file in store.files() {
        let bytes = std::fs::read(file.path()).unwrap();
        assert_eq!(file.len_bytes(), bytes.len());
        let reference = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        let ours: BTreeSet<&str> = file.names().collect();
        let theirs: BTreeSet<&str> = reference.names().into_iter().collect();
        assert_eq!(ours, theirs, "{}", file.path().display());
        for (name, view) in reference.tensors() {
            let t = store.get(&name).unwrap();
            assert_eq!(t.path(), file.path(), "{name}");
            assert_eq!(st_dtype(t.dtype()), view.dtype(), "{name}");
            assert_eq!(t.shape(), view.shape(), "{name}");
            assert_eq!(t.bytes(), view.data(), "{name}");
            assert_eq!(t.numel() * t.dtype().size(), t.bytes().len(), "{name}");
            seen += 1;
        }
    }
    assert_eq!(seen, store.names().count());
}

fn count_dtype(store: &WeightStore, dtype: Dtype) -> usize {
    store
        .names()
        .filter(|n| store.get(n).unwrap().dtype() == dtype)
        .count()
}

#[test]
fn bf16_dense() {
    let store = open("bf16");
    assert_eq!(store.names().count(), 46);
    assert_eq!(store.files().len(), 1);
    assert_eq!(count_dtype(&store, Dtype::BF16), 46);
    check_against_reference(&store);

    let embed = store.get("model.embed_tokens.weight").unwrap();
    assert_eq!(embed.dtype(), Dtype::BF16);
    assert_eq!(embed.shape(), [1024, 256]);
    assert_eq!(embed.numel(), 1024 * 256);
    embed
        .expect_shape(&[1024, 256])
        .unwrap()
        .expect_dtype(&[Dtype::F16, Dtype::BF16])
        .unwrap();
    let typed = embed.as_slice::<bf16>().unwrap();
    assert_eq!(typed.len(), 1024 * 256);
    let from_bytes: Vec<bf16> = embed
        .bytes()
        .chunks_exact(2)
        .map(|c| bf16::from_le_bytes([c[0], c[1]]))
        .collect();
    assert_eq!(typed, from_bytes.as_slice());

    // First values of the final norm, read from the file independently of this crate.
    let norm = store.get("model.norm.weight").unwrap();
    assert_eq!(norm.shape(), [256]);
    let values = norm.to_f32_vec().unwrap();
    assert_eq!(values.len(), 256);
    assert_eq!(values[..4], [39.0, 55.0, 37.0, 35.75]);

    assert_err!(
        embed.as_slice::<f32>(),
        TensorError::WrongDtype {
            actual: Dtype::BF16,
            ..
        },
        [
            "model.embed_tokens.weight",
            "bf16/model.safetensors",
            "F32",
            "BF16"
        ]
    );
    assert_err!(
        embed.as_slice::<f16>(),
        TensorError::WrongDtype { .. },
        ["model.embed_tokens.weight"]
    );
    assert_err!(
        embed.as_slice::<u8>(),
        TensorError::WrongDtype { .. },
        ["model.embed_tokens.weight"]
    );
}

#[test]
fn f16_dense() {
    let store = open("f16");
    assert_eq!(store.names().count(), 24);
    assert_eq!(count_dtype(&store, Dtype::F16), 24);
    check_against_reference(&store);
    let embed = store.get("model.embed_tokens.weight").unwrap();
    assert_eq!(
        (embed.dtype(), embed.shape()),
        (Dtype::F16, &[1024, 128][..])
    );
    assert_eq!(embed.as_slice::<f16>().unwrap().len(), 1024 * 128);
    let norm = store
        .get("model.norm.weight")
        .unwrap()
        .to_f32_vec()
        .unwrap();
    assert_eq!(norm[..4], [53.125, 47.0625, 65.4375, 69.25]);
    assert_err!(
        embed.as_slice::<bf16>(),
        TensorError::WrongDtype {
            actual: Dtype::F16,
            ..
        },
        ["F16"]
    );
}

#[test]
fn f32_dense() {
    let store = open("f32");
    assert_eq!(store.names().count(), 24);
    assert_eq!(count_dtype(&store, Dtype::F32), 24);
    check_against_reference(&store);
    let norm = store.get("model.norm.weight").unwrap();
    assert_eq!(norm.shape(), [128]);
    // Bit patterns read from the file with Python's struct module.
    let expected = [0x41de_148f_u32, 0x4297_2069, 0x4290_e1a0, 0x4222_6d4c].map(f32::from_bits);
    let slice = norm.as_slice::<f32>().unwrap();
    assert_eq!(slice[..2], expected[..2]);
    assert_eq!(norm.to_f32_vec().unwrap(), slice);
    assert_eq!(slice[0], 27.760_038);
}

#[test]
fn bf16_sharded_reaches_both_shards() {
    let store = open("bf16_sharded");
    assert_eq!(store.files().len(), 2);
    assert_eq!(store.names().count(), 24);
    check_against_reference(&store);

    let embed = store.get("model.embed_tokens.weight").unwrap();
    assert!(embed.path().ends_with("model-00001-of-00002.safetensors"));
    assert_eq!(embed.shape(), [1024, 128]);
    let norm = store.get("model.norm.weight").unwrap();
    assert!(norm.path().ends_with("model-00002-of-00002.safetensors"));
    assert_eq!(norm.to_f32_vec().unwrap()[..4], [58.0, 71.5, 53.0, 67.0]);
    let down = store.get("model.layers.0.mlp.down_proj.weight").unwrap();
    assert!(down.path().ends_with("model-00002-of-00002.safetensors"));

    let on_disk: usize = [
        "model-00001-of-00002.safetensors",
        "model-00002-of-00002.safetensors",
    ]
    .iter()
    .map(|f| {
        std::fs::metadata(fixture("bf16_sharded").join(f))
            .unwrap()
            .len() as usize
    })
    .sum();
    assert_eq!(store.total_bytes(), on_disk);
    assert!(store.get_opt("lm_head.weight").unwrap().is_none());
    assert!(store.get_opt("model.norm.weight").unwrap().is_some());
}

#[test]
fn fp8_block() {
    let store = open("fp8_block");
    assert_eq!(store.names().count(), 38);
    assert_eq!(count_dtype(&store, Dtype::F8E4M3), 14);
    check_against_reference(&store);

    let w = store.get("model.layers.0.self_attn.q_proj.weight").unwrap();
    assert_eq!((w.dtype(), w.shape()), (Dtype::F8E4M3, &[512, 256][..]));
    // FP8 codes are viewed as bytes.
    assert_eq!(w.as_slice::<u8>().unwrap(), w.bytes());
    assert_err!(
        w.to_f32_vec(),
        TensorError::WrongDtype {
            actual: Dtype::F8E4M3,
            ..
        },
        [
            "model.layers.0.self_attn.q_proj.weight",
            "fp8_block/model.safetensors",
            "F8_E4M3"
        ]
    );
    let scale = store
        .get("model.layers.0.self_attn.q_proj.weight_scale_inv")
        .unwrap();
    assert_eq!((scale.dtype(), scale.shape()), (Dtype::BF16, &[4, 2][..]));
    assert_eq!(scale.to_f32_vec().unwrap().len(), 8);
}

#[test]
fn awq() {
    let store = open("awq");
    assert_eq!(store.names().count(), 102);
    assert_eq!(count_dtype(&store, Dtype::I32), 2 * 7 * 4);
    check_against_reference(&store);

    let q = store
        .get("model.layers.0.self_attn.q_proj.qweight")
        .unwrap();
    assert_eq!((q.dtype(), q.shape()), (Dtype::I32, &[256, 64][..]));
    let words = q.as_slice::<i32>().unwrap();
    let from_bytes: Vec<i32> = q
        .bytes()
        .chunks_exact(4)
        .map(|c| i32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    assert_eq!(words, from_bytes.as_slice());
    let z = store.get("model.layers.0.self_attn.q_proj.qzeros").unwrap();
    assert_eq!(z.shape(), [4, 64]);
    let s = store.get("model.layers.0.self_attn.q_proj.scales").unwrap();
    assert_eq!((s.dtype(), s.shape()), (Dtype::F16, &[4, 512][..]));
    assert_err!(
        q.as_slice::<f32>(),
        TensorError::WrongDtype {
            actual: Dtype::I32,
            ..
        },
        ["qweight"]
    );
    assert_err!(
        q.to_f32_vec(),
        TensorError::WrongDtype { .. },
        ["qweight", "awq/model.safetensors"]
    );
}

/// Every fixture directory in the repository opens and agrees with the reference reader.
#[test]
fn every_fixture_directory_agrees_with_the_reference_reader() {
    let root = fixture("");
    let mut dirs = 0;
    for entry in std::fs::read_dir(&root).unwrap() {
        let dir = entry.unwrap().path();
        if dir.is_dir() {
            check_against_reference(&WeightStore::open_dir(&dir).unwrap());
            dirs += 1;
        }
    }
    assert!(
        dirs >= 6,
        "found only {dirs} fixture dirs under {}",
        root.display()
    );
}

/// Tensors keep their file's memory alive after the store is dropped.
#[test]
fn tensors_outlive_their_store() {
    let norm = open("f32").get("model.norm.weight").unwrap();
    assert_eq!(norm.to_f32_vec().unwrap()[0], 27.760_038);
    let clone = norm.clone();
    drop(norm);
    assert_eq!(clone.numel(), 128);
}
