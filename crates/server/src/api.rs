//! The HTTP endpoints: OpenAI's (`/v1/chat/completions`, `/v1/completions`, `/v1/models`) and
//! llama-server's where OpenAI has none (`/health`, `/metrics`, `/tokenize`, `/detokenize`).
//!
//! Request bodies are read by `nano_infer_generate::json` (unknown fields ignored, wrong types
//! a 400 naming the field); the answers are built there too, except the streaming chunks,
//! which are this module's. A request is prepared (rendered, tokenized, checked) on a blocking
//! thread, then handed to the engine thread, whose events come back over a channel: collected
//! into one JSON answer, or turned into server-sent events as they arrive.

use crate::engine::{CancelOnDrop, InFlight, Job};
use crate::error::ApiError;
use crate::App;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::sse::{Event as SseEvent, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures_util::stream::{self, Stream};
use nano_infer_generate::json::{
    chat_completion_json, completion_json, parse_chat_completion, parse_completion, ChatOptions,
};
use nano_infer_generate::{CancelToken, Channel, Event, Finish, Generator, Prepared, Request};
use serde_json::{json, Value};
use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::mpsc::UnboundedReceiver;

/// Default `max_tokens` when a request gives none: the rest of the context, but at most this
/// (admission reserves KV for every request's worst case, so "the whole context" would let
/// one request hold the pool).
pub const DEFAULT_MAX_TOKENS: usize = 4096;

/// Which OpenAI API a request came through.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Api {
    Chat,
    Completions,
}

pub async fn chat(State(app): State<Arc<App>>, body: Bytes) -> Result<Response, ApiError> {
    let value = json_body(&body)?;
    let (request, options) = parse_chat_completion(&value)?;
    run(app, request, options, Api::Chat).await
}

pub async fn completions(State(app): State<Arc<App>>, body: Bytes) -> Result<Response, ApiError> {
    let value = json_body(&body)?;
    let (request, options) = parse_completion(&value)?;
    run(app, request, options, Api::Completions).await
}

pub async fn models(State(app): State<Arc<App>>) -> Result<Json<Value>, ApiError> {
    let loaded = app.loaded()?;
    let m = loaded.generator.model();
    Ok(Json(json!({
        "object": "list",
        "data": [{
            "id": loaded.model_name,
            "object": "model",
            "created": loaded.created,
            "owned_by": "nano-infer",
            "meta": {
                "n_ctx": m.ctx_size(),
                "n_vocab": m.vocab_size(),
                "n_params_bytes": m.file_bytes(),
            },
        }],
    })))
}

pub async fn health(State(app): State<Arc<App>>) -> Response {
    if app.loaded.get().is_some() && !app.shutting_down.load(Ordering::SeqCst) {
        Json(json!({ "status": "ok" })).into_response()
    } else {
        let status = if app.loaded.get().is_some() {
            "shutting down"
        } else {
            "loading model"
        };
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "status": status })),
        )
            .into_response()
    }
}

pub async fn metrics(State(app): State<Arc<App>>) -> Response {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        app.metrics.render(),
    )
        .into_response()
}

/// llama-server's `/tokenize`: `{"content": "text", "with_pieces": false}` →
/// `{"tokens": [ids]}` (or `[{"id", "piece"}]` with pieces). The text is tokenized as it is.
pub async fn tokenize(State(app): State<Arc<App>>, body: Bytes) -> Result<Json<Value>, ApiError> {
    let value = json_body(&body)?;
    let content = value
        .get("content")
        .and_then(Value::as_str)
        .ok_or_else(|| ApiError::bad_request("`content` must be a string", Some("content")))?
        .to_string();
    let with_pieces = value
        .get("with_pieces")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let loaded = app.loaded()?;
    let generator = loaded.generator.clone();
    let tokens = blocking(move || {
        let codec = generator.require_codec()?;
        let ids = codec.encode(&content, generator.model().ctx_size().max(1 << 20))?;
        Ok(if with_pieces {
            let tok = codec.tokenizer();
            ids.iter()
                .map(|&id| json!({ "id": id, "piece": tok.decode(&[id], false).unwrap_or_default() }))
                .collect::<Vec<_>>()
        } else {
            ids.iter().map(|&id| json!(id)).collect()
        })
    })
    .await?;
    Ok(Json(json!({ "tokens": tokens })))
}

/// llama-server's `/detokenize`: `{"tokens": [ids]}` → `{"content": "text"}`.
pub async fn detokenize(State(app): State<Arc<App>>, body: Bytes) -> Result<Json<Value>, ApiError> {
    let value = json_body(&body)?;
    let bad = || ApiError::bad_request("`tokens` must be a list of token ids", Some("tokens"));
    let ids = value
        .get("tokens")
        .and_then(Value::as_array)
        .ok_or_else(bad)?
        .iter()
        .map(|v| {
            v.as_u64()
                .and_then(|id| u32::try_from(id).ok())
                .ok_or_else(bad)
        })
        .collect::<Result<Vec<u32>, _>>()?;
    let loaded = app.loaded()?;
    let vocab = loaded.generator.model().vocab_size();
    if let Some(id) = ids.iter().find(|&&id| id as usize >= vocab) {
        return Err(ApiError::bad_request(
            format!(
                "token id {id} is outside the vocabulary (ids go from 0 to {})",
                vocab - 1
            ),
            Some("tokens"),
        ));
    }
    let codec = loaded.generator.require_codec()?;
    let content = codec
        .tokenizer()
        .decode(&ids, false)
        .map_err(nano_infer_generate::GenerateError::from)?;
    Ok(Json(json!({ "content": content })))
}

pub async fn not_found() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found_error",
        "no such endpoint",
        None,
    )
}

fn json_body(body: &Bytes) -> Result<Value, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("the body is not valid JSON: {e}"), None))
}

/// Runs `f` on tokio's blocking pool (tokenizing a long prompt takes milliseconds).
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::internal(format!("request preparation failed: {e}")))?
}

/// Prepares a request for the server: `max_tokens` must fit the context the prompt leaves, and
/// without one the answer may use the rest of the context up to [`DEFAULT_MAX_TOKENS`].
fn prepare(g: &Generator, request: &Request) -> Result<Prepared, ApiError> {
    let mut p = g.prepare(request)?;
    let ctx = g.model().ctx_size();
    let room = ctx - p.ids.len();
    if room == 0 {
        return Err(ApiError::bad_request(
            format!(
                "the prompt is {} tokens and fills the context ({ctx} tokens): no room to answer",
                p.ids.len()
            ),
            Some("messages"),
        ));
    }
    if request.params.max_tokens.is_some() {
        if p.settings.max_tokens > room {
            return Err(ApiError::bad_request(
                format!(
                    "max_tokens is {}, but the prompt's {} tokens leave {room} of the context's {ctx}",
                    p.settings.max_tokens,
                    p.ids.len()
                ),
                Some("max_tokens"),
            ));
        }
    } else {
        p.settings.max_tokens = room.min(DEFAULT_MAX_TOKENS);
    }
    Ok(p)
}

/// What a response needs to know besides the events.
struct Reply {
    api: Api,
    id: String,
    model: String,
    created: u64,
    include_usage: bool,
    start: Instant,
    last_token: Option<Instant>,
    app: Arc<App>,
}

impl Reply {
    /// Token timings and counts into the metrics.
    fn observe(&mut self, event: &Event) {
        let m = &self.app.metrics;
        match event {
            Event::Token { .. } => {
                let now = Instant::now();
                match self.last_token {
                    None => m
                        .time_to_first_token
                        .record(now.duration_since(self.start).as_secs_f64()),
                    Some(t) => m.inter_token.record(now.duration_since(t).as_secs_f64()),
                }
                self.last_token = Some(now);
            }
            Event::Finished(f) => {
                m.prompt_tokens.increment(f.usage.prompt_tokens as u64);
                m.completion_tokens
                    .increment(f.usage.completion_tokens as u64);
                m.cached_prompt_tokens
                    .increment(f.usage.cached_tokens as u64);
            }
            _ => {}
        }
    }

    fn answer(&self, f: &Finish) -> Value {
        match self.api {
            Api::Chat => chat_completion_json(f, &self.id, &self.model, self.created),
            Api::Completions => completion_json(f, &self.id, &self.model, self.created),
        }
    }

    /// A streaming chunk: a chat delta or a completion's text piece.
    fn chunk(&self, delta: Value, logprobs: Value, finish_reason: Value) -> Value {
        match self.api {
            Api::Chat => json!({
                "id": self.id, "object": "chat.completion.chunk", "created": self.created,
                "model": self.model,
                "choices": [{ "index": 0, "delta": delta, "logprobs": logprobs, "finish_reason": finish_reason }],
            }),
            Api::Completions => json!({
                "id": self.id, "object": "text_completion", "created": self.created,
                "model": self.model,
                "choices": [{
                    "index": 0,
                    "text": delta.get("content").cloned().unwrap_or(json!("")),
                    "logprobs": null,
                    "finish_reason": finish_reason,
                }],
            }),
        }
    }
}

/// Guards a request holds while it runs: dropped (client gone, answer done), they cancel it
/// and free its slot in the queue bound.
struct Held {
    _cancel: CancelOnDrop,
    _in_flight: InFlight,
}

async fn run(
    app: Arc<App>,
    request: Request,
    options: ChatOptions,
    api: Api,
) -> Result<Response, ApiError> {
    let loaded = app.loaded()?;
    if app.shutting_down.load(Ordering::SeqCst) {
        return Err(ApiError::unavailable("the server is shutting down", None));
    }
    if app.config.verbose {
        eprintln!("request: {:?}", request.prompt);
    }
    let generator = loaded.generator.clone();
    let prepared = blocking(move || prepare(&generator, &request)).await?;

    // The queue bound: running slots plus waiting room; past it, come back later.
    let capacity = app.config.engine.max_batch.max(1) + app.config.queue_limit;
    if loaded.engine.in_flight.fetch_add(1, Ordering::SeqCst) >= capacity {
        loaded.engine.in_flight.fetch_sub(1, Ordering::SeqCst);
        return Err(ApiError::unavailable(
            format!("all {capacity} request slots are taken; retry shortly"),
            Some(1),
        ));
    }
    let in_flight = InFlight(Arc::clone(&loaded.engine.in_flight));
    let cancel = CancelToken::new();
    app.track(&cancel);
    let held = Held {
        _cancel: CancelOnDrop(cancel.clone()),
        _in_flight: in_flight,
    };
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    if !loaded.engine.submit(Job {
        prepared,
        cancel,
        events: tx,
    }) {
        return Err(ApiError::internal("the engine has stopped"));
    }
    let n = app.next_id.fetch_add(1, Ordering::SeqCst);
    let reply = Reply {
        api,
        id: match api {
            Api::Chat => format!("chatcmpl-{n}"),
            Api::Completions => format!("cmpl-{n}"),
        },
        model: loaded.model_name.clone(),
        created: loaded.created,
        include_usage: options.include_usage,
        start: Instant::now(),
        last_token: None,
        app: Arc::clone(&app),
    };
    if options.stream {
        Ok(Sse::new(sse_stream(rx, reply, held)).into_response())
    } else {
        collect(rx, reply, held).await
    }
}

/// Waits for the whole answer.
async fn collect(
    mut rx: UnboundedReceiver<Event>,
    mut reply: Reply,
    _held: Held,
) -> Result<Response, ApiError> {
    while let Some(event) = rx.recv().await {
        reply.observe(&event);
        match event {
            Event::Finished(f) => return Ok(Json(reply.answer(&f)).into_response()),
            Event::Failed { message } => return Err(ApiError::internal(message)),
            _ => {}
        }
    }
    Err(ApiError::internal("the engine dropped the request"))
}

/// The answer as server-sent events: a role chunk (chat), a chunk per piece of text (with the
/// log-probabilities of the tokens that made it, when asked), a last chunk with the finish
/// reason, a usage chunk when `stream_options.include_usage`, then `data: [DONE]`.
fn sse_stream(
    rx: UnboundedReceiver<Event>,
    reply: Reply,
    held: Held,
) -> impl Stream<Item = Result<SseEvent, Infallible>> {
    struct State {
        rx: UnboundedReceiver<Event>,
        reply: Reply,
        queue: VecDeque<String>,
        logprobs: Vec<Value>,
        done: bool,
        _held: Held,
    }
    let mut queue = VecDeque::new();
    if reply.api == Api::Chat {
        queue.push_back(
            reply
                .chunk(
                    json!({ "role": "assistant", "content": "" }),
                    Value::Null,
                    Value::Null,
                )
                .to_string(),
        );
    }
    let state = State {
        rx,
        reply,
        queue,
        logprobs: Vec::new(),
        done: false,
        _held: held,
    };
    stream::unfold(state, |mut s| async move {
        loop {
            if let Some(data) = s.queue.pop_front() {
                return Some((Ok(SseEvent::default().data(data)), s));
            }
            if s.done {
                return None;
            }
            let Some(event) = s.rx.recv().await else {
                let error = ApiError::internal("the engine dropped the request");
                s.queue.push_back(error.body.to_string());
                s.queue.push_back("[DONE]".into());
                s.done = true;
                continue;
            };
            s.reply.observe(&event);
            match event {
                Event::Token {
                    logprob: Some(lp), ..
                } => s.logprobs.push(lp.to_json()),
                Event::Text { channel, text } => {
                    let key = match channel {
                        Channel::Content => "content",
                        Channel::Reasoning => "reasoning_content",
                    };
                    let logprobs = take_logprobs(&mut s.logprobs);
                    let chunk = s.reply.chunk(json!({ key: text }), logprobs, Value::Null);
                    s.queue.push_back(chunk.to_string());
                }
                Event::ToolCall { index, call } if s.reply.api == Api::Chat => {
                    // One delta per call, whole: OpenAI streams the arguments in pieces, and
                    // clients concatenate them, so a single piece is read the same way.
                    let mut call_json = call.to_json();
                    call_json["index"] = json!(index);
                    let delta = json!({ "tool_calls": [call_json] });
                    let chunk = s.reply.chunk(delta, Value::Null, Value::Null);
                    s.queue.push_back(chunk.to_string());
                }
                Event::Finished(f) => {
                    if !s.logprobs.is_empty() {
                        let logprobs = take_logprobs(&mut s.logprobs);
                        s.queue
                            .push_back(s.reply.chunk(json!({}), logprobs, Value::Null).to_string());
                    }
                    let reason = json!(f.reason().as_str());
                    s.queue
                        .push_back(s.reply.chunk(json!({}), Value::Null, reason).to_string());
                    if s.reply.include_usage {
                        let mut usage = s.reply.chunk(json!({}), Value::Null, Value::Null);
                        usage["choices"] = json!([]);
                        usage["usage"] = f.usage.to_json();
                        s.queue.push_back(usage.to_string());
                    }
                    s.queue.push_back("[DONE]".into());
                    s.done = true;
                }
                Event::Failed { message } => {
                    s.queue
                        .push_back(ApiError::internal(message).body.to_string());
                    s.queue.push_back("[DONE]".into());
                    s.done = true;
                }
                _ => {}
            }
        }
    })
}

fn take_logprobs(pending: &mut Vec<Value>) -> Value {
    if pending.is_empty() {
        Value::Null
    } else {
        json!({ "content": std::mem::take(pending) })
    }
}
