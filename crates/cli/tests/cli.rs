//! End-to-end tests of the `qwen3-infer` binary on the reference fixtures in testdata/.
//!
//! The fixtures come with transformers' outputs computed in f32: greedy continuations, per-token
//! log-probabilities, and (for the full-vocabulary model with the real tokenizer) chat-template
//! strings and their ids. The engine also computes in f32, so greedy ids must match exactly
//! (every fixture's smallest top-1/top-2 gap is ≥ 0.022) and log-probs to 1e-3 (summation
//! order is the only difference; the library's golden tests pin logits to about 1e-4).

use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_qwen3-infer");

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../testdata/fixtures")
        .join(name)
}

fn reference(name: &str) -> Value {
    let text = std::fs::read_to_string(fixture(name).join("reference.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// The binary with a controlled environment: no backtraces hidden by luck, no real HF cache,
/// and an f32 KV cache (unless a test passes --kv-type): the references are f32 arithmetic, and
/// the default f16 cache moves these random models' logits by up to ~0.1 (see the qwen3 crate's
/// kv tests), more than the 1e-3 the log-prob checks allow.
fn cmd(args: &[&str]) -> Command {
    let mut c = Command::new(BIN);
    c.args(args)
        .env("RUST_BACKTRACE", "1")
        .env("QWEN3_INFER_KV_TYPE", "f32")
        .env("HF_HUB_OFFLINE", "1")
        .env(
            "HF_HUB_CACHE",
            std::env::temp_dir().join("qwen3-infer-test-empty-cache"),
        )
        .stdin(Stdio::null());
    c
}

fn run(args: &[&str]) -> Output {
    cmd(args).output().unwrap()
}

/// Runs with `input` piped to stdin (the chat reads plain lines when stdin is not a terminal).
fn run_with_stdin(args: &[&str], input: &[u8]) -> Output {
    use std::io::Write;
    let mut child = cmd(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input).unwrap();
    child.wait_with_output().unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Runs a command that must succeed and print one JSON object.
fn run_json(args: &[&str]) -> Value {
    let o = run(args);
    assert!(o.status.success(), "{args:?} failed: {}", stderr(&o));
    serde_json::from_str(stdout(&o).trim())
        .unwrap_or_else(|e| panic!("{args:?}: not JSON ({e}): {}", stdout(&o)))
}

fn ids_of(v: &Value) -> Vec<u64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap())
        .collect()
}

fn csv(ids: &[u64]) -> String {
    ids.iter().map(u64::to_string).collect::<Vec<_>>().join(",")
}

/// A failure must be exactly one `error: ...` line on stderr and a non-zero exit.
fn assert_one_line_error(args: &[&str], expect: &str) {
    let o = run(args);
    let err = stderr(&o);
    assert!(!o.status.success(), "{args:?} succeeded: {}", stdout(&o));
    assert!(
        !err.contains("panicked") && !err.contains("backtrace"),
        "{args:?} panicked: {err}"
    );
    assert_eq!(err.lines().count(), 1, "{args:?}: not one line: {err}");
    assert!(err.starts_with("error: "), "{args:?}: {err}");
    assert!(
        err.contains(expect),
        "{args:?}: expected `{expect}` in: {err}"
    );
}

#[test]
fn greedy_ids_match_the_reference() {
    // Unquantized formats, one sharded; the library's golden tests cover the quantized ones.
    for name in ["bf16", "f16", "bf16_sharded"] {
        let dir = fixture(name);
        let dir = dir.to_str().unwrap();
        for prompt in reference(name)["prompts"].as_array().unwrap() {
            let ids = csv(&ids_of(&prompt["input_ids"]));
            let out = run_json(&[
                "-m",
                dir,
                "--ids",
                &ids,
                "-t",
                "0",
                "-l",
                "32",
                "--ignore-eos",
                "--json",
            ]);
            assert_eq!(
                ids_of(&out["ids"]),
                ids_of(&prompt["greedy_ids"]),
                "{name} {}",
                prompt["name"]
            );
            assert_eq!(out["finish_reason"], "length");
            assert_eq!(
                out["usage"]["prompt_tokens"].as_u64().unwrap() as usize,
                ids.split(',').count()
            );
            assert!(out.get("text").is_none(), "no tokenizer, so no text");
            for key in [
                "load_s",
                "prefill_s",
                "decode_s",
                "prefill_tok_s",
                "decode_tok_s",
            ] {
                assert!(out["timings"][key].as_f64().unwrap() >= 0.0, "{key}");
            }
        }
    }
}

#[test]
fn greedy_with_every_engine_option() {
    // The options must be accepted and leave greedy output unchanged on the f32 KV cache and
    // the scalar kernels (the oracle every other ISA is tested against).
    let prompt = &reference("bf16")["prompts"][1];
    let ids = csv(&ids_of(&prompt["input_ids"]));
    let dir = fixture("bf16");
    let out = run_json(&[
        "-m",
        dir.to_str().unwrap(),
        "--ids",
        &ids,
        "-t",
        "0",
        "-l",
        "32",
        "--ignore-eos",
        "--json",
        "--isa",
        "scalar",
        "--threads",
        "1",
        "--kv-type",
        "f32",
        "--ctx-size",
        "64",
        "-s",
        "7",
        "--check-tensors",
    ]);
    assert_eq!(ids_of(&out["ids"]), ids_of(&prompt["greedy_ids"]));
}

#[test]
fn sampling_is_reproducible_with_a_seed() {
    let dir = fixture("bf16");
    let args = [
        "-m",
        dir.to_str().unwrap(),
        "--ids",
        "5,6,7",
        "-t",
        "1.0",
        "-k",
        "40",
        "-P",
        "0.9",
        "-s",
        "42",
        "-l",
        "16",
        "--json",
    ];
    let a = run_json(&args);
    let b = run_json(&args);
    assert_eq!(a["ids"], b["ids"]);
    assert_eq!(ids_of(&a["ids"]).len(), 16);
}

#[test]
fn perplexity_logprobs_match_the_reference() {
    let r = reference("bf16");
    let ids: Vec<u64> = ids_of(&r["prompts"].as_array().unwrap().last().unwrap()["input_ids"]);
    let expected: Vec<f64> = r["perplexity"]["token_logprobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    assert_eq!(expected.len(), ids.len() - 1);
    let dir = fixture("bf16");
    let out = run_json(&[
        "perplexity",
        "-m",
        dir.to_str().unwrap(),
        "--ids",
        &csv(&ids),
        "--json",
    ]);
    let got: Vec<f64> = out["logprobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    assert_eq!(got.len(), expected.len());
    for (i, (g, e)) in got.iter().zip(&expected).enumerate() {
        assert!((g - e).abs() < 1e-3, "logprob {i}: {g} vs {e}");
    }
    let mean_nll = -got.iter().sum::<f64>() / got.len() as f64;
    assert!((out["mean_nll"].as_f64().unwrap() - mean_nll).abs() < 1e-9);
    assert!((mean_nll - r["perplexity"]["mean_nll"].as_f64().unwrap()).abs() < 1e-3);

    // Windows of 50 overlapping by one still predict every token once; the first window is the
    // same computation as above.
    let windowed = run_json(&[
        "perplexity",
        "-m",
        dir.to_str().unwrap(),
        "--ids",
        &csv(&ids),
        "--ctx",
        "50",
        "--json",
    ]);
    let w: Vec<f64> = windowed["logprobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    assert_eq!(w.len(), expected.len());
    assert_eq!(windowed["windows"], 5);
    for i in 0..49 {
        assert!((w[i] - expected[i]).abs() < 1e-3, "windowed logprob {i}");
    }

    let plain = run(&[
        "perplexity",
        "-m",
        dir.to_str().unwrap(),
        "--ids",
        &csv(&ids),
    ]);
    assert!(plain.status.success());
    assert!(
        stdout(&plain).starts_with("perplexity: "),
        "{}",
        stdout(&plain)
    );
}

/// The full-vocabulary fixture's text prompts: template strings, ids and greedy continuations.
#[test]
fn text_prompts_match_the_reference() {
    let dir = fixture("bf16_fullvocab");
    let dir = dir.to_str().unwrap();
    for tp in reference("bf16_fullvocab")["text_prompts"]
        .as_array()
        .unwrap()
    {
        let text = tp["text"].as_str().unwrap();
        for (variant, flags) in [
            ("chat_thinking", &["--think"][..]),
            ("chat_no_thinking", &["--no-think"][..]),
            ("raw", &["--raw"][..]),
        ] {
            let want = &tp[variant];
            if variant != "raw" {
                let mut args = vec!["tokenize", "-m", dir, "--chat", "--json", text];
                args.extend_from_slice(flags);
                let tok = run_json(&args);
                assert_eq!(
                    tok["prompt"], want["string"],
                    "{variant} string of {text:?}"
                );
                assert_eq!(
                    ids_of(&tok["ids"]),
                    ids_of(&want["input_ids"]),
                    "{variant} ids of {text:?}"
                );
            }
            let mut args = vec![
                "-m",
                dir,
                "-p",
                text,
                "-t",
                "0",
                "-l",
                "32",
                "--ignore-eos",
                "--json",
            ];
            args.extend_from_slice(flags);
            let out = run_json(&args);
            assert_eq!(
                out["usage"]["prompt_tokens"].as_u64().unwrap() as usize,
                want["input_ids"].as_array().unwrap().len(),
                "{variant} {text:?}"
            );
            assert_eq!(
                ids_of(&out["ids"]),
                ids_of(&want["greedy_ids"]),
                "{variant} greedy ids of {text:?}"
            );
            assert_eq!(
                out["text"], want["greedy_text"],
                "{variant} greedy text of {text:?}"
            );
        }
    }
}

#[test]
fn tokenize_raw_prints_ids_for_ids() {
    let tp = &reference("bf16_fullvocab")["text_prompts"][0];
    let dir = fixture("bf16_fullvocab");
    let o = run(&[
        "tokenize",
        "-m",
        dir.to_str().unwrap(),
        tp["text"].as_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o).trim(), csv(&ids_of(&tp["raw"]["input_ids"])));
}

#[test]
fn streamed_text_is_the_greedy_text() {
    let tp = &reference("bf16_fullvocab")["text_prompts"][1];
    let dir = fixture("bf16_fullvocab");
    let o = run(&[
        "-m",
        dir.to_str().unwrap(),
        "-p",
        tp["text"].as_str().unwrap(),
        "--raw",
        "-t",
        "0",
        "-l",
        "32",
        "--ignore-eos",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    // Piped stdout: no escape codes; special tokens are not printed.
    let want = tp["raw"]["greedy_text"]
        .as_str()
        .unwrap()
        .replace("<|im_end|>", "")
        .replace("<|endoftext|>", "")
        .replace("<|im_start|>", "");
    assert_eq!(stdout(&o), format!("{want}\n"));
}

#[test]
fn verbose_reports_speeds_memory_isa_and_threads() {
    let dir = fixture("bf16");
    let o = run(&[
        "-m",
        dir.to_str().unwrap(),
        "--ids",
        "1,2,3",
        "-t",
        "0",
        "-l",
        "4",
        "-v",
        "--threads",
        "2",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let err = stderr(&o);
    for needle in [
        "loaded in",
        "isa ",
        "2 threads",
        "prompt: 3 tokens prefilled",
        "tok/s",
        "decode: 4 tokens, 3 decode steps",
        "ms/token",
        "memory: peak",
        "total ",
        ", seed ",
    ] {
        assert!(err.contains(needle), "missing `{needle}` in: {err}");
    }
    assert!(
        !err.contains("rendered prompt"),
        "-v leaves the prompt out: {err}"
    );
    // Without a tokenizer the ids are streamed.
    assert_eq!(stdout(&o).split_whitespace().count(), 4);
}

/// Parses the `-v` line "prompt: N tokens prefilled (M reused from the cache)" into (N, M).
fn prefill_lines(err: &str) -> Vec<(usize, usize)> {
    err.lines()
        .filter_map(|l| l.strip_prefix("prompt: "))
        .filter_map(|l| {
            let n = l.split_whitespace().next()?.parse().ok()?;
            let reused = l
                .split_once('(')
                .and_then(|(_, r)| r.split_whitespace().next()?.parse().ok())
                .unwrap_or(0);
            Some((n, reused))
        })
        .collect()
}

#[test]
fn chat_keeps_the_cache_across_turns() {
    let dir = fixture("bf16_fullvocab");
    let o = run_with_stdin(
        &[
            "-m",
            dir.to_str().unwrap(),
            "-i",
            "-t",
            "0",
            "-l",
            "8",
            "-v",
            "--think",
        ],
        b"Hello there\n\nHow are you?\n",
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        stdout(&o).lines().filter(|l| !l.trim().is_empty()).count(),
        2,
        "two answers: {}",
        stdout(&o)
    );
    let turns = prefill_lines(&stderr(&o));
    assert_eq!(turns.len(), 2, "{}", stderr(&o));
    let (first, reused_first) = turns[0];
    let (second, reused_second) = turns[1];
    assert_eq!(reused_first, 0);
    // Turn 2 reuses at least the whole first prompt and prefills only the rest.
    assert!(
        reused_second >= first,
        "turn 2 reused {reused_second} of a first prompt of {first}"
    );
    assert!(
        second < reused_second,
        "turn 2 prefilled {second} tokens, more than it reused"
    );
}

#[test]
fn chat_commands() {
    let dir = fixture("bf16_fullvocab");
    let args = [
        "-m",
        dir.to_str().unwrap(),
        "-i",
        "-t",
        "0",
        "-l",
        "4",
        "-v",
    ];
    let script = "/help\n/no_think\n/system Be brief.\nHi\n/clear\n/bogus\n/exit\nnever answered\n";
    let o = run_with_stdin(&args, script.as_bytes());
    let err = stderr(&o);
    assert!(o.status.success(), "{err}");
    for needle in [
        "/system <text>",
        "[thinking off]",
        "[system prompt set]",
        "[new conversation]",
        "unknown command /bogus",
    ] {
        assert!(err.contains(needle), "missing `{needle}` in: {err}");
    }
    assert_eq!(prefill_lines(&err).len(), 1, "only `Hi` is answered: {err}");
    assert!(
        err.contains("<|im_start|>system\\nBe brief.") || !err.contains("rendered prompt"),
        "{err}"
    );
}

#[test]
fn chat_reports_a_full_context() {
    let dir = fixture("bf16_fullvocab");
    let o = run_with_stdin(
        &[
            "-m",
            dir.to_str().unwrap(),
            "-i",
            "-t",
            "0",
            "-l",
            "4",
            "--ctx-size",
            "24",
        ],
        b"Hi\nTell me a much longer story about the sea please\n",
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("context full"), "{}", stderr(&o));
    assert!(!stderr(&o).contains("panicked"));
}

/// A fake Hugging Face cache holding the bf16 fixture as `repo`.
fn fake_cache(root: &Path, repo: &str) {
    let repo_dir = root.join(format!("models--{}", repo.replace('/', "--")));
    let snapshot = repo_dir.join("snapshots").join("0123abcd");
    std::fs::create_dir_all(&snapshot).unwrap();
    std::fs::create_dir_all(repo_dir.join("refs")).unwrap();
    std::fs::write(repo_dir.join("refs").join("main"), "0123abcd").unwrap();
    for file in ["config.json", "model.safetensors"] {
        std::fs::copy(fixture("bf16").join(file), snapshot.join(file)).unwrap();
    }
}

#[test]
fn repo_ids_resolve_through_the_hf_cache() {
    let root = std::env::temp_dir().join(format!("qwen3-infer-cache-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    fake_cache(&root.join("hf_home").join("hub"), "Test/Tiny");
    fake_cache(&root.join("hub_cache"), "Qwen/Qwen3-4B");
    let want = ids_of(&reference("bf16")["prompts"][1]["greedy_ids"]);
    let ids = csv(&ids_of(&reference("bf16")["prompts"][1]["input_ids"]));
    let greedy = [
        "--ids",
        &ids,
        "-t",
        "0",
        "-l",
        "32",
        "--ignore-eos",
        "--json",
    ];

    // HF_HOME/hub.
    let mut c = cmd(&[&["-m", "Test/Tiny"][..], &greedy].concat());
    c.env_remove("HF_HUB_CACHE")
        .env("HF_HOME", root.join("hf_home"));
    let o = c.output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        ids_of(&serde_json::from_slice::<Value>(&o.stdout).unwrap()["ids"]),
        want
    );

    // No -m, no ../models/Qwen/Qwen3-4B/ next to the working directory: Qwen/Qwen3-4B from
    // HF_HUB_CACHE.
    let cwd = root.join("work").join("here");
    std::fs::create_dir_all(&cwd).unwrap();
    let mut c = cmd(&greedy);
    c.env("HF_HUB_CACHE", root.join("hub_cache"))
        .current_dir(&cwd);
    let o = c.output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        ids_of(&serde_json::from_slice::<Value>(&o.stdout).unwrap()["ids"]),
        want
    );

    // Not cached and offline: say so, and how to fetch it.
    let mut c = cmd(&["-m", "Test/Missing", "--ids", "1"]);
    c.env("HF_HUB_CACHE", root.join("hub_cache"));
    let o = c.output().unwrap();
    let err = stderr(&o);
    assert!(!o.status.success());
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("not in the Hugging Face cache")
            && err.contains("huggingface-cli download Test/Missing"),
        "{err}"
    );
    std::fs::remove_dir_all(&root).unwrap();
}

#[test]
fn bad_input_gives_one_line_and_a_failure_status() {
    let bf16 = fixture("bf16");
    let bf16 = bf16.to_str().unwrap();
    let full = fixture("bf16_fullvocab");
    let full = full.to_str().unwrap();
    let not_a_model = fixture("");
    let not_a_model = not_a_model.to_str().unwrap();
    let other_isa = if cfg!(target_arch = "x86_64") {
        "neon"
    } else {
        "avx512"
    };

    let cases: &[(&[&str], &str)] = &[
        // Model location.
        (
            &["-m", "/nonexistent/models/Qwen3-4B", "--ids", "1"],
            "huggingface-cli download Qwen/Qwen3-4B",
        ),
        (&["-m", not_a_model, "--ids", "1"], "has no config.json"),
        (
            &["-m", &format!("{bf16}/model.safetensors"), "--ids", "1"],
            "is a file",
        ),
        // Prompts.
        (&["-m", bf16, "-p", "Hello"], "has no tokenizer.json"),
        (&["tokenize", "-m", bf16, "Hello"], "has no tokenizer.json"),
        (
            &["-m", bf16, "--ids", "1,2,3,4,5", "--ctx-size", "4"],
            "longer than the context",
        ),
        (
            &[
                "-m",
                full,
                "-p",
                "a prompt of several tokens",
                "--ctx-size",
                "8",
            ],
            "longer than the context",
        ),
        (
            &["-m", bf16, "--ids", "1,5000"],
            "token id 5000 is outside the vocabulary",
        ),
        (&["-m", bf16, "--ids", "1,x"], "not a token id"),
        (
            &["-m", bf16, "-f", "/nonexistent/prompt.txt"],
            "cannot read prompt file /nonexistent/prompt.txt",
        ),
        (&["-m", full, "--raw"], "the prompt is empty"),
        (&["-m", full, "--raw", "-p", ""], "the prompt is empty"),
        (
            &["perplexity", "-m", bf16, "--ids", "7"],
            "at least 2 tokens",
        ),
        (
            &["perplexity", "-m", bf16, "--ids", "7,5000"],
            "outside the vocabulary",
        ),
        (&["perplexity", "-m", bf16], "needs an input"),
        (
            &["perplexity", "-m", bf16, "-f", "/nonexistent/wiki.txt"],
            "cannot read prompt file",
        ),
        // Out-of-range values.
        (
            &["-m", bf16, "--ids", "1", "-t", "-1"],
            "temperature must be >= 0",
        ),
        (
            &["-m", bf16, "--ids", "1", "-P", "0"],
            "top-p must be in (0, 1]",
        ),
        (
            &["-m", bf16, "--ids", "1", "-P", "1.5"],
            "top-p must be in (0, 1]",
        ),
        (
            &["-m", bf16, "--ids", "1", "-k", "-3"],
            "top-k must be >= 0",
        ),
        (
            &["-m", bf16, "--ids", "1", "--min-p", "2"],
            "min-p must be in [0, 1]",
        ),
        (
            &["-m", bf16, "--ids", "1", "--repeat-penalty", "0"],
            "--repeat-penalty must be > 0",
        ),
        (
            &["-m", bf16, "--ids", "1", "-l", "0"],
            "--max-length must be at least 1",
        ),
        (
            &["-m", bf16, "--ids", "1", "--ctx-size", "0"],
            "--ctx-size must be at least 1",
        ),
        (
            &["-m", bf16, "--ids", "1", "--threads", "0"],
            "--threads must be at least 1",
        ),
        (
            &["-m", bf16, "--ids", "1", "--isa", "sse9"],
            "unknown instruction set",
        ),
        (
            &["-m", bf16, "--ids", "1", "--isa", other_isa],
            "this CPU does not have it",
        ),
        (
            &["-m", bf16, "--ids", "1", "--kv-type", "q8"],
            "--kv-type: unknown type",
        ),
        (
            &["perplexity", "-m", bf16, "--ids", "1,2", "--ctx", "1"],
            "--ctx-size must be at least 2",
        ),
        (
            &["perplexity", "-m", bf16, "--ids", "1,2", "-c", "1"],
            "--ctx-size must be at least 2",
        ),
        (
            &["-m", bf16, "--ids", "1", "-t", "abc"],
            "invalid value 'abc'",
        ),
        (
            &["-m", bf16, "--ids", "1", "--threads", "100000"],
            "per CPU this process may use",
        ),
        (
            &["-m", bf16, "--ids", "1", "--top-logprobs", "21"],
            "--top-logprobs must be in 0..=20",
        ),
        (
            &["-m", bf16, "--ids", "1", "--stop", ""],
            "--stop must not be an empty string",
        ),
        (
            &["-m", bf16, "--ids", "1", "-t", "1e308"],
            "--temperature must be a finite number",
        ),
        (
            &["batch", "-m", bf16, "-f", "-", "--max-batch", "0"],
            "--max-batch must be at least 1",
        ),
        (
            &["serve", "-m", bf16, "--parallel", "0"],
            "--parallel must be at least 1",
        ),
        (
            &["serve", "-m", bf16, "--host", "256.1.1.1"],
            "cannot listen on 256.1.1.1:8080",
        ),
        // Command-line mistakes clap catches, with clap's details on the one line.
        (&["--bogus"], "unexpected argument '--bogus'"),
        (
            &["--temperatur", "1"],
            "tip: a similar argument exists: '--temperature'",
        ),
        (
            &["-m", bf16, "--think", "--no-think", "-p", "x"],
            "'--think' cannot be used with '--no-think'",
        ),
        (
            &["-m", bf16, "--ids", "1", "-p", "x"],
            "cannot be used with",
        ),
    ];
    for (args, expect) in cases {
        assert_one_line_error(args, expect);
    }
}

#[test]
fn help_and_version_succeed() {
    let o = run(&["--help"]);
    assert!(o.status.success());
    let help = stdout(&o);
    for flag in [
        "--model",
        "--prompt",
        "--temperature",
        "--top-k",
        "--top-p",
        "--max-length",
        "--seed",
        "--interactive",
        "--verbose",
        "--think",
        "--no-think",
        "--system",
        "--raw",
        "--min-p",
        "--repeat-penalty",
        "--presence-penalty",
        "--ctx-size",
        "--threads",
        "--isa",
        "--kv-type",
        "--ignore-eos",
        "--hide-think",
        "--json",
        "--ids",
        "perplexity",
        "tokenize",
    ] {
        assert!(help.contains(flag), "--help lacks {flag}");
    }
    for short in [
        "-m,", "-p,", "-t,", "-k,", "-P,", "-l,", "-s,", "-i,", "-v,", "-h,",
    ] {
        assert!(help.contains(short), "--help lacks {short}");
    }
    assert!(run(&["--version"]).status.success());
    assert!(run(&["perplexity", "--help"]).status.success());
}

/// Greedy `--json` ids of a fixture's prompt `index` with extra flags.
fn greedy(name: &str, index: usize, extra: &[&str]) -> (Vec<u64>, Vec<u64>) {
    let prompt = &reference(name)["prompts"][index];
    let dir = fixture(name);
    let ids = csv(&ids_of(&prompt["input_ids"]));
    let mut args = vec![
        "-m",
        dir.to_str().unwrap(),
        "--ids",
        &ids,
        "-t",
        "0",
        "-l",
        "32",
        "--ignore-eos",
        "--json",
    ];
    args.extend_from_slice(extra);
    let out = run_json(&args);
    (ids_of(&out["ids"]), ids_of(&prompt["greedy_ids"]))
}

#[test]
fn quantized_checkpoints_load_with_no_flag() {
    for name in [
        "awq",
        "awq_f16",
        "fp8_block",
        "fp8_block_f16scale",
        "fp8_dynamic",
        "fp8_tensor",
        "fp8_tensor_e5m2",
    ] {
        let (got, want) = greedy(name, 2, &[]);
        assert_eq!(got, want, "{name}");
    }
}

#[test]
fn max_memory_streams_layers_with_the_same_tokens() {
    // 13M on the bf16 fixture at --ctx-size 256: one layer resident, three streamed (the plan's
    // report says so under -v); the tokens are the reference's.
    let dir = fixture("bf16");
    let prompt = &reference("bf16")["prompts"][1];
    let ids = csv(&ids_of(&prompt["input_ids"]));
    let args = [
        "-m",
        dir.to_str().unwrap(),
        "--ids",
        &ids,
        "-t",
        "0",
        "-l",
        "32",
        "--ignore-eos",
        "--json",
        "--ctx-size",
        "256",
        "--max-memory",
        "13M",
        "-v",
    ];
    let o = run(&args);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("1 of 4 layers resident, 3 streamed"),
        "{}",
        stderr(&o)
    );
    let out: Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    assert_eq!(ids_of(&out["ids"]), ids_of(&prompt["greedy_ids"]));
    assert_one_line_error(
        &[
            "-m",
            dir.to_str().unwrap(),
            "--ids",
            "1",
            "--max-memory",
            "2M",
        ],
        "memory budget",
    );
    assert_one_line_error(
        &[
            "-m",
            dir.to_str().unwrap(),
            "--ids",
            "1",
            "--max-memory",
            "lots",
        ],
        "--max-memory",
    );
}

#[test]
fn lm_head_q8_keeps_the_greedy_tokens() {
    // The q8 lm_head moves these fixtures' log-probs by < 0.5 (qwen3's quantized_options
    // tests); their greedy gaps are wider, so the tokens stay the reference's.
    let (got, want) = greedy("bf16", 1, &["--lm-head", "q8"]);
    assert_eq!(got, want);
    let dir = fixture("bf16");
    assert_one_line_error(
        &["-m", dir.to_str().unwrap(), "--ids", "1", "--lm-head", "q4"],
        "--lm-head",
    );
}

/// A scratch file path unique to this test process.
fn scratch(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("qwen3-infer-test-{}-{name}", std::process::id()))
}

#[test]
fn batch_runs_requests_together_and_reuses_shared_prefixes() {
    let r = reference("bf16");
    let long = ids_of(&r["prompts"][3]["input_ids"]);
    let branched = [&long[..100], &[5, 6, 7]].concat();
    let lines = [
        json!({"ids": long, "temperature": 0, "max_tokens": 32}),
        json!({"ids": branched, "temperature": 0, "max_tokens": 8}),
        json!({"ids": &long[..150], "temperature": 0, "max_tokens": 8}),
    ];
    let file = scratch("batch.jsonl");
    let text: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
    std::fs::write(&file, text.join("\n")).unwrap();
    let dir = fixture("bf16");
    // What a lone one-shot run generates for each later request (the same for both indices).
    let singles: Vec<Vec<u64>> = lines[1..]
        .iter()
        .map(|line| {
            let ids = csv(&ids_of(&line["ids"]));
            let single = run_json(&[
                "-m",
                dir.to_str().unwrap(),
                "--ids",
                &ids,
                "-t",
                "0",
                "-l",
                "8",
                "--ignore-eos",
                "--json",
            ]);
            ids_of(&single["ids"])
        })
        .collect();
    // Both prefix indices find the same blocks and give the same tokens.
    for index in ["radix", "hash"] {
        let o = run(&[
            "batch",
            "-m",
            dir.to_str().unwrap(),
            "-f",
            file.to_str().unwrap(),
            "--prefix-index",
            index,
        ]);
        assert!(o.status.success(), "{}", stderr(&o));
        let outs: Vec<Value> = stdout(&o)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(outs.len(), 3);
        // The first request is the reference prompt: its greedy continuation, token for token.
        assert_eq!(
            ids_of(&outs[0]["ids"]),
            ids_of(&r["prompts"][3]["greedy_ids"])
        );
        assert_eq!(
            outs[0]["usage"]["prompt_tokens_details"]["cached_tokens"],
            0
        );
        // Later ones share whole 16-token blocks of its prefix and skip their prefill.
        assert_eq!(
            outs[1]["usage"]["prompt_tokens_details"]["cached_tokens"],
            96
        );
        assert_eq!(
            outs[2]["usage"]["prompt_tokens_details"]["cached_tokens"],
            144
        );
        // And they generate what a lone one-shot run generates.
        for (i, single) in singles.iter().enumerate() {
            assert_eq!(
                &ids_of(&outs[i + 1]["ids"]),
                single,
                "{index}: request {}",
                i + 1
            );
        }
        assert!(
            stderr(&o).contains("240 reused from the prefix cache"),
            "{}",
            stderr(&o)
        );
    }
    std::fs::write(&file, "{\"prompt\": 3}\n").unwrap();
    assert_one_line_error(
        &[
            "batch",
            "-m",
            dir.to_str().unwrap(),
            "-f",
            file.to_str().unwrap(),
        ],
        "line 1",
    );
    assert_one_line_error(
        &[
            "batch",
            "-m",
            dir.to_str().unwrap(),
            "-f",
            file.to_str().unwrap(),
            "--prefix-index",
            "tree",
        ],
        "expected radix or hash",
    );
    std::fs::remove_file(&file).unwrap();
}

#[test]
fn prompt_cache_reuses_the_prefix_and_refuses_foreign_files() {
    let cache = scratch("prompt-cache.bin");
    let _ = std::fs::remove_file(&cache);
    let bf16 = fixture("bf16");
    let args = |ids: &'static str| -> Vec<String> {
        [
            "-m",
            bf16.to_str().unwrap(),
            "--ids",
            ids,
            "-t",
            "0",
            "-l",
            "4",
            "--ignore-eos",
            "--json",
            "-v",
            "--prompt-cache",
            cache.to_str().unwrap(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    let first = run(&args("4,5,6,7,8,9,10")
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>());
    assert!(first.status.success(), "{}", stderr(&first));
    assert!(cache.exists());
    let second = run(&args("4,5,6,7,8,9,11")
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>());
    assert!(
        stderr(&second).contains("reused 6 of 7 prompt tokens"),
        "{}",
        stderr(&second)
    );
    let plain = run_json(&[
        "-m",
        bf16.to_str().unwrap(),
        "--ids",
        "4,5,6,7,8,9,11",
        "-t",
        "0",
        "-l",
        "4",
        "--ignore-eos",
        "--json",
    ]);
    let cached: Value = serde_json::from_str(stdout(&second).trim()).unwrap();
    // Honest counts: the whole prompt, and of it the part served from the file.
    assert_eq!(cached["usage"]["prompt_tokens"], 7);
    assert_eq!(cached["usage"]["prompt_tokens_details"]["cached_tokens"], 6);
    assert_eq!(
        cached["ids"], plain["ids"],
        "a reused prefix gives the tokens of a full prefill"
    );
    // A cache from another model is refused with a one-line notice, and the run goes on
    // without it (and then rewrites it).
    let f16 = fixture("f16");
    let foreign = run(&[
        "-m",
        f16.to_str().unwrap(),
        "--ids",
        "4,5,6,7,8,9,11",
        "-t",
        "0",
        "-l",
        "4",
        "--ignore-eos",
        "--json",
        "--prompt-cache",
        cache.to_str().unwrap(),
    ]);
    assert!(foreign.status.success(), "{}", stderr(&foreign));
    let notice = stderr(&foreign);
    assert!(
        notice.contains("different model") && notice.contains("running without it"),
        "{notice}"
    );
    assert_eq!(notice.lines().count(), 1, "{notice}");
    let out: Value = serde_json::from_str(stdout(&foreign).trim()).unwrap();
    assert_eq!(out["usage"]["prompt_tokens_details"]["cached_tokens"], 0);
    // The cache is now f16's: bf16 refuses it in turn.
    let back = run(&args("4,5,6,7,8,9,11")
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>());
    assert!(
        stderr(&back).contains("running without it"),
        "{}",
        stderr(&back)
    );
    let bf16_again = run(&args("4,5,6,7,8,9,11")
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>());
    assert!(
        stderr(&bf16_again).contains("reused 7 of 7"),
        "{}",
        stderr(&bf16_again)
    );
    assert_one_line_error(
        &[
            "-m",
            bf16.to_str().unwrap(),
            "--ids",
            "1",
            "--kv-type",
            "bf16",
            "--prompt-cache",
            cache.to_str().unwrap(),
        ],
        "--kv-type",
    );
    std::fs::remove_file(&cache).unwrap();
}

/// The rows of README's "JSON output" table: (field path, when it is present).
fn documented_json_fields() -> Vec<(String, String)> {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../README.md"))
            .unwrap();
    let section = readme.split("### JSON output").nth(1).unwrap();
    let section = section.split("\n#").next().unwrap();
    let mut rows = Vec::new();
    for line in section.lines().filter(|l| l.starts_with("| `")) {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        for path in cells[1].split(", ") {
            rows.push((path.trim_matches('`').to_string(), cells[2].to_string()));
        }
    }
    assert!(rows.len() > 15, "the table was found: {rows:?}");
    rows
}

/// Whether `path` (`a.b`, `a.list[].c`) names a value in `v`.
fn has_path(v: &Value, path: &str) -> bool {
    let mut cur = v.clone();
    for part in path.split('.') {
        let (key, list) = match part.strip_suffix("[]") {
            Some(k) => (k, true),
            None => (part, false),
        };
        cur = match cur.get(key) {
            Some(next) if list => match next.as_array().and_then(|a| a.first()) {
                Some(first) => first.clone(),
                None => return false,
            },
            Some(next) => next.clone(),
            None => return false,
        };
    }
    true
}

#[test]
fn json_answers_carry_every_documented_field() {
    let dir = fixture("bf16_fullvocab");
    let dir = dir.to_str().unwrap();
    let base = [
        "-m",
        dir,
        "-p",
        "The capital of France is",
        "--raw",
        "-t",
        "0",
        "-l",
        "24",
        "--ignore-eos",
        "--json",
    ];
    let out = run_json(&[&base[..], &["--logprobs", "--top-logprobs", "2"]].concat());
    for (path, when) in documented_json_fields() {
        let expected = match when.as_str() {
            "always" | "with a tokenizer" | "with `--logprobs`" => true,
            // No thinking and no stop string in this run.
            _ => false,
        };
        assert_eq!(has_path(&out, &path), expected, "{path} ({when}) in {out}");
    }
    assert_eq!(out["logprobs"]["content"].as_array().unwrap().len(), 24);
    assert_eq!(
        out["usage"]["total_tokens"],
        out["usage"]["prompt_tokens"].as_u64().unwrap() + 24
    );

    // A stop string from the middle of that answer ends it there, unprinted, in --json and
    // in the streamed text alike.
    let content = out["content"].as_str().unwrap();
    let chars: Vec<(usize, char)> = content.char_indices().collect();
    let stop = &content[chars[chars.len() / 2].0..chars[chars.len() / 2 + 3].0];
    let cut = &content[..content.find(stop).unwrap()];
    let stopped = run_json(&[&base[..], &["--stop", stop]].concat());
    assert_eq!(stopped["finish_reason"], "stop");
    assert_eq!(stopped["stop"], stop);
    assert_eq!(stopped["content"], cut);
    let streamed = run(&[&base[..base.len() - 1], &["--stop", stop]].concat());
    assert_eq!(stdout(&streamed), format!("{cut}\n"));
}

#[test]
fn a_reported_seed_repeats_a_sampled_run() {
    let dir = fixture("bf16");
    let args = [
        "-m",
        dir.to_str().unwrap(),
        "--ids",
        "5,6,7",
        "-t",
        "1.0",
        "-k",
        "0",
        "-l",
        "16",
        "--ignore-eos",
        "--json",
    ];
    let first = run_json(&args);
    let second = run_json(&args);
    assert_ne!(first["seed"], second["seed"], "a seed is drawn per run");
    let seed = first["seed"].as_u64().unwrap().to_string();
    let again = run_json(&[&args[..], &["-s", &seed]].concat());
    assert_eq!(again["ids"], first["ids"]);
    assert_eq!(again["seed"], first["seed"]);
}

#[test]
fn batch_answers_openai_batch_lines_in_their_shape() {
    let file = scratch("openai-batch.jsonl");
    let body = json!({"model": "x", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4,
        "temperature": 0, "ignore_eos": true, "logprobs": true, "unknown_extension": 1});
    let lines = [
        json!({"custom_id": "first", "method": "POST", "url": "/v1/chat/completions", "body": body}),
        json!({"custom_id": "bad", "method": "POST", "url": "/v1/chat/completions", "body": {"messages": [], "max_tokens": 4}}),
        json!({"prompt": "Hi", "temperature": 0, "max_tokens": 4, "ignore_eos": true, "seed": 9}),
    ];
    let text: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
    std::fs::write(&file, text.join("\n")).unwrap();
    let dir = fixture("bf16_fullvocab");
    let o = run(&[
        "batch",
        "-m",
        dir.to_str().unwrap(),
        "-f",
        file.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let outs: Vec<Value> = stdout(&o)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(outs.len(), 3);
    let ok = &outs[0];
    assert_eq!(ok["custom_id"], "first");
    assert_eq!(ok["response"]["status_code"], 200);
    let completion = &ok["response"]["body"];
    assert_eq!(completion["object"], "chat.completion");
    assert_eq!(completion["choices"][0]["message"]["role"], "assistant");
    assert_eq!(completion["choices"][0]["finish_reason"], "length");
    assert_eq!(
        completion["choices"][0]["logprobs"]["content"]
            .as_array()
            .unwrap()
            .len(),
        4
    );
    assert_eq!(completion["usage"]["completion_tokens"], 4);
    let bad = &outs[1];
    assert_eq!(
        (
            bad["custom_id"].as_str(),
            bad["response"]["status_code"].as_u64()
        ),
        (Some("bad"), Some(400))
    );
    assert_eq!(bad["response"]["body"]["error"]["param"], "messages");
    // The native line and the OpenAI line ask for the same greedy answer.
    assert_eq!(outs[2]["line"], 3);
    assert_eq!(outs[2]["seed"], 9);
    assert_eq!(
        outs[2]["content"],
        completion["choices"][0]["message"]["content"]
    );
    std::fs::remove_file(&file).unwrap();
}

#[test]
fn chat_skips_a_line_that_is_not_utf8() {
    let dir = fixture("bf16_fullvocab");
    let o = run_with_stdin(
        &[
            "-m",
            dir.to_str().unwrap(),
            "-i",
            "-t",
            "0",
            "-l",
            "4",
            "-v",
        ],
        b"\xff\xfe broken\nHi\n",
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("not valid UTF-8"), "{}", stderr(&o));
    assert_eq!(
        prefill_lines(&stderr(&o)).len(),
        1,
        "the next line is answered"
    );
}

#[test]
fn a_memory_budget_sizes_the_context_to_the_prompt() {
    // 5,000 tokens: more than the 4,096 a budget used to impose on every run.
    let ids: Vec<String> = (0..5000).map(|i| (1 + i % 200).to_string()).collect();
    let dir = fixture("bf16");
    let out = run_json(&[
        "-m",
        dir.to_str().unwrap(),
        "--ids",
        &ids.join(","),
        "-t",
        "0",
        "-l",
        "2",
        "--ignore-eos",
        "--json",
        "--max-memory",
        "64MiB",
    ]);
    assert_eq!(out["usage"]["prompt_tokens"], 5000);
    assert_eq!(out["finish_reason"], "length");
}

#[test]
fn constraint_flags_shape_the_answer_and_bad_ones_name_the_flag() {
    let dir = fixture("bf16_fullvocab");
    let dir = dir.to_str().unwrap();
    let tmp = std::env::temp_dir().join(format!("nano-infer-schema-{}.json", std::process::id()));
    std::fs::write(
        &tmp,
        r#"{"type": "object", "properties": {"n": {"type": "integer", "minimum": 1, "maximum": 9}},
            "required": ["n"], "additionalProperties": false}"#,
    )
    .unwrap();
    let base = [
        "-m",
        dir,
        "-p",
        "Number?",
        "--no-think",
        "-l",
        "40",
        "-s",
        "3",
        "--json",
    ];
    let out = run_json(&[&base[..], &["--json-schema", tmp.to_str().unwrap()]].concat());
    let v: Value = serde_json::from_str(out["content"].as_str().unwrap()).unwrap();
    assert!((1..=9).contains(&v["n"].as_i64().unwrap()), "{out}");
    assert_eq!(out["constraint_complete"], true);
    assert_eq!(out["finish_reason"], "stop");
    let out = run_json(&[&base[..], &["--regex", "(yes|no)"]].concat());
    assert!(
        ["yes", "no"].contains(&out["content"].as_str().unwrap()),
        "{out}"
    );
    // A budget too small: finish length, and a warning that the answer does not parse.
    let cut = run(&[
        "-m",
        dir,
        "-p",
        "Number?",
        "--no-think",
        "-l",
        "2",
        "--regex",
        "[a-z]{80}",
    ]);
    assert!(cut.status.success());
    assert!(
        stderr(&cut).contains("before its grammar was complete"),
        "{}",
        stderr(&cut)
    );
    // Bad constraints: one line naming the flag, exit 1, nothing generated.
    let bad = run(&["-m", dir, "-p", "x", "--regex", "("]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(
        stderr(&bad).starts_with("error: --regex invalid regex"),
        "{}",
        stderr(&bad)
    );
    assert!(stdout(&bad).is_empty());
    std::fs::write(&tmp, "{not json").unwrap();
    let bad = run(&["-m", dir, "-p", "x", "--json-schema", tmp.to_str().unwrap()]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(stderr(&bad).contains("--json-schema") && stderr(&bad).contains("not valid JSON"));
    std::fs::remove_file(&tmp).ok();
}
