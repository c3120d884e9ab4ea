//! AutoAWQ GEMM int4 weights, repacked once at load into the row-major nibble layout of
//! [`Kernels::gemm_q4`] (f32 activations) or the 16-row interleaved tiles of
//! [`Kernels::gemm_q4x16_q8`] (int8 activations, [`AwqActivations::Int8`]).
//!
//! Stored (AutoAWQ `version: gemm`, group size G):
//!
//! | tensor    | dtype | shape             | content                                            |
//! |-----------|-------|-------------------|----------------------------------------------------|
//! | `qweight` | I32   | `(in, out/8)`     | 8 nibbles per word, transposed (input-major)       |
//! | `qzeros`  | I32   | `(in/G, out/8)`   | zero points, same packing                          |
//! | `scales`  | F16   | `(in/G, out)`     | one scale per (group, output)                      |
//!
//! Nibble `i` of a word (`(word >> 4i) & 15`) holds column `8c + AWQ_ORDER[i]`; then
//! `W[o, i] = (q[i, o] − z[i/G, o]) · s[i/G, o]`, transposed to PyTorch's `(out, in)`.
//!
//! Repacked ([`AwqWeight`], what `gemm_q4` reads): `packed` `(out, in/2)` bytes with input `2j` in
//! the low nibble of byte `j` and `2j+1` in the high one; `scales` and `zero_scaled` (= z·s)
//! `(out, in/G)` f32. `q·s − z·s` equals the reference `(q − z)·s` exactly: z ≤ 15 times an F16
//! scale needs at most 15 significant bits, so both products and their difference are exact in
//! f32.
//!
//! Tiled ([`AwqActivations::Int8`]): the same codes and parameters reordered into
//! `nano_infer_simd::q8`'s q4x16 tiles (16 rows interleaved per 64-byte chunk, parameters
//! `(tiles, k/G, 16)`), converted from the row-major copy in parallel over tiles; same size.
//!
//! Memory: the repacked copy *replaces* the mapped tensors (they are dropped after the repack, so
//! their page-cache pages can be evicted): 4 bits per weight plus 64 bits of scale and zero·scale
//! per group of G, i.e. 4 + 64/G bits per weight — 4.5 at G = 128, 5.0 at G = 64 — against the
//! file's 4 + 20/G (4.16 / 4.31). The f32 pairs are what `gemm_q4` takes; halving them to f16
//! would be a simd API change. The repack runs once, in parallel over groups of 8 output rows.
//!
//! Cache: the repacked buffers are what an AWQ cache file holds (`awq_cache`); a load that finds
//! a valid one maps them ([`AwqWeight`] over mapped tensors) and repacks nothing.
//!
//! Streaming: a layer that a memory budget streams is opened first ([`AwqSource`], whose
//! [`AwqSource::weight_bytes`] is the repacked size, so the budget is planned before any copy
//! exists), repacked, and moved to a `nano_infer_tensor::SpillFile` ([`AwqWeight::spill`]): the
//! kernels then read the same bytes from a file mapping that the budget pages out and back in
//! like any checkpoint tensor, in the exact layout above.

use crate::{QuantError, Result};
use nano_infer_simd::{bf16, f16, q8, Kernels, Q8Acts, PANEL_K_BLOCK};
use nano_infer_tensor::{Dtype, Element, SpillFile, Tensor, WeightStore};
use rayon::prelude::*;

/// Bits per AWQ code.
pub const AWQ_BITS: usize = 4;
/// Codes per packed `i32`.
pub const AWQ_PACK: usize = 8;
/// `AWQ_ORDER[i]` is the column (within a group of 8) that nibble `i` holds.
pub const AWQ_ORDER: [usize; AWQ_PACK] = [0, 2, 4, 6, 1, 3, 5, 7];
/// The inverse permutation: column `j` lives in nibble `AWQ_INVERSE[j]`.
const AWQ_INVERSE: [usize; AWQ_PACK] = [0, 4, 1, 5, 2, 6, 3, 7];

const _: () = assert!(AWQ_BITS * AWQ_PACK == 32, "eight int4 codes fill one i32");
const _: () = {
    let mut i = 0;
    while i < AWQ_PACK {
        assert!(
            AWQ_INVERSE[AWQ_ORDER[i]] == i,
            "AWQ_INVERSE inverts AWQ_ORDER"
        );
        i += 1;
    }
};

/// Unpacks AutoAWQ words `(rows, cols/8)` into codes `(rows, cols)` in natural column order.
/// Works for `qweight` (rows = in) and `qzeros` (rows = in/G).
pub fn awq_unpack(packed: &[i32], cols: usize) -> Vec<u8> {
    assert!(
        cols.is_multiple_of(AWQ_PACK),
        "awq_unpack: cols {cols} is not a multiple of 8"
    );
    assert!(
        cols == 0 || packed.len().is_multiple_of(cols / AWQ_PACK),
        "awq_unpack: packed is not (rows, cols/8)"
    );
    let mut out = vec![0u8; packed.len() * AWQ_PACK];
    for (word, codes) in packed.iter().zip(out.chunks_exact_mut(AWQ_PACK)) {
        for (i, &col) in AWQ_ORDER.iter().enumerate() {
            codes[col] = ((*word as u32 >> (AWQ_BITS * i)) & 15) as u8;
        }
    }
    out
}

/// Packs codes `(rows, cols)` (each < 16) into AutoAWQ words `(rows, cols/8)`; the inverse of
/// [`awq_unpack`].
pub fn awq_pack(codes: &[u8], cols: usize) -> Vec<i32> {
    assert!(
        cols.is_multiple_of(AWQ_PACK),
        "awq_pack: cols {cols} is not a multiple of 8"
    );
    assert!(
        codes.len().is_multiple_of(AWQ_PACK),
        "awq_pack: codes is not (rows, cols)"
    );
    codes
        .chunks_exact(AWQ_PACK)
        .map(|c| {
            let word = AWQ_ORDER.iter().enumerate().fold(0u32, |acc, (i, &col)| {
                assert!(c[col] < 16, "awq_pack: code {} does not fit 4 bits", c[col]);
                acc | (c[col] as u32) << (AWQ_BITS * i)
            });
            word as i32
        })
        .collect()
}

/// Which activations an AWQ layer's matmul multiplies its int4 weights with; it decides the
/// layout the weights are repacked into at load.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum AwqActivations {
    /// f32 activations, [`Kernels::gemm_q4`] on row-major nibbles: equals the reference
    /// `x · ((q − z)·s)ᵀ` up to summation order.
    #[default]
    F32,
    /// Activations quantized to int8 once per matmul (blocks of 32), integer dot products on
    /// 16-row interleaved tiles ([`Kernels::gemm_q4x16_q8`]): ~2–3× faster at decode, and each
    /// activation carries a relative error of at most 2⁻⁸ of its block's absmax. Groups that are
    /// not a multiple of 8 fall back to [`AwqActivations::F32`].
    Int8,
}

/// How the codes and parameters are laid out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Layout {
    /// `packed (rows, k/2)` with input `2j` in the low nibble of byte `j`; `scales` and
    /// `zero_scaled` `(rows, k/group)`.
    Rows,
    /// The q4x16 tiles of `nano_infer_simd::q8`: `packed (tiles, k/8, 16, 4)`, parameters
    /// `(tiles, k/group, 16)`, zero-padded to whole tiles; activations in blocks of `block`.
    Tiles { block: usize },
}

/// Where repacked data lives: process memory (resident layers), or a [`SpillFile`] mapping
/// that a memory budget pages out and in (streamed layers).
#[derive(Clone, Debug)]
enum Buf<T> {
    Owned(Vec<T>),
    /// Written by [`AwqWeight::spill`] with `T`'s dtype.
    Mapped(Tensor),
}

impl<T: Element> Buf<T> {
    fn get(&self) -> &[T] {
        match self {
            Buf::Owned(v) => v,
            Buf::Mapped(t) => t
                .as_slice()
                .expect("AwqWeight::spill maps each buffer with its own element type"),
        }
    }

    fn mapped(&self) -> Option<Tensor> {
        match self {
            Buf::Owned(_) => None,
            Buf::Mapped(t) => Some(t.clone()),
        }
    }

    fn spill(&self, spill: &mut SpillFile, name: &str) -> Result<Self> {
        let data = self.get();
        Ok(Buf::Mapped(spill.push(name, &[data.len()], data)?))
    }
}

/// An int4 weight `(rows, k)` repacked for its kernel. Bits per weight: 4 + 64/group.
#[derive(Clone, Debug)]
pub struct AwqWeight {
    layout: Layout,
    packed: Buf<u8>,
    scales: Buf<f32>,
    zero_scaled: Buf<f32>,
    rows: usize,
    k: usize,
    group: usize,
}

/// An AWQ layer's checkpoint tensors, found and validated but not repacked yet. Its repacked
/// size ([`AwqSource::weight_bytes`]) is known already, so a memory budget can be planned
/// before any copy exists, and a streamed layer's copy can go straight to a spill file
/// instead of all copies sitting in memory at once.
#[derive(Clone, Debug)]
pub struct AwqSource {
    qweight: Tensor,
    qzeros: Tensor,
    scales: Tensor,
    rows: usize,
    k: usize,
    group: usize,
    activations: AwqActivations,
}

impl AwqSource {
    /// Finds and checks `{prefix}.qweight/.qzeros/.scales` for an `(out, in)` layer.
    pub(crate) fn open(
        store: &WeightStore,
        prefix: &str,
        group: usize,
        out_features: usize,
        in_features: usize,
        activations: AwqActivations,
    ) -> Result<Self> {
        let name = |part: &str| format!("{prefix}.{part}");
        let qweight_name = name("qweight");
        let Some(qweight) = store.get_opt(&qweight_name)? else {
            let reason = if store.contains(&name("weight")) {
                format!("quantization_config (awq) covers `{prefix}`, but the checkpoint stores a dense `{prefix}.weight`; list the module in modules_to_not_convert if it is meant to stay dense")
            } else {
                format!("`{prefix}` is an AWQ layer and needs qweight, qzeros and scales")
            };
            return Err(QuantError::missing(&qweight_name, reason));
        };
        let need = |part: &str| -> Result<Tensor> {
            store.get_opt(&name(part))?.ok_or_else(|| {
                QuantError::missing(
                    &name(part),
                    format!("the AWQ layer `{prefix}` cannot run without its {part}"),
                )
            })
        };
        let qzeros = need("qzeros")?;
        let scales = need("scales")?;
        if !out_features.is_multiple_of(AWQ_PACK) {
            return Err(QuantError::invalid(
                &qweight_name,
                format!("out_features {out_features} is not a multiple of 8, so it cannot be AWQ-packed"),
            ));
        }
        if !in_features.is_multiple_of(group) {
            return Err(QuantError::GroupSize {
                tensor: qweight_name,
                group_size: group,
                in_features,
            });
        }
        let groups = in_features / group;
        qweight
            .expect_dtype(&[Dtype::I32])?
            .expect_shape(&[in_features, out_features / AWQ_PACK])?;
        qzeros
            .expect_dtype(&[Dtype::I32])?
            .expect_shape(&[groups, out_features / AWQ_PACK])?;
        scales
            .expect_dtype(&[Dtype::F16, Dtype::BF16])?
            .expect_shape(&[groups, out_features])?
            // A NaN or infinite scale poisons every output it touches (greedy ids of all 0):
            // refused at load, always; the scales are 1/64 of the codes' bytes.
            .check_finite()?;
        Ok(Self {
            qweight,
            qzeros,
            scales,
            rows: out_features,
            k: in_features,
            group,
            activations,
        })
    }

    /// The layout [`AwqSource::repack`] will produce.
    fn layout(&self) -> Layout {
        match self.activations {
            AwqActivations::F32 => Layout::Rows,
            // Groups without an int8 activation block stay row-major (see `into_tiles`).
            AwqActivations::Int8 => match q8::q8_block_for_group(self.group) {
                Some(block) => Layout::Tiles { block },
                None => Layout::Rows,
            },
        }
    }

    /// Exactly the [`AwqWeight::weight_bytes`] of the repacked layer: codes at 4 bits plus an
    /// f32 scale and zero·scale per (row, group); the tiled layout pads rows to whole tiles.
    pub fn weight_bytes(&self) -> usize {
        let groups = self.k / self.group;
        let rows = match self.layout() {
            Layout::Rows => self.rows,
            Layout::Tiles { .. } => q8::tiles(self.rows) * q8::TILE_ROWS,
        };
        rows * self.k / 2 + 2 * 4 * rows * groups
    }

    /// The requested activations, as the cache's metadata names them.
    pub(crate) fn activations_name(&self) -> &'static str {
        match self.activations {
            AwqActivations::F32 => "f32",
            AwqActivations::Int8 => "int8",
        }
    }

    /// `(name, dtype, shape)` of the three buffers of the repacked layer `prefix` in an AWQ
    /// cache file (see `awq_cache`): packed codes, scales, zero·scales.
    pub(crate) fn cache_specs(&self, prefix: &str) -> [(String, Dtype, Vec<usize>); 3] {
        let groups = self.k / self.group;
        let rows = match self.layout() {
            Layout::Rows => self.rows,
            Layout::Tiles { .. } => q8::tiles(self.rows) * q8::TILE_ROWS,
        };
        [
            (
                format!("{prefix}.awq_packed"),
                Dtype::U8,
                vec![rows * self.k / 2],
            ),
            (
                format!("{prefix}.awq_scales"),
                Dtype::F32,
                vec![rows * groups],
            ),
            (
                format!("{prefix}.awq_zero_scaled"),
                Dtype::F32,
                vec![rows * groups],
            ),
        ]
    }

    /// Feeds what identifies this layer's repacked data to `h`: shape, group and layout, the
    /// scales and zero points in full, and the codes' first, middle and last 4 KiB (a cache hit
    /// never reads the rest of the codes; see `awq_cache`).
    pub(crate) fn fingerprint(&self, h: &mut crate::awq_cache::Hasher) -> Result<()> {
        let layout = match self.layout() {
            Layout::Rows => 0,
            Layout::Tiles { block } => block as u64,
        };
        for v in [self.rows as u64, self.k as u64, self.group as u64, layout] {
            h.update(&v.to_le_bytes());
        }
        h.update(self.scales.dtype().safetensors_name().as_bytes());
        h.update(self.scales.bytes());
        h.update(self.qzeros.bytes());
        let codes = self.qweight.bytes();
        const SAMPLE: usize = 4096;
        let mid = (codes.len() / 2).saturating_sub(SAMPLE / 2);
        for start in [0, mid, codes.len().saturating_sub(SAMPLE)] {
            h.update(&codes[start..(start + SAMPLE).min(codes.len())]);
        }
        Ok(())
    }

    /// Repacks into process memory.
    pub fn repack(self) -> Result<AwqWeight> {
        let (rows, k, group) = (self.rows, self.k, self.group);
        let packed = self.qweight.as_slice::<i32>()?;
        let zeros = awq_unpack(self.qzeros.as_slice::<i32>()?, rows); // (groups, out)
                                                                      // Both 16-bit formats convert to f32 exactly.
        let scales_in: Vec<f32> = match self.scales.dtype() {
            Dtype::F16 => self
                .scales
                .as_slice::<f16>()?
                .iter()
                .map(|v| v.to_f32())
                .collect(),
            _ => self
                .scales
                .as_slice::<bf16>()?
                .iter()
                .map(|v| v.to_f32())
                .collect(),
        }; // (groups, out)
        let weight = AwqWeight::repack(packed, &zeros, &scales_in, rows, k, group);
        // The repacked copy is all the kernels read from now on: let the kernel drop the
        // checkpoint's pages from our resident set, or resident memory would be the file plus
        // the copy (≈ 1.8× the weights). A failed hint only costs memory.
        for t in [&self.qweight, &self.qzeros, &self.scales] {
            let _ = t.advise(nano_infer_tensor::Paging::DontNeed);
        }
        Ok(match self.activations {
            AwqActivations::F32 => weight,
            AwqActivations::Int8 => weight.into_tiles(),
        })
    }
}

impl AwqWeight {
    /// Builds the `gemm_q4` layout from AutoAWQ `qweight` `(k, rows/8)`, unpacked zero points
    /// `(k/group, rows)` and scales `(k/group, rows)`.
    fn repack(
        qweight: &[i32],
        zeros: &[u8],
        scales_in: &[f32],
        rows: usize,
        k: usize,
        group: usize,
    ) -> Self {
        let groups = k / group;
        let cols8 = rows / AWQ_PACK;
        let half = k / 2;
        let mut packed = vec![0u8; rows * half];
        // One task per 8 output rows = one column of `qweight`, so each word is read once.
        packed
            .par_chunks_mut(AWQ_PACK * half)
            .enumerate()
            .for_each(|(c, block)| {
                for i in 0..k {
                    let word = qweight[i * cols8 + c] as u32;
                    for (j, &nibble) in AWQ_INVERSE.iter().enumerate() {
                        let q = ((word >> (AWQ_BITS * nibble)) & 15) as u8;
                        block[j * half + i / 2] |= if i % 2 == 0 { q } else { q << 4 };
                    }
                }
            });
        let mut scales = vec![0f32; rows * groups];
        let mut zero_scaled = vec![0f32; rows * groups];
        for g in 0..groups {
            for r in 0..rows {
                let s = scales_in[g * rows + r];
                scales[r * groups + g] = s;
                zero_scaled[r * groups + g] = zeros[g * rows + r] as f32 * s;
            }
        }
        Self {
            layout: Layout::Rows,
            packed: Buf::Owned(packed),
            scales: Buf::Owned(scales),
            zero_scaled: Buf::Owned(zero_scaled),
            rows,
            k,
            group,
        }
    }

    /// The layer `source` describes, reading its repacked buffers from an AWQ cache file's
    /// tensors (whose lengths are checked against the layer's shape here once more).
    pub(crate) fn from_cache(
        source: &AwqSource,
        packed: Tensor,
        scales: Tensor,
        zero_scaled: Tensor,
    ) -> Result<Self> {
        let specs = source.cache_specs("");
        for (t, (_, dtype, shape)) in [&packed, &scales, &zero_scaled].into_iter().zip(specs) {
            t.expect_dtype(&[dtype])?.expect_shape(&shape)?;
        }
        // The source's pages (scales read for the finiteness check, the fingerprint's samples)
        // are not needed any more, as after a repack.
        for t in [&source.qweight, &source.qzeros, &source.scales] {
            let _ = t.advise(nano_infer_tensor::Paging::DontNeed);
        }
        Ok(Self {
            layout: source.layout(),
            packed: Buf::Mapped(packed),
            scales: Buf::Mapped(scales),
            zero_scaled: Buf::Mapped(zero_scaled),
            rows: source.rows,
            k: source.k,
            group: source.group,
        })
    }

    /// Converts the row-major layout into q4x16 tiles (in parallel over tiles), if the group
    /// allows int8 activation blocks; otherwise returns `self` unchanged.
    fn into_tiles(self) -> Self {
        if self.layout != Layout::Rows {
            return self;
        }
        let Some(block) = q8::q8_block_for_group(self.group) else {
            return self;
        };
        let (rows, k, groups) = (self.rows, self.k, self.k / self.group);
        let packed = self.packed.get();
        let tile_bytes = k / 8 * q8::CHUNK_BYTES;
        let mut tiles = vec![0u8; q8::tiles(rows) * tile_bytes];
        tiles
            .par_chunks_mut(tile_bytes)
            .enumerate()
            .for_each(|(t, tile)| {
                for i in 0..q8::TILE_ROWS.min(rows - t * q8::TILE_ROWS) {
                    let row = &packed[(t * q8::TILE_ROWS + i) * k / 2..][..k / 2];
                    let q = |j: usize| (row[j / 2] >> (4 * (j % 2))) & 15;
                    for c in 0..k / 8 {
                        for j in 0..4 {
                            tile[c * q8::CHUNK_BYTES + 4 * i + j] =
                                q(8 * c + j) | q(8 * c + 4 + j) << 4;
                        }
                    }
                }
            });
        Self {
            layout: Layout::Tiles { block },
            packed: Buf::Owned(tiles),
            scales: Buf::Owned(q8::tile_params(self.scales.get(), rows, groups)),
            zero_scaled: Buf::Owned(q8::tile_params(self.zero_scaled.get(), rows, groups)),
            ..self
        }
    }

    /// Moves the repacked data out of process memory: writes it to `spill` and reads it from
    /// there from now on, as mapped tensors named `{prefix}.awq_packed`, `.awq_scales` and
    /// `.awq_zero_scaled` (see [`AwqWeight::mapped_tensors`]) that a memory budget can page out
    /// and back in. The heap copy is freed when `self` is dropped here.
    pub fn spill(self, spill: &mut SpillFile, prefix: &str) -> Result<Self> {
        Ok(Self {
            packed: self.packed.spill(spill, &format!("{prefix}.awq_packed"))?,
            scales: self.scales.spill(spill, &format!("{prefix}.awq_scales"))?,
            zero_scaled: self
                .zero_scaled
                .spill(spill, &format!("{prefix}.awq_zero_scaled"))?,
            ..self
        })
    }

    /// The spilled buffers (empty while the data is in process memory).
    pub fn mapped_tensors(&self) -> Vec<Tensor> {
        [
            self.packed.mapped(),
            self.scales.mapped(),
            self.zero_scaled.mapped(),
        ]
        .into_iter()
        .flatten()
        .collect()
    }

    /// Output features (rows of the `(rows, k)` weight).
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Input features.
    pub fn k(&self) -> usize {
        self.k
    }

    /// Input features per scale and zero point.
    pub fn group_size(&self) -> usize {
        self.group
    }

    /// The activations this layer's kernel takes.
    pub fn activations(&self) -> AwqActivations {
        match self.layout {
            Layout::Rows => AwqActivations::F32,
            Layout::Tiles { .. } => AwqActivations::Int8,
        }
    }

    /// The int8 activation block of the tiled layout (`None` for the row-major one).
    pub(crate) fn q8_block(&self) -> Option<usize> {
        match self.layout {
            Layout::Rows => None,
            Layout::Tiles { block } => Some(block),
        }
    }

    /// The packed codes: `(rows, k/2)` bytes with input `2j` in the low nibble of byte `j` for
    /// [`AwqActivations::F32`], q4x16 tiles for [`AwqActivations::Int8`].
    pub fn packed(&self) -> &[u8] {
        self.packed.get()
    }

    /// Scales: `(rows, k/group)`, or `(tiles, k/group, 16)` for the tiled layout.
    pub fn scales(&self) -> &[f32] {
        self.scales.get()
    }

    /// Zero point × scale, laid out like [`AwqWeight::scales`].
    pub fn zero_scaled(&self) -> &[f32] {
        self.zero_scaled.get()
    }

    /// Bytes resident and read per forward pass.
    pub fn weight_bytes(&self) -> usize {
        self.packed().len() + 4 * (self.scales().len() + self.zero_scaled().len())
    }

    /// `(q, s, z·s)` of weight `(r, j)` in either layout.
    fn param(&self, r: usize, j: usize) -> (u8, f32, f32) {
        let (groups, g) = (self.k / self.group, j / self.group);
        let (packed, scales, zero_scaled) = (self.packed(), self.scales(), self.zero_scaled());
        match self.layout {
            Layout::Rows => {
                let byte = packed[(r * self.k + j) / 2];
                let q = if j.is_multiple_of(2) {
                    byte & 15
                } else {
                    byte >> 4
                };
                (q, scales[r * groups + g], zero_scaled[r * groups + g])
            }
            Layout::Tiles { .. } => {
                let (t, i) = (r / q8::TILE_ROWS, r % q8::TILE_ROWS);
                let tile = &packed[t * self.k / 8 * q8::CHUNK_BYTES..];
                let byte = tile[(j / 8) * q8::CHUNK_BYTES + 4 * i + j % 4];
                let q = if j % 8 < 4 { byte & 15 } else { byte >> 4 };
                let p = (t * groups + g) * q8::TILE_ROWS + i;
                (q, scales[p], zero_scaled[p])
            }
        }
    }

    /// Row `r` of W in f32, exactly `(q − z)·s` (tests and debugging; not on the forward path).
    pub fn dequantize_row(&self, r: usize, out: &mut [f32]) {
        for (j, o) in out[..self.k].iter_mut().enumerate() {
            let (q, s, zs) = self.param(r, j);
            *o = q as f32 * s - zs;
        }
    }

    /// Whether [`AwqWeight::dequantize_block`] works: the row layout (the int8-activation tiles
    /// run their own integer kernel at every token count).
    pub(crate) fn has_row_layout(&self) -> bool {
        matches!(self.layout, Layout::Rows)
    }

    /// `W[rows, k0..k1]` in f32 into the first `k1 - k0` columns of `out`
    /// (`(rows.len(), PANEL_K_BLOCK)`), `q·s − z·s` with one rounding (as the few-token kernels
    /// decode; [`AwqWeight::dequantize_row`] rounds twice). Row layout only; `k0`, `k1` even.
    pub(crate) fn dequantize_block(
        &self,
        kernels: Kernels,
        rows: std::ops::Range<usize>,
        (k0, k1): (usize, usize),
        out: &mut [f32],
    ) {
        assert!(
            self.has_row_layout() && k0.is_multiple_of(2) && k1.is_multiple_of(2),
            "AwqWeight::dequantize_block: row layout and even bounds only"
        );
        let (packed, scales, zero_scaled) = (self.packed(), self.scales(), self.zero_scaled());
        let (half, groups, group) = (self.k / 2, self.k / self.group, self.group);
        for (r, dst) in rows.zip(out.chunks_exact_mut(PANEL_K_BLOCK)) {
            let bytes = &packed[r * half..(r + 1) * half];
            // The same stretch of the next block, which the next call reads (see `prefetch`).
            nano_infer_simd::prefetch(&bytes[k1 / 2..(2 * k1 - k0).min(self.k) / 2]);
            let mut j = k0;
            // One (scale, zero) per stretch of the row inside one group.
            while j < k1 {
                let end = ((j / group + 1) * group).min(k1);
                let g = r * groups + j / group;
                let (b, d) = (&bytes[j / 2..end / 2], &mut dst[j - k0..end - k0]);
                kernels.dequant_q4(b, scales[g], zero_scaled[g], d);
                j = end;
            }
        }
    }

    /// `out (rows_range, n_tok) = W[rows_range] · xᵀ`; `xq` is `x` quantized for the tiled
    /// layout ([`Linear::forward`](crate::Linear::forward) does that once per matmul).
    pub(crate) fn gemm_rows(
        &self,
        kernels: Kernels,
        rows: std::ops::Range<usize>,
        x: &[f32],
        xq: Option<&Q8Acts>,
        out: &mut [f32],
    ) {
        let groups = self.k / self.group;
        let (packed, scales, zero_scaled) = (self.packed(), self.scales(), self.zero_scaled());
        match self.layout {
            Layout::Rows => {
                let half = self.k / 2;
                kernels.gemm_q4(
                    &packed[rows.start * half..rows.end * half],
                    &scales[rows.start * groups..rows.end * groups],
                    &zero_scaled[rows.start * groups..rows.end * groups],
                    self.group,
                    x,
                    self.k,
                    out,
                )
            }
            Layout::Tiles { .. } => {
                assert!(
                    rows.start.is_multiple_of(q8::TILE_ROWS),
                    "AwqWeight: row ranges start at tile boundaries"
                );
                let xq = xq.expect("Linear::forward quantizes x for tiled AWQ layers");
                let (t0, t1) = (rows.start / q8::TILE_ROWS, rows.end.div_ceil(q8::TILE_ROWS));
                let tile_bytes = self.k / 8 * q8::CHUNK_BYTES;
                let tp = groups * q8::TILE_ROWS;
                kernels.gemm_q4x16_q8(
                    &packed[t0 * tile_bytes..t1 * tile_bytes],
                    &scales[t0 * tp..t1 * tp],
                    &zero_scaled[t0 * tp..t1 * tp],
                    self.group,
                    xq,
                    out,
                )
            }
        }
    }
}
