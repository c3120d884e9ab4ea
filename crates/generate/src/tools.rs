//! Function calling, Qwen3's way: the request's `tools` (OpenAI's function format) are
//! rendered by the model's own chat template, and the answer's
//! `<tool_call>\n{"name": …, "arguments": …}\n</tool_call>` blocks become [`ToolCall`]s.
//! `<tool_call>` and `</tool_call>` are single ids in Qwen3, so calls are found by id (see the
//! assembler), and a block whose JSON does not parse as a call stays in the content.
//!
//! `tool_choice` `required` or a named function constrain the output to exactly one call whose
//! arguments follow the function's parameter schema: a Lark grammar that names the two special
//! tokens around an inline JSON schema (see [`call_grammar`]).

use crate::GenerateError;
use nano_infer_constrain::{fixed_layout, Grammar};
use serde_json::{json, Value};
use std::hash::{BuildHasher, Hasher};

/// Which tools the model may or must call (OpenAI's `tool_choice`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum ToolChoice {
    /// The model decides (the default when tools are given).
    #[default]
    Auto,
    /// No calls: the tools are not even offered to the model.
    None,
    /// Exactly one call to one of the tools, constrained to be valid.
    Required,
    /// Exactly one call to this function, constrained to be valid.
    Function(String),
}

/// A function call the model made.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ToolCall {
    /// `call_` and 24 random characters, as OpenAI's ids look.
    pub id: String,
    /// The function's name.
    pub name: String,
    /// The arguments, a JSON object as compact text (OpenAI sends them as a string).
    pub arguments: String,
}

impl ToolCall {
    /// OpenAI's `{"id", "type": "function", "function": {"name", "arguments"}}`.
    pub fn to_json(&self) -> Value {
        json!({
            "id": self.id,
            "type": "function",
            "function": {"name": self.name, "arguments": self.arguments},
        })
    }
}

/// One offered function, checked.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct FunctionSpec {
    pub name: String,
    /// The parameter schema (an object schema; `{}` of properties when none was given).
    pub parameters: Value,
}

/// Checks `tools` (OpenAI's `[{"type": "function", "function": {name, description,
/// parameters}}]`) and returns each function's name and parameter schema; errors name the
/// field (`tools[1].function.name`).
pub(crate) fn check_tools(tools: &[Value]) -> Result<Vec<FunctionSpec>, GenerateError> {
    let mut specs: Vec<FunctionSpec> = Vec::new();
    for (i, tool) in tools.iter().enumerate() {
        let at = |field: &str| format!("tools[{i}]{field}");
        let obj = tool
            .as_object()
            .ok_or_else(|| GenerateError::field(at(""), "must be an object"))?;
        match obj.get("type").and_then(Value::as_str) {
            Some("function") => {}
            _ => {
                return Err(GenerateError::field(
                    at(".type"),
                    "must be \"function\" (the only tool type)",
                ))
            }
        }
        let function = obj
            .get("function")
            .and_then(Value::as_object)
            .ok_or_else(|| GenerateError::field(at(".function"), "must be an object"))?;
        let name = function
            .get("name")
            .and_then(Value::as_str)
            .ok_or_else(|| GenerateError::field(at(".function.name"), "must be a string"))?;
        if name.is_empty()
            || name.len() > 64
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            return Err(GenerateError::field(
                at(".function.name"),
                format!("`{name}` must be 1 to 64 letters, digits, `_` or `-` (OpenAI's rule)"),
            ));
        }
        if specs.iter().any(|s| s.name == name) {
            return Err(GenerateError::field(
                at(".function.name"),
                format!("`{name}` is offered twice"),
            ));
        }
        let parameters = match function.get("parameters") {
            None | Some(Value::Null) => {
                json!({"type": "object", "properties": {}, "additionalProperties": false})
            }
            Some(p @ Value::Object(map)) => {
                if map.get("type").is_some_and(|t| {
                    t != "object" && !t.as_array().is_some_and(|a| a.contains(&json!("object")))
                }) {
                    return Err(GenerateError::field(
                        at(".function.parameters"),
                        "must be a JSON schema of an object (arguments are an object)",
                    ));
                }
                p.clone()
            }
            Some(_) => {
                return Err(GenerateError::field(
                    at(".function.parameters"),
                    "must be a JSON schema (an object)",
                ))
            }
        };
        specs.push(FunctionSpec {
            name: name.to_string(),
            parameters,
        });
    }
    Ok(specs)
}

/// The JSON schema of one call `{"name": <name>, "arguments": <parameters>}`, names first as
/// the template's instructions show it. The parameters' `$defs` / `definitions` move to the
/// call's root, where their `#/$defs/...` references now point.
pub(crate) fn call_schema(spec: &FunctionSpec) -> Value {
    let mut parameters = spec.parameters.clone();
    let mut schema = json!({
        "type": "object",
        "properties": {"name": {"const": spec.name}},
        "required": ["name", "arguments"],
        "additionalProperties": false,
    });
    for key in ["$defs", "definitions"] {
        if let Some(defs) = parameters.as_object_mut().and_then(|p| p.remove(key)) {
            schema[key] = defs;
        }
    }
    schema["properties"]["arguments"] = parameters;
    schema
}

/// The grammar of exactly one call to one of `functions`, in Qwen3's format: the
/// `<tool_call>` token, a newline, the call's JSON, a newline, `</tool_call>`. Definitions
/// of several functions share the root; one name defined differently by two of them is an
/// error naming the second.
pub(crate) fn call_grammar(functions: &[FunctionSpec]) -> Result<Grammar, GenerateError> {
    let schema = if functions.len() == 1 {
        call_schema(&functions[0])
    } else {
        let mut root = json!({});
        let mut calls = Vec::new();
        for (i, spec) in functions.iter().enumerate() {
            let mut call = call_schema(spec);
            for key in ["$defs", "definitions"] {
                let Some(Value::Object(defs)) = call.as_object_mut().and_then(|c| c.remove(key))
                else {
                    continue;
                };
                let shared = &mut root[key];
                if shared.is_null() {
                    *shared = json!({});
                }
                for (name, def) in defs {
                    if shared.get(&name).is_some_and(|d| d != &def) {
                        return Err(GenerateError::field(
                            format!("tools[{i}].function.parameters"),
                            format!("`{key}/{name}` is defined differently by another tool"),
                        ));
                    }
                    shared[name.as_str()] = def;
                }
            }
            calls.push(call);
        }
        root["anyOf"] = Value::Array(calls);
        root
    };
    let schema = fixed_layout(&schema);
    Ok(Grammar::Lark(format!(
        "start: <tool_call> \"\\n\" call \"\\n\" </tool_call>\ncall: %json {schema}\n"
    )))
}

/// Reads the text between `<tool_call>` and `</tool_call>` as a call: a JSON object with a
/// string `name` and an object `arguments` (a JSON string holding an object is accepted too).
/// `None` when it is not one: the caller leaves the block in the content.
pub(crate) fn parse_call(text: &str) -> Option<ToolCall> {
    let value: Value = serde_json::from_str(text.trim()).ok()?;
    let obj = value.as_object()?;
    let name = obj.get("name")?.as_str()?.to_string();
    let arguments = match obj.get("arguments") {
        Some(a @ Value::Object(_)) => a.clone(),
        Some(Value::String(s)) => {
            let parsed: Value = serde_json::from_str(s).ok()?;
            parsed.is_object().then_some(parsed)?
        }
        None => json!({}),
        Some(_) => return None,
    };
    Some(ToolCall {
        id: new_call_id(),
        name,
        arguments: arguments.to_string(),
    })
}

/// `call_` and 24 random alphanumerics.
fn new_call_id() -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut id = String::from("call_");
    let mut bits = 0u64;
    for i in 0..24 {
        if i % 8 == 0 {
            // A fresh randomly keyed hasher per 8 characters (std's per-process random keys
            // plus a counter), as `draw_seed` does; ids need to be unique, not secret.
            let mut h = std::collections::hash_map::RandomState::new().build_hasher();
            h.write_u64(crate::draw_seed());
            bits = h.finish();
        }
        id.push(ALPHABET[(bits % ALPHABET.len() as u64) as usize] as char);
        bits /= ALPHABET.len() as u64;
    }
    id
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_parse_from_the_json_the_model_writes() {
        let call =
            parse_call("\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n")
                .unwrap();
        assert_eq!(call.name, "get_weather");
        assert_eq!(call.arguments, r#"{"city":"Paris"}"#);
        assert!(call.id.starts_with("call_") && call.id.len() == 29);
        // Arguments given as a string holding an object, and none at all.
        let call = parse_call(r#"{"name": "f", "arguments": "{\"a\": 1}"}"#).unwrap();
        assert_eq!(call.arguments, r#"{"a":1}"#);
        assert_eq!(parse_call(r#"{"name": "f"}"#).unwrap().arguments, "{}");
        // Not calls: broken JSON, no name, arguments of the wrong kind.
        for bad in [
            r#"{"name": "f", "arguments": {"a": 1}"#,
            r#"{"arguments": {}}"#,
            r#"{"name": 3, "arguments": {}}"#,
            r#"{"name": "f", "arguments": [1]}"#,
            r#"{"name": "f", "arguments": "not json"}"#,
            "plain words",
        ] {
            assert_eq!(parse_call(bad), None, "{bad}");
        }
        assert_ne!(new_call_id(), new_call_id());
    }

    #[test]
    fn parameter_definitions_move_to_the_call_root() {
        let tools = [
            json!({"type": "function", "function": {"name": "f", "parameters": {
            "type": "object", "properties": {"p": {"$ref": "#/$defs/point"}},
            "$defs": {"point": {"type": "object", "properties": {"x": {"type": "integer"}}}}}}}),
        ];
        let specs = check_tools(&tools).unwrap();
        let schema = call_schema(&specs[0]);
        assert_eq!(schema["$defs"]["point"]["type"], "object");
        assert!(schema["properties"]["arguments"].get("$defs").is_none());
        let clash = [
            tools[0].clone(),
            json!({"type": "function", "function": {"name": "g", "parameters": {
                "type": "object", "$defs": {"point": {"type": "string"}}}}}),
        ];
        match call_grammar(&check_tools(&clash).unwrap()) {
            Err(GenerateError::InvalidField { field, .. }) => {
                assert_eq!(field, "tools[1].function.parameters")
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn bad_tools_are_named_by_field() {
        let cases = [
            (json!([1]), "tools[0]"),
            (json!([{"type": "retrieval"}]), "tools[0].type"),
            (json!([{"type": "function"}]), "tools[0].function"),
            (
                json!([{"type": "function", "function": {"name": "a b"}}]),
                "tools[0].function.name",
            ),
            (
                json!([{"type": "function", "function": {"name": "f", "parameters": "x"}}]),
                "tools[0].function.parameters",
            ),
            (
                json!([{"type": "function", "function": {"name": "f", "parameters": {"type": "string"}}}]),
                "tools[0].function.parameters",
            ),
            (
                json!([{"type": "function", "function": {"name": "f"}},
                       {"type": "function", "function": {"name": "f"}}]),
                "tools[1].function.name",
            ),
        ];
        for (tools, field) in cases {
            match check_tools(tools.as_array().unwrap()) {
                Err(GenerateError::InvalidField { field: f, .. }) => assert_eq!(f, field),
                other => panic!("{tools}: {other:?}"),
            }
        }
    }
}
