//! How failures reach the user: one line on stderr, `error: ` and the whole cause chain, then a
//! non-zero exit code.
//!
//! Everything below `main` returns `anyhow::Result`; `main` prints the error itself instead of
//! returning it, because returning an error from `main` prints its `Debug` form and, with
//! `RUST_BACKTRACE` set, a backtrace. Library errors already name the file or value at fault, so
//! the chain joined with ": " reads as one sentence.

use std::process::ExitCode;

/// Exit status of a run that failed (bad input, missing files, I/O).
pub const FAILURE: u8 = 1;
/// Exit status of a command line clap rejected, as clap itself uses.
pub const USAGE: u8 = 2;
/// Exit status after Ctrl-C stopped a one-shot generation (128 + SIGINT, as shells report it).
pub const INTERRUPTED: u8 = 130;

/// The error and its causes on one line. A cause whose text its parent already contains is
/// skipped (thiserror's `#[error("...: {source}")]` repeats the source).
pub fn message(err: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in err.chain() {
        let text = cause.to_string();
        if text.is_empty() || out.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    // Template and JSON errors can span lines; the contract is one line.
    out.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Prints `error: ...` and gives the failure exit code. A closed stdout (the reader of a pipe
/// quit, as `head` does) is not worth a message: the output was not wanted any more.
pub fn report(err: &anyhow::Error) -> ExitCode {
    if is_broken_pipe(err) {
        return ExitCode::from(FAILURE);
    }
    note!("error: {}", message(err));
    ExitCode::from(FAILURE)
}

/// Whether the error comes from writing to a pipe nobody reads any more.
pub fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain()
        .filter_map(|e| e.downcast_ref::<std::io::Error>())
        .any(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
}

/// A clap error: help and version go to stdout with success; a bad command line becomes one
/// line (clap's first) plus a pointer to `--help`, instead of clap's multi-line usage block.
pub fn report_clap(err: &clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    match err.kind() {
        ErrorKind::DisplayHelp
        | ErrorKind::DisplayVersion
        | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            let _ = err.print();
            ExitCode::SUCCESS
        }
        _ => {
            let rendered = err.render().to_string();
            let first = rendered
                .lines()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("invalid command line");
            let first = first.strip_prefix("error: ").unwrap_or(first);
            note!("error: {first} (see qwen3-infer --help)");
            ExitCode::from(USAGE)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context;

    #[test]
    fn chain_is_one_line_without_repeats() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "No such file");
        let err = Err::<(), _>(io).context("reading prompt.txt").unwrap_err();
        assert_eq!(message(&err), "reading prompt.txt: No such file");
        let err = anyhow::anyhow!("line one\nline two");
        assert_eq!(message(&err), "line one line two");
    }
}
