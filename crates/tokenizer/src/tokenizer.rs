//! [`Tokenizer`]: a `tokenizer.json` loaded through HuggingFace `tokenizers`.
//!
//! We delegate to `tokenizers` rather than reimplementing byte-level BPE because ids must match
//! transformers bit for bit (NFC normalizer, the Qwen2 split regex, added-token matching), and
//! the reference fixtures were produced by that same library. The cost is load time: parsing the
//! 11 MB Qwen3 `tokenizer.json` takes a noticeable fraction of a second, so load once and share.
//!
//! The ids of special tokens (HF's `special: true` flag) are copied into a sorted `Vec` at load,
//! so [`Tokenizer::is_special`] is a binary search instead of cloning the added-token map.

use std::path::{Path, PathBuf};

use crate::error::TokenizerError;

/// File name looked for by [`Tokenizer::from_dir`].
pub const TOKENIZER_FILE: &str = "tokenizer.json";

/// Reads a file of the model directory, refusing anything but a regular file (after symlinks):
/// reading a FIFO would block forever waiting for a writer.
pub(crate) fn read_regular_file(path: &Path) -> std::io::Result<Vec<u8>> {
    let meta = std::fs::metadata(path)?;
    if !meta.is_file() {
        let kind = if meta.is_dir() {
            "a directory"
        } else {
            "not a regular file (a FIFO, socket or device)"
        };
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("is {kind}"),
        ));
    }
    std::fs::read(path)
}

/// [`read_regular_file`] as UTF-8 text.
pub(crate) fn read_regular_to_string(path: &Path) -> std::io::Result<String> {
    String::from_utf8(read_regular_file(path)?)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}

/// A Qwen3 (or any HF `tokenizer.json`) tokenizer: text to `u32` ids and back.
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    /// Ids of added tokens marked `special: true`, sorted; these are the ones
    /// `skip_special_tokens` drops (`<|im_start|>`... but not `<think>` in Qwen3).
    special_ids: Vec<u32>,
    /// Where it was loaded from, for error messages and `Debug`.
    path: PathBuf,
}

impl Tokenizer {
    /// Loads a `tokenizer.json` file.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, TokenizerError> {
        let path = path.as_ref();
        // Read the bytes ourselves: `tokenizers::Tokenizer::from_file` would fold a missing
        // file and a corrupt one into the same opaque error.
        let bytes = read_regular_file(path).map_err(|source| TokenizerError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let inner =
            tokenizers::Tokenizer::from_bytes(&bytes).map_err(|source| TokenizerError::Load {
                path: path.to_path_buf(),
                source,
            })?;
        // Without added tokens: a vocabulary of only special tokens still drops all plain text.
        if inner.get_vocab_size(false) == 0 {
            return Err(TokenizerError::EmptyVocabulary {
                path: path.to_path_buf(),
            });
        }
        let mut special_ids: Vec<u32> = inner
            .get_added_tokens_decoder()
            .into_iter()
            .filter(|(_, tok)| tok.special)
            .map(|(id, _)| id)
            .collect();
        special_ids.sort_unstable();
        Ok(Self {
            inner,
            special_ids,
            path: path.to_path_buf(),
        })
    }

    /// Loads `tokenizer.json` from a model folder.
    pub fn from_dir(model_dir: impl AsRef<Path>) -> Result<Self, TokenizerError> {
        Self::from_file(model_dir.as_ref().join(TOKENIZER_FILE))
    }

    /// The file this tokenizer was loaded from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Encodes text to ids, adding no BOS/EOS.
    ///
    /// Added tokens written in the text (`<|im_start|>`, `<think>`...) become their single ids,
    /// as transformers does with `split_special_tokens=False`; this is what lets a rendered chat
    /// template be encoded directly. We pass `add_special_tokens=false` (what transformers'
    /// `apply_chat_template(tokenize=True)` does) so a tokenizer whose post-processor adds a BOS
    /// would not get a second one; for Qwen3 both settings give the same ids.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, TokenizerError> {
        // `encode_fast` skips offset tracking, which we never use; the ids are identical.
        let encoding = self
            .inner
            .encode_fast(text, false)
            .map_err(|source| TokenizerError::Encode { source })?;
        Ok(encoding.get_ids().to_vec())
    }

    /// Decodes ids to text, like transformers' `decode(ids, skip_special_tokens=...,
    /// clean_up_tokenization_spaces=False)`.
    ///
    /// Byte sequences that are not valid UTF-8 (a character cut in the middle) come out as
    /// U+FFFD, as in transformers; use [`crate::StreamDecoder`] to print while generating.
    /// Ids outside the vocabulary decode to nothing, again as transformers does: Qwen3's
    /// embedding table (151936 rows) is larger than its vocabulary (151669), so a model can emit
    /// such padding ids, and that must not abort generation.
    pub fn decode(&self, ids: &[u32], skip_special_tokens: bool) -> Result<String, TokenizerError> {
        self.inner
            .decode(ids, skip_special_tokens)
            .map_err(|source| TokenizerError::Decode { source })
    }

    /// The id of a token string (a vocabulary entry in byte-level form, e.g. `"Ġworld"`, or an
    /// added token such as `"<|im_end|>"`).
    pub fn token_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// The token string of an id (byte-level form for ordinary tokens), or `None` out of range.
    pub fn token_str(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }

    /// Number of ids the tokenizer knows, added tokens included (151669 for Qwen3).
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// Whether `id` is an added token flagged `special` (what `skip_special_tokens` removes).
    ///
    /// In Qwen3 that is `<|endoftext|>`, `<|im_start|>`, `<|im_end|>` and the vision tokens;
    /// `<think>`, `<tool_call>` and friends are added tokens (single ids) but not special, so
    /// they survive `skip_special_tokens`, exactly as in transformers.
    pub fn is_special(&self, id: u32) -> bool {
        self.special_ids.binary_search(&id).is_ok()
    }

    /// Whether `id` is an added token (a single id matched as a whole string before BPE, such
    /// as `<|im_end|>`, `<think>` or `<tool_call>`), special or not.
    pub fn is_added(&self, id: u32) -> bool {
        self.inner
            .get_added_vocabulary()
            .simple_id_to_token(id)
            .is_some()
    }

    /// The ids for which [`Self::is_special`] is true, sorted.
    pub fn special_ids(&self) -> &[u32] {
        &self.special_ids
    }

    /// The underlying `tokenizers` object, for anything not wrapped here.
    pub fn inner(&self) -> &tokenizers::Tokenizer {
        &self.inner
    }
}

// Hand-written: the derived `Debug` of `tokenizers::Tokenizer` would print all 151k merges.
impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("path", &self.path)
            .field("vocab_size", &self.vocab_size())
            .field("special_ids", &self.special_ids.len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_file_is_io_error_naming_path() {
        let err = Tokenizer::from_dir("/definitely/not/here").unwrap_err();
        assert!(matches!(err, TokenizerError::Io { .. }), "{err:?}");
        assert!(err
            .to_string()
            .contains("/definitely/not/here/tokenizer.json"));
    }

    #[test]
    fn corrupt_file_is_load_error_naming_path() {
        let dir =
            std::env::temp_dir().join(format!("nano-infer-tok-corrupt-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(TOKENIZER_FILE);
        std::fs::write(&path, b"{ this is not json").unwrap();
        let err = Tokenizer::from_file(&path).unwrap_err();
        std::fs::remove_dir_all(&dir).ok();
        assert!(matches!(err, TokenizerError::Load { .. }), "{err:?}");
        assert!(err.to_string().contains(&path.display().to_string()));
    }
}
