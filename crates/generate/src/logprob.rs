//! Log-probabilities from a row of logits, in f64 so a sum over a 150k vocabulary loses
//! nothing. Shared by the per-token reports of a generation and by perplexity.

use crate::{Alternative, TextCodec, TokenLogprob};

/// `log(Σ exp(row))`, stable for large logits.
pub fn log_sum_exp(row: &[f32]) -> f64 {
    let max = row.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(v as f64));
    if max == f64::NEG_INFINITY || max.is_nan() {
        return max;
    }
    let sum: f64 = row.iter().map(|&v| (v as f64 - max).exp()).sum();
    max + sum.ln()
}

/// `log softmax(row)[target]`.
pub fn log_softmax_at(row: &[f32], target: usize) -> f64 {
    row[target] as f64 - log_sum_exp(row)
}

/// The report of token `id` sampled from `row`, with the `top` most likely alternatives (ties
/// to the lower id).
pub(crate) fn token_logprob(
    codec: Option<&TextCodec>,
    row: &[f32],
    id: u32,
    top: usize,
) -> TokenLogprob {
    let lse = log_sum_exp(row);
    let describe = |id: u32| {
        let (token, bytes) = match codec {
            Some(c) => (
                c.tokenizer().decode(&[id], false).unwrap_or_default(),
                c.tokenizer().token_bytes(id).unwrap_or_default(),
            ),
            None => (id.to_string(), Vec::new()),
        };
        Alternative {
            id,
            token,
            bytes,
            logprob: row
                .get(id as usize)
                .map_or(f32::NEG_INFINITY, |&v| (v as f64 - lse) as f32),
        }
    };
    TokenLogprob {
        chosen: describe(id),
        top: top_ids(row, top).into_iter().map(describe).collect(),
    }
}

/// The `n` ids of largest logit, largest first, ties to the lower id. One pass, keeping a short
/// sorted list (n ≤ 20).
fn top_ids(row: &[f32], n: usize) -> Vec<u32> {
    let mut best: Vec<(f32, u32)> = Vec::with_capacity(n + 1);
    if n == 0 {
        return Vec::new();
    }
    for (i, &v) in row.iter().enumerate() {
        if v.is_nan() || (best.len() == n && v <= best[n - 1].0) {
            continue;
        }
        let at = best.partition_point(|&(b, _)| b >= v);
        best.insert(at, (v, i as u32));
        best.truncate(n);
    }
    best.into_iter().map(|(_, id)| id).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_softmax_matches_the_definition() {
        let row = [1.0f32, 2.0, 3.0];
        let z: f64 = row.iter().map(|&v| (v as f64).exp()).sum();
        for t in 0..3 {
            assert!((log_softmax_at(&row, t) - ((row[t] as f64).exp() / z).ln()).abs() < 1e-12);
        }
        // Large logits must not overflow.
        assert!((log_softmax_at(&[1000.0, 1000.0], 0) - 0.5f64.ln()).abs() < 1e-12);
    }

    #[test]
    fn top_ids_are_the_largest_in_order_with_ties_to_the_lower_id() {
        let row = [0.5f32, 3.0, -1.0, 3.0, 2.0, f32::NAN];
        assert_eq!(top_ids(&row, 3), vec![1, 3, 4]);
        assert_eq!(top_ids(&row, 0), Vec::<u32>::new());
        assert_eq!(top_ids(&row, 10), vec![1, 3, 4, 0, 2]);
        let lp = token_logprob(None, &row[..5], 4, 2);
        assert_eq!(lp.chosen.id, 4);
        assert!((lp.chosen.logprob as f64 - log_softmax_at(&row[..5], 4)).abs() < 1e-6);
        assert_eq!(lp.top.iter().map(|a| a.id).collect::<Vec<_>>(), vec![1, 3]);
    }
}
