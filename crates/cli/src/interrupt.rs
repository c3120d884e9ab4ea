//! Ctrl-C: stop the answer being generated, not the program.
//!
//! The handler only sets a flag; the generation callback checks it after every token and
//! returns `Break`, so the session and the conversation stay consistent. A second Ctrl-C before
//! the first was noticed (a long prefill cannot be interrupted) exits at once. While rustyline
//! reads a line the terminal is in raw mode, so Ctrl-C there is a key rustyline handles, not a
//! signal.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// The flag the Ctrl-C handler sets.
#[derive(Clone, Debug)]
pub struct Interrupt(Arc<AtomicBool>);

impl Interrupt {
    /// Installs the handler. If that fails (another handler exists), Ctrl-C keeps its default
    /// meaning and the flag is simply never set.
    pub fn install() -> Self {
        let flag = Arc::new(AtomicBool::new(false));
        let handler_flag = Arc::clone(&flag);
        let _ = ctrlc::set_handler(move || {
            if handler_flag.swap(true, Ordering::SeqCst) {
                // Reset the terminal's colours in case a dim span was open.
                note!("\x1b[0m");
                std::process::exit(i32::from(crate::error::INTERRUPTED));
            }
        });
        Self(flag)
    }

    /// Whether Ctrl-C was pressed since the last [`Interrupt::clear`].
    pub fn is_set(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }

    /// Forgets earlier presses (call before each answer).
    pub fn clear(&self) {
        self.0.store(false, Ordering::SeqCst);
    }
}
