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
/// line instead of clap's multi-line block: its message with every detail clap gives (the
/// conflicting arguments, a "similar argument exists" tip), without the usage block.
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
            note!(
                "error: {} (see qwen3-infer --help)",
                clap_message(&err.render().to_string())
            );
            ExitCode::from(USAGE)
        }
    }
}

/// clap's rendered error as one line: the lines before `Usage:`, joined; a tip after `; `.
fn clap_message(rendered: &str) -> String {
    let mut out = String::new();
    for line in rendered.lines().map(str::trim) {
        if line.starts_with("Usage:") || line.starts_with("For more information") {
            break;
        }
        if line.is_empty() {
            continue;
        }
        let line = line.strip_prefix("error: ").unwrap_or(line);
        if !out.is_empty() {
            out.push_str(if line.starts_with("tip:") { "; " } else { " " });
        }
        out.push_str(line);
    }
    if out.is_empty() {
        "invalid command line".to_string()
    } else {
        out
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

    #[test]
    fn clap_details_survive_on_one_line() {
        let rendered = "error: unexpected argument '--temperatur' found\n\n  tip: a similar argument exists: '--temperature'\n\nUsage: qwen3-infer --temperature <T>\n\nFor more information, try '--help'.\n";
        assert_eq!(
            clap_message(rendered),
            "unexpected argument '--temperatur' found; tip: a similar argument exists: '--temperature'"
        );
        let rendered = "error: the argument '--ids <IDS>' cannot be used with:\n  --prompt <PROMPT>\n  --file <FILE>\n\nUsage: x\n";
        assert_eq!(
            clap_message(rendered),
            "the argument '--ids <IDS>' cannot be used with: --prompt <PROMPT> --file <FILE>"
        );
    }
}
