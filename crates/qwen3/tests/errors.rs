//! Bad input to a loaded model or a model directory: clear errors, never a panic, and a session
//! left as it was.

use nano_infer_qwen3::{LoadOptions, Model, ModelError};
use std::path::PathBuf;

mod common;
use common::fixture_dir as fixture;

fn model(ctx: Option<usize>) -> Model {
    Model::load(
        fixture("f16"),
        &LoadOptions {
            ctx_size: ctx,
            ..LoadOptions::default()
        },
    )
    .unwrap()
}

#[test]
fn token_outside_vocabulary() {
    let model = model(None);
    let mut session = model.session();
    let err = session.prefill(&[1, 2, 5000]).unwrap_err();
    assert!(
        matches!(
            err,
            ModelError::TokenOutOfRange {
                id: 5000,
                vocab_size: 1024
            }
        ),
        "{err}"
    );
    assert_eq!(session.position(), 0, "a failed call appends nothing");
}

#[test]
fn empty_prompt() {
    let model = model(None);
    assert!(matches!(
        model.session().prefill(&[]),
        Err(ModelError::EmptyInput)
    ));
}

#[test]
fn prompt_longer_than_context() {
    let model = model(Some(8));
    let mut session = model.session();
    let err = session.prefill(&[1; 9]).unwrap_err();
    assert!(
        matches!(err, ModelError::ContextFull { needed: 9, max: 8 }),
        "{err}"
    );
    session.prefill(&[1; 8]).unwrap();
    let err = session.decode(3).unwrap_err();
    assert!(err.to_string().contains("context full"), "{err}");
    assert_eq!(session.position(), 8);
}

#[test]
fn session_truncate_and_reuse() {
    let model = model(None);
    let mut a = model.session();
    let first = a.prefill(&[5, 6, 7]).unwrap().to_vec();
    a.decode(9).unwrap();
    a.truncate(3);
    assert_eq!(a.tokens(), &[5, 6, 7]);
    // Re-feeding the dropped token gives the logits it gave before.
    let again = a.decode(9).unwrap().to_vec();
    let mut b = model.session();
    b.prefill(&[5, 6, 7, 9]).unwrap();
    assert_eq!(again, b.logits());
    assert_ne!(first, again);
}

/// A scratch model directory: copies of a fixture's files, to corrupt one of them.
fn scratch_copy(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("nano-infer-errors-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for file in ["config.json", "model.safetensors"] {
        std::fs::copy(fixture("f16").join(file), dir.join(file)).unwrap();
    }
    dir
}

#[test]
fn missing_model_directory() {
    let err = Model::load("/no/such/model", &LoadOptions::default())
        .unwrap_err()
        .to_string();
    assert!(err.contains("/no/such/model"), "{err}");
}

#[test]
fn truncated_weights_name_the_file() {
    let dir = scratch_copy("truncated");
    let path = dir.join("model.safetensors");
    let len = std::fs::metadata(&path).unwrap().len();
    let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    file.set_len(len / 2).unwrap();
    let err = Model::load(&dir, &LoadOptions::default())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("model.safetensors") && err.contains("truncated"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn wrong_shape_names_the_tensor() {
    let dir = scratch_copy("shape");
    // Claim a wider model than the weights: every projection now has the wrong shape.
    let config = std::fs::read_to_string(dir.join("config.json")).unwrap();
    let config = config.replace("\"intermediate_size\": 384", "\"intermediate_size\": 512");
    std::fs::write(dir.join("config.json"), config).unwrap();
    let err = Model::load(&dir, &LoadOptions::default())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("mlp.gate_proj.weight") && err.contains("512"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn missing_config() {
    let dir = scratch_copy("noconfig");
    std::fs::remove_file(dir.join("config.json")).unwrap();
    let err = Model::load(&dir, &LoadOptions::default())
        .unwrap_err()
        .to_string();
    assert!(err.contains("config.json"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}
