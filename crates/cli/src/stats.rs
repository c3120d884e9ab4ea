//! Timings and memory: the `-v` lines on stderr and the `timings` object of `--json`.
//!
//! Speeds count what the engine did: prefill speed is prompt tokens fed over prefill time;
//! decode speed is forward passes over decode time, where the first generated token costs no
//! pass of its own (it is sampled from the prefill's logits).

use crate::load::Loaded;
use nano_infer_qwen3::{Generation, SamplingParams, Session};
use serde_json::{json, Value};
use std::time::Duration;

/// `n / t`, 0 when nothing was timed.
fn rate(n: usize, t: Duration) -> f64 {
    let secs = t.as_secs_f64();
    if n == 0 || secs <= 0.0 {
        0.0
    } else {
        n as f64 / secs
    }
}

/// Forward passes of the decode phase.
fn decode_passes(g: &Generation) -> usize {
    g.ids.len().saturating_sub(1)
}

/// The `timings` object of `--json`.
pub fn timings_json(load: Duration, g: &Generation) -> Value {
    json!({
        "load_s": load.as_secs_f64(),
        "prefill_s": g.prefill_time.as_secs_f64(),
        "decode_s": g.decode_time.as_secs_f64(),
        "prefill_tok_s": rate(g.prompt_tokens, g.prefill_time),
        "decode_tok_s": rate(decode_passes(g), g.decode_time),
    })
}

/// `-v`: what was loaded, how, and how long it took.
pub fn print_load(loaded: &Loaded) {
    let m = &loaded.model;
    note!(
        "model: {} ({} of weights, {} read per token), loaded in {:.2} s",
        m.dir().display(),
        human_bytes(m.file_bytes() as u64),
        human_bytes(m.bytes_per_token() as u64),
        loaded.load_time.as_secs_f64()
    );
    note!(
        "engine: isa {} (cpu: {}), {} threads, context {} tokens",
        m.kernels().isa(),
        nano_infer_qwen3::CpuFeatures::get(),
        loaded.threads,
        m.ctx_size()
    );
}

/// `-v`: one generation's prompt and speeds. `reused` is the prefix the session already held.
pub fn print_generation(g: &Generation, reused: usize, session: &Session<'_>) {
    let reuse = if reused > 0 {
        format!(" ({reused} reused from the cache)")
    } else {
        String::new()
    };
    note!(
        "prompt: {} tokens prefilled{reuse} in {:.3} s, {:.1} tok/s",
        g.prompt_tokens,
        g.prefill_time.as_secs_f64(),
        rate(g.prompt_tokens, g.prefill_time)
    );
    note!(
        "decode: {} tokens in {:.3} s, {:.1} tok/s; stop: {}",
        g.ids.len(),
        g.decode_time.as_secs_f64(),
        rate(decode_passes(g), g.decode_time),
        g.stop_reason.as_str()
    );
    let peak = peak_memory().map_or_else(|| "unknown".to_string(), human_bytes);
    note!(
        "memory: peak {peak}, KV cache {} for {} positions",
        human_bytes(session.kv_bytes() as u64),
        session.position()
    );
}

/// `1.5 GiB`, `12.0 MiB`, `640 B`.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut value = n as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// `-v`: the sampling settings in force.
pub fn print_sampling(p: &SamplingParams, max_new_tokens: usize) {
    note!(
        "sampling: temperature {}, top-k {}, top-p {}, min-p {}, repeat-penalty {}, presence-penalty {}, seed {}; at most {max_new_tokens} new tokens",
        p.temperature, p.top_k, p.top_p, p.min_p, p.repetition_penalty, p.presence_penalty, p.seed
    );
}

/// Peak resident memory of the process in bytes: `VmHWM` on Linux.
#[cfg(target_os = "linux")]
pub fn peak_memory() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Peak resident memory of the process in bytes: `getrusage`'s `ru_maxrss`, which macOS gives
/// in bytes and the BSDs in KiB.
#[cfg(all(unix, not(target_os = "linux")))]
pub fn peak_memory() -> Option<u64> {
    use nix::sys::resource::{getrusage, UsageWho};
    let max_rss = getrusage(UsageWho::RUSAGE_SELF).ok()?.max_rss();
    let max_rss = u64::try_from(max_rss).ok()?;
    Some(if cfg!(target_vendor = "apple") {
        max_rss
    } else {
        max_rss * 1024
    })
}

#[cfg(not(unix))]
pub fn peak_memory() -> Option<u64> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[cfg(target_os = "linux")]
    fn peak_memory_is_read() {
        assert!(peak_memory().unwrap() > 0);
    }

    #[test]
    fn bytes_are_readable() {
        assert_eq!(human_bytes(640), "640 B");
        assert_eq!(human_bytes(3 << 20), "3.0 MiB");
        assert_eq!(human_bytes(8_000_000_000), "7.5 GiB");
    }

    #[test]
    fn rates_do_not_divide_by_zero() {
        assert_eq!(rate(5, Duration::ZERO), 0.0);
        assert_eq!(rate(0, Duration::from_secs(1)), 0.0);
        assert_eq!(rate(10, Duration::from_secs(2)), 5.0);
    }
}
