//! Which layers stay resident under a budget, and the accounting behind the choice.

use crate::{format_size, OffloadError};

/// What the plan needs to know, all in bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlanInputs {
    /// The whole budget for this process.
    pub budget: u64,
    /// Weights read every token that are not per-layer (embeddings, lm_head, norms): always
    /// resident.
    pub fixed_weights: u64,
    /// Weight bytes of each decoder layer, in order.
    pub layers: Vec<u64>,
    /// The KV cache at its full context size.
    pub kv_cache: u64,
    /// Activation buffers and other working memory.
    pub activations: u64,
}

/// The outcome: resident layers, streamed layers, and the accounting.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResidencyPlan {
    inputs: PlanInputs,
    /// `resident[i]`: layer `i` is never dropped.
    resident: Vec<bool>,
    /// Bytes reserved for streamed layers in flight: the one computing and, when `prefetch`,
    /// the one being read in beside it.
    window: u64,
    /// Whether the next streamed layer is read in while the current one computes. Off only
    /// when the budget holds one streamed layer but not two.
    prefetch: bool,
}

impl ResidencyPlan {
    /// Keeps layers resident from the first one on while they fit; the rest are streamed. The
    /// budget must hold the fixed weights, the KV cache, the activations and, if anything is
    /// streamed, two streamed layers (the one computing and the one being prefetched).
    pub fn new(inputs: PlanInputs) -> Result<Self, OffloadError> {
        let base = inputs.fixed_weights + inputs.kv_cache + inputs.activations;
        let all_layers: u64 = inputs.layers.iter().sum();
        if base + all_layers <= inputs.budget {
            let n = inputs.layers.len();
            return Ok(Self {
                inputs,
                resident: vec![true; n],
                window: 0,
                prefetch: false,
            });
        }
        // Streaming needs room for the two largest layers in flight (computing + prefetching);
        // with room for only one, layers are read in on demand, without overlap.
        let mut sizes = inputs.layers.clone();
        sizes.sort_unstable_by(|a, b| b.cmp(a));
        let two: u64 = sizes.iter().take(2).sum();
        let one = sizes.first().copied().unwrap_or(0);
        let (window, prefetch) = if base + two <= inputs.budget {
            (two, true)
        } else {
            (one, false)
        };
        let needed = base + window;
        if needed > inputs.budget {
            return Err(OffloadError::BudgetTooSmall {
                budget: format_size(inputs.budget),
                needed: format_size(needed),
                detail: format!(
                    "fixed weights {} + KV cache {} + activations {} + one streamed layer {}",
                    format_size(inputs.fixed_weights),
                    format_size(inputs.kv_cache),
                    format_size(inputs.activations),
                    format_size(window)
                ),
            });
        }
        let mut room = inputs.budget - needed;
        let mut resident = Vec::with_capacity(inputs.layers.len());
        let mut full = false;
        for &bytes in &inputs.layers {
            // Resident layers are a prefix: the streamed ones then form one contiguous run that
            // the prefetcher walks in order, wrapping to the first streamed layer each token.
            if !full && bytes <= room {
                room -= bytes;
                resident.push(true);
            } else {
                full = true;
                resident.push(false);
            }
        }
        Ok(Self {
            inputs,
            resident,
            window,
            prefetch,
        })
    }

    /// Whether layer `i` stays resident.
    pub fn is_resident(&self, layer: usize) -> bool {
        self.resident.get(layer).copied().unwrap_or(true)
    }

    /// Whether any layer is streamed.
    pub fn streams(&self) -> bool {
        self.resident.iter().any(|r| !r)
    }

    /// Whether streamed layers are prefetched while the previous one computes.
    pub fn prefetches(&self) -> bool {
        self.prefetch
    }

    /// Indices of the streamed layers, in order.
    pub fn streamed_layers(&self) -> Vec<usize> {
        (0..self.resident.len())
            .filter(|&i| !self.resident[i])
            .collect()
    }

    /// The streamed layer that follows `layer` in compute order, wrapping around to the first
    /// streamed layer (needed again at the next token).
    pub fn next_streamed(&self, layer: usize) -> Option<usize> {
        let n = self.resident.len();
        (1..=n)
            .map(|d| (layer + d) % n)
            .find(|&i| !self.resident[i])
    }

    /// Bytes of resident weights (fixed + resident layers).
    pub fn resident_weight_bytes(&self) -> u64 {
        let layers: u64 = self
            .inputs
            .layers
            .iter()
            .zip(&self.resident)
            .filter(|(_, r)| **r)
            .map(|(b, _)| b)
            .sum();
        self.inputs.fixed_weights + layers
    }

    /// The most this process should hold: resident weights, the streaming window, the KV cache
    /// and the activations.
    pub fn peak_bytes(&self) -> u64 {
        self.resident_weight_bytes() + self.window + self.inputs.kv_cache + self.inputs.activations
    }

    /// The sizes the plan was made from.
    pub fn inputs(&self) -> &PlanInputs {
        &self.inputs
    }

    /// A one-paragraph account for `-v` output.
    pub fn report(&self) -> String {
        let streamed = self.streamed_layers();
        format!(
            "memory budget {}: {} of {} layers resident, {} streamed{}; resident weights {}, streaming window {}, KV cache {}, activations {}; planned peak {}",
            format_size(self.inputs.budget),
            self.resident.len() - streamed.len(),
            self.resident.len(),
            streamed.len(),
            if self.streams() && !self.prefetch { " (no prefetch: the budget holds one streamed layer)" } else { "" },
            format_size(self.resident_weight_bytes()),
            format_size(self.window),
            format_size(self.inputs.kv_cache),
            format_size(self.inputs.activations),
            format_size(self.peak_bytes()),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inputs(budget: u64) -> PlanInputs {
        PlanInputs {
            budget,
            fixed_weights: 100,
            layers: vec![50; 10],
            kv_cache: 20,
            activations: 10,
        }
    }

    #[test]
    fn everything_fits() {
        let plan = ResidencyPlan::new(inputs(630)).unwrap();
        assert!(!plan.streams());
        assert_eq!(plan.peak_bytes(), 630);
        assert_eq!(plan.next_streamed(3), None);
    }

    #[test]
    fn streams_the_tail_and_accounts_for_the_window() {
        // base 130 + window 100 leaves 170: three layers resident (150), seven streamed.
        let plan = ResidencyPlan::new(inputs(400)).unwrap();
        assert_eq!(plan.streamed_layers(), (3..10).collect::<Vec<_>>());
        assert_eq!(plan.resident_weight_bytes(), 250);
        assert_eq!(plan.peak_bytes(), 250 + 100 + 20 + 10);
        assert!(plan.peak_bytes() <= 400);
        assert_eq!(plan.next_streamed(3), Some(4));
        assert_eq!(
            plan.next_streamed(9),
            Some(3),
            "wraps to the first streamed layer"
        );
        assert_eq!(plan.next_streamed(0), Some(3));
        assert!(plan.report().contains("3 of 10 layers resident"));
    }

    #[test]
    fn budget_below_the_fixed_part_is_an_error() {
        let err = ResidencyPlan::new(inputs(179)).unwrap_err().to_string();
        assert!(
            err.contains("KV cache") && err.contains("one streamed layer"),
            "{err}"
        );
        // Room for two layers in flight: every layer streams, with prefetch.
        let plan = ResidencyPlan::new(inputs(230)).unwrap();
        assert_eq!(plan.streamed_layers().len(), 10);
        assert!(plan.prefetches());
        assert_eq!(plan.peak_bytes(), 230);
    }

    #[test]
    fn room_for_one_streamed_layer_streams_without_prefetch() {
        let plan = ResidencyPlan::new(inputs(180)).unwrap();
        assert_eq!(plan.streamed_layers().len(), 10);
        assert!(!plan.prefetches());
        assert_eq!(plan.peak_bytes(), 180);
        assert!(plan.report().contains("no prefetch"));
    }

    #[test]
    fn peak_never_exceeds_budget() {
        for budget in 180..700 {
            let plan = ResidencyPlan::new(inputs(budget)).unwrap();
            assert!(
                plan.peak_bytes() <= budget,
                "budget {budget}: peak {}",
                plan.peak_bytes()
            );
        }
    }
}
