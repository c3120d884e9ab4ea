//! Module-name patterns of `quantization_config` lists (`ignore`, `targets`,
//! `modules_to_not_convert`).
//!
//! compressed-tensors matches a module when a target equals its name, equals its class name
//! (`Linear`), or is `re:<pattern>` and Python's `re.match(pattern, name)` succeeds (anchored at
//! the start only). The regexes real checkpoints use are small (`re:.*mlp\.gate$`,
//! `re:.*layers\.\d+\.mlp\.down_proj`), so this file implements the subset they need — literals,
//! escapes, `.`, `\d`, `\w`, the quantifiers `* + ?`, and `^`/`$` anchors — instead of pulling in
//! a regex engine. Anything else (groups, classes, alternation) is rejected when the config is
//! read, naming the pattern, so an unsupported pattern can never silently match nothing.

use crate::{QuantError, Result};

/// One entry of a target or ignore list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModulePattern {
    source: String,
    kind: Kind,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Kind {
    /// A module name, or the class name `Linear` (which every layer loaded here is).
    Name(String),
    /// `re:` pattern, compiled.
    Regex {
        pieces: Vec<Piece>,
        anchored_end: bool,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Atom {
    Lit(char),
    Any,
    Digit,
    Word,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Piece {
    atom: Atom,
    min: usize,
    /// `usize::MAX` for `*` and `+`.
    max: usize,
}

impl ModulePattern {
    /// Parses a list entry; `field` names the config list for errors.
    pub fn parse(field: &str, source: &str) -> Result<Self> {
        let kind = match source.strip_prefix("re:") {
            None => Kind::Name(source.to_owned()),
            Some(re) => compile(re).map_err(|why| {
                QuantError::config(field, format!("pattern `{source}`: {why} (supported: literals, `.`, `\\d`, `\\w`, escapes, `* + ?`, `^`, `$`)"))
            })?,
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
            Kind::Regex {
                pieces,
                anchored_end,
            } => {
                let text: Vec<char> = name.chars().collect();
                match_here(pieces, &text, *anchored_end)
            }
        }
    }
}

fn compile(re: &str) -> std::result::Result<Kind, String> {
    let mut chars = re.chars().peekable();
    let mut pieces: Vec<Piece> = Vec::new();
    let mut anchored_end = false;
    if chars.peek() == Some(&'^') {
        chars.next();
    }
    while let Some(c) = chars.next() {
        if anchored_end {
            return Err("`$` is only supported at the end".into());
        }
        let atom = match c {
            '.' => Atom::Any,
            '\\' => match chars.next() {
                Some('d') => Atom::Digit,
                Some('w') => Atom::Word,
                Some(e) if !e.is_ascii_alphanumeric() => Atom::Lit(e),
                Some(e) => return Err(format!("escape `\\{e}` is not supported")),
                None => return Err("trailing `\\`".into()),
            },
            '$' => {
                anchored_end = true;
                continue;
            }
            '*' | '+' | '?' => {
                let last = pieces.last_mut().filter(|p| p.min == 1 && p.max == 1);
                let Some(last) = last else {
                    return Err(format!("`{c}` does not follow a single atom"));
                };
                (last.min, last.max) = match c {
                    '*' => (0, usize::MAX),
                    '+' => (1, usize::MAX),
                    _ => (0, 1),
                };
                continue;
            }
            '(' | ')' | '[' | ']' | '{' | '}' | '|' | '^' => {
                return Err(format!("`{c}` is not supported"))
            }
            lit => Atom::Lit(lit),
        };
        pieces.push(Piece {
            atom,
            min: 1,
            max: 1,
        });
    }
    Ok(Kind::Regex {
        pieces,
        anchored_end,
    })
}

fn atom_matches(atom: Atom, c: char) -> bool {
    match atom {
        Atom::Lit(l) => l == c,
        Atom::Any => c != '\n',
        Atom::Digit => c.is_ascii_digit(),
        Atom::Word => c.is_alphanumeric() || c == '_',
    }
}

/// Backtracking match of `pieces` at the start of `text` (greedy, like Python's `re.match`).
/// Module names are short, so the worst case of nested stars does not matter.
fn match_here(pieces: &[Piece], text: &[char], anchored_end: bool) -> bool {
    let Some((piece, rest)) = pieces.split_first() else {
        return !anchored_end || text.is_empty();
    };
    let run = text
        .iter()
        .take(piece.max)
        .take_while(|&&c| atom_matches(piece.atom, c))
        .count();
    (piece.min..=run)
        .rev()
        .any(|n| match_here(rest, &text[n..], anchored_end))
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
        assert!(ModulePattern::parse("ignore", "re:.*(gate|up)_proj").is_err());
    }
}
