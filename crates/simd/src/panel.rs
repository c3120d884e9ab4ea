//! The prefill matmul: many tokens times a weight delivered as f32 blocks, BLIS style.
//!
//! Why a second matmul: the few-token kernels (`tile.rs`) keep one accumulator per (row, token)
//! pair as a vector over `k` and reload every activation from memory for each 4-row pass. With
//! a whole prompt that streams the activations (n_tok × k × 4 bytes, more than L2 for
//! `down_proj`) through the core once per 4 rows, and the kernel ran at ~40% of the FMA peak.
//! Here the activations are packed once per matmul ([`PanelActs`]: 32-token tiles, transposed so
//! that the tokens of one input are contiguous) and the weights arrive in blocks of
//! [`PANEL_K_BLOCK`] inputs as f32 (widened or dequantized by the caller, which is what lets
//! every weight format share this kernel). Each micro-kernel computes `MR rows × NV vectors of
//! tokens`: per input it loads `NV` token vectors, broadcasts `MR` weights and issues `MR·NV`
//! FMAs into registers. The token tile (`128 × 32 × 4` = 16 KiB) stays in L1 while the row
//! groups' weights stream past it from L2, and the output is read and written once per block.
//! Measured on Sapphire Rapids (one core, 96 × 2560 weights, 128 tokens): 62–70 GFLOP/s for the
//! tile kernel, 136–151 for this one, against an FMA peak of ~167.
//!
//! Numerics: every output is one sequential chain of fused multiply-adds over `j = 0..k`
//! (blocks continue the chain through `out`), on every level, so all levels, the scalar twin
//! included, return bit-identical results.

use crate::tile::Lanes;

/// Inputs per weight block: the caller delivers `W[rows, k0..k0 + PANEL_K_BLOCK]` at a time.
/// 128 keeps a 12-row weight block (6 KiB) and a 32-token activation tile (16 KiB) in L1 together,
/// and matches the 128-input scale blocks of FP8 checkpoints and AWQ's usual group size.
pub const PANEL_K_BLOCK: usize = 128;

/// Tokens per packed tile: a micro-kernel's activations for one input are one contiguous run of
/// this many floats (two AVX-512 vectors, four AVX2 or eight NEON ones).
pub(crate) const TOKEN_TILE: usize = 32;

/// Activations `x (n_tok, k)` packed for [`crate::Kernels::gemm_panel`]: cut into tiles of 32
/// tokens (the last one padded with zeros), each tile stored transposed as `(k, 32)`.
///
/// Why tiles rather than one `(k, n_tok)` transpose: a micro-kernel walks one input after the
/// other, and with the whole transpose consecutive inputs lie `n_tok · 4` bytes apart, a power
/// of two for the usual prompt lengths; such a stride maps every input to the same few L1 sets,
/// so a 16 KiB tile kept evicting itself (measured: 85–110 GFLOP/s, against 130–150 with
/// tiles). Within a tile the micro-kernel reads memory front to back.
#[derive(Clone, Debug, Default)]
pub struct PanelActs {
    /// `(tiles, k, TOKEN_TILE)`.
    pub(crate) data: Vec<f32>,
    pub(crate) k: usize,
    pub(crate) n_tok: usize,
}

impl PanelActs {
    /// An empty buffer; [`PanelActs::pack`] sizes it and reuses its memory afterwards.
    pub fn new() -> Self {
        Self::default()
    }

    /// Packs `x (n_tok, k)`. Panics unless `k > 0` divides `x.len()`.
    pub fn pack(&mut self, x: &[f32], k: usize) {
        let (data, packer) = self.start_pack(x, k);
        packer.fill(0, data);
    }

    /// Sizes the buffer for `x (n_tok, k)` and returns it, unfilled, with the [`PanelPacker`]
    /// that fills any run-aligned part of it: what a caller uses to pack on several threads
    /// (a serial pack leaves the others idle before every prefill matmul; packing on two
    /// threads made a 128-token prefill 1.00–1.04× faster in paired runs).
    /// Every float of the buffer must be filled before the activations are used. Panics unless
    /// `k > 0` divides `x.len()`.
    pub fn start_pack<'x>(&mut self, x: &'x [f32], k: usize) -> (&mut [f32], PanelPacker<'x>) {
        assert!(
            k > 0 && x.len().is_multiple_of(k),
            "PanelActs: x is not (n_tok, {k})"
        );
        let n_tok = x.len() / k;
        let tiles = n_tok.div_ceil(TOKEN_TILE);
        // Every float is written by the packer (padding included), so no clearing pass.
        self.data.resize(tiles * k * TOKEN_TILE, 0.0);
        self.k = k;
        self.n_tok = n_tok;
        (&mut self.data, PanelPacker { x, k, n_tok })
    }

    /// Inputs per token.
    pub fn k(&self) -> usize {
        self.k
    }

    /// Tokens packed.
    pub fn n_tok(&self) -> usize {
        self.n_tok
    }

    /// `x[t, j]`.
    pub fn get(&self, t: usize, j: usize) -> f32 {
        assert!(t < self.n_tok && j < self.k, "PanelActs::get out of range");
        self.data[((t / TOKEN_TILE) * self.k + j) * TOKEN_TILE + t % TOKEN_TILE]
    }
}

/// Fills the buffer of [`PanelActs::start_pack`] from `x`: any part of it made of whole runs
/// (one input's [`PANEL_TOKEN_TILE`] tokens of one tile), so that threads can fill disjoint
/// parts.
#[derive(Clone, Copy, Debug)]
pub struct PanelPacker<'x> {
    x: &'x [f32],
    k: usize,
    n_tok: usize,
}

/// Tokens per run of a packed tile: [`PanelPacker::fill`] takes parts of whole runs.
pub const PANEL_TOKEN_TILE: usize = TOKEN_TILE;

impl PanelPacker<'_> {
    /// Fills `part`, the packed buffer's floats from `offset` on; both are multiples of
    /// [`PANEL_TOKEN_TILE`] and the part lies inside the buffer.
    pub fn fill(&self, offset: usize, part: &mut [f32]) {
        let (k, n_tok) = (self.k, self.n_tok);
        assert!(
            offset.is_multiple_of(TOKEN_TILE)
                && part.len().is_multiple_of(TOKEN_TILE)
                && offset + part.len() <= n_tok.div_ceil(TOKEN_TILE) * k * TOKEN_TILE,
            "PanelPacker::fill: part {offset}+{} is not whole runs of the buffer",
            part.len()
        );
        // One input's run at a time: 32 reads down the tokens' rows (each row is read front to
        // back across the runs), one contiguous 128-byte write. Measured 3× faster than writing
        // along each token's row at stride 128 bytes.
        for (i, run) in part.chunks_exact_mut(TOKEN_TILE).enumerate() {
            let r = offset / TOKEN_TILE + i;
            let (t0, j) = ((r / k) * TOKEN_TILE, r % k);
            let nt = (n_tok - t0).min(TOKEN_TILE);
            for (t, d) in run[..nt].iter_mut().enumerate() {
                *d = self.x[(t0 + t) * k + j];
            }
            run[nt..].fill(0.0);
        }
    }
}

/// Checks a [`crate::Kernels::gemm_panel`] call and returns `rows`: `out` is `(rows, n_tok)`,
/// `w` is `(rows, PANEL_K_BLOCK)`, `kc <= PANEL_K_BLOCK` and inputs `k0..k0 + kc` exist. Every
/// level calls this before touching memory.
pub(crate) fn panel_shape(w: &[f32], x: &PanelActs, k0: usize, kc: usize, out: &[f32]) -> usize {
    let n_tok = x.n_tok;
    assert!(n_tok > 0, "gemm_panel: no tokens packed");
    assert!(
        out.len().is_multiple_of(n_tok),
        "gemm_panel: out is not (rows, n_tok = {n_tok})"
    );
    let rows = out.len() / n_tok;
    assert_eq!(
        w.len(),
        rows * PANEL_K_BLOCK,
        "gemm_panel: w is not (rows = {rows}, {PANEL_K_BLOCK})"
    );
    assert!(
        kc <= PANEL_K_BLOCK && k0.checked_add(kc).is_some_and(|end| end <= x.k),
        "gemm_panel: inputs {k0}..{k0}+{kc} exceed k = {} or the block",
        x.k
    );
    rows
}

/// The vector levels' driver: for each 32-token tile, row groups of `MR` (then 8, 4, 2, 1 for
/// the rest), each over the tile in sub-tiles of `NV` vectors (then single vectors, the last one
/// partial). Tiles outside, rows inside: the tile's activations (`kc × 128` bytes) stay in L1
/// while the row groups' weights stream past them from L2.
///
/// # Safety
/// `panel_shape` accepted `(w, x, k0, kc, out)` and returned `rows`, and the CPU has the level
/// of `L`.
#[inline(always)]
pub(crate) unsafe fn gemm_panel<L: Lanes, const MR: usize, const NV: usize>(
    w: &[f32],
    x: &PanelActs,
    k0: usize,
    kc: usize,
    rows: usize,
    out: &mut [f32],
    accumulate: bool,
) {
    debug_assert!(TOKEN_TILE.is_multiple_of(NV * L::N));
    for t0 in (0..x.n_tok).step_by(TOKEN_TILE) {
        let blk = Block {
            w: w.as_ptr(),
            kc,
            x: x.data[((t0 / TOKEN_TILE) * x.k + k0) * TOKEN_TILE..].as_ptr(),
            out: out.as_mut_ptr(),
            n_tok: x.n_tok,
            accumulate,
        };
        let mut r = 0;
        // SAFETY (every call): rows r..r+m exist, the rest is this function's contract.
        while r + MR <= rows {
            unsafe { row_group::<L, MR, NV>(&blk, r, t0) };
            r += MR;
        }
        while r < rows {
            let left = rows - r;
            let m = if MR > 8 && left >= 8 {
                unsafe { row_group::<L, 8, NV>(&blk, r, t0) };
                8
            } else if MR > 4 && left >= 4 {
                unsafe { row_group::<L, 4, NV>(&blk, r, t0) };
                4
            } else if left >= 2 {
                unsafe { row_group::<L, 2, NV>(&blk, r, t0) };
                2
            } else {
                unsafe { row_group::<L, 1, NV>(&blk, r, t0) };
                1
            };
            r += m;
        }
    }
}

/// One call's operands for one token tile, as raw pointers (checked by `panel_shape`).
struct Block {
    /// `(rows, PANEL_K_BLOCK)` weights, the first `kc` columns used.
    w: *const f32,
    kc: usize,
    /// The tile's packed activations from input `k0` on: `(kc, TOKEN_TILE)`.
    x: *const f32,
    /// `(rows, n_tok)` outputs.
    out: *mut f32,
    n_tok: usize,
    accumulate: bool,
}

/// Rows `r0..r0+MR` times the token tile starting at `t0`.
#[inline(always)]
unsafe fn row_group<L: Lanes, const MR: usize, const NV: usize>(b: &Block, r0: usize, t0: usize) {
    let n = L::N;
    let valid = (b.n_tok - t0).min(TOKEN_TILE);
    let mut sub = 0;
    // SAFETY (every call): rows r0..r0+MR exist; tokens t0+sub.. exist for `valid - sub` and
    // the tile holds NV·n (or n) floats from sub on.
    while sub + NV * n <= valid {
        unsafe { micro::<L, MR, NV>(b, r0, t0, sub, NV * n) };
        sub += NV * n;
    }
    while sub < valid {
        unsafe { micro::<L, MR, 1>(b, r0, t0, sub, (valid - sub).min(n)) };
        sub += n;
    }
}

/// `out[r0..r0+MR, t0+sub..][..valid] (+)= W[r0..r0+MR, :] · x[:, t0+sub..]ᵀ` over the block's
/// `kc` inputs, with `MR × NV` vector accumulators.
///
/// # Safety
/// Rows `r0..r0+MR` and tokens `t0+sub..t0+sub+valid` exist, `valid <= NV·N`,
/// `sub + NV·N <= TOKEN_TILE`.
#[inline(always)]
#[allow(clippy::needless_range_loop)] // index loops over the register tile read clearer here
unsafe fn micro<L: Lanes, const MR: usize, const NV: usize>(
    b: &Block,
    r0: usize,
    t0: usize,
    sub: usize,
    valid: usize,
) {
    let n = L::N;
    let t = t0 + sub;
    // SAFETY: the CPU has the level (caller's contract).
    let zero = unsafe { L::zero() };
    let mut acc = [[zero; NV]; MR];
    let full = valid == NV * n;
    if b.accumulate {
        for i in 0..MR {
            for v in 0..NV {
                // SAFETY: row r0+i and the tokens loaded exist (full) or are copied (partial).
                acc[i][v] = unsafe { load_out::<L>(b, r0 + i, t + v * n, valid - v * n, full) };
            }
        }
    }
    // The rows lie PANEL_K_BLOCK floats apart, a constant: every broadcast below addresses one
    // pointer plus an immediate offset, which keeps integer work off the FMA ports.
    // SAFETY: row r0 of the (rows, PANEL_K_BLOCK) block exists.
    let wp = unsafe { b.w.add(r0 * PANEL_K_BLOCK) };
    // SAFETY: input 0 of the block, tokens sub..: inside the tile.
    let mut xp = unsafe { b.x.add(sub) };
    for j in 0..b.kc {
        let mut xv = [zero; NV];
        for v in 0..NV {
            // SAFETY: input j < kc, floats sub+v·n..+n are inside the tile's run.
            xv[v] = unsafe { L::load(xp.add(v * n)) };
        }
        for i in 0..MR {
            // SAFETY: j < kc inside row r0+i; the CPU has the level.
            let wv = unsafe { L::splat(*wp.add(i * PANEL_K_BLOCK + j)) };
            for v in 0..NV {
                // SAFETY: the CPU has the level.
                acc[i][v] = unsafe { L::fma(wv, xv[v], acc[i][v]) };
            }
        }
        // SAFETY: the next input's run (never read past the block's last input).
        xp = unsafe { xp.add(TOKEN_TILE) };
    }
    for i in 0..MR {
        for v in 0..NV {
            // SAFETY: as for the loads above.
            unsafe { store_out::<L>(b, r0 + i, t + v * n, acc[i][v], valid - v * n, full) };
        }
    }
}
/// Loads `out[r, t..t+min(valid, N)]`, zeros past `valid`.
#[inline(always)]
unsafe fn load_out<L: Lanes>(b: &Block, r: usize, t: usize, valid: usize, full: bool) -> L::V {
    // SAFETY: caller's contract: row r and tokens t.. exist.
    let p = unsafe { b.out.add(r * b.n_tok + t) };
    if full {
        // SAFETY: N outputs from p are inside out.
        return unsafe { L::load(p) };
    }
    let mut tmp = [0f32; 16];
    // SAFETY: min(valid, N) outputs from p are inside out; tmp holds N ≤ 16.
    unsafe {
        core::ptr::copy_nonoverlapping(p, tmp.as_mut_ptr(), valid.min(L::N));
        L::load(tmp.as_ptr())
    }
}

/// Stores the first `min(valid, N)` lanes of `v` to `out[r, t..]`.
#[inline(always)]
unsafe fn store_out<L: Lanes>(b: &Block, r: usize, t: usize, v: L::V, valid: usize, full: bool) {
    // SAFETY: caller's contract: row r and tokens t.. exist.
    let p = unsafe { b.out.add(r * b.n_tok + t) };
    if full {
        // SAFETY: N outputs from p are inside out.
        return unsafe { L::store(p, v) };
    }
    let mut tmp = [0f32; 16];
    // SAFETY: tmp holds N ≤ 16; min(valid, N) outputs from p are inside out.
    unsafe {
        L::store(tmp.as_mut_ptr(), v);
        core::ptr::copy_nonoverlapping(tmp.as_ptr(), p, valid.min(L::N));
    }
}
