//! Loading a checkpoint and the forward pass, written as the numbered steps of transformers'
//! `Qwen3ForCausalLM.forward`.

use crate::attention::{attend, AttnShape, KvStore};
use crate::weights::{AwqCacheStatus, Layer, LmHead, Weights};
use crate::{ModelError, Qwen3Config, Rope, Session};
use nano_infer_kvcache::{KvCache, KvDtype};
use nano_infer_offload::{available_memory, format_size, PlanInputs, ResidencyPlan, Streamer};
use nano_infer_quant::{AwqActivations, Linear, LinearSource, QuantScheme};
use nano_infer_simd::{Isa, Kernels};
use nano_infer_tensor::WeightStore;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// How to load a model.
#[derive(Clone, Debug)]
pub struct LoadOptions {
    /// Cap on the instruction set the kernels use (`None`: the best the CPU has).
    pub isa: Option<Isa>,
    /// Element type of the KV cache.
    pub kv_dtype: KvDtype,
    /// Context length of a session (`None`: the model's `max_position_embeddings`).
    pub ctx_size: Option<usize>,
    /// Activations of AWQ layers: f32 (default: exact up to summation order) or int8 (integer
    /// dot products, 3–6× faster kernels; moves the fixtures' logits by up to ~2.3, enough to
    /// flip greedy steps on their random weights, so it is opt-in). See `AwqActivations`.
    pub awq_activations: AwqActivations,
    /// The lm_head's format: the checkpoint's (default) or an int8 copy (`--lm-head q8`).
    pub lm_head: LmHead,
    /// Memory budget in bytes for weights + KV cache + activations (`--max-memory`). Layers
    /// that do not fit are streamed from the files with the next one prefetched (AWQ layers
    /// from a spill file of their repacked weights, see `nano_infer_tensor::SpillFile`). `None`: no
    /// budget, unless the model would not fit in the memory the system has available, in
    /// which case one is chosen (see [`Model::offload_report`]).
    pub max_memory: Option<u64>,
    /// Scan every weight for NaN and infinity at load ([`Model::check_tensors`]; llama.cpp's
    /// `--check-tensors`). Scales, norms and biases are checked at every load regardless.
    pub check_tensors: bool,
    /// Where AWQ layers are cached in their repacked layout between loads, so that a second
    /// load maps them instead of repacking (see [`AwqCacheDir`]). Off by default here: a
    /// library should not write gigabytes into the user's home unasked (nor its tests leave
    /// files there); the CLI and the server turn it on ([`AwqCacheDir::User`]).
    pub awq_cache: AwqCacheDir,
}

/// Where the AWQ repack cache lives (the library's default is [`AwqCacheDir::Off`], the CLI's
/// [`AwqCacheDir::User`]). One file per model directory and activation layout
/// (`nano_infer_quant::cache_file_name`), validated against the checkpoint files' paths, sizes,
/// modification times and a fingerprint of their AWQ tensors, and against the layout version;
/// any mismatch or damage rebuilds it (`nano_infer_quant::AwqCacheKey`).
///
/// The default is the user's cache directory, not the model directory: model directories are
/// often read-only or shared (a system-wide install, a container mount, the Hugging Face hub
/// cache whose snapshots are managed by its own tools), and one place holds all of
/// nano-infer's disk use (spill files live there too), so `rm -r ~/.cache/nano-infer` frees it.
/// The cost is that deleting a model leaves its cache behind; a file per model directory and
/// layout (rewritten in place when stale) bounds that to one file per model used.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AwqCacheDir {
    /// `$XDG_CACHE_HOME/nano-infer/awq`, else `$HOME/.cache/nano-infer/awq`; no cache when
    /// neither variable is set.
    User,
    /// This directory (created if missing).
    Dir(PathBuf),
    /// No cache: AWQ layers are repacked into memory at every load.
    Off,
}

impl AwqCacheDir {
    /// The directory this choice resolves to, if any.
    pub fn resolve(&self) -> Option<PathBuf> {
        match self {
            AwqCacheDir::Off => None,
            AwqCacheDir::Dir(dir) => Some(dir.clone()),
            AwqCacheDir::User => {
                let var = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
                let root = var("XDG_CACHE_HOME")
                    .map(PathBuf::from)
                    .or_else(|| var("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
                Some(root.join("nano-infer").join("awq"))
            }
        }
    }
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            isa: None,
            kv_dtype: KvDtype::F32,
            ctx_size: None,
            awq_activations: AwqActivations::F32,
            lm_head: LmHead::Exact,
            max_memory: None,
            check_tensors: false,
            awq_cache: AwqCacheDir::Off,
        }
    }
}

/// A loaded Qwen3 model. Immutable and `Sync`: sessions borrow it, several at a time.
#[derive(Debug)]
pub struct Model {
    dir: PathBuf,
    config: Qwen3Config,
    weights: Weights,
    rope: Rope,
    kernels: Kernels,
    kv_dtype: KvDtype,
    ctx_size: usize,
    file_bytes: usize,
    /// Streams the layers that do not fit the memory budget; `None` when everything is resident.
    streamer: Option<Streamer>,
    /// What the memory budget decided, when there is one.
    plan: Option<ResidencyPlan>,
    /// What the memory budget decided, for `--verbose` (and why, when it was chosen for the user).
    offload_report: Option<String>,
    /// What became of the AWQ repack cache, when the model has AWQ layers and a cache was asked.
    awq_cache_status: Option<AwqCacheStatus>,
    // Keeps the memory maps alive for the weights' tensors (they also hold them, but the store
    // is what knows the files), and lists them for `check_tensors`.
    _store: WeightStore,
}

/// How far [`Model::load_with_progress`] is: decoder layers ready out of all of them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LoadProgress {
    /// Decoder layers ready.
    pub layers_done: usize,
    /// Decoder layers in the model.
    pub layers_total: usize,
}

/// Which positions of a forward pass need logits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Logits {
    /// Only the last position's: what generation needs.
    Last,
    /// Every position's `(n_tok, vocab)`: what perplexity needs.
    All,
}

impl Model {
    /// Loads a Hugging Face model directory: `config.json` plus `model.safetensors` or shards.
    pub fn load(dir: impl AsRef<Path>, options: &LoadOptions) -> Result<Self, ModelError> {
        Self::load_with_progress(dir, options, &mut |_| {})
    }

    /// [`Model::load`], reporting each decoder layer as it is made ready: mapping is instant,
    /// but an AWQ checkpoint's layers are repacked one by one, which takes seconds.
    pub fn load_with_progress(
        dir: impl AsRef<Path>,
        options: &LoadOptions,
        on_progress: &mut dyn FnMut(LoadProgress),
    ) -> Result<Self, ModelError> {
        let dir = dir.as_ref();
        let config = Qwen3Config::from_dir(dir)?;
        let store = WeightStore::open_dir(dir)?;
        let scheme = QuantScheme::from_config(config.quantization_config.as_ref())?;
        let kernels = match options.isa {
            Some(isa) => Kernels::for_isa(isa).ok_or(ModelError::IsaUnavailable(isa))?,
            None => Kernels::best(),
        };
        let sources = Weights::open(&store, &config, &scheme, options)?;
        let ctx_size = options
            .ctx_size
            .unwrap_or(config.max_position_embeddings)
            .min(config.max_position_embeddings);
        // The budget is planned from the sizes before anything is repacked, so a streamed AWQ
        // layer's copy goes straight to the spill file instead of all copies sitting in memory.
        let planned = plan_residency(&config, &sources, options, ctx_size)?;
        let streams = |i: usize| {
            planned
                .as_ref()
                .is_some_and(|(plan, _)| plan.streams() && !plan.is_resident(i))
        };
        let layers_total = config.num_hidden_layers;
        let cache_path = options.awq_cache.resolve().map(|d| {
            d.join(nano_infer_quant::cache_file_name(
                dir,
                options.awq_activations,
            ))
        });
        let (weights, spilled, awq_cache_status) =
            sources.finish(&store, cache_path.as_deref(), streams, &mut |layers_done| {
                on_progress(LoadProgress {
                    layers_done,
                    layers_total,
                })
            })?;
        let (plan, offload_report) = match planned {
            Some((plan, mut report)) => {
                if let Some((bytes, path)) = spilled {
                    report += &format!(
                        "; the streamed layers' repacked AWQ weights ({}) are read from an unlinked spill file created as {}",
                        format_size(bytes),
                        path.display()
                    );
                }
                if let (
                    true,
                    Some(AwqCacheStatus::Loaded(path) | AwqCacheStatus::Written { path, .. }),
                ) = (plan.streams(), &awq_cache_status)
                {
                    report += &format!(
                        "; the streamed layers' repacked AWQ weights are read from the AWQ repack cache {}",
                        path.display()
                    );
                }
                (Some(plan), Some(report))
            }
            None => (None, None),
        };
        let streamer = plan
            .as_ref()
            .filter(|p| p.streams())
            .map(|p| Streamer::new(weights.layer_tensors(), p.clone()));
        let model = Self {
            dir: dir.to_owned(),
            rope: Rope::new(&config),
            file_bytes: store.total_bytes(),
            streamer,
            plan,
            offload_report,
            awq_cache_status,
            config,
            weights,
            kernels,
            kv_dtype: options.kv_dtype,
            ctx_size,
            _store: store,
        };
        if options.check_tensors {
            model.check_tensors()?;
        }
        Ok(model)
    }

    /// Scans every tensor of the checkpoint for NaN and infinity (llama.cpp's
    /// `--check-tensors`) and names the first one found. Quantization scales, norms and biases
    /// are always checked at load; the weight matrices are not, because this reads every byte
    /// of the files (seconds for a 4B model), so it is the caller's choice.
    pub fn check_tensors(&self) -> Result<(), ModelError> {
        let mut names: Vec<&str> = self._store.names().collect();
        // Name order, so the same file always reports the same tensor first.
        names.sort_unstable();
        for name in names {
            self._store.get(name)?.check_finite()?;
        }
        Ok(())
    }

    /// What became of the AWQ repack cache at load (mapped, written, or unavailable with the
    /// reason); `None` when the model has no AWQ layers or the cache is off.
    pub fn awq_cache_status(&self) -> Option<&AwqCacheStatus> {
        self.awq_cache_status.as_ref()
    }

    /// What the memory budget decided (resident and streamed layers, the accounting), when a
    /// budget was given or had to be chosen because the model does not fit in memory.
    pub fn offload_report(&self) -> Option<&str> {
        self.offload_report.as_deref()
    }

    /// Returns once no streamed layer is being paged in (a no-op when nothing streams). Between
    /// two forward passes the prefetch of the next pass's first streamed layer may still be
    /// running; after this the process holds only what the plan says, which is when to
    /// measure its memory. Generating never needs it.
    pub fn wait_for_prefetch(&self) {
        if let Some(streamer) = &self.streamer {
            streamer.wait_until_idle();
        }
    }

    /// The memory budget's plan (which layers stream, and the accounting behind it), when a
    /// budget was given or chosen.
    pub fn residency_plan(&self) -> Option<&ResidencyPlan> {
        self.plan.as_ref()
    }

    /// The parsed and validated `config.json`.
    pub fn config(&self) -> &Qwen3Config {
        &self.config
    }

    /// The model directory it was loaded from.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Rows of the logits.
    pub fn vocab_size(&self) -> usize {
        self.config.vocab_size
    }

    /// Positions a session can hold.
    pub fn ctx_size(&self) -> usize {
        self.ctx_size
    }

    /// The kernel table in use.
    pub fn kernels(&self) -> Kernels {
        self.kernels
    }

    /// Size of the checkpoint's weight files.
    pub fn file_bytes(&self) -> usize {
        self.file_bytes
    }

    /// Bytes of weights read per decoded token (the bandwidth bound's numerator).
    pub fn bytes_per_token(&self) -> usize {
        self.weights.bytes_per_token()
    }

    /// Element type of the KV caches of this model's sessions and engines.
    pub fn kv_dtype(&self) -> KvDtype {
        self.kv_dtype
    }

    /// A new, empty session borrowing the model.
    pub fn session(&self) -> Session<'_> {
        Session::new(self)
    }

    /// A new, empty session that shares the model through its `Arc`: it borrows nothing, so it
    /// can live beside the model (in a struct, another thread, a table of conversations).
    pub fn shared_session(self: &Arc<Self>) -> Session<'static> {
        Session::shared(Arc::clone(self))
    }

    /// An empty KV cache shaped for this model.
    pub(crate) fn new_cache(&self) -> KvCache {
        let c = &self.config;
        KvCache::new(
            c.num_hidden_layers,
            c.n_kv_heads(),
            c.head_dim(),
            self.ctx_size,
            self.kv_dtype,
        )
    }

    /// Runs `ids` at positions `cache.len()..` and appends their keys and values to `cache`.
    /// Writes logits into `logits`: `(vocab)` for [`Logits::Last`], `(n_tok, vocab)` for `All`.
    pub(crate) fn forward(
        &self,
        ids: &[u32],
        cache: &mut KvCache,
        state: &mut RunState,
        mode: Logits,
        logits: &mut Vec<f32>,
    ) -> Result<(), ModelError> {
        self.forward_segments(ids, &[ids.len()], mode, cache, state, logits)
    }

    /// One forward pass over several sequences at once: `ids` is the concatenation of
    /// `seg_lens.len()` segments, segment `i` being the next `seg_lens[i]` tokens of sequence
    /// `i` of `store`, at its positions `store.len(i)..`. Every linear layer runs once over all
    /// rows (one read of its weights for every sequence); attention reads each segment's own
    /// KV. Logits: the last row of each segment for [`Logits::Last`] (`(n_segments, vocab)`),
    /// every row for `All` (`(n_rows, vocab)`). On error every segment is rolled back.
    pub(crate) fn forward_segments<S: KvStore>(
        &self,
        ids: &[u32],
        seg_lens: &[usize],
        mode: Logits,
        store: &mut S,
        state: &mut RunState,
        logits: &mut Vec<f32>,
    ) -> Result<(), ModelError> {
        let c = &self.config;
        let n = ids.len();
        if n == 0 || seg_lens.contains(&0) {
            return Err(ModelError::EmptyInput);
        }
        assert_eq!(
            seg_lens.iter().sum::<usize>(),
            n,
            "segment lengths must cover the rows"
        );
        if let Some(&id) = ids.iter().find(|&&id| id as usize >= c.vocab_size) {
            return Err(ModelError::TokenOutOfRange {
                id,
                vocab_size: c.vocab_size,
            });
        }
        for (seg, &len) in seg_lens.iter().enumerate() {
            let pos0 = store.len(seg);
            if pos0 + len > self.ctx_size {
                return Err(ModelError::ContextFull {
                    needed: pos0 + len,
                    max: self.ctx_size,
                });
            }
        }
        state.resize(c, n);
        state.row_seg.clear();
        state.row_pos.clear();
        state.logit_rows.clear();
        state.seg_pos0.clear();
        for (seg, &len) in seg_lens.iter().enumerate() {
            let pos0 = store.len(seg);
            state.seg_pos0.push(pos0);
            let first = state.row_seg.len();
            state.row_seg.extend(std::iter::repeat_n(seg, len));
            state.row_pos.extend(pos0..pos0 + len);
            match mode {
                Logits::Last => state.logit_rows.push(first + len - 1),
                Logits::All => state.logit_rows.extend(first..first + len),
            }
        }
        let result = self
            .forward_rows(ids, seg_lens, store, state, logits)
            .and_then(|()| check_logits(c.vocab_size, state, logits));
        if result.is_err() {
            for (seg, &len) in state.seg_pos0.iter().enumerate() {
                store.rollback(seg, len);
            }
        }
        result
    }

    /// The body of [`Model::forward_segments`] once inputs are checked and `state`'s row maps
    /// are filled.
    fn forward_rows<S: KvStore>(
        &self,
        ids: &[u32],
        seg_lens: &[usize],
        store: &mut S,
        state: &mut RunState,
        logits: &mut Vec<f32>,
    ) -> Result<(), ModelError> {
        let c = &self.config;
        let (hidden, k) = (c.hidden_size, self.kernels);
        let s = state;

        // 1. Embedding lookup: x (n, hidden).
        for (row, &id) in s.x.chunks_exact_mut(hidden).zip(ids) {
            self.weights.embed.row_to_f32(id as usize, row);
        }
        if let Some(trace) = &mut s.trace {
            trace.push(s.x.clone());
        }

        // 2. Decoder blocks.
        for (li, layer) in self.weights.layers.iter().enumerate() {
            if let Some(streamer) = &self.streamer {
                streamer.before_layer(li);
            }
            self.attention_block(li, layer, seg_lens, store, s)?;
            self.mlp_block(layer, s);
            if let Some(streamer) = &self.streamer {
                streamer.after_layer(li);
            }
            if let Some(trace) = &mut s.trace {
                trace.push(s.x.clone());
            }
        }
        for (seg, &len) in seg_lens.iter().enumerate() {
            store.commit(seg, len)?;
        }

        // 3. Final norm and lm_head, only on the rows that want logits.
        let n_out = s.logit_rows.len();
        let normed = &mut s.xb[..n_out * hidden];
        for (&r, o) in s.logit_rows.iter().zip(normed.chunks_exact_mut(hidden)) {
            let x = &s.x[r * hidden..(r + 1) * hidden];
            k.rms_norm(x, &self.weights.final_norm, c.rms_norm_eps as f32, o);
        }
        if let Some(trace) = &mut s.trace {
            trace.push(normed.to_vec());
        }
        logits.resize(n_out * c.vocab_size, 0.0);
        self.weights
            .lm_head
            .forward(k, normed, logits, &mut s.matmul);
        Ok(())
    }

    /// Pre-norm self-attention with the residual: x += o_proj(attn(norm(x))).
    fn attention_block<S: KvStore>(
        &self,
        li: usize,
        layer: &Layer,
        seg_lens: &[usize],
        store: &mut S,
        s: &mut RunState,
    ) -> Result<(), ModelError> {
        let c = &self.config;
        let (hidden, hd, k) = (c.hidden_size, c.head_dim(), self.kernels);
        let eps = c.rms_norm_eps as f32;

        // 2a. xb = input_layernorm(x)
        for (x, o) in s.x.chunks_exact(hidden).zip(s.xb.chunks_exact_mut(hidden)) {
            k.rms_norm(x, &layer.input_norm, eps, o);
        }
        // 2b. q (n, q_dim), k (n, kv_dim), v (n, kv_dim), one after another in `qkv`
        let projections = [&layer.q_proj, &layer.k_proj, &layer.v_proj];
        Linear::forward_fused(k, &projections, &s.xb, &mut s.qkv, &mut s.matmul);
        let n = s.row_pos.len();
        let (q, kv) = s.qkv.split_at_mut(n * c.q_dim());
        let (kk, v) = kv.split_at_mut(n * c.kv_dim());
        add_bias(q, layer.q_bias.as_deref());
        add_bias(kk, layer.k_bias.as_deref());
        add_bias(v, layer.v_bias.as_deref());

        // 2c. Per-head RMSNorm of q and k (Qwen3's q_norm/k_norm), then RoPE at each row's
        // position in its own sequence.
        for ((qt, kt), &pos) in q
            .chunks_exact_mut(c.q_dim())
            .zip(kk.chunks_exact_mut(c.kv_dim()))
            .zip(&s.row_pos)
        {
            for head in qt.chunks_exact_mut(hd) {
                s.head_tmp.copy_from_slice(head);
                k.rms_norm(&s.head_tmp, &layer.q_norm, eps, head);
            }
            for head in kt.chunks_exact_mut(hd) {
                s.head_tmp.copy_from_slice(head);
                k.rms_norm(&s.head_tmp, &layer.k_norm, eps, head);
            }
            self.rope.apply(qt, hd, pos);
            self.rope.apply(kt, hd, pos);
        }

        // 2d. Append each segment's keys and values to its sequence, then causal GQA attention
        // of every row over its own sequence.
        let kv_dim = c.kv_dim();
        let mut row = 0;
        for (seg, &len) in seg_lens.iter().enumerate() {
            let r = row * kv_dim..(row + len) * kv_dim;
            store.append(seg, li, &kk[r.clone()], &v[r])?;
            row += len;
        }
        let shape = AttnShape {
            n_heads: c.num_attention_heads,
            n_kv_heads: c.n_kv_heads(),
            head_dim: hd,
        };
        attend(k, shape, &*store, li, &s.row_seg, &s.row_pos, q, &mut s.att);

        // 2e. x += o_proj(att)
        layer.o_proj.forward(k, &s.att, &mut s.proj, &mut s.matmul);
        add_bias(&mut s.proj, layer.o_bias.as_deref());
        s.x.iter_mut().zip(&s.proj).for_each(|(x, p)| *x += p);
        Ok(())
    }

    /// Pre-norm SwiGLU MLP with the residual: x += down(silu(gate(h)) · up(h)), h = norm(x).
    fn mlp_block(&self, layer: &Layer, s: &mut RunState) {
        let c = &self.config;
        let k = self.kernels;
        for (x, o) in
            s.x.chunks_exact(c.hidden_size)
                .zip(s.xb.chunks_exact_mut(c.hidden_size))
        {
            k.rms_norm(x, &layer.post_attention_norm, c.rms_norm_eps as f32, o);
        }
        let projections = [&layer.gate_proj, &layer.up_proj];
        Linear::forward_fused(k, &projections, &s.xb, &mut s.gate_up, &mut s.matmul);
        let n = s.row_pos.len();
        let (gate, up) = s.gate_up.split_at_mut(n * c.intermediate_size);
        k.silu_mul(gate, up);
        layer.down_proj.forward(k, gate, &mut s.proj, &mut s.matmul);
        s.x.iter_mut().zip(&s.proj).for_each(|(x, p)| *x += p);
    }
}

/// Errors naming the first row whose logits hold a NaN or infinity. A NaN weight, scale or
/// cached KV entry spreads to every logit downstream, and sampling from NaNs gives token 0 every
/// time: an answer that looks like one. Reading `(rows, vocab)` floats once costs nothing next
/// to the lm_head matmul that wrote them.
fn check_logits(vocab: usize, s: &RunState, logits: &[f32]) -> Result<(), ModelError> {
    match logits
        .chunks_exact(vocab)
        .position(|row| row.iter().any(|v| !v.is_finite()))
    {
        None => Ok(()),
        Some(out_row) => {
            let row = s.logit_rows[out_row];
            Err(ModelError::NonFiniteLogits {
                sequence: s.row_seg[row],
                position: s.row_pos[row],
            })
        }
    }
}

fn add_bias(rows: &mut [f32], bias: Option<&[f32]>) {
    if let Some(bias) = bias {
        for row in rows.chunks_exact_mut(bias.len()) {
            row.iter_mut().zip(bias).for_each(|(v, b)| *v += b);
        }
    }
}

/// Activation buffers of one forward pass, sized for `n` tokens and reused: after the first
/// call of a given size nothing is allocated (llama2.c's `RunState`).
#[derive(Debug, Default)]
pub(crate) struct RunState {
    /// `(n, hidden)`: the residual stream.
    x: Vec<f32>,
    /// `(n, hidden)`: normed input of a block.
    xb: Vec<f32>,
    /// q `(n, n_heads * head_dim)`, then k and v `(n, n_kv_heads * head_dim)` each.
    qkv: Vec<f32>,
    /// `(n, n_heads * head_dim)`: attention output before o_proj.
    att: Vec<f32>,
    /// `(n, hidden)`: o_proj / down_proj output.
    proj: Vec<f32>,
    /// gate `(n, intermediate)`, then up `(n, intermediate)`.
    gate_up: Vec<f32>,
    /// `(head_dim)`: one head's copy for the in-place q/k norm.
    head_tmp: Vec<f32>,
    /// The matmul kernels' `(rows, n)` output before its transpose.
    matmul: Vec<f32>,
    /// `(n)`: the segment (sequence) of each row.
    row_seg: Vec<usize>,
    /// `(n)`: the position of each row in its sequence.
    row_pos: Vec<usize>,
    /// Rows whose logits are computed, in output order.
    logit_rows: Vec<usize>,
    /// Per segment: its length before this pass (what an error rolls back to).
    seg_pos0: Vec<usize>,
    /// When set, the residual stream after the embedding and after every layer, then the final
    /// norm's output of the logit rows, each `(rows, hidden)` (see `Session::hidden_states`).
    pub(crate) trace: Option<Vec<Vec<f32>>>,
}

impl RunState {
    fn resize(&mut self, c: &Qwen3Config, n: usize) {
        self.x.resize(n * c.hidden_size, 0.0);
        self.xb.resize(n * c.hidden_size, 0.0);
        self.qkv.resize(n * (c.q_dim() + 2 * c.kv_dim()), 0.0);
        self.att.resize(n * c.q_dim(), 0.0);
        self.proj.resize(n * c.hidden_size, 0.0);
        self.gate_up.resize(n * 2 * c.intermediate_size, 0.0);
        self.head_tmp.resize(c.head_dim(), 0.0);
    }
}

/// Tokens of KV cache reserved when a budget is chosen automatically: the cache grows on demand,
/// so reserving the model's whole 40k context would refuse models that run fine.
const AUTO_KV_TOKENS: usize = 4096;

/// Decides which layers stay resident under `options.max_memory`, or under the memory the system
/// has available when the model would not fit in it; `None` when there is no budget. Planned
/// from the sizes the weights will have once finished (AWQ repacked), before any repack runs.
fn plan_residency(
    config: &Qwen3Config,
    weights: &Weights<LinearSource>,
    options: &LoadOptions,
    ctx_size: usize,
) -> Result<Option<(ResidencyPlan, String)>, ModelError> {
    // Saturating: the counts are validated against the tensors, but max_position_embeddings
    // (and so ctx_size) is bounded by nothing in the checkpoint.
    let kv_per_token =
        config.num_hidden_layers * config.kv_dim() * 2 * options.kv_dtype.bytes_per_element();
    let layers = weights.layer_bytes();
    let fixed = weights.fixed_bytes() as u64;
    let activations = activation_bytes(config) as u64;
    let (budget, kv_cache, why) = match options.max_memory {
        Some(budget) => (budget, ctx_size.saturating_mul(kv_per_token) as u64, None),
        None => {
            let kv = (ctx_size.min(AUTO_KV_TOKENS) * kv_per_token) as u64;
            let needed = fixed + layers.iter().sum::<u64>() + kv + activations;
            match available_memory() {
                Some(avail) if needed > avail => {
                    // Leave a tenth for the rest of the system.
                    let budget = avail / 10 * 9;
                    let why = format!(
                        "the model needs {} but only {} is available: streaming layers from disk under a {} budget (set --max-memory to choose)",
                        format_size(needed),
                        format_size(avail),
                        format_size(budget)
                    );
                    (budget, kv, Some(why))
                }
                _ => return Ok(None),
            }
        }
    };
    let plan = ResidencyPlan::new(PlanInputs {
        budget,
        fixed_weights: fixed,
        layers,
        kv_cache,
        activations,
    })?;
    let report = match why {
        Some(why) => format!("{why}; {}", plan.report()),
        None => plan.report(),
    };
    Ok(Some((plan, report)))
}

/// Activation memory of a forward pass over a 512-token prompt chunk: the `RunState` buffers,
/// the matmul scratch and the logits of one position.
fn activation_bytes(c: &Qwen3Config) -> usize {
    let n = 512;
    let per_token = 3 * c.hidden_size + 2 * c.q_dim() + 2 * c.kv_dim() + 2 * c.intermediate_size;
    let scratch = c.intermediate_size.max(c.q_dim()) * n;
    4 * (n * per_token + scratch + c.vocab_size)
}
