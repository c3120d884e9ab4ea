//! Qwen3's added tokens: single ids, and which of them count as special.

use super::common::tokenizer;

/// Every Qwen3 added token with its id (from `tokenizer_config.json`'s `added_tokens_decoder`)
/// and its `special` flag.
const ADDED: [(&str, u32, bool); 26] = [
    ("<|endoftext|>", 151643, true),
    ("<|im_start|>", 151644, true),
    ("<|im_end|>", 151645, true),
    ("<|object_ref_start|>", 151646, true),
    ("<|object_ref_end|>", 151647, true),
    ("<|box_start|>", 151648, true),
    ("<|box_end|>", 151649, true),
    ("<|quad_start|>", 151650, true),
    ("<|quad_end|>", 151651, true),
    ("<|vision_start|>", 151652, true),
    ("<|vision_end|>", 151653, true),
    ("<|vision_pad|>", 151654, true),
    ("<|image_pad|>", 151655, true),
    ("<|video_pad|>", 151656, true),
    ("<tool_call>", 151657, false),
    ("</tool_call>", 151658, false),
    ("<|fim_prefix|>", 151659, false),
    ("<|fim_middle|>", 151660, false),
    ("<|fim_suffix|>", 151661, false),
    ("<|fim_pad|>", 151662, false),
    ("<|repo_name|>", 151663, false),
    ("<|file_sep|>", 151664, false),
    ("<tool_response>", 151665, false),
    ("</tool_response>", 151666, false),
    ("<think>", 151667, false),
    ("</think>", 151668, false),
];

#[test]
fn added_tokens_are_single_ids() {
    let tok = tokenizer();
    for (text, id, _) in ADDED {
        assert_eq!(tok.token_id(text), Some(id), "{text}");
        assert_eq!(tok.token_str(id).as_deref(), Some(text));
        assert_eq!(tok.encode(text).unwrap(), vec![id], "{text}");
        // Also inside running text, with no space around it.
        let ids = tok.encode(&format!("a{text}b")).unwrap();
        assert!(ids.contains(&id), "{text} in text: {ids:?}");
        assert_eq!(tok.decode(&[id], false).unwrap(), text);
    }
}

#[test]
fn special_flag_matches_config() {
    let tok = tokenizer();
    for (text, id, special) in ADDED {
        assert_eq!(tok.is_special(id), special, "{text}");
        // `skip_special_tokens` drops exactly the special ones: `<think>` survives.
        let skipped = tok.decode(&[id], true).unwrap();
        assert_eq!(skipped.is_empty(), special, "{text}");
    }
    assert_eq!(tok.special_ids().len(), 14);
    assert!(!tok.is_special(9707)); // "Hello"
}

#[test]
fn out_of_range_ids_are_harmless() {
    let tok = tokenizer();
    let vocab = u32::try_from(tok.vocab_size()).unwrap();
    assert_eq!(vocab, 151669);
    assert_eq!(tok.token_str(vocab), None);
    assert_eq!(tok.token_id("definitely not a token"), None);
    // Qwen3's embedding has 151936 rows; a model may emit an id past the vocabulary, and
    // transformers decodes it to nothing rather than failing.
    assert_eq!(
        tok.decode(&[9707, 151900, u32::MAX], false).unwrap(),
        "Hello"
    );
}

/// A `tokenizer.json` whose BPE vocabulary is `vocab`, with one added special token.
fn bpe_json(vocab: &str) -> String {
    format!(
        r#"{{"version":"1.0","truncation":null,"padding":null,
        "added_tokens":[{{"id":5,"content":"<|s|>","single_word":false,"lstrip":false,"rstrip":false,"normalized":false,"special":true}}],
        "normalizer":null,"pre_tokenizer":null,"post_processor":null,"decoder":null,
        "model":{{"type":"BPE","dropout":null,"unk_token":null,"continuing_subword_prefix":null,
        "end_of_word_suffix":null,"fuse_unk":false,"byte_fallback":false,"vocab":{vocab},"merges":[]}}}}"#
    )
}

/// An empty vocabulary is a load error naming the file: it would encode every text to `[]`.
#[test]
fn empty_vocabulary_is_a_load_error() {
    use nano_infer_tokenizer::{Tokenizer, TokenizerError};
    let dir = std::env::temp_dir().join(format!("nano-infer-tok-{}-empty", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("tokenizer.json");

    std::fs::write(&path, bpe_json(r#"{"a":0,"b":1}"#)).unwrap();
    let tok = Tokenizer::from_file(&path).unwrap();
    assert_eq!(tok.encode("ab").unwrap(), [0, 1]);

    std::fs::write(&path, bpe_json("{}")).unwrap();
    let err = Tokenizer::from_file(&path).map(|_| ()).unwrap_err();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        matches!(err, TokenizerError::EmptyVocabulary { .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("tokenizer.json"), "{err}");
}

/// tokenizer.json and tokenizer_config.json that are FIFOs are reported, not waited on.
#[cfg(unix)]
#[test]
fn files_that_are_fifos_do_not_hang() {
    use nano_infer_tokenizer::{ChatTemplate, Tokenizer, TokenizerError};
    let dir = std::env::temp_dir().join(format!("nano-infer-tok-{}-fifo", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for name in ["tokenizer.json", "tokenizer_config.json"] {
        let status = std::process::Command::new("mkfifo")
            .arg(dir.join(name))
            .status()
            .expect("run mkfifo");
        assert!(status.success());
    }
    let path = dir.clone();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let tokenizer = Tokenizer::from_dir(&path).map(|_| ());
        let template = ChatTemplate::from_dir(&path).map(|_| ());
        let _ = tx.send((tokenizer, template));
    });
    let result = rx.recv_timeout(std::time::Duration::from_secs(20));
    let _ = std::fs::remove_dir_all(&dir);
    let (tokenizer, template) = result.expect("reading a FIFO hung");
    for (err, name) in [
        (tokenizer.unwrap_err(), "tokenizer.json"),
        (template.unwrap_err(), "tokenizer_config.json"),
    ] {
        assert!(matches!(err, TokenizerError::Io { .. }), "{err:?}");
        let msg = err.to_string();
        assert!(
            msg.contains(name) && msg.contains("not a regular file"),
            "{msg}"
        );
    }
}
