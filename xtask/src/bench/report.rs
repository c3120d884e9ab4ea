//! The machine a benchmark ran on, and the report: a markdown table for people and a
//! JSON document with every sample for tools. Both are written to `bench/` as
//! `<cpu>-<cores>c-<date>.{md,json}`, because results only mean something per machine.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use serde::Serialize;

use super::one::OneResult;

/// Where and when: read from /proc and the clock, nothing is required to exist.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Machine {
    pub(crate) cpu: String,
    pub(crate) cores: usize,
    pub(crate) mem_bytes: u64,
    pub(crate) hostname: String,
    pub(crate) arch: String,
    /// UTC, `YYYY-MM-DD HH:MM`.
    pub(crate) date: String,
    pub(crate) commit: String,
}

impl Machine {
    pub(crate) fn detect(repo: &Path) -> Self {
        let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        // x86 says `model name`; many arm64 kernels only give implementer/part numbers.
        let cpu = field(&cpuinfo, "model name")
            .or_else(|| {
                let imp = field(&cpuinfo, "CPU implementer")?;
                let part = field(&cpuinfo, "CPU part")?;
                Some(format!("arm implementer {imp} part {part}"))
            })
            .unwrap_or_else(|| std::env::consts::ARCH.into());
        let meminfo = fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let mem_kib: u64 = field(&meminfo, "MemTotal")
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0);
        let hostname = fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_owned())
            .unwrap_or_default();
        Self {
            cpu,
            cores: std::thread::available_parallelism().map_or(1, usize::from),
            mem_bytes: mem_kib * 1024,
            hostname,
            arch: std::env::consts::ARCH.into(),
            date: utc_now(),
            commit: git_commit(repo),
        }
    }

    /// File stem: `amd-epyc-2c-2025-11-27`. The CPU names the file rather than the host
    /// name, which in containers and CI is a random id; the host is recorded inside.
    pub(crate) fn file_stem(&self) -> String {
        let mut slug = String::new();
        for c in self.cpu.chars() {
            if c.is_ascii_alphanumeric() {
                slug.push(c.to_ascii_lowercase());
            } else if !slug.is_empty() && !slug.ends_with('-') {
                slug.push('-');
            }
        }
        let slug = slug.trim_end_matches('-');
        let day = self.date.split(' ').next().unwrap_or("");
        format!("{slug}-{}c-{day}", self.cores)
    }
}

/// The value of the first `key : value` line of a /proc file.
fn field(text: &str, key: &str) -> Option<String> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        (k.trim() == key).then(|| v.trim().to_owned())
    })
}

/// The 1-, 5- and 15-minute load averages: other work on the machine skews every figure.
pub(crate) fn loadavg() -> String {
    fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

fn git_commit(repo: &Path) -> String {
    let git = |args: &[&str]| {
        Command::new("git")
            .args(args)
            .current_dir(repo)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
    };
    match git(&["rev-parse", "--short", "HEAD"]) {
        Some(rev) => match git(&["status", "--porcelain", "--untracked-files=no"]) {
            Some(s) if !s.is_empty() => format!("{rev} + uncommitted changes"),
            _ => rev,
        },
        None => "unknown".into(),
    }
}

/// Now in UTC as `YYYY-MM-DD HH:MM`, without a date crate.
fn utc_now() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (y, m, d) = civil_from_days((secs / 86_400) as i64);
    let tod = secs % 86_400;
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}",
        tod / 3600,
        tod % 3600 / 60
    )
}

/// Days since 1970-01-01 to (year, month, day): Howard Hinnant's `civil_from_days`.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// One (model, threads) row: medians over its repeats.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Row {
    pub(crate) label: String,
    pub(crate) format: String,
    pub(crate) isa: String,
    pub(crate) threads: usize,
    pub(crate) file_bytes: usize,
    pub(crate) bytes_per_token: usize,
    pub(crate) load_s: f64,
    pub(crate) first_token_s: f64,
    /// (prompt tokens, median tok/s).
    pub(crate) prefill_tok_s: Vec<(usize, f64)>,
    pub(crate) decode_tok_s: Option<f64>,
    /// Read bandwidth at this thread count / bytes per token.
    pub(crate) bound_tok_s: f64,
    pub(crate) peak_rss: u64,
    pub(crate) samples: Vec<OneResult>,
}

impl Row {
    pub(crate) fn from_samples(label: String, samples: Vec<OneResult>, bandwidth: f64) -> Self {
        let first = &samples[0];
        let med = |f: &dyn Fn(&OneResult) -> Option<f64>| {
            median(samples.iter().filter_map(f).collect()).unwrap_or(f64::NAN)
        };
        let prefill_tok_s = first
            .prefill
            .iter()
            .enumerate()
            .map(|(i, p)| (p.tokens, med(&|s| Some(s.prefill.get(i)?.tok_s()))))
            .collect();
        let decode_tok_s = first.decode.map(|_| med(&|s| s.decode.map(|d| d.tok_s())));
        Self {
            format: first.format.clone(),
            isa: first.isa.clone(),
            threads: first.threads,
            file_bytes: first.file_bytes,
            bytes_per_token: first.bytes_per_token,
            load_s: med(&|s| Some(s.load_s)),
            first_token_s: med(&|s| Some(s.first_token_s)),
            prefill_tok_s,
            decode_tok_s,
            bound_tok_s: bandwidth / first.bytes_per_token as f64,
            peak_rss: med(&|s| Some(s.peak_rss as f64)) as u64,
            label,
            samples,
        }
    }
}

/// Median; the mean of the middle two for an even count.
pub(crate) fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

/// Everything one `cargo xtask bench` run produced.
#[derive(Debug, Serialize)]
pub(crate) struct Report {
    pub(crate) machine: Machine,
    pub(crate) command: String,
    pub(crate) repeat: usize,
    pub(crate) loadavg_before: String,
    pub(crate) loadavg_after: String,
    /// (threads, best read bandwidth in bytes/s).
    pub(crate) bandwidth: Vec<(usize, f64)>,
    pub(crate) bandwidth_buffer_bytes: usize,
    /// The decode kernels' in-cache rates and their ratio to the one-thread bandwidth.
    pub(crate) margin: Vec<super::margin::MarginRow>,
    pub(crate) rows: Vec<Row>,
    /// What a budget row may hold beyond its planned peak (`bench::OFFLOAD_MARGIN`).
    pub(crate) offload_margin: u64,
    /// [`Report::offload`] of `rows`, kept in the JSON document.
    pub(crate) offload: Vec<OffloadSummary>,
}

/// A row run under a memory budget, beside the resident row of the same model and threads.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct OffloadSummary {
    pub(crate) label: String,
    pub(crate) threads: usize,
    pub(crate) budget: u64,
    pub(crate) layers: usize,
    pub(crate) streamed_layers: usize,
    pub(crate) planned_peak: u64,
    /// Median `VmHWM` of the budget runs.
    pub(crate) peak_rss: u64,
    /// `budget + margin`: the most `peak_rss` may be.
    pub(crate) limit: u64,
    pub(crate) within_limit: bool,
    pub(crate) decode_tok_s: Option<f64>,
    pub(crate) resident_decode_tok_s: Option<f64>,
    pub(crate) resident_peak_rss: Option<u64>,
}

const GB: f64 = 1e9;

impl Report {
    /// The budget rows, each beside the unbudgeted row of the same model and thread count.
    pub(crate) fn offload(&self) -> Vec<OffloadSummary> {
        self.rows
            .iter()
            .filter_map(|r| {
                let offload = r.samples[0].offload.as_ref()?;
                let resident = self.rows.iter().find(|p| {
                    p.samples[0].offload.is_none()
                        && p.samples[0].model == r.samples[0].model
                        && p.threads == r.threads
                });
                let limit = offload.budget + self.offload_margin;
                Some(OffloadSummary {
                    label: r.label.clone(),
                    threads: r.threads,
                    budget: offload.budget,
                    layers: offload.layers,
                    streamed_layers: offload.streamed_layers,
                    planned_peak: offload.planned_peak,
                    peak_rss: r.peak_rss,
                    limit,
                    within_limit: r.peak_rss <= limit,
                    decode_tok_s: r.decode_tok_s,
                    resident_decode_tok_s: resident.and_then(|p| p.decode_tok_s),
                    resident_peak_rss: resident.map(|p| p.peak_rss),
                })
            })
            .collect()
    }

    /// The "Under a memory budget" section (empty without budget rows).
    fn offload_markdown(&self) -> String {
        let rows = self.offload();
        if rows.is_empty() {
            return String::new();
        }
        // GiB here, the unit budgets are written in (`--offload-budget 3GiB`).
        let gib = |b: u64| format!("{:.2}", b as f64 / (1u64 << 30) as f64);
        let tps = |t: Option<f64>| t.map_or_else(|| "-".into(), |t| format!("{t:.2}"));
        let mut s = format!(
            "\n## Under a memory budget (`--max-memory`)\n\nPeak RSS (`VmHWM`, mapped weight pages \
             included) must stay within the budget plus a margin of {} MiB for what the plan \
             does not count (code and libraries, thread stacks, allocator slack, page rounding); \
             `planned peak` is the plan's own bound (resident weights + two streamed layers in \
             flight + KV cache + activations). `resident` is the same model and thread count \
             without a budget.\n\n",
            self.offload_margin >> 20
        );
        s += "| model | threads | budget GiB | streamed layers | planned peak GiB | peak RSS GiB | limit GiB | within limit | decode tok/s | resident decode tok/s | resident peak RSS GiB |\n";
        s += "|---|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|\n";
        for o in rows {
            s += &format!(
                "| {} | {} | {} | {} of {} | {} | {} | {} | {} | {} | {} | {} |\n",
                o.label,
                o.threads,
                gib(o.budget),
                o.streamed_layers,
                o.layers,
                gib(o.planned_peak),
                gib(o.peak_rss),
                gib(o.limit),
                if o.within_limit { "yes" } else { "**NO**" },
                tps(o.decode_tok_s),
                tps(o.resident_decode_tok_s),
                o.resident_peak_rss.map_or_else(|| "-".into(), gib),
            );
        }
        s
    }

    pub(crate) fn markdown(&self) -> String {
        let m = &self.machine;
        let mut s = format!(
            "# nano-infer benchmark: {} ({} cores), {}\n\n",
            m.cpu, m.cores, m.date
        );
        s += "| | |\n|---|---|\n";
        s += &format!("| CPU | {} ({}) |\n", m.cpu, m.arch);
        s += &format!("| cores | {} |\n", m.cores);
        s += &format!("| memory | {:.1} GB |\n", m.mem_bytes as f64 / GB);
        s += &format!("| host | {} |\n", m.hostname);
        s += &format!("| date | {} UTC |\n", m.date);
        s += &format!("| commit | {} |\n", m.commit);
        s += &format!(
            "| load average (1/5/15 min) | before: {}; after: {} |\n",
            self.loadavg_before, self.loadavg_after
        );
        s += &format!("| command | `{}` |\n", self.command);
        if let Some(r) = self.rows.first() {
            s += &format!("| load options | `{}` |\n", r.samples[0].load_options);
        }
        s += "\n";

        s += &format!(
            "## Read bandwidth\n\nBest of 5 passes summing a {} MiB f32 buffer.\n\n",
            self.bandwidth_buffer_bytes >> 20
        );
        s += "| threads | GB/s |\n|---:|---:|\n";
        for (t, bw) in &self.bandwidth {
            s += &format!("| {t} | {:.1} |\n", bw / GB);
        }
        let bw = |threads: usize| {
            self.bandwidth
                .iter()
                .find(|(t, _)| *t == threads)
                .map_or(f64::NAN, |b| b.1)
        };
        let share = bw(m.cores) / m.cores as f64;
        s += &super::margin::markdown(&self.margin, bw(1), share);

        s += &format!(
            "\n## End to end (median of {} runs, each in a fresh process)\n\n",
            self.repeat
        );
        if self.rows.iter().any(|r| r.samples.len() < self.repeat) {
            s += "**Incomplete:** the run stopped early; `runs` says how many each row has.\n\n";
        }
        let prompts: Vec<usize> = self
            .rows
            .first()
            .map(|r| r.prefill_tok_s.iter().map(|p| p.0).collect())
            .unwrap_or_default();
        let decode_n = self
            .rows
            .iter()
            .find_map(|r| r.samples[0].decode.map(|d| d.tokens));
        s += "| model | format | isa | threads | runs | weights GB | load s | first token s |";
        for p in &prompts {
            s += &format!(" prefill {p} tok/s |");
        }
        if let Some(n) = decode_n {
            s += &format!(" decode {n} tok/s | bound tok/s | of bound |");
        }
        s += " peak RSS GB |\n|---|---|---|---:|---:|---:|---:|---:|";
        s += &"---:|".repeat(prompts.len() + if decode_n.is_some() { 3 } else { 0 } + 1);
        s += "\n";
        for r in &self.rows {
            s += &format!(
                "| {} | {} | {} | {} | {} | {:.2} | {:.2} | {:.2} |",
                r.label,
                r.format,
                r.isa,
                r.threads,
                r.samples.len(),
                r.bytes_per_token as f64 / GB,
                r.load_s,
                r.first_token_s
            );
            for (_, tps) in &r.prefill_tok_s {
                s += &format!(" {tps:.2} |");
            }
            if decode_n.is_some() {
                match r.decode_tok_s {
                    Some(d) => {
                        s += &format!(
                            " {d:.2} | {:.2} | {:.0}% |",
                            r.bound_tok_s,
                            100.0 * d / r.bound_tok_s
                        )
                    }
                    None => s += " | | |",
                }
            }
            s += &format!(" {:.2} |\n", r.peak_rss as f64 / GB);
        }
        s += "\n`weights GB` is `Model::bytes_per_token()`, the bytes one decode step reads; \
              `bound` is read bandwidth at that thread count divided by it. `first token` is \
              the first forward pass after load, which faults the mapped weights in; it is \
              kept out of the prefill and decode figures. See bench/README.md.\n";
        s += &self.offload_markdown();
        s
    }

    /// A stem for `dir` that no earlier report uses: `<cpu>-<cores>c-<date>`, then `-2`,
    /// `-3`... so a second run on the same day does not overwrite the first.
    pub(crate) fn free_stem(&self, dir: &Path) -> String {
        let base = self.machine.file_stem();
        let taken = |stem: &str| {
            dir.join(format!("{stem}.md")).exists() || dir.join(format!("{stem}.json")).exists()
        };
        let mut stem = base.clone();
        let mut k = 1;
        while taken(&stem) {
            k += 1;
            stem = format!("{base}-{k}");
        }
        stem
    }

    /// Writes (or rewrites) `<dir>/<stem>.md` and `.json`; returns the markdown path.
    pub(crate) fn save(&self, dir: &Path, stem: &str) -> Result<PathBuf> {
        fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let md = dir.join(format!("{stem}.md"));
        fs::write(&md, self.markdown())
            .with_context(|| format!("cannot write {}", md.display()))?;
        let json = dir.join(format!("{stem}.json"));
        fs::write(&json, serde_json::to_string_pretty(self)? + "\n")
            .with_context(|| format!("cannot write {}", json.display()))?;
        Ok(md)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(civil_from_days(20_419), (2025, 11, 27));
    }

    #[test]
    fn medians() {
        assert_eq!(median(vec![]), None);
        assert_eq!(median(vec![3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), Some(2.5));
    }

    fn sample(model: &str, offload: Option<u64>, peak_rss: u64, decode_secs: f64) -> OneResult {
        use super::super::one::{Offload, Timed};
        OneResult {
            model: PathBuf::from(model),
            format: "bfloat16".into(),
            isa: "avx2".into(),
            load_options: String::new(),
            threads: 2,
            file_bytes: 1,
            bytes_per_token: 1,
            load_s: 0.0,
            first_token_s: 0.0,
            prefill: Vec::new(),
            decode: Some(Timed {
                tokens: 16,
                secs: decode_secs,
            }),
            peak_rss,
            rss_anon: 0,
            rss_file: 0,
            offload: offload.map(|budget| Offload {
                budget,
                planned_peak: budget - 10,
                layers: 36,
                streamed_layers: 28,
                report: String::new(),
            }),
        }
    }

    #[test]
    fn budget_rows_are_checked_and_paired_with_the_resident_row() {
        let gib = 1u64 << 30;
        let row = |label: &str, s: OneResult| Row::from_samples(label.into(), vec![s], 1e10);
        let mut report = Report {
            machine: Machine::detect(Path::new(".")),
            command: String::new(),
            repeat: 1,
            loadavg_before: String::new(),
            loadavg_after: String::new(),
            bandwidth: Vec::new(),
            bandwidth_buffer_bytes: 0,
            margin: Vec::new(),
            rows: vec![
                row("a", sample("/m/a", None, 9 * gib, 16.0)),
                row(
                    "a @3GiB",
                    sample("/m/a", Some(3 * gib), 3 * gib + 100, 32.0),
                ),
                row("b", sample("/m/b", None, 9 * gib, 8.0)),
                row(
                    "b @3GiB",
                    sample("/m/b", Some(3 * gib), 3 * gib + 300, 32.0),
                ),
            ],
            offload_margin: 200,
            offload: Vec::new(),
        };
        let o = report.offload();
        assert_eq!(o.len(), 2);
        assert!(
            o[0].within_limit,
            "100 bytes over the budget is inside a 200-byte margin"
        );
        assert!(!o[1].within_limit, "300 bytes over is not");
        assert_eq!(o[0].limit, 3 * gib + 200);
        assert_eq!(o[0].decode_tok_s, Some(0.5));
        assert_eq!(o[0].resident_decode_tok_s, Some(1.0), "paired with model a");
        assert_eq!(o[1].resident_decode_tok_s, Some(2.0), "paired with model b");
        report.offload = o;
        let md = report.markdown();
        assert!(md.contains("## Under a memory budget"), "{md}");
        assert!(md.contains("| 28 of 36 |") && md.contains("**NO**"), "{md}");
    }

    #[test]
    fn proc_fields() {
        let info = "processor\t: 0\nmodel name\t: AMD EPYC 9R14\n";
        assert_eq!(field(info, "model name").as_deref(), Some("AMD EPYC 9R14"));
        assert_eq!(field(info, "CPU part"), None);
    }
}
