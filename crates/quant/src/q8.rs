//! An int8 copy of a weight (`--lm-head q8`): symmetric per-row quantization of any [`Linear`],
//! in the q8x16 tiles of [`Kernels::gemm_q8x16_q8`], multiplied with int8-quantized activations.
//!
//! `q = round(w / s)` with `s = absmax(row)/127`, so each weight moves by at most `s/2` (relative
//! 2⁻⁸ of the row's largest weight). 8 bits per weight + 32 bits per row: half of BF16's bytes,
//! which for a tied 151936 × 2560 lm_head (778 MB, ~30% of an AWQ 4B token's reads) is the point.
//! Built at load from the layer's own dequantization, in parallel over tiles.

use crate::Linear;
use nano_infer_simd::{q8, Kernels, Q8Acts};
use rayon::prelude::*;

/// An int8 weight `(rows, k)` with one f32 scale per row, in q8x16 tiles.
#[derive(Clone, Debug)]
pub struct Q8Weight {
    /// `(tiles, k/4, 16, 4)`.
    packed: Vec<i8>,
    /// `(tiles·16)`, zero on padding rows.
    scales: Vec<f32>,
    rows: usize,
    k: usize,
    block: usize,
}

impl Q8Weight {
    /// Quantizes `linear`, or `None` when its `in_features` is not a multiple of 8 (no int8
    /// activation block fits).
    pub fn quantize(linear: &Linear) -> Option<Self> {
        let (rows, k) = (linear.out_features(), linear.in_features());
        let block = q8::q8_block_for_group(k)?;
        let tile_bytes = k / 4 * q8::CHUNK_BYTES;
        let mut packed = vec![0i8; q8::tiles(rows) * tile_bytes];
        let mut scales = vec![0f32; q8::tiles(rows) * q8::TILE_ROWS];
        packed
            .par_chunks_mut(tile_bytes)
            .zip(scales.par_chunks_mut(q8::TILE_ROWS))
            .enumerate()
            .for_each(|(t, (tile, ts))| {
                let mut row = vec![0f32; k];
                for (i, s) in ts.iter_mut().enumerate().take(rows - t * q8::TILE_ROWS) {
                    linear.dequantize_row(t * q8::TILE_ROWS + i, &mut row);
                    let amax = row.iter().fold(0f32, |m, v| m.max(v.abs()));
                    *s = amax / 127.0;
                    let inv = if amax > 0.0 { 127.0 / amax } else { 0.0 };
                    for (j, v) in row.iter().enumerate() {
                        tile[(j / 4) * q8::CHUNK_BYTES + 4 * i + j % 4] =
                            (v * inv).round().clamp(-127.0, 127.0) as i8;
                    }
                }
            });
        Some(Self {
            packed,
            scales,
            rows,
            k,
            block,
        })
    }

    /// Output features (rows of the `(rows, k)` weight).
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Input features.
    pub fn k(&self) -> usize {
        self.k
    }

    /// The int8 activation block the kernel reads.
    pub(crate) fn q8_block(&self) -> usize {
        self.block
    }

    /// Bytes resident and read per forward pass.
    pub fn weight_bytes(&self) -> usize {
        self.packed.len() + 4 * self.scales.len()
    }

    /// Row `r` as f32: `q·s`.
    pub fn dequantize_row(&self, r: usize, out: &mut [f32]) {
        let (t, i) = (r / q8::TILE_ROWS, r % q8::TILE_ROWS);
        let tile = &self.packed[t * self.k / 4 * q8::CHUNK_BYTES..];
        for (j, o) in out[..self.k].iter_mut().enumerate() {
            *o = tile[(j / 4) * q8::CHUNK_BYTES + 4 * i + j % 4] as f32 * self.scales[r];
        }
    }

    /// `out (rows_range, n_tok) = W[rows_range] · xqᵀ`; `rows.start` is a multiple of 16.
    pub(crate) fn gemm_rows(
        &self,
        kernels: Kernels,
        rows: std::ops::Range<usize>,
        xq: &Q8Acts,
        out: &mut [f32],
    ) {
        assert!(
            rows.start.is_multiple_of(q8::TILE_ROWS),
            "Q8Weight: row ranges start at tile boundaries"
        );
        let (t0, t1) = (rows.start / q8::TILE_ROWS, rows.end.div_ceil(q8::TILE_ROWS));
        let tile_bytes = self.k / 4 * q8::CHUNK_BYTES;
        kernels.gemm_q8x16_q8(
            &self.packed[t0 * tile_bytes..t1 * tile_bytes],
            &self.scales[t0 * q8::TILE_ROWS..t1 * q8::TILE_ROWS],
            xq,
            out,
        )
    }
}
