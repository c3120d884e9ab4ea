//! The AWQ repack cache (`LoadOptions::awq_cache`): a second load maps the cached layers and
//! computes exactly what a load without a cache computes (bit-identical logits: the cache holds
//! the very bytes the repack produces), and every way the file can be wrong (stale source,
//! other weights, truncation, another version, garbage, a damaged byte) is refused and rebuilt.
//! A location that cannot be written falls back to repacking in memory.

use nano_infer_qwen3::{AwqActivations, AwqCacheDir, AwqCacheStatus, Isa, LoadOptions, Model};
use std::path::{Path, PathBuf};

mod common;
use common::{argmax, copy_fixture, ids, reference, tensor_range, TempDir};

/// Last-position logits of every fixture prompt and the first greedy tokens after it.
fn outputs(model: &Model, fixture: &str) -> Vec<(Vec<f32>, Vec<u32>)> {
    let r = reference(fixture);
    r["prompts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            let mut s = model.session();
            let logits = s.prefill(&ids(&p["input_ids"])).unwrap().to_vec();
            let mut next = argmax(&logits);
            let mut greedy = vec![next];
            for _ in 0..8 {
                next = argmax(s.decode(next).unwrap());
                greedy.push(next);
            }
            (logits, greedy)
        })
        .collect()
}

fn load(dir: &Path, cache: AwqCacheDir, isa: Isa, activations: AwqActivations) -> Model {
    Model::load(
        dir,
        &LoadOptions {
            isa: Some(isa),
            awq_cache: cache,
            awq_activations: activations,
            ..LoadOptions::default()
        },
    )
    .expect("model loads")
}

/// The one cache file in `dir`.
fn cache_file(dir: &Path) -> PathBuf {
    let files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(
        files.len(),
        1,
        "one cache file, no temporary left: {files:?}"
    );
    files[0].clone()
}

fn assert_written(model: &Model, why: &str) {
    match model.awq_cache_status() {
        Some(AwqCacheStatus::Written { why: w, .. }) => {
            assert!(w.contains(why), "rebuilt because {w:?}, expected {why:?}")
        }
        other => panic!("expected a rebuilt cache ({why}), got {other:?}"),
    }
}

fn assert_loaded(model: &Model) {
    assert!(
        matches!(model.awq_cache_status(), Some(AwqCacheStatus::Loaded(_))),
        "expected the cache to be used, got {:?}",
        model.awq_cache_status()
    );
}

#[test]
fn a_second_load_maps_the_cache_and_computes_the_same_bits() {
    for (fixture, activations) in [
        ("awq", AwqActivations::F32),
        ("awq_f16", AwqActivations::F32),
        ("awq", AwqActivations::Int8),
    ] {
        let cache = TempDir::new("awq-cache");
        let dir = common::fixture_dir(fixture);
        for isa in Isa::available() {
            let plain = load(&dir, AwqCacheDir::Off, isa, activations);
            assert_eq!(plain.awq_cache_status(), None);
            let want = outputs(&plain, fixture);
            let first = load(
                &dir,
                AwqCacheDir::Dir(cache.path().into()),
                isa,
                activations,
            );
            assert!(matches!(
                first.awq_cache_status(),
                Some(AwqCacheStatus::Written { .. } | AwqCacheStatus::Loaded(_))
            ));
            assert_eq!(
                outputs(&first, fixture),
                want,
                "{fixture} {activations:?} {isa}, written"
            );
            let second = load(
                &dir,
                AwqCacheDir::Dir(cache.path().into()),
                isa,
                activations,
            );
            assert_loaded(&second);
            assert_eq!(
                outputs(&second, fixture),
                want,
                "{fixture} {activations:?} {isa}, mapped"
            );
        }
        cache_file(cache.path());
    }
}

/// Writes a cache for `model_dir`, damages it with `damage`, and checks that the next load
/// rebuilds it for `why`, with the same outputs, and that the load after that maps it again.
fn rebuilt_after(model_dir: &Path, damage: impl FnOnce(&Path), why: &str) {
    let cache = TempDir::new("awq-cache-damaged");
    let opt = || AwqCacheDir::Dir(cache.path().into());
    let isa = Isa::best();
    let want = outputs(&load(model_dir, opt(), isa, AwqActivations::F32), "awq");
    damage(&cache_file(cache.path()));
    let rebuilt = load(model_dir, opt(), isa, AwqActivations::F32);
    assert_written(&rebuilt, why);
    assert_eq!(outputs(&rebuilt, "awq"), want, "after a rebuild for {why}");
    assert_loaded(&load(model_dir, opt(), isa, AwqActivations::F32));
    cache_file(cache.path());
}

#[test]
fn a_truncated_cache_is_rebuilt() {
    let dir = common::fixture_dir("awq");
    rebuilt_after(
        &dir,
        |f| {
            let len = std::fs::metadata(f).unwrap().len();
            std::fs::OpenOptions::new()
                .write(true)
                .open(f)
                .unwrap()
                .set_len(len - 1000)
                .unwrap();
        },
        "unreadable",
    );
}

#[test]
fn a_garbage_cache_is_rebuilt() {
    let dir = common::fixture_dir("awq");
    rebuilt_after(
        &dir,
        |f| std::fs::write(f, b"not a cache at all").unwrap(),
        "unreadable",
    );
}

#[test]
fn a_cache_of_another_layout_version_is_rebuilt() {
    let dir = common::fixture_dir("awq");
    let version = format!(
        "\"nano_infer_awq_cache\":\"{}\"",
        nano_infer_quant::AWQ_CACHE_VERSION
    );
    rebuilt_after(
        &dir,
        |f| {
            let mut bytes = std::fs::read(f).unwrap();
            let at = bytes
                .windows(version.len())
                .position(|w| w == version.as_bytes())
                .expect("the version is in the header");
            // Same length, another version: only the metadata check can tell.
            let last = at + version.len() - 2;
            bytes[last] = if bytes[last] == b'9' { b'8' } else { b'9' };
            std::fs::write(f, bytes).unwrap();
        },
        "stale: its nano_infer_awq_cache differs",
    );
}

#[test]
fn a_cache_with_a_damaged_byte_is_rebuilt() {
    let dir = common::fixture_dir("awq");
    rebuilt_after(
        &dir,
        |f| {
            let mut bytes = std::fs::read(f).unwrap();
            let (range, _) = tensor_range(&bytes, "model.layers.1.mlp.up_proj.awq_packed");
            bytes[range.start + range.len() / 2] ^= 0x10;
            std::fs::write(f, bytes).unwrap();
        },
        "do not match their recorded hash",
    );
}

#[test]
fn a_touched_source_makes_the_cache_stale() {
    let model = copy_fixture("awq");
    rebuilt_after(
        model.path(),
        |_| {
            let weights = model.path().join("model.safetensors");
            let file = std::fs::File::options().write(true).open(&weights).unwrap();
            let later = std::fs::metadata(&weights).unwrap().modified().unwrap()
                + std::time::Duration::from_secs(5);
            file.set_modified(later).unwrap();
        },
        "stale: its sources differ",
    );
}

/// Other weights of the same names, shapes and sizes, with the file's modification time put
/// back: only the content fingerprint can tell, and it does.
#[test]
fn a_cache_of_other_weights_is_refused() {
    let model = copy_fixture("awq");
    let cache = TempDir::new("awq-cache-foreign");
    let opt = || AwqCacheDir::Dir(cache.path().into());
    let isa = Isa::best();
    let before = outputs(&load(model.path(), opt(), isa, AwqActivations::F32), "awq");
    let weights = model.path().join("model.safetensors");
    let mtime = std::fs::metadata(&weights).unwrap().modified().unwrap();
    let mut bytes = std::fs::read(&weights).unwrap();
    let (range, dtype) = tensor_range(&bytes, "model.layers.0.self_attn.q_proj.scales");
    assert_eq!(dtype, "F16");
    // Halve every scale of one layer (an f16 exponent step down; they are normal numbers).
    for pair in bytes[range].chunks_exact_mut(2) {
        let v = u16::from_le_bytes([pair[0], pair[1]]);
        pair.copy_from_slice(&(v - 0x0400).to_le_bytes());
    }
    std::fs::write(&weights, bytes).unwrap();
    std::fs::File::options()
        .write(true)
        .open(&weights)
        .unwrap()
        .set_modified(mtime)
        .unwrap();
    let other = load(model.path(), opt(), isa, AwqActivations::F32);
    assert_written(&other, "stale: its fingerprint differs");
    let want = outputs(
        &load(model.path(), AwqCacheDir::Off, isa, AwqActivations::F32),
        "awq",
    );
    let got = outputs(&other, "awq");
    assert_eq!(got, want, "the rebuilt cache holds the new weights");
    assert_ne!(got, before, "the new weights change the outputs");
}

#[test]
fn an_unwritable_location_falls_back_to_repacking_in_memory() {
    let tmp = TempDir::new("awq-cache-unwritable");
    // A regular file where the cache directory should be: nothing can be created under it.
    let blocker = tmp.path().join("file");
    std::fs::write(&blocker, b"x").unwrap();
    let dir = common::fixture_dir("awq");
    let isa = Isa::best();
    let model = load(
        &dir,
        AwqCacheDir::Dir(blocker.join("awq")),
        isa,
        AwqActivations::F32,
    );
    match model.awq_cache_status() {
        Some(status @ AwqCacheStatus::Unavailable { .. }) => {
            let line = status.to_string();
            assert!(
                !line.contains('\n') && line.contains("repacked in memory"),
                "{line}"
            );
        }
        other => panic!("expected the in-memory fallback, got {other:?}"),
    }
    let want = outputs(
        &load(&dir, AwqCacheDir::Off, isa, AwqActivations::F32),
        "awq",
    );
    assert_eq!(outputs(&model, "awq"), want);
}

#[test]
fn models_without_awq_layers_have_no_cache() {
    let tmp = TempDir::new("awq-cache-bf16");
    let model = load(
        &common::fixture_dir("bf16"),
        AwqCacheDir::Dir(tmp.path().into()),
        Isa::best(),
        AwqActivations::F32,
    );
    assert_eq!(model.awq_cache_status(), None);
    assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 0);
}
