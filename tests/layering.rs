//! Architecture invariants, checked on every `cargo test` (rust-analyzer's "tidy" idea):
//! dependencies point down the stack, and only `simd`, `tensor` and `team` may contain `unsafe`.

use std::collections::BTreeMap;
use std::path::Path;

/// Each workspace crate and the workspace crates it may depend on (normal dependencies).
const ALLOWED: &[(&str, &[&str])] = &[
    ("simd", &[]),
    ("tensor", &[]),
    ("team", &[]),
    ("tokenizer", &[]),
    ("constrain", &["tokenizer"]),
    ("quant", &["tensor", "simd", "team"]),
    ("kvcache", &["tensor", "simd"]),
    ("offload", &["tensor"]),
    (
        "qwen3",
        &["simd", "tensor", "team", "quant", "kvcache", "offload"],
    ),
    ("generate", &["qwen3", "tokenizer", "constrain"]),
    ("server", &["generate", "qwen3"]),
    (
        "cli",
        &[
            "server",
            "generate",
            "qwen3",
            "tokenizer",
            "kvcache",
            "simd",
            "tensor",
            "quant",
            "offload",
        ],
    ),
];

const PREFIX: &str = "nano-infer-";

fn workspace_deps(manifest: &str) -> Vec<String> {
    // The [dependencies] table only: dev-dependencies may reach anywhere below for tests.
    let mut deps = Vec::new();
    let mut in_deps = false;
    for line in manifest.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            in_deps = line == "[dependencies]";
            continue;
        }
        if in_deps {
            if let Some(name) = line
                .split(['.', '=', ' '])
                .next()
                .and_then(|n| n.strip_prefix(PREFIX))
            {
                deps.push(name.to_owned());
            }
        }
    }
    deps
}

#[test]
fn dependencies_point_down_the_stack() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let allowed: BTreeMap<_, _> = ALLOWED.iter().copied().collect();
    let mut seen = 0;
    for entry in std::fs::read_dir(root.join("crates")).unwrap() {
        let dir = entry.unwrap().path();
        let name = dir.file_name().unwrap().to_str().unwrap().to_owned();
        let manifest = std::fs::read_to_string(dir.join("Cargo.toml")).unwrap();
        let permitted = allowed.get(name.as_str()).unwrap_or_else(|| {
            panic!("crate `{name}` is not in the layering table of tests/layering.rs")
        });
        for dep in workspace_deps(&manifest) {
            assert!(
                permitted.contains(&dep.as_str()),
                "crate `{name}` depends on `{dep}`, which is not below it"
            );
        }
        seen += 1;
    }
    assert_eq!(seen, ALLOWED.len(), "every crate in the table exists");
}

#[test]
fn unsafe_lives_only_in_simd_tensor_and_team() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for (name, _) in ALLOWED {
        if matches!(*name, "simd" | "tensor" | "team") {
            continue;
        }
        let lib = root.join("crates").join(name).join("src");
        let entry = if lib.join("lib.rs").exists() {
            lib.join("lib.rs")
        } else {
            lib.join("main.rs")
        };
        let text = std::fs::read_to_string(&entry).unwrap();
        assert!(
            text.contains("#![forbid(unsafe_code)]"),
            "{} must forbid unsafe code",
            entry.display()
        );
    }
}
