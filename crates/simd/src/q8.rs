//! Integer-dot matmuls: weights in row-interleaved int4 / int8 tiles, activations quantized to
//! int8 once per matmul.
//!
//! Why: at decode the f32-activation kernels for 4-bit weights are compute-bound (unpack, convert,
//! FMA per weight); an integer dot (`vpdpbusd`, or `vpmaddubsw` + `vpmaddwd`) does 4 multiply-adds
//! per 32-bit lane in one instruction, so the kernel goes back to being bandwidth-bound.
//!
//! **Activations** ([`Q8Acts`], built by [`Q8Acts::quantize`]): each token's `x` is cut into blocks
//! of `block` (8, 16 or 32) inputs; block `b` gets `sx_b = absmax/127` and codes
//! `xq = round_ties_even(x/sx_b)` in −127..=127 (relative error ≤ 2⁻⁸ of the block's absmax per
//! element). Per block we also keep `Σ xq` (`isum`), and per weight group `g` (of `group` inputs,
//! a multiple of `block`) `gsum_g = Σ_{b∈g} sx_b·isum_b` in f32, the activation sum the zero points
//! multiply.
//!
//! **Weights**, tiles of [`TILE_ROWS`] = 16 rows; the last tile is padded with zero rows (zero
//! codes, zero scales). Within a tile, inputs come in chunks and each chunk is 64 bytes: row `i`
//! owns bytes `4i..4i+4`, so one 512-bit load feeds 16 rows and one 32-bit lane of the integer
//! dot *is* one row (no horizontal sums; ggml's `block_q4_0x8` idea, 16 rows wide). AVX2 reads the
//! same chunk as two 256-bit halves (rows 0–7, rows 8–15).
//!
//! - **q4x16** (`(tiles, k/8, 16, 4)` bytes, 4 bits per weight): a chunk is 8 inputs; byte `j` of
//!   row `i` holds input `8c + j` in its low nibble and `8c + 4 + j` in its high one, so
//!   `v & 15` and `(v >> 4) & 15` are the two 4-input halves as unsigned bytes. Parameters
//!   `scales` and `zero_scaled` (= z·s) are `(tiles, k/group, 16)` f32, one vector load per group.
//! - **q8x16** (`(tiles, k/4, 16, 4)` signed bytes, 8 bits per weight): a chunk is 4 inputs;
//!   `scales` is `(tiles·16)` f32, one per row (symmetric: `w = q·s`).
//!
//! **The exact algorithm** every level computes, per row `r` and token `t` (the scalar twin in
//! this file is its definition; `fma` is a fused multiply-add):
//!
//! ```text
//! q4x16:  acc = 0
//!         for each group g:  ga = 0
//!             for each block b in g:  ga = fma(f32(Σ_{j∈b} q·xq), sx_b, ga)     (exact integer dot)
//!             acc = fma(s_g, ga, acc);  acc = fma(−zs_g, gsum_g, acc)
//! q8x16:  acc = 0;  for each block b: acc = fma(f32(Σ_{j∈b} q·xq), sx_b, acc);  out = acc·s
//! ```
//!
//! The integer dots are exact in every order and the float steps are the same operations in the
//! same order per lane, so every level returns bit-identical results to the scalar twin.

/// Rows per interleaved tile.
pub const TILE_ROWS: usize = 16;
/// Bytes per chunk of a tile (16 rows × 4 bytes).
pub const CHUNK_BYTES: usize = 64;

/// How far ahead of the chunk being read the x86 tile kernels prefetch: 64 chunks, ~4 KB.
///
/// A decode-time tile pass is one sequential read, yet without software prefetch the int8
/// GEMVs ran at 55–70% of the bf16 GEMV's memory rate (2 threads, ~1 GB of Qwen3-4B-shaped
/// weights, so every byte comes from DRAM): the stream prefetcher did not run far enough ahead
/// of kernels this light. Prefetching 2–6 KB ahead brought q4x16 to 85–100% of it and q8x16
/// above it (the bf16 GEMV prefetches only one 4-row pass ahead); 4 KB sits in the middle of
/// that plateau on both AVX2 and AVX-512. In prefill the tile is already in L1/L2 after the
/// first pass, and the hint costs one load-port slot per chunk.
#[cfg(target_arch = "x86_64")]
pub(crate) const PREFETCH_AHEAD: usize = 4096;

/// Prefetches the line [`PREFETCH_AHEAD`] bytes past chunk `c` of the tile at `tile`; past
/// the tile's end that is the next tile, or nothing (a prefetch never faults).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
pub(crate) fn prefetch_ahead<T>(tile: *const T, c: usize) {
    use core::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
    let at = tile
        .cast::<u8>()
        .wrapping_add(c * CHUNK_BYTES + PREFETCH_AHEAD);
    // SAFETY: SSE is part of x86_64; a prefetch reads nothing architecturally and never faults,
    // whatever the address.
    unsafe { _mm_prefetch::<_MM_HINT_T0>(at.cast()) }
}

/// Activations `(n_tok, k)` quantized to int8 in blocks: see the module docs.
#[derive(Clone, Debug, Default)]
pub struct Q8Acts {
    /// `(n_tok, k)` codes in −127..=127.
    pub(crate) xq: Vec<i8>,
    /// `(n_tok, k/block)` block scales.
    pub(crate) xs: Vec<f32>,
    /// `(n_tok, k/block)` code sums.
    pub(crate) isum: Vec<i32>,
    /// `(n_tok, k/group)` `Σ sx_b·isum_b` over the blocks of each group.
    pub(crate) gsum: Vec<f32>,
    pub(crate) k: usize,
    pub(crate) n_tok: usize,
    pub(crate) block: usize,
    pub(crate) group: usize,
}

impl Q8Acts {
    /// An empty buffer; [`Q8Acts::quantize`] sizes it (and reuses its memory afterwards).
    pub fn new() -> Self {
        Self::default()
    }

    /// Quantizes `x (n_tok, k)` in blocks of `block` inputs, with group sums over `group`.
    ///
    /// Panics unless `block` is 8, 16 or 32, `group` is a multiple of `block` and `k` of `group`.
    /// An infinite input gives an infinite block scale (NaN outputs downstream) and NaN inputs
    /// quantize to 0; never a panic.
    pub fn quantize(&mut self, x: &[f32], k: usize, block: usize, group: usize) {
        self.quantize_by(x, k, block, group, crate::scalar::quantize_q8);
    }

    /// [`Q8Acts::quantize`] with the blocks quantized by `blocks` (the scalar twin or a vector
    /// level's `quantize_q8`, which return the same bits); the group sums are computed here.
    pub(crate) fn quantize_by(
        &mut self,
        x: &[f32],
        k: usize,
        block: usize,
        group: usize,
        blocks_fn: impl FnOnce(&[f32], usize, &mut [i8], &mut [f32], &mut [i32]),
    ) {
        assert!(
            matches!(block, 8 | 16 | 32),
            "Q8Acts: block {block} is not 8, 16 or 32"
        );
        assert!(
            group > 0 && group.is_multiple_of(block) && k > 0 && k.is_multiple_of(group),
            "Q8Acts: group {group} must be a multiple of block {block} and divide k {k}"
        );
        assert!(x.len().is_multiple_of(k), "Q8Acts: x is not (n_tok, {k})");
        let n_tok = x.len() / k;
        let (blocks, groups) = (k / block, k / group);
        self.xq.resize(n_tok * k, 0);
        self.xs.resize(n_tok * blocks, 0.0);
        self.isum.resize(n_tok * blocks, 0);
        self.gsum.resize(n_tok * groups, 0.0);
        blocks_fn(x, block, &mut self.xq, &mut self.xs, &mut self.isum);
        let per_group = group / block;
        for (g, gs) in self.gsum.iter_mut().enumerate() {
            let b0 = g * per_group;
            *gs = (b0..b0 + per_group).fold(0.0f32, |acc, b| {
                (self.isum[b] as f32).mul_add(self.xs[b], acc)
            });
        }
        self.k = k;
        self.n_tok = n_tok;
        self.block = block;
        self.group = group;
    }

    /// Tokens held.
    pub fn n_tok(&self) -> usize {
        self.n_tok
    }

    /// Inputs per token.
    pub fn k(&self) -> usize {
        self.k
    }

    /// Inputs per quantization block.
    pub fn block(&self) -> usize {
        self.block
    }

    /// Inputs per group sum.
    pub fn group(&self) -> usize {
        self.group
    }

    /// `(n_tok, k)` codes.
    pub fn codes(&self) -> &[i8] {
        &self.xq
    }

    /// `(n_tok, k/block)` block scales.
    pub fn scales(&self) -> &[f32] {
        &self.xs
    }
}

/// The activation block to use with weight groups of `group` inputs: 32 when it divides the
/// group, else 16 or 8; `None` when `group` is not a multiple of 8 (use the f32 kernels then).
pub fn q8_block_for_group(group: usize) -> Option<usize> {
    [32, 16, 8]
        .into_iter()
        .find(|b| group > 0 && group.is_multiple_of(*b))
}

/// Number of tiles for `rows` rows.
pub fn tiles(rows: usize) -> usize {
    rows.div_ceil(TILE_ROWS)
}

/// Packs 4-bit codes `(rows, k)` (one code per byte, each < 16) into the q4x16 layout; `k` must
/// be a multiple of 8. Also used for the `(rows, k/group)` parameters through [`tile_params`].
pub fn pack_q4x16(codes: &[u8], rows: usize, k: usize) -> Vec<u8> {
    assert!(
        k.is_multiple_of(8) && codes.len() == rows * k,
        "pack_q4x16: codes is not (rows, k) with k a multiple of 8"
    );
    let chunks = k / 8;
    let mut out = vec![0u8; tiles(rows) * chunks * CHUNK_BYTES];
    for r in 0..rows {
        let (t, i) = (r / TILE_ROWS, r % TILE_ROWS);
        for c in 0..chunks {
            let base = (t * chunks + c) * CHUNK_BYTES + 4 * i;
            for j in 0..4 {
                let lo = codes[r * k + 8 * c + j];
                let hi = codes[r * k + 8 * c + 4 + j];
                assert!(lo < 16 && hi < 16, "pack_q4x16: code does not fit 4 bits");
                out[base + j] = lo | hi << 4;
            }
        }
    }
    out
}

/// Packs int8 codes `(rows, k)` into the q8x16 layout; `k` must be a multiple of 4.
pub fn pack_q8x16(codes: &[i8], rows: usize, k: usize) -> Vec<i8> {
    assert!(
        k.is_multiple_of(4) && codes.len() == rows * k,
        "pack_q8x16: codes is not (rows, k) with k a multiple of 4"
    );
    let chunks = k / 4;
    let mut out = vec![0i8; tiles(rows) * chunks * CHUNK_BYTES];
    for r in 0..rows {
        let (t, i) = (r / TILE_ROWS, r % TILE_ROWS);
        for c in 0..chunks {
            let base = (t * chunks + c) * CHUNK_BYTES + 4 * i;
            out[base..base + 4].copy_from_slice(&codes[r * k + 4 * c..r * k + 4 * c + 4]);
        }
    }
    out
}

/// Reorders per-(row, group) parameters `(rows, groups)` into `(tiles, groups, 16)`, padding
/// with zeros.
pub fn tile_params(p: &[f32], rows: usize, groups: usize) -> Vec<f32> {
    assert_eq!(
        p.len(),
        rows * groups,
        "tile_params: p is not (rows, groups)"
    );
    let mut out = vec![0f32; tiles(rows) * groups * TILE_ROWS];
    for r in 0..rows {
        let (t, i) = (r / TILE_ROWS, r % TILE_ROWS);
        for g in 0..groups {
            out[(t * groups + g) * TILE_ROWS + i] = p[r * groups + g];
        }
    }
    out
}

/// Shape checks of [`crate::Kernels::gemm_q4x16_q8`]; returns `(rows, tiles, groups)`.
pub(crate) fn q4x16_shape(
    w: &[u8],
    scales: &[f32],
    zero_scaled: &[f32],
    group: usize,
    x: &Q8Acts,
    out: &[f32],
) -> (usize, usize, usize) {
    assert_eq!(
        x.group, group,
        "gemm_q4x16_q8: x was quantized for another group"
    );
    let (rows, n_tiles) = q8_shape_check(x, out.len(), w.len(), x.k / 8);
    let groups = x.k / group;
    assert!(
        scales.len() == n_tiles * groups * TILE_ROWS
            && zero_scaled.len() == n_tiles * groups * TILE_ROWS,
        "gemm_q4x16_q8: scales/zero_scaled are not (tiles, k/group, 16)"
    );
    (rows, n_tiles, groups)
}

/// Shape checks of [`crate::Kernels::gemm_q8x16_q8`]; returns `(rows, tiles)`.
pub(crate) fn q8x16_shape(w: &[i8], scales: &[f32], x: &Q8Acts, out: &[f32]) -> (usize, usize) {
    let (rows, n_tiles) = q8_shape_check(x, out.len(), w.len(), x.k / 4);
    assert_eq!(
        scales.len(),
        n_tiles * TILE_ROWS,
        "gemm_q8x16_q8: scales is not (tiles·16)"
    );
    (rows, n_tiles)
}

/// Checks `w` is whole tiles of `chunks` chunks and `out` is `(rows, n_tok)` with `rows` in the
/// last tile; returns `(rows, tiles)`.
fn q8_shape_check(x: &Q8Acts, out_len: usize, w_len: usize, chunks: usize) -> (usize, usize) {
    assert!(x.k > 0, "integer gemm: x was never quantized");
    let tile_bytes = chunks * CHUNK_BYTES;
    assert!(
        w_len.is_multiple_of(tile_bytes),
        "integer gemm: w is not whole tiles of k = {}",
        x.k
    );
    let n_tiles = w_len / tile_bytes;
    if x.n_tok == 0 {
        assert_eq!(out_len, 0, "integer gemm: out is not (rows, 0)");
        return (0, n_tiles);
    }
    assert!(
        out_len.is_multiple_of(x.n_tok),
        "integer gemm: out is not (rows, n_tok)"
    );
    let rows = out_len / x.n_tok;
    assert_eq!(
        tiles(rows),
        n_tiles,
        "integer gemm: w has {n_tiles} tiles for {rows} rows"
    );
    (rows, n_tiles)
}

/// Writes a tile pass's results `res[t][i]` (token `t0 + t`, row `r0 + i`, the first `live` rows)
/// into `out (rows, n_tok)`: row by row, so each row's tokens are one contiguous store run.
pub(crate) fn store_tile_result(
    res: &[[f32; TILE_ROWS]],
    live: usize,
    out: &mut [f32],
    n_tok: usize,
    r0: usize,
    t0: usize,
) {
    for i in 0..live {
        let at = (r0 + i) * n_tok + t0;
        for (o, lanes) in out[at..at + res.len()].iter_mut().zip(res) {
            *o = lanes[i];
        }
    }
}

/// Shape checks of [`crate::Kernels::quantize_q8`]'s block kernels.
pub(crate) fn quantize_shape(x: &[f32], block: usize, xq: &[i8], xs: &[f32], isum: &[i32]) {
    assert!(
        matches!(block, 8 | 16 | 32) && x.len().is_multiple_of(block),
        "quantize_q8: x is not whole blocks of 8, 16 or 32"
    );
    assert!(
        xq.len() == x.len() && xs.len() == x.len() / block && isum.len() == xs.len(),
        "quantize_q8: xq is not x's length or xs/isum not one per block"
    );
}
