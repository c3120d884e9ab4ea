//! Radix tree against a naive model (a Vec of stored sequences with their handles), driven by
//! random insert / match / lock / unlock / evict sequences.

use std::collections::HashSet;

use nano_infer_kvcache::{KvError, NodeId, RadixTree};
use proptest::prelude::*;

#[derive(Clone, Debug)]
enum Op {
    Insert(Vec<u32>),
    Match { tokens: Vec<u32>, lock: bool },
    Unlock(usize),
    Evict(usize),
}

/// A 3-letter alphabet and short sequences make shared prefixes, splits and re-insertions
/// frequent.
fn op() -> impl Strategy<Value = Op> {
    let seq = prop::collection::vec(0u32..3, 0..9);
    prop_oneof![
        3 => seq.clone().prop_map(Op::Insert),
        3 => (seq, any::<bool>()).prop_map(|(tokens, lock)| Op::Match { tokens, lock }),
        1 => any::<usize>().prop_map(Op::Unlock),
        1 => (0usize..12).prop_map(Op::Evict),
    ]
}

/// The naive model: every sequence still (partly) in the tree with the handles the tree holds.
#[derive(Default)]
struct Model {
    stored: Vec<(Vec<u32>, Vec<u32>)>,
    /// Handles ever issued: `0..next_handle`.
    next_handle: u32,
    /// Handles handed back to the caller (evicted, or duplicates on insert).
    freed: HashSet<u32>,
    /// Live locks: node and the handles its match covered.
    locks: Vec<(NodeId, Vec<u32>)>,
}

impl Model {
    /// Longest common prefix in whole pages with any stored sequence, and the handles of that
    /// prefix.
    fn best(&self, tokens: &[u32], page: usize) -> (usize, Vec<u32>) {
        let mut best = (0, Vec::new());
        for (s, h) in &self.stored {
            let n = s.iter().zip(tokens).take_while(|(a, b)| a == b).count() / page * page;
            if n > best.0 {
                best = (n, h[..n].to_vec());
            }
        }
        best
    }
}

/// Drives a tree of `page`-token pages (1: the token-granular tree) and the naive model.
fn run(ops: Vec<Op>, page: usize) -> Result<(), TestCaseError> {
    let mut tree = if page == 1 {
        RadixTree::<u32>::new()
    } else {
        RadixTree::<u32>::with_page_size(page)
    };
    let mut m = Model::default();
    for op in ops {
        match op {
            Op::Insert(mut tokens) => {
                // A paged tree stores whole pages only; the model issues handles for those.
                tokens.truncate(tokens.len() / page * page);
                let (want, prefix_handles) = m.best(&tokens, page);
                let fresh: Vec<u32> = (0..tokens.len() as u32)
                    .map(|i| m.next_handle + i)
                    .collect();
                m.next_handle += tokens.len() as u32;
                let got = tree.insert(&tokens, &fresh).unwrap();
                prop_assert_eq!(got, want);
                // The tree kept its own handles for the shared prefix: ours are duplicates.
                m.freed.extend(&fresh[..got]);
                let mut handles = prefix_handles;
                handles.extend_from_slice(&fresh[got..]);
                m.stored.push((tokens, handles));
            }
            Op::Match { tokens, lock } => {
                let (want, handles) = m.best(&tokens, page);
                let r = tree.match_prefix(&tokens);
                prop_assert_eq!(r.len, want);
                prop_assert_eq!(&r.handles, &handles);
                if lock {
                    tree.lock(r.node).unwrap();
                    m.locks.push((r.node, r.handles));
                }
            }
            Op::Unlock(i) => {
                if m.locks.is_empty() {
                    // Unlocking an unlocked root is refused and changes nothing.
                    if tree.lock_ref(tree.root()).unwrap() == 0 {
                        prop_assert_eq!(tree.unlock(tree.root()), Err(KvError::NotLocked(0)));
                    }
                } else {
                    let (node, _) = m.locks.swap_remove(i % m.locks.len());
                    tree.unlock(node).unwrap();
                }
            }
            Op::Evict(n) => {
                let (total, evictable) = (tree.total_tokens(), tree.evictable_tokens());
                let ev = tree.evict(n);
                // At least n tokens go if that many are unlocked (whole leaves, so maybe more).
                prop_assert!(ev.len() >= n.min(evictable));
                prop_assert!(ev.len() <= evictable);
                prop_assert_eq!(tree.total_tokens(), total - ev.len());
                let ev: HashSet<u32> = ev.into_iter().collect();
                for (_, locked) in &m.locks {
                    prop_assert!(
                        locked.iter().all(|h| !ev.contains(h)),
                        "evicted a locked handle"
                    );
                }
                for h in &ev {
                    prop_assert!(m.freed.insert(*h), "handle {} returned twice", h);
                }
                // Eviction removes suffixes: cut every stored sequence at its first evicted
                // handle.
                for (s, hs) in &mut m.stored {
                    if let Some(cut) = hs.iter().position(|h| ev.contains(h)) {
                        s.truncate(cut);
                        hs.truncate(cut);
                    }
                }
            }
        }

        tree.check_invariants().map_err(TestCaseError::fail)?;
        prop_assert_eq!(
            tree.total_tokens(),
            tree.evictable_tokens() + tree.protected_tokens()
        );
        // Handle conservation: every issued handle is either in the tree or freed, never both,
        // and the tree holds exactly the model's handles.
        let in_tree: Vec<u32> = tree.handles().collect();
        let in_tree_set: HashSet<u32> = in_tree.iter().copied().collect();
        prop_assert_eq!(in_tree.len(), in_tree_set.len(), "a handle is stored twice");
        prop_assert_eq!(in_tree.len(), tree.total_tokens());
        prop_assert!(
            in_tree_set.is_disjoint(&m.freed),
            "a handle is both free and in use"
        );
        prop_assert_eq!(in_tree_set.len() + m.freed.len(), m.next_handle as usize);
        let model_set: HashSet<u32> = m
            .stored
            .iter()
            .flat_map(|(_, h)| h.iter().copied())
            .collect();
        prop_assert_eq!(&in_tree_set, &model_set);
        for (node, locked) in &m.locks {
            prop_assert!(tree.lock_ref(*node).unwrap() > 0);
            prop_assert!(locked.iter().all(|h| in_tree_set.contains(h)));
        }
    }
    // Releasing every lock makes everything evictable, and evicting everything empties it.
    for (node, _) in m.locks.drain(..) {
        tree.unlock(node).unwrap();
    }
    prop_assert_eq!(tree.protected_tokens(), 0);
    let total = tree.total_tokens();
    prop_assert_eq!(tree.evict(usize::MAX).len(), total);
    prop_assert_eq!(tree.n_nodes(), 1);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn radix_tree_matches_naive_model(ops in prop::collection::vec(op(), 1..60)) {
        run(ops, 1)?;
    }

    /// Pages of 2 and 3 tokens: whole-page matches, splits only at page boundaries, children
    /// keyed by their first page.
    #[test]
    fn paged_radix_tree_matches_naive_model(
        ops in prop::collection::vec(op(), 1..60),
        page in 2usize..4,
    ) {
        run(ops, page)?;
    }
}

#[test]
fn stale_and_mismatched_arguments_are_errors() {
    let mut t = RadixTree::<u64>::new();
    assert!(matches!(
        t.insert(&[1, 2], &[1]),
        Err(KvError::ShapeMismatch { .. })
    ));
    t.insert(&[1, 2], &[10, 20]).unwrap();
    let n = t.match_prefix(&[1, 2]).node;
    assert_eq!(t.evict(1), vec![10, 20]);
    assert!(matches!(t.lock(n), Err(KvError::StaleNode { .. })));
    assert!(matches!(t.unlock(n), Err(KvError::StaleNode { .. })));
    // The slot is reused, but the old id stays stale.
    t.insert(&[3], &[30]).unwrap();
    assert!(matches!(t.lock(n), Err(KvError::StaleNode { .. })));
}
