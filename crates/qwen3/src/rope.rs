//! Rotary position embeddings, NeoX style (`rotate_half`), with optional YaRN scaling, computed
//! the way transformers' `modeling_rope_utils` does.
//!
//! The inverse frequencies are computed once at load in f64 and rounded to f32 (transformers
//! computes them in f32 from `base ** (2i/d)`; the two agree to an ulp). Angles are formed in f32
//! as `position · inv_freq`, as transformers' f32 matmul does, so long-context positions round the
//! same way.

use crate::config::{Qwen3Config, RopeScaling};

/// Precomputed inverse frequencies and the YaRN attention factor.
#[derive(Clone, Debug)]
pub struct Rope {
    /// `(head_dim / 2)`
    inv_freq: Vec<f32>,
    /// Multiplies cos and sin (YaRN's `attention_factor`; 1 otherwise).
    attention_factor: f32,
}

impl Rope {
    /// The frequencies of `config`'s head size, base and scaling.
    pub fn new(config: &Qwen3Config) -> Self {
        let dim = config.head_dim();
        let base = config.rope_theta;
        let pos_freq = |i: usize| base.powf((2 * i) as f64 / dim as f64);
        match &config.rope_scaling {
            Some(s) if s.rope_type == "yarn" => yarn(s, config, dim),
            _ => Self {
                inv_freq: (0..dim / 2).map(|i| (1.0 / pos_freq(i)) as f32).collect(),
                attention_factor: 1.0,
            },
        }
    }

    /// The inverse frequencies, `(head_dim / 2)`.
    pub fn inv_freq(&self) -> &[f32] {
        &self.inv_freq
    }

    /// The factor on cos and sin (1 without YaRN).
    pub fn attention_factor(&self) -> f32 {
        self.attention_factor
    }

    /// Rotates every head of `x` (`(n_heads, head_dim)`) in place for `position`.
    pub fn apply(&self, x: &mut [f32], head_dim: usize, position: usize) {
        let half = head_dim / 2;
        for head in x.chunks_exact_mut(head_dim) {
            let (lo, hi) = head.split_at_mut(half);
            for (i, (a, b)) in lo.iter_mut().zip(hi.iter_mut()).enumerate() {
                let angle = position as f32 * self.inv_freq[i];
                let (sin, cos) = angle.sin_cos();
                let (cos, sin) = (cos * self.attention_factor, sin * self.attention_factor);
                // rotate_half(x) = cat(-x[half..], x[..half])
                let (x1, x2) = (*a, *b);
                *a = x1 * cos - x2 * sin;
                *b = x2 * cos + x1 * sin;
            }
        }
    }
}

/// YaRN as transformers v5 computes it (`_compute_yarn_parameters`).
fn yarn(s: &RopeScaling, config: &Qwen3Config, dim: usize) -> Rope {
    let base = config.rope_theta;
    let original = s
        .original_max_position_embeddings
        .unwrap_or(config.max_position_embeddings);
    // An explicit factor wins; without one, the ratio of post- to pre-YaRN context (DeepSeek-V3).
    let factor = s
        .factor
        .unwrap_or(config.max_position_embeddings as f64 / original as f64);
    let get_mscale = |scale: f64, mscale: f64| {
        if scale <= 1.0 {
            1.0
        } else {
            0.1 * mscale * scale.ln() + 1.0
        }
    };
    let attention_factor =
        s.attention_factor
            .unwrap_or_else(|| match (s.mscale, s.mscale_all_dim) {
                (Some(m), Some(all)) if m != 0.0 && all != 0.0 => {
                    get_mscale(factor, m) / get_mscale(factor, all)
                }
                _ => get_mscale(factor, 1.0),
            });
    let beta_fast = s.beta_fast.filter(|b| *b != 0.0).unwrap_or(32.0);
    let beta_slow = s.beta_slow.filter(|b| *b != 0.0).unwrap_or(1.0);
    let correction_dim = |rotations: f64| {
        dim as f64 * (original as f64 / (rotations * 2.0 * std::f64::consts::PI)).ln()
            / (2.0 * base.ln())
    };
    let (mut low, mut high) = (correction_dim(beta_fast), correction_dim(beta_slow));
    if s.truncate.unwrap_or(true) {
        low = low.floor();
        high = high.ceil();
    }
    let low = low.max(0.0);
    let high = high.min(dim as f64 - 1.0);
    let high = if low == high { high + 0.001 } else { high };

    let inv_freq = (0..dim / 2)
        .map(|i| {
            let pos_freq = base.powf((2 * i) as f64 / dim as f64);
            let extrapolation = 1.0 / pos_freq;
            let interpolation = 1.0 / (factor * pos_freq);
            let ramp = ((i as f64 - low) / (high - low)).clamp(0.0, 1.0);
            let extrapolation_factor = 1.0 - ramp;
            (interpolation * (1.0 - extrapolation_factor) + extrapolation * extrapolation_factor)
                as f32
        })
        .collect();
    Rope {
        inv_freq,
        attention_factor: attention_factor as f32,
    }
}
