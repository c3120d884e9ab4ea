//! Qwen3's function-calling renderings (tools offered, assistant tool calls, tool results)
//! against transformers' `apply_chat_template(messages, tools=...)`, from
//! `testdata/fixtures/tool_chat_cases.json` (its producer is recorded in the file).

use nano_infer_tokenizer::{ChatMessage, RenderOptions};
use serde::Deserialize;

use super::common::{template, tokenizer};

const CASES: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../testdata/fixtures/tool_chat_cases.json"
);

#[derive(Debug, Deserialize)]
struct ToolCases {
    cases: Vec<ToolCase>,
}

#[derive(Debug, Deserialize)]
struct ToolCase {
    name: String,
    enable_thinking: bool,
    messages: Vec<ChatMessage>,
    tools: Vec<serde_json::Value>,
    string: String,
    input_ids: Vec<u32>,
}

#[test]
fn tool_conversations_match_transformers() {
    let text = std::fs::read_to_string(CASES).expect("read tool_chat_cases.json");
    let file: ToolCases = serde_json::from_str(&text).expect("parse tool_chat_cases.json");
    assert_eq!(file.cases.len(), 10, "5 conversations, thinking on and off");
    for case in &file.cases {
        let options = RenderOptions {
            add_generation_prompt: true,
            enable_thinking: Some(case.enable_thinking),
        };
        let rendered = template()
            .render_with_tools(&case.messages, &case.tools, &options)
            .unwrap_or_else(|e| panic!("{}: {e}", case.name));
        assert_eq!(
            rendered, case.string,
            "{} (thinking {})",
            case.name, case.enable_thinking
        );
        assert_eq!(
            tokenizer().encode(&rendered).unwrap(),
            case.input_ids,
            "{}",
            case.name
        );
    }
}

#[test]
fn tojson_is_pythons_json_dumps() {
    use nano_infer_tokenizer::ChatTemplate;
    let tpl = ChatTemplate::new(
        "{{ tools[0] | tojson }}|{{ tools[1] | tojson }}|{{ tools[0] | tojson(indent=2) }}".into(),
        std::path::Path::new("inline"),
    )
    .unwrap();
    let tools = [
        serde_json::json!({"z": [1, 2.5, {}], "a": "<é\n'&>", "e": []}),
        serde_json::json!("plain"),
    ];
    let out = tpl
        .render_with_tools(&[], &tools, &RenderOptions::default())
        .unwrap();
    // Python: json.dumps(v, ensure_ascii=False) and json.dumps(v, ensure_ascii=False, indent=2);
    // keys stay in the order given, nothing is HTML-escaped, non-ASCII is kept.
    assert_eq!(
        out,
        "{\"z\": [1, 2.5, {}], \"a\": \"<é\\n'&>\", \"e\": []}|\"plain\"|\
         {\n  \"z\": [\n    1,\n    2.5,\n    {}\n  ],\n  \"a\": \"<é\\n'&>\",\n  \"e\": []\n}"
    );
}
