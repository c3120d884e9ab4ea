#![doc = include_str!("../README.md")]
#![warn(missing_docs)]
#![forbid(unsafe_code)]

use std::fmt;
use std::sync::Arc;

use llguidance::api::TopLevelGrammar;
use llguidance::toktrie::{SimpleVob, TokEnv, TokRxInfo, TokTrie, TokenId, TokenizerEnv};
use llguidance::{Matcher, ParserFactory, TokenParser};
use nano_infer_tokenizer::Tokenizer;

/// Why a constraint could not be built or followed.
#[derive(Debug, thiserror::Error)]
pub enum ConstraintError {
    /// The schema, regex or grammar is not valid (or uses what llguidance does not support).
    #[error("invalid {kind}: {reason}")]
    Invalid {
        /// `JSON schema`, `regex` or `grammar`.
        kind: &'static str,
        /// llguidance's message, on one line.
        reason: String,
    },
    /// The vocabulary cannot serve as a constraint alphabet.
    #[error("constrained decoding: {0}")]
    Vocabulary(String),
    /// Following the constraint failed mid-generation (an internal limit of the parser, or a
    /// token it did not allow).
    #[error("constrained decoding stopped: {0}")]
    Step(String),
}

/// What the output must match.
#[derive(Clone, Debug, PartialEq)]
pub enum Grammar {
    /// A JSON value valid against this JSON schema (llguidance's supported subset; anything
    /// else is refused when compiled, never silently ignored).
    JsonSchema(serde_json::Value),
    /// Any JSON object (OpenAI's `response_format: {"type": "json_object"}`).
    JsonObject,
    /// A whole-output match of this regular expression (Rust `regex` syntax).
    Regex(String),
    /// A grammar in llguidance's Lark syntax.
    Lark(String),
}

impl Grammar {
    fn kind(&self) -> &'static str {
        match self {
            Grammar::JsonSchema(_) | Grammar::JsonObject => "JSON schema",
            Grammar::Regex(_) => "regex",
            Grammar::Lark(_) => "grammar",
        }
    }

    fn to_llguidance(&self) -> TopLevelGrammar {
        match self {
            Grammar::JsonSchema(schema) => TopLevelGrammar::from_json_schema(fixed_layout(schema)),
            Grammar::JsonObject => TopLevelGrammar::from_json_schema(fixed_layout(
                &serde_json::json!({"type": "object"}),
            )),
            Grammar::Regex(rx) => TopLevelGrammar::from_regex(rx),
            Grammar::Lark(lark) => TopLevelGrammar::from_lark(lark.clone()),
        }
    }
}

/// The schema with llguidance's JSON layout fixed to `json.dumps`'s (`", "` and `": "`, no
/// other whitespace) unless it sets its own `x-guidance` options. llguidance's default allows
/// any whitespace between items, and a model that likes whitespace (a random-weight one does)
/// then spends its whole budget on it and never closes the object: constrained output must be
/// valid whatever the model prefers. [`Grammar::JsonSchema`] applies it itself; a schema
/// inlined in a Lark grammar (`%json {...}`) needs it applied by whoever writes the grammar.
pub fn fixed_layout(schema: &serde_json::Value) -> serde_json::Value {
    let mut schema = schema.clone();
    if let Some(map) = schema.as_object_mut() {
        map.entry("x-guidance").or_insert_with(|| {
            serde_json::json!({
                "whitespace_flexible": false,
                "item_separator": ", ",
                "key_separator": ": ",
            })
        });
    }
    schema
}

/// A model's vocabulary as llguidance sees it: every id's bytes in a token trie, and the ids
/// that end an answer. Building it walks the whole vocabulary (tens of milliseconds for
/// Qwen3's 151k tokens), so build it once per model and share it.
#[derive(Clone)]
pub struct Vocabulary {
    factory: Arc<ParserFactory>,
    stop_ids: Vec<u32>,
    size: usize,
}

impl fmt::Debug for Vocabulary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Vocabulary")
            .field("size", &self.size)
            .field("stop_ids", &self.stop_ids)
            .finish_non_exhaustive()
    }
}

/// One token's bytes, and whether it is a special token (matched only as a whole, by name).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenBytes {
    /// What the token decodes to (for a special token, its name, e.g. `<tool_call>`).
    pub bytes: Vec<u8>,
    /// Added tokens written `<...>`: a grammar names them (`<tool_call>` in Lark); strings and
    /// regexes never produce them.
    pub special: bool,
}

impl Vocabulary {
    /// The vocabulary of `tokenizer`, padded to `model_vocab` ids (the logits' length; Qwen3's
    /// embedding has 267 rows past the tokenizer, never to be produced). `stop_ids` end an
    /// answer: the constraint allows them exactly where the output is complete.
    pub fn from_tokenizer(
        tokenizer: &Tokenizer,
        model_vocab: usize,
        stop_ids: &[u32],
    ) -> Result<Self, ConstraintError> {
        let known = tokenizer.vocab_size();
        if known > model_vocab {
            return Err(ConstraintError::Vocabulary(format!(
                "the tokenizer has {known} ids but the model only {model_vocab}"
            )));
        }
        let tokens = (0..known as u32)
            .map(|id| {
                let bytes = tokenizer.token_bytes(id).unwrap_or_default();
                let special = tokenizer.is_added(id)
                    && bytes.first() == Some(&b'<')
                    && bytes.last() == Some(&b'>');
                TokenBytes { bytes, special }
            })
            .collect();
        Self::new(tokens, model_vocab, stop_ids)
    }

    /// A vocabulary from each id's bytes, padded with unreachable placeholders to `size`.
    pub fn new(
        mut tokens: Vec<TokenBytes>,
        size: usize,
        stop_ids: &[u32],
    ) -> Result<Self, ConstraintError> {
        let Some(&eos) = stop_ids.first() else {
            return Err(ConstraintError::Vocabulary(
                "no stop id: a constrained answer could never end".into(),
            ));
        };
        if let Some(&bad) = stop_ids.iter().find(|&&id| id as usize >= size) {
            return Err(ConstraintError::Vocabulary(format!(
                "stop id {bad} is outside the vocabulary of {size}"
            )));
        }
        while tokens.len() < size {
            // Placeholders can only be named (`<[id]>`), never spelled, so never allowed.
            let name = format!("<[{}]>", tokens.len()).into_bytes();
            tokens.push(TokenBytes {
                bytes: name,
                special: true,
            });
        }
        let words: Vec<Vec<u8>> = tokens
            .into_iter()
            .map(|t| {
                if t.special {
                    let mut b = Vec::with_capacity(t.bytes.len() + 1);
                    b.push(TokTrie::SPECIAL_TOKEN_MARKER);
                    b.extend_from_slice(&t.bytes);
                    b
                } else {
                    t.bytes
                }
            })
            .collect();
        let info = TokRxInfo::new(size as u32, eos);
        let trie = TokTrie::from(&info, &words).with_eos_tokens(stop_ids);
        let env: TokEnv = Arc::new(TrieEnv { trie });
        let mut factory = ParserFactory::new_simple(&env)
            .map_err(|e| ConstraintError::Vocabulary(one_line(&e)))?;
        // Errors come back to us as values; llguidance's own logging would print to stderr.
        factory.quiet();
        Ok(Self {
            factory: Arc::new(factory),
            stop_ids: stop_ids.to_vec(),
            size,
        })
    }

    /// Number of ids (the length of a mask).
    pub fn size(&self) -> usize {
        self.size
    }

    /// The ids that end an answer.
    pub fn stop_ids(&self) -> &[u32] {
        &self.stop_ids
    }

    /// Checks and compiles `grammar`; an invalid schema, regex or grammar is an error here,
    /// before any token is generated.
    pub fn compile(&self, grammar: &Grammar) -> Result<CompiledGrammar, ConstraintError> {
        let parser = self
            .factory
            .create_parser(grammar.to_llguidance())
            .map_err(|e| ConstraintError::Invalid {
                kind: grammar.kind(),
                reason: one_line(&e),
            })?;
        Ok(CompiledGrammar {
            source: grammar.clone(),
            parser,
        })
    }
}

/// A checked grammar, ready to start any number of generations.
pub struct CompiledGrammar {
    source: Grammar,
    parser: TokenParser,
}

impl CompiledGrammar {
    /// What it was compiled from.
    pub fn source(&self) -> &Grammar {
        &self.source
    }

    /// A fresh state at the start of an output.
    pub fn start(&self) -> ConstraintState {
        ConstraintState {
            matcher: Matcher::new(Ok(self.parser.deep_clone())),
        }
    }
}

impl Clone for CompiledGrammar {
    fn clone(&self) -> Self {
        Self {
            source: self.source.clone(),
            parser: self.parser.deep_clone(),
        }
    }
}

impl PartialEq for CompiledGrammar {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
    }
}

impl fmt::Debug for CompiledGrammar {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CompiledGrammar")
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

/// Where one output stands in its grammar.
pub struct ConstraintState {
    matcher: Matcher,
}

impl fmt::Debug for ConstraintState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConstraintState")
            .field("stopped", &self.matcher.is_stopped())
            .finish_non_exhaustive()
    }
}

impl ConstraintState {
    /// The tokens that may come next: the stop ids only where the output is complete.
    pub fn allowed(&mut self) -> Result<TokenMask, ConstraintError> {
        let mask = self.matcher.compute_mask_or_eos().map_err(step_error)?;
        if mask.is_zero() {
            return Err(ConstraintError::Step(
                "no token can continue the output".into(),
            ));
        }
        Ok(TokenMask(mask))
    }

    /// Moves past `id`, which must have been allowed.
    pub fn accept(&mut self, id: u32) -> Result<(), ConstraintError> {
        self.matcher
            .consume_token(id as TokenId)
            .map_err(step_error)
    }

    /// Whether the output so far is complete (a stop id would be allowed now).
    pub fn is_complete(&mut self) -> bool {
        self.matcher.is_stopped() || self.matcher.is_accepting().unwrap_or(false)
    }
}

/// A set of token ids, one bit each (bit `id % 32` of word `id / 32`).
#[derive(Clone, Debug)]
pub struct TokenMask(SimpleVob);

impl TokenMask {
    /// Whether `id` is in the set.
    pub fn allows(&self, id: u32) -> bool {
        (id as usize) < self.0.len() && self.0.is_allowed(id as TokenId)
    }

    /// The words of the bit set.
    pub fn words(&self) -> &[u32] {
        self.0.as_slice()
    }

    /// Number of ids in the set.
    pub fn count(&self) -> usize {
        self.0.num_set()
    }
}

/// llguidance's tokenizer interface over our trie. Grammars only need the trie; the byte
/// tokenization below serves llguidance's forced-token path, which we do not use, so the
/// trie's greedy split is enough (no BPE merge rules needed).
struct TrieEnv {
    trie: TokTrie,
}

impl TokenizerEnv for TrieEnv {
    fn tok_trie(&self) -> &TokTrie {
        &self.trie
    }

    fn tokenize_bytes(&self, s: &[u8]) -> Vec<TokenId> {
        self.trie.greedy_tokenize(s)
    }
}

fn step_error(e: impl fmt::Display) -> ConstraintError {
    ConstraintError::Step(one_line(&e))
}

/// llguidance's messages can span lines (a schema excerpt, a caret); our errors are one line.
fn one_line(e: &dyn fmt::Display) -> String {
    e.to_string()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}
