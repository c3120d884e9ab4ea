//! Automatic prefix caching over a [`BlockPool`] (vLLM's design): full blocks are remembered
//! under a chained hash of their token ids so a new request that starts with a cached prefix
//! reuses its KV blocks instead of recomputing them.
//!
//! Identity: block `i` of a sequence is keyed by `hash(key of block i-1, tokens of block i)`, so
//! a key identifies the whole prefix up to and including that block, and lookup walks the
//! prompt block by block until the first miss: O(prompt blocks) hash-map probes. Each entry also
//! stores its parent key and token ids and lookups compare them, so a 64-bit hash collision is a
//! miss, never reuse of the wrong KV. Cost: `4 * block_size` bytes of tokens per entry.
//!
//! Ownership: the cache holds one pool reference per entry (`retain` on insert, `release` on
//! eviction). An entry is evictable only when that is the *only* reference (no running
//! sequence uses the block) and no cached child hangs off it (evicting a parent would orphan
//! its children, which can never be matched again).
//!
//! Eviction: least recently used first, until the cached bytes (`entries * block_bytes`) fit the
//! budget, or on demand with [`PrefixCache::evict_blocks`] when the pool runs dry. Recency is a
//! `BTreeSet<(tick, key)>`, so touching is O(log n); an eviction pass is O(n) over that order and
//! skips entries that are in use. A lookup touches its path deepest-first, so parents are always
//! more recent than their children and leaves go first.
//!
//! Counters: `hits` and `misses` count *blocks*: each lookup adds the number of full prompt
//! blocks found and not found.

use std::collections::{BTreeSet, HashMap};

use crate::{BlockId, BlockPool, KvError};

/// Chained hash identifying a full block and every block before it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BlockHash(pub u64);

impl BlockHash {
    /// The parent of a sequence's first block.
    pub const ROOT: BlockHash = BlockHash(0xcbf2_9ce4_8422_2325);

    /// The key of a block with token ids `tokens` following the block keyed `parent`.
    ///
    /// Deterministic across runs and platforms (no random seed), so keys could be persisted.
    pub fn chain(parent: BlockHash, tokens: &[u32]) -> BlockHash {
        let mut h = mix(parent.0 ^ 0x9e37_79b9_7f4a_7c15);
        for &t in tokens {
            h = mix(h ^ u64::from(t));
        }
        BlockHash(mix(h ^ tokens.len() as u64))
    }
}

/// splitmix64's finaliser: every input bit affects every output bit.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// The longest cached prefix of a token sequence.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PrefixMatch {
    /// Matched tokens: `blocks.len() * block_size`.
    pub n_tokens: usize,
    /// The cached blocks, in position order. Not retained: retain them (e.g. with
    /// [`crate::PagedKvCache::add_sequence_with_prefix`]) before anything can evict.
    pub blocks: Vec<BlockId>,
    /// Their keys.
    pub hashes: Vec<BlockHash>,
}

#[derive(Clone, Debug)]
struct Entry {
    parent: BlockHash,
    tokens: Box<[u32]>,
    block: BlockId,
    last_used: u64,
    /// Cached entries whose parent is this one.
    n_children: u32,
}

/// Full KV blocks keyed by chained token hashes, with LRU eviction under a byte budget.
#[derive(Clone, Debug)]
pub struct PrefixCache {
    block_size: usize,
    block_bytes: usize,
    budget_bytes: usize,
    entries: HashMap<BlockHash, Entry>,
    /// `(last_used, key)` of every entry, oldest first.
    lru: BTreeSet<(u64, BlockHash)>,
    tick: u64,
    hits: u64,
    misses: u64,
}

impl PrefixCache {
    /// A cache for blocks of `pool`'s shape holding at most `budget_bytes` of blocks.
    pub fn new(pool: &BlockPool, budget_bytes: usize) -> Self {
        Self {
            block_size: pool.block_size(),
            block_bytes: pool.block_bytes(),
            budget_bytes,
            entries: HashMap::new(),
            lru: BTreeSet::new(),
            tick: 0,
            hits: 0,
            misses: 0,
        }
    }

    /// Tokens per block.
    pub fn block_size(&self) -> usize {
        self.block_size
    }

    /// Cached blocks.
    pub fn n_cached(&self) -> usize {
        self.entries.len()
    }

    /// Bytes of cached blocks (including ones running sequences also use).
    pub fn used_bytes(&self) -> usize {
        self.entries.len() * self.block_bytes
    }

    /// The byte budget.
    pub fn budget_bytes(&self) -> usize {
        self.budget_bytes
    }

    /// Changes the budget; call [`PrefixCache::evict_to_budget`] to apply a smaller one.
    pub fn set_budget_bytes(&mut self, budget_bytes: usize) {
        self.budget_bytes = budget_bytes;
    }

    /// Blocks found by lookups so far.
    pub fn hits(&self) -> u64 {
        self.hits
    }

    /// Full prompt blocks not found by lookups so far.
    pub fn misses(&self) -> u64 {
        self.misses
    }

    /// Whether `hash` is cached.
    pub fn contains(&self, hash: BlockHash) -> bool {
        self.entries.contains_key(&hash)
    }

    /// The block cached under `hash`.
    pub fn block(&self, hash: BlockHash) -> Option<BlockId> {
        self.entries.get(&hash).map(|e| e.block)
    }

    /// Keys of cached blocks from least to most recently used.
    pub fn lru_order(&self) -> impl Iterator<Item = BlockHash> + '_ {
        self.lru.iter().map(|&(_, h)| h)
    }

    /// Finds the longest cached prefix of `tokens` in whole blocks, marks it recently used and
    /// updates the hit/miss counters.
    pub fn lookup(&mut self, tokens: &[u32]) -> PrefixMatch {
        let mut m = PrefixMatch::default();
        let mut parent = BlockHash::ROOT;
        let n_full = tokens.len() / self.block_size;
        for chunk in tokens.chunks_exact(self.block_size) {
            let h = BlockHash::chain(parent, chunk);
            match self.entries.get(&h) {
                Some(e) if e.parent == parent && *e.tokens == *chunk => m.blocks.push(e.block),
                _ => break,
            }
            m.hashes.push(h);
            parent = h;
        }
        // Deepest first, so parents end up more recent than children.
        for &h in m.hashes.iter().rev() {
            self.touch(h);
        }
        m.n_tokens = m.blocks.len() * self.block_size;
        self.hits += m.blocks.len() as u64;
        self.misses += (n_full - m.blocks.len()) as u64;
        m
    }

    /// Caches the full blocks of a sequence after its prefill: `blocks[i]` holds the KV of
    /// `tokens[i * block_size..(i + 1) * block_size]`. Blocks already cached are only touched;
    /// new ones are retained in `pool`. Then evicts down to the budget. Returns the number of
    /// newly cached blocks.
    ///
    /// The caller must not write to these blocks afterwards except through copy-on-write (a
    /// [`crate::BlockTable`] does this automatically since the cache holds a reference).
    pub fn insert(
        &mut self,
        pool: &mut BlockPool,
        tokens: &[u32],
        blocks: &[BlockId],
    ) -> Result<usize, KvError> {
        if pool.block_size() != self.block_size || pool.block_bytes() != self.block_bytes {
            return Err(KvError::InvalidConfig(format!(
                "prefix cache built for block_size {} but pool has {}",
                self.block_size,
                pool.block_size()
            )));
        }
        let mut parent = BlockHash::ROOT;
        let mut inserted = 0;
        let mut path = Vec::new();
        for (chunk, &block) in tokens.chunks_exact(self.block_size).zip(blocks) {
            let h = BlockHash::chain(parent, chunk);
            match self.entries.get(&h) {
                Some(e) if e.parent == parent && *e.tokens == *chunk => {}
                // A hash collision with a different prefix: stop, since every later key would
                // chain from an ambiguous parent.
                Some(_) => break,
                None => {
                    pool.retain(block)?;
                    // ROOT is not an entry; the guard only matters if an entry's key equals
                    // ROOT by a 2^-64 accident.
                    if let Some(p) = self
                        .entries
                        .get_mut(&parent)
                        .filter(|_| parent != BlockHash::ROOT)
                    {
                        p.n_children += 1;
                    }
                    let e = Entry {
                        parent,
                        tokens: chunk.into(),
                        block,
                        last_used: 0,
                        n_children: 0,
                    };
                    self.entries.insert(h, e);
                    self.lru.insert((0, h));
                    inserted += 1;
                }
            }
            path.push(h);
            parent = h;
        }
        for &h in path.iter().rev() {
            self.touch(h);
        }
        self.evict_to_budget(pool)?;
        Ok(inserted)
    }

    /// Evicts least recently used unreferenced leaves until the cache fits its budget (or
    /// nothing more can go). Returns the number of blocks evicted.
    pub fn evict_to_budget(&mut self, pool: &mut BlockPool) -> Result<usize, KvError> {
        let excess = self.used_bytes().saturating_sub(self.budget_bytes);
        self.evict_blocks(pool, excess.div_ceil(self.block_bytes.max(1)))
    }

    /// Evicts up to `n` least recently used unreferenced leaves, releasing their blocks to the
    /// pool (so they become free unless something retained them meanwhile). Returns how many
    /// were evicted: fewer than `n` when the rest are in use.
    pub fn evict_blocks(&mut self, pool: &mut BlockPool, n: usize) -> Result<usize, KvError> {
        let mut evicted = 0;
        while evicted < n {
            let before = evicted;
            // One pass in LRU order. A parent freed by evicting its last child is usually later
            // in the order (more recent), so is seen in the same pass; otherwise the next pass
            // finds it.
            let order: Vec<BlockHash> = self.lru.iter().map(|&(_, h)| h).collect();
            for h in order {
                if evicted == n {
                    break;
                }
                let Some(e) = self.entries.get(&h) else {
                    continue;
                };
                if e.n_children > 0 || pool.refcount(e.block) > 1 {
                    continue;
                }
                self.remove(pool, h)?;
                evicted += 1;
            }
            if evicted == before {
                break;
            }
        }
        Ok(evicted)
    }

    /// Drops every entry (releasing the cache's reference to each block) and resets counters.
    pub fn clear(&mut self, pool: &mut BlockPool) -> Result<(), KvError> {
        for (_, e) in self.entries.drain() {
            pool.release(e.block)?;
        }
        self.lru.clear();
        self.hits = 0;
        self.misses = 0;
        Ok(())
    }

    fn remove(&mut self, pool: &mut BlockPool, h: BlockHash) -> Result<(), KvError> {
        if let Some(e) = self.entries.remove(&h) {
            self.lru.remove(&(e.last_used, h));
            if let Some(p) = (e.parent != BlockHash::ROOT)
                .then_some(())
                .and_then(|()| self.entries.get_mut(&e.parent))
            {
                p.n_children -= 1;
            }
            pool.release(e.block)?;
        }
        Ok(())
    }

    fn touch(&mut self, h: BlockHash) {
        self.tick += 1;
        if let Some(e) = self.entries.get_mut(&h) {
            self.lru.remove(&(e.last_used, h));
            e.last_used = self.tick;
            self.lru.insert((self.tick, h));
        }
    }
}
