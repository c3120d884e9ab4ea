//! Radix tree over token sequences whose edges own per-token KV handles (SGLang's
//! RadixAttention): the longest cached prefix of any prompt is found in O(prompt length), and
//! everything not in use is evictable least-recently-used first.
//!
//! Handles: the tree stores one opaque `H` per token (a slot index into a token-granular KV
//! pool, or `block * block_size + offset` for a paged pool) and never interprets it. A match
//! returns the handles of the matched tokens so the engine can point attention at them;
//! eviction returns handles so the engine can free the storage. Engines with block-granular
//! storage round the matched length down to a multiple of their block size.
//!
//! Structure: nodes live in an arena (`Vec` + free list, O(1) allocation) and are named by a
//! [`NodeId`] carrying a generation, so a handle to an evicted node is an error rather than a
//! silent reference to whatever reused its slot. Each node holds an edge (a run of token ids and
//! their handles) and its children keyed by their first token. Matching or inserting a sequence
//! that diverges inside an edge splits it; the lower half keeps its `NodeId` (so locks held on
//! it stay valid) and the new upper node inherits its lock count.
//!
//! Locks: a running sequence locks the node its match ended at; `lock_ref` of a node counts
//! locks on it and on all its descendants, so a node with `lock_ref == 0` has no locked
//! descendant and a whole unlocked subtree can be evicted leaf by leaf. Lock/unlock walk to the
//! root: O(depth).
//!
//! Eviction: `evict(n)` builds a min-heap of unlocked leaves by last access (O(leaves log
//! leaves)), pops, and pushes a parent when it becomes an unlocked leaf, until at least `n`
//! tokens are freed or nothing unlocked remains.
//!
//! Pages: [`RadixTree::with_page_size`] makes the tree page-granular, as SGLang's tree is when
//! its KV pool is paged: only whole pages are stored, matched and split, children are keyed by
//! their first page, and every edge is a whole number of pages. A page is then never divided
//! between two nodes, so an engine whose handles name KV blocks of `page_size` tokens gets back
//! only whole blocks, each inserted by one sequence, and eviction frees whole blocks. Page size 1
//! (the default) is the token-granular tree.
//!
//! Accounting: `total_tokens = evictable_tokens + protected_tokens`, kept incrementally;
//! multiply by bytes per token for memory.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};

use crate::KvError;

const ROOT: u32 = 0;

/// Names a node of a [`RadixTree`]; invalid once that node is evicted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct NodeId {
    index: u32,
    generation: u32,
}

/// Result of [`RadixTree::match_prefix`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RadixMatch<H> {
    /// Number of leading tokens found in the tree.
    pub len: usize,
    /// Node whose path from the root is exactly the matched tokens (the root when `len == 0`);
    /// lock it to protect the match from eviction.
    pub node: NodeId,
    /// The handles of the matched tokens, in order.
    pub handles: Vec<H>,
}

#[derive(Clone, Debug)]
struct Node<H> {
    parent: u32,
    /// Token ids of the edge into this node.
    key: Vec<u32>,
    /// One handle per token of `key`.
    value: Vec<H>,
    /// First page of the child's key -> child index.
    children: HashMap<Vec<u32>, u32>,
    /// Locks on this node and all its descendants.
    lock_ref: u32,
    last_access: u64,
    generation: u32,
    live: bool,
}

impl<H> Node<H> {
    fn new(parent: u32, key: Vec<u32>, value: Vec<H>, generation: u32, tick: u64) -> Self {
        Self {
            parent,
            key,
            value,
            children: HashMap::new(),
            lock_ref: 0,
            last_access: tick,
            generation,
            live: true,
        }
    }
}

/// A radix tree mapping token sequences to per-token KV handles.
#[derive(Clone, Debug)]
pub struct RadixTree<H = u32> {
    nodes: Vec<Node<H>>,
    /// Tokens per page: every edge is a multiple of it.
    page_size: usize,
    free_nodes: Vec<u32>,
    tick: u64,
    total_tokens: usize,
    evictable_tokens: usize,
    protected_tokens: usize,
}

impl<H: Copy> Default for RadixTree<H> {
    fn default() -> Self {
        Self::new()
    }
}

impl<H: Copy> RadixTree<H> {
    /// An empty token-granular tree (just the root).
    pub fn new() -> Self {
        Self::with_page_size(1)
    }

    /// An empty tree that stores and matches whole pages of `page_size` tokens only (0 is
    /// taken as 1).
    pub fn with_page_size(page_size: usize) -> Self {
        Self {
            nodes: vec![Node::new(ROOT, Vec::new(), Vec::new(), 0, 0)],
            page_size: page_size.max(1),
            free_nodes: Vec::new(),
            tick: 0,
            total_tokens: 0,
            evictable_tokens: 0,
            protected_tokens: 0,
        }
    }

    /// Tokens per page (1 for a token-granular tree).
    pub fn page_size(&self) -> usize {
        self.page_size
    }

    /// The root's id (the node a zero-length match returns).
    pub fn root(&self) -> NodeId {
        self.id(ROOT)
    }

    /// Tokens stored.
    pub fn total_tokens(&self) -> usize {
        self.total_tokens
    }

    /// Tokens in nodes no lock protects.
    pub fn evictable_tokens(&self) -> usize {
        self.evictable_tokens
    }

    /// Tokens in locked nodes (locked directly or through a descendant).
    pub fn protected_tokens(&self) -> usize {
        self.protected_tokens
    }

    /// Live nodes, including the root.
    pub fn n_nodes(&self) -> usize {
        self.nodes.len() - self.free_nodes.len()
    }

    /// Locks on `node` and its descendants.
    pub fn lock_ref(&self, node: NodeId) -> Result<u32, KvError> {
        Ok(self.nodes[self.check(node)? as usize].lock_ref)
    }

    /// Every stored handle, in no particular order; for accounting checks.
    pub fn handles(&self) -> impl Iterator<Item = H> + '_ {
        self.nodes
            .iter()
            .filter(|n| n.live)
            .flat_map(|n| n.value.iter().copied())
    }

    /// Finds the longest stored prefix of `tokens` (in whole pages), marks its path recently
    /// used, and splits the last edge if the match ends inside it (so the returned node covers
    /// the match exactly). O(tokens.len()).
    pub fn match_prefix(&mut self, tokens: &[u32]) -> RadixMatch<H> {
        self.tick += 1;
        let tick = self.tick;
        let p = self.page_size;
        let mut node = ROOT;
        let mut pos = 0;
        let mut handles = Vec::new();
        self.nodes[ROOT as usize].last_access = tick;
        while let Some(&c) = tokens
            .get(pos..pos + p)
            .and_then(|page| self.nodes[node as usize].children.get(page))
        {
            // At least the first page matches: it is the child's key.
            let common = self.common_pages(&self.nodes[c as usize].key, &tokens[pos..]);
            self.nodes[c as usize].last_access = tick;
            let c = if common < self.nodes[c as usize].key.len() {
                self.split(c, common)
            } else {
                c
            };
            handles.extend_from_slice(&self.nodes[c as usize].value);
            pos += common;
            node = c;
        }
        RadixMatch {
            len: pos,
            node: self.id(node),
            handles,
        }
    }

    /// Stores `tokens` with one handle each. Returns how many leading tokens were already
    /// stored: the tree keeps its own handles for those, so `handles[..returned]` are
    /// duplicates the caller should free (unless they are the same handles).
    ///
    /// A paged tree stores only the whole pages: tokens past `tokens.len()` rounded down to a
    /// multiple of the page size are ignored (the return value never exceeds that length).
    pub fn insert(&mut self, tokens: &[u32], handles: &[H]) -> Result<usize, KvError> {
        if tokens.len() != handles.len() {
            return Err(KvError::ShapeMismatch {
                what: "radix insert handles (one per token)",
                expected: tokens.len(),
                got: handles.len(),
            });
        }
        let p = self.page_size;
        let tokens = &tokens[..tokens.len() / p * p];
        self.tick += 1;
        let tick = self.tick;
        let mut node = ROOT;
        let mut pos = 0;
        self.nodes[ROOT as usize].last_access = tick;
        while pos < tokens.len() {
            let page = &tokens[pos..pos + p];
            let Some(&c) = self.nodes[node as usize].children.get(page) else {
                let leaf = self.alloc_node(
                    node,
                    tokens[pos..].to_vec(),
                    handles[pos..tokens.len()].to_vec(),
                );
                self.nodes[node as usize]
                    .children
                    .insert(page.to_vec(), leaf);
                let n = tokens.len() - pos;
                self.total_tokens += n;
                self.evictable_tokens += n;
                return Ok(pos);
            };
            let common = self.common_pages(&self.nodes[c as usize].key, &tokens[pos..]);
            self.nodes[c as usize].last_access = tick;
            node = if common < self.nodes[c as usize].key.len() {
                self.split(c, common)
            } else {
                c
            };
            pos += common;
        }
        Ok(pos)
    }

    /// Protects `node` and its ancestors from eviction until a matching `unlock`.
    pub fn lock(&mut self, node: NodeId) -> Result<(), KvError> {
        let mut i = self.check(node)?;
        loop {
            let n = &mut self.nodes[i as usize];
            if n.lock_ref == 0 {
                self.evictable_tokens -= n.key.len();
                self.protected_tokens += n.key.len();
            }
            n.lock_ref += 1;
            if i == ROOT {
                return Ok(());
            }
            i = n.parent;
        }
    }

    /// Releases one `lock` of `node`; errors (changing nothing) if it holds none.
    pub fn unlock(&mut self, node: NodeId) -> Result<(), KvError> {
        let mut i = self.check(node)?;
        if self.nodes[i as usize].lock_ref == 0 {
            return Err(KvError::NotLocked(node.index));
        }
        loop {
            let n = &mut self.nodes[i as usize];
            // Ancestors' counts include this node's, so none of them can be 0 here.
            n.lock_ref -= 1;
            if n.lock_ref == 0 {
                self.protected_tokens -= n.key.len();
                self.evictable_tokens += n.key.len();
            }
            if i == ROOT {
                return Ok(());
            }
            i = n.parent;
        }
    }

    /// Removes least recently used unlocked leaves until at least `n_tokens` tokens are gone or
    /// nothing unlocked remains; returns the removed tokens' handles for the caller to free.
    pub fn evict(&mut self, n_tokens: usize) -> Vec<H> {
        let mut out = Vec::new();
        if n_tokens == 0 {
            return out;
        }
        let mut heap: BinaryHeap<Reverse<(u64, u32)>> = self
            .nodes
            .iter()
            .enumerate()
            .filter(|&(i, n)| self.is_evictable_leaf(i as u32, n))
            .map(|(i, n)| Reverse((n.last_access, i as u32)))
            .collect();
        while out.len() < n_tokens {
            let Some(Reverse((_, i))) = heap.pop() else {
                break;
            };
            let parent = self.nodes[i as usize].parent;
            let key = std::mem::take(&mut self.nodes[i as usize].key);
            let n = key.len();
            let removed = self.nodes[parent as usize]
                .children
                .remove(&key[..self.page_size]);
            debug_assert_eq!(removed, Some(i), "child link of an evicted leaf");
            out.extend_from_slice(&self.nodes[i as usize].value);
            self.free_node(i);
            self.total_tokens -= n;
            self.evictable_tokens -= n;
            let p = &self.nodes[parent as usize];
            if self.is_evictable_leaf(parent, p) {
                heap.push(Reverse((p.last_access, parent)));
            }
        }
        out
    }

    /// Checks the structural invariants (parent/child links, edge shapes, lock counts, token
    /// counters); for tests. Returns a description of the first violation.
    pub fn check_invariants(&self) -> Result<(), String> {
        let (mut total, mut evictable, mut protected) = (0, 0, 0);
        for (i, n) in self.nodes.iter().enumerate().filter(|(_, n)| n.live) {
            if n.key.len() != n.value.len() {
                return Err(format!("node {i}: key/value lengths differ"));
            }
            if i as u32 != ROOT && n.key.is_empty() {
                return Err(format!("node {i}: empty edge"));
            }
            if !n.key.len().is_multiple_of(self.page_size) {
                return Err(format!("node {i}: edge is not a whole number of pages"));
            }
            let mut child_locks = 0u64;
            for (page, &c) in &n.children {
                let cn = &self.nodes[c as usize];
                if !cn.live || cn.parent != i as u32 || !cn.key.starts_with(page) {
                    return Err(format!("node {i}: bad child link {c}"));
                }
                child_locks += u64::from(cn.lock_ref);
            }
            if u64::from(n.lock_ref) < child_locks {
                return Err(format!("node {i}: lock_ref below its children's sum"));
            }
            total += n.key.len();
            if n.lock_ref == 0 {
                evictable += n.key.len();
            } else {
                protected += n.key.len();
            }
        }
        if (total, evictable, protected)
            != (
                self.total_tokens,
                self.evictable_tokens,
                self.protected_tokens,
            )
        {
            return Err(format!(
                "counters (total, evictable, protected) = {:?}, recount = {:?}",
                (
                    self.total_tokens,
                    self.evictable_tokens,
                    self.protected_tokens
                ),
                (total, evictable, protected)
            ));
        }
        Ok(())
    }

    fn is_evictable_leaf(&self, i: u32, n: &Node<H>) -> bool {
        i != ROOT && n.live && n.children.is_empty() && n.lock_ref == 0
    }

    /// Length of the common prefix of `a` and `b` in whole pages.
    fn common_pages(&self, a: &[u32], b: &[u32]) -> usize {
        lcp(a, b) / self.page_size * self.page_size
    }

    /// Splits child `c`'s edge after `k` tokens (0 < k < len, a whole number of pages): a new
    /// node takes the first `k` tokens and becomes `c`'s parent; `c` keeps its id. Returns the
    /// new node.
    fn split(&mut self, c: u32, k: usize) -> u32 {
        let p = self.page_size;
        let cn = &mut self.nodes[c as usize];
        let parent = cn.parent;
        let (lock_ref, last_access) = (cn.lock_ref, cn.last_access);
        let head_key: Vec<u32> = cn.key.drain(..k).collect();
        let head_value: Vec<H> = cn.value.drain(..k).collect();
        let c_first = cn.key[..p].to_vec();
        let first = head_key[..p].to_vec();
        let mid = self.alloc_node(parent, head_key, head_value);
        let m = &mut self.nodes[mid as usize];
        m.lock_ref = lock_ref;
        m.last_access = last_access;
        m.children.insert(c_first, c);
        self.nodes[c as usize].parent = mid;
        self.nodes[parent as usize].children.insert(first, mid);
        mid
    }

    fn alloc_node(&mut self, parent: u32, key: Vec<u32>, value: Vec<H>) -> u32 {
        let tick = self.tick;
        if let Some(i) = self.free_nodes.pop() {
            let generation = self.nodes[i as usize].generation;
            self.nodes[i as usize] = Node::new(parent, key, value, generation, tick);
            i
        } else {
            self.nodes.push(Node::new(parent, key, value, 0, tick));
            (self.nodes.len() - 1) as u32
        }
    }

    fn free_node(&mut self, i: u32) {
        let n = &mut self.nodes[i as usize];
        n.live = false;
        n.generation = n.generation.wrapping_add(1);
        n.key = Vec::new();
        n.value = Vec::new();
        n.children = HashMap::new();
        self.free_nodes.push(i);
    }

    fn id(&self, i: u32) -> NodeId {
        NodeId {
            index: i,
            generation: self.nodes[i as usize].generation,
        }
    }

    fn check(&self, id: NodeId) -> Result<u32, KvError> {
        match self.nodes.get(id.index as usize) {
            Some(n) if n.live && n.generation == id.generation => Ok(id.index),
            _ => Err(KvError::StaleNode {
                index: id.index,
                generation: id.generation,
            }),
        }
    }
}

/// Length of the longest common prefix.
fn lcp(a: &[u32], b: &[u32]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_keeps_locked_node_id() {
        let mut t = RadixTree::<u32>::new();
        t.insert(&[1, 2, 3, 4], &[10, 20, 30, 40]).unwrap();
        let m = t.match_prefix(&[1, 2, 3, 4]);
        t.lock(m.node).unwrap();
        assert_eq!(t.insert(&[1, 2, 9], &[0, 0, 90]).unwrap(), 2);
        assert_eq!(t.lock_ref(m.node), Ok(1));
        assert_eq!(t.protected_tokens(), 4);
        assert_eq!(t.evict(100), vec![90]);
        t.unlock(m.node).unwrap();
        assert_eq!(t.unlock(m.node), Err(KvError::NotLocked(m.node.index)));
        let mut ev = t.evict(100);
        ev.sort();
        assert_eq!(ev, vec![10, 20, 30, 40]);
        assert!(matches!(t.lock(m.node), Err(KvError::StaleNode { .. })));
        t.check_invariants().unwrap();
    }

    #[test]
    fn pages_are_never_divided() {
        // Pages of 2: handle = page number, as an engine with 2-token KV blocks would store.
        let mut t = RadixTree::<u32>::with_page_size(2);
        // The trailing odd token is not stored.
        assert_eq!(t.insert(&[1, 2, 3, 4, 5], &[0, 0, 1, 1, 9]).unwrap(), 0);
        assert_eq!(t.total_tokens(), 4);
        // Diverging inside the second page matches only the first.
        let m = t.match_prefix(&[1, 2, 3, 9]);
        assert_eq!((m.len, m.handles), (2, vec![0, 0]));
        // Same first token, different first page: a sibling, not a split.
        assert_eq!(t.insert(&[1, 7, 8, 8], &[5, 5, 6, 6]).unwrap(), 0);
        assert_eq!(t.match_prefix(&[1, 7, 8, 8, 1]).handles, vec![5, 5, 6, 6]);
        assert_eq!(t.match_prefix(&[1, 2, 3, 4]).len, 4);
        // Diverging in the second page of [1 2 | 3 4]: shares the split node of page [1 2].
        assert_eq!(t.insert(&[1, 2, 3, 5], &[7, 7, 8, 8]).unwrap(), 2);
        assert_eq!(t.match_prefix(&[1, 2, 3, 5]).handles, vec![0, 0, 8, 8]);
        t.check_invariants().unwrap();
        let mut all = t.evict(100);
        all.sort();
        assert_eq!(all, vec![0, 0, 1, 1, 5, 5, 6, 6, 8, 8]);
        assert_eq!(t.total_tokens(), 0);
        t.check_invariants().unwrap();
    }
}
