//! Prefill for every format: widen or dequantize the weights to f32 one block of
//! [`PANEL_K_BLOCK`] inputs at a time and run the packed f32 matmul
//! ([`Kernels::gemm_panel`]) over the whole prompt.
//!
//! Why: with many tokens the matmul is compute-bound, and the register-tiled kernels that suit
//! decode (each weight decoded inside a 4-row × 6-token tile, every activation reloaded per
//! 4-row pass) reached ~40% of the FMA peak. Decoding a task's rows for 128 inputs into an f32
//! block (at most 96 × 128 × 4 = 48 KiB, which stays in L2) pays each weight's decode once per
//! prompt chunk, whatever the format, and the panel kernel then keeps its operands in L1. With
//! one or a few tokens the fused kernels stay, since there the decode is paid once anyway and
//! the block would only add memory traffic.
//!
//! Numerics: each weight becomes the f32 the format defines (bf16/f16 widen exactly,
//! `f32(code)·scale` for FP8, `q·s − z·s` for 4-bit: one f32 rounding), then one fused
//! multiply-add chain per output over the inputs in order; checked by the golden tests on the
//! prompts longer than [`PANEL_MIN_TOKENS`].

use std::cell::RefCell;
use std::thread::LocalKey;

use nano_infer_simd::{Kernels, PanelActs, PANEL_K_BLOCK, PANEL_TOKEN_TILE};
use nano_infer_team::Team;

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

/// Fewest tokens for which the panel path pays off.
pub(crate) const PANEL_MIN_TOKENS: usize = 16;

/// Output rows handed to one team task on the panel path: a multiple of the micro-kernels'
/// row groups (12 on AVX-512, 6 on AVX2 and NEON), so only a projection's last task has a tail.
pub(crate) const PANEL_ROWS_PER_TASK: usize = 96;

/// Runs (one input's 32 tokens) a team task packs: 32 KiB of writes, 40 tasks for a
/// 128-token, 2560-input prompt.
const PACK_RUNS_PER_TASK: usize = 256;

/// `acts.pack(x, k)` on the thread team. Serial, the pack of a prompt chunk left the other
/// threads idle before every prefill matmul.
pub(crate) fn pack(acts: &mut PanelActs, x: &[f32], k: usize) {
    let (data, packer) = acts.start_pack(x, k);
    let chunk = PACK_RUNS_PER_TASK * PANEL_TOKEN_TILE;
    Team::current().for_each_chunk_mut(data, chunk, |i, part| packer.fill(i * chunk, part));
}

thread_local! {
    /// The f32 weight block of the matmul this thread is running, reused across calls.
    static BLOCK: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// `out (n_rows, n_tok) = W · xᵀ` for packed activations `x`, with `W` delivered one block of
/// inputs at a time by `dequantize(k0, k1, block)`, which fills `block`, `(n_rows,
/// PANEL_K_BLOCK)` f32, with `W[.., k0..k1]` in the first `k1 - k0` columns of each row.
pub(crate) fn gemm_by_blocks(
    kernels: Kernels,
    x: &PanelActs,
    n_rows: usize,
    out: &mut [f32],
    mut dequantize: impl FnMut(usize, usize, &mut [f32]),
) {
    let k = x.k();
    with_scratch(&BLOCK, |block| {
        block.resize(n_rows * PANEL_K_BLOCK, 0.0);
        let mut k0 = 0;
        while k0 < k {
            let k1 = (k0 + PANEL_K_BLOCK).min(k);
            dequantize(k0, k1, block);
            kernels.gemm_panel(block, x, k0, k1 - k0, out, k0 > 0);
            k0 = k1;
        }
    })
}
