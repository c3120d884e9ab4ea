//! The interactive chat (`-i`).
//!
//! The conversation (messages, system prompt, thinking switch) is this module's state; each
//! turn is a chat [`Request`] run on one `ChatSession`, which keeps the longest common prefix of
//! its KV and the newly rendered conversation: a turn prefills only what is new. The Qwen3
//! template drops the `<think>` part of earlier answers, so the rendered history can differ
//! from what the model generated near the end of the previous answer; the reused prefix is
//! then a little shorter, which costs a few tokens of prefill, never correctness.
//!
//! Input comes from rustyline (line editing, history; Ctrl-C clears the line, Ctrl-D quits) on
//! a terminal, and from plain stdin lines otherwise, so scripts and tests can pipe a
//! conversation in. Messages for the user (command feedback, notices) go to stderr, so stdout
//! holds only the answers.

use crate::args::{self, GenerateArgs};
use crate::load::{Bar, Loaded};
use crate::output::{Printer, ThinkStyle};
use crate::{interrupt, stats};
use anyhow::Result;
use nano_infer_generate::{
    CancelToken, ChatSession, Event, GenerateError, Params, Prompt, Request, StopCause,
};
use nano_infer_tokenizer::ChatMessage;
use rustyline::error::ReadlineError;
use rustyline::DefaultEditor;
use std::io::{BufRead, IsTerminal};
use std::process::ExitCode;
use std::time::Instant;

const HELP: &str = "\
commands:
  /clear           start a new conversation (the system prompt stays)
  /system <text>   set the system prompt (/system alone removes it)
  /think           thinking on for the next answers
  /no_think        thinking off for the next answers
  /help            this list
  /exit            quit (or Ctrl-D)
Ctrl-C stops the answer being written. End a line with \\ to continue it on the next.";

/// The conversation and the session that holds its KV cache.
struct Chat<'a> {
    loaded: &'a Loaded,
    session: ChatSession,
    params: Params,
    system: Option<String>,
    thinking: Option<bool>,
    messages: Vec<ChatMessage>,
    style: ThinkStyle,
    verbose: u8,
    cancel: CancelToken,
}

pub fn run(
    args: &GenerateArgs,
    loaded: &Loaded,
    params: Params,
    first: Option<String>,
) -> Result<ExitCode> {
    // A chat needs text: fail now rather than at the first message.
    loaded.generator.require_codec()?.template()?;
    let mut chat = Chat {
        loaded,
        session: loaded.generator.session(),
        params,
        system: args.system.clone(),
        thinking: args::thinking(args.think, args.no_think),
        messages: Vec::new(),
        style: ThinkStyle::choose(args.hide_think),
        verbose: args.engine.verbose,
        cancel: interrupt::install(),
    };
    let mut input = Input::new()?;
    if input.is_terminal() {
        note!(
            "chatting with {} — /help for commands, Ctrl-D to quit",
            loaded.generator.model().dir().display()
        );
    }
    let mut pending = first;
    loop {
        let line = match pending.take() {
            Some(line) => line,
            None => match input.read()? {
                Some(line) => line,
                None => break,
            },
        };
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        if line.starts_with('/') && !chat.command(line) {
            break;
        }
        if !line.starts_with('/') {
            match chat.turn(line) {
                Ok(()) => {}
                // Nobody reads the answers any more: stop.
                Err(e) if crate::error::is_broken_pipe(&e) => return Err(e),
                // A failed turn (a template error, say) ends that turn, not the chat.
                Err(e) => note!("error: {}", crate::error::message(&e)),
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

impl Chat<'_> {
    /// Runs a `/command`; false means quit.
    fn command(&mut self, line: &str) -> bool {
        let (name, rest) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
        let rest = rest.trim();
        match name {
            "/exit" | "/quit" => return false,
            "/help" | "/?" => note!("{HELP}"),
            "/clear" => {
                self.messages.clear();
                note!("[new conversation]");
            }
            "/system" => {
                self.system = (!rest.is_empty()).then(|| rest.to_string());
                note!(
                    "[system prompt {}]",
                    if rest.is_empty() { "removed" } else { "set" }
                );
            }
            "/think" => {
                self.thinking = Some(true);
                note!("[thinking on]");
            }
            "/no_think" => {
                self.thinking = Some(false);
                note!("[thinking off]");
            }
            _ => note!("unknown command {name}; /help lists them"),
        }
        true
    }

    /// One user message and the model's answer.
    fn turn(&mut self, text: &str) -> Result<()> {
        let start = Instant::now();
        let mut messages = Vec::with_capacity(self.messages.len() + 2);
        if let Some(system) = &self.system {
            messages.push(ChatMessage::new("system", system.as_str()));
        }
        messages.extend(self.messages.iter().cloned());
        messages.push(ChatMessage::new("user", text));
        let request = Request {
            prompt: Prompt::Chat {
                messages,
                enable_thinking: self.thinking,
                tools: Vec::new(),
            },
            params: self.params.clone(),
        };
        let ctx = self.loaded.generator.model().ctx_size();
        let prepared = match self.loaded.generator.prepare(&request) {
            Ok(p) => p,
            Err(GenerateError::PromptTooLong { tokens, .. }) => {
                note!(
                    "[context full: the conversation needs {tokens} tokens but the context holds {ctx}; \
                     /clear starts a new one, or restart with a larger --ctx-size]"
                );
                return Ok(());
            }
            Err(e) => return Err(args::flag_error(e)),
        };
        if self.verbose >= 2 {
            stats::print_prepared(&prepared, self.verbose);
        }

        self.cancel.reset();
        let mut printer = Printer::new(self.style, true);
        let mut bar = Bar::new("prefill", "tokens");
        let mut print_error = None;
        let cancel = &self.cancel;
        let finish = self.session.generate(&prepared, cancel, |event| {
            if let Event::Prefill { done, total } = event {
                bar.set(done as u64, total as u64, "");
                return;
            }
            bar.finish();
            if print_error.is_none() {
                if let Err(e) = printer.event(&event) {
                    print_error = Some(e);
                    cancel.cancel();
                }
            }
        })?;
        bar.finish();
        if printer.finish()? {
            outln!()?;
        }
        if let Some(e) = print_error {
            return Err(e);
        }

        // The answer goes into the history even when cut short, so the next turn sees what
        // the user saw; as the model wrote it (thinking included: the template drops it).
        let codec = self.loaded.generator.require_codec()?;
        let answer = codec.tokenizer().decode(finish.answer_ids(), true)?;
        self.messages.push(ChatMessage::new("user", text));
        self.messages.push(ChatMessage::new("assistant", answer));
        if self.verbose > 0 {
            stats::print_generation(&finish, self.session.session(), start.elapsed());
        }
        match finish.cause {
            StopCause::Cancelled => note!("[answer stopped]"),
            StopCause::ContextFull => note!(
                "[context full ({ctx} tokens): the answer was cut; /clear starts a new conversation, \
                 or restart with a larger --ctx-size]"
            ),
            StopCause::MaxTokens => note!(
                "[answer cut at {} tokens; -l sets the limit]",
                prepared.settings.max_tokens
            ),
            StopCause::Eos(_) | StopCause::StopString(_) => {}
        }
        Ok(())
    }
}

/// Where user lines come from.
enum Input {
    Editor(Box<DefaultEditor>),
    Plain(std::io::StdinLock<'static>),
}

impl Input {
    fn new() -> Result<Self> {
        if std::io::stdin().is_terminal() && std::io::stdout().is_terminal() {
            Ok(Input::Editor(Box::new(DefaultEditor::new()?)))
        } else {
            Ok(Input::Plain(std::io::stdin().lock()))
        }
    }

    fn is_terminal(&self) -> bool {
        matches!(self, Input::Editor(_))
    }

    /// The next message (lines ending in `\\` joined with the next), or `None` at end of input.
    fn read(&mut self) -> Result<Option<String>> {
        let mut message = String::new();
        loop {
            let prompt = if message.is_empty() { "> " } else { ". " };
            let Some(line) = self.read_line(prompt)? else {
                return Ok((!message.is_empty()).then_some(message));
            };
            match line.strip_suffix('\\') {
                Some(head) => {
                    message.push_str(head);
                    message.push('\n');
                }
                None => {
                    message.push_str(&line);
                    if let Input::Editor(editor) = self {
                        let _ = editor.add_history_entry(message.as_str());
                    }
                    return Ok(Some(message));
                }
            }
        }
    }

    fn read_line(&mut self, prompt: &str) -> Result<Option<String>> {
        match self {
            Input::Plain(stdin) => loop {
                let mut bytes = Vec::new();
                if stdin.read_until(b'\n', &mut bytes)? == 0 {
                    return Ok(None);
                }
                match String::from_utf8(bytes) {
                    Ok(line) => return Ok(Some(line.trim_end_matches(['\n', '\r']).to_string())),
                    // One bad line (a binary paste) is skipped, not the end of the chat.
                    Err(_) => note!("[skipped a line that is not valid UTF-8]"),
                }
            },
            Input::Editor(editor) => loop {
                match editor.readline(prompt) {
                    Ok(line) => return Ok(Some(line)),
                    // Ctrl-C at the prompt: drop the line, ask again.
                    Err(ReadlineError::Interrupted) => continue,
                    Err(ReadlineError::Eof) => return Ok(None),
                    Err(e) => return Err(e.into()),
                }
            },
        }
    }
}
