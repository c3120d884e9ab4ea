//! Prefix cache: hash chaining, longest-prefix lookup, counters, LRU eviction under a budget,
//! in-use and parent blocks surviving eviction.

use nano_infer_kvcache::{BlockHash, BlockId, BlockPool, BlockPoolConfig, KvDtype, PrefixCache};

const BS: usize = 4;

fn pool(n_blocks: usize) -> BlockPool {
    BlockPool::new(BlockPoolConfig {
        n_layers: 1,
        n_kv_heads: 1,
        head_dim: 2,
        block_size: BS,
        n_blocks,
        dtype: KvDtype::F32,
    })
    .unwrap()
}

/// Allocates blocks for `tokens` as a prefill would, caches them, then drops the sequence's
/// own references so only the cache holds them.
fn cache_sequence(p: &mut BlockPool, c: &mut PrefixCache, tokens: &[u32]) -> Vec<BlockId> {
    let blocks: Vec<_> = (0..tokens.len().div_ceil(BS))
        .map(|_| p.allocate().unwrap())
        .collect();
    c.insert(p, tokens, &blocks).unwrap();
    for &b in &blocks {
        p.release(b).unwrap();
    }
    blocks
}

#[test]
fn hashes_chain() {
    let (a, b) = ([1, 2, 3, 4], [5, 6, 7, 8]);
    let ha = BlockHash::chain(BlockHash::ROOT, &a);
    assert_eq!(ha, BlockHash::chain(BlockHash::ROOT, &a), "deterministic");
    assert_ne!(ha, BlockHash::chain(BlockHash::ROOT, &b));
    // The same block after a different prefix has a different key.
    let hb_after_a = BlockHash::chain(ha, &b);
    let hb_after_b = BlockHash::chain(BlockHash::chain(BlockHash::ROOT, &b), &b);
    assert_ne!(hb_after_a, hb_after_b);
    assert_ne!(hb_after_a, BlockHash::chain(BlockHash::ROOT, &b));
    // Order within a block matters.
    assert_ne!(ha, BlockHash::chain(BlockHash::ROOT, &[2, 1, 3, 4]));
}

#[test]
fn longest_prefix_in_whole_blocks() {
    let mut p = pool(16);
    let mut c = PrefixCache::new(&p, usize::MAX);
    let seq: Vec<u32> = (0..14).collect(); // 3 full blocks + 2 tokens
    let blocks = cache_sequence(&mut p, &mut c, &seq);
    assert_eq!(c.n_cached(), 3);
    assert_eq!(p.n_used(), 3, "the partial block was not cached");

    let m = c.lookup(&seq);
    assert_eq!((m.n_tokens, m.blocks.as_slice()), (12, &blocks[..3]));

    // Diverges inside block 2: blocks 0 and 1 hit.
    let mut q = seq[..10].to_vec();
    q.extend([99, 99]);
    assert_eq!(c.lookup(&q).blocks, blocks[..2]);
    // Same block 1 tokens after a different block 0: nothing, because keys chain.
    let mut r = vec![42, 42, 42, 42];
    r.extend_from_slice(&seq[4..8]);
    assert_eq!(c.lookup(&r).n_tokens, 0);
    // Shorter than a block.
    assert_eq!(c.lookup(&seq[..3]).n_tokens, 0);

    // hits/misses count blocks: 3+0, 2+1, 0+2, 0+0.
    assert_eq!((c.hits(), c.misses()), (5, 3));
}

#[test]
fn lru_eviction_under_budget() {
    let mut p = pool(16);
    let mut c = PrefixCache::new(&p, 3 * p.block_bytes());
    let a = cache_sequence(&mut p, &mut c, &[1; 4]);
    let b = cache_sequence(&mut p, &mut c, &[2; 4]);
    let cc = cache_sequence(&mut p, &mut c, &[3; 4]);
    assert_eq!(c.used_bytes(), 3 * p.block_bytes());
    // Touch a: now b is least recently used.
    assert_eq!(c.lookup(&[1; 4]).blocks, a);
    let d = cache_sequence(&mut p, &mut c, &[4; 4]);
    assert_eq!(c.n_cached(), 3);
    assert!(
        !c.contains(BlockHash::chain(BlockHash::ROOT, &[2; 4])),
        "b evicted"
    );
    assert!(p.is_free(b[0]), "its block went back to the pool");
    let order: Vec<_> = c.lru_order().map(|h| c.block(h).unwrap()).collect();
    assert_eq!(order, [cc[0], a[0], d[0]]);

    // A block a running sequence uses is skipped: c is LRU but in use, so a goes.
    p.retain(cc[0]).unwrap();
    cache_sequence(&mut p, &mut c, &[5; 4]);
    assert!(c.contains(BlockHash::chain(BlockHash::ROOT, &[3; 4])));
    assert!(!c.contains(BlockHash::chain(BlockHash::ROOT, &[1; 4])));
    assert_eq!(p.refcount(cc[0]), 2);

    // Shrinking the budget evicts everything unreferenced; clear drops the rest.
    c.set_budget_bytes(0);
    assert_eq!(c.evict_to_budget(&mut p).unwrap(), 2);
    assert_eq!(c.n_cached(), 1);
    c.clear(&mut p).unwrap();
    assert_eq!(p.refcount(cc[0]), 1);
    assert_eq!(p.n_used(), 1);
}

#[test]
fn leaves_go_before_parents() {
    let mut p = pool(16);
    let mut c = PrefixCache::new(&p, usize::MAX);
    let seq: Vec<u32> = (0..12).collect();
    let blocks = cache_sequence(&mut p, &mut c, &seq);
    // Evicting one block takes the deepest: a parent would orphan its cached children.
    assert_eq!(c.evict_blocks(&mut p, 1).unwrap(), 1);
    assert!(p.is_free(blocks[2]));
    assert_eq!(c.lookup(&seq).n_tokens, 8);
    assert_eq!(c.evict_blocks(&mut p, 10).unwrap(), 2);
    assert_eq!(p.n_used(), 0);
}

#[test]
fn reinsert_is_idempotent() {
    let mut p = pool(16);
    let mut c = PrefixCache::new(&p, usize::MAX);
    let seq: Vec<u32> = (0..8).collect();
    let blocks = cache_sequence(&mut p, &mut c, &seq);
    // A second sequence with the same tokens but its own blocks: nothing new is cached and its
    // blocks are not retained.
    let other: Vec<_> = (0..2).map(|_| p.allocate().unwrap()).collect();
    assert_eq!(c.insert(&mut p, &seq, &other).unwrap(), 0);
    assert!(other.iter().all(|&b| p.refcount(b) == 1));
    assert_eq!(c.lookup(&seq).blocks, blocks);
}
