//! Paged KV storage: a bounded pool of fixed-size blocks shared by many sequences (vLLM's
//! PagedAttention layout), and [`PagedKvCache`], which owns a pool and the block tables of all
//! live sequences.
//!
//! Design: memory is committed block by block (`block_size` positions), so a sequence wastes at
//! most `block_size - 1` positions and thousands of sequences of unknown length share one fixed
//! budget. Forks share blocks by refcount; only the partially filled last block is ever copied.
//! Cost against the contiguous cache: attention walks a block list instead of one slice (one
//! extra indirection per `block_size` positions) and pays a per-block loop overhead.
//!
//! Entry points: [`BlockPool`] (allocation, refcounts, storage), [`BlockTable`] (one sequence:
//! append/advance/truncate/fork, block-wise reads), [`PagedKvCache`] (sequence ids on top).

mod pool;
mod table;

use std::collections::HashMap;

pub use pool::{BlockId, BlockPool, BlockPoolConfig};
pub use table::{BlockRows, BlockRowsIter, BlockTable};

use crate::KvError;

/// Identifies a sequence of a [`PagedKvCache`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SeqId(pub u64);

/// A block pool plus the block tables of every live sequence.
#[derive(Debug)]
pub struct PagedKvCache {
    pool: BlockPool,
    seqs: HashMap<SeqId, BlockTable>,
    next_id: u64,
    max_tokens: usize,
}

impl PagedKvCache {
    /// A cache over a new pool; each sequence holds at most `max_tokens` positions.
    pub fn new(cfg: BlockPoolConfig, max_tokens: usize) -> Result<Self, KvError> {
        Ok(Self {
            pool: BlockPool::new(cfg)?,
            seqs: HashMap::new(),
            next_id: 0,
            max_tokens,
        })
    }

    /// The pool, for reads and statistics.
    pub fn pool(&self) -> &BlockPool {
        &self.pool
    }

    /// The pool, mutably, for a prefix cache or radix tree that retains/releases blocks.
    pub fn pool_mut(&mut self) -> &mut BlockPool {
        &mut self.pool
    }

    /// Number of live sequences.
    pub fn n_sequences(&self) -> usize {
        self.seqs.len()
    }

    /// Ids of live sequences, in no particular order.
    pub fn sequence_ids(&self) -> impl Iterator<Item = SeqId> + '_ {
        self.seqs.keys().copied()
    }

    /// Starts an empty sequence.
    pub fn add_sequence(&mut self) -> SeqId {
        let t = BlockTable::new(&self.pool, self.max_tokens);
        self.insert(t)
    }

    /// Starts a sequence whose first `n_tokens` positions are cached `blocks` (e.g. a prefix-cache
    /// hit); each block is retained.
    pub fn add_sequence_with_prefix(
        &mut self,
        blocks: &[BlockId],
        n_tokens: usize,
    ) -> Result<SeqId, KvError> {
        let t = BlockTable::from_prefix(&mut self.pool, blocks, n_tokens, self.max_tokens)?;
        Ok(self.insert(t))
    }

    /// A new sequence sharing all of `seq`'s blocks (refcount + 1 each).
    pub fn fork(&mut self, seq: SeqId) -> Result<SeqId, KvError> {
        let t = self
            .seqs
            .get(&seq)
            .ok_or(KvError::UnknownSequence(seq.0))?
            .fork(&mut self.pool)?;
        Ok(self.insert(t))
    }

    /// Ends a sequence, releasing its blocks.
    pub fn remove_sequence(&mut self, seq: SeqId) -> Result<(), KvError> {
        let mut t = self
            .seqs
            .remove(&seq)
            .ok_or(KvError::UnknownSequence(seq.0))?;
        t.release(&mut self.pool)
    }

    /// The sequence's block table.
    pub fn table(&self, seq: SeqId) -> Result<&BlockTable, KvError> {
        self.seqs.get(&seq).ok_or(KvError::UnknownSequence(seq.0))
    }

    /// Committed positions of `seq`.
    pub fn len(&self, seq: SeqId) -> Result<usize, KvError> {
        Ok(self.table(seq)?.len())
    }

    /// See [`BlockTable::append`].
    pub fn append(
        &mut self,
        seq: SeqId,
        layer: usize,
        k: &[f32],
        v: &[f32],
    ) -> Result<(), KvError> {
        let t = self
            .seqs
            .get_mut(&seq)
            .ok_or(KvError::UnknownSequence(seq.0))?;
        t.append(&mut self.pool, layer, k, v)
    }

    /// See [`BlockTable::advance`].
    pub fn advance(&mut self, seq: SeqId, n_new: usize) -> Result<(), KvError> {
        self.table_mut(seq)?.advance(n_new)
    }

    /// See [`BlockTable::truncate`].
    pub fn truncate(&mut self, seq: SeqId, len: usize) -> Result<(), KvError> {
        let t = self
            .seqs
            .get_mut(&seq)
            .ok_or(KvError::UnknownSequence(seq.0))?;
        t.truncate(&mut self.pool, len)
    }

    /// See [`BlockTable::keys`].
    pub fn keys(
        &self,
        seq: SeqId,
        layer: usize,
        head: usize,
    ) -> Result<BlockRowsIter<'_>, KvError> {
        self.table(seq)?.keys(&self.pool, layer, head)
    }

    /// See [`BlockTable::values`].
    pub fn values(
        &self,
        seq: SeqId,
        layer: usize,
        head: usize,
    ) -> Result<BlockRowsIter<'_>, KvError> {
        self.table(seq)?.values(&self.pool, layer, head)
    }

    fn table_mut(&mut self, seq: SeqId) -> Result<&mut BlockTable, KvError> {
        self.seqs
            .get_mut(&seq)
            .ok_or(KvError::UnknownSequence(seq.0))
    }

    fn insert(&mut self, t: BlockTable) -> SeqId {
        let id = SeqId(self.next_id);
        self.next_id += 1;
        self.seqs.insert(id, t);
        id
    }
}
