//! [`CancelToken`]: stop a generation from another thread, a signal handler or a dropped client.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// A shared flag. Generation checks it after every decode step and between prefill chunks, so a
/// cancelled request ends within one step (or one chunk of a long prompt) and its session stays
/// usable. Clones share the flag.
#[derive(Clone, Debug, Default)]
pub struct CancelToken(Arc<AtomicBool>);

impl CancelToken {
    /// A token not yet cancelled.
    pub fn new() -> Self {
        Self::default()
    }

    /// Asks every generation watching this token to stop.
    pub fn cancel(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    /// Whether [`CancelToken::cancel`] was called (since the last reset).
    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }

    /// Clears the flag, to reuse the token for the next request (a chat's next answer).
    pub fn reset(&self) {
        self.0.store(false, Ordering::SeqCst);
    }
}
