//! Paged cache: reads through block tables equal the contiguous cache's for the same appends,
//! including after fork and copy-on-write divergence; exhaustion is an error that changes
//! nothing; prefix-cache hits feed new sequences.

use nano_infer_kvcache::{
    BlockPoolConfig, KvCache, KvDtype, KvError, PagedKvCache, PrefixCache, SeqId,
};

use crate::{gather, rows};

const LAYERS: usize = 2;
const HEADS: usize = 2;
const HD: usize = 4;
const ROW: usize = HEADS * HD;

fn cfg(n_blocks: usize, dtype: KvDtype) -> BlockPoolConfig {
    BlockPoolConfig {
        n_layers: LAYERS,
        n_kv_heads: HEADS,
        head_dim: HD,
        block_size: 4,
        n_blocks,
        dtype,
    }
}

/// Appends the same `n` rows (seeded by `seed`) to a paged sequence and a contiguous cache.
fn append_both(p: &mut PagedKvCache, s: SeqId, c: &mut KvCache, n: usize, seed: u64) {
    for l in 0..LAYERS {
        let k = rows(n, ROW, seed * 100 + l as u64);
        let v = rows(n, ROW, seed * 100 + 50 + l as u64);
        p.append(s, l, &k, &v).unwrap();
        c.append(l, &k, &v).unwrap();
    }
    p.advance(s, n).unwrap();
    c.advance(n);
}

/// Every (layer, head) of the paged sequence reads exactly like the contiguous cache: both
/// round f32 the same way, so even bf16/f16 compare bit for bit.
fn assert_same(p: &PagedKvCache, s: SeqId, c: &KvCache) {
    assert_eq!(p.len(s).unwrap(), c.len());
    for l in 0..LAYERS {
        for h in 0..HEADS {
            assert_eq!(
                gather(p.keys(s, l, h).unwrap()),
                c.keys(l, h).to_f32_vec(),
                "keys l{l} h{h}"
            );
            assert_eq!(
                gather(p.values(s, l, h).unwrap()),
                c.values(l, h).to_f32_vec(),
                "values l{l} h{h}"
            );
        }
    }
}

#[test]
fn paged_equals_contiguous_every_dtype() {
    for dtype in [KvDtype::F32, KvDtype::Bf16, KvDtype::F16] {
        let mut p = PagedKvCache::new(cfg(64, dtype), 1000).unwrap();
        let mut c = KvCache::new(LAYERS, HEADS, HD, 1000, dtype);
        let s = p.add_sequence();
        // Chunks that start and end mid-block and span several blocks.
        for (i, n) in [7, 1, 1, 9, 4, 1, 3].into_iter().enumerate() {
            append_both(&mut p, s, &mut c, n, i as u64);
            assert_same(&p, s, &c);
        }
        let blocks: Vec<_> = p
            .keys(s, 1, 1)
            .unwrap()
            .map(|b| (b.start_pos, b.n_valid))
            .collect();
        assert_eq!(
            blocks,
            [(0, 4), (4, 4), (8, 4), (12, 4), (16, 4), (20, 4), (24, 2)]
        );
        assert_eq!(p.table(s).unwrap().blocks().len(), 7);
    }
}

#[test]
fn pending_rows_are_readable_per_layer() {
    let mut p = PagedKvCache::new(cfg(8, KvDtype::F32), 100).unwrap();
    let s = p.add_sequence();
    let k = rows(5, ROW, 1);
    p.append(s, 0, &k, &k).unwrap();
    assert_eq!(gather(p.keys(s, 0, 0).unwrap()).len(), 5 * HD);
    assert_eq!(gather(p.keys(s, 1, 0).unwrap()).len(), 0);
    assert_eq!(
        p.advance(s, 5),
        Err(KvError::NotAppended {
            requested: 5,
            layer: 1,
            appended: 0
        })
    );
    assert!(matches!(
        p.keys(s, 2, 0),
        Err(KvError::LayerOutOfRange { .. })
    ));
    assert!(matches!(
        p.keys(s, 0, 2),
        Err(KvError::HeadOutOfRange { .. })
    ));
}

#[test]
fn fork_shares_blocks_then_copy_on_write_diverges() {
    for dtype in [KvDtype::F32, KvDtype::Bf16] {
        let mut p = PagedKvCache::new(cfg(16, dtype), 1000).unwrap();
        let mut ca = KvCache::new(LAYERS, HEADS, HD, 1000, dtype);
        let a = p.add_sequence();
        append_both(&mut p, a, &mut ca, 6, 1); // one full block + 2 rows of the second
        let mut cb = ca.clone();
        let b = p.fork(a).unwrap();
        let shared = p.table(a).unwrap().blocks().to_vec();
        assert_eq!(p.table(b).unwrap().blocks(), &shared[..]);
        assert!(shared.iter().all(|&x| p.pool().refcount(x) == 2));
        assert_eq!(p.pool().n_used(), 2);

        // A writes into the shared partial block: it gets a private copy, the full one stays
        // shared.
        append_both(&mut p, a, &mut ca, 1, 2);
        let ta = p.table(a).unwrap().blocks().to_vec();
        assert_eq!(ta[0], shared[0]);
        assert_ne!(ta[1], shared[1]);
        assert_eq!(p.pool().refcount(shared[0]), 2);
        assert_eq!(p.pool().refcount(shared[1]), 1);

        // B now owns the old partial block alone and writes in place.
        append_both(&mut p, b, &mut cb, 3, 3);
        assert_eq!(p.table(b).unwrap().blocks()[1], shared[1]);
        assert_same(&p, a, &ca);
        assert_same(&p, b, &cb);

        p.remove_sequence(a).unwrap();
        assert_same(&p, b, &cb);
        p.remove_sequence(b).unwrap();
        assert_eq!(p.pool().n_used(), 0);
        assert_eq!(p.remove_sequence(b), Err(KvError::UnknownSequence(b.0)));
    }
}

#[test]
fn exhaustion_is_an_error_and_changes_nothing() {
    let mut p = PagedKvCache::new(cfg(3, KvDtype::F32), 1000).unwrap();
    let a = p.add_sequence();
    let k = rows(10, ROW, 1);
    for l in 0..LAYERS {
        p.append(a, l, &k, &k).unwrap();
    }
    p.advance(a, 10).unwrap();
    // 10 positions use 3 blocks; 3 more need a 4th.
    let before = p.table(a).unwrap().clone();
    let err = p.append(a, 0, &k[..3 * ROW], &k[..3 * ROW]).unwrap_err();
    assert_eq!(err, KvError::PoolExhausted { needed: 1, free: 0 });
    assert_eq!(p.table(a).unwrap(), &before);
    // 2 more fit in the last block.
    for l in 0..LAYERS {
        p.append(a, l, &k[..2 * ROW], &k[..2 * ROW]).unwrap();
    }
    p.advance(a, 2).unwrap();

    // Copy-on-write also needs a free block.
    p.truncate(a, 10).unwrap();
    let b = p.fork(a).unwrap();
    assert_eq!(
        p.append(b, 0, &k[..ROW], &k[..ROW]),
        Err(KvError::PoolExhausted { needed: 1, free: 0 })
    );
    // Truncating frees whole blocks: 10 -> 4 positions releases a's share of blocks 1 and 2,
    // which b still holds.
    p.truncate(a, 4).unwrap();
    assert_eq!(p.pool().n_free(), 0);
    p.remove_sequence(b).unwrap();
    assert_eq!(p.pool().n_free(), 2);
}

#[test]
fn context_bound_per_sequence() {
    let mut p = PagedKvCache::new(cfg(16, KvDtype::F32), 5).unwrap();
    let s = p.add_sequence();
    let k = rows(6, ROW, 1);
    assert_eq!(
        p.append(s, 0, &k, &k),
        Err(KvError::ContextFull { needed: 6, max: 5 })
    );
    assert_eq!(p.pool().n_used(), 0);
}

#[test]
fn prefix_cache_hit_feeds_a_new_sequence() {
    let mut p = PagedKvCache::new(cfg(32, KvDtype::Bf16), 1000).unwrap();
    let mut prefix = PrefixCache::new(p.pool(), usize::MAX);
    let prompt: Vec<u32> = (100..110).collect();

    // First request: prefill 10 tokens, cache its 2 full blocks, finish.
    let mut c1 = KvCache::new(LAYERS, HEADS, HD, 1000, KvDtype::Bf16);
    let s1 = p.add_sequence();
    append_both(&mut p, s1, &mut c1, 10, 1);
    let blocks = p.table(s1).unwrap().blocks().to_vec();
    assert_eq!(prefix.insert(p.pool_mut(), &prompt, &blocks).unwrap(), 2);
    p.remove_sequence(s1).unwrap();
    assert_eq!(
        p.pool().n_used(),
        2,
        "the cache keeps the full blocks alive"
    );

    // Second request shares 9 tokens: 2 whole blocks (8 tokens) hit.
    let mut prompt2 = prompt[..9].to_vec();
    prompt2.extend([7, 7, 7]);
    let m = prefix.lookup(&prompt2);
    assert_eq!((m.n_tokens, m.blocks.as_slice()), (8, &blocks[..2]));
    let s2 = p.add_sequence_with_prefix(&m.blocks, m.n_tokens).unwrap();
    // The reference: the first 8 rows of request 1, then 4 new rows.
    c1.truncate(8);
    append_both(&mut p, s2, &mut c1, 4, 2);
    assert_same(&p, s2, &c1);
    // The cached blocks were not written.
    assert_eq!(p.table(s2).unwrap().blocks()[..2], blocks[..2]);
    assert_eq!(p.pool().refcount(blocks[0]), 2);
}
