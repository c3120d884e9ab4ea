//! Dense BF16/F16/F32 weights, used in place from the memory map.

use crate::{QuantError, Result};
use nano_infer_simd::{bf16, f16, Kernels, PANEL_K_BLOCK};
use nano_infer_tensor::{Dtype, Tensor};

/// A `(rows, k)` weight matrix in a 16- or 32-bit float format.
#[derive(Clone, Debug)]
pub struct DenseWeight {
    tensor: Tensor,
    rows: usize,
    k: usize,
}

impl DenseWeight {
    /// Wraps a 2-D BF16/F16/F32 tensor `(rows, k)`.
    pub fn new(tensor: Tensor) -> Result<Self> {
        tensor.expect_dtype(&[Dtype::BF16, Dtype::F16, Dtype::F32])?;
        let &[rows, k] = tensor.shape() else {
            return Err(QuantError::Invalid {
                tensor: tensor.name().to_owned(),
                reason: format!("expected a 2-D weight, found shape {:?}", tensor.shape()),
            });
        };
        Ok(Self { tensor, rows, k })
    }

    /// Output features (rows of the `(rows, k)` weight).
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Input features.
    pub fn k(&self) -> usize {
        self.k
    }

    /// The weight tensor, as stored.
    pub fn tensor(&self) -> &Tensor {
        &self.tensor
    }

    /// Row `r` converted to f32 into `out` (embedding lookup).
    pub fn row_to_f32(&self, r: usize, out: &mut [f32]) {
        let span = r * self.k..(r + 1) * self.k;
        match self.tensor.dtype() {
            Dtype::BF16 => {
                let w = &self.slice::<bf16>()[span];
                out.iter_mut().zip(w).for_each(|(o, v)| *o = v.to_f32());
            }
            Dtype::F16 => {
                let w = &self.slice::<f16>()[span];
                out.iter_mut().zip(w).for_each(|(o, v)| *o = v.to_f32());
            }
            _ => out.copy_from_slice(&self.slice::<f32>()[span]),
        }
    }

    /// `W[rows, k0..k1]` widened to f32 into the first `k1 - k0` columns of `out`
    /// (`(rows.len(), PANEL_K_BLOCK)`).
    pub(crate) fn dequantize_block(
        &self,
        kernels: Kernels,
        rows: std::ops::Range<usize>,
        (k0, k1): (usize, usize),
        out: &mut [f32],
    ) {
        let elem = self.tensor.dtype().size();
        let bytes = self.tensor.bytes();
        for (r, dst) in rows.zip(out.chunks_exact_mut(PANEL_K_BLOCK)) {
            // The same stretch two blocks ahead (see `prefetch`): one block ahead left the
            // widening still waiting on memory for this format's 2-byte rows.
            let next = (r * self.k + (2 * k1 - k0).min(self.k)) * elem
                ..(r * self.k + (3 * k1 - 2 * k0).min(self.k)) * elem;
            nano_infer_simd::prefetch(&bytes[next]);
            let span = r * self.k + k0..r * self.k + k1;
            match self.tensor.dtype() {
                Dtype::BF16 => kernels.widen_bf16(&self.slice::<bf16>()[span], &mut dst[..k1 - k0]),
                Dtype::F16 => kernels.widen_f16(&self.slice::<f16>()[span], &mut dst[..k1 - k0]),
                _ => dst[..k1 - k0].copy_from_slice(&self.slice::<f32>()[span]),
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
        let span = rows.start * self.k..rows.end * self.k;
        match self.tensor.dtype() {
            Dtype::BF16 => kernels.gemm_bf16(&self.slice::<bf16>()[span], x, self.k, out),
            Dtype::F16 => kernels.gemm_f16(&self.slice::<f16>()[span], x, self.k, out),
            _ => kernels.gemm_f32(&self.slice::<f32>()[span], x, self.k, out),
        }
    }

    fn slice<T: nano_infer_tensor::Element>(&self) -> &[T] {
        self.tensor
            .as_slice()
            .expect("dtype checked in DenseWeight::new")
    }
}
