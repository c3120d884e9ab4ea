//! Generated ids in, [`Event`]s out: text split into reasoning and content, stop strings,
//! log-probabilities, and the counts of the final [`Finish`].
//!
//! `<think>` and `</think>` are single ids in Qwen3, so the reasoning span is found by id, not by
//! scanning text: at each tag the detokenizer and the stop matcher are flushed and the channel
//! switches. A prompt that ends inside an open `<think>` (templates that open it for the model,
//! as Qwen3-2507's thinking models do) starts in the reasoning channel. Content right after
//! `</think>` starts at its first non-blank character (the template puts a blank line there,
//! and drops it again when the answer is rendered back into a conversation).

use crate::logprob::token_logprob;
use crate::stop::{StopMatcher, StopScan};
use crate::{Channel, Event, Finish, GenerateError, Settings, StopCause, TextCodec, Usage};
use nano_infer_qwen3::{Generation, StopReason};
use nano_infer_tokenizer::StreamDecoder;
use std::ops::ControlFlow;

/// Whether `prompt` leaves a `<think>` open (its last `<think>` comes after its last
/// `</think>`): the answer then starts in the reasoning.
pub(crate) fn ends_inside_think(prompt: &[u32], (open, close): (u32, u32)) -> bool {
    let last = |tag: u32| prompt.iter().rposition(|&id| id == tag);
    match (last(open), last(close)) {
        (Some(o), Some(c)) => o > c,
        (Some(_), None) => true,
        _ => false,
    }
}

/// The text-level state of one generation.
#[derive(Debug)]
pub(crate) struct Assembler<'t> {
    codec: Option<&'t TextCodec>,
    decoder: Option<StreamDecoder<'t>>,
    think: Option<(u32, u32)>,
    channel: Channel,
    stop: StopMatcher,
    /// After `</think>`, blanks are dropped until the content's first character.
    trim_content_start: bool,
    logprobs: Option<usize>,
    stop_ids: Vec<u32>,
    ignore_eos: bool,
    content: String,
    reasoning: Option<String>,
    reasoning_tokens: usize,
    all_logprobs: Vec<crate::TokenLogprob>,
    stopped_by: Option<String>,
    /// `<tool_call>` and `</tool_call>` ids, when tools may be called.
    tool_tags: Option<(u32, u32)>,
    /// The text of an open `<tool_call>` block, held until it closes.
    open_call: Option<String>,
    tool_calls: Vec<crate::ToolCall>,
}

impl<'t> Assembler<'t> {
    /// `tool_calls`: tools were offered, so `<tool_call>` blocks are read as calls.
    pub fn new(
        codec: Option<&'t TextCodec>,
        settings: &Settings,
        stop_ids: &[u32],
        prompt: &[u32],
        tool_calls: bool,
    ) -> Self {
        let tool_tags = codec.filter(|_| tool_calls).and_then(|c| {
            let t = c.tokenizer();
            Some((t.token_id("<tool_call>")?, t.token_id("</tool_call>")?))
        });
        let think = codec
            .and_then(TextCodec::think_ids)
            .filter(|_| settings.split_reasoning);
        let open_in_prompt = think.is_some_and(|tags| ends_inside_think(prompt, tags));
        Self {
            codec,
            decoder: codec.map(|c| StreamDecoder::new(c.tokenizer(), true)),
            think,
            channel: if open_in_prompt {
                Channel::Reasoning
            } else {
                Channel::Content
            },
            stop: StopMatcher::new(&settings.stop),
            trim_content_start: false,
            logprobs: settings.logprobs,
            stop_ids: stop_ids.to_vec(),
            ignore_eos: settings.ignore_eos,
            content: String::new(),
            reasoning: open_in_prompt.then(String::new),
            reasoning_tokens: 0,
            all_logprobs: Vec::new(),
            stopped_by: None,
            tool_tags,
            open_call: None,
            tool_calls: Vec::new(),
        }
    }

    /// Takes one generated token and the logits it was sampled from. `Break` when the text
    /// reached a stop string: the generation must end there.
    pub fn token(
        &mut self,
        id: u32,
        logits: &[f32],
        emit: &mut dyn FnMut(Event),
    ) -> Result<ControlFlow<()>, GenerateError> {
        let logprob = self
            .logprobs
            .map(|top| token_logprob(self.codec, logits, id, top));
        if let Some(lp) = &logprob {
            self.all_logprobs.push(lp.clone());
        }
        emit(Event::Token { id, logprob });
        if !self.ignore_eos && self.stop_ids.contains(&id) {
            // The end of the answer, not part of its text.
            return Ok(ControlFlow::Continue(()));
        }
        match self.think {
            Some((open, _)) if id == open => {
                let flow = self.flush(emit)?;
                self.channel = Channel::Reasoning;
                self.reasoning.get_or_insert_with(String::new);
                self.reasoning_tokens += 1;
                return Ok(flow);
            }
            Some((_, close)) if id == close => {
                let flow = self.flush(emit)?;
                if self.channel == Channel::Reasoning {
                    self.reasoning_tokens += 1;
                }
                self.channel = Channel::Content;
                self.trim_content_start = true;
                return Ok(flow);
            }
            _ => {}
        }
        if self.channel == Channel::Reasoning {
            self.reasoning_tokens += 1;
        }
        match self.tool_tags {
            Some((open, _)) if id == open && self.channel == Channel::Content => {
                let flow = self.flush(emit)?;
                self.open_call = Some(String::new());
                return Ok(flow);
            }
            Some((_, close)) if id == close && self.open_call.is_some() => {
                let pending = match &mut self.decoder {
                    Some(decoder) => decoder.finish()?,
                    None => String::new(),
                };
                let mut text = self.open_call.take().unwrap_or_default();
                text.push_str(&pending);
                match crate::tools::parse_call(&text) {
                    Some(call) => {
                        emit(Event::ToolCall {
                            index: self.tool_calls.len(),
                            call: call.clone(),
                        });
                        self.tool_calls.push(call);
                        // The template puts a newline between calls and around text.
                        self.trim_content_start = true;
                        return Ok(ControlFlow::Continue(()));
                    }
                    // Not a call: the block goes to the content as the model wrote it.
                    None => return Ok(self.text(&format!("<tool_call>{text}</tool_call>"), emit)),
                }
            }
            _ => {}
        }
        let piece = match &mut self.decoder {
            Some(decoder) => decoder.step(id)?,
            None => None,
        };
        match (piece, &mut self.open_call) {
            (Some(piece), Some(call)) => {
                call.push_str(&piece);
                Ok(ControlFlow::Continue(()))
            }
            (Some(piece), None) => Ok(self.text(&piece, emit)),
            (None, _) => Ok(ControlFlow::Continue(())),
        }
    }

    /// Ends the text: releases what the detokenizer and the stop matcher hold, and builds the
    /// final record from the token-level outcome.
    pub fn finish(
        mut self,
        generation: &Generation,
        prompt_tokens: usize,
        seed: u64,
        emit: &mut dyn FnMut(Event),
    ) -> Result<Finish, GenerateError> {
        if let Some(mut open) = self.open_call.take() {
            // A call the answer never closed is text, not a call.
            if let Some(decoder) = &mut self.decoder {
                open.push_str(&decoder.finish()?);
            }
            let _ = self.text(&format!("<tool_call>{open}"), emit);
        }
        if self.stopped_by.is_none() {
            // A stop string completed by the held bytes sets `stopped_by` itself.
            let _ = self.flush(emit)?;
        }
        let cause = match (&self.stopped_by, generation.stop_reason) {
            (Some(stop), _) => StopCause::StopString(stop.clone()),
            (None, StopReason::Stop) => {
                StopCause::Eos(generation.ids.last().copied().unwrap_or_default())
            }
            (None, StopReason::Length) => StopCause::MaxTokens,
            (None, StopReason::ContextFull) => StopCause::ContextFull,
            (None, StopReason::Cancelled) => StopCause::Cancelled,
        };
        Ok(Finish {
            cause,
            usage: Usage {
                prompt_tokens,
                cached_tokens: generation.cached_tokens,
                completion_tokens: generation.ids.len(),
                reasoning_tokens: self.reasoning_tokens,
            },
            seed,
            ids: generation.ids.clone(),
            content: self.content,
            reasoning: self.reasoning,
            logprobs: self.logprobs.map(|_| self.all_logprobs),
            prefill_time: generation.prefill_time,
            decode_time: generation.decode_time,
            tool_calls: self.tool_calls,
            constraint: None,
        })
    }

    /// Releases the detokenizer's and the stop matcher's held text into the current channel.
    fn flush(&mut self, emit: &mut dyn FnMut(Event)) -> Result<ControlFlow<()>, GenerateError> {
        let pending = match &mut self.decoder {
            Some(decoder) => decoder.finish()?,
            None => String::new(),
        };
        if self.text(&pending, emit).is_break() {
            return Ok(ControlFlow::Break(()));
        }
        let held = self.stop.flush();
        self.emit_text(held, emit);
        Ok(ControlFlow::Continue(()))
    }

    /// Decoded text through the stop matcher.
    fn text(&mut self, piece: &str, emit: &mut dyn FnMut(Event)) -> ControlFlow<()> {
        let piece = if self.trim_content_start && self.channel == Channel::Content {
            let trimmed = piece.trim_start();
            if !trimmed.is_empty() {
                self.trim_content_start = false;
            }
            trimmed
        } else {
            piece
        };
        if piece.is_empty() {
            return ControlFlow::Continue(());
        }
        match self.stop.push(piece) {
            StopScan::Emit(text) => {
                self.emit_text(text, emit);
                ControlFlow::Continue(())
            }
            StopScan::Stopped { before, stop } => {
                self.emit_text(before, emit);
                self.stopped_by = Some(stop);
                ControlFlow::Break(())
            }
        }
    }

    fn emit_text(&mut self, text: String, emit: &mut dyn FnMut(Event)) {
        if text.is_empty() {
            return;
        }
        match self.channel {
            Channel::Content => self.content.push_str(&text),
            Channel::Reasoning => self
                .reasoning
                .get_or_insert_with(String::new)
                .push_str(&text),
        }
        emit(Event::Text {
            channel: self.channel,
            text,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Params;
    use nano_infer_qwen3::GenerationDefaults;
    use std::path::Path;
    use std::time::Duration;

    fn codec() -> TextCodec {
        let dir =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/fixtures/bf16_fullvocab");
        TextCodec::from_dir(dir).unwrap().unwrap()
    }

    /// Feeds the encoding of `answer` after `prompt`; returns the events and the finish.
    fn assemble(
        codec: &TextCodec,
        prompt: &str,
        answer: &str,
        stop: &[&str],
    ) -> (Vec<Event>, Finish) {
        let params = Params {
            stop: stop.iter().map(|s| s.to_string()).collect(),
            ..Params::default()
        };
        let settings = params.resolve(&GenerationDefaults::fallback()).unwrap();
        let prompt = codec.tokenizer().encode(prompt).unwrap();
        let ids = codec.tokenizer().encode(answer).unwrap();
        let mut text = Assembler::new(Some(codec), &settings, &[], &prompt, true);
        let mut events = Vec::new();
        let mut fed = Vec::new();
        for &id in &ids {
            fed.push(id);
            if text
                .token(id, &[], &mut |e| events.push(e))
                .unwrap()
                .is_break()
            {
                break;
            }
        }
        let generation = Generation {
            stop_reason: if fed.len() < ids.len() {
                StopReason::Cancelled
            } else {
                StopReason::Length
            },
            ids: fed,
            prompt_tokens: prompt.len(),
            cached_tokens: 0,
            prefill_time: Duration::ZERO,
            decode_time: Duration::ZERO,
        };
        let finish = text
            .finish(&generation, prompt.len(), 1, &mut |e| events.push(e))
            .unwrap();
        (events, finish)
    }

    fn joined(events: &[Event], channel: Channel) -> String {
        events
            .iter()
            .filter_map(|e| match e {
                Event::Text { channel: c, text } if *c == channel => Some(text.as_str()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn thinking_goes_to_reasoning_and_the_answer_to_content() {
        let codec = codec();
        let answer = "<think>\nLet me see 🤔.\n</think>\n\nParis, 巴黎.";
        let (events, finish) = assemble(&codec, "Q", answer, &[]);
        assert_eq!(joined(&events, Channel::Reasoning), "\nLet me see 🤔.\n");
        assert_eq!(finish.reasoning.as_deref(), Some("\nLet me see 🤔.\n"));
        assert_eq!(joined(&events, Channel::Content), "Paris, 巴黎.");
        assert_eq!(finish.content, "Paris, 巴黎.");
        // Reasoning tokens: the tags and everything between them.
        let think: Vec<u32> = codec
            .tokenizer()
            .encode("<think>\nLet me see 🤔.\n</think>")
            .unwrap();
        assert_eq!(finish.usage.reasoning_tokens, think.len());
        assert_eq!(
            finish.usage.completion_tokens,
            codec.tokenizer().encode(answer).unwrap().len()
        );
        // Without thinking there is no reasoning at all.
        let (_, plain) = assemble(&codec, "Q", "Paris.", &[]);
        assert_eq!((plain.reasoning, plain.usage.reasoning_tokens), (None, 0));
    }

    #[test]
    fn a_prompt_that_opens_think_starts_in_reasoning() {
        let codec = codec();
        let (events, finish) = assemble(
            &codec,
            "<|im_start|>assistant\n<think>\n",
            "Hmm.</think>\n\nYes.",
            &[],
        );
        assert_eq!(joined(&events, Channel::Reasoning), "Hmm.");
        assert_eq!(finish.content, "Yes.");
        // A closed think block in the prompt (thinking off) leaves the answer in content.
        let (_, finish) = assemble(&codec, "<think>\n\n</think>\n\n", "Yes.", &[]);
        assert_eq!((finish.content.as_str(), finish.reasoning), ("Yes.", None));
    }

    #[test]
    fn tool_call_blocks_become_calls_and_broken_ones_stay_text() {
        let codec = codec();
        let answer = "Let me check both.\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Oslo\"}}\n</tool_call>\n\
                      <tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Rome\", \"unit\": \"celsius\"}}\n</tool_call>\n\
                      <tool_call>\n{\"name\": \"broken\", \"arguments\": {\n</tool_call> Done.";
        let (events, finish) = assemble(&codec, "Q", answer, &[]);
        let names: Vec<(&str, &str)> = finish
            .tool_calls
            .iter()
            .map(|c| (c.name.as_str(), c.arguments.as_str()))
            .collect();
        assert_eq!(
            names,
            [
                ("get_weather", r#"{"city":"Oslo"}"#),
                ("get_weather", r#"{"city":"Rome","unit":"celsius"}"#)
            ]
        );
        let indices: Vec<usize> = events
            .iter()
            .filter_map(|e| match e {
                Event::ToolCall { index, .. } => Some(*index),
                _ => None,
            })
            .collect();
        assert_eq!(indices, [0, 1]);
        // The text around the calls, and the block that is not a call, stay content.
        assert_eq!(
            finish.content,
            "Let me check both.\n<tool_call>\n{\"name\": \"broken\", \"arguments\": {\n</tool_call> Done."
        );
        assert_eq!(joined(&events, Channel::Content), finish.content);
        // Without tools offered, the same text is all content.
        let settings = Params::default()
            .resolve(&GenerationDefaults::fallback())
            .unwrap();
        let mut plain = Assembler::new(Some(&codec), &settings, &[], &[], false);
        for id in codec.tokenizer().encode(answer).unwrap() {
            let _ = plain.token(id, &[], &mut |_| {}).unwrap();
        }
        let generation = Generation {
            stop_reason: StopReason::Length,
            ids: Vec::new(),
            prompt_tokens: 0,
            cached_tokens: 0,
            prefill_time: Duration::ZERO,
            decode_time: Duration::ZERO,
        };
        let finish = plain.finish(&generation, 0, 1, &mut |_| {}).unwrap();
        assert!(finish.tool_calls.is_empty());
        assert_eq!(finish.content, answer);
    }

    #[test]
    fn an_unclosed_call_is_content() {
        let codec = codec();
        let answer = "<tool_call>\n{\"name\": \"f\", \"argu";
        let (_, finish) = assemble(&codec, "Q", answer, &[]);
        assert!(finish.tool_calls.is_empty());
        assert_eq!(finish.content, answer);
    }

    #[test]
    fn stop_strings_cut_the_text_across_tokens_in_either_channel() {
        let codec = codec();
        let answer = "<think>\nLet me see 🤔.\n</think>\n\nParis, 巴黎. More text.";
        let (events, finish) = assemble(&codec, "Q", answer, &["巴黎"]);
        assert_eq!(finish.content, "Paris, ");
        assert_eq!(finish.cause, StopCause::StopString("巴黎".into()));
        assert!(!joined(&events, Channel::Content).contains('巴'));
        let (_, finish) = assemble(&codec, "Q", answer, &["see 🤔"]);
        assert_eq!(finish.reasoning.as_deref(), Some("\nLet me "));
        assert_eq!(finish.content, "");
    }
}
