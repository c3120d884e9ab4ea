//! Prefill for the compressed formats: dequantize a panel of rows to f32 once, multiply it
//! with every token.
//!
//! Why: the FP8 and 4-bit kernels decode each weight inside their register tile, so with many
//! tokens a weight is decoded again for every tile of 3–6 tokens; decoding (several ops per
//! weight) then costs more than the multiply-adds. Dequantizing [`PANEL_ROWS`] rows to f32
//! (at most 16 × 9728 × 4 bytes = 608 KiB for Qwen3-4B's widest input, which stays in L2) and
//! running the dense f32 matmul over them pays the decode once per weight per prompt chunk.
//! With one or a few tokens the fused kernels stay, since there the decode is paid once
//! anyway and the panel would only add memory traffic.
//!
//! Numerics: each weight becomes `f32(code)·scale` (FP8) or `q·s − z·s` (4-bit), one f32
//! rounding of the product, then the ordinary f32 dot product: the same class of error as the
//! fused kernels (which apply the scale to partial sums), checked by the golden tests on the
//! prompts longer than [`PANEL_MIN_TOKENS`].

use std::cell::RefCell;
use std::thread::LocalKey;

use nano_infer_simd::Kernels;

/// Runs `f` on this thread's scratch buffer `key`, grown by earlier calls and kept, so a hot
/// path allocates nothing once warm. A nested call on the same thread (a rayon task stolen
/// while this one waits) finds the buffer busy and gets a fresh one instead.
pub(crate) fn with_scratch<T: Default, R>(
    key: &'static LocalKey<RefCell<T>>,
    f: impl FnOnce(&mut T) -> R,
) -> R {
    key.with(|cell| match cell.try_borrow_mut() {
        Ok(mut scratch) => f(&mut scratch),
        Err(_) => f(&mut T::default()),
    })
}

/// Rows dequantized at once.
pub(crate) const PANEL_ROWS: usize = 16;

/// Fewest tokens for which the panel path pays off.
pub(crate) const PANEL_MIN_TOKENS: usize = 16;

thread_local! {
    /// The f32 panel of the matmul this thread is running, reused across calls.
    static PANEL: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// `out (rows, n_tok) = W[rows] · xᵀ` with `W` delivered `PANEL_ROWS` rows at a time by
/// `dequantize(r0, r1, panel)`, which fills `panel` with rows `r0..r1` (indices relative to the
/// range) as `(r1 - r0, k)` f32.
pub(crate) fn gemm_by_panels(
    kernels: Kernels,
    n_rows: usize,
    k: usize,
    x: &[f32],
    out: &mut [f32],
    mut dequantize: impl FnMut(usize, usize, &mut [f32]),
) {
    let n_tok = x.len() / k;
    with_scratch(&PANEL, |panel| {
        panel.resize(PANEL_ROWS * k, 0.0);
        let mut r0 = 0;
        while r0 < n_rows {
            let r1 = (r0 + PANEL_ROWS).min(n_rows);
            let p = &mut panel[..(r1 - r0) * k];
            dequantize(r0, r1, p);
            kernels.gemm_f32(p, x, k, &mut out[r0 * n_tok..r1 * n_tok]);
            r0 = r1;
        }
    })
}
