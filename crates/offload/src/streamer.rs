//! The prefetch thread: pages the next streamed layer in while the current one computes, and
//! drops streamed layers once they are used.
//!
//! Protocol, per forward pass and layer `i`: [`Streamer::before_layer`] waits until layer `i`
//! is resident (paging it in on the caller's thread if nobody asked for it yet) and asks the
//! thread for the next streamed layer; [`Streamer::after_layer`] drops a streamed layer's pages.
//! Resident layers are never dropped. Several sessions may run at once: a layer dropped under
//! another session's feet is only re-read (the mapping's bytes never change), so the protocol
//! affects speed, never results.
//!
//! Pages come back by the folio: Linux keeps a file's page cache in large folios where the
//! filesystem allows (ext4 since 6.16, xfs, tmpfs), up to a PMD (2 MiB on x86-64), and a fault
//! maps the whole folio. So touching a layer also maps the pages of any layer sharing a folio
//! with it, dropped ones included (on a 6.18 kernel, one touch of a file written in 1 MiB
//! writes mapped the whole MiB). Each load therefore drops again the dropped layers that lie
//! within [`FOLIO_REACH`] of the layer it paged in; without that, the process held up to a
//! folio of every neighbouring streamed layer beyond the plan (on the test fixtures, whose
//! layers are a few hundred KiB, most of a layer).

use crate::ResidencyPlan;
use nano_infer_tensor::{Paging, Tensor};
use std::sync::mpsc::{channel, Sender};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

/// The farthest apart two bytes of one mapping can be and still share a page-cache folio (the
/// largest folio, a PMD: 2 MiB with 4 KiB pages). Layers farther apart never map each other.
const FOLIO_REACH: usize = 2 << 20;

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
    /// For each streamed layer, the other streamed layers within [`FOLIO_REACH`] of it in
    /// memory: those whose pages paging it in can map.
    neighbours: Vec<Vec<usize>>,
    state: Mutex<Vec<State>>,
    ready: Condvar,
}

impl Shared {
    /// Pages `layer` in (its state is `Loading`, set by the caller) and marks it ready.
    fn load(&self, layer: usize) {
        for t in &self.layers[layer] {
            // WillNeed starts readahead for the whole range; touching then waits for it.
            let _ = t.advise(Paging::WillNeed);
            t.touch();
        }
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        // The touches mapped whole folios: drop again what they brought back of dropped layers
        // (under the lock, so no layer is being paged in or used meanwhile).
        for &n in &self.neighbours[layer] {
            if state[n] == State::Dropped {
                self.drop_pages(n);
            }
        }
        state[layer] = State::Ready;
        self.ready.notify_all();
    }

    fn drop_pages(&self, layer: usize) {
        for t in &self.layers[layer] {
            let _ = t.advise(Paging::DontNeed);
        }
    }
}

/// For each layer of `streamed`, the other streamed layers with a tensor within
/// [`FOLIO_REACH`] bytes of one of its own (by address: one mapping's bytes are contiguous, and
/// tensors of different mappings that happen to lie close only cost a redundant drop).
fn neighbours(layers: &[Vec<Tensor>], streamed: &[usize]) -> Vec<Vec<usize>> {
    let mut spans: Vec<(usize, usize, usize)> = streamed
        .iter()
        .flat_map(|&l| {
            layers[l].iter().map(move |t| {
                let start = t.bytes().as_ptr() as usize;
                (start, start + t.bytes().len(), l)
            })
        })
        .collect();
    spans.sort_unstable();
    let mut near = vec![Vec::new(); layers.len()];
    for (i, &(_, end, a)) in spans.iter().enumerate() {
        for &(start, _, b) in spans[i + 1..].iter() {
            if start >= end.saturating_add(FOLIO_REACH) {
                break;
            }
            if a != b {
                near[a].push(b);
                near[b].push(a);
            }
        }
    }
    for n in &mut near {
        n.sort_unstable();
        n.dedup();
    }
    near
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
            neighbours: neighbours(&layers, &plan.streamed_layers()),
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
            let mut state = self
                .shared
                .ready
                .wait_while(state, |s| s[layer] == State::Loading)
                .unwrap_or_else(|e| e.into_inner());
            // Still dropped: no prefetch was asked for, or the request could not reach the
            // thread. Loading here, marked so (a load on the thread leaves it alone).
            let here = state[layer] == State::Dropped;
            if here {
                state[layer] = State::Loading;
            }
            here
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
        self.shared.drop_pages(layer);
        state[layer] = State::Dropped;
    }

    /// Returns once no layer is being paged in: the process then holds the resident layers,
    /// the layers in use or prefetched, and none of the dropped ones' pages. For measuring
    /// memory (between two forward passes the prefetch of the next pass's first streamed layer
    /// may still be running); computing never needs it.
    pub fn wait_until_idle(&self) {
        let state = self.shared.state.lock().unwrap_or_else(|e| e.into_inner());
        let _idle = self
            .shared
            .ready
            .wait_while(state, |s| s.contains(&State::Loading))
            .unwrap_or_else(|e| e.into_inner());
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
