//! [`Picker`]: the sampler, with a request's grammar (if any) masking each choice first.
//!
//! With thinking on, the constraint applies after `</think>` (the reasoning is free text), as
//! vLLM's reasoning-aware structured output does. A random or weak model may never open the
//! think block, or never close it, so the phases are enforced rather than hoped for:
//! - `Start` (a chat with thinking on): the grammar's first tokens or `<think>`;
//! - `Reasoning`: any token but the stop ids, so the answer cannot end before `</think>`;
//! - `Grammar`: the grammar's mask, which allows the stop ids only where the output is
//!   complete.

use crate::assembler::ends_inside_think;
use crate::Prepared;
use nano_infer_constrain::{ConstraintError, ConstraintState};
use nano_infer_qwen3::{ModelError, Sampler, TokenPicker};
use std::time::{Duration, Instant};

/// What the constraint did, for the final record.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConstraintReport {
    /// Whether the output is complete by the grammar (false when `max_tokens` or the context
    /// cut it short: the text then does not parse).
    pub complete: bool,
    /// Masks computed (one per token generated under the constraint).
    pub masks: usize,
    /// Time spent computing them.
    pub mask_time: Duration,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Start,
    Reasoning,
    Grammar,
}

#[derive(Debug)]
struct Constrained {
    state: ConstraintState,
    phase: Phase,
    think: Option<(u32, u32)>,
    stop_ids: Vec<u32>,
    report: ConstraintReport,
    /// The mask handed to the sampler, reused between steps.
    words: Vec<u32>,
}

/// Picks each token of one request.
#[derive(Debug)]
pub(crate) struct Picker {
    sampler: Sampler,
    constraint: Option<Constrained>,
}

impl Picker {
    /// The picker of a prepared request: its sampler, and its grammar from the right phase.
    pub fn new(prepared: &Prepared, think: Option<(u32, u32)>, stop_ids: &[u32]) -> Self {
        let constraint = prepared.grammar.as_ref().map(|grammar| {
            let open_in_prompt = think.is_some_and(|tags| ends_inside_think(&prepared.ids, tags));
            let phase = if think.is_some() && open_in_prompt {
                Phase::Reasoning
            } else if think.is_some() && prepared.may_think {
                Phase::Start
            } else {
                Phase::Grammar
            };
            Constrained {
                state: grammar.start(),
                phase,
                think,
                stop_ids: stop_ids.to_vec(),
                report: ConstraintReport::default(),
                words: Vec::new(),
            }
        });
        Self {
            sampler: Sampler::new(prepared.settings.sampling.clone()),
            constraint,
        }
    }

    /// The constraint's record so far (`None` without one).
    pub fn report(&mut self) -> Option<ConstraintReport> {
        let c = self.constraint.as_mut()?;
        c.report.complete = c.phase == Phase::Grammar && c.state.is_complete();
        Some(c.report)
    }
}

impl TokenPicker for Picker {
    fn pick(&mut self, logits: &[f32], history: &[u32]) -> Result<u32, ModelError> {
        let Some(c) = &mut self.constraint else {
            return Ok(self.sampler.sample(logits, history));
        };
        let started = Instant::now();
        c.fill_mask(logits.len()).map_err(choice_error)?;
        c.report.mask_time += started.elapsed();
        c.report.masks += 1;
        let id = self.sampler.sample_allowed(logits, history, Some(&c.words));
        c.advance(id).map_err(choice_error)?;
        Ok(id)
    }
}

impl Constrained {
    /// Sets `words` to the tokens allowed now.
    fn fill_mask(&mut self, vocab: usize) -> Result<(), ConstraintError> {
        let n_words = vocab.div_ceil(32);
        self.words.clear();
        match self.phase {
            Phase::Reasoning => {
                self.words.resize(n_words, u32::MAX);
                for &id in &self.stop_ids {
                    clear(&mut self.words, id);
                }
            }
            Phase::Start | Phase::Grammar => {
                let mask = self.state.allowed()?;
                self.words.extend_from_slice(mask.words());
                self.words.resize(n_words, 0);
                if let (Phase::Start, Some((open, _))) = (self.phase, self.think) {
                    set(&mut self.words, open);
                }
            }
        }
        Ok(())
    }

    /// Moves the phase and the grammar past the chosen token.
    fn advance(&mut self, id: u32) -> Result<(), ConstraintError> {
        let (open, close) = self.think.unwrap_or((u32::MAX, u32::MAX));
        match self.phase {
            Phase::Start if id == open => self.phase = Phase::Reasoning,
            Phase::Reasoning => {
                if id == close {
                    self.phase = Phase::Grammar;
                }
            }
            Phase::Start | Phase::Grammar => {
                self.phase = Phase::Grammar;
                // A stop id ends the answer (the mask allowed it, so the output is complete);
                // a grammar that can go no further has already stopped and takes no more.
                if !self.stop_ids.contains(&id) {
                    self.state.accept(id)?;
                }
            }
        }
        Ok(())
    }
}

fn set(words: &mut [u32], id: u32) {
    if let Some(w) = words.get_mut(id as usize / 32) {
        *w |= 1 << (id % 32);
    }
}

fn clear(words: &mut [u32], id: u32) {
    if let Some(w) = words.get_mut(id as usize / 32) {
        *w &= !(1 << (id % 32));
    }
}

fn choice_error(e: ConstraintError) -> ModelError {
    ModelError::TokenChoice {
        reason: e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Generator, Grammar, Prompt, Request};
    use nano_infer_qwen3::LoadOptions;
    use std::path::Path;

    /// Greedy over logits that always prefer to end the answer: the phases must hold it off
    /// until the reasoning is closed and the grammar is complete.
    #[test]
    fn thinking_comes_first_and_the_grammar_after_it() {
        let dir =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/fixtures/bf16_fullvocab");
        let g = Generator::load(dir, &LoadOptions::default(), &mut |_| {}).unwrap();
        let tok = g.codec().unwrap().tokenizer();
        let id = |s: &str| tok.token_id(s).unwrap();
        let (open, close, end, ok) = (id("<think>"), id("</think>"), id("<|im_end|>"), id("ok"));
        let mut r = Request::new(Prompt::user("hi", None, None));
        r.params.temperature = Some(0.0);
        r.params.grammar = Some(Grammar::Regex("ok".into()));
        let prepared = g.prepare(&r).unwrap();
        assert!(prepared.may_think);
        let think = g.codec().unwrap().think_ids();
        let mut picker = Picker::new(&prepared, think, g.stop_ids());
        let vocab = g.model().vocab_size();
        let logits = |ranked: &[u32]| {
            let mut l = vec![0.0f32; vocab];
            for (rank, &id) in ranked.iter().enumerate() {
                l[id as usize] = 100.0 - rank as f32;
            }
            l
        };
        let prefs = [end, open, close, ok];
        // Start: the end is not allowed (nothing matches yet); `<think>` is.
        assert_eq!(picker.pick(&logits(&prefs), &[]).unwrap(), open);
        // Reasoning: anything but the end; `<think>` again is free text, `</think>` closes.
        assert_eq!(picker.pick(&logits(&[end, close]), &[]).unwrap(), close);
        assert!(!picker.report().unwrap().complete);
        // The grammar: "ok", then the end.
        assert_eq!(picker.pick(&logits(&prefs), &[]).unwrap(), ok);
        assert!(picker.report().unwrap().complete);
        assert_eq!(picker.pick(&logits(&prefs), &[]).unwrap(), end);
        assert_eq!(picker.report().unwrap().masks, 4);

        // Thinking off: the grammar applies from the first token, `<think>` is not allowed.
        r.prompt = Prompt::user("hi", None, Some(false));
        let prepared = g.prepare(&r).unwrap();
        let mut picker = Picker::new(&prepared, think, g.stop_ids());
        assert_eq!(picker.pick(&logits(&prefs), &[]).unwrap(), ok);
    }
}
