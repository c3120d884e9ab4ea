//! Printing a generation's events as they arrive: the answer on stdout, the thinking styled.
//!
//! The library splits the text into reasoning and content; this module only chooses how each
//! looks. On a terminal the reasoning is dim (ANSI SGR 2) between `<think>` and `</think>`;
//! piped, it is printed as the model wrote it; `--hide-think` drops it. stdout is flushed after
//! every piece, so an answer appears token by token. Without a tokenizer (`--ids` on a bare
//! model folder) the ids themselves are printed.

use anyhow::Result;
use nano_infer_generate::{Channel, Event};
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

/// Prints one answer's events, to stdout or (in tests) any writer.
#[derive(Debug)]
pub struct Printer<W: Write = Stdout> {
    out: W,
    style: ThinkStyle,
    /// Print token ids instead of text (no tokenizer).
    ids: bool,
    channel: Channel,
    printed: bool,
    ends_with_newline: bool,
}

impl Printer<Stdout> {
    pub fn new(style: ThinkStyle, has_tokenizer: bool) -> Self {
        Self::with_writer(std::io::stdout(), style, has_tokenizer)
    }
}

impl<W: Write> Printer<W> {
    pub fn with_writer(out: W, style: ThinkStyle, has_tokenizer: bool) -> Self {
        Self {
            out,
            style,
            ids: !has_tokenizer,
            channel: Channel::Content,
            printed: false,
            ends_with_newline: false,
        }
    }

    /// Prints what `event` adds to the answer.
    pub fn event(&mut self, event: &Event) -> Result<()> {
        match event {
            Event::Token { id, .. } if self.ids => {
                let sep = if self.printed { " " } else { "" };
                self.write(&format!("{sep}{id}"))
            }
            Event::Text { channel, text } => {
                self.switch(*channel)?;
                if *channel == Channel::Reasoning && self.style == ThinkStyle::Hide {
                    return Ok(());
                }
                self.write(text)
            }
            _ => Ok(()),
        }
    }

    /// Closes an open thinking span. Returns whether anything was printed and did not end with
    /// a newline (the caller then ends the line).
    pub fn finish(&mut self) -> Result<bool> {
        if self.channel == Channel::Reasoning {
            self.close_think(false)?;
        }
        Ok(self.printed && !self.ends_with_newline)
    }

    fn switch(&mut self, to: Channel) -> Result<()> {
        if to == self.channel {
            return Ok(());
        }
        self.channel = to;
        match to {
            Channel::Reasoning => match self.style {
                ThinkStyle::Dim => self.write(&format!("{DIM}<think>")),
                ThinkStyle::Plain => self.write("<think>"),
                ThinkStyle::Hide => Ok(()),
            },
            Channel::Content => self.close_think(true),
        }
    }

    /// Ends the thinking span; `answer_follows` adds the blank line Qwen3 puts before its answer.
    fn close_think(&mut self, answer_follows: bool) -> Result<()> {
        self.channel = Channel::Content;
        let gap = if answer_follows { "\n\n" } else { "" };
        match self.style {
            ThinkStyle::Dim => self.write(&format!("</think>{RESET}{gap}")),
            ThinkStyle::Plain => self.write(&format!("</think>{gap}")),
            ThinkStyle::Hide => Ok(()),
        }
    }

    fn write(&mut self, s: &str) -> Result<()> {
        if s.is_empty() {
            return Ok(());
        }
        self.out.write_all(s.as_bytes())?;
        self.out.flush()?;
        self.printed = true;
        self.ends_with_newline = s.ends_with('\n');
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(channel: Channel, text: &str) -> Event {
        Event::Text {
            channel,
            text: text.to_string(),
        }
    }

    fn print(events: &[Event], style: ThinkStyle) -> String {
        let mut out = Vec::new();
        let mut p = Printer::with_writer(&mut out, style, true);
        for e in events {
            p.event(e).unwrap();
        }
        p.finish().unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn thinking_is_dim_plain_or_hidden() {
        let events = [
            text(Channel::Reasoning, "\nLet me see 🤔.\n"),
            text(Channel::Content, "Paris, 巴黎."),
        ];
        assert_eq!(
            print(&events, ThinkStyle::Plain),
            "<think>\nLet me see 🤔.\n</think>\n\nParis, 巴黎."
        );
        assert_eq!(print(&events, ThinkStyle::Hide), "Paris, 巴黎.");
        assert_eq!(
            print(&events, ThinkStyle::Dim),
            "\x1b[2m<think>\nLet me see 🤔.\n</think>\x1b[0m\n\nParis, 巴黎."
        );
    }

    #[test]
    fn unfinished_thinking_resets_the_colour() {
        let events = [text(Channel::Reasoning, "hmm")];
        assert_eq!(
            print(&events, ThinkStyle::Dim),
            "\x1b[2m<think>hmm</think>\x1b[0m"
        );
        assert_eq!(print(&events, ThinkStyle::Hide), "");
    }

    #[test]
    fn without_a_tokenizer_ids_are_printed() {
        let mut out = Vec::new();
        let mut p = Printer::with_writer(&mut out, ThinkStyle::Plain, false);
        for id in [5, 17, 3] {
            p.event(&Event::Token { id, logprob: None }).unwrap();
        }
        assert!(p.finish().unwrap());
        assert_eq!(String::from_utf8(out).unwrap(), "5 17 3");
    }
}
