//! [`Generator`]: a model shared through an `Arc` with its text side and defaults; it prepares
//! [`Request`]s and runs them, one conversation at a time ([`ChatSession`]) or many together
//! over the paged KV pool ([`Generator::run_batch`]).

use crate::assembler::Assembler;
use crate::{CancelToken, Event, Finish, GenerateError, Request, Settings, TextCodec};
use nano_infer_qwen3::{
    generate, BatchEngine, BatchRequest, EngineOptions, GenerateOptions, GenerateStep, Generation,
    GenerationDefaults, LoadOptions, LoadProgress, Model, PromptCacheError, Sampler, Session,
};
use std::ops::ControlFlow;
use std::path::Path;
use std::sync::Arc;

/// Prefill chunk of a [`ChatSession`]: long enough that the matmuls run at their prefill speed
/// (the panel kernels need 16+ tokens; 256 loses nothing measurable against one pass), short
/// enough that Ctrl-C or a cancelled request stops a 5,000-token prompt within a fraction of a
/// second.
pub const DEFAULT_PREFILL_CHUNK: usize = 256;

/// A loaded model, its tokenizer and template, and its `generation_config.json` defaults.
/// Cloning is cheap (the model and codec are shared), and every clone can run on its own thread.
#[derive(Clone, Debug)]
pub struct Generator {
    model: Arc<Model>,
    codec: Option<Arc<TextCodec>>,
    defaults: GenerationDefaults,
    /// The defaults' stop ids plus Qwen's end-of-turn and end-of-text tokens.
    stop_ids: Vec<u32>,
}

/// A request made ready to run: its prompt ids and checked settings.
#[derive(Clone, Debug, PartialEq)]
pub struct Prepared {
    /// The prompt's token ids, checked against the vocabulary and the context.
    pub ids: Vec<u32>,
    /// The request's settings over the model's defaults, seed drawn.
    pub settings: Settings,
    /// The text the ids were encoded from (the rendered conversation), when there was one.
    pub text: Option<String>,
}

impl Generator {
    /// Loads the model in `dir` with `options`, then its tokenizer, template and defaults.
    /// `on_progress` sees each decoder layer made ready (AWQ repacking takes seconds).
    pub fn load(
        dir: impl AsRef<Path>,
        options: &LoadOptions,
        on_progress: &mut dyn FnMut(LoadProgress),
    ) -> Result<Self, GenerateError> {
        let dir = dir.as_ref();
        let model = Model::load_with_progress(dir, options, on_progress)?;
        let codec = TextCodec::from_dir(dir)?;
        let defaults = GenerationDefaults::from_dir(dir, model.config().eos_token_id.as_ref())?;
        Ok(Self::new(Arc::new(model), codec.map(Arc::new), defaults))
    }

    /// A generator from parts.
    pub fn new(
        model: Arc<Model>,
        codec: Option<Arc<TextCodec>>,
        defaults: GenerationDefaults,
    ) -> Self {
        let mut stop_ids = defaults.stop_ids.clone();
        if let Some(codec) = &codec {
            // A checkpoint without generation_config.json would otherwise run to max_tokens.
            for name in ["<|im_end|>", "<|endoftext|>"] {
                if let Some(id) = codec.tokenizer().token_id(name) {
                    if (id as usize) < model.vocab_size() && !stop_ids.contains(&id) {
                        stop_ids.push(id);
                    }
                }
            }
        }
        Self {
            model,
            codec,
            defaults,
            stop_ids,
        }
    }

    /// The shared model.
    pub fn model(&self) -> &Arc<Model> {
        &self.model
    }

    /// The tokenizer and template, when the model folder has them.
    pub fn codec(&self) -> Option<&Arc<TextCodec>> {
        self.codec.as_ref()
    }

    /// The tokenizer and template, or an error saying a text prompt needs them.
    pub fn require_codec(&self) -> Result<&TextCodec, GenerateError> {
        self.codec
            .as_deref()
            .ok_or_else(|| GenerateError::NoTokenizer {
                dir: self.model.dir().to_path_buf(),
            })
    }

    /// What `generation_config.json` says (sampling, stop ids, length).
    pub fn defaults(&self) -> &GenerationDefaults {
        &self.defaults
    }

    /// The ids that end an answer (unless a request sets `ignore_eos`).
    pub fn stop_ids(&self) -> &[u32] {
        &self.stop_ids
    }

    /// Renders and encodes the prompt, resolves the settings over the defaults (drawing a seed
    /// when none is given) and checks the prompt against the vocabulary and the context.
    pub fn prepare(&self, request: &Request) -> Result<Prepared, GenerateError> {
        let settings = request.params.resolve(&self.defaults)?;
        let (ids, text) = match &request.prompt {
            crate::Prompt::Ids(ids) => (ids.clone(), None),
            prompt => {
                let codec = self.require_codec()?;
                let text = codec.prompt_text(prompt)?.unwrap_or_default();
                (codec.encode(&text, self.model.ctx_size())?, Some(text))
            }
        };
        self.check_prompt(&ids)?;
        Ok(Prepared {
            ids,
            settings,
            text,
        })
    }

    /// A prompt must be non-empty, in the vocabulary and within the context.
    pub fn check_prompt(&self, ids: &[u32]) -> Result<(), GenerateError> {
        let vocab_size = self.model.vocab_size();
        if ids.is_empty() {
            return Err(GenerateError::EmptyPrompt);
        }
        if let Some(&id) = ids.iter().find(|&&id| id as usize >= vocab_size) {
            return Err(GenerateError::TokenOutOfVocab { id, vocab_size });
        }
        if ids.len() > self.model.ctx_size() {
            return Err(GenerateError::PromptTooLong {
                tokens: ids.len(),
                ctx: self.model.ctx_size(),
                max: self.model.config().max_position_embeddings,
            });
        }
        Ok(())
    }

    /// A new conversation: a session of its own over the shared model.
    pub fn session(&self) -> ChatSession {
        ChatSession {
            generator: self.clone(),
            session: self.model.shared_session(),
            prefill_chunk: DEFAULT_PREFILL_CHUNK,
        }
    }

    /// Runs prepared requests together: up to `options.max_batch` decode in one forward pass
    /// and prompts that share a prefix reuse its KV (see `nano_infer_qwen3::BatchEngine`).
    /// `on_event(i, event)` sees request `i`'s events as they happen; the finishes come back in
    /// request order. Each request samples with its own seed. Cancelling ends every running
    /// request within one decode step.
    pub fn run_batch(
        &self,
        requests: &[Prepared],
        options: &EngineOptions,
        cancel: &CancelToken,
        mut on_event: impl FnMut(usize, Event),
    ) -> Result<Vec<Finish>, GenerateError> {
        let batch: Vec<BatchRequest> = requests
            .iter()
            .map(|p| BatchRequest {
                prompt: p.ids.clone(),
                sampling: p.settings.sampling.clone(),
                max_new_tokens: p.settings.max_tokens,
                stop_ids: self.stop_ids.clone(),
                ignore_eos: p.settings.ignore_eos,
            })
            .collect();
        let codec = self.codec.as_deref();
        let mut texts: Vec<Assembler<'_>> = requests
            .iter()
            .map(|p| Assembler::new(codec, &p.settings, &self.stop_ids, &p.ids))
            .collect();
        let mut engine = BatchEngine::new(&self.model, options)?;
        let mut failure = None;
        let outputs = engine.run(&batch, |t| {
            let i = t.request;
            match texts[i].token(t.id, t.logits, &mut |e| on_event(i, e)) {
                Ok(_) if cancel.is_cancelled() => ControlFlow::Break(()),
                Ok(flow) => flow,
                Err(e) => {
                    failure = Some(e);
                    ControlFlow::Break(())
                }
            }
        })?;
        if let Some(e) = failure {
            return Err(e);
        }
        let mut finishes = Vec::with_capacity(requests.len());
        for (i, (out, text)) in outputs.into_iter().zip(texts).enumerate() {
            let generation = Generation {
                prompt_tokens: out.prompt_tokens - out.cached_tokens,
                cached_tokens: out.cached_tokens,
                ids: out.ids,
                stop_reason: out.stop_reason,
                prefill_time: out.prefill_time,
                decode_time: out.decode_time,
            };
            let p = &requests[i];
            let finish = text.finish(
                &generation,
                p.ids.len(),
                p.settings.sampling.seed,
                &mut |e| on_event(i, e),
            )?;
            on_event(i, Event::Finished(finish.clone()));
            finishes.push(finish);
        }
        Ok(finishes)
    }
}

/// One conversation over a shared model: its own KV cache, reused across turns (a turn whose
/// prompt extends the last one prefills only what is new).
#[derive(Debug)]
pub struct ChatSession {
    generator: Generator,
    session: Session<'static>,
    prefill_chunk: usize,
}

impl ChatSession {
    /// Runs one prepared request, reporting [`Event`]s as they happen and returning the final
    /// record (also sent as the last event, [`Event::Finished`]).
    ///
    /// The session keeps the longest common prefix of what it holds and the new prompt; the
    /// prompt is prefilled in chunks, and `cancel` is checked between chunks and after every
    /// token, so a cancelled request returns within one chunk or one step with finish reason
    /// `cancelled`, and the session stays usable.
    pub fn generate(
        &mut self,
        prepared: &Prepared,
        cancel: &CancelToken,
        mut on_event: impl FnMut(Event),
    ) -> Result<Finish, GenerateError> {
        let g = &self.generator;
        let settings = &prepared.settings;
        let mut sampler = Sampler::new(settings.sampling.clone());
        let options = GenerateOptions {
            max_new_tokens: settings.max_tokens,
            stop_ids: g.stop_ids.clone(),
            ignore_eos: settings.ignore_eos,
            prefill_chunk: self.prefill_chunk,
        };
        let mut text = Assembler::new(g.codec.as_deref(), settings, &g.stop_ids, &prepared.ids);
        let mut failure = None;
        let generation = generate(
            &mut self.session,
            &prepared.ids,
            &mut sampler,
            &options,
            |step| match step {
                GenerateStep::Prefill { done, total } => {
                    on_event(Event::Prefill { done, total });
                    if cancel.is_cancelled() {
                        ControlFlow::Break(())
                    } else {
                        ControlFlow::Continue(())
                    }
                }
                GenerateStep::Token(t) => match text.token(t.id, t.logits, &mut on_event) {
                    Ok(_) if cancel.is_cancelled() => ControlFlow::Break(()),
                    Ok(flow) => flow,
                    Err(e) => {
                        failure = Some(e);
                        ControlFlow::Break(())
                    }
                },
            },
        )?;
        if let Some(e) = failure {
            return Err(e);
        }
        let finish = text.finish(
            &generation,
            prepared.ids.len(),
            settings.sampling.seed,
            &mut on_event,
        )?;
        on_event(Event::Finished(finish.clone()));
        Ok(finish)
    }

    /// The generator this session belongs to.
    pub fn generator(&self) -> &Generator {
        &self.generator
    }

    /// The underlying token-level session (its position, KV memory, tokens).
    pub fn session(&self) -> &Session<'static> {
        &self.session
    }

    /// Tokens per prefill forward pass (0: the whole prompt in one).
    pub fn set_prefill_chunk(&mut self, tokens: usize) {
        self.prefill_chunk = tokens;
    }

    /// Forgets the conversation's KV.
    pub fn reset(&mut self) {
        self.session.reset();
    }

    /// Loads the longest prefix of `prompt` saved in a prompt-cache file; returns its length.
    pub fn load_prompt_cache(
        &mut self,
        path: impl AsRef<Path>,
        prompt: &[u32],
    ) -> Result<usize, PromptCacheError> {
        self.session.load_prompt_cache(path, prompt)
    }

    /// Saves the session's tokens and KV to a prompt-cache file.
    pub fn save_prompt_cache(&self, path: impl AsRef<Path>) -> Result<(), PromptCacheError> {
        self.session.save_prompt_cache(path)
    }
}
