//! `cargo xtask bench-serve`: the HTTP server under load, on the synthetic Qwen3-4B models,
//! recorded under `bench/`. Loopback only; every loop is bounded by request counts.
//!
//! In one process: the model is loaded once; its decode rate through the library's
//! `ChatSession` (the CLI's path) is the baseline; then a server on 127.0.0.1 serves
//! streaming clients on threads of this process over plain sockets:
//!
//! 1. one client, `--requests` requests one after another: its decode rate against the CLI's;
//! 2. `--clients` clients at once, `--requests` each: aggregate output tok/s, time to first
//!    token and inter-token latency (p50/p99; inter-token = between streamed chunks), errors,
//!    and a check that no stream carries another's chunks (one id per stream, ids unique);
//! 3. a `--system-tokens` system prompt: the cold request's time to first token, then warm
//!    ones with other questions (the prefix cache serves the system prompt); then 1 and 2 again
//!    with every request behind that system prompt, each asking its own question;
//! 4. `--running` streams decode while a `--long-prompt` prompt arrives: their inter-token
//!    latency while it is prefilled (p99) against their median before it, per
//!    `--prefill-chunk`. Per token: a token whose text the server holds back (part of a UTF-8
//!    character; random weights pick byte tokens often) arrives with the next one, so the gap
//!    before a chunk is shared by the tokens it carries (counted by their log-probs). The
//!    gaps between chunks are reported beside it.

use crate::bench::{median, synth_model, Machine};
use crate::synth::WeightFormat;
use anyhow::{bail, Context, Result};
use nano_infer::generate::{CancelToken, Generator, Prompt, Request};
use nano_infer::qwen3::{AwqActivations, EngineOptions, KvDtype, LoadOptions};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::time::{Duration, Instant};

#[derive(Debug, clap::Args)]
pub(crate) struct BenchServeArgs {
    /// Synthetic Qwen3-4B checkpoints (models/synth-4b-<format>, generated when missing).
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = [WeightFormat::Awq, WeightFormat::Bf16])]
    formats: Vec<WeightFormat>,
    /// Concurrent clients of scenario 2 (also the server's --parallel).
    #[arg(long, default_value_t = 8)]
    clients: usize,
    /// Requests per client.
    #[arg(long, default_value_t = 2)]
    requests: usize,
    /// Tokens generated per request.
    #[arg(long, default_value_t = 24)]
    max_tokens: usize,
    /// Length of the shared system prompt, in tokens (about).
    #[arg(long, default_value_t = 1000)]
    system_tokens: usize,
    /// Streams decoding while the long prompt arrives.
    #[arg(long, default_value_t = 4)]
    running: usize,
    /// Length of the long prompt, in tokens (about).
    #[arg(long, default_value_t = 2000)]
    long_prompt: usize,
    /// Largest prefill chunks (the server paces below them) to measure scenario 4 with.
    #[arg(long, value_delimiter = ',', default_values_t = [8, 32])]
    prefill_chunk: Vec<usize>,
    /// AWQ models run with int8 activations (`--awq-int8`), on the CLI path and the server.
    #[arg(long)]
    awq_int8: bool,
    /// Directory for the recorded report [default: <repo>/bench].
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
}

/// One streamed answer as the client saw it.
#[derive(Debug, Default)]
struct Stream {
    ttft: Option<Duration>,
    /// Between consecutive text chunks (content or reasoning).
    gaps: Vec<Duration>,
    /// Arrival of each text chunk.
    arrivals: Vec<Instant>,
    /// Tokens each text chunk carries: its log-probs when they were asked for, else 1.
    tokens: Vec<usize>,
    completion_tokens: usize,
    ids: Vec<String>,
    ok: bool,
}

pub(crate) fn run(args: &BenchServeArgs) -> Result<()> {
    let root = crate::bench::repo_root();
    let machine = Machine::detect(&root);
    let mut report = format!(
        "# bench-serve: {} ({} cores), {}, commit {}\n\n`cargo xtask bench-serve --clients {} --requests {} --max-tokens {} --system-tokens {} --running {} --long-prompt {} --prefill-chunk {}{}`; load before: {}\n\n",
        machine.cpu, machine.cores, machine.date, machine.commit, args.clients, args.requests,
        args.max_tokens, args.system_tokens, args.running, args.long_prompt,
        args.prefill_chunk.iter().map(usize::to_string).collect::<Vec<_>>().join(","),
        if args.awq_int8 { " --awq-int8" } else { "" },
        crate::bench::loadavg()
    );
    for &fmt in &args.formats {
        let dir = synth_model(&root, fmt, false)?;
        report += &bench_model(args, &dir)?;
    }
    report += &format!("\nload after: {}\n", crate::bench::loadavg());
    println!("{report}");
    let out = args.out.clone().unwrap_or_else(|| root.join("bench"));
    std::fs::create_dir_all(&out)?;
    // One file per format set, so that runs of one format at a time do not overwrite each other.
    let formats: Vec<String> = args
        .formats
        .iter()
        .map(|f| format!("{f:?}").to_lowercase())
        .collect();
    let path = out.join(format!(
        "{}-serve-{}{}.md",
        machine.file_stem(),
        formats.join("-"),
        if args.awq_int8 { "-int8" } else { "" }
    ));
    std::fs::write(&path, &report).with_context(|| format!("writing {}", path.display()))?;
    eprintln!("bench-serve: wrote {}", path.display());
    Ok(())
}

fn bench_model(args: &BenchServeArgs, dir: &std::path::Path) -> Result<String> {
    let name = dir
        .file_name()
        .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
    eprintln!("bench-serve: loading {}", dir.display());
    let ctx = 4096.max(args.long_prompt + args.system_tokens + 512);
    let options = LoadOptions {
        kv_dtype: KvDtype::F16,
        ctx_size: Some(ctx),
        awq_activations: if args.awq_int8 {
            AwqActivations::Int8
        } else {
            AwqActivations::F32
        },
        ..LoadOptions::default()
    };
    let generator = Generator::load(dir, &options, &mut |_| {})?;
    let mut out = format!("## {name}\n\n");

    // Baseline: one session, the CLI's path.
    let cli_rate = {
        let mut r = Request::new(Prompt::user("Tell me about the sea.", None, Some(false)));
        r.params.temperature = Some(0.0);
        r.params.max_tokens = Some(args.max_tokens as i64);
        r.params.ignore_eos = true;
        let p = generator.prepare(&r)?;
        let f = generator
            .session()
            .generate(&p, &CancelToken::new(), |_| {})?;
        f.decode_steps() as f64 / f.decode_time.as_secs_f64()
    };

    let server = |parallel: usize, chunk: usize| {
        let g = generator.clone();
        nano_infer_server::start(
            nano_infer_server::ServerConfig {
                port: 0,
                engine: EngineOptions {
                    max_batch: parallel,
                    ..EngineOptions::default()
                },
                prefill_chunk: chunk,
                queue_limit: 256,
                ..nano_infer_server::ServerConfig::default()
            },
            move || Ok(g),
        )
    };

    // 1 and 2, with the server's own prefill chunk (a 32-token chunk beside 8 decodes makes
    // 40-row steps, which take the prefill path and cost every stream a long step).
    let default_chunk = nano_infer_server::ServerConfig::default().prefill_chunk;
    let handle = server(args.clients.max(args.running), default_chunk)?;
    let addr = ready(handle.addr())?;
    let (n, r, m) = (args.clients, args.requests, args.max_tokens);
    let one = timed(|| clients(addr, 1, r, m, "", ""))?;
    let many = timed(|| clients(addr, n, r, m, "", ""))?;
    // 3: a shared system prompt, cold then warm.
    let system = words(args.system_tokens);
    let cold = chat(addr, &system, "Question 0: what is this?", 1)?;
    let warm: Vec<Stream> = (1..4)
        .map(|i| chat(addr, &system, &format!("Question {i}: and then?"), 1))
        .collect::<Result<_>>()?;
    // 1 and 2 behind the (now cached) system prompt, with questions of their own (the lone
    // client's answers must not be cached prefixes of the crowd's).
    let one_system = timed(|| clients(addr, 1, r, m, &system, " (alone)"))?;
    let many_system = timed(|| clients(addr, n, r, m, &system, " (in a crowd)"))?;
    handle.shutdown()?;

    let one_rate = median(one.1.iter().map(decode_rate).collect()).unwrap_or(f64::NAN);
    let warm_ttft = median(
        warm.iter()
            .filter_map(|s| s.ttft)
            .map(|d| d.as_secs_f64())
            .collect(),
    )
    .unwrap_or(f64::NAN);
    let cold_ttft = cold.ttft.map_or(f64::NAN, |d| d.as_secs_f64());

    out += &format!(
        "| scenario | figure | target | result |\n|---|---|---|---|\n\
         | CLI path (ChatSession), greedy decode | {cli_rate:.2} tok/s | | |\n\
         | 1 client, {} requests | decode {one_rate:.2} tok/s, {:.2}x the CLI's; aggregate {:.2} tok/s | >= 0.95x | {} |\n",
        args.requests, one_rate / cli_rate, aggregate(&one), verdict(one_rate / cli_rate >= 0.95),
    );
    out += &clients_rows(args, &one, &many, "");
    out += &format!(
        "| {}-token system prompt | cold TTFT {cold_ttft:.2} s, warm TTFT {warm_ttft:.2} s (median of 3) = {:.1}% | <= 10% | {} |\n",
        args.system_tokens, 100.0 * warm_ttft / cold_ttft, verdict(warm_ttft <= 0.1 * cold_ttft),
    );
    out += &clients_rows(
        args,
        &one_system,
        &many_system,
        &format!(
            ", behind the cached {}-token system prompt",
            args.system_tokens
        ),
    );

    // 4: a long prompt arrives while streams run.
    for &chunk in &args.prefill_chunk {
        let handle = server(args.running + 1, chunk)?;
        let addr = ready(handle.addr())?;
        let m = interference(addr, args, generator.model().ctx_size())?;
        handle.shutdown()?;
        let median_of = |v: &[Duration]| {
            median(v.iter().map(Duration::as_secs_f64).collect()).unwrap_or(f64::NAN)
        };
        let median_before = median_of(&m.before);
        let median_during = median_of(&m.during);
        let (_, p99_during) = pct(m.during.clone());
        let (_, p99_chunks) = pct(m.during_chunks.clone());
        // The verdict compares with the streams' median before the prompt arrived, when their
        // contexts were short; the median during it shows how much of the rise is the pacing
        // (steps up to twice a decode-only one) and how much their own growing attention.
        out += &format!(
            "| {}-token prompt arrives, {} streams running, prefill chunk paced, at most {chunk} | inter-token median before {median_before:.3} s, p99 while it is prefilled {p99_during:.3} s = {:.2}x (median then {median_during:.3} s; {} tokens; between text chunks p99 {p99_chunks:.3} s = {:.2}x); its TTFT {:.1} s | <= 3x | {} |\n",
            args.long_prompt, args.running, p99_during / median_before, m.during.len(),
            p99_chunks / median_before, m.ttft.as_secs_f64(),
            verdict(p99_during <= 3.0 * median_before),
        );
    }
    out += "\n";
    eprint!("{out}");
    Ok(out)
}

/// Output tokens over the wall time of a set of clients.
fn aggregate((elapsed, streams): &(Duration, Vec<Stream>)) -> f64 {
    let tokens: usize = streams.iter().map(|s| s.completion_tokens).sum();
    tokens as f64 / elapsed.as_secs_f64()
}

/// Scenario 2's rows: `many` clients' aggregate against `one`'s, their latencies, and the
/// check that every stream is whole and its own.
fn clients_rows(
    args: &BenchServeArgs,
    one: &(Duration, Vec<Stream>),
    many: &(Duration, Vec<Stream>),
    behind: &str,
) -> String {
    let (agg_one, agg_many) = (aggregate(one), aggregate(many));
    let errors = many.1.iter().chain(&one.1).filter(|s| !s.ok).count();
    let mut ids: Vec<&String> = many.1.iter().flat_map(|s| s.ids.first()).collect();
    let n_ids = ids.len();
    ids.sort();
    ids.dedup();
    let mixed = many
        .1
        .iter()
        .filter(|s| s.ids.windows(2).any(|w| w[0] != w[1]))
        .count()
        + (n_ids - ids.len());
    let (ttft50, ttft99) = pct(many.1.iter().filter_map(|s| s.ttft).collect());
    let (itl50, itl99) = pct(many.1.iter().flat_map(|s| s.gaps.clone()).collect());
    format!(
        "| {} clients x {} requests{behind} | aggregate {agg_many:.2} tok/s = {:.2}x one client's ({agg_one:.2} tok/s); TTFT p50 {ttft50:.2} s p99 {ttft99:.2} s; inter-token p50 {itl50:.3} s p99 {itl99:.3} s | >= 3.5x | {} |\n\
         | errors, streams mixed{behind} | {errors}, {mixed} | 0, 0 | {} |\n",
        args.clients,
        args.requests,
        agg_many / agg_one,
        verdict(agg_many / agg_one >= 3.5),
        verdict(errors == 0 && mixed == 0),
    )
}

fn verdict(ok: bool) -> &'static str {
    if ok {
        "met"
    } else {
        "not met"
    }
}

fn timed<T>(f: impl FnOnce() -> Result<T>) -> Result<(Duration, T)> {
    let start = Instant::now();
    let v = f()?;
    Ok((start.elapsed(), v))
}

fn decode_rate(s: &Stream) -> f64 {
    match (s.arrivals.first(), s.arrivals.last()) {
        (Some(a), Some(b)) if s.completion_tokens > 1 && b > a => {
            (s.completion_tokens - 1) as f64 / b.duration_since(*a).as_secs_f64()
        }
        _ => f64::NAN,
    }
}

/// p50 and p99 in seconds.
fn pct(mut v: Vec<Duration>) -> (f64, f64) {
    if v.is_empty() {
        return (f64::NAN, f64::NAN);
    }
    v.sort();
    let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize].as_secs_f64();
    (at(0.5), at(0.99))
}

/// About `n` tokens of text (one common word is one token).
fn words(n: usize) -> String {
    const W: [&str; 8] = ["the", "sea", "is", "blue", "and", "wide", "at", "night"];
    (0..n).map(|i| W[i % W.len()]).collect::<Vec<_>>().join(" ")
}

fn ready(addr: SocketAddr) -> Result<SocketAddr> {
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        if let Ok(mut s) = TcpStream::connect(addr) {
            let _ = s.write_all(b"GET /health HTTP/1.1\r\nHost: b\r\nConnection: close\r\n\r\n");
            let mut text = String::new();
            let _ = s.read_to_string(&mut text);
            if text.starts_with("HTTP/1.1 200") {
                return Ok(addr);
            }
        }
        if Instant::now() > deadline {
            bail!("the server at {addr} did not become ready");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `n` clients on threads, each sending `requests` streamed requests one after another; `label`
/// goes into their questions.
fn clients(
    addr: SocketAddr,
    n: usize,
    requests: usize,
    max_tokens: usize,
    system: &str,
    label: &str,
) -> Result<Vec<Stream>> {
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..n)
            .map(|c| {
                s.spawn(move || {
                    (0..requests)
                        .map(|r| {
                            chat(
                                addr,
                                system,
                                &format!("Client {c}{label}, request {r}: tell me about the sea."),
                                max_tokens,
                            )
                        })
                        .collect::<Result<Vec<_>>>()
                })
            })
            .collect();
        let mut all = Vec::new();
        for h in handles {
            all.extend(
                h.join()
                    .map_err(|_| anyhow::anyhow!("a client thread panicked"))??,
            );
        }
        Ok(all)
    })
}

/// One streamed greedy chat request, timed chunk by chunk.
fn chat(addr: SocketAddr, system: &str, user: &str, max_tokens: usize) -> Result<Stream> {
    let mut messages = Vec::new();
    if !system.is_empty() {
        messages.push(json!({"role": "system", "content": system}));
    }
    messages.push(json!({"role": "user", "content": user}));
    let body = json!({
        "messages": messages, "max_tokens": max_tokens, "temperature": 0, "ignore_eos": true,
        "stream": true, "stream_options": {"include_usage": true},
        "chat_template_kwargs": {"enable_thinking": false},
    });
    stream(addr, &body, |_| true)
}

/// Sends `body` and reads the SSE answer; `on_chunk` sees each content chunk's arrival and
/// returns false to hang up (the server then cancels the request).
fn stream(
    addr: SocketAddr,
    body: &Value,
    mut on_chunk: impl FnMut(Instant) -> bool,
) -> Result<Stream> {
    let body = body.to_string();
    let start = Instant::now();
    let mut sock = TcpStream::connect(addr)?;
    write!(
        sock,
        "POST /v1/chat/completions HTTP/1.1\r\nHost: b\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )?;
    let mut r = BufReader::new(sock);
    let mut line = String::new();
    // Status line and headers.
    r.read_line(&mut line)?;
    let ok_status = line.starts_with("HTTP/1.1 200");
    loop {
        line.clear();
        if r.read_line(&mut line)? == 0 || line == "\r\n" {
            break;
        }
    }
    let mut s = Stream::default();
    let mut last: Option<Instant> = None;
    let mut done = false;
    // Chunked transfer encoding: size line, data, CRLF.
    loop {
        line.clear();
        if r.read_line(&mut line)? == 0 {
            break;
        }
        let Ok(size) = usize::from_str_radix(line.trim(), 16) else {
            continue;
        };
        if size == 0 {
            break;
        }
        let mut buf = vec![0; size + 2];
        r.read_exact(&mut buf)?;
        let now = Instant::now();
        for data in String::from_utf8_lossy(&buf)
            .lines()
            .filter_map(|l| l.strip_prefix("data: "))
        {
            if data == "[DONE]" {
                done = true;
                continue;
            }
            let v: Value = serde_json::from_str(data)?;
            if let Some(id) = v["id"].as_str() {
                s.ids.push(id.to_string());
            }
            if let Some(n) = v["usage"]["completion_tokens"].as_u64() {
                s.completion_tokens = n as usize;
            }
            let choice = &v["choices"][0];
            let text = |key: &str| choice["delta"][key].as_str().is_some_and(|t| !t.is_empty());
            if text("content") || text("reasoning_content") {
                if s.ttft.is_none() {
                    s.ttft = Some(now.duration_since(start));
                }
                if let Some(t) = last {
                    s.gaps.push(now.duration_since(t));
                }
                last = Some(now);
                s.arrivals.push(now);
                s.tokens.push(
                    choice["logprobs"]["content"]
                        .as_array()
                        .map_or(1, Vec::len)
                        .max(1),
                );
                if !on_chunk(now) {
                    s.ok = ok_status;
                    return Ok(s);
                }
            }
        }
    }
    s.ok = ok_status && done;
    Ok(s)
}

/// What scenario 4 measured.
struct Interference {
    /// The streams' inter-token gaps before the long prompt was sent.
    before: Vec<Duration>,
    /// Their inter-token gaps while it was prefilled (until its first chunk).
    during: Vec<Duration>,
    /// The gaps between their text chunks while it was prefilled.
    during_chunks: Vec<Duration>,
    /// The long prompt's time to first token.
    ttft: Duration,
}

/// Scenario 4: `args.running` streams run; once each has streamed a few chunks the long
/// prompt is sent. Inter-token gaps: a chunk's gap is shared by the tokens it carries.
fn interference(addr: SocketAddr, args: &BenchServeArgs, ctx: usize) -> Result<Interference> {
    let long = words(args.long_prompt);
    let long_tokens = args.long_prompt + 16;
    // Enough tokens for the streams to outlive the long prefill at a pessimistic 2 prompt
    // tokens a step (the paced chunk's floor is 1, but it sits that low only on hosts where a
    // prompt token costs as much as a whole decode step).
    let decode = (ctx - 64).min(64 + long_tokens / 2);
    let sent_at = std::sync::Mutex::new(None::<Instant>);
    let first_at = std::sync::Mutex::new(None::<Instant>);
    // Once the long prompt is answered the streams hang up: what follows is not measured.
    let answered = std::sync::atomic::AtomicBool::new(false);
    let answered = &answered;
    let streams: Vec<Stream> = std::thread::scope(|s| -> Result<_> {
        let streams: Vec<_> =
            (0..args.running)
                .map(|i| {
                    s.spawn(move || {
                    let body = json!({
                        "messages": [{"role": "user", "content": format!("Stream {i}")}],
                        "max_tokens": decode, "temperature": 0, "ignore_eos": true, "stream": true,
                        "logprobs": true,
                    });
                    stream(addr, &body, |_| !answered.load(std::sync::atomic::Ordering::SeqCst))
                })
                })
                .collect();
        // Let them settle into decoding, then send the long prompt.
        std::thread::sleep(Duration::from_secs(5));
        *sent_at.lock().unwrap() = Some(Instant::now());
        let body = json!({
            "messages": [{"role": "user", "content": long}], "max_tokens": 2, "temperature": 0,
            "stream": true,
        });
        let mut first = None;
        stream(addr, &body, |t| {
            first.get_or_insert(t);
            true
        })?;
        *first_at.lock().unwrap() = first;
        answered.store(true, std::sync::atomic::Ordering::SeqCst);
        let mut all = Vec::new();
        for h in streams {
            all.push(
                h.join()
                    .map_err(|_| anyhow::anyhow!("a stream thread panicked"))??,
            );
        }
        Ok(all)
    })?;
    let sent = sent_at
        .into_inner()
        .unwrap()
        .context("the long prompt was sent")?;
    let first = first_at
        .into_inner()
        .unwrap()
        .context("the long prompt was answered")?;
    let (mut before, mut during, mut during_chunks) = (Vec::new(), Vec::new(), Vec::new());
    for st in &streams {
        // A stream that got no text has no tokens to skip: `iter().skip`, not `[1..]`.
        for (w, &tokens) in st.arrivals.windows(2).zip(st.tokens.iter().skip(1)) {
            let gap = w[1].duration_since(w[0]);
            let per_token = std::iter::repeat_n(gap / tokens as u32, tokens);
            if w[1] <= sent {
                before.extend(per_token);
            } else if w[0] >= sent && w[1] <= first {
                during.extend(per_token);
                during_chunks.push(gap);
            }
        }
    }
    if during.is_empty() {
        bail!("no stream chunk arrived while the long prompt was prefilled (streams too short?)");
    }
    Ok(Interference {
        before,
        during,
        during_chunks,
        ttft: first.duration_since(sent),
    })
}
