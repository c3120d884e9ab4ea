//! Many sequences over one paged KV pool, decoded together, with a shared prefix cache.
//!
//! Design (vLLM's paged KV with SGLang's RadixAttention on top):
//!
//! - **Paged KV.** Every sequence of a [`BatchEngine`] keeps its keys and values in blocks of
//!   `block_size` positions from one bounded [`PagedKvCache`] pool; attention walks the
//!   sequence's block table. Memory is committed block by block.
//! - **Batched decode.** [`BatchEngine::decode`] stacks the current token of every listed
//!   sequence as one row of a single forward pass: each linear layer reads its weights once per
//!   step for all of them (decode is bound by weight bandwidth, so B sequences cost little more
//!   than one), and attention runs per row over that row's own blocks.
//! - **Prefix cache.** An index maps token prefixes to the pool blocks holding their KV, in
//!   one of two designs ([`PrefixIndex`]): a [`RadixTree`] paged like the pool (one tree page =
//!   one KV block; SGLang's RadixAttention, the default) or a [`PrefixCache`] of whole blocks
//!   keyed by a chained hash of their tokens (vLLM's automatic prefix caching). Both reuse the
//!   same whole blocks; the tree finds a prefix in one walk and evicts by node, the hash map
//!   probes block by block and evicts by block. [`BatchEngine::add_sequence`] reuses the
//!   blocks of the longest cached whole-block prefix (at most `prompt.len() - 1` tokens, since
//!   the last prompt token must run to give logits) and [`BatchEngine::prefill`] computes only
//!   the rest. Each cached block holds one pool reference owned by the index; a running sequence
//!   holds its own reference, which keeps the block from eviction (the tree also locks the
//!   sequence's path, the hash cache skips blocks whose refcount shows another holder). After a
//!   prefill and when a sequence ends, its whole blocks are inserted. When the pool runs short,
//!   least recently used unused leaves are evicted and their blocks released.
//! - **Scheduling.** [`BatchEngine::run`] admits requests in order while fewer than
//!   `max_batch` run and the pool (after evicting cached blocks) can hold every running
//!   request's worst case (prompt + `max_new_tokens`), so a step never runs out of blocks
//!   mid-way; others wait until a sequence finishes.
//!
//! Costs: a reused prefix costs nothing but its blocks; a prompt that diverges inside a block
//! recomputes that whole block (block-granular reuse). Numerics are those of a [`crate::Session`]
//! up to summation order: batched rows go through the same kernels.

use std::collections::HashMap;
use std::ops::ControlFlow;
use std::time::{Duration, Instant};

use nano_infer_kvcache::{
    BlockId, BlockPool, BlockPoolConfig, KvError, NodeId, PagedKvCache, PrefixCache, RadixTree,
    SeqId,
};

use crate::attention::PagedSeqs;
use crate::model::RunState;
use crate::{Logits, Model, ModelError, Sampler, SamplingParams, StopReason};

/// Shape and policy of a [`BatchEngine`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EngineOptions {
    /// Token positions per KV block, and per prefix-cache page (reuse is block-granular).
    pub block_size: usize,
    /// Bound on the pool's KV memory: running sequences and cached prefixes together. Storage
    /// grows lazily up to it.
    pub kv_budget_bytes: usize,
    /// Most sequences [`BatchEngine::run`] decodes together in one forward pass (0 counts as 1).
    pub max_batch: usize,
    /// Reuse the KV of cached prefixes; off, every prompt is prefilled in full.
    pub prefix_cache: bool,
    /// How cached prefixes are found (when `prefix_cache` is on).
    pub prefix_index: PrefixIndex,
    /// Longest prefill forward pass in tokens (0 counts as 1): longer prompts run in chunks,
    /// which bounds activation memory at `prefill_chunk * (hidden + 2 * intermediate + ...)`.
    pub prefill_chunk: usize,
}

impl Default for EngineOptions {
    /// Blocks of 16, a 2 GiB pool, 8 sequences per step, prefix cache on, 512-token chunks.
    fn default() -> Self {
        Self {
            block_size: 16,
            kv_budget_bytes: 2 << 30,
            max_batch: 8,
            prefix_cache: true,
            prefix_index: PrefixIndex::Radix,
            prefill_chunk: 512,
        }
    }
}

/// The structure that finds cached prefixes; both reuse whole KV blocks and give the same
/// tokens and logits, so the choice is about bookkeeping cost.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PrefixIndex {
    /// A radix tree over token sequences (SGLang's RadixAttention): one walk per lookup, shared
    /// paths stored once, LRU eviction of unused leaves.
    #[default]
    Radix,
    /// Whole blocks keyed by a chained hash of their tokens (vLLM's automatic prefix caching):
    /// one hash probe per block, LRU eviction of unused leaf blocks.
    Hash,
}

impl std::str::FromStr for PrefixIndex {
    type Err = ModelError;

    /// `radix` or `hash`.
    fn from_str(s: &str) -> Result<Self, ModelError> {
        match s {
            "radix" => Ok(PrefixIndex::Radix),
            "hash" => Ok(PrefixIndex::Hash),
            _ => Err(KvError::InvalidConfig(format!(
                "unknown prefix index `{s}` (expected radix or hash)"
            ))
            .into()),
        }
    }
}

impl std::fmt::Display for PrefixIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            PrefixIndex::Radix => "radix",
            PrefixIndex::Hash => "hash",
        })
    }
}

/// The prefix index of a [`BatchEngine`], one of the [`PrefixIndex`] designs, with the
/// operations the engine needs from either.
#[derive(Debug)]
enum Prefixes {
    /// Token prefixes -> the block holding each token (one tree page per block). The tree owns
    /// one pool reference per cached block.
    Radix(RadixTree<BlockId>),
    /// Chained block hashes -> blocks; owns one pool reference per entry.
    Hash(PrefixCache),
}

impl Prefixes {
    /// The blocks of the longest cached whole-block prefix of `tokens`, the tokens they hold, and
    /// the tree node to lock while a sequence uses them (the hash cache needs no lock: the
    /// sequence's own block references keep them).
    fn lookup(
        &mut self,
        tokens: &[u32],
        block_size: usize,
    ) -> (Vec<BlockId>, usize, Option<NodeId>) {
        match self {
            Prefixes::Radix(tree) => {
                let m = tree.match_prefix(tokens);
                let blocks = m.handles.iter().step_by(block_size).copied().collect();
                (blocks, m.len, Some(m.node))
            }
            Prefixes::Hash(cache) => {
                let m = cache.lookup(tokens);
                (m.blocks, m.n_tokens, None)
            }
        }
    }

    /// Tokens cached now.
    fn cached_tokens(&self) -> usize {
        match self {
            Prefixes::Radix(tree) => tree.total_tokens(),
            Prefixes::Hash(cache) => cache.n_cached() * cache.block_size(),
        }
    }
}

/// Counters of a [`BatchEngine`] since it was made.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Prompt tokens of every sequence added.
    pub prompt_tokens: u64,
    /// Of those, tokens whose KV came from the prefix cache (prefill skipped): the hits.
    pub cached_tokens: u64,
    /// Tokens evicted from the prefix cache to make room.
    pub evicted_tokens: u64,
    /// Tokens the prefix cache holds now.
    pub tree_tokens: usize,
    /// Pool blocks in use now (running sequences and cached prefixes).
    pub blocks_used: usize,
    /// The pool's bound on blocks.
    pub blocks_total: usize,
}

/// A token [`BatchEngine::run`] just sampled, shown to its callback.
#[derive(Clone, Copy, Debug)]
pub struct SampledToken<'a> {
    /// Index of the request in the slice given to `run`.
    pub request: usize,
    /// The token id.
    pub id: u32,
    /// The logits `(vocab)` the token was sampled from, before any sampling transform (for
    /// log-probabilities).
    pub logits: &'a [f32],
}

/// One request of [`BatchEngine::run`].
#[derive(Clone, Debug, PartialEq)]
pub struct BatchRequest {
    /// Prompt token ids (at least one).
    pub prompt: Vec<u32>,
    /// Its sampler settings and seed.
    pub sampling: SamplingParams,
    /// The most tokens to generate.
    pub max_new_tokens: usize,
    /// Ids that end the answer (included in its output).
    pub stop_ids: Vec<u32>,
    /// Keep generating past stop ids.
    pub ignore_eos: bool,
}

/// The outcome of one [`BatchRequest`].
#[derive(Clone, Debug, PartialEq)]
pub struct BatchOutput {
    /// Generated ids, the stop id included when there was one.
    pub ids: Vec<u32>,
    /// Why it ended.
    pub stop_reason: StopReason,
    /// Length of the prompt.
    pub prompt_tokens: usize,
    /// Prompt tokens whose KV came from the prefix cache (not prefilled).
    pub cached_tokens: usize,
    /// Time this request's prefill took.
    pub prefill_time: Duration,
    /// From its first generated token to its last (decode steps are shared with other
    /// requests running at the same time).
    pub decode_time: Duration,
}

/// Per-sequence state beside its block table.
#[derive(Debug)]
struct SeqState {
    /// Every token fed, then prompt tokens not yet fed (`cache.len(seq)..`).
    tokens: Vec<u32>,
    /// Leading tokens reused from the prefix cache.
    cached: usize,
    /// The radix node this sequence locks (its cached path), if any.
    node: Option<NodeId>,
}

/// Sequences over a paged KV pool with a shared prefix cache; see the module doc.
#[derive(Debug)]
pub struct BatchEngine<'m> {
    model: &'m Model,
    options: EngineOptions,
    cache: PagedKvCache,
    prefixes: Prefixes,
    seqs: HashMap<SeqId, SeqState>,
    state: RunState,
    logits: Vec<f32>,
    chunk_logits: Vec<f32>,
    /// A decode step's sequences, tokens and segment lengths (all 1).
    step_seqs: Vec<SeqId>,
    step_ids: Vec<u32>,
    step_lens: Vec<usize>,
    stats: CacheStats,
}

impl<'m> BatchEngine<'m> {
    /// An engine with an empty pool and prefix cache; the pool holds
    /// `kv_budget_bytes / block_bytes` blocks of the model's KV dtype.
    pub fn new(model: &'m Model, options: &EngineOptions) -> Result<Self, ModelError> {
        let c = model.config();
        let mut cfg = BlockPoolConfig {
            n_layers: c.num_hidden_layers,
            n_kv_heads: c.n_kv_heads(),
            head_dim: c.head_dim(),
            block_size: options.block_size,
            n_blocks: 0,
            dtype: model.kv_dtype(),
        };
        if options.block_size == 0 {
            return Err(KvError::InvalidConfig("block_size must be non-zero".into()).into());
        }
        cfg.n_blocks = options.kv_budget_bytes / cfg.block_bytes();
        if cfg.n_blocks == 0 {
            return Err(KvError::InvalidConfig(format!(
                "a KV budget of {} bytes holds no block of {} bytes",
                options.kv_budget_bytes,
                cfg.block_bytes()
            ))
            .into());
        }
        let mut options = options.clone();
        options.max_batch = options.max_batch.max(1);
        options.prefill_chunk = options.prefill_chunk.max(1);
        let cache = PagedKvCache::new(cfg, model.ctx_size())?;
        let prefixes = match options.prefix_index {
            PrefixIndex::Radix => Prefixes::Radix(RadixTree::with_page_size(options.block_size)),
            // The pool bounds the cache: blocks are evicted on demand (`make_room`), never to
            // meet a budget of the cache's own.
            PrefixIndex::Hash => Prefixes::Hash(PrefixCache::new(cache.pool(), usize::MAX)),
        };
        Ok(Self {
            model,
            cache,
            prefixes,
            options,
            seqs: HashMap::new(),
            state: RunState::default(),
            logits: Vec::new(),
            chunk_logits: Vec::new(),
            step_seqs: Vec::new(),
            step_ids: Vec::new(),
            step_lens: Vec::new(),
            stats: CacheStats {
                blocks_total: cfg.n_blocks,
                ..CacheStats::default()
            },
        })
    }

    /// The model this engine runs.
    pub fn model(&self) -> &'m Model {
        self.model
    }

    /// The options in effect.
    pub fn options(&self) -> &EngineOptions {
        &self.options
    }

    /// The block pool, for memory figures.
    pub fn pool(&self) -> &BlockPool {
        self.cache.pool()
    }

    /// The logits of the last [`BatchEngine::prefill`], [`BatchEngine::decode`] or
    /// [`BatchEngine::step`], laid out as that call returned them.
    pub fn logits(&self) -> &[f32] {
        &self.logits
    }

    /// Counters and current occupancy.
    pub fn stats(&self) -> CacheStats {
        CacheStats {
            tree_tokens: self.prefixes.cached_tokens(),
            blocks_used: self.cache.pool().n_used(),
            ..self.stats.clone()
        }
    }

    /// Starts a sequence for `prompt`: reuses the KV blocks of its longest cached whole-block
    /// prefix (leaving at least one token to run) and computes nothing yet; call
    /// [`BatchEngine::prefill`] next.
    pub fn add_sequence(&mut self, prompt: &[u32]) -> Result<SeqId, ModelError> {
        if prompt.is_empty() {
            return Err(ModelError::EmptyInput);
        }
        let max = self.model.ctx_size();
        if prompt.len() > max {
            return Err(ModelError::ContextFull {
                needed: prompt.len(),
                max,
            });
        }
        let (seq, cached, node) = if self.options.prefix_cache {
            let (blocks, len, node) = self
                .prefixes
                .lookup(&prompt[..prompt.len() - 1], self.options.block_size);
            let seq = self.cache.add_sequence_with_prefix(&blocks, len)?;
            if let (Prefixes::Radix(tree), Some(node)) = (&mut self.prefixes, node) {
                tree.lock(node)?;
            }
            (seq, len, node)
        } else {
            (self.cache.add_sequence(), 0, None)
        };
        self.stats.prompt_tokens += prompt.len() as u64;
        self.stats.cached_tokens += cached as u64;
        self.seqs.insert(
            seq,
            SeqState {
                tokens: prompt.to_vec(),
                cached,
                node,
            },
        );
        Ok(seq)
    }

    /// Prompt tokens of `seq` that came from the prefix cache.
    pub fn cached_tokens(&self, seq: SeqId) -> Result<usize, ModelError> {
        Ok(self.seq(seq)?.cached)
    }

    /// Every token of `seq` so far: fed ones, then any not yet prefilled.
    pub fn tokens(&self, seq: SeqId) -> Result<&[u32], ModelError> {
        Ok(&self.seq(seq)?.tokens)
    }

    /// Positions of `seq` in the cache.
    pub fn len(&self, seq: SeqId) -> Result<usize, ModelError> {
        Ok(self.cache.len(seq)?)
    }

    /// Number of live sequences.
    pub fn n_sequences(&self) -> usize {
        self.seqs.len()
    }

    /// Runs every token of `seq` not yet in the cache (the prompt less its cached prefix) in
    /// chunks of at most `prefill_chunk`, then caches the sequence's whole blocks. Returns the
    /// last position's logits `(vocab)` for [`Logits::Last`], every fed position's for `All`.
    /// After an error the chunks that completed stay in the cache, and a retry goes on from
    /// there.
    pub fn prefill(&mut self, seq: SeqId, mode: Logits) -> Result<&[f32], ModelError> {
        let start = self.cache.len(seq)?;
        let end = self.seq(seq)?.tokens.len();
        if start == end {
            return Err(ModelError::EmptyInput);
        }
        self.logits.clear();
        let mut pos = start;
        while pos < end {
            let n = (end - pos).min(self.options.prefill_chunk);
            self.ensure_blocks(self.blocks_needed(seq, n)?)?;
            let ids = &self.seqs[&seq].tokens[pos..pos + n];
            let mut store = PagedSeqs {
                cache: &mut self.cache,
                seqs: std::slice::from_ref(&seq),
            };
            self.model.forward_segments(
                ids,
                &[n],
                mode,
                &mut store,
                &mut self.state,
                &mut self.chunk_logits,
            )?;
            match mode {
                Logits::All => self.logits.extend_from_slice(&self.chunk_logits),
                Logits::Last => std::mem::swap(&mut self.logits, &mut self.chunk_logits),
            }
            pos += n;
        }
        if self.options.prefix_cache {
            self.cache_sequence(seq)?;
        }
        Ok(&self.logits)
    }

    /// Appends `ids` to `seq` and runs them like [`BatchEngine::prefill`] (a follow-up turn).
    pub fn extend(&mut self, seq: SeqId, ids: &[u32], mode: Logits) -> Result<&[f32], ModelError> {
        if ids.is_empty() {
            return Err(ModelError::EmptyInput);
        }
        let len = self.cache.len(seq)?;
        let s = self.seq_mut(seq)?;
        if s.tokens.len() != len {
            return Err(ModelError::NotPrefilled(seq.0));
        }
        s.tokens.extend_from_slice(ids);
        let result = self.prefill(seq, mode).map(|_| ());
        if result.is_err() {
            // Earlier chunks may have run: drop them too, so the sequence is as it was.
            self.cache.truncate(seq, len)?;
            if let Some(s) = self.seqs.get_mut(&seq) {
                s.tokens.truncate(len);
            }
        }
        result.map(|()| &self.logits[..])
    }

    /// One decode step for several sequences in one forward pass: feeds `token` to each listed
    /// sequence and returns logits `(steps.len(), vocab)`, row `i` for `steps[i]`. Every
    /// sequence must be fully prefilled and listed at most once. On error no sequence changes.
    pub fn decode(&mut self, steps: &[(SeqId, u32)]) -> Result<&[f32], ModelError> {
        self.step(steps, None)
    }

    /// One continuous-batching step: a decode token for each sequence of `decodes` and, in the
    /// same forward pass, up to `max_tokens` not-yet-prefilled prompt tokens of `prefill`'s
    /// sequence (vLLM's chunked prefill: the weights are read once for both, so a long prompt
    /// arriving slows the running streams by its chunk's compute, not by a whole prefill).
    /// Returns logits `(decodes.len() + 1, vocab)` with a prefill, else `(decodes.len(), vocab)`:
    /// row `i` for `decodes[i]`, the last row the prefill chunk's last position (the prompt's
    /// next-token logits once [`BatchEngine::pending_prompt`] is 0). A prompt that completes is
    /// added to the prefix cache. On error no sequence changes.
    pub fn step(
        &mut self,
        decodes: &[(SeqId, u32)],
        prefill: Option<(SeqId, usize)>,
    ) -> Result<&[f32], ModelError> {
        // The prefill chunk: its sequence, first position and length.
        let chunk = match prefill {
            Some((seq, max_tokens)) => {
                let pos = self.cache.len(seq)?;
                let pending = self.seq(seq)?.tokens.len() - pos;
                Some((seq, pos, pending.min(max_tokens), pending))
            }
            None => None,
        };
        if decodes.is_empty() && chunk.is_none() || chunk.is_some_and(|(_, _, n, _)| n == 0) {
            return Err(ModelError::EmptyInput);
        }
        let mut new_blocks = match chunk {
            Some((seq, _, n, _)) => self.blocks_needed(seq, n)?,
            None => 0,
        };
        for (i, &(seq, _)) in decodes.iter().enumerate() {
            if chunk.is_some_and(|(p, ..)| p == seq) || decodes[..i].iter().any(|&(s, _)| s == seq)
            {
                return Err(ModelError::DuplicateSequence(seq.0));
            }
            if self.seq(seq)?.tokens.len() != self.cache.len(seq)? {
                return Err(ModelError::NotPrefilled(seq.0));
            }
            new_blocks += self.blocks_needed(seq, 1)?;
        }
        self.ensure_blocks(new_blocks)?;
        // Reused buffers: a decode step allocates nothing once they have grown.
        self.step_seqs.clear();
        self.step_seqs.extend(decodes.iter().map(|&(seq, _)| seq));
        self.step_ids.clear();
        self.step_ids.extend(decodes.iter().map(|&(_, id)| id));
        self.step_lens.clear();
        self.step_lens.resize(decodes.len(), 1);
        if let Some((seq, pos, n, _)) = chunk {
            self.step_seqs.push(seq);
            self.step_ids
                .extend_from_slice(&self.seqs[&seq].tokens[pos..pos + n]);
            self.step_lens.push(n);
        }
        let mut store = PagedSeqs {
            cache: &mut self.cache,
            seqs: &self.step_seqs,
        };
        self.model.forward_segments(
            &self.step_ids,
            &self.step_lens,
            Logits::Last,
            &mut store,
            &mut self.state,
            &mut self.logits,
        )?;
        for &(seq, id) in decodes {
            if let Some(s) = self.seqs.get_mut(&seq) {
                s.tokens.push(id);
            }
        }
        if let Some((seq, _, n, pending)) = chunk {
            if n == pending && self.options.prefix_cache {
                self.cache_sequence(seq)?;
            }
        }
        Ok(&self.logits)
    }

    /// Prompt tokens of `seq` not yet in the cache (0 once it is prefilled).
    pub fn pending_prompt(&self, seq: SeqId) -> Result<usize, ModelError> {
        Ok(self.seq(seq)?.tokens.len() - self.cache.len(seq)?)
    }

    /// Whether `n` blocks can be free, evicting least recently used cached prefixes that no
    /// sequence uses if needed (a scheduler's admission check).
    pub fn reserve_blocks(&mut self, n: usize) -> Result<bool, ModelError> {
        self.make_room(n)
    }

    /// Blocks `seq` holds now (0 for an unknown sequence).
    pub fn blocks_held(&self, seq: SeqId) -> usize {
        self.held_blocks(seq)
    }

    /// Ends `seq`: caches its whole blocks (prompt and generated tokens, for a follow-up that
    /// starts with them), unlocks its path and releases its blocks.
    pub fn remove_sequence(&mut self, seq: SeqId) -> Result<(), ModelError> {
        self.release_sequence(seq, self.options.prefix_cache)
    }

    /// Drops every cached prefix no running sequence uses; returns the tokens dropped.
    pub fn clear_prefix_cache(&mut self) -> Result<usize, ModelError> {
        self.evict_cached(usize::MAX)
    }

    /// Runs every request to completion, decoding up to `max_batch` of them together, and
    /// returns their outputs in request order. `on_token` sees each token as it is sampled,
    /// with the logits it was sampled from; `Break` ends that request (`StopReason::Cancelled`).
    ///
    /// Requests are checked before anything runs (empty prompt, a prompt longer than the
    /// context, ids outside the vocabulary). Admission keeps every running request's worst case
    /// in the pool; a request that cannot fit even alone is `KvError::PoolExhausted`.
    pub fn run(
        &mut self,
        requests: &[BatchRequest],
        mut on_token: impl FnMut(SampledToken<'_>) -> ControlFlow<()>,
    ) -> Result<Vec<BatchOutput>, ModelError> {
        let vocab = self.model.vocab_size();
        let max = self.model.ctx_size();
        for r in requests {
            if r.prompt.is_empty() {
                return Err(ModelError::EmptyInput);
            }
            if r.prompt.len() > max {
                return Err(ModelError::ContextFull {
                    needed: r.prompt.len(),
                    max,
                });
            }
            if let Some(&id) = r.prompt.iter().find(|&&id| id as usize >= vocab) {
                return Err(ModelError::TokenOutOfRange {
                    id,
                    vocab_size: vocab,
                });
            }
        }
        let mut active = Vec::new();
        let result = self.run_checked(requests, &mut active, &mut on_token);
        if result.is_err() {
            // Leave no half-run sequence behind (their blocks would stay allocated).
            for a in active {
                let _ = self.release_sequence(a.seq, false);
            }
        }
        result
    }

    /// [`BatchEngine::run`] after the checks; `active` holds the running requests, so that
    /// `run` can release them after an error.
    fn run_checked(
        &mut self,
        requests: &[BatchRequest],
        active: &mut Vec<Active>,
        on_token: &mut dyn FnMut(SampledToken<'_>) -> ControlFlow<()>,
    ) -> Result<Vec<BatchOutput>, ModelError> {
        let bs = self.options.block_size;
        let ctx = self.model.ctx_size();
        let mut outputs: Vec<Option<BatchOutput>> = vec![None; requests.len()];
        let mut next_req = 0;
        let mut steps = Vec::new();
        loop {
            // 1. Admit requests while there is room, prefilling each and sampling its first
            // token.
            while active.len() < self.options.max_batch && next_req < requests.len() {
                let r = &requests[next_req];
                if r.max_new_tokens == 0 {
                    outputs[next_req] = Some(BatchOutput {
                        ids: Vec::new(),
                        stop_reason: StopReason::Length,
                        prompt_tokens: r.prompt.len(),
                        cached_tokens: 0,
                        prefill_time: Duration::ZERO,
                        decode_time: Duration::ZERO,
                    });
                    next_req += 1;
                    continue;
                }
                let seq = self.add_sequence(&r.prompt)?;
                let worst = r
                    .prompt
                    .len()
                    .saturating_add(r.max_new_tokens)
                    .min(ctx)
                    .div_ceil(bs);
                let reserved: usize = active
                    .iter()
                    .map(|a| a.worst_blocks.saturating_sub(self.held_blocks(a.seq)))
                    .sum();
                let needed = reserved + worst.saturating_sub(self.held_blocks(seq));
                let fits = self.make_room(needed);
                if !matches!(fits, Ok(true)) {
                    let free = self.cache.pool().n_free();
                    let cached = self.seq(seq)?.cached;
                    self.release_sequence(seq, false)?;
                    // Not counted: it is added again when it is admitted.
                    self.stats.prompt_tokens -= r.prompt.len() as u64;
                    self.stats.cached_tokens -= cached as u64;
                    fits?;
                    if active.is_empty() {
                        return Err(KvError::PoolExhausted { needed, free }.into());
                    }
                    break;
                }
                let start = Instant::now();
                if let Err(e) = self.prefill(seq, Logits::Last) {
                    self.release_sequence(seq, false)?;
                    return Err(e);
                }
                let mut a = Active {
                    req: next_req,
                    prompt_len: r.prompt.len(),
                    seq,
                    sampler: Sampler::new(r.sampling.clone()),
                    ids: Vec::new(),
                    worst_blocks: worst,
                    prefill_time: start.elapsed(),
                    first_token: Instant::now(),
                };
                next_req += 1;
                let next = a.sampler.sample(&self.logits, &self.seqs[&seq].tokens);
                match accept_token(&mut a, r, next, &self.logits, ctx, &self.cache, on_token)? {
                    Some(reason) => self.finish(a, reason, &mut outputs)?,
                    None => active.push(a),
                }
            }
            if active.is_empty() {
                break;
            }

            // 2. One decode step for every running request.
            steps.clear();
            steps.extend(active.iter().map(|a| (a.seq, *a.ids.last().unwrap_or(&0))));
            self.decode(&steps)?;
            let vocab = self.model.vocab_size();
            let mut finished = Vec::new();
            for (i, a) in active.iter_mut().enumerate() {
                let row = &self.logits[i * vocab..(i + 1) * vocab];
                let next = a.sampler.sample(row, &self.seqs[&a.seq].tokens);
                let r = &requests[a.req];
                if let Some(reason) = accept_token(a, r, next, row, ctx, &self.cache, on_token)? {
                    finished.push((i, reason));
                }
            }
            for &(i, reason) in finished.iter().rev() {
                let a = active.remove(i);
                self.finish(a, reason, &mut outputs)?;
            }
        }
        Ok(outputs
            .into_iter()
            .map(|o| o.expect("every request ran"))
            .collect())
    }

    fn finish(
        &mut self,
        a: Active,
        reason: StopReason,
        outputs: &mut [Option<BatchOutput>],
    ) -> Result<(), ModelError> {
        let out = BatchOutput {
            prompt_tokens: a.prompt_len,
            cached_tokens: self.seq(a.seq)?.cached,
            ids: a.ids,
            stop_reason: reason,
            prefill_time: a.prefill_time,
            decode_time: a.first_token.elapsed(),
        };
        outputs[a.req] = Some(out);
        self.remove_sequence(a.seq)
    }

    /// Blocks `seq` holds now.
    fn held_blocks(&self, seq: SeqId) -> usize {
        self.cache.table(seq).map_or(0, |t| t.blocks().len())
    }

    /// New blocks `seq` needs to append `n` positions.
    fn blocks_needed(&self, seq: SeqId, n: usize) -> Result<usize, ModelError> {
        let t = self.cache.table(seq)?;
        let bs = self.options.block_size;
        Ok((t.len() + n).div_ceil(bs).saturating_sub(t.blocks().len()))
    }

    /// Evicts cached prefixes until `n` blocks are free; `PoolExhausted` if it cannot.
    fn ensure_blocks(&mut self, n: usize) -> Result<(), ModelError> {
        if self.make_room(n)? {
            Ok(())
        } else {
            Err(KvError::PoolExhausted {
                needed: n,
                free: self.cache.pool().n_free(),
            }
            .into())
        }
    }

    /// Evicts least recently used unlocked cached prefixes until `n` blocks are free; returns
    /// whether that succeeded.
    fn make_room(&mut self, n: usize) -> Result<bool, ModelError> {
        while self.cache.pool().n_free() < n {
            let short = n - self.cache.pool().n_free();
            if self.evict_cached(short)? == 0 {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Evicts at least `n_blocks` cached blocks no sequence uses, least recently used first
    /// (fewer when no more can go), releasing the index's references; returns the tokens
    /// evicted. A released block is free unless a running sequence still holds it.
    fn evict_cached(&mut self, n_blocks: usize) -> Result<usize, ModelError> {
        let bs = self.options.block_size;
        let evicted = match &mut self.prefixes {
            Prefixes::Radix(tree) => {
                let handles = tree.evict(n_blocks.saturating_mul(bs));
                // One pool reference per whole page.
                for &b in handles.iter().step_by(bs) {
                    self.cache.pool_mut().release(b)?;
                }
                handles.len()
            }
            Prefixes::Hash(cache) => cache.evict_blocks(self.cache.pool_mut(), n_blocks)? * bs,
        };
        self.stats.evicted_tokens += evicted as u64;
        Ok(evicted)
    }

    /// Inserts the whole blocks of `seq`'s fed tokens into the prefix index (retaining each
    /// newly cached block once); with the tree, moves the sequence's lock to the end of that
    /// path.
    fn cache_sequence(&mut self, seq: SeqId) -> Result<(), ModelError> {
        let bs = self.options.block_size;
        let t = self.cache.table(seq)?;
        let n = t.len() / bs * bs;
        if n == 0 {
            return Ok(());
        }
        let blocks = t.blocks()[..n / bs].to_vec();
        let s = self.seqs.get(&seq).ok_or(KvError::UnknownSequence(seq.0))?;
        let tokens = &s.tokens[..n];
        let tree = match &mut self.prefixes {
            Prefixes::Radix(tree) => tree,
            Prefixes::Hash(cache) => {
                // Retains what it newly caches itself; its budget is unbounded (see `new`), so
                // this evicts nothing.
                cache.insert(self.cache.pool_mut(), tokens, &blocks)?;
                return Ok(());
            }
        };
        let handles: Vec<BlockId> = (0..n).map(|i| blocks[i / bs]).collect();
        let already = tree.insert(tokens, &handles)?;
        for &b in &blocks[already / bs..] {
            self.cache.pool_mut().retain(b)?;
        }
        let node = tree.match_prefix(tokens).node;
        tree.lock(node)?;
        let old = self.seq_mut(seq)?.node.replace(node);
        if let (Some(old), Prefixes::Radix(tree)) = (old, &mut self.prefixes) {
            tree.unlock(old)?;
        }
        Ok(())
    }

    fn release_sequence(&mut self, seq: SeqId, cache_it: bool) -> Result<(), ModelError> {
        if cache_it {
            self.cache_sequence(seq)?;
        }
        let s = self
            .seqs
            .remove(&seq)
            .ok_or(KvError::UnknownSequence(seq.0))?;
        if let (Some(node), Prefixes::Radix(tree)) = (s.node, &mut self.prefixes) {
            tree.unlock(node)?;
        }
        self.cache.remove_sequence(seq)?;
        Ok(())
    }

    fn seq(&self, seq: SeqId) -> Result<&SeqState, ModelError> {
        Ok(self.seqs.get(&seq).ok_or(KvError::UnknownSequence(seq.0))?)
    }

    fn seq_mut(&mut self, seq: SeqId) -> Result<&mut SeqState, ModelError> {
        Ok(self
            .seqs
            .get_mut(&seq)
            .ok_or(KvError::UnknownSequence(seq.0))?)
    }
}

/// A running request of [`BatchEngine::run`].
#[derive(Debug)]
struct Active {
    req: usize,
    prompt_len: usize,
    seq: SeqId,
    sampler: Sampler,
    /// Generated so far; the last one is the next to feed.
    ids: Vec<u32>,
    /// Blocks it may need in all (prompt + max_new_tokens).
    worst_blocks: usize,
    prefill_time: Duration,
    first_token: Instant,
}

/// Records a sampled token of `a` and returns why the request ends, if it does:
/// [`crate::generate`]'s stop rules in its order (callback, stop id, length, full context).
fn accept_token(
    a: &mut Active,
    r: &BatchRequest,
    next: u32,
    logits: &[f32],
    ctx: usize,
    cache: &PagedKvCache,
    on_token: &mut dyn FnMut(SampledToken<'_>) -> ControlFlow<()>,
) -> Result<Option<StopReason>, ModelError> {
    a.ids.push(next);
    let step = SampledToken {
        request: a.req,
        id: next,
        logits,
    };
    Ok(if on_token(step).is_break() {
        Some(StopReason::Cancelled)
    } else if !r.ignore_eos && r.stop_ids.contains(&next) {
        Some(StopReason::Stop)
    } else if a.ids.len() >= r.max_new_tokens {
        Some(StopReason::Length)
    } else if cache.len(a.seq)? >= ctx {
        Some(StopReason::ContextFull)
    } else {
        None
    })
}

/// Runs `requests` through a new [`BatchEngine`] (fresh pool and prefix cache); see
/// [`BatchEngine::run`]. Keep an engine instead to share its prefix cache across calls.
pub fn run_batch(
    model: &Model,
    requests: &[BatchRequest],
    options: &EngineOptions,
    on_token: impl FnMut(SampledToken<'_>) -> ControlFlow<()>,
) -> Result<Vec<BatchOutput>, ModelError> {
    BatchEngine::new(model, options)?.run(requests, on_token)
}
