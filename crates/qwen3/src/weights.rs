//! The weights of a Qwen3 checkpoint, bound to their tensors in the memory map.
//!
//! Linear weights stay in the format the checkpoint stores (see `nano_infer_quant::Linear`); only
//! the small vectors (norms, biases) are copied to f32 at load.

use crate::{ModelError, Qwen3Config};
use nano_infer_quant::{DenseWeight, Linear, QuantScheme};
use nano_infer_tensor::{Dtype, WeightStore};

/// One decoder block.
#[derive(Debug)]
pub(crate) struct Layer {
    /// `(hidden)`
    pub input_norm: Vec<f32>,
    /// `(hidden)`
    pub post_attention_norm: Vec<f32>,
    /// `(head_dim)`: RMSNorm over each query head, before RoPE.
    pub q_norm: Vec<f32>,
    /// `(head_dim)`
    pub k_norm: Vec<f32>,
    /// `(q_dim, hidden)`
    pub q_proj: Linear,
    /// `(kv_dim, hidden)`
    pub k_proj: Linear,
    /// `(kv_dim, hidden)`
    pub v_proj: Linear,
    /// `(hidden, q_dim)`
    pub o_proj: Linear,
    /// Biases of q/k/v/o when `attention_bias` is set.
    pub q_bias: Option<Vec<f32>>,
    pub k_bias: Option<Vec<f32>>,
    pub v_bias: Option<Vec<f32>>,
    pub o_bias: Option<Vec<f32>>,
    /// `(intermediate, hidden)`
    pub gate_proj: Linear,
    /// `(intermediate, hidden)`
    pub up_proj: Linear,
    /// `(hidden, intermediate)`
    pub down_proj: Linear,
}

#[derive(Debug)]
pub(crate) struct Weights {
    /// `(vocab, hidden)`, dense.
    pub embed: DenseWeight,
    pub layers: Vec<Layer>,
    /// `(hidden)`
    pub final_norm: Vec<f32>,
    /// `(vocab, hidden)`: `embed` itself when the embeddings are tied.
    pub lm_head: Linear,
}

impl Weights {
    pub fn load(
        store: &WeightStore,
        config: &Qwen3Config,
        scheme: &QuantScheme,
    ) -> Result<Self, ModelError> {
        let hidden = config.hidden_size;
        let vector = |name: &str, len: usize| -> Result<Vec<f32>, ModelError> {
            let t = store.get(name)?;
            t.expect_shape(&[len])?;
            Ok(t.to_f32_vec()?)
        };

        let embed_tensor = store.get("model.embed_tokens.weight")?;
        embed_tensor.expect_shape(&[config.vocab_size, hidden])?;
        embed_tensor.expect_dtype(&[Dtype::BF16, Dtype::F16, Dtype::F32])?;
        let embed = DenseWeight::new(embed_tensor.clone())?;

        let (q_dim, kv_dim, inter) = (config.q_dim(), config.kv_dim(), config.intermediate_size);
        let mut layers = Vec::with_capacity(config.num_hidden_layers);
        for i in 0..config.num_hidden_layers {
            let p = format!("model.layers.{i}");
            let linear = |name: &str, out: usize, inp: usize| {
                Linear::load(store, &format!("{p}.{name}"), scheme, out, inp)
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
                None => Linear::load(store, "lm_head", scheme, config.vocab_size, hidden)?,
            }
        };
        Ok(Self {
            embed,
            layers,
            final_norm,
            lm_head,
        })
    }

    /// Bytes of weights one decode step reads.
    pub fn bytes_per_token(&self) -> usize {
        let layers: usize = self
            .layers
            .iter()
            .map(|l| {
                [
                    &l.q_proj,
                    &l.k_proj,
                    &l.v_proj,
                    &l.o_proj,
                    &l.gate_proj,
                    &l.up_proj,
                    &l.down_proj,
                ]
                .iter()
                .map(|w| w.weight_bytes())
                .sum::<usize>()
            })
            .sum();
        layers + self.lm_head.weight_bytes()
    }
}
