//! Block pool under random add / fork / append / truncate / remove operations on many
//! sequences: no block is both free and in use, refcounts equal the number of table entries
//! naming each block, and every sequence still reads back exactly what was appended to it.

use std::collections::HashMap;

use nano_infer_kvcache::{BlockId, BlockPoolConfig, KvDtype, KvError, PagedKvCache, SeqId};
use proptest::prelude::*;

use crate::gather;

const LAYERS: usize = 2;
const HEADS: usize = 2;
const HD: usize = 2;
const ROW: usize = HEADS * HD;
const N_BLOCKS: usize = 10;

#[derive(Clone, Debug)]
enum Op {
    Add,
    Fork(usize),
    Append(usize, usize),
    Truncate(usize, usize),
    Remove(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        1 => Just(Op::Add),
        2 => any::<usize>().prop_map(Op::Fork),
        5 => (any::<usize>(), 1usize..7).prop_map(|(s, n)| Op::Append(s, n)),
        1 => (any::<usize>(), 0usize..20).prop_map(|(s, n)| Op::Truncate(s, n)),
        1 => any::<usize>().prop_map(Op::Remove),
    ]
}

/// The row layer `l` of token `u` gets: unique per (token, layer, element), exact in f32.
fn row(u: u32, l: usize) -> Vec<f32> {
    (0..ROW)
        .map(|j| (u * 100 + l as u32 * 10 + j as u32) as f32)
        .collect()
}

fn run(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let cfg = BlockPoolConfig {
        n_layers: LAYERS,
        n_kv_heads: HEADS,
        head_dim: HD,
        block_size: 3,
        n_blocks: N_BLOCKS,
        dtype: KvDtype::F32,
    };
    let mut p = PagedKvCache::new(cfg, 1000).unwrap();
    // Reference: the token ids each live sequence holds.
    let mut model: HashMap<SeqId, Vec<u32>> = HashMap::new();
    let mut ids: Vec<SeqId> = Vec::new();
    let mut next_token = 0u32;
    for op in ops {
        let pick = |i: usize| (!ids.is_empty()).then(|| ids[i % ids.len()]);
        match op {
            Op::Add => {
                let s = p.add_sequence();
                ids.push(s);
                model.insert(s, Vec::new());
            }
            Op::Fork(i) => {
                if let Some(s) = pick(i) {
                    let f = p.fork(s).unwrap();
                    ids.push(f);
                    model.insert(f, model[&s].clone());
                }
            }
            Op::Append(i, n) => {
                if let Some(s) = pick(i) {
                    let toks: Vec<u32> = (next_token..next_token + n as u32).collect();
                    next_token += n as u32;
                    let free_before = p.pool().n_free();
                    let table_before = p.table(s).unwrap().clone();
                    let mut ok = true;
                    for l in 0..LAYERS {
                        let k: Vec<f32> = toks.iter().flat_map(|&u| row(u, l)).collect();
                        let v: Vec<f32> = k.iter().map(|x| -x).collect();
                        match p.append(s, l, &k, &v) {
                            Ok(()) => {}
                            Err(KvError::PoolExhausted { .. }) => {
                                // Only the first layer allocates; a failure there changes nothing.
                                prop_assert_eq!(l, 0);
                                prop_assert_eq!(p.pool().n_free(), free_before);
                                prop_assert_eq!(p.table(s).unwrap(), &table_before);
                                ok = false;
                                break;
                            }
                            Err(e) => return Err(TestCaseError::fail(e.to_string())),
                        }
                    }
                    if ok {
                        p.advance(s, n).unwrap();
                        model.get_mut(&s).unwrap().extend(toks);
                    }
                }
            }
            Op::Truncate(i, len) => {
                if let Some(s) = pick(i) {
                    p.truncate(s, len).unwrap();
                    model.get_mut(&s).unwrap().truncate(len);
                }
            }
            Op::Remove(i) => {
                if let Some(s) = pick(i) {
                    p.remove_sequence(s).unwrap();
                    ids.retain(|&x| x != s);
                    model.remove(&s);
                }
            }
        }

        // Refcount conservation: each block's refcount is the number of tables naming it.
        let mut refs: HashMap<BlockId, u32> = HashMap::new();
        for &s in &ids {
            for &b in p.table(s).unwrap().blocks() {
                *refs.entry(b).or_default() += 1;
            }
        }
        let pool = p.pool();
        for b in (0..N_BLOCKS as u32).map(BlockId) {
            prop_assert_eq!(
                pool.refcount(b),
                refs.get(&b).copied().unwrap_or(0),
                "block {:?}",
                b
            );
        }
        // No block both free and in use, none free twice, and the counts add up.
        let free = pool.free_list();
        let mut seen = std::collections::HashSet::new();
        for b in free {
            prop_assert!(seen.insert(*b), "block {:?} on the free list twice", b);
            prop_assert!(!refs.contains_key(b), "block {:?} free and in use", b);
        }
        prop_assert_eq!(pool.n_used(), refs.len());
        prop_assert_eq!(pool.n_free() + pool.n_used(), N_BLOCKS);

        // Data: every sequence reads back its own tokens, whatever its forks did.
        for &s in &ids {
            let toks = &model[&s];
            prop_assert_eq!(p.len(s).unwrap(), toks.len());
            for l in 0..LAYERS {
                for h in 0..HEADS {
                    let want: Vec<f32> = toks
                        .iter()
                        .flat_map(|&u| row(u, l)[h * HD..(h + 1) * HD].to_vec())
                        .collect();
                    prop_assert_eq!(&gather(p.keys(s, l, h).unwrap()), &want);
                    let neg: Vec<f32> = want.iter().map(|x| -x).collect();
                    prop_assert_eq!(gather(p.values(s, l, h).unwrap()), neg);
                }
            }
        }
    }
    for s in ids {
        p.remove_sequence(s).unwrap();
    }
    prop_assert_eq!(p.pool().n_free(), N_BLOCKS);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn block_pool_invariants(ops in prop::collection::vec(op(), 1..50)) {
        run(ops)?;
    }
}
