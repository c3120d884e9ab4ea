//! Ctrl-C: stop the answer being generated, not the program.
//!
//! The handler only cancels a [`CancelToken`]; generation checks it after every token and
//! between prefill chunks, so even a long prompt stops within one chunk, and the session and the
//! conversation stay consistent. A second Ctrl-C before the first was noticed exits at once.
//! While rustyline reads a line the terminal is in raw mode, so Ctrl-C there is a key rustyline
//! handles, not a signal.

use nano_infer_generate::CancelToken;

/// Installs the handler and returns the token it cancels. If installing fails (another handler
/// exists), Ctrl-C keeps its default meaning and the token is simply never cancelled.
pub fn install() -> CancelToken {
    let token = CancelToken::new();
    let handler_token = token.clone();
    let _ = ctrlc::set_handler(move || {
        if handler_token.is_cancelled() {
            // Reset the terminal's colours in case a dim span was open.
            note!("\x1b[0m");
            std::process::exit(i32::from(crate::error::INTERRUPTED));
        }
        handler_token.cancel();
    });
    token
}
