//! Per-sequence block table: maps a sequence's positions onto pool blocks, appends with
//! copy-on-write, and iterates a head's rows block by block for paged attention.
//!
//! Position `p` lives in `blocks[p / block_size]` at slot `p % block_size`. Appends follow the
//! contiguous cache's protocol: `append` per layer (rows become readable for that layer as
//! "pending"), then `advance` once for all layers.
//!
//! Copy-on-write: before writing positions `start..end`, every block they touch that is shared
//! (pool refcount > 1, because of a `fork` or a prefix-cache entry) is replaced by a private copy
//! of all its layers, and missing blocks are allocated. The number of blocks needed is counted
//! first and checked against the pool, so `PoolExhausted` leaves the table and pool untouched.
//! Cost: one block copy per diverging fork, only for the partially filled last block; full
//! blocks are never written again and stay shared.
//!
//! A table owns one reference to each of its blocks: drop it through [`BlockTable::release`]
//! (or [`crate::PagedKvCache::remove_sequence`]) or the blocks stay allocated.

use crate::contiguous::check_rows;
use crate::{BlockId, BlockPool, KvError, KvRows};

/// The blocks of one sequence, plus its committed length and per-layer pending rows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlockTable {
    blocks: Vec<BlockId>,
    len: usize,
    /// Per layer: rows appended after `len`, not yet committed.
    pending: Vec<usize>,
    max_tokens: usize,
}

/// The valid rows of one block for one (layer, head): what a paged-attention loop consumes.
#[derive(Clone, Copy, Debug)]
pub struct BlockRows<'a> {
    /// The block these rows come from.
    pub block: BlockId,
    /// Sequence position of the first row.
    pub start_pos: usize,
    /// Number of valid rows (`block_size` except possibly in the last block).
    pub n_valid: usize,
    /// `(n_valid, head_dim)` rows in the pool's element type.
    pub rows: KvRows<'a>,
}

impl BlockTable {
    /// An empty table for sequences of at most `max_tokens` positions in `pool`.
    pub fn new(pool: &BlockPool, max_tokens: usize) -> Self {
        Self {
            blocks: Vec::new(),
            len: 0,
            pending: vec![0; pool.config().n_layers],
            max_tokens,
        }
    }

    /// A table whose first `n_tokens` positions are the given (cached) blocks; retains each.
    /// `blocks.len()` must be exactly `ceil(n_tokens / block_size)`.
    pub fn from_prefix(
        pool: &mut BlockPool,
        blocks: &[BlockId],
        n_tokens: usize,
        max_tokens: usize,
    ) -> Result<Self, KvError> {
        let expected = n_tokens.div_ceil(pool.block_size());
        if blocks.len() != expected {
            return Err(KvError::ShapeMismatch {
                what: "prefix blocks (ceil(n_tokens / block_size))",
                expected,
                got: blocks.len(),
            });
        }
        if n_tokens > max_tokens {
            return Err(KvError::ContextFull {
                needed: n_tokens,
                max: max_tokens,
            });
        }
        // Check every block before retaining any, so an error leaves refcounts unchanged.
        for &b in blocks {
            if pool.is_free(b) {
                return Err(KvError::BlockNotInUse(b.0));
            }
        }
        for &b in blocks {
            pool.retain(b)?;
        }
        let mut t = Self::new(pool, max_tokens);
        t.blocks = blocks.to_vec();
        t.len = n_tokens;
        Ok(t)
    }

    /// Committed positions.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no position is committed.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The context bound.
    pub fn max_tokens(&self) -> usize {
        self.max_tokens
    }

    /// Rows appended to `layer` and not yet committed (0 for an out-of-range layer).
    pub fn pending(&self, layer: usize) -> usize {
        self.pending.get(layer).copied().unwrap_or(0)
    }

    /// The blocks, in position order.
    pub fn blocks(&self) -> &[BlockId] {
        &self.blocks
    }

    /// A second table sharing every block (each retained once more). O(blocks).
    pub fn fork(&self, pool: &mut BlockPool) -> Result<Self, KvError> {
        for &b in &self.blocks {
            pool.retain(b)?;
        }
        Ok(self.clone())
    }

    /// Stores keys/values for positions `len + pending(layer)..` of one layer; `k`, `v` are
    /// `(n_new, n_kv_heads * head_dim)` row-major f32. Allocates and copies-on-write as needed.
    pub fn append(
        &mut self,
        pool: &mut BlockPool,
        layer: usize,
        k: &[f32],
        v: &[f32],
    ) -> Result<(), KvError> {
        let cfg = *pool.config();
        if layer >= cfg.n_layers {
            return Err(KvError::LayerOutOfRange {
                layer,
                n_layers: cfg.n_layers,
            });
        }
        let row = cfg.n_kv_heads * cfg.head_dim;
        let n_new = check_rows(row, k, v)?;
        let start = self.len + self.pending[layer];
        let end = start + n_new;
        if end > self.max_tokens {
            return Err(KvError::ContextFull {
                needed: end,
                max: self.max_tokens,
            });
        }
        if n_new == 0 {
            return Ok(());
        }
        self.make_writable(pool, start, end)?;
        let bs = cfg.block_size;
        let mut t = 0;
        while t < n_new {
            let pos = start + t;
            let (bi, slot) = (pos / bs, pos % bs);
            let take = (bs - slot).min(n_new - t);
            let r = t * row..(t + take) * row;
            pool.write(self.blocks[bi], layer, slot, &k[r.clone()], &v[r])?;
            t += take;
        }
        self.pending[layer] += n_new;
        Ok(())
    }

    /// Commits `n_new` positions; every layer must have appended at least that many.
    pub fn advance(&mut self, n_new: usize) -> Result<(), KvError> {
        if let Some((layer, &appended)) = self.pending.iter().enumerate().find(|(_, &p)| p < n_new)
        {
            return Err(KvError::NotAppended {
                requested: n_new,
                layer,
                appended,
            });
        }
        self.len += n_new;
        self.pending.iter_mut().for_each(|p| *p -= n_new);
        Ok(())
    }

    /// Drops positions `>= len` and all pending rows, releasing blocks no longer needed.
    pub fn truncate(&mut self, pool: &mut BlockPool, len: usize) -> Result<(), KvError> {
        self.len = self.len.min(len);
        self.pending.iter_mut().for_each(|p| *p = 0);
        let keep = self.len.div_ceil(pool.block_size());
        for b in self.blocks.drain(keep.min(self.blocks.len())..) {
            pool.release(b)?;
        }
        Ok(())
    }

    /// Releases every block and empties the table.
    pub fn release(&mut self, pool: &mut BlockPool) -> Result<(), KvError> {
        self.truncate(pool, 0)
    }

    /// Key rows of one (layer, head) for positions `0..len + pending(layer)`, block by block.
    pub fn keys<'a>(
        &'a self,
        pool: &'a BlockPool,
        layer: usize,
        head: usize,
    ) -> Result<BlockRowsIter<'a>, KvError> {
        self.rows_iter(pool, layer, head, true)
    }

    /// Value rows of one (layer, head); see [`BlockTable::keys`].
    pub fn values<'a>(
        &'a self,
        pool: &'a BlockPool,
        layer: usize,
        head: usize,
    ) -> Result<BlockRowsIter<'a>, KvError> {
        self.rows_iter(pool, layer, head, false)
    }

    fn rows_iter<'a>(
        &'a self,
        pool: &'a BlockPool,
        layer: usize,
        head: usize,
        keys: bool,
    ) -> Result<BlockRowsIter<'a>, KvError> {
        let n_pos = self.len + self.pending(layer);
        let n_blocks = n_pos.div_ceil(pool.block_size());
        // Validate layer, head and every block now, so iteration itself cannot fail.
        pool.check_layer_head(layer, head)?;
        let blocks = &self.blocks[..n_blocks.min(self.blocks.len())];
        for &b in blocks {
            pool.block_keys(b, layer, head)?;
        }
        Ok(BlockRowsIter {
            pool,
            blocks,
            layer,
            head,
            keys,
            next: 0,
            n_pos,
        })
    }

    /// Counts the blocks `start..end` needs (new or copy-on-write), checks the pool can supply
    /// them, then allocates/copies. All-or-nothing.
    fn make_writable(
        &mut self,
        pool: &mut BlockPool,
        start: usize,
        end: usize,
    ) -> Result<(), KvError> {
        let bs = pool.block_size();
        let (first, last) = (start / bs, (end - 1) / bs);
        let needed = (first..=last)
            .filter(|&i| self.blocks.get(i).is_none_or(|&b| pool.refcount(b) > 1))
            .count();
        if needed > pool.n_free() {
            return Err(KvError::PoolExhausted {
                needed,
                free: pool.n_free(),
            });
        }
        for i in first..=last {
            match self.blocks.get(i).copied() {
                None => {
                    let b = pool.allocate()?;
                    self.blocks.push(b);
                }
                Some(old) if pool.refcount(old) > 1 => {
                    let new = pool.allocate()?;
                    pool.copy_block(old, new)?;
                    pool.release(old)?;
                    self.blocks[i] = new;
                }
                Some(_) => {}
            }
        }
        Ok(())
    }
}

/// Iterator over the [`BlockRows`] of one (layer, head) of a sequence.
#[derive(Clone, Debug)]
pub struct BlockRowsIter<'a> {
    pool: &'a BlockPool,
    blocks: &'a [BlockId],
    layer: usize,
    head: usize,
    keys: bool,
    next: usize,
    n_pos: usize,
}

impl<'a> Iterator for BlockRowsIter<'a> {
    type Item = BlockRows<'a>;

    fn next(&mut self) -> Option<BlockRows<'a>> {
        let &block = self.blocks.get(self.next)?;
        let bs = self.pool.block_size();
        let start_pos = self.next * bs;
        let n_valid = (self.n_pos - start_pos).min(bs);
        self.next += 1;
        // Cannot fail: `rows_iter` validated every block, layer and head, and the pool is
        // borrowed immutably for the iterator's lifetime.
        let all = if self.keys {
            self.pool.block_keys(block, self.layer, self.head).ok()?
        } else {
            self.pool.block_values(block, self.layer, self.head).ok()?
        };
        let n = n_valid * self.pool.config().head_dim;
        let rows = match all {
            KvRows::F32(s) => KvRows::F32(&s[..n]),
            KvRows::Bf16(s) => KvRows::Bf16(&s[..n]),
            KvRows::F16(s) => KvRows::F16(&s[..n]),
        };
        Some(BlockRows {
            block,
            start_pos,
            n_valid,
            rows,
        })
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = self.blocks.len() - self.next;
        (n, Some(n))
    }
}

impl ExactSizeIterator for BlockRowsIter<'_> {}
