//! The decode kernels' compute margin on this machine: each kernel in cache on one thread
//! (`nano_infer::simd::margin`), in weight bytes per second, divided by the single-thread read
//! bandwidth measured by `bandwidth.rs`. A ratio of 1 means the kernel just keeps up with
//! memory on one core; the target (issue 22) is >= 2.5 at AVX2, so that a core with half the
//! vector width still outruns memory.
//!
//! Timing: per kernel and level, a warm-up, then the number of calls that takes ~20 ms is
//! timed 9 times; the median is reported (the bandwidth keeps its best pass, since it is a
//! bound; a rate to compare with it could be either, and the median is what a run sees).

use std::hint::black_box;
use std::time::Instant;

use nano_infer::simd::margin::{DecodeKernel, InCacheGemv};
use nano_infer::simd::{Isa, Kernels};
use serde::Serialize;

/// Ratio of in-cache kernel rate to one core's read bandwidth that issue 22 asks of AVX2.
pub(crate) const TARGET_AVX2: f64 = 2.5;

/// One kernel at one level.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct MarginRow {
    pub(crate) kernel: &'static str,
    pub(crate) isa: String,
    /// Bytes read per call (codes and scales).
    pub(crate) weight_bytes: u64,
    /// Median in-cache rate, bytes per second, one thread.
    pub(crate) bytes_per_s: f64,
    /// `bytes_per_s` / single-thread read bandwidth.
    pub(crate) ratio: f64,
    /// `bytes_per_s` / one core's share of the all-core read bandwidth.
    pub(crate) ratio_per_core_share: f64,
}

/// Every decode kernel at every level up to `cap` (all the host has when `None`).
pub(crate) fn measure(cap: Option<Isa>, bandwidth_1t: f64, per_core_share: f64) -> Vec<MarginRow> {
    let levels: Vec<Kernels> = Isa::available()
        .into_iter()
        .filter(|&isa| cap.is_none_or(|c| isa <= c))
        .filter_map(Kernels::for_isa)
        .collect();
    let mut rows = Vec::new();
    for kernel in DecodeKernel::ALL {
        for &kern in &levels {
            let mut gemv = InCacheGemv::new(kernel, kern);
            let rate = median_rate(&mut gemv);
            rows.push(MarginRow {
                kernel: kernel.name(),
                isa: kern.isa().to_string(),
                weight_bytes: gemv.weight_bytes(),
                bytes_per_s: rate,
                ratio: rate / bandwidth_1t,
                ratio_per_core_share: rate / per_core_share,
            });
        }
    }
    rows
}

fn median_rate(gemv: &mut InCacheGemv) -> f64 {
    for _ in 0..20 {
        black_box(gemv.run());
    }
    // Calls per sample: ~20 ms.
    let start = Instant::now();
    let mut calls = 0u64;
    while start.elapsed().as_secs_f64() < 0.02 {
        black_box(gemv.run());
        calls += 1;
    }
    let mut rates: Vec<f64> = (0..9)
        .map(|_| {
            let start = Instant::now();
            for _ in 0..calls {
                black_box(gemv.run());
            }
            (calls * gemv.weight_bytes()) as f64 / start.elapsed().as_secs_f64()
        })
        .collect();
    rates.sort_by(f64::total_cmp);
    rates[rates.len() / 2]
}

/// The markdown section.
pub(crate) fn markdown(rows: &[MarginRow], bandwidth_1t: f64, per_core_share: f64) -> String {
    if rows.is_empty() {
        return String::new();
    }
    let mut s = format!(
        "\n## Compute margin of the decode kernels (in cache, one thread)\n\nEach decode kernel \
         on a weight matrix that fits in L2 (`simd::margin`, k = 2560, <= 192 KiB of codes and \
         scales), median of 9 timings; `ratio` is that rate over the single-thread read \
         bandwidth ({:.1} GB/s), `ratio to share` over one core's share of the all-core \
         bandwidth ({:.1} GB/s: what each core must digest when all decode). At `avx2` the \
         target is `ratio` >= {TARGET_AVX2}: a kernel below it is compute-bound on a core with \
         half the vector width.\n\n",
        bandwidth_1t / 1e9,
        per_core_share / 1e9
    );
    s += "| kernel | isa | KiB per call | GB/s in cache | ratio | ratio to share |\n|---|---|---:|---:|---:|---:|\n";
    for r in rows {
        let flag = if r.isa == "avx2" && r.ratio < TARGET_AVX2 {
            " (below target)"
        } else {
            ""
        };
        s += &format!(
            "| {} | {} | {:.0} | {:.1} | {:.2}{flag} | {:.2} |\n",
            r.kernel,
            r.isa,
            r.weight_bytes as f64 / 1024.0,
            r.bytes_per_s / 1e9,
            r.ratio,
            r.ratio_per_core_share
        );
    }
    s
}
