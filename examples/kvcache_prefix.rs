//! The kvcache crate on its own, as another engine would use it: one bounded pool of paged KV
//! blocks, and a radix tree that finds the longest cached prefix of a new prompt, serving two
//! sequences that share a prefix. The second sequence reuses the first one's blocks instead
//! of recomputing them. No model is involved: the keys and values are made up, where an
//! engine would write its attention layers' k/v projections.
//!
//! ```text
//! cargo run --release --example kvcache_prefix
//! ```
//! This is the bookkeeping `nano_infer::qwen3::BatchEngine` does for every request.

use nano_infer::kvcache::{
    BlockId, BlockPoolConfig, KvDtype, KvError, NodeId, PagedKvCache, RadixTree, SeqId,
};
use std::io::Write;

const LAYERS: usize = 2;
const KV_HEADS: usize = 2;
const HEAD_DIM: usize = 8;
const BLOCK: usize = 4; // tokens per block (engines use 16; small here so the output is short)

fn main() -> Result<(), KvError> {
    run(&mut std::io::stdout())?;
    Ok(())
}

/// What [`run`] found, for the test that runs this example.
#[derive(Debug)]
pub struct Outcome {
    /// Prompt tokens of the second sequence served from the first one's blocks.
    pub reused_tokens: usize,
    /// Whether those positions' keys read back exactly as the first sequence wrote them.
    pub keys_match: bool,
    /// Blocks in use when both sequences were alive, and after both ended and the tree was
    /// evicted.
    pub blocks_used: (usize, usize),
}

/// Serves two prompts that share their first 10 tokens.
pub fn run(out: &mut dyn Write) -> Result<Outcome, KvError> {
    // One pool for every sequence: 32 blocks of (layers, kv_heads, BLOCK, head_dim) keys and
    // values, f16. Storage grows on demand up to that bound.
    let config = BlockPoolConfig {
        n_layers: LAYERS,
        n_kv_heads: KV_HEADS,
        head_dim: HEAD_DIM,
        block_size: BLOCK,
        n_blocks: 32,
        dtype: KvDtype::F16,
    };
    let mut cache = PagedKvCache::new(config, 64)?; // at most 64 positions per sequence
                                                    // The tree is paged like the pool: it stores, matches and evicts whole blocks only. Its
                                                    // handle per token is the block that holds it.
    let mut tree: RadixTree<BlockId> = RadixTree::with_page_size(BLOCK);

    let shared: Vec<u32> = (100..110).collect(); // e.g. a system prompt
    let prompt_a: Vec<u32> = shared.iter().copied().chain([7, 8, 9]).collect();
    let prompt_b: Vec<u32> = shared.iter().copied().chain([42, 43]).collect();

    // Sequence A: nothing cached yet, so it computes all of its 13 positions.
    let (a, reused_a, node_a) = start(&mut cache, &mut tree, &prompt_a)?;
    compute(&mut cache, a, &prompt_a, reused_a)?;
    let _ = writeln!(out, "A: {} tokens, {reused_a} reused", prompt_a.len());
    // A is done: hand its whole blocks to the tree (it takes its own reference to each), so a
    // later prompt can find them. 13 tokens = 3 whole blocks + 1 token, which is not cached.
    let table = cache.table(a)?;
    let whole = table.len() / BLOCK * BLOCK;
    let blocks = table.blocks()[..whole / BLOCK].to_vec();
    let handles: Vec<BlockId> = (0..whole).map(|i| blocks[i / BLOCK]).collect();
    let already = tree.insert(&prompt_a[..whole], &handles)?;
    for &block in &blocks[already / BLOCK..] {
        cache.pool_mut().retain(block)?;
    }

    // Sequence B shares 10 tokens with A: the tree gives back the 2 whole blocks (8 tokens)
    // that hold them; B computes only its remaining 4 positions.
    let (b, reused_b, node_b) = start(&mut cache, &mut tree, &prompt_b)?;
    compute(&mut cache, b, &prompt_b, reused_b)?;
    let blocks_both = cache.pool().n_used();
    let keys_match = same_keys(&cache, a, b, reused_b);
    let _ = writeln!(
        out,
        "B: {} tokens, {reused_b} reused from A's blocks (keys identical: {keys_match}); pool: {blocks_both} of {} blocks in use",
        prompt_b.len(),
        cache.pool().n_blocks(),
    );

    // Both end: their own references go; the tree's keep A's cached blocks alive until they
    // are evicted (least recently used first, when the pool runs short).
    tree.unlock(node_a)?;
    tree.unlock(node_b)?;
    cache.remove_sequence(a)?;
    cache.remove_sequence(b)?;
    let cached_blocks = cache.pool().n_used();
    for block in dedup(tree.evict(usize::MAX)) {
        cache.pool_mut().release(block)?;
    }
    let _ = writeln!(
        out,
        "after both ended: {cached_blocks} blocks held by the tree; after evicting it: {}",
        cache.pool().n_used()
    );
    Ok(Outcome {
        reused_tokens: reused_b,
        keys_match,
        blocks_used: (blocks_both, cache.pool().n_used()),
    })
}

/// Starts a sequence for `prompt` on its longest cached whole-block prefix, locked against
/// eviction while the sequence runs. At least one token is left to compute: the engine needs
/// the last prompt position's logits.
fn start(
    cache: &mut PagedKvCache,
    tree: &mut RadixTree<BlockId>,
    prompt: &[u32],
) -> Result<(SeqId, usize, NodeId), KvError> {
    let found = tree.match_prefix(&prompt[..prompt.len() - 1]);
    let blocks: Vec<BlockId> = found.handles.iter().step_by(BLOCK).copied().collect();
    let seq = cache.add_sequence_with_prefix(&blocks, found.len)?;
    tree.lock(found.node)?;
    Ok((seq, found.len, found.node))
}

/// Writes positions `from..` of `seq`: per layer `(n_new, kv_heads * head_dim)` keys and values,
/// then one `advance` for all layers, as a forward pass does.
fn compute(
    cache: &mut PagedKvCache,
    seq: SeqId,
    prompt: &[u32],
    from: usize,
) -> Result<(), KvError> {
    let row = KV_HEADS * HEAD_DIM;
    for layer in 0..LAYERS {
        let k: Vec<f32> = (from..prompt.len())
            .flat_map(|p| (0..row).map(move |c| fake_kv(prompt[p], p, layer, c)))
            .collect();
        let v: Vec<f32> = k.iter().map(|x| -x).collect();
        cache.append(seq, layer, &k, &v)?;
    }
    cache.advance(seq, prompt.len() - from)
}

/// Stands in for a k projection: depends on the token, its position, the layer and the channel.
fn fake_kv(token: u32, pos: usize, layer: usize, c: usize) -> f32 {
    ((token as usize * 31 + pos * 7 + layer * 3 + c) % 97) as f32 / 97.0
}

/// Whether `a` and `b` hold the same keys for their first `n` positions, in every layer and head.
fn same_keys(cache: &PagedKvCache, a: SeqId, b: SeqId, n: usize) -> bool {
    let rows = |seq, layer, head| -> Vec<f32> {
        let mut all = Vec::new();
        for block in cache.keys(seq, layer, head).expect("live sequence") {
            all.extend(block.rows.to_f32_vec());
        }
        all.truncate(n * HEAD_DIM);
        all
    };
    (0..LAYERS).all(|l| (0..KV_HEADS).all(|h| rows(a, l, h) == rows(b, l, h)))
}

/// The tree returns one handle per evicted token; the pool is released once per block.
fn dedup(mut blocks: Vec<BlockId>) -> Vec<BlockId> {
    blocks.sort();
    blocks.dedup();
    blocks
}
