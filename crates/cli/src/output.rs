//! Streaming generated tokens to stdout as text, with the thinking part styled.
//!
//! Text goes through [`StreamDecoder`] (whole UTF-8 characters only) and stdout is flushed after
//! every piece, so an answer appears token by token. Special tokens (`<|im_end|>`) are not
//! printed. `<think>` and `</think>` are single ids in Qwen3, so the thinking span is found by id,
//! not by scanning text: at each tag the decoder is flushed and the style switches. On a terminal
//! the span is dim (ANSI SGR 2); piped, it is printed as the model wrote it; `--hide-think` drops
//! it with the tags and the blank line after `</think>`.
//!
//! Without a tokenizer (`--ids` on a bare model folder) the ids themselves are printed.

use anyhow::Result;
use nano_infer_tokenizer::{StreamDecoder, Tokenizer};
use std::io::{IsTerminal, Stdout, Write};

const DIM: &str = "\x1b[2m";
const RESET: &str = "\x1b[0m";

/// How the thinking span is shown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ThinkStyle {
    /// Printed with the tags, dim.
    Dim,
    /// Printed with the tags, unstyled (stdout is not a terminal).
    Plain,
    /// Not printed at all.
    Hide,
}

impl ThinkStyle {
    /// `--hide-think` wins; otherwise dim only when stdout is a terminal, so files and pipes
    /// never get escape codes.
    pub fn choose(hide: bool) -> Self {
        if hide {
            ThinkStyle::Hide
        } else if std::io::stdout().is_terminal() {
            ThinkStyle::Dim
        } else {
            ThinkStyle::Plain
        }
    }
}

/// Prints one answer as its ids arrive, to stdout or (in tests) any writer.
#[derive(Debug)]
pub struct TextStream<'t, W: Write = Stdout> {
    out: W,
    decoder: Option<StreamDecoder<'t>>,
    /// Ids of `<think>` and `</think>`, when the tokenizer has them.
    think_tags: Option<(u32, u32)>,
    style: ThinkStyle,
    in_think: bool,
    /// After a hidden `</think>`, whitespace is dropped until the answer's first character.
    skip_whitespace: bool,
    /// Whether anything was printed, and whether it ended with a newline.
    printed: bool,
    ends_with_newline: bool,
}

impl<'t> TextStream<'t, Stdout> {
    pub fn new(tokenizer: Option<&'t Tokenizer>, style: ThinkStyle) -> Self {
        Self::with_writer(std::io::stdout(), tokenizer, style)
    }
}

impl<'t, W: Write> TextStream<'t, W> {
    pub fn with_writer(out: W, tokenizer: Option<&'t Tokenizer>, style: ThinkStyle) -> Self {
        let think_tags =
            tokenizer.and_then(|t| Some((t.token_id("<think>")?, t.token_id("</think>")?)));
        Self {
            out,
            decoder: tokenizer.map(|t| StreamDecoder::new(t, true)),
            think_tags,
            style,
            in_think: false,
            skip_whitespace: false,
            printed: false,
            ends_with_newline: false,
        }
    }

    /// Prints what `id` completes.
    pub fn push(&mut self, id: u32) -> Result<()> {
        let Some(decoder) = &mut self.decoder else {
            let sep = if self.printed { " " } else { "" };
            return self.write(&format!("{sep}{id}"));
        };
        match self.think_tags {
            Some((open, _)) if id == open => {
                let pending = decoder.finish()?;
                self.text(&pending)?;
                self.in_think = true;
                match self.style {
                    ThinkStyle::Dim => self.write(&format!("{DIM}<think>")),
                    ThinkStyle::Plain => self.write("<think>"),
                    ThinkStyle::Hide => Ok(()),
                }
            }
            Some((_, close)) if id == close => {
                let pending = decoder.finish()?;
                self.text(&pending)?;
                self.in_think = false;
                match self.style {
                    ThinkStyle::Dim => self.write(&format!("</think>{RESET}")),
                    ThinkStyle::Plain => self.write("</think>"),
                    ThinkStyle::Hide => {
                        self.skip_whitespace = true;
                        Ok(())
                    }
                }
            }
            _ => match decoder.step(id)? {
                Some(piece) => self.text(&piece),
                None => Ok(()),
            },
        }
    }

    /// Flushes held-back bytes and closes an open dim span. Returns whether anything was printed
    /// and did not end with a newline (the caller then ends the line).
    pub fn finish(&mut self) -> Result<bool> {
        if let Some(decoder) = &mut self.decoder {
            let pending = decoder.finish()?;
            self.text(&pending)?;
        }
        if self.in_think && self.style == ThinkStyle::Dim {
            self.write(RESET)?;
        }
        self.in_think = false;
        Ok(self.printed && !self.ends_with_newline)
    }

    fn text(&mut self, piece: &str) -> Result<()> {
        if self.in_think && self.style == ThinkStyle::Hide {
            return Ok(());
        }
        let piece = if self.skip_whitespace {
            piece.trim_start()
        } else {
            piece
        };
        if piece.is_empty() {
            return Ok(());
        }
        self.skip_whitespace = false;
        self.write(piece)
    }

    fn write(&mut self, s: &str) -> Result<()> {
        if s.is_empty() {
            return Ok(());
        }
        self.out.write_all(s.as_bytes())?;
        self.out.flush()?;
        self.printed = true;
        self.ends_with_newline = s.ends_with('\n') || (s == RESET && self.ends_with_newline);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn tokenizer() -> Tokenizer {
        let dir =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/fixtures/bf16_fullvocab");
        Tokenizer::from_dir(dir).unwrap()
    }

    /// Streams the encoding of `text` (plus `<|im_end|>`) and returns what was printed.
    fn stream(tok: &Tokenizer, text: &str, style: ThinkStyle) -> String {
        let mut ids = tok.encode(text).unwrap();
        ids.push(tok.token_id("<|im_end|>").unwrap());
        let mut out = Vec::new();
        let mut s = TextStream::with_writer(&mut out, Some(tok), style);
        for id in ids {
            s.push(id).unwrap();
        }
        s.finish().unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn thinking_is_dim_plain_or_hidden() {
        let tok = tokenizer();
        let text = "<think>\nLet me see 🤔.\n</think>\n\nParis, 巴黎.";
        assert_eq!(stream(&tok, text, ThinkStyle::Plain), text);
        assert_eq!(stream(&tok, text, ThinkStyle::Hide), "Paris, 巴黎.");
        assert_eq!(
            stream(&tok, text, ThinkStyle::Dim),
            "\x1b[2m<think>\nLet me see 🤔.\n</think>\x1b[0m\n\nParis, 巴黎."
        );
    }

    #[test]
    fn unfinished_thinking_resets_the_colour() {
        let tok = tokenizer();
        assert_eq!(
            stream(&tok, "<think>hmm", ThinkStyle::Dim),
            "\x1b[2m<think>hmm\x1b[0m"
        );
        assert_eq!(stream(&tok, "<think>hmm", ThinkStyle::Hide), "");
    }

    #[test]
    fn without_a_tokenizer_ids_are_printed() {
        let mut out = Vec::new();
        let mut s = TextStream::with_writer(&mut out, None, ThinkStyle::Plain);
        for id in [5, 17, 3] {
            s.push(id).unwrap();
        }
        assert!(s.finish().unwrap());
        assert_eq!(String::from_utf8(out).unwrap(), "5 17 3");
    }
}
