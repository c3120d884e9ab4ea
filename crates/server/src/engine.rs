//! The engine thread: one plain thread owns the model's [`Batcher`] and steps it while there is
//! work; HTTP handlers hand it jobs over a channel and read their events from a channel of
//! their own. Between steps it takes new jobs, so requests join a running batch at once.
//!
//! A panic inside a step (a bug) must not take the server down: the step runs under
//! `catch_unwind`; the batcher is then rebuilt, and the requests it held see their event
//! channel close (the handlers answer 500) while later requests are served as usual.

use crate::metrics::Metrics;
use nano_infer_generate::{Batcher, CancelToken, Event, Generator, Prepared};
use nano_infer_qwen3::EngineOptions;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use tokio::sync::mpsc::UnboundedSender;

/// A request for the engine thread.
pub struct Job {
    pub prepared: Prepared,
    pub cancel: CancelToken,
    pub events: UnboundedSender<Event>,
}

/// The handlers' side of the engine thread.
#[derive(Debug)]
pub struct Engine {
    jobs: mpsc::Sender<Job>,
    /// Requests submitted and not yet finished (for the queue bound).
    pub in_flight: Arc<AtomicUsize>,
}

impl Engine {
    /// Starts the engine thread over `generator`.
    pub fn start(
        generator: Generator,
        options: EngineOptions,
        prefill_chunk: usize,
        metrics: Arc<Metrics>,
    ) -> Result<Self, nano_infer_generate::GenerateError> {
        // Fail here, not on the thread, when the options are bad (a KV budget of no block).
        drop(Batcher::new(&generator, &options, prefill_chunk)?);
        let (jobs, rx) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("nano-infer-engine".into())
            .spawn(move || run(&generator, &options, prefill_chunk, &rx, &metrics))
            .map_err(|e| {
                nano_infer_generate::GenerateError::field("engine", format!("cannot start: {e}"))
            })?;
        Ok(Self {
            jobs,
            in_flight: Arc::new(AtomicUsize::new(0)),
        })
    }

    /// Hands a job to the engine; false when the engine thread is gone.
    pub fn submit(&self, job: Job) -> bool {
        self.jobs.send(job).is_ok()
    }
}

/// The engine loop: ends when every handler side of the channel is dropped.
fn run(
    generator: &Generator,
    options: &EngineOptions,
    prefill_chunk: usize,
    jobs: &mpsc::Receiver<Job>,
    metrics: &Metrics,
) {
    let new_batcher = || Batcher::new(generator, options, prefill_chunk);
    let Ok(mut batcher) = new_batcher() else {
        return;
    };
    loop {
        // Idle: sleep until a job comes. Busy: take whatever arrived since the last step.
        if !batcher.has_work() {
            match jobs.recv() {
                Ok(job) => submit(&mut batcher, job),
                Err(_) => return,
            }
        }
        while let Ok(job) = jobs.try_recv() {
            submit(&mut batcher, job);
        }
        match std::panic::catch_unwind(AssertUnwindSafe(|| batcher.step())) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => eprintln!("engine: a step failed: {e}"),
            Err(_) => {
                eprintln!("engine: a step panicked; its requests are dropped, the server goes on");
                match new_batcher() {
                    Ok(b) => batcher = b,
                    Err(_) => return,
                }
            }
        }
        let s = batcher.stats();
        metrics.queue_length.set(s.waiting as f64);
        metrics.running.set(s.running as f64);
        metrics.kv_blocks_used.set(s.blocks_used as f64);
        metrics.kv_blocks_total.set(s.blocks_total as f64);
    }
}

fn submit<'g>(batcher: &mut Batcher<'g>, job: Job) {
    let Job {
        prepared,
        cancel,
        events,
    } = job;
    let on_gone = cancel.clone();
    batcher.submit(
        prepared,
        cancel,
        Box::new(move |event| {
            // The client is gone (its handler dropped the receiver): stop the request at the
            // next step, which frees its KV blocks.
            if events.send(event).is_err() {
                on_gone.cancel();
            }
        }),
    );
}

/// Counts a request in flight until dropped.
#[derive(Debug)]
pub struct InFlight(pub Arc<AtomicUsize>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Cancels its request when dropped: a handler future or a response stream dropped because the
/// client went away stops the generation.
#[derive(Debug)]
pub struct CancelOnDrop(pub CancelToken);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.cancel();
    }
}
