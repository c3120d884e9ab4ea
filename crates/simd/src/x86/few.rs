//! What the AVX2 and AVX-512 few-token q4 kernels (`gemm_q4_few`: 2 to 15 tokens, one per
//! running sequence of a server batch) share: which token counts they take, how the tokens are
//! split into register tiles, and the reused buffer for their rearranged activations (which the
//! AVX2 FP8 one-token decode also uses for its scaled inputs).

/// Token counts the few-token kernels take (below this, from 2); a whole prompt goes to the
/// panel.
pub(crate) const FEW_MAX_TOK: usize = 16;
/// The most tokens of one few-token register tile.
pub(crate) const FEW_T: usize = 8;

std::thread_local! {
    /// The activations in a few-token kernel's order, reused across calls (no allocation per
    /// step).
    static FEW_XT: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Runs `f` on this thread's zeroed scratch of `len` floats (the kernels' rearranged
/// activations), kept for the next call.
pub(crate) fn with_scratch<R>(len: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    let mut xt = FEW_XT.take();
    xt.clear();
    xt.resize(len, 0.0);
    let r = f(&mut xt);
    FEW_XT.set(xt);
    r
}

/// Splits `n_tok` tokens into the fewest tiles of at most [`FEW_T`], balanced (sizes differ by
/// at most one, so no tile is a short remainder): `(first token, count)` each.
pub(crate) fn token_tiles(n_tok: usize) -> impl Iterator<Item = (usize, usize)> {
    let tiles = n_tok.div_ceil(FEW_T);
    let mut t0 = 0;
    (0..tiles).map(move |tile| {
        let n = (n_tok - t0) / (tiles - tile);
        let at = t0;
        t0 += n;
        (at, n)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_tiles_cover_every_token_once_in_balanced_tiles() {
        for n_tok in 1..FEW_MAX_TOK * 2 {
            let tiles: Vec<_> = token_tiles(n_tok).collect();
            assert_eq!(tiles.len(), n_tok.div_ceil(FEW_T));
            let mut next = 0;
            for &(t0, n) in &tiles {
                assert_eq!(t0, next, "{n_tok} tokens: {tiles:?}");
                assert!((1..=FEW_T).contains(&n), "{n_tok} tokens: {tiles:?}");
                next += n;
            }
            assert_eq!(next, n_tok);
            let (lo, hi) = tiles
                .iter()
                .fold((usize::MAX, 0), |(lo, hi), &(_, n)| (lo.min(n), hi.max(n)));
            assert!(hi - lo <= 1, "{n_tok} tokens: {tiles:?}");
        }
    }
}
