//! [`TextCodec`]: the text side of a model folder: `tokenizer.json`, the chat template, and the
//! ids generation treats specially (Qwen3's `<think>`/`</think>`, end-of-turn tokens).
//!
//! It loads without the weights, so `tokenize` needs no model, and it is shared (`Arc`) by
//! every session and request of a [`crate::Generator`].

use crate::{GenerateError, Prompt};
use nano_infer_tokenizer::{ChatMessage, ChatTemplate, RenderOptions, Tokenizer, TokenizerError};
use std::path::{Path, PathBuf};

/// A tokenizer and chat template loaded from a model folder.
#[derive(Debug)]
pub struct TextCodec {
    dir: PathBuf,
    tokenizer: Tokenizer,
    /// The template, or why there is none (reported when a chat needs it).
    template: Result<ChatTemplate, String>,
    /// `<think>` and `</think>`, when the vocabulary has them as single ids.
    think: Option<(u32, u32)>,
    /// Bytes of the vocabulary's longest token: a text of `n` bytes is at least
    /// `n / max_token_bytes` tokens.
    max_token_bytes: usize,
}

impl TextCodec {
    /// Loads `dir/tokenizer.json` and the chat template beside it. `Ok(None)` when the folder has
    /// no `tokenizer.json` (a folder of weights alone still runs token ids); a tokenizer that
    /// exists but does not load is an error. A missing or broken template is not an error
    /// here: it is reported when a chat needs it.
    pub fn from_dir(dir: impl AsRef<Path>) -> Result<Option<Self>, GenerateError> {
        let dir = dir.as_ref();
        let tokenizer = match Tokenizer::from_dir(dir) {
            Ok(t) => t,
            Err(TokenizerError::Io { source, .. })
                if source.kind() == std::io::ErrorKind::NotFound =>
            {
                return Ok(None)
            }
            Err(e) => return Err(e.into()),
        };
        let template = ChatTemplate::from_dir(dir).map_err(|e| e.to_string());
        Ok(Some(Self::new(dir, tokenizer, template)))
    }

    /// A codec from parts (`dir` only labels errors).
    pub fn new(
        dir: impl Into<PathBuf>,
        tokenizer: Tokenizer,
        template: Result<ChatTemplate, String>,
    ) -> Self {
        let think = tokenizer
            .token_id("<think>")
            .zip(tokenizer.token_id("</think>"));
        let max_token_bytes = (0..tokenizer.vocab_size() as u32)
            .filter_map(|id| tokenizer.token_bytes(id))
            .map(|b| b.len())
            .max()
            .unwrap_or(1)
            .max(1);
        Self {
            dir: dir.into(),
            tokenizer,
            template,
            think,
            max_token_bytes,
        }
    }

    /// The tokenizer of `tokenizer.json`.
    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    /// The chat template, or why the model has none.
    pub fn template(&self) -> Result<&ChatTemplate, GenerateError> {
        self.template
            .as_ref()
            .map_err(|reason| GenerateError::NoChatTemplate {
                dir: self.dir.clone(),
                reason: reason.clone(),
            })
    }

    /// The ids of `<think>` and `</think>`, when the vocabulary has them.
    pub fn think_ids(&self) -> Option<(u32, u32)> {
        self.think
    }

    /// A conversation rendered by the template, ending with the assistant's turn opened.
    pub fn render(
        &self,
        messages: &[ChatMessage],
        enable_thinking: Option<bool>,
    ) -> Result<String, GenerateError> {
        self.render_with_tools(messages, &[], enable_thinking)
    }

    /// [`Self::render`] offering `tools` (OpenAI's function format) to the model.
    pub fn render_with_tools(
        &self,
        messages: &[ChatMessage],
        tools: &[serde_json::Value],
        enable_thinking: Option<bool>,
    ) -> Result<String, GenerateError> {
        for (i, m) in messages.iter().enumerate() {
            if !matches!(m.role.as_str(), "system" | "user" | "assistant" | "tool") {
                return Err(GenerateError::field(
                    format!("messages[{i}].role"),
                    format!(
                        "unknown role `{}` (expected system, user, assistant or tool)",
                        m.role
                    ),
                ));
            }
        }
        let options = RenderOptions {
            add_generation_prompt: true,
            enable_thinking,
        };
        Ok(self
            .template()?
            .render_with_tools(messages, tools, &options)?)
    }

    /// The text a prompt is tokenized from: the rendered conversation, or the raw text. `None`
    /// for token ids.
    pub fn prompt_text(&self, prompt: &Prompt) -> Result<Option<String>, GenerateError> {
        match prompt {
            Prompt::Chat {
                messages,
                enable_thinking,
                tools,
            } => self
                .render_with_tools(messages, tools, *enable_thinking)
                .map(Some),
            Prompt::Text(text) => Ok(Some(text.clone())),
            Prompt::Ids(_) => Ok(None),
        }
    }

    /// Encodes a prompt text, refusing first (without tokenizing) a text that cannot fit in
    /// `ctx` tokens even at the vocabulary's longest token.
    pub fn encode(&self, text: &str, ctx: usize) -> Result<Vec<u32>, GenerateError> {
        let min_tokens = text.len().div_ceil(self.max_token_bytes);
        if min_tokens > ctx {
            return Err(GenerateError::PromptTextTooLong {
                bytes: text.len(),
                min_tokens,
                ctx,
            });
        }
        Ok(self.tokenizer.encode(text)?)
    }

    /// Text of `ids` as the model wrote it, special tokens included.
    pub fn decode_raw(&self, ids: &[u32]) -> Result<String, GenerateError> {
        Ok(self.tokenizer.decode(ids, false)?)
    }
}
