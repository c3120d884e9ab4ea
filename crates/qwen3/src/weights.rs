//! The weights of a Qwen3 checkpoint, bound to their tensors in the memory map.
//!
//! Linear weights stay in the format the checkpoint stores (see `nano_infer_quant::Linear`); only
//! the small vectors (norms, biases) are copied to f32 at load.

use crate::{LoadOptions, ModelError, Qwen3Config};
use nano_infer_quant::{
    AwqCache, AwqCacheKey, DenseWeight, Linear, LinearOptions, LinearSource, QuantScheme,
};
use nano_infer_tensor::{Dtype, SpillFile, WeightStore};
use std::path::{Path, PathBuf};

/// What became of the AWQ repack cache at a load ([`crate::Model::awq_cache_status`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AwqCacheStatus {
    /// The repacked layers were mapped from this valid cache file: nothing was repacked.
    Loaded(PathBuf),
    /// The layers were repacked and written to this cache file (the next load maps it);
    /// `why` says why the previous file, if any, could not be used.
    Written {
        /// The cache file.
        path: PathBuf,
        /// Why it was (re)built: absent, stale (which identity differed), corrupt.
        why: String,
    },
    /// The cache file could not be written: the layers were repacked into memory as without
    /// a cache. `error` names the path and the failure.
    Unavailable {
        /// Where the cache was to be written.
        path: PathBuf,
        /// What failed.
        error: String,
    },
}

impl std::fmt::Display for AwqCacheStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AwqCacheStatus::Loaded(path) => {
                write!(f, "AWQ layers mapped from the repack cache {}", path.display())
            }
            AwqCacheStatus::Written { path, why } => write!(
                f,
                "AWQ layers repacked and cached as {} ({why})",
                path.display()
            ),
            AwqCacheStatus::Unavailable { path, error } => write!(
                f,
                "AWQ repack cache unavailable at {} ({error}): repacked in memory, as at every load without a cache",
                path.display()
            ),
        }
    }
}

/// One decoder block. `L` is [`Linear`] once loaded, [`LinearSource`] while the memory budget
/// is planned (before AWQ layers are repacked).
#[derive(Debug)]
pub(crate) struct Layer<L = Linear> {
    /// `(hidden)`
    pub input_norm: Vec<f32>,
    /// `(hidden)`
    pub post_attention_norm: Vec<f32>,
    /// `(head_dim)`: RMSNorm over each query head, before RoPE.
    pub q_norm: Vec<f32>,
    /// `(head_dim)`
    pub k_norm: Vec<f32>,
    /// `(q_dim, hidden)`
    pub q_proj: L,
    /// `(kv_dim, hidden)`
    pub k_proj: L,
    /// `(kv_dim, hidden)`
    pub v_proj: L,
    /// `(hidden, q_dim)`
    pub o_proj: L,
    /// Biases of q/k/v/o when `attention_bias` is set.
    pub q_bias: Option<Vec<f32>>,
    pub k_bias: Option<Vec<f32>>,
    pub v_bias: Option<Vec<f32>>,
    pub o_bias: Option<Vec<f32>>,
    /// `(intermediate, hidden)`
    pub gate_proj: L,
    /// `(intermediate, hidden)`
    pub up_proj: L,
    /// `(hidden, intermediate)`
    pub down_proj: L,
}

/// The format of the lm_head matmul.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum LmHead {
    /// As the checkpoint stores it (the tied BF16 embedding for Qwen3-4B).
    #[default]
    Exact,
    /// An int8 copy built at load (symmetric, one f32 scale per row) multiplied with int8
    /// activations: half of BF16's bytes per token. Log-probs move by up to ~1e-2 on the
    /// fixtures (`tests/golden.rs` states the bound). Falls back to `Exact` when `hidden` is not
    /// a multiple of 8.
    Q8,
}

impl<L> Layer<L> {
    /// The seven projections, in compute order.
    pub fn linears(&self) -> [&L; 7] {
        [
            &self.q_proj,
            &self.k_proj,
            &self.v_proj,
            &self.o_proj,
            &self.gate_proj,
            &self.up_proj,
            &self.down_proj,
        ]
    }

    /// The same block with each projection passed through `f` (in compute order).
    fn try_map<M, E>(self, mut f: impl FnMut(L) -> Result<M, E>) -> Result<Layer<M>, E> {
        Ok(Layer {
            q_proj: f(self.q_proj)?,
            k_proj: f(self.k_proj)?,
            v_proj: f(self.v_proj)?,
            o_proj: f(self.o_proj)?,
            gate_proj: f(self.gate_proj)?,
            up_proj: f(self.up_proj)?,
            down_proj: f(self.down_proj)?,
            input_norm: self.input_norm,
            post_attention_norm: self.post_attention_norm,
            q_norm: self.q_norm,
            k_norm: self.k_norm,
            q_bias: self.q_bias,
            k_bias: self.k_bias,
            v_bias: self.v_bias,
            o_bias: self.o_bias,
        })
    }
}

/// All weights. `L` as in [`Layer`]: [`Weights::open`] gives `Weights<LinearSource>`, whose
/// sizes the memory budget is planned from; [`Weights::finish`] then repacks each layer into
/// memory or, for streamed layers, into a spill file.
#[derive(Debug)]
pub(crate) struct Weights<L = Linear> {
    /// `(vocab, hidden)`, dense.
    pub embed: DenseWeight,
    pub layers: Vec<Layer<L>>,
    /// `(hidden)`
    pub final_norm: Vec<f32>,
    /// `(vocab, hidden)`: `embed` itself when the embeddings are tied.
    pub lm_head: Linear,
}

impl Weights<LinearSource> {
    /// Finds and checks every tensor; nothing is repacked yet (see [`Weights::finish`]).
    pub fn open(
        store: &WeightStore,
        config: &Qwen3Config,
        scheme: &QuantScheme,
        options: &LoadOptions,
    ) -> Result<Self, ModelError> {
        let linear_options = LinearOptions {
            awq_activations: options.awq_activations,
        };
        let hidden = config.hidden_size;
        let vector = |name: &str, len: usize| -> Result<Vec<f32>, ModelError> {
            let t = store.get(name)?;
            // Norms and biases are small: always checked, like quantization scales.
            t.expect_shape(&[len])?.check_finite()?;
            Ok(t.to_f32_vec()?)
        };

        let embed_tensor = store.get("model.embed_tokens.weight")?;
        embed_tensor.expect_shape(&[config.vocab_size, hidden])?;
        embed_tensor.expect_dtype(&[Dtype::BF16, Dtype::F16, Dtype::F32])?;
        let embed = DenseWeight::new(embed_tensor.clone())?;

        let (q_dim, kv_dim, inter) = (config.q_dim(), config.kv_dim(), config.intermediate_size);
        check_layer_count(store, config)?;
        let mut layers = Vec::with_capacity(config.num_hidden_layers);
        for i in 0..config.num_hidden_layers {
            let p = format!("model.layers.{i}");
            let linear = |name: &str, out: usize, inp: usize| {
                LinearSource::open(
                    store,
                    &format!("{p}.{name}"),
                    scheme,
                    out,
                    inp,
                    linear_options,
                )
            };
            let bias = |name: &str, len: usize| -> Result<Option<Vec<f32>>, ModelError> {
                if config.attention_bias {
                    vector(&format!("{p}.{name}.bias"), len).map(Some)
                } else {
                    Ok(None)
                }
            };
            layers.push(Layer {
                input_norm: vector(&format!("{p}.input_layernorm.weight"), hidden)?,
                post_attention_norm: vector(
                    &format!("{p}.post_attention_layernorm.weight"),
                    hidden,
                )?,
                q_norm: vector(&format!("{p}.self_attn.q_norm.weight"), config.head_dim())?,
                k_norm: vector(&format!("{p}.self_attn.k_norm.weight"), config.head_dim())?,
                q_proj: linear("self_attn.q_proj", q_dim, hidden)?,
                k_proj: linear("self_attn.k_proj", kv_dim, hidden)?,
                v_proj: linear("self_attn.v_proj", kv_dim, hidden)?,
                o_proj: linear("self_attn.o_proj", hidden, q_dim)?,
                q_bias: bias("self_attn.q_proj", q_dim)?,
                k_bias: bias("self_attn.k_proj", kv_dim)?,
                v_bias: bias("self_attn.v_proj", kv_dim)?,
                o_bias: bias("self_attn.o_proj", hidden)?,
                gate_proj: linear("mlp.gate_proj", inter, hidden)?,
                up_proj: linear("mlp.up_proj", inter, hidden)?,
                down_proj: linear("mlp.down_proj", hidden, inter)?,
            });
        }

        let final_norm = vector("model.norm.weight", hidden)?;
        // transformers ties lm_head to embed_tokens when tie_word_embeddings is set, and ignores
        // a stored lm_head.weight then; untied checkpoints must have one.
        let lm_head = if config.tie_word_embeddings {
            Linear::dense(embed_tensor)?
        } else {
            let dense = store
                .get_opt("lm_head.weight")?
                .filter(|t| matches!(t.dtype(), Dtype::BF16 | Dtype::F16 | Dtype::F32));
            match dense {
                // Quantized checkpoints keep lm_head unquantized (AWQ's modules_to_not_convert,
                // compressed-tensors' `ignore`), whatever the scheme says of the other layers.
                Some(t) => {
                    t.expect_shape(&[config.vocab_size, hidden])?;
                    Linear::dense(t)?
                }
                None => Linear::load_with(
                    store,
                    "lm_head",
                    scheme,
                    config.vocab_size,
                    hidden,
                    linear_options,
                )?,
            }
        };
        let lm_head = match options.lm_head {
            LmHead::Exact => lm_head,
            LmHead::Q8 => lm_head.to_q8().unwrap_or(lm_head),
        };
        Ok(Self {
            embed,
            layers,
            final_norm,
            lm_head,
        })
    }

    /// Per decoder layer, the bytes a memory budget can stream: every projection's
    /// [`LinearSource::movable_bytes`] (mapped tensors, and AWQ's repacked copy, which a
    /// streamed layer keeps in a spill file).
    pub fn layer_bytes(&self) -> Vec<u64> {
        self.layers
            .iter()
            .map(|l| l.linears().iter().map(|w| w.movable_bytes() as u64).sum())
            .collect()
    }

    /// Bytes that stay in memory whatever the budget: the embedding and lm_head (read every
    /// token), norms and biases, and the parts of layers that cannot move (FP8's expanded
    /// scales).
    pub fn fixed_bytes(&self) -> usize {
        let embed = self.embed.tensor().bytes().len();
        // A tied dense lm_head is the embedding tensor itself: count it once.
        let lm_head = match &self.lm_head {
            Linear::Dense(w) if w.tensor().name() == self.embed.tensor().name() => 0,
            other => other.weight_bytes(),
        };
        let vectors = |l: &Layer<LinearSource>| {
            let biases = [&l.q_bias, &l.k_bias, &l.v_bias, &l.o_bias]
                .into_iter()
                .flatten()
                .map(Vec::len)
                .sum::<usize>();
            l.input_norm.len()
                + l.post_attention_norm.len()
                + l.q_norm.len()
                + l.k_norm.len()
                + biases
        };
        let vectors = 4 * (self.final_norm.len() + self.layers.iter().map(vectors).sum::<usize>());
        let pinned: usize = self
            .layers
            .iter()
            .flat_map(|l| l.linears())
            .map(|w| w.weight_bytes() - w.movable_bytes())
            .sum();
        embed + lm_head + vectors + pinned
    }

    /// Finishes every layer: from the AWQ repack cache at `cache` when there is one (a valid
    /// file is mapped; otherwise the layers are repacked into a new one, and every AWQ layer
    /// reads its data from that file's map, resident or streamed), else by repacking in memory
    /// ([`Weights::finish_in_memory`]). Returns also the spill file written, if any, and what
    /// became of the cache (`None` when there is no cache or nothing to cache).
    #[allow(clippy::type_complexity)]
    pub fn finish(
        self,
        store: &WeightStore,
        cache: Option<&Path>,
        streamed: impl Fn(usize) -> bool,
        on_layer_done: &mut dyn FnMut(usize),
    ) -> Result<(Weights, Option<(u64, PathBuf)>, Option<AwqCacheStatus>), ModelError> {
        let awq: Vec<_> = self
            .layers
            .iter()
            .flat_map(|l| l.linears())
            .filter_map(|l| l.awq().map(|a| (l.prefix().to_owned(), a.clone())))
            .collect();
        let Some(path) = cache.filter(|_| !awq.is_empty()) else {
            let (weights, spilled) = self.finish_in_memory(streamed, on_layer_done)?;
            return Ok((weights, spilled, None));
        };
        let key = AwqCacheKey::new(store, awq)?;
        let (cache, status) = match key.open(path) {
            Ok(cache) => (cache, AwqCacheStatus::Loaded(path.to_owned())),
            Err(miss) => {
                let n = self.layers.len();
                let per_layer = key.len().div_ceil(n.max(1)).max(1);
                match key.write(path, &mut |done| on_layer_done((done / per_layer).min(n))) {
                    Ok(cache) => {
                        let why = miss.to_string();
                        (
                            cache,
                            AwqCacheStatus::Written {
                                path: path.to_owned(),
                                why,
                            },
                        )
                    }
                    Err(error) => {
                        let (weights, spilled) = self.finish_in_memory(streamed, on_layer_done)?;
                        let status = AwqCacheStatus::Unavailable {
                            path: path.to_owned(),
                            error: error.to_string(),
                        };
                        return Ok((weights, spilled, Some(status)));
                    }
                }
            }
        };
        let weights = self.finish_from(&cache, on_layer_done)?;
        Ok((weights, None, Some(status)))
    }

    /// Every layer finished from `cache` (AWQ layers mapped from it, the rest as they are).
    fn finish_from(
        self,
        cache: &AwqCache,
        on_layer_done: &mut dyn FnMut(usize),
    ) -> Result<Weights, ModelError> {
        let mut layers = Vec::with_capacity(self.layers.len());
        for (i, layer) in self.layers.into_iter().enumerate() {
            layers.push(layer.try_map(|w| w.finish_cached(cache))?);
            on_layer_done(i + 1);
        }
        Ok(Weights {
            embed: self.embed,
            layers,
            final_norm: self.final_norm,
            lm_head: self.lm_head,
        })
    }

    /// Repacks every layer; those for which `streamed(i)` holds go to one spill file (created
    /// only if one of them has something to repack), the others into process memory. Returns
    /// the spill file's size and where it was created, if one was written.
    pub fn finish_in_memory(
        self,
        streamed: impl Fn(usize) -> bool,
        on_layer_done: &mut dyn FnMut(usize),
    ) -> Result<(Weights, Option<(u64, PathBuf)>), ModelError> {
        let mut spill: Option<SpillFile> = None;
        let mut layers = Vec::with_capacity(self.layers.len());
        // One layer at a time: a streamed layer's heap copy is freed as soon as it is written,
        // so loading never holds more than the resident layers plus one projection's copy.
        for (i, layer) in self.layers.into_iter().enumerate() {
            let spill_layer = streamed(i) && layer.linears().iter().any(|w| w.needs_spill());
            if spill_layer && spill.is_none() {
                spill = Some(SpillFile::create()?);
            }
            layers.push(
                layer.try_map(|w| match spill.as_mut().filter(|_| spill_layer) {
                    Some(file) => w.finish_spilled(file),
                    None => w.finish(),
                })?,
            );
            on_layer_done(i + 1);
        }
        let spilled = spill.map(|f| (f.len_bytes(), f.path().to_owned()));
        let weights = Weights {
            embed: self.embed,
            layers,
            final_norm: self.final_norm,
            lm_head: self.lm_head,
        };
        Ok((weights, spilled))
    }
}

/// `num_hidden_layers` sizes the layer list (and everything per layer after it), so it is
/// checked against the checkpoint first: the layers `0..n` must all be there. Counting them is
/// bounded by the number of tensors, whatever the config says; a config of a billion layers is
/// then an error naming both counts instead of a multi-terabyte allocation. (More layers in the
/// checkpoint than the config uses are accepted, as transformers does.)
fn check_layer_count(store: &WeightStore, config: &Qwen3Config) -> Result<(), ModelError> {
    let has = |i: usize| store.contains(&format!("model.layers.{i}.input_layernorm.weight"));
    let present = (0..).take_while(|&i| has(i)).count();
    if config.num_hidden_layers > present {
        return Err(ModelError::LayerCount {
            path: store.dir().join("config.json"),
            config: config.num_hidden_layers,
            present,
        });
    }
    Ok(())
}

impl Weights {
    /// Bytes of weights one decode step reads.
    pub fn bytes_per_token(&self) -> usize {
        let layers: usize = self
            .layers
            .iter()
            .map(|l| l.linears().iter().map(|w| w.weight_bytes()).sum::<usize>())
            .sum();
        layers + self.lm_head.weight_bytes()
    }

    /// The mapped tensors of each decoder layer: what a memory budget streams.
    pub fn layer_tensors(&self) -> Vec<Vec<nano_infer_tensor::Tensor>> {
        self.layers
            .iter()
            .map(|l| {
                l.linears()
                    .iter()
                    .flat_map(|w| w.mapped_tensors())
                    .collect()
            })
            .collect()
    }
}
