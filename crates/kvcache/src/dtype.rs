//! Element types of stored keys and values, the borrowed row view handed to attention, and the
//! typed buffer both cache layouts store into.
//!
//! Design: the model computes K and V in f32; the cache converts once on `append` (round to
//! nearest even for bf16/f16) and hands attention rows in the *stored* type, so a kernel can
//! fuse the widening into its dot product instead of materialising an f32 copy. [`KvRows`] is an
//! enum rather than a generic so a caller matches once per head, not once per element.
//!
//! Cost: bf16/f16 halve memory and bandwidth against f32; bf16 keeps f32's range with 8 bits of
//! mantissa (relative error <= 2^-9), f16 keeps 11 bits but overflows above 65504.

use std::fmt;
use std::str::FromStr;

use half::{bf16, f16, slice::HalfFloatSliceExt};

use crate::KvError;

/// Element type the cache stores keys and values in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KvDtype {
    /// 4 bytes per element, exact.
    F32,
    /// 2 bytes per element, f32's exponent range, 8-bit mantissa.
    Bf16,
    /// 2 bytes per element, IEEE half precision.
    F16,
}

impl KvDtype {
    /// Size of one stored element.
    pub const fn bytes_per_element(self) -> usize {
        match self {
            KvDtype::F32 => 4,
            KvDtype::Bf16 | KvDtype::F16 => 2,
        }
    }

    /// The lowercase name `FromStr` accepts.
    pub const fn as_str(self) -> &'static str {
        match self {
            KvDtype::F32 => "f32",
            KvDtype::Bf16 => "bf16",
            KvDtype::F16 => "f16",
        }
    }
}

impl fmt::Display for KvDtype {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for KvDtype {
    type Err = KvError;

    /// Accepts "f32", "bf16", "f16" in any ASCII case, since the names come from command lines.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "f32" => Ok(KvDtype::F32),
            "bf16" => Ok(KvDtype::Bf16),
            "f16" => Ok(KvDtype::F16),
            _ => Err(KvError::UnknownDtype(s.to_owned())),
        }
    }
}

/// Rows of one head, `(n_pos, head_dim)` row-major, in the cache's element type.
#[derive(Clone, Copy, Debug)]
pub enum KvRows<'a> {
    /// Rows stored as f32.
    F32(&'a [f32]),
    /// Rows stored as bf16.
    Bf16(&'a [bf16]),
    /// Rows stored as f16.
    F16(&'a [f16]),
}

impl<'a> KvRows<'a> {
    /// Number of elements (`n_rows * head_dim`).
    pub fn len(&self) -> usize {
        match self {
            KvRows::F32(s) => s.len(),
            KvRows::Bf16(s) => s.len(),
            KvRows::F16(s) => s.len(),
        }
    }

    /// Whether there are no rows.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Element type of the rows.
    pub fn dtype(&self) -> KvDtype {
        match self {
            KvRows::F32(_) => KvDtype::F32,
            KvRows::Bf16(_) => KvDtype::Bf16,
            KvRows::F16(_) => KvDtype::F16,
        }
    }

    /// The rows' storage as bytes (to prefetch them, say).
    pub fn as_bytes(&self) -> &'a [u8] {
        match *self {
            KvRows::F32(s) => bytemuck::cast_slice(s),
            KvRows::Bf16(s) => bytemuck::cast_slice(s),
            KvRows::F16(s) => bytemuck::cast_slice(s),
        }
    }

    /// Number of rows of `head_dim` elements (0 when `head_dim` is 0).
    pub fn n_rows(&self, head_dim: usize) -> usize {
        self.len().checked_div(head_dim).unwrap_or(0)
    }

    /// The first `n_rows` rows of `head_dim` elements: a borrow, for a causal mask that stops
    /// short of the rows stored.
    ///
    /// # Panics
    /// If `n_rows * head_dim > self.len()`, like a slice index out of bounds.
    pub fn first_rows(self, n_rows: usize, head_dim: usize) -> KvRows<'a> {
        let n = n_rows * head_dim;
        match self {
            KvRows::F32(s) => KvRows::F32(&s[..n]),
            KvRows::Bf16(s) => KvRows::Bf16(&s[..n]),
            KvRows::F16(s) => KvRows::F16(&s[..n]),
        }
    }

    /// Widens row `pos` into `out`.
    ///
    /// # Panics
    /// If `out.len() != head_dim` or `pos >= self.n_rows(head_dim)`: both are caller bugs in the
    /// attention loop, like a slice index out of bounds.
    pub fn row_to_f32(&self, pos: usize, head_dim: usize, out: &mut [f32]) {
        assert_eq!(out.len(), head_dim, "output row length must equal head_dim");
        let r = pos * head_dim..(pos + 1) * head_dim;
        match self {
            KvRows::F32(s) => out.copy_from_slice(&s[r]),
            KvRows::Bf16(s) => s[r].convert_to_f32_slice(out),
            KvRows::F16(s) => s[r].convert_to_f32_slice(out),
        }
    }

    /// Widens every row into a new `(n_rows, head_dim)` f32 vector; for tests and debugging,
    /// not the decode loop (it allocates).
    pub fn to_f32_vec(&self) -> Vec<f32> {
        match self {
            KvRows::F32(s) => s.to_vec(),
            KvRows::Bf16(s) => s.to_f32_vec(),
            KvRows::F16(s) => s.to_f32_vec(),
        }
    }
}

/// Typed, growable element storage shared by the contiguous cache and the block pool.
#[derive(Clone, Debug)]
pub(crate) enum KvBuf {
    F32(Vec<f32>),
    Bf16(Vec<bf16>),
    F16(Vec<f16>),
}

impl KvBuf {
    pub(crate) fn new(dtype: KvDtype) -> Self {
        match dtype {
            KvDtype::F32 => KvBuf::F32(Vec::new()),
            KvDtype::Bf16 => KvBuf::Bf16(Vec::new()),
            KvDtype::F16 => KvBuf::F16(Vec::new()),
        }
    }

    pub(crate) fn len(&self) -> usize {
        match self {
            KvBuf::F32(v) => v.len(),
            KvBuf::Bf16(v) => v.len(),
            KvBuf::F16(v) => v.len(),
        }
    }

    /// Allocated room, in elements.
    pub(crate) fn capacity(&self) -> usize {
        match self {
            KvBuf::F32(v) => v.capacity(),
            KvBuf::Bf16(v) => v.capacity(),
            KvBuf::F16(v) => v.capacity(),
        }
    }

    /// Reserves room for `len` elements in all if the allocator grants it, and leaves the
    /// buffer as it was if not. A large fresh allocation is address space only (the OS maps
    /// pages on first touch), so later growth up to `len` neither copies nor costs memory early.
    pub(crate) fn try_reserve_total(&mut self, len: usize) {
        fn go<T>(v: &mut Vec<T>, len: usize) {
            // Refused: growth falls back to reallocating, which is slower but correct.
            let _ = v.try_reserve_exact(len.saturating_sub(v.len()));
        }
        match self {
            KvBuf::F32(v) => go(v, len),
            KvBuf::Bf16(v) => go(v, len),
            KvBuf::F16(v) => go(v, len),
        }
    }

    /// Grows (zero-filled) or shrinks to exactly `len` elements, reserving exactly, so a cache
    /// capped at N elements never holds a Vec allocation larger than N.
    pub(crate) fn resize_exact(&mut self, len: usize) {
        fn go<T: Copy + Default>(v: &mut Vec<T>, len: usize) {
            if len > v.capacity() {
                v.reserve_exact(len - v.len());
            }
            v.resize(len, T::default());
        }
        match self {
            KvBuf::F32(v) => go(v, len),
            KvBuf::Bf16(v) => go(v, len),
            KvBuf::F16(v) => go(v, len),
        }
    }

    /// Frees the allocation.
    pub(crate) fn release(&mut self) {
        match self {
            KvBuf::F32(v) => *v = Vec::new(),
            KvBuf::Bf16(v) => *v = Vec::new(),
            KvBuf::F16(v) => *v = Vec::new(),
        }
    }

    /// Converts `src` into elements `at..at + src.len()`. The range must be in bounds (callers
    /// check shapes and return `KvError` first).
    pub(crate) fn write_f32(&mut self, at: usize, src: &[f32]) {
        let r = at..at + src.len();
        match self {
            KvBuf::F32(v) => v[r].copy_from_slice(src),
            KvBuf::Bf16(v) => v[r].convert_from_f32_slice(src),
            KvBuf::F16(v) => v[r].convert_from_f32_slice(src),
        }
    }

    /// `copy_within` on the underlying slice.
    pub(crate) fn copy_within(&mut self, src: std::ops::Range<usize>, dst: usize) {
        match self {
            KvBuf::F32(v) => v.copy_within(src, dst),
            KvBuf::Bf16(v) => v.copy_within(src, dst),
            KvBuf::F16(v) => v.copy_within(src, dst),
        }
    }

    /// Borrows `range` as rows.
    pub(crate) fn rows(&self, range: std::ops::Range<usize>) -> KvRows<'_> {
        match self {
            KvBuf::F32(v) => KvRows::F32(&v[range]),
            KvBuf::Bf16(v) => KvRows::Bf16(&v[range]),
            KvBuf::F16(v) => KvRows::F16(&v[range]),
        }
    }
}
