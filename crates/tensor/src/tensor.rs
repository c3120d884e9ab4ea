//! A view of one tensor: dtype, shape and bytes, sharing its file's memory map.

use crate::file::{Storage, TensorInfo};
use crate::{Dtype, Element, Paging, Result, TensorError};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// One tensor of a safetensors file. Cloning is cheap (reference-counted storage); the bytes
/// stay valid as long as any `Tensor` of the file lives.
#[derive(Clone)]
pub struct Tensor {
    name: Arc<str>,
    path: Arc<PathBuf>,
    dtype: Dtype,
    shape: Vec<usize>,
    data: Data,
}

#[derive(Clone)]
enum Data {
    /// A range of the file's storage.
    Shared {
        storage: Arc<Storage>,
        start: usize,
        end: usize,
    },
    /// A copy made because the file's data was not aligned for the element type. `u64` words
    /// guarantee alignment for every element type we view.
    Aligned { words: Arc<[u64]>, len: usize },
}

impl std::fmt::Debug for Tensor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tensor")
            .field("name", &self.name)
            .field("dtype", &self.dtype)
            .field("shape", &self.shape)
            .finish()
    }
}

impl Tensor {
    pub(crate) fn new(
        name: &str,
        path: Arc<PathBuf>,
        storage: Arc<Storage>,
        info: &TensorInfo,
    ) -> Self {
        let bytes = &storage.bytes()[info.start..info.end];
        let data = if (bytes.as_ptr() as usize).is_multiple_of(info.dtype.size()) {
            Data::Shared {
                storage: Arc::clone(&storage),
                start: info.start,
                end: info.end,
            }
        } else {
            let mut words = vec![0u64; bytes.len().div_ceil(8)];
            bytemuck::cast_slice_mut::<u64, u8>(&mut words)[..bytes.len()].copy_from_slice(bytes);
            Data::Aligned {
                words: words.into(),
                len: bytes.len(),
            }
        };
        Self {
            name: name.into(),
            path,
            dtype: info.dtype,
            shape: info.shape.clone(),
            data,
        }
    }

    /// The tensor's name in the checkpoint.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The file it came from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The element type.
    pub fn dtype(&self) -> Dtype {
        self.dtype
    }

    /// The shape, outermost dimension first.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// Number of elements.
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// The raw little-endian bytes.
    pub fn bytes(&self) -> &[u8] {
        match &self.data {
            Data::Shared {
                storage,
                start,
                end,
            } => &storage.bytes()[*start..*end],
            Data::Aligned { words, len } => &bytemuck::cast_slice(words)[..*len],
        }
    }

    /// Passes a paging hint for this tensor's bytes to the kernel (see [`Paging`]). A no-op
    /// for tensors that were copied into memory.
    pub fn advise(&self, paging: Paging) -> std::io::Result<()> {
        match &self.data {
            Data::Shared {
                storage,
                start,
                end,
            } => storage.advise(paging, *start, *end),
            Data::Aligned { .. } => Ok(()),
        }
    }

    /// Reads one byte of every page so the tensor is resident when this returns (a prefetch
    /// that waits, unlike [`Paging::WillNeed`]). Returns a checksum only so the reads cannot be
    /// optimised away.
    pub fn touch(&self) -> u64 {
        // The smallest page size, so every page is reached whatever the system's (the inward
        // rounding of `Paging::DontNeed` wants the real size instead: a multiple of it).
        const PAGE: usize = 4096;
        let bytes = self.bytes();
        let mut sum = 0u64;
        // The first byte, then the first byte of every later page the bytes reach: stepping
        // from the first byte would miss the last page when the tensor does not start on a
        // page (and a page missed here is faulted in by the first use instead, which maps its
        // whole page-cache folio: see `nano_infer_offload`'s streamer).
        let skew = bytes.as_ptr() as usize % PAGE;
        let pages = std::iter::once(0).chain((PAGE - skew..bytes.len()).step_by(PAGE));
        for i in pages.take_while(|&i| i < bytes.len()) {
            sum = sum.wrapping_add(std::hint::black_box(bytes[i]) as u64);
        }
        sum
    }

    /// A zero-copy typed view. Errors if `T` is not this tensor's element type.
    pub fn as_slice<T: Element>(&self) -> Result<&[T]> {
        if !T::DTYPES.contains(&self.dtype) {
            return Err(self.wrong_dtype(T::DTYPES));
        }
        // Alignment was ensured in `new`, and the byte length is a multiple of the element size
        // because the header's shape × dtype size was checked against its offsets.
        Ok(bytemuck::cast_slice(self.bytes()))
    }

    /// Errors unless the shape is exactly `expected`.
    pub fn expect_shape(&self, expected: &[usize]) -> Result<&Self> {
        if self.shape != expected {
            return Err(TensorError::WrongShape {
                path: self.path.as_ref().clone(),
                tensor: self.name.to_string(),
                expected: expected.to_vec(),
                actual: self.shape.clone(),
            });
        }
        Ok(self)
    }

    /// Errors unless the dtype is one of `allowed`.
    pub fn expect_dtype(&self, allowed: &[Dtype]) -> Result<&Self> {
        if !allowed.contains(&self.dtype) {
            return Err(self.wrong_dtype(allowed));
        }
        Ok(self)
    }

    /// The values as f32 (a copy), for BF16, F16 and F32 tensors. Used for small tensors such
    /// as norms and scales, never for weight matrices.
    pub fn to_f32_vec(&self) -> Result<Vec<f32>> {
        Ok(match self.dtype {
            Dtype::F32 => self.as_slice::<f32>()?.to_vec(),
            Dtype::BF16 => self
                .as_slice::<half::bf16>()?
                .iter()
                .map(|v| v.to_f32())
                .collect(),
            Dtype::F16 => self
                .as_slice::<half::f16>()?
                .iter()
                .map(|v| v.to_f32())
                .collect(),
            _ => return Err(self.wrong_dtype(&[Dtype::BF16, Dtype::F16, Dtype::F32])),
        })
    }

    /// Errors naming the first element that is NaN or infinite; integer tensors always pass.
    ///
    /// Reads every byte once: 25 GB/s on BF16 in memory (one core of the dev machine), so a
    /// checkpoint's scan is bound by reading its files. Loaders call it always on small
    /// tensors (scales, norms) and on weight matrices only when asked. The test is on
    /// the bit patterns (an all-ones exponent; E4M3's only NaN `S.1111.111`, it has no
    /// infinity), so nothing is converted on the way.
    pub fn check_finite(&self) -> Result<()> {
        let bytes = self.bytes();
        let size = self.dtype.size();
        let found = match self.dtype {
            Dtype::F32 => scan(bytes, |b: [u8; 4]| {
                u32::from_le_bytes(b) & 0x7F80_0000 == 0x7F80_0000
            }),
            Dtype::BF16 => scan(bytes, |b: [u8; 2]| u16::from_le_bytes(b) & 0x7F80 == 0x7F80),
            Dtype::F16 => scan(bytes, |b: [u8; 2]| u16::from_le_bytes(b) & 0x7C00 == 0x7C00),
            Dtype::F8E4M3 => scan(bytes, |b: [u8; 1]| b[0] & 0x7F == 0x7F),
            Dtype::F8E5M2 => scan(bytes, |b: [u8; 1]| b[0] & 0x7C == 0x7C),
            Dtype::I32 | Dtype::U8 => None,
        };
        let Some(index) = found else {
            return Ok(());
        };
        let b = &bytes[index * size..(index + 1) * size];
        let value = match self.dtype {
            Dtype::F32 => f32::from_le_bytes([b[0], b[1], b[2], b[3]]),
            Dtype::BF16 => half::bf16::from_le_bytes([b[0], b[1]]).to_f32(),
            Dtype::F16 => half::f16::from_le_bytes([b[0], b[1]]).to_f32(),
            // E5M2 is IEEE-like: mantissa 0 is infinity; anything else (and every E4M3 hit) NaN.
            Dtype::F8E5M2 if b[0] & 0x03 == 0 && b[0] & 0x80 != 0 => f32::NEG_INFINITY,
            Dtype::F8E5M2 if b[0] & 0x03 == 0 => f32::INFINITY,
            _ => f32::NAN,
        };
        Err(TensorError::NonFinite {
            path: self.path.as_ref().clone(),
            tensor: self.name.to_string(),
            index,
            value,
        })
    }

    fn wrong_dtype(&self, allowed: &[Dtype]) -> TensorError {
        let expected = allowed
            .iter()
            .map(|d| d.to_string())
            .collect::<Vec<_>>()
            .join(" or ");
        TensorError::WrongDtype {
            path: self.path.as_ref().clone(),
            tensor: self.name.to_string(),
            expected,
            actual: self.dtype,
        }
    }
}

/// Index of the first `N`-byte element of `bytes` for which `bad` holds. Blocks are tested
/// without an early exit, which the compiler vectorizes (about 10× the speed of `position` on
/// BF16); only a block with a hit is searched element by element.
fn scan<const N: usize>(bytes: &[u8], bad: impl Fn([u8; N]) -> bool + Copy) -> Option<usize> {
    const BLOCK: usize = 4096;
    fn elems<const N: usize>(block: &[u8]) -> impl Iterator<Item = [u8; N]> + '_ {
        block
            .chunks_exact(N)
            .map(|c| <[u8; N]>::try_from(c).expect("N bytes"))
    }
    for (i, block) in bytes.chunks(BLOCK * N).enumerate() {
        if elems::<N>(block).fold(false, |any, e| any | bad(e)) {
            return elems::<N>(block).position(bad).map(|j| i * BLOCK + j);
        }
    }
    None
}
