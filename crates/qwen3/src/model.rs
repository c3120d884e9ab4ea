//! Loading a checkpoint and the forward pass, written as the numbered steps of transformers'
//! `Qwen3ForCausalLM.forward`.

use crate::weights::{Layer, Weights};
use crate::{ModelError, Qwen3Config, Rope, Session};
use nano_infer_kvcache::{KvCache, KvDtype, KvRows};
use nano_infer_quant::QuantScheme;
use nano_infer_simd::{Isa, Kernels};
use nano_infer_tensor::WeightStore;
use rayon::prelude::*;
use std::path::{Path, PathBuf};

/// How to load a model.
#[derive(Clone, Debug)]
pub struct LoadOptions {
    /// Cap on the instruction set the kernels use (`None`: the best the CPU has).
    pub isa: Option<Isa>,
    /// Element type of the KV cache.
    pub kv_dtype: KvDtype,
    /// Context length of a session (`None`: the model's `max_position_embeddings`).
    pub ctx_size: Option<usize>,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            isa: None,
            kv_dtype: KvDtype::F32,
            ctx_size: None,
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
    // Keeps the memory maps alive for the weights' tensors (they also hold them, but the store
    // is what knows the files).
    _store: WeightStore,
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
        let dir = dir.as_ref();
        let config = Qwen3Config::from_dir(dir)?;
        let store = WeightStore::open_dir(dir)?;
        let scheme = QuantScheme::from_config(config.quantization_config.as_ref())?;
        let kernels = match options.isa {
            Some(isa) => Kernels::for_isa(isa).ok_or(ModelError::IsaUnavailable(isa))?,
            None => Kernels::best(),
        };
        let weights = Weights::load(&store, &config, &scheme)?;
        let ctx_size = options
            .ctx_size
            .unwrap_or(config.max_position_embeddings)
            .min(config.max_position_embeddings);
        Ok(Self {
            dir: dir.to_owned(),
            rope: Rope::new(&config),
            file_bytes: store.total_bytes(),
            config,
            weights,
            kernels,
            kv_dtype: options.kv_dtype,
            ctx_size,
            _store: store,
        })
    }

    pub fn config(&self) -> &Qwen3Config {
        &self.config
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

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

    /// A new, empty session.
    pub fn session(&self) -> Session<'_> {
        Session::new(self)
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
        let c = &self.config;
        let n = ids.len();
        if n == 0 {
            return Err(ModelError::EmptyInput);
        }
        if let Some(&id) = ids.iter().find(|&&id| id as usize >= c.vocab_size) {
            return Err(ModelError::TokenOutOfRange {
                id,
                vocab_size: c.vocab_size,
            });
        }
        let pos0 = cache.len();
        if pos0 + n > self.ctx_size {
            return Err(ModelError::ContextFull {
                needed: pos0 + n,
                max: self.ctx_size,
            });
        }
        let (hidden, k) = (c.hidden_size, self.kernels);
        state.resize(c, n);
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
            self.attention_block(li, layer, pos0, cache, s)?;
            self.mlp_block(layer, s);
            if let Some(trace) = &mut s.trace {
                trace.push(s.x.clone());
            }
        }
        cache.advance(n);

        // 3. Final norm and lm_head, only where logits are wanted.
        let rows = match mode {
            Logits::Last => n - 1..n,
            Logits::All => 0..n,
        };
        let xs = &s.x[rows.start * hidden..rows.end * hidden];
        let normed = &mut s.xb[..xs.len()];
        for (x, o) in xs.chunks_exact(hidden).zip(normed.chunks_exact_mut(hidden)) {
            k.rms_norm(x, &self.weights.final_norm, c.rms_norm_eps as f32, o);
        }
        if let Some(trace) = &mut s.trace {
            trace.push(normed.to_vec());
        }
        logits.resize(rows.len() * c.vocab_size, 0.0);
        self.weights
            .lm_head
            .forward(k, normed, logits, &mut s.matmul);
        Ok(())
    }

    /// Pre-norm self-attention with the residual: x += o_proj(attn(norm(x))).
    fn attention_block(
        &self,
        li: usize,
        layer: &Layer,
        pos0: usize,
        cache: &mut KvCache,
        s: &mut RunState,
    ) -> Result<(), ModelError> {
        let c = &self.config;
        let (hidden, hd, k) = (c.hidden_size, c.head_dim(), self.kernels);
        let eps = c.rms_norm_eps as f32;

        // 2a. xb = input_layernorm(x)
        for (x, o) in s.x.chunks_exact(hidden).zip(s.xb.chunks_exact_mut(hidden)) {
            k.rms_norm(x, &layer.input_norm, eps, o);
        }
        // 2b. q (n, q_dim), k (n, kv_dim), v (n, kv_dim)
        layer.q_proj.forward(k, &s.xb, &mut s.q, &mut s.matmul);
        layer.k_proj.forward(k, &s.xb, &mut s.k, &mut s.matmul);
        layer.v_proj.forward(k, &s.xb, &mut s.v, &mut s.matmul);
        add_bias(&mut s.q, layer.q_bias.as_deref());
        add_bias(&mut s.k, layer.k_bias.as_deref());
        add_bias(&mut s.v, layer.v_bias.as_deref());

        // 2c. Per-head RMSNorm of q and k (Qwen3's q_norm/k_norm), then RoPE at each position.
        for (t, (qt, kt)) in
            s.q.chunks_exact_mut(c.q_dim())
                .zip(s.k.chunks_exact_mut(c.kv_dim()))
                .enumerate()
        {
            for head in qt.chunks_exact_mut(hd) {
                s.head_tmp.copy_from_slice(head);
                k.rms_norm(&s.head_tmp, &layer.q_norm, eps, head);
            }
            for head in kt.chunks_exact_mut(hd) {
                s.head_tmp.copy_from_slice(head);
                k.rms_norm(&s.head_tmp, &layer.k_norm, eps, head);
            }
            self.rope.apply(qt, hd, pos0 + t);
            self.rope.apply(kt, hd, pos0 + t);
        }

        // 2d. Append this layer's keys and values, then causal GQA attention over the cache.
        cache.append(li, &s.k, &s.v)?;
        self.attend(cache, li, pos0, &s.q, &mut s.att);

        // 2e. x += o_proj(att)
        layer.o_proj.forward(k, &s.att, &mut s.proj, &mut s.matmul);
        add_bias(&mut s.proj, layer.o_bias.as_deref());
        s.x.iter_mut().zip(&s.proj).for_each(|(x, p)| *x += p);
        Ok(())
    }

    /// Scaled dot-product attention for every (token, query head), in parallel. Token `t` sees
    /// positions `0..=pos0 + t` (the causal mask); query head `h` reads KV head
    /// `h / (n_heads / n_kv_heads)`.
    fn attend(&self, cache: &KvCache, li: usize, pos0: usize, q: &[f32], out: &mut [f32]) {
        let c = &self.config;
        let (n_heads, hd, k) = (c.num_attention_heads, c.head_dim(), self.kernels);
        let group = n_heads / c.n_kv_heads();
        let scale = 1.0 / (hd as f32).sqrt();
        out.par_chunks_mut(hd).enumerate().for_each_init(
            || (Vec::new(), vec![0.0f32; hd]),
            |(scores, row), (idx, o)| {
                let (t, h) = (idx / n_heads, idx % n_heads);
                let n_ctx = pos0 + t + 1;
                let qh = &q[idx * hd..(idx + 1) * hd];
                let (keys, values) = (cache.keys(li, h / group), cache.values(li, h / group));
                scores.resize(n_ctx, 0.0);
                match keys {
                    KvRows::F32(kr) => k.gemm_f32(&kr[..n_ctx * hd], qh, hd, scores),
                    KvRows::Bf16(kr) => k.gemm_bf16(&kr[..n_ctx * hd], qh, hd, scores),
                    KvRows::F16(kr) => k.gemm_f16(&kr[..n_ctx * hd], qh, hd, scores),
                }
                scores.iter_mut().for_each(|v| *v *= scale);
                k.softmax(scores);
                o.fill(0.0);
                for (p, &a) in scores.iter().enumerate() {
                    match values {
                        KvRows::F32(vr) => k.axpy(a, &vr[p * hd..(p + 1) * hd], o),
                        _ => {
                            values.row_to_f32(p, hd, row);
                            k.axpy(a, row, o);
                        }
                    }
                }
            },
        );
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
        layer
            .gate_proj
            .forward(k, &s.xb, &mut s.gate, &mut s.matmul);
        layer.up_proj.forward(k, &s.xb, &mut s.up, &mut s.matmul);
        k.silu_mul(&mut s.gate, &s.up);
        layer
            .down_proj
            .forward(k, &s.gate, &mut s.proj, &mut s.matmul);
        s.x.iter_mut().zip(&s.proj).for_each(|(x, p)| *x += p);
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
    /// `(n, n_heads * head_dim)`
    q: Vec<f32>,
    /// `(n, n_kv_heads * head_dim)`
    k: Vec<f32>,
    /// `(n, n_kv_heads * head_dim)`
    v: Vec<f32>,
    /// `(n, n_heads * head_dim)`: attention output before o_proj.
    att: Vec<f32>,
    /// `(n, hidden)`: o_proj / down_proj output.
    proj: Vec<f32>,
    /// `(n, intermediate)`
    gate: Vec<f32>,
    /// `(n, intermediate)`
    up: Vec<f32>,
    /// `(head_dim)`: one head's copy for the in-place q/k norm.
    head_tmp: Vec<f32>,
    /// The matmul kernels' `(rows, n)` output before its transpose.
    matmul: Vec<f32>,
    /// When set, the residual stream after the embedding and after every layer, then the final
    /// norm's output, each `(n, hidden)` (see `Session::hidden_states`).
    pub(crate) trace: Option<Vec<Vec<f32>>>,
}

impl RunState {
    fn resize(&mut self, c: &Qwen3Config, n: usize) {
        self.x.resize(n * c.hidden_size, 0.0);
        self.xb.resize(n * c.hidden_size, 0.0);
        self.q.resize(n * c.q_dim(), 0.0);
        self.k.resize(n * c.kv_dim(), 0.0);
        self.v.resize(n * c.kv_dim(), 0.0);
        self.att.resize(n * c.q_dim(), 0.0);
        self.proj.resize(n * c.hidden_size, 0.0);
        self.gate.resize(n * c.intermediate_size, 0.0);
        self.up.resize(n * c.intermediate_size, 0.0);
        self.head_tmp.resize(c.head_dim(), 0.0);
    }
}
