//! [`Batcher`]: continuous batching. Requests join and leave between steps; each step is one
//! forward pass that advances every running request by one token and, in the same pass, feeds
//! the next chunk of at most one waiting prompt (vLLM's chunked prefill). A long prompt
//! arriving therefore costs the running streams one chunk's compute per step instead of
//! freezing them for its whole prefill, and the weights are read once for both.
//!
//! While others decode the chunk is paced ([`PrefillPace`]): from the measured times of the
//! forward passes it takes as many prompt tokens as keep a step within [`PACED_STEP_RATIO`] times
//! a decode-only step, at most the configured chunk; every few steps the streams step alone, to
//! re-measure that time as their own contexts grow. A fixed chunk cannot do that for every
//! model: on a 2-core host with 4 streams and a 2,000-token prompt, 8 tokens a step held the
//! streams' p99 inter-token latency at 1.7x their median on 4B AWQ but let it reach 3.6x on
//! BF16 and 5.3x with int8 activations, whose decode steps are cheap beside a prompt token.
//! When nothing else runs the prompt gets the engine's long chunk, since only its own speed
//! matters then.
//!
//! Admission (as `BatchEngine::run`): a request starts when no other is still prefilling, fewer
//! than `max_batch` run, and the KV pool, after evicting unused cached prefixes, can hold every
//! running request's worst case (prompt + `max_tokens`), so a step never runs out of blocks
//! mid-way; others wait in order.
//! Prompts are matched against the engine's prefix cache when they start, so a chat that
//! resends its history, or many clients with one system prompt, prefill only what is new.
//!
//! Cancellation is checked at every step: a cancelled request ends with finish reason
//! `cancelled` and its blocks go back to the pool before the next forward pass.

use crate::assembler::Assembler;
use crate::picker::Picker;
use crate::{CancelToken, Event, GenerateError, Generator, Prepared, TextCodec};
use nano_infer_qwen3::{
    BatchEngine, EngineOptions, Generation, KvError, ModelError, SeqId, StopReason, TokenPicker,
};
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Where a request's events go (a channel to an HTTP response, a test's vector).
pub type EventSink<'a> = Box<dyn FnMut(Event) + Send + 'a>;

/// Occupancy of a [`Batcher`], for metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BatcherStats {
    /// Requests waiting to start.
    pub waiting: usize,
    /// Requests running (prefilling or decoding).
    pub running: usize,
    /// KV pool blocks in use (running sequences and cached prefixes).
    pub blocks_used: usize,
    /// KV pool blocks in all.
    pub blocks_total: usize,
    /// Prompt tokens of every request started.
    pub prompt_tokens: u64,
    /// Of those, tokens served by the prefix cache.
    pub cached_tokens: u64,
}

struct Waiting<'g> {
    prepared: Prepared,
    cancel: CancelToken,
    sink: EventSink<'g>,
}

struct Running<'g> {
    prepared: Prepared,
    cancel: CancelToken,
    sink: EventSink<'g>,
    seq: SeqId,
    picker: Picker,
    text: Assembler<'g>,
    ids: Vec<u32>,
    cached: usize,
    worst_blocks: usize,
    started: Instant,
    prefill_time: Option<Duration>,
    first_token: Option<Instant>,
}

/// A continuous batch over one [`Generator`]'s model; drive it with [`Batcher::step`] from one
/// thread (an engine thread), feeding it with [`Batcher::submit`] between steps.
pub struct Batcher<'g> {
    generator: &'g Generator,
    engine: BatchEngine<'g>,
    pace: PrefillPace,
    waiting: VecDeque<Waiting<'g>>,
    running: Vec<Running<'g>>,
}

impl std::fmt::Debug for Batcher<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batcher")
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl<'g> Batcher<'g> {
    /// A batcher with an empty pool (`options`: its size, `max_batch`, the prefix cache) that
    /// feeds at most `prefill_chunk` prompt tokens per step while other requests decode (fewer
    /// when that would slow their steps past [`PACED_STEP_RATIO`]), and `options.prefill_chunk`
    /// when none does.
    pub fn new(
        generator: &'g Generator,
        options: &EngineOptions,
        prefill_chunk: usize,
    ) -> Result<Self, GenerateError> {
        Ok(Self {
            generator,
            engine: BatchEngine::new(generator.model(), options)?,
            pace: PrefillPace::new(prefill_chunk),
            waiting: VecDeque::new(),
            running: Vec::new(),
        })
    }

    /// Queues a prepared request; its events go to `sink`, ending with `Finished` (or
    /// `Failed`). It starts at a later [`Batcher::step`].
    pub fn submit(&mut self, prepared: Prepared, cancel: CancelToken, sink: EventSink<'g>) {
        self.waiting.push_back(Waiting {
            prepared,
            cancel,
            sink,
        });
    }

    /// Whether a step would do anything.
    pub fn has_work(&self) -> bool {
        !self.waiting.is_empty() || !self.running.is_empty()
    }

    /// Occupancy now, and the prefix cache's counts so far.
    pub fn stats(&self) -> BatcherStats {
        let s = self.engine.stats();
        BatcherStats {
            waiting: self.waiting.len(),
            running: self.running.len(),
            blocks_used: s.blocks_used,
            blocks_total: s.blocks_total,
            prompt_tokens: s.prompt_tokens,
            cached_tokens: s.cached_tokens,
        }
    }

    /// One step: drops cancelled requests, admits waiting ones, then runs one forward pass
    /// (a token for every decoding request, a chunk of the first unfinished prompt) and
    /// samples. An engine error fails the requests of that pass (each gets `Failed`) and
    /// leaves the batcher usable for the rest.
    pub fn step(&mut self) -> Result<(), GenerateError> {
        self.drop_cancelled()?;
        self.admit()?;
        if self.running.is_empty() {
            return Ok(());
        }
        let decodes: Vec<(SeqId, u32)> = self
            .running
            .iter()
            .filter(|r| r.prefill_time.is_some())
            .map(|r| (r.seq, *r.ids.last().unwrap_or(&0)))
            .collect();
        // Beside running decodes a prompt gets a paced chunk, so the streams keep their pace;
        // with nothing decoding it gets the engine's own (long) chunk, since only the prefill's
        // speed matters then.
        let chunk = if decodes.is_empty() {
            self.engine.options().prefill_chunk.max(self.pace.max_chunk)
        } else {
            self.pace.chunk()
        };
        let mut prefill = None;
        // Now and then the streams step alone, so the pace re-measures their cost.
        if decodes.is_empty() || !self.pace.wants_decode_only() {
            for r in &self.running {
                if r.prefill_time.is_none() && self.engine.pending_prompt(r.seq)? > 0 {
                    prefill = Some((r.seq, chunk));
                    break;
                }
            }
        }
        if decodes.is_empty() && prefill.is_none() {
            return Ok(());
        }
        let vocab = self.generator.model().vocab_size();
        let pending = match prefill {
            Some((seq, _)) => self.engine.pending_prompt(seq)?,
            None => 0,
        };
        let pass = Instant::now();
        if let Err(e) = self.engine.step(&decodes, prefill) {
            self.fail_all(&e)?;
            return Ok(());
        }
        if !decodes.is_empty() {
            let fed = pending.min(chunk) * usize::from(prefill.is_some());
            self.pace.record(fed, pass.elapsed());
        }
        // Read in place: the loop below only reads the engine.
        let logits = self.engine.logits();
        let mut finished = Vec::new();
        let mut failed = Vec::new();
        for (i, r) in self.running.iter_mut().enumerate() {
            let row = if let Some(k) = decodes.iter().position(|&(s, _)| s == r.seq) {
                k
            } else if prefill.is_some_and(|(s, _)| s == r.seq)
                && self.engine.pending_prompt(r.seq)? == 0
            {
                r.prefill_time = Some(r.started.elapsed());
                r.first_token = Some(Instant::now());
                decodes.len()
            } else {
                continue;
            };
            let row = &logits[row * vocab..(row + 1) * vocab];
            let next = match r.picker.pick(row, self.engine.tokens(r.seq)?) {
                Ok(next) => next,
                Err(e) => {
                    // Only this request's grammar failed: it alone ends, with its error.
                    failed.push((i, e.to_string()));
                    continue;
                }
            };
            r.ids.push(next);
            let flow = r.text.token(next, row, &mut *r.sink)?;
            let s = &r.prepared.settings;
            let reason = if flow.is_break() || r.cancel.is_cancelled() {
                Some(StopReason::Cancelled)
            } else if !s.ignore_eos && self.generator.stop_ids().contains(&next) {
                Some(StopReason::Stop)
            } else if r.ids.len() >= s.max_tokens {
                Some(StopReason::Length)
            } else if self.engine.len(r.seq)? >= self.generator.model().ctx_size() {
                Some(StopReason::ContextFull)
            } else {
                None
            };
            if let Some(reason) = reason {
                finished.push((i, reason));
            }
        }
        // Both lists are in increasing index order and disjoint: remove from the back.
        let mut ends: Vec<(usize, Result<StopReason, String>)> = finished
            .into_iter()
            .map(|(i, reason)| (i, Ok(reason)))
            .chain(failed.into_iter().map(|(i, message)| (i, Err(message))))
            .collect();
        ends.sort_by_key(|(i, _)| std::cmp::Reverse(*i));
        for (i, end) in ends {
            let r = self.running.remove(i);
            match end {
                Ok(reason) => self.finish(r, reason)?,
                Err(message) => {
                    let mut sink = r.sink;
                    sink(Event::Failed { message });
                    self.engine.remove_sequence(r.seq)?;
                }
            }
        }
        Ok(())
    }

    /// Ends cancelled requests, waiting or running.
    fn drop_cancelled(&mut self) -> Result<(), GenerateError> {
        let mut i = 0;
        while i < self.waiting.len() {
            if self.waiting[i].cancel.is_cancelled() {
                if let Some(w) = self.waiting.remove(i) {
                    self.finish_unstarted(w)?;
                }
            } else {
                i += 1;
            }
        }
        let mut i = 0;
        while i < self.running.len() {
            if self.running[i].cancel.is_cancelled() {
                let r = self.running.remove(i);
                self.finish(r, StopReason::Cancelled)?;
            } else {
                i += 1;
            }
        }
        Ok(())
    }

    /// Starts waiting requests, in order, while they fit (see the module doc).
    fn admit(&mut self) -> Result<(), GenerateError> {
        let bs = self.engine.options().block_size;
        let ctx = self.generator.model().ctx_size();
        // One prompt is prefilled at a time, so a request waiting while another prefills loses
        // nothing by starting after it, and gains its blocks: the prefix cache only holds a
        // prompt once it is prefilled, and a batch of prompts with one system prompt would
        // otherwise all compute it.
        while self.running.len() < self.engine.options().max_batch
            && self.running.iter().all(|r| r.prefill_time.is_some())
        {
            let Some(w) = self.waiting.pop_front() else {
                break;
            };
            let prompt = &w.prepared.ids;
            let seq = match self.engine.add_sequence(prompt) {
                Ok(seq) => seq,
                Err(e) => {
                    fail(w.sink, &e.into());
                    continue;
                }
            };
            let worst = prompt
                .len()
                .saturating_add(w.prepared.settings.max_tokens)
                .min(ctx)
                .div_ceil(bs);
            let reserved: usize = self
                .running
                .iter()
                .map(|r| {
                    r.worst_blocks
                        .saturating_sub(self.engine.blocks_held(r.seq))
                })
                .sum();
            let needed = reserved + worst.saturating_sub(self.engine.blocks_held(seq));
            if !self.engine.reserve_blocks(needed)? {
                self.engine.remove_sequence(seq)?;
                if self.running.is_empty() {
                    // It cannot fit even alone: waiting will not help.
                    let free = self.engine.pool().n_free();
                    let e = ModelError::from(KvError::PoolExhausted { needed, free });
                    fail(w.sink, &e.into());
                    continue;
                }
                self.waiting.push_front(w);
                break;
            }
            let cached = self.engine.cached_tokens(seq)?;
            let g = self.generator;
            let codec = g.codec().map(|c| &**c);
            let text = Assembler::new(
                codec,
                &w.prepared.settings,
                g.stop_ids(),
                &w.prepared.ids,
                w.prepared.tool_calls,
            );
            self.running.push(Running {
                picker: Picker::new(
                    &w.prepared,
                    codec.and_then(TextCodec::think_ids),
                    g.stop_ids(),
                ),
                prepared: w.prepared,
                cancel: w.cancel,
                sink: w.sink,
                seq,
                text,
                ids: Vec::new(),
                cached,
                worst_blocks: worst,
                started: Instant::now(),
                prefill_time: None,
                first_token: None,
            });
        }
        Ok(())
    }

    /// Sends a request's last events and releases its sequence (its whole blocks stay in the
    /// prefix cache for a follow-up).
    fn finish(&mut self, mut r: Running<'g>, reason: StopReason) -> Result<(), GenerateError> {
        let generation = Generation {
            prompt_tokens: r.prepared.ids.len() - r.cached,
            cached_tokens: r.cached,
            ids: std::mem::take(&mut r.ids),
            stop_reason: reason,
            prefill_time: r.prefill_time.unwrap_or_else(|| r.started.elapsed()),
            decode_time: r.first_token.map_or(Duration::ZERO, |t| t.elapsed()),
        };
        let mut finish = r.text.finish(
            &generation,
            r.prepared.ids.len(),
            r.prepared.settings.sampling.seed,
            &mut *r.sink,
        )?;
        finish.constraint = r.picker.report();
        (r.sink)(Event::Finished(finish));
        self.engine.remove_sequence(r.seq)?;
        Ok(())
    }

    /// A request cancelled before it started: a `Finished` with nothing generated.
    fn finish_unstarted(&mut self, w: Waiting<'g>) -> Result<(), GenerateError> {
        let g = self.generator;
        let mut sink = w.sink;
        let text = Assembler::new(
            g.codec().map(|c| &**c),
            &w.prepared.settings,
            g.stop_ids(),
            &w.prepared.ids,
            w.prepared.tool_calls,
        );
        let generation = Generation {
            ids: Vec::new(),
            stop_reason: StopReason::Cancelled,
            prompt_tokens: 0,
            cached_tokens: 0,
            prefill_time: Duration::ZERO,
            decode_time: Duration::ZERO,
        };
        let finish = text.finish(
            &generation,
            w.prepared.ids.len(),
            w.prepared.settings.sampling.seed,
            &mut *sink,
        )?;
        sink(Event::Finished(finish));
        Ok(())
    }

    /// Fails every running request after an engine error in their pass.
    fn fail_all(&mut self, e: &ModelError) -> Result<(), GenerateError> {
        let message = e.to_string();
        for r in std::mem::take(&mut self.running) {
            let mut sink = r.sink;
            sink(Event::Failed {
                message: message.clone(),
            });
            self.engine.remove_sequence(r.seq)?;
        }
        Ok(())
    }
}

/// How much longer than a decode-only step a step that also feeds a prompt may take.
///
/// Why 2: the streams' p99 inter-token latency should stay within 3x their median while a
/// long prompt is prefilled, and the step times of a shared 2-core host scatter by a few tens of
/// percent on their own.
pub const PACED_STEP_RATIO: f64 = 2.0;

/// Sizes the prompt chunk fed beside running decodes from the measured forward passes: the
/// decode-only step time `d` and the time each prompt token adds to a step `c` (running means,
/// as both drift: more streams, a longer prompt to attend to), giving
/// `(PACED_STEP_RATIO − 1)·d / c` tokens, between 1 and the configured chunk.
#[derive(Debug)]
struct PrefillPace {
    max_chunk: usize,
    decode_step: Option<f64>,
    token_cost: Option<f64>,
    /// Steps with a prompt chunk since the last decode-only one.
    paced_since_decode_only: usize,
}

impl PrefillPace {
    /// Weight of the newest measurement in the running means: a few steps' memory, enough to
    /// ride over one slow step, short enough to follow the prompt's growing attention.
    const NEWEST: f64 = 0.25;

    /// Paced steps between two decode-only ones while a prompt is fed. The streams' own step
    /// grows with every token they add (measured: four streams at 1,000 positions take 0.23 s a
    /// step against 0.13 s at 30), and a decode time measured before the prompt arrived would
    /// charge that growth to the prompt's tokens: the chunk fell to 1 and a 2,000-token prompt
    /// waited 228 s. One step in 8 costs the prompt an eighth of its pace.
    const REFRESH_EVERY: usize = 8;

    fn new(max_chunk: usize) -> Self {
        Self {
            max_chunk: max_chunk.max(1),
            decode_step: None,
            token_cost: None,
            paced_since_decode_only: 0,
        }
    }

    /// Whether the next step beside decodes should feed no prompt, to re-measure their time.
    fn wants_decode_only(&self) -> bool {
        self.paced_since_decode_only >= Self::REFRESH_EVERY
    }

    /// Prompt tokens for the next step that runs beside decodes; the configured chunk until both
    /// costs have been measured.
    fn chunk(&self) -> usize {
        match (self.decode_step, self.token_cost) {
            (Some(d), Some(c)) => {
                let fits = (PACED_STEP_RATIO - 1.0) * d / c;
                // `as` saturates (and maps NaN to 0), so the clamp bounds every case.
                (fits as usize).clamp(1, self.max_chunk)
            }
            _ => self.max_chunk,
        }
    }

    /// A forward pass with decodes that also fed `prompt_tokens` (0: a decode-only step).
    fn record(&mut self, prompt_tokens: usize, took: Duration) {
        let secs = took.as_secs_f64();
        let mean = |old: Option<f64>, new: f64| {
            Some(old.map_or(new, |old| old + Self::NEWEST * (new - old)))
        };
        if prompt_tokens == 0 {
            self.decode_step = mean(self.decode_step, secs);
            self.paced_since_decode_only = 0;
            return;
        }
        self.paced_since_decode_only += 1;
        if let Some(d) = self.decode_step {
            // A noisy step can make the prompt look free; a floor of a thousandth of a step per
            // token keeps the estimate positive.
            let per_token = ((secs - d) / prompt_tokens as f64).max(d * 1e-3);
            self.token_cost = mean(self.token_cost, per_token);
        }
    }
}

fn fail(mut sink: EventSink<'_>, e: &GenerateError) {
    sink(Event::Failed {
        message: e.to_string(),
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: f64) -> Duration {
        Duration::from_secs_f64(v / 1000.0)
    }

    #[test]
    fn pace_feeds_the_configured_chunk_until_both_costs_are_measured() {
        let mut pace = PrefillPace::new(8);
        assert_eq!(pace.chunk(), 8);
        // A mixed step before any decode-only one teaches nothing: there is no baseline.
        pace.record(8, ms(300.0));
        assert_eq!(pace.chunk(), 8);
        pace.record(0, ms(100.0));
        assert_eq!(pace.chunk(), 8);
    }

    #[test]
    fn pace_sizes_the_chunk_to_keep_a_step_within_the_ratio() {
        // Decode-only steps of 100 ms; a prompt token adds 25 ms: (2 − 1)·100 / 25 = 4 tokens.
        let mut pace = PrefillPace::new(8);
        pace.record(0, ms(100.0));
        pace.record(8, ms(300.0));
        assert_eq!(pace.chunk(), 4);
        // Cheaper prompt tokens (10 ms) let the chunk grow back, but never past the configured 8.
        for _ in 0..40 {
            pace.record(4, ms(140.0));
        }
        assert_eq!(pace.chunk(), 8);
        // A prompt token dearer than a whole decode step still gets fed, a token at a time.
        for _ in 0..40 {
            pace.record(2, ms(500.0));
        }
        assert_eq!(pace.chunk(), 1);
    }

    #[test]
    fn pace_follows_drift_and_survives_noise() {
        let mut pace = PrefillPace::new(16);
        pace.record(0, ms(100.0));
        // A mixed step measured faster than the decode-only mean: the floor keeps the cost
        // positive, so the chunk is the configured one rather than a division by zero.
        pace.record(4, ms(90.0));
        assert_eq!(pace.chunk(), 16);
        // The prompt's attention grows: each token costs more, and the chunk follows it down.
        let mut last = pace.chunk();
        for step in 1..=30 {
            let cost = 5.0 + step as f64;
            pace.record(last, ms(100.0 + cost * last as f64));
            assert!(pace.chunk() <= 16 && pace.chunk() >= 1);
            last = pace.chunk();
        }
        // 35 ms a token by now (the mean lags a little behind): 100 / 35 ≈ 2.9.
        assert!((2..=4).contains(&last), "chunk {last}");
    }

    #[test]
    fn pace_re_measures_the_streams_alone_every_few_steps() {
        let mut pace = PrefillPace::new(8);
        pace.record(0, ms(100.0));
        for _ in 0..PrefillPace::REFRESH_EVERY {
            assert!(!pace.wants_decode_only());
            pace.record(4, ms(200.0));
        }
        assert!(pace.wants_decode_only());
        assert_eq!(pace.chunk(), 4);
        // The streams have grown to 150 ms a step: their growth is theirs, not the prompt's,
        // and the same 200 ms steps now say a prompt token costs 12.5 ms.
        for _ in 0..20 {
            pace.record(0, ms(150.0));
            assert!(!pace.wants_decode_only());
            for _ in 0..PrefillPace::REFRESH_EVERY {
                pace.record(4, ms(200.0));
            }
        }
        assert_eq!(pace.chunk(), 8, "(2 − 1)·150 / 12.5 = 12, capped at 8");
    }
}
