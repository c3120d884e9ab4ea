//! [`ChatTemplate`]: the model's Jinja chat template, rendered the way transformers renders it.
//!
//! transformers renders `chat_template` with jinja2 (`trim_blocks=True, lstrip_blocks=True`,
//! the `loopcontrols` extension, a `raise_exception` global, Python `str` methods). We mirror
//! that with minijinja: the same two whitespace flags, `loop_controls`, `raise_exception`, and
//! minijinja-contrib's `pycompat` callback for `startswith`/`split`/`strip`/... called as
//! methods. jinja2 also drops a single trailing newline of the template; minijinja's default
//! (`keep_trailing_newline = false`) matches. Like transformers, the special-token strings of
//! `tokenizer_config.json` (`bos_token`, `eos_token`, ...) are passed as template variables.
//!
//! `tojson` is replaced by Python's `json.dumps` as transformers calls it (`", "` and `": "`
//! separators, non-ASCII kept, keys in the order given): minijinja's own is compact and escapes
//! `<`, `>`, `&` and `'` for HTML, and Qwen3 renders every tool signature and tool-call
//! argument object through it.

use std::collections::BTreeMap;
use std::path::Path;

use minijinja::{Environment, ErrorKind, Value};
use serde::{Deserialize, Serialize};

use crate::error::TokenizerError;
use crate::tokenizer::read_regular_to_string;

/// File holding the template in current transformers releases; it wins over the config entry.
pub const CHAT_TEMPLATE_FILE: &str = "chat_template.jinja";
/// File holding `chat_template` (and the special-token strings) in older releases.
pub const TOKENIZER_CONFIG_FILE: &str = "tokenizer_config.json";

/// Name of the one template stored in the environment.
const TEMPLATE_NAME: &str = "chat";
/// `tokenizer_config.json` keys passed to the template as variables, as transformers does.
const SPECIAL_TOKEN_KEYS: [&str; 4] = ["bos_token", "eos_token", "pad_token", "unk_token"];

/// One chat turn. Field names are the ones chat templates read (`message.role`, ...), and the
/// serde derive lets a batch mode read messages from JSON lines.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    /// `system`, `user`, `assistant` or `tool`.
    pub role: String,
    /// The message text.
    pub content: String,
    /// An assistant turn's thinking, given separately. Left out of the template's view when
    /// `None`, so the Qwen3 template falls back to splitting `<think>...</think>` out of
    /// `content`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reasoning_content: Option<String>,
    /// An assistant turn's function calls (OpenAI's `tool_calls`), rendered back by the
    /// template for the next turn.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ChatToolCall>,
}

/// One function call of an assistant turn, in OpenAI's shape (`{id, type, function: {name,
/// arguments}}`), which is what chat templates read.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatToolCall {
    /// The call's id (`call_...`), echoed by the `tool` message that answers it.
    pub id: String,
    /// Always `function`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The function called.
    pub function: ChatFunctionCall,
}

/// The function part of a [`ChatToolCall`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatFunctionCall {
    /// The function's name.
    pub name: String,
    /// The arguments as a JSON value: an object parsed from OpenAI's JSON string (the Qwen3
    /// template prints it with `tojson`), or the string itself when it did not parse (the
    /// template then prints it verbatim).
    pub arguments: serde_json::Value,
}

impl ChatMessage {
    /// A message with no separate reasoning content.
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        Self {
            role: role.into(),
            content: content.into(),
            reasoning_content: None,
            tool_calls: Vec::new(),
        }
    }
}

/// Switches passed to the template.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RenderOptions {
    /// End with the opening of an assistant turn (`<|im_start|>assistant\n` for Qwen3).
    pub add_generation_prompt: bool,
    /// Qwen3's thinking switch. `None` leaves the variable undefined so the template's own
    /// default applies (thinking on, for Qwen3); `Some(false)` makes Qwen3 emit an empty
    /// `<think>\n\n</think>\n\n` after the generation prompt.
    pub enable_thinking: Option<bool>,
}

/// A compiled chat template plus the variables transformers passes next to `messages`.
#[derive(Debug)]
pub struct ChatTemplate {
    env: Environment<'static>,
    /// `bos_token`, `eos_token`... from the config, when they are strings.
    special_tokens: BTreeMap<&'static str, String>,
}

impl ChatTemplate {
    /// Loads from a model folder: `chat_template.jinja` if present, else the `chat_template`
    /// entry of `tokenizer_config.json`.
    pub fn from_dir(model_dir: impl AsRef<Path>) -> Result<Self, TokenizerError> {
        Self::from_tokenizer_config(model_dir.as_ref().join(TOKENIZER_CONFIG_FILE))
    }

    /// Loads from a `tokenizer_config.json`; a `chat_template.jinja` in the same folder takes
    /// precedence over its `chat_template` entry, as in transformers. The config itself may be
    /// absent when the `.jinja` file is there.
    pub fn from_tokenizer_config(path: impl AsRef<Path>) -> Result<Self, TokenizerError> {
        let config_path = path.as_ref();
        let jinja_path = config_path
            .parent()
            .map(|dir| dir.join(CHAT_TEMPLATE_FILE))
            .filter(|p| p.is_file());
        let config = match (read_config(config_path), &jinja_path) {
            (Ok(config), _) => Some(config),
            // Without the config we only lose the special-token variables.
            (Err(TokenizerError::Io { .. }), Some(_)) => None,
            (Err(err), _) => return Err(err),
        };
        let (source, source_path) = match jinja_path {
            Some(jinja_path) => {
                let text =
                    read_regular_to_string(&jinja_path).map_err(|source| TokenizerError::Io {
                        path: jinja_path.clone(),
                        source,
                    })?;
                (text, jinja_path)
            }
            None => {
                // `config` is `Some` here: a read error without a `.jinja` file returned above.
                let config = config.as_ref().unwrap_or(&serde_json::Value::Null);
                (
                    template_from_config(config, config_path)?,
                    config_path.to_path_buf(),
                )
            }
        };
        let mut template = Self::new(source, &source_path)?;
        if let Some(config) = &config {
            template.special_tokens = special_tokens(config);
        }
        Ok(template)
    }

    /// Compiles a template from its source; `origin` only labels errors.
    pub fn new(source: String, origin: &Path) -> Result<Self, TokenizerError> {
        let mut env = Environment::new();
        // jinja2 settings used by transformers' chat template rendering.
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", raise_exception);
        env.add_filter("tojson", python_tojson);
        env.set_fuel(Some(TEMPLATE_FUEL));
        env.add_template_owned(TEMPLATE_NAME, source)
            .map_err(|source| TokenizerError::TemplateSyntax {
                path: origin.to_path_buf(),
                source,
            })?;
        Ok(Self {
            env,
            special_tokens: BTreeMap::new(),
        })
    }

    /// Renders a conversation to the prompt string (encode it with [`crate::Tokenizer::encode`]).
    pub fn render(
        &self,
        messages: &[ChatMessage],
        opts: &RenderOptions,
    ) -> Result<String, TokenizerError> {
        self.render_with_tools(messages, &[], opts)
    }

    /// Renders a conversation that offers `tools` (OpenAI's function format, `{"type":
    /// "function", "function": {name, description, parameters}}`), as transformers'
    /// `apply_chat_template(messages, tools=...)`. No tools leaves the variable undefined.
    pub fn render_with_tools(
        &self,
        messages: &[ChatMessage],
        tools: &[serde_json::Value],
        opts: &RenderOptions,
    ) -> Result<String, TokenizerError> {
        let render_err = |source| TokenizerError::TemplateRender { source };
        let mut ctx: BTreeMap<&str, Value> = self
            .special_tokens
            .iter()
            .map(|(k, v)| (*k, Value::from(v.as_str())))
            .collect();
        ctx.insert("messages", Value::from_serialize(messages));
        ctx.insert(
            "add_generation_prompt",
            Value::from(opts.add_generation_prompt),
        );
        if let Some(enable_thinking) = opts.enable_thinking {
            ctx.insert("enable_thinking", Value::from(enable_thinking));
        }
        if !tools.is_empty() {
            ctx.insert("tools", Value::from_serialize(tools));
        }
        self.env
            .get_template(TEMPLATE_NAME)
            .map_err(render_err)?
            .render(ctx)
            .map_err(|source| match source.kind() {
                ErrorKind::OutOfFuel => TokenizerError::TemplateBudget {
                    fuel: TEMPLATE_FUEL,
                },
                _ => render_err(source),
            })
    }
}

/// Instructions one render may execute (minijinja's fuel). A template is a program shipped in
/// the model directory: nested `range(10000)` loops would run 10⁸ iterations and allocate
/// gigabytes of output before anything checked the prompt's length. Qwen3's template spends a
/// few hundred instructions per message, so 10⁷ is tens of thousands of messages (far past any
/// context), while a runaway loop stops within a second and ~100 MB of output.
pub const TEMPLATE_FUEL: u64 = 10_000_000;

/// `raise_exception(msg)`: templates call it to reject a conversation (e.g. a bad role order).
fn raise_exception(message: String) -> Result<Value, minijinja::Error> {
    Err(minijinja::Error::new(ErrorKind::InvalidOperation, message))
}

/// `tojson` as transformers defines it: `json.dumps(value, ensure_ascii=False, indent=indent)`,
/// so `", "` and `": "` between items (a newline and the indent instead when one is given) and
/// keys in insertion order. serde_json escapes exactly what `json.dumps` escapes with
/// `ensure_ascii=False`: `"`, `\\` and control characters.
fn python_tojson(
    value: &Value,
    kwargs: minijinja::value::Kwargs,
) -> Result<Value, minijinja::Error> {
    let indent: Option<usize> = kwargs.get("indent")?;
    kwargs.assert_all_used()?;
    let json = serde_json::to_value(value)
        .map_err(|e| minijinja::Error::new(ErrorKind::InvalidOperation, format!("tojson: {e}")))?;
    let mut out = Vec::new();
    let formatter = PythonFormatter {
        indent,
        open: Vec::new(),
    };
    let mut ser = serde_json::Serializer::with_formatter(&mut out, formatter);
    serde::Serialize::serialize(&json, &mut ser)
        .map_err(|e| minijinja::Error::new(ErrorKind::InvalidOperation, format!("tojson: {e}")))?;
    // serde_json writes valid UTF-8.
    let text = String::from_utf8(out)
        .map_err(|e| minijinja::Error::new(ErrorKind::InvalidOperation, format!("tojson: {e}")))?;
    Ok(Value::from_safe_string(text))
}

/// A serde_json formatter with Python's `json.dumps` separators.
struct PythonFormatter {
    indent: Option<usize>,
    /// One entry per open array or object: whether it has had an item yet (an empty one
    /// prints as `[]` even with an indent, as in Python).
    open: Vec<bool>,
}

impl PythonFormatter {
    fn item<W: ?Sized + std::io::Write>(
        &mut self,
        writer: &mut W,
        first: bool,
    ) -> std::io::Result<()> {
        if let Some(open) = self.open.last_mut() {
            *open = true;
        }
        match self.indent {
            Some(width) => {
                if !first {
                    writer.write_all(b",")?;
                }
                writer.write_all(b"\n")?;
                writer.write_all(" ".repeat(width * self.open.len()).as_bytes())
            }
            None if first => Ok(()),
            None => writer.write_all(b", "),
        }
    }

    fn close<W: ?Sized + std::io::Write>(
        &mut self,
        writer: &mut W,
        bracket: &[u8],
    ) -> std::io::Result<()> {
        let had_items = self.open.pop().unwrap_or(false);
        if let (Some(width), true) = (self.indent, had_items) {
            writer.write_all(b"\n")?;
            writer.write_all(" ".repeat(width * self.open.len()).as_bytes())?;
        }
        writer.write_all(bracket)
    }
}

impl serde_json::ser::Formatter for PythonFormatter {
    fn begin_array<W: ?Sized + std::io::Write>(&mut self, writer: &mut W) -> std::io::Result<()> {
        self.open.push(false);
        writer.write_all(b"[")
    }

    fn end_array<W: ?Sized + std::io::Write>(&mut self, writer: &mut W) -> std::io::Result<()> {
        self.close(writer, b"]")
    }

    fn begin_array_value<W: ?Sized + std::io::Write>(
        &mut self,
        writer: &mut W,
        first: bool,
    ) -> std::io::Result<()> {
        self.item(writer, first)
    }

    fn begin_object<W: ?Sized + std::io::Write>(&mut self, writer: &mut W) -> std::io::Result<()> {
        self.open.push(false);
        writer.write_all(b"{")
    }

    fn end_object<W: ?Sized + std::io::Write>(&mut self, writer: &mut W) -> std::io::Result<()> {
        self.close(writer, b"}")
    }

    fn begin_object_key<W: ?Sized + std::io::Write>(
        &mut self,
        writer: &mut W,
        first: bool,
    ) -> std::io::Result<()> {
        self.item(writer, first)
    }

    fn begin_object_value<W: ?Sized + std::io::Write>(
        &mut self,
        writer: &mut W,
    ) -> std::io::Result<()> {
        writer.write_all(b": ")
    }
}

fn read_config(path: &Path) -> Result<serde_json::Value, TokenizerError> {
    let text = read_regular_to_string(path).map_err(|source| TokenizerError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    serde_json::from_str(&text).map_err(|source| TokenizerError::Json {
        path: path.to_path_buf(),
        source,
    })
}

/// The `chat_template` entry: a string, or (older multi-template configs) a list of
/// `{name, template}` of which we take `default`.
fn template_from_config(config: &serde_json::Value, path: &Path) -> Result<String, TokenizerError> {
    let missing = |reason: &str| TokenizerError::NoChatTemplate {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    };
    match config.get("chat_template") {
        Some(serde_json::Value::String(s)) => Ok(s.clone()),
        Some(serde_json::Value::Array(list)) => list
            .iter()
            .find(|t| t.get("name").and_then(|n| n.as_str()) == Some("default"))
            .and_then(|t| t.get("template"))
            .and_then(|t| t.as_str())
            .map(str::to_string)
            .ok_or_else(|| missing("`chat_template` list has no `default` entry")),
        Some(_) => Err(missing("`chat_template` is neither a string nor a list")),
        None => Err(missing(
            "no `chat_template` key and no chat_template.jinja beside it",
        )),
    }
}

/// Special-token strings, written either as `"<|im_end|>"` or as `{"content": "<|im_end|>"}`.
fn special_tokens(config: &serde_json::Value) -> BTreeMap<&'static str, String> {
    SPECIAL_TOKEN_KEYS
        .iter()
        .filter_map(|&key| {
            let v = config.get(key)?;
            let s = v
                .as_str()
                .or_else(|| v.get("content").and_then(|c| c.as_str()))?;
            Some((key, s.to_string()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(src: &str, messages: &[ChatMessage]) -> Result<String, TokenizerError> {
        ChatTemplate::new(src.to_string(), Path::new("inline"))?
            .render(messages, &RenderOptions::default())
    }

    #[test]
    fn python_string_methods_and_slicing() {
        let msgs = [ChatMessage::new("user", "\n<a>x</a>\n")];
        let src = "{{ messages[0].content.strip('\\n').startswith('<a>') }}|\
                   {{ messages[0].content.split('</a>')[0].lstrip('\\n') }}|\
                   {{ 'abc'[::-1] }}";
        // Booleans print as Python does (`True`), another jinja2 match.
        assert_eq!(render(src, &msgs).unwrap(), "True|<a>x|cba");
    }

    #[test]
    fn trim_and_lstrip_blocks() {
        let src = "  {% if true %}\nA\n  {% endif %}\nB\n";
        // lstrip_blocks removes the indent before a block tag, trim_blocks the newline after
        // it, and the template's single trailing newline is dropped as in jinja2.
        assert_eq!(render(src, &[]).unwrap(), "A\nB");
    }

    #[test]
    fn raise_exception_is_a_render_error() {
        let err = render("{{ raise_exception('bad roles') }}", &[]).unwrap_err();
        assert!(matches!(err, TokenizerError::TemplateRender { .. }));
        assert!(format!("{err:#}").contains("bad roles") || err.to_string().contains("bad roles"));
    }

    #[test]
    fn syntax_error_names_origin() {
        let err = ChatTemplate::new("{% if %}".into(), Path::new("x/tpl.jinja")).unwrap_err();
        assert!(matches!(err, TokenizerError::TemplateSyntax { .. }));
        assert!(err.to_string().contains("x/tpl.jinja"));
    }

    #[test]
    fn config_template_forms() {
        let p = Path::new("cfg.json");
        let s = serde_json::json!({"chat_template": "T"});
        assert_eq!(template_from_config(&s, p).unwrap(), "T");
        let l = serde_json::json!({"chat_template": [{"name": "tool_use", "template": "U"},
                                                     {"name": "default", "template": "D"}]});
        assert_eq!(template_from_config(&l, p).unwrap(), "D");
        let none = serde_json::json!({});
        assert!(matches!(
            template_from_config(&none, p),
            Err(TokenizerError::NoChatTemplate { .. })
        ));
    }

    #[test]
    fn special_token_forms() {
        let c = serde_json::json!({"eos_token": "<e>", "bos_token": null,
                                   "pad_token": {"content": "<p>"}});
        let t = special_tokens(&c);
        assert_eq!(t.get("eos_token").map(String::as_str), Some("<e>"));
        assert_eq!(t.get("pad_token").map(String::as_str), Some("<p>"));
        assert!(!t.contains_key("bos_token"));
    }
}
