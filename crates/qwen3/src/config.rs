//! A serde mirror of `config.json` for `Qwen3ForCausalLM`, validated at load.
//!
//! Unknown fields are ignored (Hugging Face configs carry many that do not affect inference);
//! fields that would change the computation in a way we do not implement are rejected with a
//! message naming them, so a checkpoint never runs silently wrong.

use crate::ModelError;
use serde::Deserialize;
use std::path::Path;

/// The architecture hyper-parameters of a Qwen3 checkpoint.
#[derive(Clone, Debug, Deserialize)]
pub struct Qwen3Config {
    /// Must include `Qwen3ForCausalLM`.
    #[serde(default)]
    pub architectures: Vec<String>,
    /// Must be `qwen3`.
    #[serde(default)]
    pub model_type: Option<String>,
    /// Rows of the embedding and of `lm_head`.
    pub vocab_size: usize,
    /// Width of the residual stream.
    pub hidden_size: usize,
    /// Width of the MLP (gate and up projections).
    pub intermediate_size: usize,
    /// Decoder layers; checked against the checkpoint at load.
    pub num_hidden_layers: usize,
    /// Query heads.
    pub num_attention_heads: usize,
    /// Defaults to `num_attention_heads` (no grouping), as in transformers.
    #[serde(default)]
    pub num_key_value_heads: Option<usize>,
    /// Explicit in Qwen3: Qwen3-4B has hidden 2560 but 32 heads × 128. Defaults to
    /// `hidden_size / num_attention_heads` when absent.
    #[serde(default)]
    pub head_dim: Option<usize>,
    /// RoPE base frequency (default 10000).
    #[serde(default = "default_rope_theta")]
    pub rope_theta: f64,
    /// RMSNorm epsilon (default 1e-6).
    #[serde(default = "default_rms_norm_eps")]
    pub rms_norm_eps: f64,
    /// The model's longest context in tokens.
    #[serde(default = "default_max_position_embeddings")]
    pub max_position_embeddings: usize,
    /// `lm_head` reuses the embedding matrix (no `lm_head.weight`).
    #[serde(default)]
    pub tie_word_embeddings: bool,
    /// `torch_dtype` (older transformers) or `dtype` (newer).
    #[serde(default, alias = "dtype")]
    pub torch_dtype: Option<String>,
    /// Must be false: Qwen3 has no q/k/v/o biases.
    #[serde(default)]
    pub attention_bias: bool,
    /// Must be `silu` when given.
    #[serde(default)]
    pub hidden_act: Option<String>,
    /// Default RoPE or YaRN; anything else is refused.
    #[serde(default)]
    pub rope_scaling: Option<RopeScaling>,
    /// Must be false (no Qwen3 checkpoint uses it).
    #[serde(default)]
    pub use_sliding_window: bool,
    /// Parsed by `nano_infer_quant::QuantScheme::from_config`.
    #[serde(default)]
    pub quantization_config: Option<serde_json::Value>,
    /// A token id or a list of them (checked to be u32).
    #[serde(default)]
    pub bos_token_id: Option<serde_json::Value>,
    /// A token id or a list of them (checked to be u32); the stop ids when
    /// `generation_config.json` gives none.
    #[serde(default)]
    pub eos_token_id: Option<serde_json::Value>,
}

/// `rope_scaling`: `null`, `{"rope_type": "default"}` or YaRN, the way Qwen3 reaches 131k tokens
/// (`{"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32768}`).
#[derive(Clone, Debug, Deserialize)]
pub struct RopeScaling {
    /// `rope_type`, or `type` in older configs.
    #[serde(alias = "type")]
    pub rope_type: String,
    /// Context extension factor (YaRN `s`).
    #[serde(default)]
    pub factor: Option<f64>,
    /// The pretraining context YaRN extends.
    #[serde(default)]
    pub original_max_position_embeddings: Option<usize>,
    /// Scale of cos and sin; derived from `factor` and the mscales when absent.
    #[serde(default)]
    pub attention_factor: Option<f64>,
    /// YaRN ramp: rotations faster than this are not interpolated (default 32).
    #[serde(default)]
    pub beta_fast: Option<f64>,
    /// YaRN ramp: rotations slower than this are fully interpolated (default 1).
    #[serde(default)]
    pub beta_slow: Option<f64>,
    /// DeepSeek-style `mscale` for the attention factor.
    #[serde(default)]
    pub mscale: Option<f64>,
    /// DeepSeek-style `mscale_all_dim` for the attention factor.
    #[serde(default)]
    pub mscale_all_dim: Option<f64>,
    /// Whether the ramp bounds are truncated to integers (default true).
    #[serde(default)]
    pub truncate: Option<bool>,
}

fn default_rope_theta() -> f64 {
    10_000.0
}
fn default_rms_norm_eps() -> f64 {
    1e-6
}
fn default_max_position_embeddings() -> usize {
    32_768
}

impl Qwen3Config {
    /// Reads and validates `dir/config.json`.
    pub fn from_dir(dir: &Path) -> Result<Self, ModelError> {
        let path = dir.join("config.json");
        if !dir.is_dir() {
            return Err(ModelError::Io {
                path: dir.to_owned(),
                source: std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "model directory not found",
                ),
            });
        }
        let text = read_config_file(&path).map_err(|source| ModelError::Io {
            path: path.clone(),
            source,
        })?;
        Self::from_json(&text, &path)
    }

    /// Parses and validates a `config.json` text; `path` is used in error messages.
    pub fn from_json(text: &str, path: &Path) -> Result<Self, ModelError> {
        let config: Self = serde_json::from_str(text).map_err(|e| ModelError::Config {
            path: path.to_owned(),
            reason: format!("not a valid Qwen3 config: {e}"),
        })?;
        config.validate().map_err(|reason| ModelError::Config {
            path: path.to_owned(),
            reason,
        })?;
        Ok(config)
    }

    /// Key/value heads: `num_key_value_heads`, else `num_attention_heads`.
    pub fn n_kv_heads(&self) -> usize {
        self.num_key_value_heads.unwrap_or(self.num_attention_heads)
    }

    /// `head_dim`, else `hidden_size / num_attention_heads`.
    pub fn head_dim(&self) -> usize {
        self.head_dim
            .unwrap_or(self.hidden_size / self.num_attention_heads.max(1))
    }

    /// Width of the concatenated query heads.
    pub fn q_dim(&self) -> usize {
        self.num_attention_heads * self.head_dim()
    }

    /// Width of the concatenated key (or value) heads.
    pub fn kv_dim(&self) -> usize {
        self.n_kv_heads() * self.head_dim()
    }

    fn validate(&self) -> Result<(), String> {
        let arch_ok = self.architectures.iter().any(|a| a == "Qwen3ForCausalLM");
        let type_ok = self.model_type.as_deref() == Some("qwen3");
        if !arch_ok && !type_ok {
            // Written for a person: `llama`, not Rust's `Some("llama")`.
            let architectures = match self.architectures.as_slice() {
                [] => "none".to_string(),
                list => list.join(", "),
            };
            let model_type = self.model_type.as_deref().unwrap_or("none");
            return Err(format!(
                "unsupported model: architectures {architectures}, model_type {model_type} (expected Qwen3ForCausalLM / qwen3)"
            ));
        }
        for (name, value) in [
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("intermediate_size", self.intermediate_size),
            ("num_hidden_layers", self.num_hidden_layers),
            ("num_attention_heads", self.num_attention_heads),
            ("num_key_value_heads", self.n_kv_heads()),
            ("head_dim", self.head_dim()),
            ("max_position_embeddings", self.max_position_embeddings),
        ] {
            if value == 0 {
                return Err(format!("{name} must be positive"));
            }
        }
        if !self.num_attention_heads.is_multiple_of(self.n_kv_heads()) {
            return Err(format!(
                "num_attention_heads ({}) is not a multiple of num_key_value_heads ({})",
                self.num_attention_heads,
                self.n_kv_heads()
            ));
        }
        if !self.head_dim().is_multiple_of(2) {
            return Err(format!(
                "head_dim ({}) must be even for rotary embeddings",
                self.head_dim()
            ));
        }
        // Products of the counts size the buffers; each must fit before anything uses it (the
        // tensors' shapes are checked against them at load, but a product that wrapped around
        // could match a small tensor).
        let head_dim = self.head_dim();
        for (name, a, b) in [
            (
                "num_attention_heads × head_dim",
                self.num_attention_heads,
                head_dim,
            ),
            (
                "num_key_value_heads × head_dim",
                self.n_kv_heads(),
                head_dim,
            ),
            (
                "vocab_size × hidden_size",
                self.vocab_size,
                self.hidden_size,
            ),
            (
                "intermediate_size × hidden_size",
                self.intermediate_size,
                self.hidden_size,
            ),
            ("2 × intermediate_size", 2, self.intermediate_size),
        ] {
            if a.checked_mul(b).and_then(|n| n.checked_mul(4)).is_none() {
                return Err(format!("{name} ({a} × {b}) overflows"));
            }
        }
        for (name, value) in [
            ("eos_token_id", &self.eos_token_id),
            ("bos_token_id", &self.bos_token_id),
        ] {
            if let Some(value) = value {
                token_ids(value).map_err(|reason| format!("{name}: {reason}"))?;
            }
        }
        if let Some(act) = &self.hidden_act {
            if act != "silu" {
                return Err(format!(
                    "hidden_act `{act}` is not supported (Qwen3 uses silu)"
                ));
            }
        }
        if self.use_sliding_window {
            return Err(
                "use_sliding_window: true is not supported (no Qwen3 checkpoint uses it)".into(),
            );
        }
        if !self.rope_theta.is_finite()
            || self.rope_theta <= 0.0
            || !self.rms_norm_eps.is_finite()
            || self.rms_norm_eps < 0.0
        {
            return Err("rope_theta must be positive and rms_norm_eps non-negative".into());
        }
        // The norms run in f32: an epsilon that rounds to infinity there is not the config's.
        if !(self.rms_norm_eps as f32).is_finite() {
            return Err(format!(
                "rms_norm_eps {} is out of the f32 range the norms compute in",
                self.rms_norm_eps
            ));
        }
        if let Some(scaling) = &self.rope_scaling {
            match scaling.rope_type.as_str() {
                "default" => {}
                "yarn" => {
                    if scaling.factor.is_none()
                        && scaling.original_max_position_embeddings.is_none()
                    {
                        return Err("rope_scaling yarn needs `factor` or `original_max_position_embeddings`".into());
                    }
                    if matches!(scaling.factor, Some(f) if !f.is_finite() || f <= 0.0) {
                        return Err("rope_scaling.factor must be positive".into());
                    }
                }
                other => {
                    return Err(format!(
                        "rope_scaling type `{other}` is not supported (default or yarn)"
                    ))
                }
            }
        }
        Ok(())
    }
}

/// Token ids as `config.json` and `generation_config.json` give them (`eos_token_id`): one id,
/// a list of ids, or `null` for none. Anything else (a string, a negative number, a float, an
/// id past `u32`) is an error, not an empty list: a stop list that silently lost its ids makes
/// generation run to the length limit.
pub(crate) fn token_ids(value: &serde_json::Value) -> Result<Vec<u32>, String> {
    let one = |v: &serde_json::Value| {
        v.as_u64()
            .and_then(|id| u32::try_from(id).ok())
            .ok_or_else(|| {
                format!(
                    "{v} is not a token id (expected an integer from 0 to {})",
                    u32::MAX
                )
            })
    };
    match value {
        serde_json::Value::Null => Ok(Vec::new()),
        serde_json::Value::Array(list) => list.iter().map(one).collect(),
        v => one(v).map(|id| vec![id]),
    }
}

/// Reads a JSON file of the model directory, refusing anything but a regular file (after
/// symlinks): a FIFO would block the read forever, a directory reads as a puzzling error.
pub(crate) fn read_config_file(path: &Path) -> std::io::Result<String> {
    let meta = std::fs::metadata(path)?;
    if !meta.is_file() {
        let kind = if meta.is_dir() {
            "a directory"
        } else {
            "not a regular file (a FIFO, socket or device)"
        };
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("is {kind}"),
        ));
    }
    std::fs::read_to_string(path)
}
