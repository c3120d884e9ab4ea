//! The constraint over the genuine Qwen3 vocabulary: masks allow exactly the continuations of
//! the grammar, stop ids only at a complete output, and bad grammars are refused at compile.

use std::sync::OnceLock;

use nano_infer_constrain::{ConstraintError, Grammar, Vocabulary};
use nano_infer_tokenizer::Tokenizer;

const QWEN3_DIR: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../testdata/qwen3-tokenizer"
);
/// Qwen3's embedding rows, and its `<|im_end|>` and `<|endoftext|>`.
const MODEL_VOCAB: usize = 151_936;
const STOPS: [u32; 2] = [151_645, 151_643];

fn tokenizer() -> &'static Tokenizer {
    static TOK: OnceLock<Tokenizer> = OnceLock::new();
    TOK.get_or_init(|| Tokenizer::from_dir(QWEN3_DIR).expect("Qwen3 tokenizer"))
}

fn vocab() -> &'static Vocabulary {
    static VOCAB: OnceLock<Vocabulary> = OnceLock::new();
    VOCAB.get_or_init(|| Vocabulary::from_tokenizer(tokenizer(), MODEL_VOCAB, &STOPS).unwrap())
}

/// Follows the grammar by always taking the allowed token with the highest `score`, as a
/// model with those fixed preferences would, until a stop id; returns the text.
fn walk(grammar: &Grammar, score: impl Fn(u32) -> u64, max: usize) -> String {
    let mut state = vocab().compile(grammar).unwrap().start();
    let mut ids = Vec::new();
    for _ in 0..max {
        let allowed = state.allowed().unwrap();
        let next = (0..MODEL_VOCAB as u32)
            .filter(|&id| allowed.allows(id))
            .max_by_key(|&id| (score(id), id))
            .unwrap();
        if STOPS.contains(&next) {
            assert!(state.is_complete());
            return tokenizer().decode(&ids, false).unwrap();
        }
        state.accept(next).unwrap();
        ids.push(next);
    }
    panic!(
        "no stop within {max} tokens: {:?}",
        tokenizer().decode(&ids, false)
    );
}

#[test]
fn a_regex_output_matches_and_ends_only_when_complete() {
    let grammar = Grammar::Regex("(yes|no), [0-9]{2,4}".into());
    let mut state = vocab().compile(&grammar).unwrap().start();
    let allowed = state.allowed().unwrap();
    assert!(
        !STOPS.iter().any(|&s| allowed.allows(s)),
        "empty output is incomplete"
    );
    let yes = tokenizer().encode("yes").unwrap();
    assert!(allowed.allows(yes[0]));
    assert!(!allowed.allows(tokenizer().encode("maybe").unwrap()[0]));
    // Two preferences: short ids first, long ids first. Both stay in the language.
    let rx = regex_lite(&["yes, ", "no, "]);
    for text in [
        walk(&grammar, |id| id as u64, 20),
        walk(&grammar, |id| u64::MAX - id as u64, 20),
    ] {
        assert!(rx(&text), "{text:?}");
    }
}

/// `(yes|no), ` then 2 to 4 digits.
fn regex_lite(prefixes: &'static [&'static str]) -> impl Fn(&str) -> bool {
    move |s: &str| {
        prefixes.iter().any(|p| {
            s.strip_prefix(p).is_some_and(|digits| {
                (2..=4).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit())
            })
        })
    }
}

#[test]
fn a_json_schema_output_parses() {
    let schema = serde_json::json!({
        "type": "object",
        "properties": {"n": {"type": "integer", "minimum": 3, "maximum": 7},
                       "tag": {"enum": ["a", "b"]}},
        "required": ["n", "tag"],
        "additionalProperties": false
    });
    let text = walk(&Grammar::JsonSchema(schema), |id| id as u64, 200);
    let value: serde_json::Value = serde_json::from_str(&text).unwrap();
    let n = value["n"].as_i64().unwrap();
    assert!((3..=7).contains(&n), "{text}");
    assert!(
        ["a", "b"].contains(&value["tag"].as_str().unwrap()),
        "{text}"
    );
}

#[test]
fn special_tokens_are_named_in_lark_and_never_spelled() {
    let grammar = Grammar::Lark("start: <tool_call> \"x\" </tool_call>".into());
    let mut state = vocab().compile(&grammar).unwrap().start();
    let call = tokenizer().token_id("<tool_call>").unwrap();
    let allowed = state.allowed().unwrap();
    assert!(allowed.allows(call));
    assert_eq!(
        allowed.count(),
        1,
        "only the single special token opens the call"
    );
    state.accept(call).unwrap();
    // A string cannot produce the special token out of pieces.
    let rx = vocab()
        .compile(&Grammar::Regex("<tool_call>".into()))
        .unwrap();
    assert!(!rx.start().allowed().unwrap().allows(call));
}

#[test]
fn invalid_grammars_are_refused_before_decoding() {
    let cases = [
        (Grammar::Regex("(unclosed".into()), "regex"),
        (Grammar::Lark("start: missing_rule".into()), "grammar"),
        (
            Grammar::JsonSchema(serde_json::json!({"type": "no-such-type"})),
            "JSON schema",
        ),
        (
            Grammar::JsonSchema(serde_json::json!({"type": "integer", "minimum": 5, "maximum": 1})),
            "JSON schema",
        ),
    ];
    for (grammar, kind) in cases {
        match vocab().compile(&grammar) {
            Err(ConstraintError::Invalid { kind: k, reason }) => {
                assert_eq!(k, kind);
                assert!(!reason.is_empty() && !reason.contains('\n'), "{reason}");
            }
            other => panic!("{grammar:?}: {other:?}"),
        }
    }
}

#[test]
fn a_vocabulary_needs_a_stop_id_inside_it() {
    let err = Vocabulary::from_tokenizer(tokenizer(), MODEL_VOCAB, &[]).unwrap_err();
    assert!(err.to_string().contains("no stop id"), "{err}");
    let err = Vocabulary::from_tokenizer(tokenizer(), 1000, &[5]).unwrap_err();
    assert!(err.to_string().contains("151669"), "{err}");
}
