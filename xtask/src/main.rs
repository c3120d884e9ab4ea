//! `cargo xtask`: project automation that is not part of the shipped crates.
//!
//! The binary is a thin clap dispatcher: each subcommand lives in its own module and
//! owns its argument struct, so adding `bench`, `cross` or `tidy` means one enum
//! variant here and one module. `synth-model` deliberately uses no workspace crate:
//! what it writes (synthetic checkpoints) must be an independent oracle for the
//! loaders it exercises, not a mirror of their assumptions. Only `bench` and
//! `bench-offload-io` link the `nano-infer` facade, to time it.
// Doc comments on the argument structs are clap's `--help` text, where `<repo>` is a
// placeholder for the reader, not an HTML tag, and backticks would be printed as they are.
#![allow(rustdoc::invalid_html_tags)]

mod bench;
mod bench_serve;
mod cross;
mod e2e;
mod offload_io;
mod synth;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "cargo xtask",
    bin_name = "cargo xtask",
    about = "nano-infer project automation",
    version
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Write a random-weight Qwen3 checkpoint in the exact Hugging Face on-disk layout.
    SynthModel(synth::SynthArgs),
    /// End-to-end speed (load, prefill, decode, peak RSS) of whole models on this machine.
    Bench(bench::BenchArgs),
    /// One `bench` configuration in this process, as one JSON line (run by `bench`).
    #[command(hide = true)]
    BenchOne(bench::OneArgs),
    /// Build and run the tests for aarch64 under qemu, and check x86-64 run-time dispatch.
    Cross(cross::CrossArgs),
    /// Time streaming one Qwen3-4B-sized layer in from a file: pread vs mmap, warm and cold.
    BenchOffloadIo(offload_io::IoArgs),
    /// The HTTP server under load: concurrent streaming clients, a shared system prompt, a long
    /// prompt arriving beside running streams (synthetic Qwen3-4B models; loopback only).
    BenchServe(bench_serve::BenchServeArgs),
    /// The server with real clients: the pinned openai Python client, nginx and two replicas.
    E2e(e2e::E2eArgs),
}

fn main() -> ExitCode {
    let result = match Cli::parse().command {
        Command::SynthModel(args) => synth::run(&args),
        Command::Bench(args) => bench::run(&args),
        Command::BenchOne(args) => bench::run_one(&args),
        Command::Cross(args) => cross::run(&args),
        Command::BenchOffloadIo(args) => offload_io::run(&args),
        Command::E2e(args) => e2e::run(&args),
        Command::BenchServe(args) => bench_serve::run(&args),
    };
    // Print the cause chain on one line, without the backtrace anyhow's `Termination`
    // adds when RUST_BACKTRACE is set: these are user errors (paths, arguments).
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
