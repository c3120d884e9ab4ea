//! The 61 encode/decode cases produced by transformers (`tokenizer_cases.json`).

use super::common::{cases, tokenizer};

#[test]
fn fixture_is_complete() {
    let file = cases();
    assert_eq!(file.count, 61);
    assert_eq!(file.cases.len(), file.count);
    assert_eq!(tokenizer().vocab_size(), file.vocab_size_with_added);
}

#[test]
fn encode_matches_transformers() {
    let tok = tokenizer();
    for case in &cases().cases {
        let ids = tok.encode(&case.text).unwrap();
        assert_eq!(ids, case.ids, "case {} {:?}", case.index, case.text);
    }
}

#[test]
fn token_strings_match() {
    let tok = tokenizer();
    for case in &cases().cases {
        let tokens: Vec<String> = case
            .ids
            .iter()
            .map(|&id| tok.token_str(id).unwrap())
            .collect();
        assert_eq!(tokens, case.tokens, "case {}", case.index);
        for (token, &id) in case.tokens.iter().zip(&case.ids) {
            assert_eq!(
                tok.token_id(token),
                Some(id),
                "case {} {token:?}",
                case.index
            );
        }
    }
}

#[test]
fn decode_matches_transformers() {
    let tok = tokenizer();
    for case in &cases().cases {
        let plain = tok.decode(&case.ids, false).unwrap();
        assert_eq!(plain, case.decoded, "case {} {:?}", case.index, case.text);
        let skipped = tok.decode(&case.ids, true).unwrap();
        assert_eq!(skipped, case.decoded_skip_special, "case {}", case.index);
        // The normalizer is NFC, so only NFC texts come back byte for byte; case 38 (a
        // combining accent) is the one that does not, and `decoded` holds its NFC form.
        if case.roundtrip_exact {
            assert_eq!(plain, case.text, "case {} round trip", case.index);
        }
    }
    assert!(cases().cases.iter().any(|c| !c.roundtrip_exact));
}
