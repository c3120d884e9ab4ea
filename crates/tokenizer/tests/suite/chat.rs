//! `ChatTemplate` with the genuine Qwen3 template.

use nano_infer_tokenizer::{ChatMessage, ChatTemplate, RenderOptions, TokenizerError};

use super::common::{reference, template, tokenizer, QWEN3_DIR};

fn gen(enable_thinking: Option<bool>) -> RenderOptions {
    RenderOptions {
        add_generation_prompt: true,
        enable_thinking,
    }
}

#[test]
fn single_turn_matches_transformers() {
    let (tpl, tok) = (template(), tokenizer());
    for p in &reference().text_prompts {
        let msgs = [ChatMessage::new("user", &p.text)];
        let thinking = tpl.render(&msgs, &gen(Some(true))).unwrap();
        assert_eq!(thinking, p.chat_thinking.string);
        assert_eq!(tok.encode(&thinking).unwrap(), p.chat_thinking.input_ids);
        // Undefined `enable_thinking` is the template's default: thinking on.
        assert_eq!(
            tpl.render(&msgs, &gen(None)).unwrap(),
            p.chat_thinking.string
        );
        let plain = tpl.render(&msgs, &gen(Some(false))).unwrap();
        assert_eq!(plain, p.chat_no_thinking.string);
        assert_eq!(tok.encode(&plain).unwrap(), p.chat_no_thinking.input_ids);
        assert_eq!(tok.encode(&p.raw.string).unwrap(), p.raw.input_ids);
    }
}

#[test]
fn multi_turn_drops_earlier_thinking() {
    let msgs = [
        ChatMessage::new("user", "What is 2+2?"),
        ChatMessage::new("assistant", "<think>\nadd them\n</think>\n\n4"),
        ChatMessage::new("user", "And 3+3?"),
    ];
    // Reading the Qwen3 template: the reversed scan sets `ns.last_query_index` to 2, the last
    // user turn. The assistant turn (index 1) has no `reasoning_content`, so its content is
    // split at `</think>`: `content` = "4" (after `lstrip('\n')`). Since 1 is not after the last
    // query, the template prints `<|im_start|>assistant\n` + content, without the think block.
    let expected = "<|im_start|>user\nWhat is 2+2?<|im_end|>\n\
                    <|im_start|>assistant\n4<|im_end|>\n\
                    <|im_start|>user\nAnd 3+3?<|im_end|>\n\
                    <|im_start|>assistant\n";
    assert_eq!(template().render(&msgs, &gen(None)).unwrap(), expected);
}

#[test]
fn system_message_and_final_assistant_keep_reasoning() {
    let msgs = [
        ChatMessage::new("system", "You are terse."),
        ChatMessage::new("user", "Hi"),
        ChatMessage {
            role: "assistant".into(),
            content: "Hello!".into(),
            reasoning_content: Some("\ngreet back\n".into()),
            ..ChatMessage::default()
        },
    ];
    // The system turn is printed first (`messages[0].role == 'system'`). The assistant turn
    // (index 2) comes after the last query (index 1) and is `loop.last`, so it is printed with
    // its reasoning in a think block, `strip('\n')`-ed; no generation prompt follows.
    let expected = "<|im_start|>system\nYou are terse.<|im_end|>\n\
                    <|im_start|>user\nHi<|im_end|>\n\
                    <|im_start|>assistant\n<think>\ngreet back\n</think>\n\nHello!<|im_end|>\n";
    let opts = RenderOptions {
        add_generation_prompt: false,
        enable_thinking: None,
    };
    assert_eq!(template().render(&msgs, &opts).unwrap(), expected);
}

#[test]
fn system_message_with_thinking_off() {
    let msgs = [
        ChatMessage::new("system", "S"),
        ChatMessage::new("user", "U"),
    ];
    let expected = "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nU<|im_end|>\n\
                    <|im_start|>assistant\n<think>\n\n</think>\n\n";
    assert_eq!(
        template().render(&msgs, &gen(Some(false))).unwrap(),
        expected
    );
}

#[test]
fn tool_response_is_wrapped_in_a_user_turn() {
    let msgs = [
        ChatMessage::new("user", "q"),
        ChatMessage::new("assistant", "calling"),
        ChatMessage::new("tool", "result"),
    ];
    // `tool` turns open `<|im_start|>user` when the previous turn is not a tool and close it
    // when the next is not; `messages[loop.index0 - 1]` exercises indexing into the list.
    let expected = "<|im_start|>user\nq<|im_end|>\n<|im_start|>assistant\ncalling<|im_end|>\n\
                    <|im_start|>user\n<tool_response>\nresult\n</tool_response><|im_end|>\n";
    let opts = RenderOptions::default();
    assert_eq!(template().render(&msgs, &opts).unwrap(), expected);
}

#[test]
fn chat_message_json_lines() {
    let m: ChatMessage = serde_json::from_str(r#"{"role":"user","content":"hi"}"#).unwrap();
    assert_eq!(m, ChatMessage::new("user", "hi"));
    let back = serde_json::to_string(&m).unwrap();
    assert_eq!(back, r#"{"role":"user","content":"hi"}"#);
    let r: ChatMessage =
        serde_json::from_str(r#"{"role":"assistant","content":"a","reasoning_content":"r"}"#)
            .unwrap();
    assert_eq!(r.reasoning_content.as_deref(), Some("r"));
}

#[test]
fn chat_template_jinja_wins_over_config() {
    let dir = std::env::temp_dir().join(format!("nano-infer-tpl-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(
        format!("{QWEN3_DIR}/tokenizer_config.json"),
        dir.join("tokenizer_config.json"),
    )
    .unwrap();
    std::fs::write(
        dir.join("chat_template.jinja"),
        "{% for m in messages %}[{{ m.role }}]{{ m.content }}{% endfor %}{{ eos_token }}\n",
    )
    .unwrap();
    let tpl = ChatTemplate::from_dir(&dir);
    std::fs::remove_dir_all(&dir).ok();
    let out = tpl
        .unwrap()
        .render(&[ChatMessage::new("user", "x")], &RenderOptions::default())
        .unwrap();
    // `eos_token` still comes from the config beside the `.jinja` file.
    assert_eq!(out, "[user]x<|im_end|>");
}

#[test]
fn missing_config_names_the_path() {
    let err = ChatTemplate::from_dir("/no/such/model").unwrap_err();
    assert!(matches!(err, TokenizerError::Io { .. }), "{err:?}");
    assert!(err
        .to_string()
        .contains("/no/such/model/tokenizer_config.json"));
}

/// A template with nested `range(10000)` loops (10⁸ iterations, gigabytes of output) stops at
/// the instruction budget with its own error, quickly.
#[test]
fn runaway_template_loops_hit_the_budget() {
    let src = "{% for i in range(10000) %}{% for j in range(10000) %}{{ i }}-{{ j }} {% endfor %}{% endfor %}";
    let tpl = ChatTemplate::new(src.to_string(), std::path::Path::new("runaway.jinja")).unwrap();
    let start = std::time::Instant::now();
    let err = tpl
        .render(&[ChatMessage::new("user", "hi")], &gen(None))
        .unwrap_err();
    assert!(
        matches!(err, TokenizerError::TemplateBudget { fuel } if fuel == nano_infer_tokenizer::TEMPLATE_FUEL),
        "{err:?}"
    );
    assert!(err.to_string().contains("instructions"), "{err}");
    assert!(start.elapsed() < std::time::Duration::from_secs(20));
}

/// The budget is far above what the genuine Qwen3 template needs: a 2,000-message conversation
/// renders within it.
#[test]
fn long_conversations_fit_the_budget() {
    let msgs: Vec<ChatMessage> = (0..2000)
        .map(|i| {
            let role = if i % 2 == 0 { "user" } else { "assistant" };
            ChatMessage::new(role, format!("message {i}"))
        })
        .collect();
    let text = template().render(&msgs, &gen(Some(false))).unwrap();
    assert!(text.contains("message 1999"));
}
