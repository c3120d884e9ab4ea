//! `qwen3-infer`: the command-line front end. Argument parsing and I/O only; the model lives in
//! `nano-infer-qwen3`, tokens and templates in `nano-infer-tokenizer`.
//!
//! Code map: `args` (clap definitions, range checks), `hub` (a path or a Hugging Face repo id to
//! a model directory), `load` (thread pool, model, tokenizer, template), `run` (one-shot
//! generation and `--json`), `chat` (`-i`), `perplexity`, `tokenize`, `batch` and `serve` (subcommands), `output`
//! (streaming text, thinking style), `stats` (`-v` numbers), `interrupt` (Ctrl-C), `error` (the
//! one-line `error: ...` contract).
//!
//! Every failure ends as one `error: ...` line on stderr and a non-zero exit status; `main`
//! prints it itself so no `Debug` dump or backtrace ever reaches the user.
#![forbid(unsafe_code)]

/// `eprintln!` that cannot panic: a closed stderr (a pipe whose reader is gone) must not turn a
/// message into a panic. Losing the message is all that can be done then.
macro_rules! note {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

/// `println!` that returns the I/O error instead of panicking, so `qwen3-infer ... | head`
/// ends quietly (see `error::report`).
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        writeln!(std::io::stdout(), $($arg)*)
    }};
}

mod args;
mod batch;
mod chat;
mod error;
mod hub;
mod interrupt;
mod load;
mod output;
mod perplexity;
mod run;
mod serve;
mod stats;
mod tokenize;

use args::{Cli, Command};
use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return error::report_clap(&e),
    };
    let result = match &cli.command {
        None => run::run(&cli.generate),
        Some(Command::Perplexity(args)) => perplexity::run(args),
        Some(Command::Tokenize(args)) => tokenize::run(args),
        Some(Command::Batch(args)) => batch::run(args),
        Some(Command::Serve(args)) => serve::run(args),
    };
    result.unwrap_or_else(|e| error::report(&e))
}
