//! Contiguous single-sequence KV cache: the layout a one-user CPU engine wants.
//!
//! Layout: per layer, one key and one value buffer shaped `(n_kv_heads, capacity, head_dim)`.
//! Putting the head outermost makes each head's rows one contiguous slice, so attention for a
//! query head does one dot product per position over consecutive memory and [`KvCache::keys`] is
//! a borrow, not a gather.
//!
//! Growth: nothing is allocated in `new`. The first append allocates; when a layer needs rows
//! beyond `capacity`, every layer is re-laid out at `max(needed, 2 * capacity, 16)` rows (capped
//! at `max_tokens`). Doubling keeps the total copying O(final length) (amortised O(1) per token)
//! and the number of reallocations O(log max_tokens); call [`KvCache::reserve`] up front to avoid
//! them during decode entirely. The cost is up to 2x over-allocation until the cap is reached.
//!
//! Memory: `tokens * n_layers * n_kv_heads * head_dim * 2 (K and V) * bytes_per_element`.
//! Qwen3-0.6B (28 layers, 8 KV heads, head_dim 128) in bf16 is 112 KiB per token, 4.4 GiB at
//! its 40960-token context.
//!
//! Protocol: the model calls [`KvCache::append`] once per layer with the step's new rows (they
//! become readable for that layer at once, as "pending" rows, so attention can include them),
//! then [`KvCache::advance`] once to commit them for all layers.

use crate::dtype::KvBuf;
use crate::{KvDtype, KvError, KvRows};

/// Smallest capacity the first allocation takes, so a decode-only session does not reallocate
/// on each of its first few tokens.
const MIN_CAPACITY: usize = 16;

/// A contiguous, lazily grown KV cache for one sequence.
#[derive(Clone, Debug)]
pub struct KvCache {
    n_layers: usize,
    n_kv_heads: usize,
    head_dim: usize,
    max_tokens: usize,
    dtype: KvDtype,
    /// Rows allocated per head (same for every layer).
    capacity: usize,
    /// Committed positions.
    len: usize,
    /// Per layer: positions appended after `len` but not yet committed by `advance`.
    pending: Vec<usize>,
    /// Per layer: `(n_kv_heads, capacity, head_dim)`.
    keys: Vec<KvBuf>,
    /// Per layer: `(n_kv_heads, capacity, head_dim)`.
    values: Vec<KvBuf>,
}

impl KvCache {
    /// Describes a cache; allocates nothing until the first append.
    pub fn new(
        n_layers: usize,
        n_kv_heads: usize,
        head_dim: usize,
        max_tokens: usize,
        dtype: KvDtype,
    ) -> Self {
        Self {
            n_layers,
            n_kv_heads,
            head_dim,
            max_tokens,
            dtype,
            capacity: 0,
            len: 0,
            pending: vec![0; n_layers],
            keys: (0..n_layers).map(|_| KvBuf::new(dtype)).collect(),
            values: (0..n_layers).map(|_| KvBuf::new(dtype)).collect(),
        }
    }

    /// Committed positions.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no position is committed.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The context bound set in `new`.
    pub fn max_tokens(&self) -> usize {
        self.max_tokens
    }

    /// Element type of the stored rows.
    pub fn dtype(&self) -> KvDtype {
        self.dtype
    }

    /// Number of layers.
    pub fn n_layers(&self) -> usize {
        self.n_layers
    }

    /// Number of KV heads per layer.
    pub fn n_kv_heads(&self) -> usize {
        self.n_kv_heads
    }

    /// Elements per head row.
    pub fn head_dim(&self) -> usize {
        self.head_dim
    }

    /// Rows currently allocated per head.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Positions appended to `layer` but not yet committed (0 for an out-of-range layer).
    pub fn pending(&self, layer: usize) -> usize {
        self.pending.get(layer).copied().unwrap_or(0)
    }

    /// Bytes one position takes across all layers, K and V.
    pub fn bytes_per_token(&self) -> usize {
        self.n_layers * self.n_kv_heads * self.head_dim * 2 * self.dtype.bytes_per_element()
    }

    /// Bytes currently allocated for K and V (`capacity * bytes_per_token`).
    pub fn allocated_bytes(&self) -> usize {
        self.capacity * self.bytes_per_token()
    }

    /// Grows capacity to at least `min(n_tokens, max_tokens)` now, so later appends up to that
    /// length never reallocate.
    pub fn reserve(&mut self, n_tokens: usize) {
        let target = n_tokens.min(self.max_tokens);
        if target > self.capacity {
            self.relayout(target);
        }
    }

    /// Stores keys/values for positions `len + pending..len + pending + n_new` of one layer; `k`
    /// and `v` are `(n_new, n_kv_heads * head_dim)` row-major f32.
    ///
    /// Errors with [`KvError::ContextFull`] if that would pass `max_tokens` (nothing is
    /// written), and with `LayerOutOfRange` / `ShapeMismatch` for bad arguments.
    pub fn append(&mut self, layer: usize, k: &[f32], v: &[f32]) -> Result<(), KvError> {
        if layer >= self.n_layers {
            return Err(KvError::LayerOutOfRange {
                layer,
                n_layers: self.n_layers,
            });
        }
        let row = self.n_kv_heads * self.head_dim;
        let n_new = check_rows(row, k, v)?;
        let start = self.len + self.pending[layer];
        let end = start + n_new;
        if end > self.max_tokens {
            return Err(KvError::ContextFull {
                needed: end,
                max: self.max_tokens,
            });
        }
        if end > self.capacity {
            self.relayout(grown_capacity(self.capacity, end, self.max_tokens));
        }
        let (hd, cap) = (self.head_dim, self.capacity);
        for t in 0..n_new {
            for h in 0..self.n_kv_heads {
                let src = t * row + h * hd..t * row + (h + 1) * hd;
                let dst = (h * cap + start + t) * hd;
                self.keys[layer].write_f32(dst, &k[src.clone()]);
                self.values[layer].write_f32(dst, &v[src]);
            }
        }
        self.pending[layer] += n_new;
        Ok(())
    }

    /// Commits `n_new` positions after every layer has been appended.
    ///
    /// A layer that appended fewer than `n_new` rows reads zeros (or stale rows) at the missing
    /// positions: that is a bug in the caller, but not memory-unsafe, so it is tolerated rather
    /// than panicking. The length never passes `max_tokens`.
    pub fn advance(&mut self, n_new: usize) {
        let new_len = (self.len + n_new).min(self.max_tokens);
        let committed = new_len - self.len;
        if new_len > self.capacity {
            self.relayout(grown_capacity(self.capacity, new_len, self.max_tokens));
        }
        self.len = new_len;
        for p in &mut self.pending {
            *p = p.saturating_sub(committed);
        }
    }

    /// Drops positions `>= len` (and every pending row); keeps the allocation for reuse.
    pub fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
        self.pending.iter_mut().for_each(|p| *p = 0);
    }

    /// Drops every position; keeps the allocation for the next conversation.
    pub fn clear(&mut self) {
        self.truncate(0);
    }

    /// Drops every position and frees the allocation.
    pub fn release(&mut self) {
        self.clear();
        self.capacity = 0;
        self.keys.iter_mut().for_each(KvBuf::release);
        self.values.iter_mut().for_each(KvBuf::release);
    }

    /// Keys of one KV head of one layer for positions `0..len + pending(layer)`, `(n_pos,
    /// head_dim)` row-major and contiguous.
    ///
    /// # Panics
    /// If `layer >= n_layers` or `kv_head >= n_kv_heads`: the model's loop bounds come from the
    /// same config as the cache, so a bad index is a bug, like a slice index out of bounds.
    pub fn keys(&self, layer: usize, kv_head: usize) -> KvRows<'_> {
        self.head_rows(&self.keys, layer, kv_head)
    }

    /// Values of one KV head of one layer; same shape and panics as [`KvCache::keys`].
    pub fn values(&self, layer: usize, kv_head: usize) -> KvRows<'_> {
        self.head_rows(&self.values, layer, kv_head)
    }

    fn head_rows<'a>(&self, bufs: &'a [KvBuf], layer: usize, kv_head: usize) -> KvRows<'a> {
        assert!(layer < self.n_layers, "layer {layer} >= {}", self.n_layers);
        assert!(
            kv_head < self.n_kv_heads,
            "kv_head {kv_head} >= {}",
            self.n_kv_heads
        );
        let n = self.len + self.pending[layer];
        let start = kv_head * self.capacity * self.head_dim;
        bufs[layer].rows(start..start + n * self.head_dim)
    }

    /// Re-lays every layer out at `new_cap` rows per head, keeping the rows in use.
    fn relayout(&mut self, new_cap: usize) {
        let (old_cap, hd, nh) = (self.capacity, self.head_dim, self.n_kv_heads);
        for layer in 0..self.n_layers {
            let used = (self.len + self.pending[layer]).min(old_cap) * hd;
            for buf in [&mut self.keys[layer], &mut self.values[layer]] {
                buf.resize_exact(nh * new_cap * hd);
                // Move the last head first: head h's new start is at or after its old start and
                // at or after the old end of every lower head, so no unmoved row is overwritten.
                for h in (1..nh).rev() {
                    let src = h * old_cap * hd;
                    buf.copy_within(src..src + used, h * new_cap * hd);
                }
            }
        }
        self.capacity = new_cap;
    }
}

/// `max(needed, 2 * cap, MIN_CAPACITY)`, capped at `max_tokens` (and never below `needed`,
/// which callers have already checked against `max_tokens`).
fn grown_capacity(cap: usize, needed: usize, max_tokens: usize) -> usize {
    needed
        .max(cap.saturating_mul(2))
        .max(MIN_CAPACITY)
        .min(max_tokens)
        .max(needed)
}

/// Number of rows in `k` and `v` for a row width of `row` elements, or a shape error.
pub(crate) fn check_rows(row: usize, k: &[f32], v: &[f32]) -> Result<usize, KvError> {
    if v.len() != k.len() {
        return Err(KvError::ShapeMismatch {
            what: "values (must match keys)",
            expected: k.len(),
            got: v.len(),
        });
    }
    if row == 0 {
        return if k.is_empty() {
            Ok(0)
        } else {
            Err(KvError::ShapeMismatch {
                what: "keys (the cache has zero-width rows)",
                expected: 0,
                got: k.len(),
            })
        };
    }
    if !k.len().is_multiple_of(row) {
        return Err(KvError::ShapeMismatch {
            what: "keys (n_new * n_kv_heads * head_dim)",
            expected: k.len().div_ceil(row) * row,
            got: k.len(),
        });
    }
    Ok(k.len() / row)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lazy_then_doubling() {
        let mut c = KvCache::new(2, 2, 4, 100, KvDtype::F32);
        assert_eq!(c.allocated_bytes(), 0);
        let row = vec![1.0; 8];
        for step in 0..20 {
            for l in 0..2 {
                c.append(l, &row, &row).unwrap();
            }
            c.advance(1);
            assert!(c.capacity() > step);
        }
        assert_eq!(c.capacity(), 32);
        assert_eq!(c.allocated_bytes(), 32 * c.bytes_per_token());
    }

    #[test]
    fn growth_is_capped() {
        assert_eq!(grown_capacity(0, 1, 10), 10);
        assert_eq!(grown_capacity(16, 17, 20), 20);
        assert_eq!(grown_capacity(16, 17, 1000), 32);
        assert_eq!(grown_capacity(16, 100, 1000), 100);
    }

    #[test]
    fn shape_errors() {
        let mut c = KvCache::new(1, 2, 4, 10, KvDtype::F32);
        assert!(matches!(
            c.append(0, &[0.0; 7], &[0.0; 7]),
            Err(KvError::ShapeMismatch { .. })
        ));
        assert!(matches!(
            c.append(0, &[0.0; 8], &[0.0; 16]),
            Err(KvError::ShapeMismatch { .. })
        ));
        assert!(matches!(
            c.append(1, &[0.0; 8], &[0.0; 8]),
            Err(KvError::LayerOutOfRange { .. })
        ));
        assert_eq!(c.len(), 0);
    }
}
