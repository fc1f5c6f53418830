//! A model's tokenizer: `tokenizer.json` through the `tokenizers` crate, or a
//! SentencePiece `tokenizer.model` wrapped as transformers' slow
//! `LlamaTokenizer`, as original LLaVA checkpoints ship it.

use std::path::{Path, PathBuf};

use serde_json::Value;

use super::sentencepiece::SentencePiece;
use super::slow::{AddedToken, SlowLlamaTokenizer};
use crate::checkpoint::config::CheckpointLayout;
use crate::error::{Error, Result};
use crate::io::json::read_json;

/// Which file a model directory's tokenizer is built from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenizerSource {
    /// `tokenizer.json` through the `tokenizers` crate (transformers' fast tokenizer).
    Json,
    /// `tokenizer.model` + `added_tokens.json` (transformers' slow `LlamaTokenizer`).
    SentencePiece,
}

enum Inner {
    Json(Box<tokenizers::Tokenizer>),
    Slow(Box<SlowLlamaTokenizer>),
}

pub struct Tokenizer {
    inner: Inner,
    pub source: TokenizerSource,
    pub path: PathBuf,
    bos: Option<u32>,
    add_bos: bool,
    eos: Option<u32>,
    add_eos: bool,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer").field("source", &self.source).field("path", &self.path).finish()
    }
}

/// `f`, a call into the `tokenizers` crate, with a panic turned into an error.
/// Its deserializer and post-processor panic on some malformed tokenizer.json
/// files (a decoder that is neither tagged nor legacy, a template naming a
/// special token it does not define); the panic's message is kept off stderr.
fn guarded<T>(f: impl FnOnce() -> T) -> std::result::Result<T, String> {
    use std::cell::Cell;
    use std::panic::{AssertUnwindSafe, catch_unwind};
    thread_local!(static QUIET: Cell<bool> = const { Cell::new(false) });
    static HOOK: std::sync::Once = std::sync::Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !QUIET.with(Cell::get) {
                previous(info)
            }
        }));
    });
    let was = QUIET.with(|q| q.replace(true));
    let r = catch_unwind(AssertUnwindSafe(f));
    QUIET.with(|q| q.set(was));
    r.map_err(|p| {
        let why = p.downcast_ref::<&str>().map(|s| s.to_string()).or_else(|| p.downcast_ref::<String>().cloned());
        format!("the tokenizers library failed on it ({})", why.unwrap_or_else(|| "no message".into()))
    })
}

/// The JSON of an optional file of the tokenizer: `None` when it is not there.
fn read_optional_json(path: &Path) -> Result<Option<Value>> {
    if !path.exists() {
        return Ok(None);
    }
    read_json(path).map(Some)
}

/// A special token's text from `tokenizer_config.json` or `special_tokens_map.json`
/// (either a string or `{"content": ...}`).
fn token_text(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) => Some(s.clone()),
        Value::Object(o) => o.get("content")?.as_str().map(str::to_string),
        _ => None,
    }
}

impl Tokenizer {
    /// The tokenizer of a model directory. `prefer` says which file wins when
    /// both exist: original LLaVA code loads the slow tokenizer, llava-hf the fast one.
    pub fn from_dir(dir: &Path, prefer: TokenizerSource) -> Result<Self> {
        let json = dir.join("tokenizer.json");
        let model = dir.join("tokenizer.model");
        let config = read_optional_json(&dir.join("tokenizer_config.json"))?.unwrap_or(Value::Null);
        // transformers 5 saves `"backend": "tokenizers"` (or the class `TokenizersBackend`,
        // with `extra_special_tokens`) and its AutoTokenizer loads tokenizer.json, whatever
        // tokenizer.model an older save left beside it (without its added_tokens.json).
        let saved_by_v5 = config.get("backend").and_then(Value::as_str) == Some("tokenizers")
            || config.get("tokenizer_class").and_then(Value::as_str) == Some("TokenizersBackend")
            || config.get("extra_special_tokens").is_some();
        let source = match (json.is_file(), model.is_file()) {
            (true, true) if saved_by_v5 => TokenizerSource::Json,
            (true, true) => prefer,
            (true, false) => TokenizerSource::Json,
            (false, true) => TokenizerSource::SentencePiece,
            (false, false) => {
                return Err(Error::config(dir, "no tokenizer.json or tokenizer.model in the model directory"));
            }
        };
        let map = read_optional_json(&dir.join("special_tokens_map.json"))?.unwrap_or(Value::Null);
        let special = |name: &str, default: &str| {
            token_text(config.get(name)).or_else(|| token_text(map.get(name))).unwrap_or_else(|| default.to_string())
        };
        let (bos_text, eos_text, unk_text) =
            (special("bos_token", "<s>"), special("eos_token", "</s>"), special("unk_token", "<unk>"));
        let flag = |k: &str, default: bool| config.get(k).and_then(Value::as_bool).unwrap_or(default);
        let (add_bos, add_eos) = (flag("add_bos_token", true), flag("add_eos_token", false));
        match source {
            TokenizerSource::Json => {
                crate::io::bounded::check_regular(&json, crate::io::bounded::MAX_CONFIG_BYTES)?;
                let unreadable =
                    |e: String| Error::config(&json, format!("not a tokenizer.json this version reads: {e}"));
                let tok = guarded(|| tokenizers::Tokenizer::from_file(&json))
                    .map_err(unreadable)?
                    .map_err(|e| unreadable(e.to_string()))?;
                // The post-processor's template is only checked when it runs: run it once now.
                guarded(|| tok.encode("", true)).map_err(unreadable)?.map_err(|e| unreadable(e.to_string()))?;
                let bos = tok.token_to_id(&bos_text);
                let eos = tok.token_to_id(&eos_text);
                Ok(Self { inner: Inner::Json(Box::new(tok)), source, path: json, bos, add_bos, eos, add_eos })
            }
            TokenizerSource::SentencePiece => {
                let bytes = crate::io::bounded::read_bounded(&model, crate::io::bounded::MAX_CONFIG_BYTES)?;
                let sp = SentencePiece::from_bytes(&bytes)
                    .map_err(|e| Error::config(&model, format!("not a SentencePiece model: {e}")))?;
                let slow = Self::slow(dir, sp, &config, &map, [&bos_text, &eos_text, &unk_text])?;
                let id = |t: &str| slow.added_tokens().iter().find(|a| a.content == t).map(|a| a.id);
                let (bos, eos) = (id(&bos_text), id(&eos_text));
                Ok(Self { inner: Inner::Slow(Box::new(slow)), source, path: model, bos, add_bos, eos, add_eos })
            }
        }
    }

    /// The tokenizer a model's own code loads: original LLaVA / VoCo-LLaMA
    /// checkpoints the slow one (`use_fast=False`), others the fast one.
    pub fn for_model(dir: &Path, layout: CheckpointLayout) -> Result<Self> {
        let prefer = match layout {
            CheckpointLayout::LlavaOriginal => TokenizerSource::SentencePiece,
            CheckpointLayout::LlavaHf | CheckpointLayout::Llama => TokenizerSource::Json,
        };
        Self::from_dir(dir, prefer)
    }

    /// The added-token table as transformers builds it: the special tokens,
    /// `added_tokens.json`, and `added_tokens_decoder` of the config.
    fn slow(
        dir: &Path,
        sp: SentencePiece,
        config: &Value,
        map: &Value,
        named: [&String; 3],
    ) -> Result<SlowLlamaTokenizer> {
        let mut added: Vec<AddedToken> = Vec::new();
        fn add(added: &mut Vec<AddedToken>, content: &str, id: u32, special: bool, lstrip: bool, rstrip: bool) {
            match added.iter_mut().find(|t| t.content == content) {
                Some(t) => t.special |= special,
                None => added.push(AddedToken { content: content.to_string(), id, special, lstrip, rstrip }),
            }
        }
        let mut specials: Vec<String> = named.iter().map(|s| s.to_string()).collect();
        specials.extend(token_text(config.get("pad_token")).or_else(|| token_text(map.get("pad_token"))));
        for list in
            [config.get("additional_special_tokens"), map.get("additional_special_tokens")].into_iter().flatten()
        {
            if let Some(items) = list.as_array() {
                specials.extend(items.iter().filter_map(|v| token_text(Some(v))));
            }
        }
        let file = dir.join("added_tokens.json");
        if let Some(Value::Object(o)) = read_optional_json(&file)? {
            for (content, id) in o {
                let id = id
                    .as_u64()
                    .and_then(|i| u32::try_from(i).ok())
                    .ok_or_else(|| Error::config(&file, format!("the id of `{content}` is not a token id")))?;
                add(&mut added, &content, id, false, false, false);
            }
        }
        if let Some(Value::Object(o)) = config.get("added_tokens_decoder") {
            for (id, t) in o {
                let (Ok(id), Some(content)) = (id.parse::<u32>(), t.get("content").and_then(Value::as_str)) else {
                    return Err(Error::config(
                        &dir.join("tokenizer_config.json"),
                        format!("added_tokens_decoder entry `{id}` needs a numeric id and a content"),
                    ));
                };
                let flag = |k: &str| t.get(k).and_then(Value::as_bool).unwrap_or(false);
                add(&mut added, content, id, false, flag("lstrip"), flag("rstrip"));
            }
        }
        // The special tokens are always matched whole; their ids come from the SentencePiece model.
        for s in &specials {
            let id = added.iter().find(|t| &t.content == s).map(|t| t.id).unwrap_or_else(|| sp.piece_to_id(s));
            add(&mut added, s, id, true, false, false);
        }
        let legacy = config.get("legacy").and_then(Value::as_bool).unwrap_or(true);
        Ok(SlowLlamaTokenizer::new(sp, legacy, added, named[2].clone()))
    }

    /// Ids of `text` with BOS when the tokenizer adds it (as `tokenizer(text).input_ids`).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        match &self.inner {
            Inner::Json(t) => guarded(|| t.encode(text, true))
                .and_then(|r| r.map_err(|e| e.to_string()))
                .map(|e| e.get_ids().to_vec())
                .map_err(|e| Error::Invalid(format!("{}: cannot encode the text: {e}", self.path.display()))),
            Inner::Slow(t) => {
                let mut ids = Vec::new();
                if self.add_bos {
                    ids.extend(self.bos);
                }
                ids.extend(t.tokenize(text));
                if self.add_eos {
                    ids.extend(self.eos);
                }
                Ok(ids)
            }
        }
    }

    /// Ids of `text` whose byte ranges `user` are someone's words: special tokens
    /// written there are encoded as the characters they are (transformers'
    /// `split_special_tokens`), those of the rest as tokens. Text whose user ranges
    /// hold no special token is encoded exactly as [`Tokenizer::encode`] does.
    pub fn encode_marked(&self, text: &str, user: &[std::ops::Range<usize>]) -> Result<Vec<u32>> {
        let specials = self.special_texts();
        let forged = user.iter().any(|r| specials.iter().any(|s| overlaps_match(text, s, r)));
        if !forged {
            return self.encode(text);
        }
        match &self.inner {
            Inner::Slow(t) => {
                let mut ids = Vec::new();
                if self.add_bos {
                    ids.extend(self.bos);
                }
                ids.extend(t.tokenize_marked(text, user));
                if self.add_eos {
                    ids.extend(self.eos);
                }
                Ok(ids)
            }
            Inner::Json(t) => guarded(|| self.encode_json_marked(t, text, user)).unwrap_or_else(|e| {
                Err(Error::Invalid(format!("{}: cannot encode the text: {e}", self.path.display())))
            }),
        }
    }

    /// The texts of the special tokens (the slow tokenizer: every added token, as
    /// transformers' slow tokenizer splits on all of them).
    fn special_texts(&self) -> Vec<String> {
        match &self.inner {
            Inner::Json(t) => {
                t.get_added_tokens_decoder().values().filter(|a| a.special).map(|a| a.content.clone()).collect()
            }
            Inner::Slow(t) => t.added_tokens().iter().map(|a| a.content.clone()).collect(),
        }
    }

    /// tokenizer.json: split at the template's own special tokens, encode each piece
    /// with special-token matching off (a piece after the first without the `▁` that
    /// `prepend_scheme: first` gives only at the start of the input), and join.
    fn encode_json_marked(
        &self,
        t: &tokenizers::Tokenizer,
        text: &str,
        user: &[std::ops::Range<usize>],
    ) -> Result<Vec<u32>> {
        let fail =
            |e: tokenizers::Error| Error::Invalid(format!("{}: cannot encode the text: {e}", self.path.display()));
        let mut plain = t.clone();
        plain.set_encode_special_tokens(true);
        let mut later = plain.clone();
        if let Some(tokenizers::pre_tokenizers::PreTokenizerWrapper::Metaspace(m)) = later.get_pre_tokenizer() {
            let mut m = m.clone();
            if m.get_prepend_scheme() == tokenizers::pre_tokenizers::metaspace::PrependScheme::First {
                m.set_prepend_scheme(tokenizers::pre_tokenizers::metaspace::PrependScheme::Never);
            }
            later.with_pre_tokenizer(Some(m));
        }
        let specials: Vec<(String, u32)> = t
            .get_added_tokens_decoder()
            .iter()
            .filter(|(_, a)| a.special)
            .map(|(id, a)| (a.content.clone(), *id))
            .collect();
        let in_user = |a: usize, b: usize| user.iter().any(|r| a < r.end && r.start < b);
        // The template's special tokens, leftmost and longest first, none inside the user's words.
        let mut ids: Vec<u32> = t.encode("", true).map_err(fail)?.get_ids().to_vec();
        let (mut start, mut i) = (0, 0);
        let piece = |from: usize, to: usize, ids: &mut Vec<u32>| -> Result<()> {
            if from < to {
                let tok = if from == 0 { &plain } else { &later };
                ids.extend(tok.encode(&text[from..to], false).map_err(fail)?.get_ids());
            }
            Ok(())
        };
        while i < text.len() {
            let hit = specials
                .iter()
                .filter(|(s, _)| text[i..].starts_with(s.as_str()) && !in_user(i, i + s.len()))
                .max_by_key(|(s, _)| s.len());
            match hit {
                Some((s, id)) => {
                    piece(start, i, &mut ids)?;
                    ids.push(*id);
                    i += s.len();
                    start = i;
                }
                None => i += text[i..].chars().next().map_or(1, char::len_utf8),
            }
        }
        piece(start, text.len(), &mut ids)?;
        Ok(ids)
    }

    /// Text of `ids`, special tokens skipped.
    pub fn decode(&self, ids: &[u32]) -> String {
        match &self.inner {
            Inner::Json(t) => guarded(|| t.decode(ids, true)).ok().and_then(|r| r.ok()).unwrap_or_default(),
            Inner::Slow(t) => t.decode(ids),
        }
    }

    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        match &self.inner {
            Inner::Json(t) => t.token_to_id(token),
            Inner::Slow(t) => t.added_tokens().iter().find(|a| a.content == token).map(|a| a.id).or_else(|| {
                let id = t.sp.piece_to_id(token);
                (id != t.sp.unk_id() || token == "<unk>").then_some(id)
            }),
        }
    }

    pub fn bos_id(&self) -> Option<u32> {
        self.bos
    }

    pub fn eos_id(&self) -> Option<u32> {
        self.eos
    }

    /// Ids the tokenizer knows (base vocabulary and added tokens).
    pub fn vocab_size(&self) -> usize {
        match &self.inner {
            Inner::Json(t) => t.get_vocab_size(true),
            Inner::Slow(t) => t.sp.len().max(t.added_tokens().iter().map(|a| a.id as usize + 1).max().unwrap_or(0)),
        }
    }
}

/// Whether an occurrence of `s` in `text` overlaps the byte range `r`.
fn overlaps_match(text: &str, s: &str, r: &std::ops::Range<usize>) -> bool {
    !s.is_empty() && text.match_indices(s).any(|(i, _)| i < r.end && r.start < i + s.len())
}
