//! Integration tests of nano-infer-kvcache, one binary with a module per mechanism (ripgrep's
//! layout: one link step instead of five).

mod contiguous;
mod paged;
mod pool_props;
mod prefix;
mod radix_props;

/// Deterministic pseudo-random rows in [-4, 4): tests need varied values (to catch transposed
/// layouts) but reproducible failures.
pub fn rows(n: usize, width: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..n * width)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 8.0 - 4.0
        })
        .collect()
}

/// Gathers one (layer, head) of a paged sequence into `(n_pos, head_dim)` f32.
pub fn gather(iter: nano_infer_kvcache::BlockRowsIter<'_>) -> Vec<f32> {
    iter.flat_map(|b| b.rows.to_f32_vec()).collect()
}
