//! Requests from JSON: OpenAI's chat-completions body (the server, OpenAI Batch API lines) and
//! our own `batch` lines, both into the one [`Request`]; and the answers back in OpenAI's shapes.
//!
//! Bodies are read field by field from a `serde_json::Value` rather than through a derived
//! struct, so that a wrong type is reported with the field's name (OpenAI's `param`), `null`
//! reads as absent (clients send `"stop": null`), and unknown fields of an OpenAI body are
//! ignored, as OpenAI clients send many. Our own batch lines are strict instead: an unknown
//! field there is a typo.

use crate::{Finish, GenerateError, Grammar, Params, Prompt, Request, ToolChoice};
use nano_infer_tokenizer::{ChatFunctionCall, ChatMessage, ChatToolCall};
use serde_json::{json, Map, Value};

/// What an OpenAI chat-completions body asks for besides the request itself.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ChatOptions {
    /// `stream`: answer as server-sent events.
    pub stream: bool,
    /// `stream_options.include_usage`: a last chunk with the usage.
    pub include_usage: bool,
    /// `model`, as the client named it.
    pub model: Option<String>,
    /// `user`, for sticky routing.
    pub user: Option<String>,
}

/// Parses a `POST /v1/chat/completions` body.
pub fn parse_chat_completion(body: &Value) -> Result<(Request, ChatOptions), GenerateError> {
    let f = Fields::of(body, "body")?;
    let messages = match f.get("messages") {
        Some(Value::Array(list)) => list
            .iter()
            .enumerate()
            .map(|(i, m)| parse_message(m, i))
            .collect::<Result<Vec<_>, _>>()?,
        Some(_) => {
            return Err(GenerateError::field(
                "messages",
                "must be an array of messages",
            ))
        }
        None => return Err(GenerateError::field("messages", "is required")),
    };
    if messages.is_empty() {
        return Err(GenerateError::field("messages", "must not be empty"));
    }
    let enable_thinking = match f.get("chat_template_kwargs") {
        Some(kwargs) => Fields::of(kwargs, "chat_template_kwargs")?
            .bool_named("enable_thinking", "chat_template_kwargs.enable_thinking")?,
        None => None,
    };
    let mut params = openai_params(&f, false)?;
    params.max_tokens = match f.i64("max_completion_tokens")? {
        Some(n) => Some(n),
        None => params.max_tokens,
    };
    let options = chat_options(&f)?;
    let (tools, tool_choice) = tools_and_choice(&f)?;
    params.tool_choice = tool_choice;
    let prompt = Prompt::Chat {
        messages,
        enable_thinking,
        tools,
    };
    Ok((Request { prompt, params }, options))
}

/// Parses a `POST /v1/completions` body (OpenAI's legacy text completions): `prompt` is one
/// string (raw text, no template) or one list of token ids; `logprobs` is the number of
/// alternatives per token (0..=20). The text comes back raw: `<think>` is not split out.
pub fn parse_completion(body: &Value) -> Result<(Request, ChatOptions), GenerateError> {
    let f = Fields::of(body, "body")?;
    let prompt = match f.get("prompt") {
        Some(Value::String(text)) => Prompt::Text(text.clone()),
        Some(Value::Array(list)) if list.len() == 1 && list[0].is_string() => {
            Prompt::Text(list[0].as_str().unwrap_or_default().to_string())
        }
        Some(Value::Array(list)) if list.iter().all(Value::is_u64) => Prompt::Ids(
            list.iter()
                .map(|v| {
                    v.as_u64()
                        .and_then(|id| u32::try_from(id).ok())
                        .unwrap_or(u32::MAX)
                })
                .collect(),
        ),
        Some(_) => {
            return Err(GenerateError::field(
                "prompt",
                "must be a string or a list of token ids (one prompt per request)",
            ))
        }
        None => return Err(GenerateError::field("prompt", "is required")),
    };
    let mut params = openai_params(&f, true)?;
    // Legacy `logprobs` is a count, not a switch.
    if let Some(n) = f.i64("logprobs")? {
        params.logprobs = true;
        params.top_logprobs = Some(n);
    }
    params.no_reasoning_split = true;
    let options = chat_options(&f)?;
    Ok((Request { prompt, params }, options))
}

/// OpenAI's legacy `logprobs` object of a completion choice: `tokens`, `token_logprobs`,
/// `top_logprobs` (token → logprob maps) and `text_offset`.
pub fn legacy_logprobs_json(finish: &Finish) -> Option<Value> {
    let list = finish.logprobs.as_ref()?;
    let mut offset = 0;
    let mut offsets = Vec::new();
    for lp in list {
        offsets.push(offset);
        offset += lp.chosen.token.len();
    }
    Some(json!({
        "tokens": list.iter().map(|lp| lp.chosen.token.clone()).collect::<Vec<_>>(),
        "token_logprobs": list.iter().map(|lp| lp.chosen.logprob).collect::<Vec<_>>(),
        "top_logprobs": list.iter().map(|lp| {
            lp.top.iter().map(|a| (a.token.clone(), json!(a.logprob))).collect::<Map<String, Value>>()
        }).collect::<Vec<_>>(),
        "text_offset": offsets,
    }))
}

/// OpenAI's `text_completion` object for a finished request.
pub fn completion_json(finish: &Finish, id: &str, model: &str, created: u64) -> Value {
    json!({
        "id": id,
        "object": "text_completion",
        "created": created,
        "model": model,
        "choices": [{
            "index": 0,
            "text": finish.content,
            "logprobs": legacy_logprobs_json(finish),
            "finish_reason": finish.reason().as_str(),
        }],
        "usage": finish.usage.to_json(),
        "seed": finish.seed,
    })
}

/// `n` (1 only), `stream`, `stream_options.include_usage`, `model` and `user`, as both
/// endpoints take them.
fn chat_options(f: &Fields<'_>) -> Result<ChatOptions, GenerateError> {
    if let Some(n) = f.i64("n")? {
        if n != 1 {
            return Err(GenerateError::field(
                "n",
                format!("only 1 choice per request is supported (got {n})"),
            ));
        }
    }
    Ok(ChatOptions {
        stream: f.bool("stream")?.unwrap_or(false),
        include_usage: match f.get("stream_options") {
            Some(o) => Fields::of(o, "stream_options")?
                .bool_named("include_usage", "stream_options.include_usage")?
                .unwrap_or(false),
            None => false,
        },
        model: f.string("model")?,
        user: f.string("user")?,
    })
}

/// The sampling fields OpenAI bodies share (with llama-server's and vLLM's extensions).
/// `legacy`: the completions endpoint, whose `logprobs` is a count (read by the caller).
fn openai_params(f: &Fields<'_>, legacy: bool) -> Result<Params, GenerateError> {
    Ok(Params {
        max_tokens: f.i64("max_tokens")?,
        temperature: f.f64("temperature")?,
        top_k: f.i64("top_k")?,
        top_p: f.f64("top_p")?,
        min_p: f.f64("min_p")?,
        repetition_penalty: f.f64("repetition_penalty")?,
        presence_penalty: f.f64("presence_penalty")?,
        frequency_penalty: f.f64("frequency_penalty")?,
        seed: f.u64("seed")?,
        stop: f.strings("stop")?,
        logprobs: !legacy && f.bool("logprobs")?.unwrap_or(false),
        top_logprobs: if legacy { None } else { f.i64("top_logprobs")? },
        ignore_eos: f.bool("ignore_eos")?.unwrap_or(false),
        no_reasoning_split: false,
        grammar: response_format(f)?,
        tool_choice: ToolChoice::Auto,
    })
}

/// OpenAI's `response_format`: `{"type": "text"}`, `{"type": "json_object"}` or
/// `{"type": "json_schema", "json_schema": {"name", "schema", "strict"}}` (the schema is
/// always followed, `strict` or not).
fn response_format(f: &Fields<'_>) -> Result<Option<Grammar>, GenerateError> {
    let Some(format) = f.get("response_format") else {
        return Ok(None);
    };
    let rf = Fields::of(format, "response_format")?;
    match rf.string_named("type", "response_format.type")?.as_deref() {
        Some("text") => Ok(None),
        Some("json_object") => Ok(Some(Grammar::JsonObject)),
        Some("json_schema") => {
            let spec = rf.get("json_schema").ok_or_else(|| {
                GenerateError::field("response_format.json_schema", "is required")
            })?;
            let spec = Fields::of(spec, "response_format.json_schema")?;
            spec.bool_named("strict", "response_format.json_schema.strict")?;
            match spec.get("schema") {
                Some(schema @ (Value::Object(_) | Value::Bool(_))) => {
                    Ok(Some(Grammar::JsonSchema(schema.clone())))
                }
                Some(_) => Err(GenerateError::field(
                    "response_format.json_schema.schema",
                    "must be a JSON schema (an object)",
                )),
                None => Err(GenerateError::field(
                    "response_format.json_schema.schema",
                    "is required",
                )),
            }
        }
        Some(other) => Err(GenerateError::field(
            "response_format.type",
            format!("`{other}` is not one of text, json_object, json_schema"),
        )),
        None => Err(GenerateError::field("response_format.type", "is required")),
    }
}

/// `tools` (checked when the request is prepared) and `tool_choice`: `auto`, `none`,
/// `required` or `{"type": "function", "function": {"name"}}`.
fn tools_and_choice(f: &Fields<'_>) -> Result<(Vec<Value>, ToolChoice), GenerateError> {
    let tools = match f.get("tools") {
        Some(Value::Array(list)) => list.clone(),
        Some(_) => return Err(GenerateError::field("tools", "must be an array of tools")),
        None => Vec::new(),
    };
    let choice = match f.get("tool_choice") {
        None => ToolChoice::Auto,
        Some(Value::String(s)) => match s.as_str() {
            "auto" => ToolChoice::Auto,
            "none" => ToolChoice::None,
            "required" => ToolChoice::Required,
            other => {
                return Err(GenerateError::field(
                    "tool_choice",
                    format!("`{other}` is not auto, none, required or a function"),
                ))
            }
        },
        Some(v @ Value::Object(_)) => {
            let name = v
                .get("function")
                .and_then(|func| func.get("name"))
                .and_then(Value::as_str)
                .ok_or_else(|| GenerateError::field("tool_choice.function.name", "is required"))?;
            ToolChoice::Function(name.to_string())
        }
        Some(_) => {
            return Err(GenerateError::field(
                "tool_choice",
                "must be a string or {\"type\": \"function\", \"function\": {\"name\": ...}}",
            ))
        }
    };
    Ok((tools, choice))
}

/// The fields of our own `batch` lines (README, "batch").
const NATIVE_FIELDS: &[&str] = &[
    "messages",
    "prompt",
    "ids",
    "raw",
    "system",
    "think",
    "max_tokens",
    "temperature",
    "top_k",
    "top_p",
    "min_p",
    "repeat_penalty",
    "repetition_penalty",
    "presence_penalty",
    "frequency_penalty",
    "seed",
    "stop",
    "logprobs",
    "top_logprobs",
    "ignore_eos",
    "response_format",
    "tools",
    "tool_choice",
];

/// Parses one of our own `batch` lines: exactly one of `messages`, `prompt` (one user turn, or
/// plain text with `"raw": true`) or `ids`, plus the settings of [`Params`] by their OpenAI
/// names (`repeat_penalty` is accepted for `repetition_penalty`), `system` and `think`.
pub fn parse_batch_line(line: &Value) -> Result<Request, GenerateError> {
    let f = Fields::of(line, "line")?;
    if let Some(unknown) = f.obj.keys().find(|k| !NATIVE_FIELDS.contains(&k.as_str())) {
        return Err(GenerateError::field(
            unknown.clone(),
            "unknown field (see the batch line format in README.md)",
        ));
    }
    let given = ["messages", "prompt", "ids"].map(|k| f.get(k).is_some());
    if given.iter().filter(|g| **g).count() != 1 {
        return Err(GenerateError::field(
            "messages",
            "give exactly one of `messages`, `prompt` or `ids`",
        ));
    }
    let raw = f.bool("raw")?.unwrap_or(false);
    let system = f.string("system")?;
    let think = f.bool("think")?;
    let prompt = if let Some(ids) = f.get("ids") {
        let list = ids
            .as_array()
            .ok_or_else(|| GenerateError::field("ids", "must be an array of token ids"))?;
        Prompt::Ids(
            list.iter()
                .map(|v| {
                    v.as_u64()
                        .and_then(|id| u32::try_from(id).ok())
                        .ok_or_else(|| {
                            GenerateError::field("ids", format!("`{v}` is not a token id"))
                        })
                })
                .collect::<Result<_, _>>()?,
        )
    } else if let Some(text) = f.string("prompt")? {
        if raw {
            Prompt::Text(text)
        } else {
            Prompt::user(text, system.as_deref(), think)
        }
    } else {
        let list = match f.get("messages") {
            Some(Value::Array(list)) => list,
            _ => {
                return Err(GenerateError::field(
                    "messages",
                    "must be an array of messages",
                ))
            }
        };
        let mut messages = Vec::new();
        if let Some(system) = &system {
            messages.push(ChatMessage::new("system", system.as_str()));
        }
        for (i, m) in list.iter().enumerate() {
            messages.push(parse_message(m, i)?);
        }
        Prompt::Chat {
            messages,
            enable_thinking: think,
            tools: Vec::new(),
        }
    };
    let mut params = openai_params(&f, false)?;
    let (tools, tool_choice) = tools_and_choice(&f)?;
    params.tool_choice = tool_choice;
    let prompt = match prompt {
        Prompt::Chat {
            messages,
            enable_thinking,
            ..
        } => Prompt::Chat {
            messages,
            enable_thinking,
            tools,
        },
        _ if !tools.is_empty() => {
            return Err(GenerateError::field(
                "tools",
                "needs a chat prompt (`messages`, or `prompt` without `raw`)",
            ))
        }
        other => other,
    };
    if let Some(v) = f.f64("repeat_penalty")? {
        params.repetition_penalty = Some(v);
    }
    Ok(Request { prompt, params })
}

/// One message: `role`, `content` (a string, `null`, or a list of text parts) and an optional
/// `reasoning_content`.
fn parse_message(m: &Value, i: usize) -> Result<ChatMessage, GenerateError> {
    let name = |field: &str| format!("messages[{i}].{field}");
    let f = Fields::of(m, &format!("messages[{i}]"))?;
    let role = f
        .string_named("role", &name("role"))?
        .ok_or_else(|| GenerateError::field(name("role"), "is required"))?;
    let content = match f.get("content") {
        None => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(parts)) => {
            let mut text = String::new();
            for (j, part) in parts.iter().enumerate() {
                let field = format!("messages[{i}].content[{j}]");
                let p = Fields::of(part, &field)?;
                match p.string_named("type", &field)?.as_deref() {
                    Some("text") => text.push_str(
                        &p.string_named("text", &format!("{field}.text"))?
                            .unwrap_or_default(),
                    ),
                    other => {
                        return Err(GenerateError::field(
                            field,
                            format!("only text parts are supported (got type {other:?})"),
                        ))
                    }
                }
            }
            text
        }
        Some(_) => {
            return Err(GenerateError::field(
                name("content"),
                "must be a string or a list of text parts",
            ))
        }
    };
    Ok(ChatMessage {
        role,
        content,
        reasoning_content: f.string_named("reasoning_content", &name("reasoning_content"))?,
        tool_calls: match f.get("tool_calls") {
            Some(Value::Array(calls)) => calls
                .iter()
                .enumerate()
                .map(|(k, c)| parse_tool_call(c, &name(&format!("tool_calls[{k}]"))))
                .collect::<Result<_, _>>()?,
            Some(_) => return Err(GenerateError::field(name("tool_calls"), "must be an array")),
            None => Vec::new(),
        },
    })
}

/// An assistant message's call, `{"id", "type": "function", "function": {"name",
/// "arguments"}}`; the arguments string is parsed to the object the template prints (kept as
/// the string when it is not JSON, which the template prints as it is).
fn parse_tool_call(c: &Value, at: &str) -> Result<ChatToolCall, GenerateError> {
    let f = Fields::of(c, at)?;
    let function = f
        .get("function")
        .ok_or_else(|| GenerateError::field(format!("{at}.function"), "is required"))?;
    let func = Fields::of(function, &format!("{at}.function"))?;
    let name = func
        .string_named("name", &format!("{at}.function.name"))?
        .ok_or_else(|| GenerateError::field(format!("{at}.function.name"), "is required"))?;
    let arguments = match func.get("arguments") {
        Some(Value::String(text)) => {
            serde_json::from_str(text).unwrap_or(Value::String(text.clone()))
        }
        Some(v @ Value::Object(_)) => v.clone(),
        None => json!({}),
        Some(_) => {
            return Err(GenerateError::field(
                format!("{at}.function.arguments"),
                "must be a string of JSON",
            ))
        }
    };
    Ok(ChatToolCall {
        id: f
            .string_named("id", &format!("{at}.id"))?
            .unwrap_or_default(),
        kind: "function".to_string(),
        function: ChatFunctionCall { name, arguments },
    })
}

/// OpenAI's `chat.completion` object for a finished request.
pub fn chat_completion_json(finish: &Finish, id: &str, model: &str, created: u64) -> Value {
    let mut message = json!({ "role": "assistant", "content": finish.content });
    if let Some(reasoning) = &finish.reasoning {
        message["reasoning_content"] = json!(reasoning);
    }
    if !finish.tool_calls.is_empty() {
        message["tool_calls"] = finish.tool_calls.iter().map(|c| c.to_json()).collect();
        if finish.content.is_empty() {
            // OpenAI sends `null` content beside calls.
            message["content"] = Value::Null;
        }
    }
    json!({
        "id": id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [{
            "index": 0,
            "message": message,
            "logprobs": finish.logprobs_json(),
            "finish_reason": finish.reason().as_str(),
        }],
        "usage": finish.usage.to_json(),
        "seed": finish.seed,
    })
}

/// OpenAI's error body for a request that could not be run: `{"error": {"message", "type",
/// "param", "code"}}`.
pub fn error_json(err: &GenerateError) -> Value {
    let (kind, param) = match err {
        GenerateError::InvalidField { field, .. } => ("invalid_request_error", Some(field.clone())),
        e if e.is_request_error() => ("invalid_request_error", None),
        _ => ("server_error", None),
    };
    json!({ "error": { "message": err.to_string(), "type": kind, "param": param, "code": null } })
}

/// Typed access to a JSON object's fields; `null` reads as absent.
struct Fields<'a> {
    obj: &'a Map<String, Value>,
}

impl<'a> Fields<'a> {
    fn of(v: &'a Value, what: &str) -> Result<Self, GenerateError> {
        v.as_object()
            .map(|obj| Self { obj })
            .ok_or_else(|| GenerateError::field(what, "must be a JSON object"))
    }

    fn get(&self, name: &str) -> Option<&'a Value> {
        self.obj.get(name).filter(|v| !v.is_null())
    }

    fn typed<T>(
        &self,
        name: &str,
        field: &str,
        expected: &str,
        read: impl Fn(&Value) -> Option<T>,
    ) -> Result<Option<T>, GenerateError> {
        self.get(name)
            .map(|v| {
                read(v).ok_or_else(|| {
                    GenerateError::field(field, format!("must be {expected} (got {v})"))
                })
            })
            .transpose()
    }

    fn f64(&self, name: &str) -> Result<Option<f64>, GenerateError> {
        self.typed(name, name, "a number", Value::as_f64)
    }

    fn i64(&self, name: &str) -> Result<Option<i64>, GenerateError> {
        self.typed(name, name, "an integer", Value::as_i64)
    }

    fn u64(&self, name: &str) -> Result<Option<u64>, GenerateError> {
        self.typed(name, name, "a non-negative integer", Value::as_u64)
    }

    fn bool(&self, name: &str) -> Result<Option<bool>, GenerateError> {
        self.bool_named(name, name)
    }

    fn bool_named(&self, name: &str, field: &str) -> Result<Option<bool>, GenerateError> {
        self.typed(name, field, "true or false", Value::as_bool)
    }

    fn string(&self, name: &str) -> Result<Option<String>, GenerateError> {
        self.string_named(name, name)
    }

    fn string_named(&self, name: &str, field: &str) -> Result<Option<String>, GenerateError> {
        self.typed(name, field, "a string", |v| v.as_str().map(str::to_string))
    }

    /// A string or a list of strings.
    fn strings(&self, name: &str) -> Result<Vec<String>, GenerateError> {
        let read = |v: &Value| match v {
            Value::String(s) => Some(vec![s.clone()]),
            Value::Array(list) => list
                .iter()
                .map(|s| s.as_str().map(str::to_string))
                .collect(),
            _ => None,
        };
        Ok(self
            .typed(name, name, "a string or a list of strings", read)?
            .unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field_of(err: GenerateError) -> String {
        match err {
            GenerateError::InvalidField { field, .. } => field,
            other => panic!("expected a field error, got {other}"),
        }
    }

    #[test]
    fn an_openai_body_becomes_a_request_and_unknown_fields_are_ignored() {
        let body = json!({
            "model": "qwen3", "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": [{"type": "text", "text": "Hi"}, {"type": "text", "text": "!"}]}
            ],
            "max_completion_tokens": 12, "temperature": 0.5, "top_k": 40, "seed": 3,
            "stop": "\n\n", "logprobs": true, "top_logprobs": 2, "n": 1, "stream": true,
            "stream_options": {"include_usage": true}, "frequency_penalty": null,
            "chat_template_kwargs": {"enable_thinking": false}, "some_future_field": {"x": 1}
        });
        let (req, opts) = parse_chat_completion(&body).unwrap();
        let Prompt::Chat {
            messages,
            enable_thinking,
            ..
        } = &req.prompt
        else {
            panic!()
        };
        assert_eq!(messages[1].content, "Hi!");
        assert_eq!(*enable_thinking, Some(false));
        assert_eq!(req.params.max_tokens, Some(12));
        assert_eq!(req.params.stop, vec!["\n\n".to_string()]);
        assert_eq!(req.params.frequency_penalty, None);
        assert_eq!(
            (req.params.top_k, req.params.seed, req.params.top_logprobs),
            (Some(40), Some(3), Some(2))
        );
        assert!(opts.stream && opts.include_usage);
    }

    #[test]
    fn wrong_types_and_values_name_their_param() {
        let cases = [
            (json!({"messages": "hi"}), "messages"),
            (json!({"messages": []}), "messages"),
            (json!({"messages": [{"content": "x"}]}), "messages[0].role"),
            (
                json!({"messages": [{"role": "user", "content": 5}]}),
                "messages[0].content",
            ),
            (
                json!({"messages": [{"role": "user", "content": "x"}], "temperature": "hot"}),
                "temperature",
            ),
            (
                json!({"messages": [{"role": "user", "content": "x"}], "n": 2}),
                "n",
            ),
            (
                json!({"messages": [{"role": "user", "content": "x"}], "seed": -1}),
                "seed",
            ),
            (
                json!({"messages": [{"role": "user", "content": "x"}], "stop": [1]}),
                "stop",
            ),
            (
                json!({"messages": [{"role": "user", "content": "x"}], "chat_template_kwargs": {"enable_thinking": "no"}}),
                "chat_template_kwargs.enable_thinking",
            ),
        ];
        for (body, param) in cases {
            assert_eq!(
                field_of(parse_chat_completion(&body).unwrap_err()),
                param,
                "{body}"
            );
        }
        let err = parse_chat_completion(&json!({"messages": "hi"})).unwrap_err();
        assert_eq!(error_json(&err)["error"]["param"], "messages");
        assert_eq!(error_json(&err)["error"]["type"], "invalid_request_error");
    }

    #[test]
    fn batch_lines_are_strict_and_take_every_prompt_form() {
        let line = json!({"prompt": "Hi", "system": "S", "think": false, "repeat_penalty": 1.1});
        let req = parse_batch_line(&line).unwrap();
        let Prompt::Chat {
            messages,
            enable_thinking,
            ..
        } = &req.prompt
        else {
            panic!()
        };
        assert_eq!((messages.len(), *enable_thinking), (2, Some(false)));
        assert_eq!(req.params.repetition_penalty, Some(1.1));
        let req = parse_batch_line(&json!({"prompt": "Hi", "raw": true})).unwrap();
        assert_eq!(req.prompt, Prompt::Text("Hi".into()));
        let req = parse_batch_line(&json!({"ids": [1, 2]})).unwrap();
        assert_eq!(req.prompt, Prompt::Ids(vec![1, 2]));
        assert_eq!(
            field_of(parse_batch_line(&json!({"prompt": "x", "temprature": 1})).unwrap_err()),
            "temprature"
        );
        assert_eq!(
            field_of(parse_batch_line(&json!({"prompt": "x", "ids": [1]})).unwrap_err()),
            "messages"
        );
        assert_eq!(
            field_of(parse_batch_line(&json!({"ids": [-1]})).unwrap_err()),
            "ids"
        );
    }
}
