//! `StreamDecoder`: streamed pieces are whole characters and add up to the full decode.

use nano_infer_tokenizer::{StreamDecoder, Tokenizer};
use proptest::prelude::*;

use super::common::{cases, reference, tokenizer};

/// Streams `ids` through a fresh decoder; returns each step's output and the `finish` tail.
fn stream(tok: &Tokenizer, ids: &[u32], skip: bool) -> (Vec<Option<String>>, String) {
    let mut dec = StreamDecoder::new(tok, skip);
    let steps = ids.iter().map(|&id| dec.step(id).unwrap()).collect();
    (steps, dec.finish().unwrap())
}

fn concat(steps: &[Option<String>], tail: &str) -> String {
    steps
        .iter()
        .flatten()
        .map(String::as_str)
        .chain([tail])
        .collect()
}

#[test]
fn every_case_streams_to_full_decode() {
    let tok = tokenizer();
    for case in &cases().cases {
        for skip in [false, true] {
            let (steps, tail) = stream(tok, &case.ids, skip);
            let full = tok.decode(&case.ids, skip).unwrap();
            assert_eq!(
                concat(&steps, &tail),
                full,
                "case {} skip={skip}",
                case.index
            );
            // The fixture texts are valid UTF-8 throughout, so nothing waits for `finish`
            // and no piece is a half character.
            assert_eq!(tail, "", "case {}", case.index);
            for piece in steps.iter().flatten() {
                assert!(
                    !piece.contains('\u{FFFD}'),
                    "case {}: {piece:?}",
                    case.index
                );
            }
        }
    }
}

#[test]
fn split_characters_come_out_whole() {
    let tok = tokenizer();
    // Qwen3's vocabulary holds most CJK characters and common emoji whole (cases 29-31, 39 are
    // covered by `every_case_streams_to_full_decode`); these cases do split characters over
    // tokens: Devanagari, the ZWJ joiner of the family emoji, math symbols, Latin-1 letters.
    let texts = [
        "नमस्ते दुनिया",
        "👨\u{200d}👩\u{200d}👧\u{200d}👦 family emoji (ZWJ)",
        "αβγ ∑ ∫ ∞ ≠ ≤ ≥",
        "ßtraße ÆØÅ æøå Œuvre",
    ];
    for text in texts {
        let ids = tok.encode(text).unwrap();
        // A single-token decode shows the split exists: some token alone is not valid UTF-8.
        let split = ids
            .iter()
            .any(|&id| tok.decode(&[id], false).unwrap().contains('\u{FFFD}'));
        assert!(
            split,
            "{text}: no token splits a character, test proves nothing"
        );
        let (steps, tail) = stream(tok, &ids, false);
        assert!(
            steps.iter().any(Option::is_none),
            "{text}: nothing was held back"
        );
        assert_eq!(concat(&steps, &tail), text);
    }
}

#[test]
fn finish_flushes_an_incomplete_character() {
    let tok = tokenizer();
    // " ∑" is two tokens: space plus the first two bytes of the symbol, then the last byte.
    let ids = tok.encode(" ∑").unwrap();
    assert_eq!(ids.len(), 2, "{ids:?}");
    let mut dec = StreamDecoder::new(tok, false);
    assert_eq!(dec.step(ids[0]).unwrap(), None);
    // Cut short: the partial bytes come out as transformers would print them.
    assert_eq!(dec.finish().unwrap(), tok.decode(&ids[..1], false).unwrap());
    // `finish` resets, so the decoder can be reused for the next sequence.
    let pieces: String = ids.iter().filter_map(|&id| dec.step(id).unwrap()).collect();
    assert_eq!(pieces, " ∑");
}

#[test]
fn gibberish_generations_stream_to_transformers_text() {
    // Greedy outputs of a random model: invalid byte runs and U+FFFD in the middle.
    let tok = tokenizer();
    for prompt in &reference().text_prompts {
        for v in [&prompt.raw, &prompt.chat_thinking, &prompt.chat_no_thinking] {
            let (steps, tail) = stream(tok, &v.greedy_ids, false);
            assert_eq!(concat(&steps, &tail), v.greedy_text);
            assert_eq!(tok.decode(&v.greedy_ids, false).unwrap(), v.greedy_text);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Any id sequence, including ids past the vocabulary and special tokens.
    #[test]
    fn random_ids_stream_to_full_decode(
        ids in prop::collection::vec(0u32..152_000, 0..24),
        skip in any::<bool>(),
    ) {
        let tok = tokenizer();
        let (steps, tail) = stream(tok, &ids, skip);
        prop_assert_eq!(concat(&steps, &tail), tok.decode(&ids, skip).unwrap());
    }
}
