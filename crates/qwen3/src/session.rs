//! A conversation with a model: its KV cache, its activation buffers and its last logits.

use crate::model::RunState;
use crate::{Logits, Model, ModelError};
use nano_infer_kvcache::KvCache;
use std::sync::Arc;

/// One sequence being processed. Prefill the prompt once, then decode token by token; the KV
/// cache makes each step cost one token's forward pass.
///
/// A session either borrows its model ([`Model::session`], `Session<'m>`) or shares it through
/// an `Arc` ([`Model::shared_session`], `Session<'static>`), so it can be stored beside the
/// model, moved to another thread, or kept in a server's table of conversations.
#[derive(Debug)]
pub struct Session<'m> {
    model: ModelRef<'m>,
    cache: KvCache,
    state: RunState,
    logits: Vec<f32>,
    /// Every token fed so far, in order (position i holds `tokens[i]`).
    tokens: Vec<u32>,
}

/// How a session holds its model.
#[derive(Debug)]
enum ModelRef<'m> {
    Borrowed(&'m Model),
    Shared(Arc<Model>),
}

impl std::ops::Deref for ModelRef<'_> {
    type Target = Model;

    fn deref(&self) -> &Model {
        match self {
            ModelRef::Borrowed(m) => m,
            ModelRef::Shared(m) => m,
        }
    }
}

impl Session<'static> {
    pub(crate) fn shared(model: Arc<Model>) -> Self {
        let cache = model.new_cache();
        Self::with_model(ModelRef::Shared(model), cache)
    }
}

impl<'m> Session<'m> {
    pub(crate) fn new(model: &'m Model) -> Self {
        Self::with_model(ModelRef::Borrowed(model), model.new_cache())
    }

    fn with_model(model: ModelRef<'m>, cache: KvCache) -> Self {
        Self {
            model,
            cache,
            state: RunState::default(),
            logits: Vec::new(),
            tokens: Vec::new(),
        }
    }

    /// The model this session runs.
    pub fn model(&self) -> &Model {
        &self.model
    }

    /// Feeds `ids` (the whole prompt in one pass) and returns the last position's logits.
    pub fn prefill(&mut self, ids: &[u32]) -> Result<&[f32], ModelError> {
        self.forward(ids, Logits::Last)
    }

    /// Feeds one token and returns the logits for the next.
    pub fn decode(&mut self, id: u32) -> Result<&[f32], ModelError> {
        self.forward(&[id], Logits::Last)
    }

    /// Feeds `ids` and returns logits for the last position, or `(n, vocab)` for all of them.
    /// On error nothing is appended: the session is as it was.
    pub fn forward(&mut self, ids: &[u32], mode: Logits) -> Result<&[f32], ModelError> {
        let before = self.cache.len();
        match self.model.forward(
            ids,
            &mut self.cache,
            &mut self.state,
            mode,
            &mut self.logits,
        ) {
            Ok(()) => {
                self.tokens.extend_from_slice(ids);
                Ok(&self.logits)
            }
            Err(e) => {
                self.cache.truncate(before);
                Err(e)
            }
        }
    }

    /// Feeds `ids` like [`Session::forward`] with [`Logits::All`] and returns the hidden states
    /// transformers calls `output_hidden_states`: the embedding output, the residual stream after
    /// each decoder layer, and the final norm's output, each `(n, hidden)`. For debugging a
    /// checkpoint layer by layer, and for embedding extraction.
    pub fn hidden_states(&mut self, ids: &[u32]) -> Result<Vec<Vec<f32>>, ModelError> {
        self.state.trace = Some(Vec::new());
        let result = self.forward(ids, Logits::All).map(|_| ());
        let trace = self.state.trace.take().unwrap_or_default();
        result.map(|()| trace)
    }

    /// The logits of the last call.
    pub fn logits(&self) -> &[f32] {
        &self.logits
    }

    /// Number of positions in the cache.
    pub fn position(&self) -> usize {
        self.cache.len()
    }

    /// The tokens fed so far.
    pub fn tokens(&self) -> &[u32] {
        &self.tokens
    }

    /// Positions still free in the context.
    pub fn remaining(&self) -> usize {
        self.model.ctx_size() - self.cache.len()
    }

    /// Forgets everything after the first `len` positions (to re-use a shared prefix).
    pub fn truncate(&mut self, len: usize) {
        let len = len.min(self.tokens.len());
        self.cache.truncate(len);
        self.tokens.truncate(len);
    }

    /// Empties the session.
    pub fn reset(&mut self) {
        self.truncate(0);
    }

    /// Bytes held by the KV cache.
    pub fn kv_bytes(&self) -> usize {
        self.cache.allocated_bytes()
    }

    /// The KV cache (for saving it to a prompt-cache file).
    pub(crate) fn cache(&self) -> &KvCache {
        &self.cache
    }

    /// The KV cache and the token list, to be filled together (a prompt-cache load): the
    /// caller keeps `tokens.len() == cache.len()`.
    pub(crate) fn parts_mut(&mut self) -> (&mut KvCache, &mut Vec<u32>) {
        (&mut self.cache, &mut self.tokens)
    }
}
