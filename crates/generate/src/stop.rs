//! Stop strings matched on the decoded text, across token boundaries, never emitted.
//!
//! Text arrives in pieces (one per token, whole UTF-8 characters). [`StopMatcher::push`] appends
//! a piece to the text it holds back, looks for the earliest occurrence of any stop string, and
//! otherwise releases everything except the longest tail that could still grow into a stop
//! string. So no byte of a stop string is ever released, not even the start of one that a
//! later token completes, and text that turns out not to be a stop is released as soon as that
//! is certain. Cost per piece: one search of the held text (at most the longest stop string plus
//! the piece) per stop string.

/// Holds back text that may be the start of a stop string.
#[derive(Clone, Debug, Default)]
pub struct StopMatcher {
    stops: Vec<String>,
    held: String,
}

/// What [`StopMatcher::push`] decided.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StopScan {
    /// Text that is certainly not part of a stop string (may be empty).
    Emit(String),
    /// A stop string matched: `before` is the text before it, and generation should end.
    Stopped {
        /// The text before the stop string (not yet emitted).
        before: String,
        /// The stop string that matched.
        stop: String,
    },
}

impl StopMatcher {
    /// A matcher for `stops` (empty strings are ignored).
    pub fn new(stops: &[String]) -> Self {
        Self {
            stops: stops.iter().filter(|s| !s.is_empty()).cloned().collect(),
            held: String::new(),
        }
    }

    /// Feeds the next piece of text.
    pub fn push(&mut self, piece: &str) -> StopScan {
        if self.stops.is_empty() {
            return StopScan::Emit(piece.to_string());
        }
        self.held.push_str(piece);
        let earliest = self
            .stops
            .iter()
            .filter_map(|s| self.held.find(s.as_str()).map(|at| (at, s)))
            .min_by_key(|&(at, _)| at);
        if let Some((at, stop)) = earliest {
            let stop = stop.clone();
            let before = self.held[..at].to_string();
            self.held.clear();
            return StopScan::Stopped { before, stop };
        }
        let keep = self.partial_match_len();
        let cut = self.held.len() - keep;
        let out = self.held[..cut].to_string();
        self.held.drain(..cut);
        StopScan::Emit(out)
    }

    /// Releases what is held back (at the end of the text, or where a stop string cannot run on,
    /// such as a switch between reasoning and content).
    pub fn flush(&mut self) -> String {
        std::mem::take(&mut self.held)
    }

    /// Length of the longest tail of the held text that is a proper prefix of a stop string.
    fn partial_match_len(&self) -> usize {
        let longest = self.stops.iter().map(String::len).max().unwrap_or(0);
        let max = longest.saturating_sub(1).min(self.held.len());
        (1..=max)
            .rev()
            .find(|&k| {
                let start = self.held.len() - k;
                self.held.is_char_boundary(start)
                    && self
                        .stops
                        .iter()
                        .any(|s| s.starts_with(&self.held[start..]))
            })
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `pieces` through a matcher: (everything emitted, the stop that matched).
    fn run(stops: &[&str], pieces: &[&str]) -> (String, Option<String>) {
        let stops: Vec<String> = stops.iter().map(|s| s.to_string()).collect();
        let mut m = StopMatcher::new(&stops);
        let mut out = String::new();
        for piece in pieces {
            match m.push(piece) {
                StopScan::Emit(text) => out.push_str(&text),
                StopScan::Stopped { before, stop } => {
                    out.push_str(&before);
                    return (out, Some(stop));
                }
            }
        }
        out.push_str(&m.flush());
        (out, None)
    }

    /// Every way to cut `text` into two or three pieces.
    fn splits(text: &str) -> Vec<Vec<&str>> {
        let bounds: Vec<usize> = (0..=text.len())
            .filter(|&i| text.is_char_boundary(i))
            .collect();
        let mut out = Vec::new();
        for &i in &bounds {
            for &j in bounds.iter().filter(|&&j| j >= i) {
                out.push(vec![&text[..i], &text[i..j], &text[j..]]);
            }
        }
        out
    }

    #[test]
    fn a_stop_split_anywhere_is_found_and_never_emitted() {
        let text = "The answer is 42.\nUser: more? 文字";
        for pieces in splits(text) {
            let (out, stop) = run(&["\nUser:"], &pieces);
            assert_eq!(out, "The answer is 42.", "{pieces:?}");
            assert_eq!(stop.as_deref(), Some("\nUser:"));
        }
        // Multi-byte stop strings split between characters.
        for pieces in splits("前文字后") {
            let (out, stop) = run(&["文字"], &pieces);
            assert_eq!(
                (out.as_str(), stop.as_deref()),
                ("前", Some("文字")),
                "{pieces:?}"
            );
        }
    }

    #[test]
    fn a_partial_match_that_fails_is_released_in_full() {
        for pieces in splits("a\nUsb\nUse") {
            assert_eq!(
                run(&["\nUser:"], &pieces),
                ("a\nUsb\nUse".to_string(), None)
            );
        }
    }

    #[test]
    fn the_earliest_of_several_stops_wins() {
        assert_eq!(
            run(&["cd", "b"], &["abcd"]),
            ("a".to_string(), Some("b".to_string()))
        );
        // Overlapping candidates: "xaaab" holds "a", then "aa", until the "b" decides that the
        // stop starts at the second "a".
        assert_eq!(
            run(&["aab"], &["xa", "a", "ab"]),
            ("xa".to_string(), Some("aab".to_string()))
        );
    }

    #[test]
    fn held_text_is_only_what_could_still_match() {
        let stops = vec!["STOP".to_string()];
        let mut m = StopMatcher::new(&stops);
        assert_eq!(m.push("abcST"), StopScan::Emit("abc".into()));
        assert_eq!(m.push("x"), StopScan::Emit("STx".into()));
        let mut none = StopMatcher::new(&[]);
        assert_eq!(none.push("STO"), StopScan::Emit("STO".into()));
    }
}
