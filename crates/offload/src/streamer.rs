//! The prefetch thread: pages the next streamed layer in while the current one computes, and
//! drops streamed layers once they are used.
//!
//! Protocol, per forward pass and layer `i`: [`Streamer::before_layer`] waits until layer `i`
//! is resident (paging it in on the caller's thread if nobody asked for it yet) and asks the
//! thread for the next streamed layer; [`Streamer::after_layer`] drops a streamed layer's pages.
//! Resident layers are never dropped. Several sessions may run at once: a layer dropped under
//! another session's feet is only re-read (the mapping's bytes never change), so the protocol
//! affects speed, never results.

use crate::ResidencyPlan;
use nano_infer_tensor::{Paging, Tensor};
use std::sync::mpsc::{channel, Sender};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Dropped,
    Loading,
    Ready,
}

#[derive(Debug)]
struct Shared {
    /// The tensors of each decoder layer.
    layers: Vec<Vec<Tensor>>,
    plan: ResidencyPlan,
    state: Mutex<Vec<State>>,
    ready: Condvar,
}

impl Shared {
    fn load(&self, layer: usize) {
        for t in &self.layers[layer] {
            // WillNeed starts readahead for the whole range; touching then waits for it.
            let _ = t.advise(Paging::WillNeed);
            t.touch();
        }
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state[layer] = State::Ready;
        self.ready.notify_all();
    }
}

/// Streams the non-resident layers of a [`ResidencyPlan`].
#[derive(Debug)]
pub struct Streamer {
    shared: Arc<Shared>,
    requests: Option<Sender<usize>>,
    thread: Option<JoinHandle<()>>,
}

impl Streamer {
    /// Starts the prefetch thread. `layers[i]` are the tensors layer `i` reads.
    pub fn new(layers: Vec<Vec<Tensor>>, plan: ResidencyPlan) -> Self {
        let n = layers.len();
        let shared = Arc::new(Shared {
            layers,
            plan,
            state: Mutex::new(vec![State::Dropped; n]),
            ready: Condvar::new(),
        });
        let (requests, inbox) = channel::<usize>();
        let worker = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("nano-infer-prefetch".into())
            .spawn(move || {
                for layer in inbox {
                    worker.load(layer);
                }
            })
            .ok();
        let streamer = Self {
            shared,
            requests: thread.as_ref().map(|_| requests),
            thread,
        };
        if streamer.shared.plan.prefetches() {
            if let Some(first) = streamer.shared.plan.streamed_layers().first() {
                streamer.request(*first);
            }
        }
        streamer
    }

    /// The plan being followed.
    pub fn plan(&self) -> &ResidencyPlan {
        &self.shared.plan
    }

    /// Asks the thread for `layer` unless it is already loading or loaded.
    fn request(&self, layer: usize) {
        let mut state = self.shared.state.lock().unwrap_or_else(|e| e.into_inner());
        if state[layer] != State::Dropped {
            return;
        }
        match &self.requests {
            Some(tx) if tx.send(layer).is_ok() => state[layer] = State::Loading,
            // No thread (it could not be spawned): the caller pages the layer in itself.
            _ => {}
        }
    }

    /// Call before computing layer `layer`: returns once its weights are resident, and starts
    /// prefetching the next streamed layer.
    pub fn before_layer(&self, layer: usize) {
        if self.shared.plan.is_resident(layer) {
            return;
        }
        if self.shared.plan.prefetches() {
            self.request(layer);
        }
        let must_load_here = {
            let state = self.shared.state.lock().unwrap_or_else(|e| e.into_inner());
            let state = self
                .shared
                .ready
                .wait_while(state, |s| s[layer] == State::Loading)
                .unwrap_or_else(|e| e.into_inner());
            // Still dropped: no prefetch was asked for, or the request could not reach the thread.
            state[layer] == State::Dropped
        };
        if must_load_here {
            self.shared.load(layer);
        }
        if let Some(next) = self
            .shared
            .plan
            .next_streamed(layer)
            .filter(|&n| n != layer)
        {
            self.request(next);
        }
    }

    /// Call after computing layer `layer`: a streamed layer's pages are dropped.
    pub fn after_layer(&self, layer: usize) {
        if self.shared.plan.is_resident(layer) {
            return;
        }
        let mut state = self.shared.state.lock().unwrap_or_else(|e| e.into_inner());
        if state[layer] == State::Loading {
            // The thread is paging it in again for the next token (a single streamed layer
            // wraps onto itself): leave it.
            return;
        }
        for t in &self.shared.layers[layer] {
            let _ = t.advise(Paging::DontNeed);
        }
        state[layer] = State::Dropped;
    }
}

impl Drop for Streamer {
    fn drop(&mut self) {
        // Closing the channel ends the thread's loop.
        self.requests.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
