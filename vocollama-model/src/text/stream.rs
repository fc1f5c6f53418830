//! Streaming decode: text is printed as tokens arrive, but only whole
//! characters. A character split over byte-fallback tokens (`<0xE6>` `<0x97>`
//! `<0xA5>`) is held back until its last byte, and the leading-space rule of
//! the tokenizer is applied once, as decoding the whole answer would.

use super::Tokenizer;

/// Decodes a growing token list into text increments. Each step decodes a
/// short window (the tokens since the last emitted text, plus the chunk
/// before them for context) and emits what the new tokens added.
pub struct StreamDecoder<'t> {
    tokenizer: &'t Tokenizer,
    ids: Vec<u32>,
    /// Start of the context window and of the tokens not yet emitted.
    prefix: usize,
    read: usize,
}

impl<'t> StreamDecoder<'t> {
    pub fn new(tokenizer: &'t Tokenizer) -> Self {
        Self { tokenizer, ids: Vec::new(), prefix: 0, read: 0 }
    }

    /// Add one token; the text it completes, if any.
    pub fn push(&mut self, id: u32) -> Option<String> {
        self.ids.push(id);
        let now = self.tokenizer.decode(&self.ids[self.prefix..]);
        // A trailing U+FFFD may be a character still missing bytes (4 at most in UTF-8): wait.
        if now.ends_with('\u{FFFD}') && self.ids.len() - self.read < 4 {
            return None;
        }
        self.take(now)
    }

    /// What the tokens since the last emission add to the text, if anything.
    fn take(&mut self, now: String) -> Option<String> {
        let before = self.tokenizer.decode(&self.ids[self.prefix..self.read]);
        let delta = match now.strip_prefix(&before) {
            Some(d) => d.to_string(),
            // Broken bytes that now decode differently with their neighbours: the new tokens alone.
            None => self.tokenizer.decode(&self.ids[self.read..]),
        };
        if delta.is_empty() {
            return None;
        }
        self.prefix = self.read;
        self.read = self.ids.len();
        Some(delta)
    }

    /// What is still held back (a truncated character at the end of generation).
    pub fn finish(&mut self) -> Option<String> {
        let now = self.tokenizer.decode(&self.ids[self.prefix..]);
        self.take(now)
    }

    pub fn ids(&self) -> &[u32] {
        &self.ids
    }
}
