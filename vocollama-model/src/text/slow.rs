//! transformers' slow `LlamaTokenizer` over a `tokenizer.model`: what LLaVA and
//! VoCo-LLaMA load (`use_fast=False`). Added and special tokens (`<voco>`,
//! `</s>`) split the text first; each piece between them goes through
//! SentencePiece, with the `legacy` rules of `tokenizer_config.json`.

use std::collections::HashSet;
use std::ops::Range;

use super::sentencepiece::SentencePiece;

/// A token matched whole in the text before SentencePiece runs.
#[derive(Debug, Clone)]
pub struct AddedToken {
    pub content: String,
    pub id: u32,
    /// Shown by `all_special_tokens` (bos/eos/unk/pad and additional specials).
    pub special: bool,
    /// Eat the whitespace before / after the token.
    pub lstrip: bool,
    pub rstrip: bool,
}

#[derive(Debug, Clone)]
pub struct SlowLlamaTokenizer {
    pub sp: SentencePiece,
    /// transformers' `legacy` flag: `true` (its default) runs SentencePiece with
    /// the dummy prefix on every piece of text between added tokens.
    pub legacy: bool,
    /// Longest first, for leftmost-longest matching.
    added: Vec<AddedToken>,
    unk_token: String,
    /// Pieces SentencePiece makes of the literal unk token text (non-legacy trick).
    unk_token_length: usize,
}

impl SlowLlamaTokenizer {
    pub fn new(sp: SentencePiece, legacy: bool, mut added: Vec<AddedToken>, unk_token: String) -> Self {
        added.sort_by_key(|t| std::cmp::Reverse(t.content.len()));
        let unk_token_length = sp.encode_with(&unk_token, false).len();
        Self { sp, legacy, added, unk_token, unk_token_length }
    }

    pub fn added_tokens(&self) -> &[AddedToken] {
        &self.added
    }

    /// `tokenizer.tokenize(text)` as ids, without BOS/EOS.
    pub fn tokenize(&self, text: &str) -> Vec<u32> {
        if self.legacy || text.is_empty() {
            return self.split_and_encode(text);
        }
        // Non-legacy: one `▁` for the whole text (not per piece), dropped before a special token.
        let text = format!("\u{2581}{}", text.replace('\u{2581}', " "));
        let mut ids = self.split_and_encode(&text);
        let space = self.sp.piece_to_id("\u{2581}");
        let next_special = ids.get(1).is_some_and(|id| self.added.iter().any(|t| t.id == *id && t.special));
        if ids.len() > 1 && ids[0] == space && next_special {
            ids.remove(0);
        }
        ids
    }

    /// [`Self::tokenize`] of `text` whose byte ranges `user` are someone's words:
    /// no added token is matched there (transformers' `split_special_tokens`).
    pub fn tokenize_marked(&self, text: &str, user: &[Range<usize>]) -> Vec<u32> {
        if self.legacy || text.is_empty() {
            return self.split_and_encode_outside(text, user);
        }
        // Non-legacy prepends `▁` and turns `▁` into spaces: the ranges move with the bytes.
        let mut shifted = String::from("\u{2581}");
        let mut at = vec![0usize; text.len() + 1];
        for (i, c) in text.char_indices() {
            at[i..i + c.len_utf8()].fill(shifted.len());
            shifted.push(if c == '\u{2581}' { ' ' } else { c });
        }
        at[text.len()] = shifted.len();
        let user: Vec<Range<usize>> = user.iter().map(|r| at[r.start]..at[r.end]).collect();
        let mut ids = self.split_and_encode_outside(&shifted, &user);
        let space = self.sp.piece_to_id("\u{2581}");
        let next_special = ids.get(1).is_some_and(|id| self.added.iter().any(|t| t.id == *id && t.special));
        if ids.len() > 1 && ids[0] == space && next_special {
            ids.remove(0);
        }
        ids
    }

    /// `PreTrainedTokenizer.tokenize`: split on added tokens (leftmost, longest),
    /// apply their strip flags to the neighbours, encode the rest.
    fn split_and_encode(&self, text: &str) -> Vec<u32> {
        self.split_and_encode_outside(text, &[])
    }

    /// [`Self::split_and_encode`] matching added tokens only outside the byte ranges `user`.
    fn split_and_encode_outside(&self, text: &str, user: &[Range<usize>]) -> Vec<u32> {
        let in_user = |a: usize, b: usize| user.iter().any(|r| a < r.end && r.start < b);
        enum Part<'a> {
            Text(&'a str),
            Added(&'a AddedToken),
        }
        let mut parts = Vec::new();
        let (mut start, mut i) = (0, 0);
        while i < text.len() {
            match self
                .added
                .iter()
                .find(|t| text[i..].starts_with(t.content.as_str()) && !in_user(i, i + t.content.len()))
            {
                Some(t) => {
                    parts.push(Part::Text(&text[start..i]));
                    parts.push(Part::Added(t));
                    i += t.content.len();
                    start = i;
                }
                None => i += text[i..].chars().next().map_or(1, char::len_utf8),
            }
        }
        parts.push(Part::Text(&text[start..]));
        for k in 0..parts.len() {
            if let Part::Added(t) = parts[k] {
                if t.rstrip
                    && let Some(Part::Text(s)) = parts.get_mut(k + 1)
                {
                    *s = s.trim_start();
                }
                if t.lstrip
                    && k > 0
                    && let Part::Text(s) = &mut parts[k - 1]
                {
                    *s = s.trim_end();
                }
            }
        }
        let mut ids = Vec::new();
        for p in parts {
            match p {
                Part::Added(t) => ids.push(t.id),
                Part::Text("") => {}
                Part::Text(s) => match self.added.iter().find(|t| t.content == s) {
                    Some(t) => ids.push(t.id),
                    None => ids.extend(self.encode_piece(s)),
                },
            }
        }
        ids
    }

    /// `LlamaTokenizer._tokenize`.
    fn encode_piece(&self, text: &str) -> Vec<u32> {
        if self.legacy {
            return self.sp.encode_with(text, self.sp.add_dummy_prefix);
        }
        // transformers loads the model without the dummy prefix when not legacy.
        if !text.starts_with(['\u{2581}', ' ']) {
            return self.sp.encode_with(text, false);
        }
        // Encode after the unk token's text, then drop its pieces: keeps a leading space as written.
        let ids = self.sp.encode_with(&format!("{}{text}", self.unk_token), false);
        if ids.len() >= self.unk_token_length { ids[self.unk_token_length..].to_vec() } else { ids }
    }

    /// Text of `ids` as transformers' `decode(skip_special_tokens=True)`:
    /// special tokens skipped, other added tokens as written, each run of
    /// pieces through `sp.decode` (which drops its leading space).
    pub fn decode(&self, ids: &[u32]) -> String {
        let specials: HashSet<u32> = self.added.iter().filter(|t| t.special).map(|t| t.id).collect();
        let mut out = String::new();
        let mut run: Vec<u32> = Vec::new();
        for &id in ids {
            match self.added.iter().find(|t| t.id == id) {
                Some(t) => {
                    out.push_str(&self.sp.decode(&run));
                    run.clear();
                    if !specials.contains(&id) {
                        out.push_str(&t.content);
                    }
                }
                None => run.push(id),
            }
        }
        out.push_str(&self.sp.decode(&run));
        out
    }
}
