//! Shared fixtures: the Qwen3 tokenizer and template, loaded once per test binary, and the
//! JSON fixture files as typed structs.

use std::sync::OnceLock;

use nano_infer_tokenizer::{ChatTemplate, Tokenizer};
use serde::Deserialize;

pub const QWEN3_DIR: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../testdata/qwen3-tokenizer"
);
const CASES: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../testdata/fixtures/tokenizer_cases.json"
);
const REFERENCE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../testdata/fixtures/bf16_fullvocab/reference.json"
);

/// The Qwen3 tokenizer; parsing its 11 MB JSON once keeps the suite fast.
pub fn tokenizer() -> &'static Tokenizer {
    static TOK: OnceLock<Tokenizer> = OnceLock::new();
    TOK.get_or_init(|| Tokenizer::from_dir(QWEN3_DIR).expect("load Qwen3 tokenizer"))
}

pub fn template() -> &'static ChatTemplate {
    static TPL: OnceLock<ChatTemplate> = OnceLock::new();
    TPL.get_or_init(|| ChatTemplate::from_dir(QWEN3_DIR).expect("load Qwen3 chat template"))
}

#[derive(Debug, Deserialize)]
pub struct CasesFile {
    pub vocab_size_with_added: usize,
    pub count: usize,
    pub cases: Vec<Case>,
}

#[derive(Debug, Deserialize)]
pub struct Case {
    pub index: usize,
    pub text: String,
    pub ids: Vec<u32>,
    pub tokens: Vec<String>,
    pub decoded: String,
    pub decoded_skip_special: String,
    pub roundtrip_exact: bool,
}

pub fn cases() -> &'static CasesFile {
    static CASES_FILE: OnceLock<CasesFile> = OnceLock::new();
    CASES_FILE.get_or_init(|| read_json(CASES))
}

#[derive(Debug, Deserialize)]
pub struct Reference {
    pub text_prompts: Vec<TextPrompt>,
}

#[derive(Debug, Deserialize)]
pub struct TextPrompt {
    pub text: String,
    pub raw: Variant,
    pub chat_thinking: Variant,
    pub chat_no_thinking: Variant,
}

#[derive(Debug, Deserialize)]
pub struct Variant {
    pub string: String,
    pub input_ids: Vec<u32>,
    /// 32 greedy ids from a random-weight model: gibberish, often splitting characters.
    pub greedy_ids: Vec<u32>,
    /// transformers' `decode(greedy_ids, skip_special_tokens=False)`.
    pub greedy_text: String,
}

pub fn reference() -> &'static Reference {
    static REF: OnceLock<Reference> = OnceLock::new();
    REF.get_or_init(|| read_json(REFERENCE))
}

fn read_json<T: serde::de::DeserializeOwned>(path: &str) -> T {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {path}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("parse {path}: {e}"))
}
