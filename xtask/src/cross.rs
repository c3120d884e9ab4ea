//! `cargo xtask cross`: the kernels and the model on instruction sets this host does not run
//! natively.
//!
//! **aarch64** (Linux x86_64 hosts with Debian's packages): Debian's `rustc-web` ships an aarch64
//! standard library, `gcc-aarch64-linux-gnu` links, and `qemu-user` runs the test binaries. We
//! build the simd, quant and qwen3 tests once (`--target aarch64-unknown-linux-gnu`, own target
//! dir so host build scripts are not rebuilt) and run them under qemu once per `QEMU_CPU`:
//! `cortex-a72` is plain NEON, `neoverse-n1` adds `dotprod` (the `sdot` integer kernels). Tools
//! are checked first; nothing is installed: a missing one is named with the apt line that
//! provides it.
//!
//! Cost: qemu runs these binaries ~20× slower than native, and the golden suite (every fixture
//! at every level) takes ~7 minutes per CPU that way. By default the golden tests under qemu are
//! the per-layer hidden-state trace and the KV-cache-vs-prefill check of *every* fixture (every
//! on-disk format, on the best level) plus every check of the `f32` fixture (scalar and NEON):
//! ~20 s per CPU. `--full` runs them all; `--filter` picks others. The qwen3 integration tests
//! that do not depend on the CPU's features run on the first CPU model only (see
//! [`QWEN3_EVERY_CPU`]). Measured on a busy 2-core host: ~9 minutes in all from a warm cargo
//! registry, of which ~4 are building.
//!
//! **x86-64 baseline** (x86_64 hosts): the simd tests built with `-C target-cpu=x86-64` (no AVX
//! at compile time) must still pick AVX2/AVX-512 at run time where the CPU has them
//! (`best_level_is_detected_at_run_time` in `crates/simd/tests/kernels`).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Args;
use serde_json::Value;

const TARGET: &str = "aarch64-unknown-linux-gnu";
const LINKER: &str = "aarch64-linux-gnu-gcc";
const QEMU: &str = "qemu-aarch64";
/// The packages whose tests run under qemu.
const PACKAGES: [&str; 3] = ["nano-infer-simd", "nano-infer-quant", "nano-infer-qwen3"];
/// The golden-test binary whose scope `--filter` / `--full` set.
const GOLDEN: (&str, &str) = ("nano-infer-qwen3", "golden");
/// See the module docs: every fixture through the whole forward pass, cheaply.
/// qwen3 test binaries run on every CPU model; its other integration tests (KV cache, offload,
/// batching: ~2 minutes under qemu, and nothing in them depends on `dotprod`) run on the first
/// CPU only, unless `--full`. simd and quant run everywhere.
const QWEN3_EVERY_CPU: [&str; 3] = ["lib", "golden", "quantized_options"];
const DEFAULT_GOLDEN_FILTERS: [&str; 3] = [
    "hidden_trace_per_layer",
    "kv_cache_matches_prefill",
    "f32::",
];
const APT: &str = "dpkg --add-architecture arm64 && apt-get update\n\
    apt-get install -y --no-install-recommends rustc-web libstd-rust-web-dev:arm64 \
    gcc-aarch64-linux-gnu g++-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user";

#[derive(Debug, Args)]
pub struct CrossArgs {
    /// QEMU CPU models to run the aarch64 tests on, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "cortex-a72,neoverse-n1")]
    cpu: Vec<String>,
    /// Golden tests to run under qemu (`cargo test` name filters, comma-separated), instead of
    /// the default set.
    #[arg(long, value_delimiter = ',', conflicts_with = "full")]
    filter: Vec<String>,
    /// Run every golden test under qemu (about 7 minutes per CPU).
    #[arg(long)]
    full: bool,
    /// The rustc that has the aarch64 standard library (Debian's rustc-web).
    #[arg(long, default_value = "/usr/bin/rustc")]
    rustc: PathBuf,
    /// Only the x86-64 baseline check (no aarch64).
    #[arg(long, conflicts_with = "aarch64")]
    x86_baseline: bool,
    /// Only the aarch64 build and qemu runs (no x86-64 baseline check).
    #[arg(long)]
    aarch64: bool,
}

/// One test binary's run: what, where, how long, and whether it passed.
struct Outcome {
    step: String,
    time: Duration,
    ok: bool,
}

pub fn run(args: &CrossArgs) -> Result<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .context("xtask has no parent directory")?
        .to_path_buf();
    let start = Instant::now();
    let mut outcomes = Vec::new();
    if !args.x86_baseline {
        aarch64(args, &root, &mut outcomes)?;
    }
    if !args.aarch64 {
        x86_baseline(&root, &mut outcomes)?;
    }
    println!("\ncross summary:");
    for o in &outcomes {
        let verdict = if o.ok { "ok" } else { "FAILED" };
        println!(
            "  {:<6} {:>7.1} s  {}",
            verdict,
            o.time.as_secs_f64(),
            o.step
        );
    }
    println!("  total  {:>7.1} s", start.elapsed().as_secs_f64());
    let failed = outcomes.iter().filter(|o| !o.ok).count();
    if failed > 0 {
        bail!("{failed} cross step(s) failed");
    }
    Ok(())
}

fn cargo() -> Command {
    Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
}

/// Runs `cmd`, timing it, and records the outcome; output goes straight to the terminal.
fn timed(step: String, mut cmd: Command, outcomes: &mut Vec<Outcome>) -> Result<bool> {
    println!("\n== {step}");
    let t = Instant::now();
    let status = cmd
        .status()
        .with_context(|| format!("cannot start {:?}", cmd.get_program()))?;
    let time = t.elapsed();
    outcomes.push(Outcome {
        step,
        time,
        ok: status.success(),
    });
    Ok(status.success())
}

/// Whether `tool` is an executable on `PATH`.
fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(tool).is_file()))
}

/// Every missing tool, with the package that provides it.
fn missing_tools(rustc: &Path) -> Vec<String> {
    let mut missing = Vec::new();
    let sysroot = Command::new(rustc)
        .args(["--print", "sysroot"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()));
    match sysroot {
        None => missing.push(format!("{} (package rustc-web)", rustc.display())),
        Some(sysroot) => {
            let lib = sysroot.join("lib/rustlib").join(TARGET).join("lib");
            let has_std = std::fs::read_dir(&lib).is_ok_and(|entries| {
                entries.flatten().any(|e| {
                    let name = e.file_name();
                    let name = name.to_string_lossy();
                    name.starts_with("libstd-") && name.ends_with(".rlib")
                })
            });
            if !has_std {
                missing.push(format!(
                    "the {TARGET} standard library in {} (package libstd-rust-web-dev:arm64)",
                    lib.display()
                ));
            }
        }
    }
    if !on_path(LINKER) {
        missing.push(format!(
            "{LINKER} (packages gcc-aarch64-linux-gnu, libc6-dev-arm64-cross)"
        ));
    }
    if !on_path(QEMU) {
        missing.push(format!("{QEMU} (package qemu-user)"));
    }
    missing
}

/// A test executable cargo built: its package, its target name and its path.
struct TestBin {
    package: String,
    name: String,
    path: PathBuf,
    dir: PathBuf,
}

fn aarch64(args: &CrossArgs, root: &Path, outcomes: &mut Vec<Outcome>) -> Result<()> {
    let missing = missing_tools(&args.rustc);
    if !missing.is_empty() {
        eprintln!("cargo xtask cross needs, for {TARGET}:");
        for m in &missing {
            eprintln!("  - {m}");
        }
        eprintln!("\nOn Debian 12 / Ubuntu (as root):\n{APT}");
        bail!("missing cross tools (nothing was installed)");
    }
    let target_dir = root.join("target/aarch64");
    let rustdoc = args.rustc.with_file_name("rustdoc");
    let env = |cmd: &mut Command| {
        cmd.current_dir(root)
            .env("RUSTC", &args.rustc)
            .env("RUSTDOC", &rustdoc)
            .env_remove("RUSTFLAGS")
            .env("CARGO_TARGET_DIR", &target_dir);
    };

    // Lints of the only crate with aarch64-specific code, which the host's clippy never sees.
    let clippy = args.rustc.with_file_name("clippy-driver");
    if clippy.is_file() {
        let mut cmd = cargo();
        env(&mut cmd);
        cmd.args([
            "check",
            "--target",
            TARGET,
            "-p",
            "nano-infer-simd",
            "--lib",
            "--tests",
        ])
        .env("RUSTC_WORKSPACE_WRAPPER", &clippy)
        .env(
            "CLIPPY_ARGS",
            "-D__CLIPPY_HACKERY__warnings__CLIPPY_HACKERY__",
        );
        timed(
            format!("clippy -p nano-infer-simd ({TARGET})"),
            cmd,
            outcomes,
        )?;
    } else {
        println!(
            "(no {}: skipping aarch64 clippy; apt package rust-web-clippy)",
            clippy.display()
        );
    }

    let bins = build_tests(&env, outcomes)?;
    let Some(bins) = bins else { return Ok(()) };
    let golden: Vec<String> = if args.full {
        Vec::new()
    } else if args.filter.is_empty() {
        DEFAULT_GOLDEN_FILTERS.map(String::from).to_vec()
    } else {
        args.filter.clone()
    };
    for (i, cpu) in args.cpu.iter().enumerate() {
        // The int8 unit tests assert the detected `dotprod` against this, so a detection bug
        // cannot silently leave one of the two integer paths untested.
        let expect_dotprod = match cpu.as_str() {
            "cortex-a53" | "cortex-a57" | "cortex-a72" => Some("0"),
            "neoverse-n1" | "neoverse-v1" | "neoverse-n2" | "a64fx" | "max" => Some("1"),
            _ => None,
        };
        for bin in &bins {
            if i > 0
                && !args.full
                && bin.package == "nano-infer-qwen3"
                && !QWEN3_EVERY_CPU.contains(&bin.name.as_str())
            {
                continue;
            }
            let mut cmd = Command::new(QEMU);
            cmd.arg(&bin.path)
                .current_dir(&bin.dir)
                .env("QEMU_CPU", cpu);
            if let Some(e) = expect_dotprod {
                cmd.env("NANO_INFER_EXPECT_DOTPROD", e);
            }
            let mut step = format!("{cpu}: {} {}", bin.package, bin.name);
            if (bin.package.as_str(), bin.name.as_str()) == GOLDEN && !golden.is_empty() {
                cmd.args(&golden);
                step = format!("{step} [{}]", golden.join(", "));
            }
            cmd.arg("-q");
            timed(step, cmd, outcomes)?;
        }
    }
    Ok(())
}

/// Builds the test binaries of [`PACKAGES`] for aarch64; `None` when the build failed (recorded).
fn build_tests(
    env: &dyn Fn(&mut Command),
    outcomes: &mut Vec<Outcome>,
) -> Result<Option<Vec<TestBin>>> {
    println!("\n== build tests ({TARGET})");
    let mut cmd = cargo();
    env(&mut cmd);
    cmd.args([
        "test",
        "--no-run",
        "--target",
        TARGET,
        "--message-format=json-render-diagnostics",
    ]);
    for p in PACKAGES {
        cmd.args(["-p", p]);
    }
    let t = Instant::now();
    let mut child = cmd
        .stdout(Stdio::piped())
        .spawn()
        .context("cannot start cargo")?;
    let mut bins = Vec::new();
    let stdout = child.stdout.take().context("cargo stdout")?;
    for line in BufReader::new(stdout).lines() {
        let line = line.context("reading cargo's output")?;
        let Ok(msg) = serde_json::from_str::<Value>(&line) else {
            continue;
        };
        if msg["reason"] != "compiler-artifact" || msg["profile"]["test"] != true {
            continue;
        }
        let (Some(exe), Some(manifest)) =
            (msg["executable"].as_str(), msg["manifest_path"].as_str())
        else {
            continue;
        };
        // package_id looks like `path+file:///…/crates/simd#nano-infer-simd@0.1.0`.
        let package = msg["package_id"]
            .as_str()
            .and_then(|id| id.rsplit('#').next())
            .and_then(|p| p.split('@').next())
            .unwrap_or("?")
            .to_owned();
        let kinds: Vec<&str> = msg["target"]["kind"]
            .as_array()
            .map(|k| k.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        // Benches are built by `cargo test` too; they are not tests.
        if kinds.contains(&"bench") {
            continue;
        }
        let name = if kinds.contains(&"lib") {
            "lib".to_owned()
        } else {
            msg["target"]["name"].as_str().unwrap_or("?").to_owned()
        };
        bins.push(TestBin {
            package,
            name,
            path: PathBuf::from(exe),
            dir: Path::new(manifest)
                .parent()
                .unwrap_or(Path::new("."))
                .to_path_buf(),
        });
    }
    let ok = child.wait().context("waiting for cargo")?.success();
    outcomes.push(Outcome {
        step: format!("build tests ({TARGET})"),
        time: t.elapsed(),
        ok,
    });
    if !ok {
        return Ok(None);
    }
    // A stable order: by package, then the library's unit tests before the integration tests.
    let order: BTreeMap<&str, usize> = PACKAGES.iter().enumerate().map(|(i, p)| (*p, i)).collect();
    bins.sort_by_key(|b| {
        (
            order.get(b.package.as_str()).copied().unwrap_or(usize::MAX),
            b.name != "lib",
            b.name.clone(),
        )
    });
    Ok(Some(bins))
}

/// The simd suite compiled for baseline x86-64: run-time dispatch must still find AVX2/AVX-512.
fn x86_baseline(root: &Path, outcomes: &mut Vec<Outcome>) -> Result<()> {
    if !cfg!(target_arch = "x86_64") {
        println!("(not an x86_64 host: skipping the x86-64 baseline check)");
        return Ok(());
    }
    let mut cmd = cargo();
    cmd.current_dir(root)
        .args(["test", "-p", "nano-infer-simd", "--tests", "-q"])
        .env("RUSTFLAGS", "-C target-cpu=x86-64")
        .env("CARGO_TARGET_DIR", root.join("target/x86-64-baseline"));
    timed(
        "x86-64 baseline build (-C target-cpu=x86-64): simd tests".to_owned(),
        cmd,
        outcomes,
    )?;
    Ok(())
}
