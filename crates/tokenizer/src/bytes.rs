//! The raw bytes of one token, for log-probability reports (OpenAI's `bytes` field).
//!
//! Decoding a single id of a byte-level BPE vocabulary can give half a UTF-8 character, which
//! `decode` prints as U+FFFD; the bytes themselves are exact. GPT-2's byte-level scheme stores
//! each byte as one printable character (`bytes_to_unicode`: printable Latin-1 bytes map to
//! themselves, the other 68 to U+0100 onwards, in byte order), so inverting that table on the
//! vocabulary string gives the token's bytes. Added tokens (`<think>`, `<|im_end|>`) are stored
//! as their text.

use crate::Tokenizer;

impl Tokenizer {
    /// The bytes token `id` stands for, or `None` for an id outside the vocabulary.
    pub fn token_bytes(&self, id: u32) -> Option<Vec<u8>> {
        let piece = self.token_str(id)?;
        if !self.is_added(id) {
            if let Some(bytes) = byte_level_bytes(&piece) {
                return Some(bytes);
            }
        }
        Some(piece.into_bytes())
    }
}

/// Inverts GPT-2's `bytes_to_unicode` on every character of `piece`; `None` if some character is
/// not in the table (the vocabulary is not byte-level).
fn byte_level_bytes(piece: &str) -> Option<Vec<u8>> {
    piece.chars().map(byte_of_char).collect()
}

fn byte_of_char(c: char) -> Option<u8> {
    let code = c as u32;
    if printable(code) {
        return u8::try_from(code).ok();
    }
    // The n-th non-printable byte (in byte order) is stored as U+0100 + n.
    let n = code.checked_sub(0x100)?;
    (0u32..=255)
        .filter(|&b| !printable(b))
        .nth(n as usize)
        .and_then(|b| u8::try_from(b).ok())
}

/// The bytes GPT-2 keeps as themselves: `!`..`~`, `¡`..`¬`, `®`..`ÿ`.
fn printable(code: u32) -> bool {
    matches!(code, 0x21..=0x7E | 0xA1..=0xAC | 0xAE..=0xFF)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_is_a_bijection_on_bytes() {
        let mut seen = [false; 256];
        for code in (0x21..=0xFF).chain(0x100..0x100 + 68) {
            if let Some(c) = char::from_u32(code) {
                if let Some(b) = byte_of_char(c) {
                    assert!(!seen[b as usize], "byte {b} twice");
                    seen[b as usize] = true;
                }
            }
        }
        assert!(seen.iter().all(|&s| s), "every byte has a character");
        // 'Ġ' is the space, 'Ċ' the newline, as in every GPT-2-style vocabulary.
        assert_eq!(byte_level_bytes("Ġhi"), Some(b" hi".to_vec()));
        assert_eq!(byte_level_bytes("Ċ"), Some(b"\n".to_vec()));
        assert_eq!(byte_level_bytes("你"), None);
    }
}
