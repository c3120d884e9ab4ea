//! `cargo xtask e2e`: the server's end-to-end checks with real clients, beside the Rust tests.
//!
//! Builds `qwen3-infer`, makes a Python venv under `target/e2e-venv` with the pinned `openai`
//! client (`tests/e2e/requirements.txt`), then runs `tests/e2e/openai_client.py` (the real
//! client against `serve` on a fixture) and `tests/e2e/nginx_replicas.py` (nginx in front of
//! two replicas with `deploy/nginx.conf`). Needs python3 and nginx (Debian: `apt-get install
//! python3-venv nginx-light`); says which is missing rather than skipping anything. Servers
//! listen on 127.0.0.1 only.

use anyhow::{bail, Context, Result};
use clap::Args;
use std::path::{Path, PathBuf};
use std::process::Command;

#[derive(Debug, Args)]
pub struct E2eArgs {
    /// The fixture model the servers load.
    #[arg(long, default_value = "testdata/fixtures/bf16_fullvocab")]
    model: PathBuf,
}

pub fn run(args: &E2eArgs) -> Result<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let root = root.canonicalize().context("the workspace root")?;
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    status(
        Command::new(&cargo)
            .args(["build", "--release", "-p", "nano-infer-cli"])
            .current_dir(&root),
        "building qwen3-infer",
    )?;
    if which("nginx").is_none() && !Path::new("/usr/sbin/nginx").exists() {
        bail!("nginx is not installed (Debian: apt-get install nginx-light)");
    }
    let venv = root.join("target/e2e-venv");
    let python = venv.join("bin/python");
    if !python.exists() {
        status(
            Command::new("python3").arg("-m").arg("venv").arg(&venv),
            "creating the Python venv (Debian: apt-get install python3-venv)",
        )?;
    }
    status(
        Command::new(&python)
            .args(["-m", "pip", "install", "-q", "-r"])
            .arg(root.join("tests/e2e/requirements.txt")),
        "installing the pinned openai client",
    )?;
    let binary = root.join("target/release/qwen3-infer");
    let model = root.join(&args.model);
    let mut failed = Vec::new();
    for script in ["openai_client.py", "nginx_replicas.py"] {
        let ok = Command::new(&python)
            .arg(script)
            .arg(&binary)
            .arg(&model)
            .current_dir(root.join("tests/e2e"))
            .status()
            .with_context(|| format!("running {script}"))?
            .success();
        if !ok {
            failed.push(script);
        }
    }
    if !failed.is_empty() {
        bail!("end-to-end checks failed: {}", failed.join(", "));
    }
    Ok(())
}

fn status(cmd: &mut Command, what: &str) -> Result<()> {
    let s = cmd.status().with_context(|| what.to_string())?;
    if !s.success() {
        bail!("{what} failed ({s})");
    }
    Ok(())
}

fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(name))
            .find(|p| p.exists())
    })
}
