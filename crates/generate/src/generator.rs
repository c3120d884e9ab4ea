//! [`Generator`]: a model shared through an `Arc` with its text side and defaults; it prepares
//! [`Request`]s and runs them, one conversation at a time ([`ChatSession`]) or many together
//! over the paged KV pool ([`Generator::run_batch`]).

use crate::assembler::Assembler;
use crate::picker::Picker;
use crate::tools::{call_grammar, call_schema, check_tools};
use crate::{
    CancelToken, Event, Finish, GenerateError, Prompt, Request, Settings, TextCodec, ToolChoice,
};
use nano_infer_constrain::{CompiledGrammar, ConstraintError, Grammar, Vocabulary};
use nano_infer_qwen3::{
    generate, EngineOptions, GenerateOptions, GenerateStep, GenerationDefaults, LoadOptions,
    LoadProgress, Model, PromptCacheError, Session,
};
use std::ops::ControlFlow;
use std::path::Path;
use std::sync::{Arc, OnceLock};

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
    /// The vocabulary as a grammar alphabet, built at the first constrained request (it walks
    /// all 151k tokens) and shared by every clone.
    vocabulary: Arc<OnceLock<Result<Vocabulary, String>>>,
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
    /// The checked grammar the answer must match: the request's, or one valid tool call for
    /// `tool_choice` `required` or a named function.
    pub grammar: Option<CompiledGrammar>,
    /// A chat with thinking on: the answer may open with `<think>` before the grammar applies.
    pub may_think: bool,
    /// Tools were offered and may be called: `<tool_call>` blocks become tool calls.
    pub tool_calls: bool,
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
            vocabulary: Arc::new(OnceLock::new()),
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
    /// when none is given), checks the prompt against the vocabulary and the context, and
    /// compiles the request's grammar or tool-call constraint, so that every error is found
    /// before a token is generated.
    pub fn prepare(&self, request: &Request) -> Result<Prepared, GenerateError> {
        let settings = request.params.resolve(&self.defaults)?;
        let choice = &request.params.tool_choice;
        let (tools, may_think) = match &request.prompt {
            Prompt::Chat {
                tools,
                enable_thinking,
                ..
            } => (
                tools.as_slice(),
                *enable_thinking != Some(false) && settings.split_reasoning,
            ),
            _ => (&[][..], false),
        };
        let functions = check_tools(tools)?;
        let call = match choice {
            ToolChoice::Required | ToolChoice::Function(_) if functions.is_empty() => {
                return Err(GenerateError::field(
                    "tool_choice",
                    "`required` or a named function needs `tools`",
                ))
            }
            ToolChoice::Required => Some(call_grammar(&functions)?),
            ToolChoice::Function(name) => {
                let spec = functions.iter().find(|f| &f.name == name).ok_or_else(|| {
                    GenerateError::field(
                        "tool_choice.function.name",
                        format!("no tool is named `{name}`"),
                    )
                })?;
                Some(call_grammar(std::slice::from_ref(spec))?)
            }
            ToolChoice::Auto | ToolChoice::None => None,
        };
        let offered = if *choice == ToolChoice::None {
            &[][..]
        } else {
            tools
        };
        let (ids, text) = match &request.prompt {
            Prompt::Ids(ids) => (ids.clone(), None),
            Prompt::Chat {
                messages,
                enable_thinking,
                ..
            } => {
                let codec = self.require_codec()?;
                let text = codec.render_with_tools(messages, offered, *enable_thinking)?;
                (codec.encode(&text, self.model.ctx_size())?, Some(text))
            }
            prompt => {
                let codec = self.require_codec()?;
                let text = codec.prompt_text(prompt)?.unwrap_or_default();
                (codec.encode(&text, self.model.ctx_size())?, Some(text))
            }
        };
        self.check_prompt(&ids)?;
        if !functions.is_empty() {
            // A tool whose parameters are not a schema we can follow is refused now, whatever
            // the tool choice, rather than when a call would need it.
            let vocabulary = self.vocabulary()?;
            for (i, spec) in functions.iter().enumerate() {
                vocabulary
                    .compile(&Grammar::JsonSchema(call_schema(spec)))
                    .map_err(|e| grammar_error(format!("tools[{i}].function.parameters"), e))?;
            }
        }
        let grammar = match (&request.params.grammar, call) {
            (Some(_), Some(_)) => {
                return Err(GenerateError::field(
                    "response_format",
                    "cannot be combined with tool_choice `required` or a named function",
                ))
            }
            (Some(g), None) => Some((g.clone(), grammar_field(g))),
            (None, Some(g)) => Some((g, "tool_choice".to_string())),
            (None, None) => None,
        };
        let grammar = match grammar {
            Some((grammar, field)) => {
                if settings.ignore_eos {
                    return Err(GenerateError::field(
                        "ignore_eos",
                        "cannot be used with a constraint (the answer ends where the grammar does)",
                    ));
                }
                let compiled = self
                    .vocabulary()?
                    .compile(&grammar)
                    .map_err(|e| grammar_error(field, e))?;
                Some(compiled)
            }
            None => None,
        };
        Ok(Prepared {
            ids,
            settings,
            text,
            grammar,
            may_think,
            tool_calls: !functions.is_empty() && *choice != ToolChoice::None,
        })
    }

    /// The vocabulary as a grammar alphabet (built once).
    pub fn vocabulary(&self) -> Result<&Vocabulary, GenerateError> {
        let codec = self.require_codec()?;
        self.vocabulary
            .get_or_init(|| {
                Vocabulary::from_tokenizer(
                    codec.tokenizer(),
                    self.model.vocab_size(),
                    &self.stop_ids,
                )
                .map_err(|e| e.to_string())
            })
            .as_ref()
            .map_err(|reason| {
                GenerateError::Constraint(ConstraintError::Vocabulary(reason.clone()))
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

    /// Runs prepared requests together through a [`crate::Batcher`] (continuous batching):
    /// up to `options.max_batch` decode in one forward pass and prompts that share a prefix
    /// reuse its KV. `on_event(i, event)` sees request `i`'s events as they happen; the
    /// finishes come back in request order. Each request samples with its own seed (and its
    /// own grammar). Cancelling ends every running request within one step. A request that
    /// fails fails the batch with its error.
    pub fn run_batch(
        &self,
        requests: &[Prepared],
        options: &EngineOptions,
        cancel: &CancelToken,
        mut on_event: impl FnMut(usize, Event),
    ) -> Result<Vec<Finish>, GenerateError> {
        use std::sync::mpsc;
        // Batcher sinks must be `Send`; the caller's callback need not be, so events travel
        // through a channel and are handed over on this thread after each step.
        let (tx, rx) = mpsc::channel::<(usize, Event)>();
        let mut batcher = crate::Batcher::new(self, options, options.prefill_chunk.max(1))?;
        for (i, prepared) in requests.iter().enumerate() {
            let tx = tx.clone();
            batcher.submit(
                prepared.clone(),
                cancel.clone(),
                Box::new(move |e| {
                    // The receiver outlives the batcher; a send cannot fail while it runs.
                    let _ = tx.send((i, e));
                }),
            );
        }
        drop(tx);
        let mut finishes: Vec<Option<Finish>> = vec![None; requests.len()];
        let mut failure = None;
        let mut deliver = |rx: &mpsc::Receiver<(usize, Event)>| {
            for (i, event) in rx.try_iter() {
                match &event {
                    Event::Finished(f) => finishes[i] = Some(f.clone()),
                    Event::Failed { message } => {
                        failure.get_or_insert_with(|| message.clone());
                    }
                    _ => {}
                }
                on_event(i, event);
            }
        };
        while batcher.has_work() {
            batcher.step()?;
            deliver(&rx);
        }
        drop(batcher);
        deliver(&rx);
        if let Some(message) = failure {
            return Err(GenerateError::RequestFailed { message });
        }
        Ok(finishes.into_iter().flatten().collect())
    }
}

/// The request field a grammar came from, for error messages (the CLI maps them to flags).
fn grammar_field(grammar: &Grammar) -> String {
    match grammar {
        Grammar::JsonSchema(_) => "response_format.json_schema.schema",
        Grammar::JsonObject => "response_format",
        Grammar::Regex(_) => "regex",
        Grammar::Lark(_) => "grammar",
    }
    .to_string()
}

/// An invalid grammar is the request's fault: a field error naming where it came from.
fn grammar_error(field: String, e: ConstraintError) -> GenerateError {
    match e {
        ConstraintError::Invalid { .. } => GenerateError::field(field, e.to_string()),
        other => GenerateError::Constraint(other),
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
        let codec = g.codec.as_deref();
        let mut picker = Picker::new(prepared, codec.and_then(TextCodec::think_ids), &g.stop_ids);
        let options = GenerateOptions {
            max_new_tokens: settings.max_tokens,
            stop_ids: g.stop_ids.clone(),
            ignore_eos: settings.ignore_eos,
            prefill_chunk: self.prefill_chunk,
        };
        let mut text = Assembler::new(
            codec,
            settings,
            &g.stop_ids,
            &prepared.ids,
            prepared.tool_calls,
        );
        let mut failure = None;
        let generation = generate(
            &mut self.session,
            &prepared.ids,
            &mut picker,
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
        let mut finish = text.finish(
            &generation,
            prepared.ids.len(),
            settings.sampling.seed,
            &mut on_event,
        )?;
        finish.constraint = picker.report();
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
