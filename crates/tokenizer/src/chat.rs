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
//! Known difference: minijinja's `tojson` escapes `<`, `>`, `&` and `'` for HTML, where
//! transformers' `tojson` does not. Qwen3 only calls it on `tools`, which [`ChatMessage`] does
//! not carry, so the rendered prompts are unaffected.

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
}

impl ChatMessage {
    /// A message with no separate reasoning content.
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        Self {
            role: role.into(),
            content: content.into(),
            reasoning_content: None,
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
