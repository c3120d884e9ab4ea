//! The interactive chat (`-i`).
//!
//! Each turn renders the whole conversation through the chat template and hands all of its ids
//! to `generate`, which keeps the session's longest common prefix: a turn prefills only what is
//! new. The Qwen3 template drops the `<think>` part of earlier answers, so the rendered history
//! can differ from what the model generated near the end of the previous answer; the reused
//! prefix is then a little shorter, which costs a few tokens of prefill, never correctness.
//!
//! Input comes from rustyline (line editing, history; Ctrl-C clears the line, Ctrl-D quits) on
//! a terminal, and from plain stdin lines otherwise, so scripts and tests can pipe a
//! conversation in. Messages for the user (command feedback, notices) go to stderr, so stdout
//! holds only the answers.

use crate::args::{self, GenerateArgs};
use crate::interrupt::Interrupt;
use crate::load::Loaded;
use crate::output::{TextStream, ThinkStyle};
use crate::{run, stats};
use anyhow::Result;
use nano_infer_qwen3::{generate, GenerateOptions, Sampler, Session, StopReason};
use nano_infer_tokenizer::{ChatMessage, ChatTemplate, RenderOptions, Tokenizer};
use rustyline::error::ReadlineError;
use rustyline::DefaultEditor;
use std::io::{BufRead, IsTerminal};
use std::ops::ControlFlow;
use std::process::ExitCode;

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
    tokenizer: &'a Tokenizer,
    template: &'a ChatTemplate,
    session: Session<'a>,
    sampler: Sampler,
    options: &'a GenerateOptions,
    system: Option<String>,
    thinking: Option<bool>,
    messages: Vec<ChatMessage>,
    style: ThinkStyle,
    verbose: bool,
    interrupt: Interrupt,
}

pub fn run(
    args: &GenerateArgs,
    loaded: &Loaded,
    sampler: Sampler,
    options: &GenerateOptions,
    first: Option<String>,
) -> Result<ExitCode> {
    let mut chat = Chat {
        loaded,
        tokenizer: loaded.tokenizer()?,
        template: loaded.template()?,
        session: loaded.model.session(),
        sampler,
        options,
        system: args.system.clone(),
        thinking: args::thinking(args.think, args.no_think),
        messages: Vec::new(),
        style: ThinkStyle::choose(args.hide_think),
        verbose: args.engine.verbose,
        interrupt: Interrupt::install(),
    };
    let mut input = Input::new()?;
    if input.is_terminal() {
        note!(
            "chatting with {} — /help for commands, Ctrl-D to quit",
            loaded.model.dir().display()
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
        self.messages.push(ChatMessage::new("user", text));
        let ids = match self.render() {
            Ok(ids) => ids,
            Err(e) => {
                self.messages.pop();
                return Err(e);
            }
        };
        let ctx = self.loaded.model.ctx_size();
        if ids.len() >= ctx {
            self.messages.pop();
            note!(
                "[context full: the conversation needs {} tokens but the context holds {ctx}; \
                 /clear starts a new one, or restart with a larger --ctx-size]",
                ids.len()
            );
            return Ok(());
        }
        let reused = self
            .session
            .tokens()
            .iter()
            .zip(&ids)
            .take_while(|(a, b)| a == b)
            .count()
            .min(ids.len() - 1);

        self.interrupt.clear();
        let mut stream = TextStream::new(Some(self.tokenizer), self.style);
        let mut print_error = None;
        let interrupt = &self.interrupt;
        let generation = generate(
            &mut self.session,
            &ids,
            &mut self.sampler,
            self.options,
            |id| {
                if let Err(e) = stream.push(id) {
                    print_error = Some(e);
                    return ControlFlow::Break(());
                }
                if interrupt.is_set() {
                    ControlFlow::Break(())
                } else {
                    ControlFlow::Continue(())
                }
            },
        )?;
        if stream.finish()? {
            outln!()?;
        }
        if let Some(e) = print_error {
            return Err(e);
        }

        // The answer goes into the history even when cut short, so the next turn sees what
        // the user saw.
        let answer = run::answer_ids(&generation.ids, generation.stop_reason);
        let answer = self.tokenizer.decode(answer, true)?;
        self.messages.push(ChatMessage::new("assistant", answer));
        if self.verbose {
            stats::print_generation(&generation, reused, &self.session);
        }
        match generation.stop_reason {
            StopReason::Cancelled => note!("[answer stopped]"),
            StopReason::ContextFull => note!(
                "[context full ({ctx} tokens): the answer was cut; /clear starts a new conversation, \
                 or restart with a larger --ctx-size]"
            ),
            StopReason::Length => note!("[answer cut at {} tokens; -l sets the limit]", self.options.max_new_tokens),
            StopReason::Stop => {}
        }
        Ok(())
    }

    /// The conversation so far, rendered and encoded, ending with the assistant's turn opening.
    fn render(&self) -> Result<Vec<u32>> {
        let mut messages = Vec::with_capacity(self.messages.len() + 1);
        if let Some(system) = &self.system {
            messages.push(ChatMessage::new("system", system.as_str()));
        }
        messages.extend(self.messages.iter().cloned());
        let options = RenderOptions {
            add_generation_prompt: true,
            enable_thinking: self.thinking,
        };
        let rendered = self.template.render(&messages, &options)?;
        Ok(self.tokenizer.encode(&rendered)?)
    }
}

/// Where user lines come from.
enum Input {
    Editor(Box<DefaultEditor>),
    Plain(std::io::Lines<std::io::StdinLock<'static>>),
}

impl Input {
    fn new() -> Result<Self> {
        if std::io::stdin().is_terminal() && std::io::stdout().is_terminal() {
            Ok(Input::Editor(Box::new(DefaultEditor::new()?)))
        } else {
            Ok(Input::Plain(std::io::stdin().lock().lines()))
        }
    }

    fn is_terminal(&self) -> bool {
        matches!(self, Input::Editor(_))
    }

    /// The next message (lines ending in `\` joined with the next), or `None` at end of input.
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
            Input::Plain(lines) => Ok(lines.next().transpose()?),
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
