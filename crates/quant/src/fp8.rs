//! FP8 weights (E4M3 or E5M2 codes), used in place from the memory map, with their scales
//! expanded at load into the `(rows, k-blocks)` f32 array of [`Kernels::gemm_fp8`].
//!
//! | source                          | weight       | scale tensor                                   | expanded to                              |
//! |---------------------------------|--------------|------------------------------------------------|------------------------------------------|
//! | `fp8`, block `[br, bc]`          | F8 `(out,in)`| `weight_scale_inv` `(⌈out/br⌉, ⌈in/bc⌉)` F32/BF16/F16 | `(out, ⌈in/bc⌉)`, `block_k = bc`  |
//! | compressed-tensors `block`       | same         | `weight_scale` `(⌈out/br⌉, ⌈in/bc⌉)`           | same                                     |
//! | compressed-tensors `channel`     | same         | `weight_scale` `(out, 1)` F32/BF16/F16         | `(out, 1)`, `block_k = in`               |
//! | compressed-tensors `tensor`      | same         | `weight_scale` `(1)` or `()`                   | `(out, 1)`, the one value on every row   |
//!
//! `W[o, i] = decode(code[o, i]) · scale[o / br, i / bc]` in f32, which is exactly what the
//! reference computes. The block size always comes from the config, never from the dims: with
//! `in = 704 = 5.5 · 128` the last block column covers 64 inputs, and the kernel's last block
//! is partial too (`min(k, (b+1)·block_k)`).
//!
//! Bits per weight: 8 (the codes, not copied) + 32/`block_k` for the expanded scales; the
//! expansion costs `out · ⌈in/bc⌉ · 4` bytes (block: 1/32 of the codes at 128×128), i.e. one
//! f32 per row for per-channel and per-tensor.
//!
//! The code format comes from the weight's safetensors dtype (`F8_E4M3` / `F8_E5M2`): that is
//! the only marker compressed-tensors leaves for E5M2.

use crate::scheme::Fp8Strategy;
use crate::{QuantError, Result};
use nano_infer_simd::{fp8_to_f32, Fp8Format, Kernels, PANEL_K_BLOCK};
use nano_infer_tensor::{Dtype, Tensor, WeightStore};

/// Scale dtypes accepted for `weight_scale_inv` and `weight_scale`.
const SCALE_DTYPES: [Dtype; 3] = [Dtype::F32, Dtype::BF16, Dtype::F16];

/// How the scales of one layer are laid out in the file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ScaleLayout {
    /// `[rows, cols]` blocks of W per scale.
    Block([usize; 2]),
    Channel,
    Tensor,
}

/// An FP8 weight `(rows, k)` with its expanded scales.
#[derive(Clone, Debug)]
pub struct Fp8Weight {
    /// `(rows, k)` codes, in place in the memory map.
    codes: Tensor,
    format: Fp8Format,
    /// `(rows, k.div_ceil(block_k))`.
    scales: Vec<f32>,
    block_k: usize,
    rows: usize,
    k: usize,
}

impl Fp8Weight {
    /// Loads `{prefix}.weight` and its scale (`scale_part` = `weight_scale_inv` or
    /// `weight_scale`) for an `(out, in)` layer. `expect` is the config's `fmt`, if it has one;
    /// `strategy` is compressed-tensors' (None for `fp8` block configs, which pass `block`).
    pub(crate) fn load(
        store: &WeightStore,
        prefix: &str,
        block: Option<[usize; 2]>,
        expect: Option<Fp8Format>,
        strategy: Option<Fp8Strategy>,
        out_features: usize,
        in_features: usize,
    ) -> Result<Self> {
        let (scale_part, layout) = match (block, strategy) {
            (Some(b), _) => ("weight_scale_inv", ScaleLayout::Block(b)),
            (None, Some(Fp8Strategy::Block(b))) => ("weight_scale", ScaleLayout::Block(b)),
            (None, Some(Fp8Strategy::Channel)) => ("weight_scale", ScaleLayout::Channel),
            (None, Some(Fp8Strategy::Tensor) | None) => ("weight_scale", ScaleLayout::Tensor),
        };
        let weight = store.get(&format!("{prefix}.weight"))?;
        weight
            .expect_dtype(&[Dtype::F8E4M3, Dtype::F8E5M2])?
            .expect_shape(&[out_features, in_features])?;
        let format = if weight.dtype() == Dtype::F8E5M2 {
            Fp8Format::E5M2
        } else {
            Fp8Format::E4M3
        };
        if let Some(expect) = expect.filter(|&e| e != format) {
            return Err(QuantError::invalid(
                weight.name(),
                format!(
                    "stored as {} but quantization_config.fmt says {expect:?}",
                    weight.dtype()
                ),
            ));
        }
        let scale_name = format!("{prefix}.{scale_part}");
        let scale = store.get_opt(&scale_name)?.ok_or_else(|| {
            QuantError::missing(
                &scale_name,
                format!("the FP8 layer `{prefix}` cannot run without its scale"),
            )
        })?;
        Self::new(weight, &scale, layout)
    }

    /// Pairs FP8 codes `(rows, k)` with a scale tensor in `layout`, checking its shape and dtype.
    pub(crate) fn new(codes: Tensor, scale: &Tensor, layout: ScaleLayout) -> Result<Self> {
        let format = match codes.dtype() {
            Dtype::F8E4M3 => Fp8Format::E4M3,
            Dtype::F8E5M2 => Fp8Format::E5M2,
            _ => {
                return Err(codes
                    .expect_dtype(&[Dtype::F8E4M3, Dtype::F8E5M2])
                    .unwrap_err()
                    .into())
            }
        };
        let &[rows, k] = codes.shape() else {
            return Err(QuantError::invalid(
                codes.name(),
                format!("expected a 2-D weight, found {:?}", codes.shape()),
            ));
        };
        // A NaN or infinite scale poisons every output it touches: refused at load, always (a
        // scale covers a block, a row or the whole tensor, so this reads little).
        scale.expect_dtype(&SCALE_DTYPES)?.check_finite()?;
        let (scales, block_k) = match layout {
            ScaleLayout::Block([br, bc]) => {
                let (gr, gc) = (rows.div_ceil(br), k.div_ceil(bc));
                scale.expect_shape(&[gr, gc])?;
                let s = scale.to_f32_vec()?;
                let expanded: Vec<f32> = (0..rows)
                    .flat_map(|r| s[(r / br) * gc..(r / br + 1) * gc].iter().copied())
                    .collect();
                (expanded, bc)
            }
            ScaleLayout::Channel => {
                scale.expect_shape(&[rows, 1])?;
                (scale.to_f32_vec()?, k)
            }
            ScaleLayout::Tensor => {
                if !scale.shape().is_empty() {
                    scale.expect_shape(&[1])?;
                }
                (vec![scale.to_f32_vec()?[0]; rows], k)
            }
        };
        Ok(Self {
            codes,
            format,
            scales,
            block_k,
            rows,
            k,
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

    /// E4M3 or E5M2.
    pub fn format(&self) -> Fp8Format {
        self.format
    }

    /// Inputs covered by one scale along a row (`k` for per-channel and per-tensor).
    pub fn block_k(&self) -> usize {
        self.block_k
    }

    /// `(rows, k.div_ceil(block_k))` f32 scales.
    pub fn scales(&self) -> &[f32] {
        &self.scales
    }

    /// The `(rows, k)` codes as stored.
    pub fn codes(&self) -> &[u8] {
        self.codes
            .as_slice()
            .expect("dtype checked in Fp8Weight::new")
    }

    /// Bytes read per forward pass: the mapped codes plus the expanded scales.
    pub fn weight_bytes(&self) -> usize {
        self.codes.bytes().len() + 4 * self.scales.len()
    }

    /// The tensor holding the `(rows, k)` codes, in place in the memory map.
    pub fn codes_tensor(&self) -> &Tensor {
        &self.codes
    }

    /// Row `r` of W in f32, exactly `decode(code) · scale` (tests and debugging).
    pub fn dequantize_row(&self, r: usize, out: &mut [f32]) {
        let blocks = self.k.div_ceil(self.block_k);
        let row = &self.codes()[r * self.k..(r + 1) * self.k];
        for (j, (o, &c)) in out.iter_mut().zip(row).enumerate() {
            *o = fp8_to_f32(self.format, c) * self.scales[r * blocks + j / self.block_k];
        }
    }

    /// `W[rows, k0..k1]` in f32 into the first `k1 - k0` columns of `out`
    /// (`(rows.len(), PANEL_K_BLOCK)`), as [`Fp8Weight::dequantize_row`] defines it.
    pub(crate) fn dequantize_block(
        &self,
        kernels: Kernels,
        rows: std::ops::Range<usize>,
        (k0, k1): (usize, usize),
        out: &mut [f32],
    ) {
        let (codes, blocks, bk) = (self.codes(), self.k.div_ceil(self.block_k), self.block_k);
        for (r, dst) in rows.zip(out.chunks_exact_mut(PANEL_K_BLOCK)) {
            let row = &codes[r * self.k..(r + 1) * self.k];
            // The same stretch of the next block, which the next call reads (see `prefetch`).
            nano_infer_simd::prefetch(&row[k1..(2 * k1 - k0).min(self.k)]);
            let row_scales = &self.scales[r * blocks..(r + 1) * blocks];
            let mut j = k0;
            // One scale per stretch of the row inside one k-block.
            while j < k1 {
                let end = ((j / bk + 1) * bk).min(k1);
                let (c, d) = (&row[j..end], &mut dst[j - k0..end - k0]);
                kernels.dequant_fp8(self.format, c, row_scales[j / bk], d);
                j = end;
            }
        }
    }

    /// `out (rows_range, n_tok) = W[rows_range] · xᵀ`.
    pub(crate) fn gemm_rows(
        &self,
        kernels: Kernels,
        rows: std::ops::Range<usize>,
        x: &[f32],
        out: &mut [f32],
    ) {
        let blocks = self.k.div_ceil(self.block_k);
        kernels.gemm_fp8(
            self.format,
            &self.codes()[rows.start * self.k..rows.end * self.k],
            &self.scales[rows.start * blocks..rows.end * blocks],
            self.block_k,
            x,
            self.k,
            out,
        )
    }
}
