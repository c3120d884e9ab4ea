//! `cargo xtask e2e`: the server's end-to-end checks with real clients, beside the Rust tests.
//!
//! Builds `qwen3-infer`, makes a Python venv under `target/e2e-venv` with the pinned `openai`
//! client and `selenium` (`tests/e2e/requirements.txt`), then runs `tests/e2e/openai_client.py`
//! (the real client against `serve` on a fixture), `tests/e2e/nginx_replicas.py` (nginx in
//! front of two replicas with `deploy/nginx.conf`) and `tests/e2e/browser_chat.py` (the chat
//! page at `/` in headless Chromium through chromium-driver; its screenshot goes to
//! `target/e2e/chat-page.png`). Needs python3, nginx and Chromium (Debian: `apt-get install
//! python3-venv nginx-light chromium chromium-driver`); says which is missing rather than
//! skipping anything. `--only NAME` runs one suite. Servers listen on 127.0.0.1 only.

use anyhow::{bail, Context, Result};
use clap::Args;
use std::path::{Path, PathBuf};
use std::process::Command;

#[derive(Debug, Args)]
pub struct E2eArgs {
    /// The fixture model the servers load.
    #[arg(long, default_value = "testdata/fixtures/bf16_fullvocab")]
    model: PathBuf,
    /// Run only this suite (default: all of them).
    #[arg(long, value_enum)]
    only: Option<Suite>,
}

/// The end-to-end suites, each a script in tests/e2e.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Suite {
    /// The pinned openai client against one server.
    Openai,
    /// nginx in front of two replicas.
    Nginx,
    /// The chat page in headless Chromium.
    Browser,
}

impl Suite {
    const ALL: [Suite; 3] = [Suite::Openai, Suite::Nginx, Suite::Browser];

    fn script(self) -> &'static str {
        match self {
            Suite::Openai => "openai_client.py",
            Suite::Nginx => "nginx_replicas.py",
            Suite::Browser => "browser_chat.py",
        }
    }

    /// What the suite needs beyond python3, and the Debian packages that give it.
    fn missing(self) -> Option<&'static str> {
        match self {
            Suite::Openai => None,
            Suite::Nginx => (which("nginx").is_none() && !Path::new("/usr/sbin/nginx").exists())
                .then_some("nginx is not installed (Debian: apt-get install nginx-light)"),
            Suite::Browser => (which("chromium").is_none() || which("chromedriver").is_none())
                .then_some(
                    "chromium and chromedriver are not both installed \
                     (Debian: apt-get install chromium chromium-driver)",
                ),
        }
    }
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
    let suites: Vec<Suite> = match args.only {
        Some(suite) => vec![suite],
        None => Suite::ALL.to_vec(),
    };
    if let Some(missing) = suites.iter().find_map(|s| s.missing()) {
        bail!("{missing}");
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
        "installing the pinned openai client and selenium",
    )?;
    let binary = root.join("target/release/qwen3-infer");
    let model = root.join(&args.model);
    let mut failed = Vec::new();
    for script in suites.iter().map(|s| s.script()) {
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
