//! Timings and memory: the `-v` lines on stderr and the `timings` object of `--json`.
//!
//! Speeds count what the engine did: prefill speed is prompt tokens fed over prefill time;
//! decode speed is forward passes over decode time, where the first generated token costs no
//! pass of its own (it is sampled from the prefill's logits).

use crate::load::Loaded;
use nano_infer_generate::{Finish, Prepared};
use nano_infer_qwen3::Session;
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

/// Prompt tokens the prefill computed (the rest came from a cache).
fn prefilled(f: &Finish) -> usize {
    f.usage.prompt_tokens - f.usage.cached_tokens
}

/// The `timings` object of `--json`.
pub fn timings_json(load: Duration, f: &Finish) -> Value {
    json!({
        "load_s": load.as_secs_f64(),
        "prefill_s": f.prefill_time.as_secs_f64(),
        "decode_s": f.decode_time.as_secs_f64(),
        "prefill_tok_s": rate(prefilled(f), f.prefill_time),
        "decode_tok_s": rate(f.decode_steps(), f.decode_time),
    })
}

/// `-v`: what was loaded, how, and how long it took.
pub fn print_load(loaded: &Loaded) {
    let m = loaded.generator.model();
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

/// `-v`: the settings in force (with the seed, drawn or given); `-vv`: also the rendered prompt.
pub fn print_prepared(p: &Prepared, verbosity: u8) {
    let s = &p.settings.sampling;
    note!(
        "sampling: temperature {}, top-k {}, top-p {}, min-p {}, repeat-penalty {}, presence-penalty {}, frequency-penalty {}, seed {}; at most {} new tokens",
        s.temperature, s.top_k, s.top_p, s.min_p, s.repetition_penalty, s.presence_penalty,
        s.frequency_penalty, s.seed, p.settings.max_tokens
    );
    if verbosity >= 2 {
        if let Some(text) = &p.text {
            note!("rendered prompt: {text:?}");
        }
    }
}

/// `-v`: one generation's prompt, speeds and memory. Every rate divides the count printed
/// beside it: prefill tokens computed, and decode steps (the first generated token comes from
/// the prefill's logits, so `n` tokens take `n - 1` steps).
pub fn print_generation(f: &Finish, session: &Session<'_>, total: Duration) {
    let reuse = match f.usage.cached_tokens {
        0 => String::new(),
        n => format!(" ({n} reused from the cache)"),
    };
    note!(
        "prompt: {} tokens prefilled{reuse} in {:.3} s, {:.1} tok/s",
        prefilled(f),
        f.prefill_time.as_secs_f64(),
        rate(prefilled(f), f.prefill_time)
    );
    let steps = f.decode_steps();
    let ms_per_token = if steps == 0 {
        0.0
    } else {
        1000.0 * f.decode_time.as_secs_f64() / steps as f64
    };
    note!(
        "decode: {} tokens, {steps} decode steps in {:.3} s, {:.1} tok/s, {ms_per_token:.1} ms/token; finish: {}",
        f.ids.len(),
        f.decode_time.as_secs_f64(),
        rate(steps, f.decode_time),
        f.reason().as_str()
    );
    if let Some(c) = &f.constraint {
        note!(
            "constraint: {} masks in {:.3} s, {:.3} ms each; {:.2}% of the decode time",
            c.masks,
            c.mask_time.as_secs_f64(),
            1000.0 * c.mask_time.as_secs_f64() / c.masks.max(1) as f64,
            100.0 * c.mask_time.as_secs_f64() / f.decode_time.as_secs_f64().max(1e-9)
        );
    }
    let peak = peak_memory().map_or_else(|| "unknown".to_string(), human_bytes);
    note!(
        "memory: peak {peak}, KV cache {} for {} positions; total {:.3} s",
        human_bytes(session.kv_bytes() as u64),
        session.position(),
        total.as_secs_f64()
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
