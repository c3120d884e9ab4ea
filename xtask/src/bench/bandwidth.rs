//! This machine's memory read bandwidth: the numerator of the decode bound.
//!
//! Decode reads every weight once per token, so tokens/s can never beat
//! bandwidth / `Model::bytes_per_token()`. We measure what a plain streaming read
//! achieves: a buffer far larger than the last-level cache (1 GiB by default) is split
//! into one contiguous slice per thread, and each thread sums its slice as f32 into 32
//! independent accumulators. The fixed-size inner loop has no cross-lane dependency, so
//! LLVM turns it into vector loads and adds (SSE2 at the baseline x86-64 target, which
//! is already far more than DRAM can feed) without `unsafe` or intrinsics. Each thread
//! count keeps its best of several passes: the bound is what the memory system can do,
//! not what it did while someone else was compiling.

use std::hint::black_box;
use std::thread;
use std::time::Instant;

/// Accumulators per thread: 32 f32 = 8 SSE or 4 AVX registers, enough independent add
/// chains to hide the add latency behind the loads.
const LANES: usize = 32;

/// Best read bandwidth over `passes` passes, in bytes per second, for each thread count.
pub(crate) fn measure(threads: &[usize], bytes: usize, passes: usize) -> Vec<(usize, f64)> {
    let len = (bytes / size_of::<f32>()).max(LANES);
    // Small integers: the sum stays exact-ish and never overflows to inf/NaN.
    let buf: Vec<f32> = (0..len).map(|i| (i % 8) as f32).collect();
    threads
        .iter()
        .map(|&t| {
            let best = (0..passes.max(1))
                .map(|_| {
                    let start = Instant::now();
                    black_box(parallel_sum(&buf, t));
                    (len * size_of::<f32>()) as f64 / start.elapsed().as_secs_f64()
                })
                .fold(0.0, f64::max);
            (t, best)
        })
        .collect()
}

/// Sums `buf` on `threads` scoped threads, one contiguous slice each.
fn parallel_sum(buf: &[f32], threads: usize) -> f32 {
    // Slices are whole multiples of LANES so only the last one has a scalar tail.
    let per = (buf.len().div_ceil(threads.max(1)).div_ceil(LANES) * LANES).max(LANES);
    thread::scope(|s| {
        let handles: Vec<_> = buf
            .chunks(per)
            .map(|part| s.spawn(move || sum_f32(part)))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("bandwidth thread panicked"))
            .sum()
    })
}

/// Sum with `LANES` accumulators; the fixed-size array makes the loop body vectorisable.
fn sum_f32(x: &[f32]) -> f32 {
    let mut acc = [0f32; LANES];
    let mut chunks = x.chunks_exact(LANES);
    for c in &mut chunks {
        let c: &[f32; LANES] = c.try_into().expect("chunks_exact yields LANES items");
        for (a, v) in acc.iter_mut().zip(c) {
            *a += *v;
        }
    }
    acc.iter().sum::<f32>() + chunks.remainder().iter().sum::<f32>()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sum_matches_naive_on_awkward_lengths() {
        for len in [0, 1, LANES - 1, LANES, LANES + 1, 1000] {
            let x: Vec<f32> = (0..len).map(|i| (i % 8) as f32).collect();
            let naive: f32 = x.iter().sum();
            assert_eq!(sum_f32(&x), naive, "len {len}");
            for t in 1..4 {
                assert_eq!(parallel_sum(&x, t), naive, "len {len}, {t} threads");
            }
        }
    }
}
