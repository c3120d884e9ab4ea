//! [`StreamDecoder`]: ids in one at a time, whole UTF-8 characters out.
//!
//! Byte-level BPE splits a Chinese character or an emoji over several tokens, so decoding each
//! token alone would print U+FFFD halves. We use the prefix-offset technique of HF
//! text-generation-inference: keep the ids from `prefix_offset` on; decode
//! `ids[prefix_offset..read_offset]` (already printed, kept as left context) and
//! `ids[prefix_offset..]`; when the longer text extends the shorter one and does not end in
//! U+FFFD (an incomplete character), print the difference and slide both offsets forward.
//!
//! Costs: two decodes of a short window per token (a handful of ids, since the window restarts
//! after every emission). A run of tokens that each end in a genuinely invalid byte sequence is
//! held back until a token ends cleanly or [`StreamDecoder::finish`] is called; in exchange the
//! concatenated output always equals [`Tokenizer::decode`] of all the ids.

use crate::error::TokenizerError;
use crate::tokenizer::Tokenizer;

/// Incremental detokenizer over one generated sequence.
#[derive(Debug)]
pub struct StreamDecoder<'a> {
    tokenizer: &'a Tokenizer,
    skip_special_tokens: bool,
    /// Ids from `prefix_offset` on; older ids are dropped once printed and out of the window.
    ids: Vec<u32>,
    /// Index in `ids` of the first id not yet printed.
    read_offset: usize,
}

impl<'a> StreamDecoder<'a> {
    /// A decoder with nothing fed yet.
    pub fn new(tokenizer: &'a Tokenizer, skip_special_tokens: bool) -> Self {
        Self {
            tokenizer,
            skip_special_tokens,
            ids: Vec::new(),
            read_offset: 0,
        }
    }

    /// Feeds one id; returns the text it completes, if any (`None` while a character is still
    /// incomplete or the id decodes to nothing).
    pub fn step(&mut self, id: u32) -> Result<Option<String>, TokenizerError> {
        self.ids.push(id);
        let prefix_text = self.decode(&self.ids[..self.read_offset])?;
        let new_text = self.decode(&self.ids)?;
        // `starts_with` guards the slice below: the window decode is expected to extend the
        // already-printed text, and if some decoder ever broke that we wait rather than panic.
        if new_text.len() > prefix_text.len()
            && !new_text.ends_with(char::REPLACEMENT_CHARACTER)
            && new_text.starts_with(&prefix_text)
        {
            let out = new_text[prefix_text.len()..].to_string();
            // The ids just printed become the left context of the next window.
            self.ids.drain(..self.read_offset);
            self.read_offset = self.ids.len();
            Ok(Some(out))
        } else {
            Ok(None)
        }
    }

    /// Flushes whatever is still held back (an incomplete character comes out as U+FFFD, as a
    /// full decode would print it) and resets the decoder for a new sequence.
    pub fn finish(&mut self) -> Result<String, TokenizerError> {
        let prefix_text = self.decode(&self.ids[..self.read_offset])?;
        let new_text = self.decode(&self.ids)?;
        let out = match new_text.strip_prefix(&prefix_text) {
            Some(rest) => rest.to_string(),
            // Unreachable for byte-level decoders; printing the tail alone beats losing it.
            None => self.decode(&self.ids[self.read_offset..])?,
        };
        self.ids.clear();
        self.read_offset = 0;
        Ok(out)
    }

    fn decode(&self, ids: &[u32]) -> Result<String, TokenizerError> {
        if ids.is_empty() {
            return Ok(String::new());
        }
        self.tokenizer.decode(ids, self.skip_special_tokens)
    }
}
