//! The server over real sockets on 127.0.0.1 with a fixture model: answers equal the
//! library's, concurrency changes nothing, every error path has its status and OpenAI's shape,
//! a dropped client frees its slot, shutdown drains, the chat page is served with its policy.

use nano_infer_generate::json::parse_chat_completion;
use nano_infer_generate::{CancelToken, Generator};
use nano_infer_qwen3::{EngineOptions, LoadOptions};
use nano_infer_server::{start, ServerConfig, ServerHandle};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::time::{Duration, Instant};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../testdata/fixtures")
        .join(name)
}

fn load() -> Generator {
    Generator::load(
        fixture("bf16_fullvocab"),
        &LoadOptions::default(),
        &mut |_| {},
    )
    .unwrap()
}

/// A server on a free port, ready (its /health says 200).
fn server(config: ServerConfig) -> ServerHandle {
    let handle = start(ServerConfig { port: 0, ..config }, || {
        Generator::load(
            fixture("bf16_fullvocab"),
            &LoadOptions::default(),
            &mut |_| {},
        )
    })
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while get(handle.addr(), "/health").status != 200 {
        assert!(Instant::now() < deadline, "the server became ready");
        std::thread::sleep(Duration::from_millis(20));
    }
    handle
}

struct Reply {
    status: u16,
    headers: String,
    body: String,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }

    /// The `data:` payloads of a server-sent-events body.
    fn events(&self) -> Vec<String> {
        self.body
            .lines()
            .filter_map(|l| l.strip_prefix("data: "))
            .map(str::to_string)
            .collect()
    }
}

/// One HTTP/1.1 request on a fresh connection (`Connection: close`), body read to the end
/// (chunked transfer encoding decoded).
fn http(addr: SocketAddr, method: &str, path: &str, body: &str, headers: &[(&str, &str)]) -> Reply {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    s.write_all(body.as_bytes()).unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, rest) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .unwrap_or("0")
        .parse()
        .unwrap();
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(rest)
    } else {
        rest.to_string()
    };
    Reply {
        status,
        headers: head.to_string(),
        body,
    }
}

fn dechunk(mut rest: &str) -> String {
    let mut out = String::new();
    while let Some((size, tail)) = rest.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 {
            break;
        }
        out.push_str(&tail[..n]);
        rest = &tail[n + 2..];
    }
    out
}

fn get(addr: SocketAddr, path: &str) -> Reply {
    http(addr, "GET", path, "", &[])
}

fn post(addr: SocketAddr, path: &str, body: &Value) -> Reply {
    http(addr, "POST", path, &body.to_string(), &[])
}

fn chat_body(text: &str, max_tokens: u32, stream: bool) -> Value {
    json!({
        "model": "whatever", "messages": [{"role": "user", "content": text}],
        "max_tokens": max_tokens, "temperature": 0, "ignore_eos": true, "stream": stream,
        "stream_options": {"include_usage": true}, "logprobs": true, "top_logprobs": 2,
    })
}

/// The content of a streamed answer, and its parsed chunks.
fn streamed(reply: &Reply) -> (String, Vec<Value>) {
    let events = reply.events();
    assert_eq!(
        events.last().map(String::as_str),
        Some("[DONE]"),
        "{}",
        reply.body
    );
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e).unwrap())
        .collect();
    let content = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    (content, chunks)
}

#[test]
fn answers_equal_the_library_streamed_or_not() {
    let handle = server(ServerConfig::default());
    let addr = handle.addr();
    let generator = load();
    for text in ["Hello there", "The capital of France is"] {
        let body = chat_body(text, 16, false);
        // The library's answer to the same body.
        let (request, _) = parse_chat_completion(&body).unwrap();
        let prepared = generator.prepare(&request).unwrap();
        let want = generator
            .session()
            .generate(&prepared, &CancelToken::new(), |_| {})
            .unwrap();

        let reply = post(addr, "/v1/chat/completions", &body);
        assert_eq!(reply.status, 200, "{}", reply.body);
        let answer = reply.json();
        assert_eq!(answer["object"], "chat.completion");
        assert_eq!(
            answer["choices"][0]["message"]["content"],
            want.content.as_str()
        );
        assert_eq!(answer["choices"][0]["finish_reason"], "length");
        assert_eq!(answer["usage"]["completion_tokens"], 16);
        assert_eq!(answer["usage"]["prompt_tokens"], prepared.ids.len());
        assert_eq!(
            answer["choices"][0]["logprobs"]["content"]
                .as_array()
                .unwrap()
                .len(),
            16
        );

        let reply = post(addr, "/v1/chat/completions", &chat_body(text, 16, true));
        assert_eq!(reply.status, 200);
        assert!(
            reply.headers.contains("text/event-stream"),
            "{}",
            reply.headers
        );
        let (content, chunks) = streamed(&reply);
        assert_eq!(content, want.content);
        assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
        let logprobs: usize = chunks
            .iter()
            .filter_map(|c| c["choices"][0]["logprobs"]["content"].as_array())
            .map(Vec::len)
            .sum();
        assert_eq!(logprobs, 16, "every token's log-probability, once");
        let last = &chunks[chunks.len() - 1];
        assert_eq!(last["choices"], json!([]));
        assert_eq!(last["usage"]["completion_tokens"], 16);
        assert_eq!(
            chunks[chunks.len() - 2]["choices"][0]["finish_reason"],
            "length"
        );
    }
    // Legacy completions: raw text in, text out.
    let reply = post(
        addr,
        "/v1/completions",
        &json!({"prompt": "Once upon a time", "max_tokens": 8, "temperature": 0, "logprobs": 1}),
    );
    assert_eq!(reply.status, 200, "{}", reply.body);
    let answer = reply.json();
    assert_eq!(answer["object"], "text_completion");
    assert_eq!(
        answer["choices"][0]["logprobs"]["tokens"]
            .as_array()
            .unwrap()
            .len(),
        answer["usage"]["completion_tokens"].as_u64().unwrap() as usize
    );
    handle.shutdown().unwrap();
}

#[test]
fn concurrent_requests_give_what_each_gives_alone() {
    let handle = server(ServerConfig {
        engine: EngineOptions {
            max_batch: 4,
            ..EngineOptions::default()
        },
        ..ServerConfig::default()
    });
    let addr = handle.addr();
    let texts = [
        "Hello there",
        "What is 2+2?",
        "Tell me a story",
        "The capital of France is",
        "Bonjour",
    ];
    let alone: Vec<String> = texts
        .iter()
        .map(|t| {
            post(addr, "/v1/chat/completions", &chat_body(t, 24, false)).json()["choices"][0]
                ["message"]["content"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    let together: Vec<String> = std::thread::scope(|s| {
        let handles: Vec<_> = texts
            .iter()
            .enumerate()
            .map(|(i, t)| {
                s.spawn(move || {
                    // Half stream, half do not: both kinds share the batch.
                    let reply = post(addr, "/v1/chat/completions", &chat_body(t, 24, i % 2 == 0));
                    assert_eq!(reply.status, 200, "{}", reply.body);
                    if i % 2 == 0 {
                        streamed(&reply).0
                    } else {
                        reply.json()["choices"][0]["message"]["content"]
                            .as_str()
                            .unwrap()
                            .to_string()
                    }
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(together, alone);
    // The same system prompt twice: the second prefill reuses the first's whole blocks.
    let system = "You are a helpful assistant. ".repeat(8);
    let body = |q: &str| json!({"messages": [{"role": "system", "content": system}, {"role": "user", "content": q}], "max_tokens": 2});
    post(addr, "/v1/chat/completions", &body("first"));
    let second = post(addr, "/v1/chat/completions", &body("second")).json();
    assert!(
        second["usage"]["prompt_tokens_details"]["cached_tokens"]
            .as_u64()
            .unwrap()
            >= 48,
        "{second}"
    );
    handle.shutdown().unwrap();
}

/// A metric's value in /metrics.
fn metric(addr: SocketAddr, name: &str) -> f64 {
    let text = get(addr, "/metrics").body;
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse().ok()))
        .unwrap_or_else(|| panic!("{name} in {text}"))
}

#[test]
fn a_client_that_leaves_cancels_its_request_and_frees_its_slot() {
    let handle = server(ServerConfig {
        engine: EngineOptions {
            max_batch: 1,
            ..EngineOptions::default()
        },
        queue_limit: 0,
        ..ServerConfig::default()
    });
    let addr = handle.addr();
    // A long stream: read its first chunk, then hang up.
    let body = json!({"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 30000, "ignore_eos": true, "stream": true});
    let mut s = TcpStream::connect(addr).unwrap();
    let body = body.to_string();
    write!(
        s,
        "POST /v1/chat/completions HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut lines = BufReader::new(s.try_clone().unwrap());
    let mut line = String::new();
    while !line.starts_with("data:") {
        line.clear();
        lines.read_line(&mut line).unwrap();
    }
    // While it runs, the one slot is taken and there is no queue: 503 with Retry-After.
    let busy = post(addr, "/v1/chat/completions", &chat_body("Hi", 2, false));
    assert_eq!(busy.status, 503, "{}", busy.body);
    assert!(
        busy.headers.to_ascii_lowercase().contains("retry-after: 1"),
        "{}",
        busy.headers
    );
    assert_eq!(busy.json()["error"]["type"], "unavailable_error");
    // The gauge is set after each engine step: wait for the first.
    let deadline = Instant::now() + Duration::from_secs(20);
    while metric(addr, "nano_infer_running_sequences") != 1.0 {
        assert!(Instant::now() < deadline, "the stream shows as running");
        std::thread::sleep(Duration::from_millis(5));
    }
    drop(lines);
    drop(s);
    let deadline = Instant::now() + Duration::from_secs(20);
    while metric(addr, "nano_infer_running_sequences") != 0.0 {
        assert!(
            Instant::now() < deadline,
            "the request was cancelled when its client left"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // Its blocks went back: what stays is the prefix cache's copy of its whole blocks, which
    // a later request may evict; and the slot serves the next request.
    let next = post(addr, "/v1/chat/completions", &chat_body("Hi", 2, false));
    assert_eq!(next.status, 200, "{}", next.body);
    handle.shutdown().unwrap();
}

#[test]
fn every_error_has_its_status_and_openai_shape() {
    let handle = server(ServerConfig {
        api_key: Some("sk-test".into()),
        max_body_bytes: 4096,
        ..ServerConfig::default()
    });
    let addr = handle.addr();
    let auth = [("Authorization", "Bearer sk-test")];
    let call = |path: &str, body: &str| http(addr, "POST", path, body, &auth);
    let msgs = r#""messages": [{"role": "user", "content": "Hi"}]"#;
    let cases: Vec<(Reply, u16, Option<&str>)> = vec![
        (call("/v1/chat/completions", "{not json"), 400, None),
        (
            call("/v1/chat/completions", r#"{"messages": "Hi"}"#),
            400,
            Some("messages"),
        ),
        (
            call(
                "/v1/chat/completions",
                &format!(r#"{{{msgs}, "temperature": "hot"}}"#),
            ),
            400,
            Some("temperature"),
        ),
        (
            call("/v1/chat/completions", &format!(r#"{{{msgs}, "n": 2}}"#)),
            400,
            Some("n"),
        ),
        (
            call(
                "/v1/chat/completions",
                &format!(r#"{{{msgs}, "top_p": 7}}"#),
            ),
            400,
            Some("top_p"),
        ),
        (
            call(
                "/v1/chat/completions",
                &format!(r#"{{{msgs}, "max_tokens": 100000}}"#),
            ),
            400,
            Some("max_tokens"),
        ),
        (
            call(
                "/v1/chat/completions",
                &format!(
                    r#"{{"messages": [{{"role": "user", "content": "{}"}}]}}"#,
                    "x".repeat(5000)
                ),
            ),
            413,
            None,
        ),
        (
            call("/v1/completions", r#"{"prompt": 5}"#),
            400,
            Some("prompt"),
        ),
        (
            call("/detokenize", r#"{"tokens": [999999999]}"#),
            400,
            Some("tokens"),
        ),
        (call("/nowhere", "{}"), 404, None),
        (
            http(
                addr,
                "POST",
                "/v1/chat/completions",
                &format!("{{{msgs}}}"),
                &[],
            ),
            401,
            None,
        ),
        (
            http(
                addr,
                "GET",
                "/v1/models",
                "",
                &[("Authorization", "Bearer sk-wrong")],
            ),
            401,
            None,
        ),
    ];
    for (reply, status, param) in cases {
        assert_eq!(reply.status, status, "{}", reply.body);
        if status == 413 {
            continue; // the limit layer answers before any handler
        }
        let e = reply.json();
        assert!(
            e["error"]["message"].is_string() && e["error"]["type"].is_string(),
            "{e}"
        );
        if let Some(param) = param {
            assert_eq!(e["error"]["param"], param, "{e}");
        }
    }
    // The message names both numbers when max_tokens does not fit.
    let long = call(
        "/v1/chat/completions",
        &format!(r#"{{{msgs}, "max_tokens": 100000}}"#),
    );
    assert!(long.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("100000"));
    // /health needs no key; a server that answered all that still answers.
    assert_eq!(get(addr, "/health").status, 200);
    assert_eq!(
        call(
            "/v1/chat/completions",
            &format!(r#"{{{msgs}, "max_tokens": 2}}"#)
        )
        .status,
        200
    );
    let metrics = http(addr, "GET", "/metrics", "", &auth).body;
    assert!(
        metrics.contains(r#"nano_infer_requests_total{endpoint="chat_completions",status="400"}"#),
        "{metrics}"
    );
    handle.shutdown().unwrap();
}

#[test]
fn models_health_tokenize_and_detokenize() {
    let handle = server(ServerConfig {
        alias: Some("qwen3-test".into()),
        ..ServerConfig::default()
    });
    let addr = handle.addr();
    let models = get(addr, "/v1/models").json();
    assert_eq!(models["data"][0]["id"], "qwen3-test");
    assert_eq!(get(addr, "/health").json()["status"], "ok");
    let tokens = post(addr, "/tokenize", &json!({"content": "Hello world"})).json();
    let ids = tokens["tokens"].clone();
    let generator = load();
    let want = generator
        .codec()
        .unwrap()
        .tokenizer()
        .encode("Hello world")
        .unwrap();
    assert_eq!(ids, json!(want));
    let text = post(addr, "/detokenize", &json!({"tokens": ids})).json();
    assert_eq!(text["content"], "Hello world");
    let pieces = post(
        addr,
        "/tokenize",
        &json!({"content": "Hello world", "with_pieces": true}),
    )
    .json();
    assert_eq!(pieces["tokens"][0]["piece"], "Hello");
    let answer = post(addr, "/v1/chat/completions", &chat_body("Hi", 3, false)).json();
    assert_eq!(answer["model"], "qwen3-test");
    let metrics = get(addr, "/metrics").body;
    for name in [
        "nano_infer_requests_total",
        "nano_infer_prompt_tokens_total",
        "nano_infer_completion_tokens_total",
        "nano_infer_prefix_cache_hit_tokens_total",
        "nano_infer_queue_length",
        "nano_infer_running_sequences",
        "nano_infer_kv_blocks_used",
        "nano_infer_time_to_first_token_seconds_bucket",
        "nano_infer_inter_token_latency_seconds_bucket",
    ] {
        assert!(metrics.contains(name), "{name} in {metrics}");
    }
    handle.shutdown().unwrap();
}

#[test]
fn shutdown_lets_running_streams_finish() {
    let handle = server(ServerConfig {
        shutdown_grace: Duration::from_secs(30),
        ..ServerConfig::default()
    });
    let addr = handle.addr();
    let stream =
        std::thread::spawn(move || post(addr, "/v1/chat/completions", &chat_body("Hi", 300, true)));
    // Once it runs, stop the server: the stream still ends normally.
    while metric(addr, "nano_infer_running_sequences") == 0.0 {
        std::thread::sleep(Duration::from_millis(5));
    }
    handle.shutdown().unwrap();
    let reply = stream.join().unwrap();
    let (_, chunks) = streamed(&reply);
    assert_eq!(
        chunks[chunks.len() - 2]["choices"][0]["finish_reason"],
        "length"
    );
    assert_eq!(chunks[chunks.len() - 1]["usage"]["completion_tokens"], 300);
    // And nothing listens any more.
    assert!(TcpStream::connect(addr).is_err());
}

#[test]
fn health_is_503_while_the_model_loads_and_a_failed_load_stops_the_server() {
    let (release, wait) = std::sync::mpsc::channel::<()>();
    let handle = start(
        ServerConfig {
            port: 0,
            ..ServerConfig::default()
        },
        move || {
            let _ = wait.recv();
            Generator::load(
                fixture("bf16_fullvocab"),
                &LoadOptions::default(),
                &mut |_| {},
            )
        },
    )
    .unwrap();
    let addr = handle.addr();
    let loading = get(addr, "/health");
    assert_eq!(loading.status, 503);
    assert_eq!(loading.json()["status"], "loading model");
    let early = post(addr, "/v1/chat/completions", &chat_body("Hi", 2, false));
    assert_eq!(early.status, 503);
    assert!(early.headers.to_ascii_lowercase().contains("retry-after"));
    release.send(()).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while get(addr, "/health").status != 200 {
        assert!(Instant::now() < deadline, "ready after the load");
        std::thread::sleep(Duration::from_millis(10));
    }
    handle.shutdown().unwrap();

    let handle = start(
        ServerConfig {
            port: 0,
            ..ServerConfig::default()
        },
        || {
            Generator::load(
                fixture("no-such-model"),
                &LoadOptions::default(),
                &mut |_| {},
            )
        },
    )
    .unwrap();
    let err = handle.wait().unwrap_err();
    assert!(err.to_string().contains("no-such-model"), "{err}");
}

#[test]
fn structured_output_and_tool_calls_over_http() {
    let handle = server(ServerConfig::default());
    let addr = handle.addr();
    // response_format json_schema: the answer is JSON of the schema, streamed or not.
    let schema = json!({"type": "object", "properties": {
        "city": {"enum": ["Paris", "Oslo"]}, "temp": {"type": "integer", "minimum": -20, "maximum": 40}},
        "required": ["city", "temp"], "additionalProperties": false});
    for stream in [false, true] {
        let body = json!({
            "messages": [{"role": "user", "content": "Weather?"}], "max_tokens": 60, "seed": 5,
            "temperature": 1.0, "stream": stream, "chat_template_kwargs": {"enable_thinking": false},
            "response_format": {"type": "json_schema",
                                "json_schema": {"name": "w", "schema": schema, "strict": true}},
        });
        let reply = post(addr, "/v1/chat/completions", &body);
        assert_eq!(reply.status, 200, "{}", reply.body);
        let content = if stream {
            streamed(&reply).0
        } else {
            reply.json()["choices"][0]["message"]["content"]
                .as_str()
                .unwrap()
                .to_string()
        };
        let v: Value = serde_json::from_str(&content).unwrap_or_else(|e| panic!("{e}: {content}"));
        assert!(
            ["Paris", "Oslo"].contains(&v["city"].as_str().unwrap()),
            "{v}"
        );
        assert!((-20..=40).contains(&v["temp"].as_i64().unwrap()), "{v}");
    }
    // tool_choice required: a call in OpenAI's shape, streamed as a tool_calls delta.
    let tools = json!([{"type": "function", "function": {"name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"enum": ["Paris", "Rome"]}},
                       "required": ["city"], "additionalProperties": false}}}]);
    for stream in [false, true] {
        let body = json!({
            "messages": [{"role": "user", "content": "Weather in Paris?"}], "max_tokens": 60,
            "tools": tools, "tool_choice": "required", "stream": stream,
            "chat_template_kwargs": {"enable_thinking": false},
        });
        let reply = post(addr, "/v1/chat/completions", &body);
        assert_eq!(reply.status, 200, "{}", reply.body);
        let (call, reason) = if stream {
            let (_, chunks) = streamed(&reply);
            let call = chunks
                .iter()
                .find_map(|c| c["choices"][0]["delta"]["tool_calls"].get(0).cloned())
                .expect("a tool_calls delta");
            assert_eq!(call["index"], 0);
            let reason = chunks.iter().find_map(|c| {
                c["choices"][0]["finish_reason"]
                    .as_str()
                    .map(str::to_string)
            });
            (call, reason.unwrap())
        } else {
            let choice = &reply.json()["choices"][0];
            assert_eq!(choice["message"]["content"], Value::Null);
            (
                choice["message"]["tool_calls"][0].clone(),
                choice["finish_reason"].as_str().unwrap().to_string(),
            )
        };
        assert_eq!(reason, "tool_calls");
        assert_eq!(call["type"], "function");
        assert_eq!(call["function"]["name"], "get_weather");
        assert!(call["id"].as_str().unwrap().starts_with("call_"));
        let args: Value =
            serde_json::from_str(call["function"]["arguments"].as_str().unwrap()).unwrap();
        assert!(
            ["Paris", "Rome"].contains(&args["city"].as_str().unwrap()),
            "{args}"
        );
    }
    // The next turn: the assistant's call and the tool's result render back (a 200 answer).
    let body = json!({
        "messages": [
            {"role": "user", "content": "Weather in Paris?"},
            {"role": "assistant", "content": null, "tool_calls": [{"id": "call_1", "type": "function",
                "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}}]},
            {"role": "tool", "tool_call_id": "call_1", "content": "{\"temp\": 18}"}],
        "tools": tools, "max_tokens": 3,
    });
    assert_eq!(post(addr, "/v1/chat/completions", &body).status, 200);
    // Bad constraints are 400s naming the field, and the server keeps serving.
    for (body, param) in [
        (
            json!({"messages": [{"role": "user", "content": "x"}],
                "response_format": {"type": "json_schema", "json_schema": {"schema": {"type": "nope"}}}}),
            "response_format.json_schema.schema",
        ),
        (
            json!({"messages": [{"role": "user", "content": "x"}], "response_format": {"type": "yaml"}}),
            "response_format.type",
        ),
        (
            json!({"messages": [{"role": "user", "content": "x"}], "tools": [{"type": "function",
                "function": {"name": "f", "parameters": {"type": "object", "properties": {"a": {"type": "bogus"}}}}}]}),
            "tools[0].function.parameters",
        ),
        (
            json!({"messages": [{"role": "user", "content": "x"}], "tool_choice": "required"}),
            "tool_choice",
        ),
    ] {
        let reply = post(addr, "/v1/chat/completions", &body);
        assert_eq!(reply.status, 400, "{}", reply.body);
        assert_eq!(reply.json()["error"]["param"], param, "{}", reply.body);
    }
    assert_eq!(get(addr, "/health").status, 200);
}

/// A response header's value (names compared without case).
fn header<'a>(reply: &'a Reply, name: &str) -> Option<&'a str> {
    reply.headers.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

#[test]
fn the_chat_page_is_served_with_its_assets_and_a_strict_policy() {
    let handle = server(ServerConfig {
        api_key: Some("sk-page".into()),
        ..ServerConfig::default()
    });
    let addr = handle.addr();
    // The page and its files need no key: the page asks for it.
    let page = get(addr, "/");
    assert_eq!(page.status, 200, "{}", page.body);
    assert_eq!(
        header(&page, "content-type"),
        Some("text/html; charset=utf-8")
    );
    let policy = header(&page, "content-security-policy").expect("a CSP header");
    for directive in [
        "default-src 'none'",
        "script-src 'self'",
        "connect-src 'self'",
        "frame-ancestors 'none'",
    ] {
        assert!(policy.contains(directive), "{directive} in {policy}");
    }
    assert!(!policy.contains("unsafe-inline") && !policy.contains("unsafe-eval"));
    assert_eq!(header(&page, "x-content-type-options"), Some("nosniff"));
    assert!(page
        .body
        .contains(r#"<script type="module" src="webui/app.js">"#));
    // No inline script: every <script> has a src (the policy would block any other).
    assert_eq!(
        page.body.matches("<script").count(),
        page.body.matches("<script type=\"module\" src=").count()
    );
    for (path, content_type, needle) in [
        (
            "/webui/app.js",
            "text/javascript; charset=utf-8",
            "streamChat",
        ),
        (
            "/webui/chat.js",
            "text/javascript; charset=utf-8",
            "v1/chat/completions",
        ),
        (
            "/webui/markdown.js",
            "text/javascript; charset=utf-8",
            "export function renderMarkdown",
        ),
        (
            "/webui/highlight.js",
            "text/javascript; charset=utf-8",
            "export function highlight",
        ),
        (
            "/webui/store.js",
            "text/javascript; charset=utf-8",
            "localStorage",
        ),
        ("/webui/style.css", "text/css; charset=utf-8", "#composer"),
        ("/webui/favicon.svg", "image/svg+xml", "<svg"),
    ] {
        let asset = get(addr, path);
        assert_eq!(asset.status, 200, "{path}: {}", asset.body);
        assert_eq!(header(&asset, "content-type"), Some(content_type), "{path}");
        assert!(
            header(&asset, "content-security-policy").is_some(),
            "{path}"
        );
        assert!(asset.body.contains(needle), "{path} holds {needle}");
    }
    // Any other name under /webui/ is a clean 404 in OpenAI's error shape, key or not.
    for path in [
        "/webui/nope.js",
        "/webui/",
        "/webui/..%2Fapi.rs",
        "/webui/app.js/x",
    ] {
        let reply = get(addr, path);
        assert_eq!(reply.status, 404, "{path}: {}", reply.body);
        assert_eq!(reply.json()["error"]["type"], "not_found_error", "{path}");
    }
    // Only `/` and /webui/ are the page's: another path is the API's, and wants the key.
    assert_eq!(get(addr, "/index.html").status, 401);
    // The API still wants the key.
    assert_eq!(get(addr, "/v1/models").status, 401);
    let auth = [("Authorization", "Bearer sk-page")];
    assert_eq!(http(addr, "GET", "/v1/models", "", &auth).status, 200);
    let metrics = http(addr, "GET", "/metrics", "", &auth).body;
    assert!(
        metrics.contains(r#"nano_infer_requests_total{endpoint="webui",status="200"}"#),
        "{metrics}"
    );
    handle.shutdown().unwrap();
}

/// The page's live line reads `usage.prompt_tokens_details.cached_tokens` from the last chunk
/// of a stream: the same system prompt twice, and the second stream says what was reused.
#[test]
fn a_streamed_answer_reports_its_cached_prompt_tokens() {
    let handle = server(ServerConfig::default());
    let addr = handle.addr();
    let system = "You are a helpful assistant. ".repeat(8);
    let body = |q: &str| {
        json!({
            "messages": [{"role": "system", "content": system}, {"role": "user", "content": q}],
            "max_tokens": 2, "stream": true, "stream_options": {"include_usage": true},
        })
    };
    let usage = |q: &str| {
        let reply = post(addr, "/v1/chat/completions", &body(q));
        assert_eq!(reply.status, 200, "{}", reply.body);
        let (_, chunks) = streamed(&reply);
        let last = chunks.last().unwrap().clone();
        assert_eq!(last["choices"], json!([]), "{last}");
        last["usage"].clone()
    };
    let first = usage("first");
    assert_eq!(
        first["prompt_tokens_details"]["cached_tokens"], 0,
        "{first}"
    );
    let second = usage("second");
    let cached = second["prompt_tokens_details"]["cached_tokens"]
        .as_u64()
        .unwrap();
    let prompt = second["prompt_tokens"].as_u64().unwrap();
    assert!(cached >= 48 && cached < prompt, "{second}");
    handle.shutdown().unwrap();
}
