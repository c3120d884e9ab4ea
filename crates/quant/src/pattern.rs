//! Module-name patterns of `quantization_config` lists (`ignore`, `targets`,
//! `modules_to_not_convert`).
//!
//! compressed-tensors matches a module when a target equals its name, equals its class name
//! (`Linear`), or is `re:<pattern>` and Python's `re.match(pattern, name)` succeeds: anchored at
//! the start only. The `regex` crate's syntax covers what checkpoints write (`.*`, `\d+`,
//! escapes, groups, alternation); a pattern it cannot compile is rejected when the config is
//! read, naming the pattern, so an unsupported pattern never silently matches nothing.

use crate::{QuantError, Result};
use regex::Regex;

/// One entry of a target or ignore list.
#[derive(Clone, Debug)]
pub struct ModulePattern {
    source: String,
    kind: Kind,
}

#[derive(Clone, Debug)]
enum Kind {
    /// A module name, or the class name `Linear` (which every layer loaded here is).
    Name(String),
    /// A `re:` pattern, compiled with a `^(?:...)` prefix: `re.match` semantics.
    Regex(Regex),
}

impl PartialEq for ModulePattern {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
    }
}

impl Eq for ModulePattern {}

impl ModulePattern {
    /// Parses a list entry; `field` names the config list for errors.
    pub fn parse(field: &str, source: &str) -> Result<Self> {
        let kind = match source.strip_prefix("re:") {
            None => Kind::Name(source.to_owned()),
            Some(re) => Kind::Regex(Regex::new(&format!("^(?:{re})")).map_err(|e| {
                QuantError::config(
                    field,
                    format!("pattern `{source}` is not a valid regex: {e}"),
                )
            })?),
        };
        Ok(Self {
            source: source.to_owned(),
            kind,
        })
    }

    /// The entry as written in the config.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Whether the `nn.Linear` module `name` (e.g. `model.layers.0.mlp.down_proj`) matches.
    pub fn matches_linear(&self, name: &str) -> bool {
        match &self.kind {
            Kind::Name(n) => n == name || n == "Linear",
            Kind::Regex(re) => re.is_match(name),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::ModulePattern;

    fn m(p: &str, name: &str) -> bool {
        ModulePattern::parse("ignore", p)
            .unwrap()
            .matches_linear(name)
    }

    #[test]
    fn names_classes_and_regexes() {
        assert!(m("lm_head", "lm_head"));
        assert!(!m("lm_head", "model.lm_head_x"));
        assert!(m("Linear", "model.layers.3.mlp.up_proj"));
        assert!(m("re:.*mlp\\.gate$", "model.layers.3.mlp.gate"));
        assert!(!m("re:.*mlp\\.gate$", "model.layers.3.mlp.gate_proj"));
        assert!(m("re:.*mlp\\.gate", "model.layers.3.mlp.gate_proj"));
        assert!(m(
            "re:model\\.layers\\.\\d+\\.self_attn\\..*",
            "model.layers.12.self_attn.q_proj"
        ));
        assert!(!m(
            "re:model\\.layers\\.\\d+\\.self_attn",
            "model.layers.x.self_attn.q_proj"
        ));
        assert!(m("re:^lm_head$", "lm_head"));
        // re.match anchors at the start only.
        assert!(!m("re:mlp", "model.layers.0.mlp.up_proj"));
        assert!(m("re:.*(gate|up)_proj", "model.layers.0.mlp.up_proj"));
        assert!(!m("re:.*(gate|up)_proj", "model.layers.0.mlp.down_proj"));
        assert!(ModulePattern::parse("ignore", "re:.*(gate").is_err());
    }
}
