//! A SentencePiece BPE model (`tokenizer.model`) read and run in Rust, with
//! the ids and text of the `sentencepiece` library: identity normalisation,
//! the dummy `▁` prefix, merges by score, byte fallback.

use std::collections::HashMap;

/// A piece's kind, as `sentencepiece_model.proto` numbers them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PieceType {
    Normal,
    Unknown,
    Control,
    UserDefined,
    Unused,
    Byte,
}

#[derive(Debug, Clone)]
pub struct Piece {
    pub piece: String,
    pub score: f32,
    pub kind: PieceType,
}

/// The parts of `ModelProto` that encoding and decoding read.
#[derive(Debug, Clone)]
pub struct SentencePiece {
    pub pieces: Vec<Piece>,
    pub byte_fallback: bool,
    pub add_dummy_prefix: bool,
    pub remove_extra_whitespaces: bool,
    pub escape_whitespaces: bool,
    pub treat_whitespace_as_suffix: bool,
    unk_id: u32,
    unk_surface: String,
    /// Normal, user-defined and unused pieces: what merges may produce.
    mergeable: HashMap<String, u32>,
    /// Control, unknown and byte pieces, looked up first as sentencepiece does.
    reserved: HashMap<String, u32>,
    /// User-defined pieces, matched whole before merging.
    user_defined: Vec<String>,
    bytes: [u32; 256],
}

const SPACE: char = '\u{2581}';

impl SentencePiece {
    /// Parse a serialised `ModelProto`; the error says which part is wrong.
    pub fn from_bytes(data: &[u8]) -> Result<Self, String> {
        let mut pieces = Vec::new();
        let (mut model_type, mut byte_fallback, mut unk_surface) = (1u64, false, " \u{2047} ".to_string());
        let mut treat_whitespace_as_suffix = false;
        let (mut name, mut charsmap) = (String::new(), false);
        let (mut add_dummy_prefix, mut remove_extra_whitespaces, mut escape_whitespaces) = (true, true, true);
        for field in Fields::new(data) {
            match field? {
                (1, Value::Bytes(b)) => pieces.push(parse_piece(b)?),
                (2, Value::Bytes(b)) => {
                    for f in Fields::new(b) {
                        match f? {
                            (3, Value::Varint(v)) => model_type = v,
                            (24, Value::Varint(v)) => treat_whitespace_as_suffix = v != 0,
                            (35, Value::Varint(v)) => byte_fallback = v != 0,
                            (44, Value::Bytes(s)) => unk_surface = utf8(s, "trainer_spec.unk_surface")?,
                            _ => {}
                        }
                    }
                }
                (3, Value::Bytes(b)) => {
                    for f in Fields::new(b) {
                        match f? {
                            (1, Value::Bytes(s)) => name = utf8(s, "normalizer_spec.name")?,
                            (2, Value::Bytes(s)) => charsmap = !s.is_empty(),
                            (3, Value::Varint(v)) => add_dummy_prefix = v != 0,
                            (4, Value::Varint(v)) => remove_extra_whitespaces = v != 0,
                            (5, Value::Varint(v)) => escape_whitespaces = v != 0,
                            _ => {}
                        }
                    }
                }
                _ => {}
            }
        }
        if model_type != 2 {
            let kind = match model_type {
                1 => "unigram",
                3 => "word",
                4 => "char",
                _ => "unknown",
            };
            return Err(format!("trainer_spec.model_type is {kind}; only BPE models (LLaMA's) are supported"));
        }
        if charsmap || !(name.is_empty() || name == "identity") {
            return Err(format!(
                "normalizer_spec `{name}` with a precompiled character map is not supported (LLaMA uses `identity`)"
            ));
        }
        if pieces.is_empty() {
            return Err("the model holds no pieces".into());
        }
        let mut sp = SentencePiece {
            pieces,
            byte_fallback,
            add_dummy_prefix,
            remove_extra_whitespaces,
            escape_whitespaces,
            treat_whitespace_as_suffix,
            unk_id: 0,
            unk_surface,
            mergeable: HashMap::new(),
            reserved: HashMap::new(),
            user_defined: Vec::new(),
            bytes: [u32::MAX; 256],
        };
        let mut unk = None;
        for (i, p) in sp.pieces.iter().enumerate() {
            let id = i as u32;
            let map = match p.kind {
                PieceType::Normal | PieceType::UserDefined | PieceType::Unused => &mut sp.mergeable,
                _ => &mut sp.reserved,
            };
            if map.insert(p.piece.clone(), id).is_some() {
                return Err(format!("piece `{}` appears twice", p.piece));
            }
            match p.kind {
                PieceType::UserDefined => sp.user_defined.push(p.piece.clone()),
                PieceType::Unknown => unk = Some(id),
                PieceType::Byte => {
                    let b = byte_piece(&p.piece).ok_or_else(|| format!("byte piece `{}` is not <0xXX>", p.piece))?;
                    sp.bytes[b as usize] = id;
                }
                _ => {}
            }
        }
        sp.unk_id = unk.ok_or("the model has no <unk> piece")?;
        if sp.byte_fallback && sp.bytes.contains(&u32::MAX) {
            return Err("byte_fallback is set but the 256 <0xXX> pieces are not all present".into());
        }
        // Longest first, so a prefix match takes the longest user-defined piece.
        sp.user_defined.sort_by_key(|s| std::cmp::Reverse(s.len()));
        Ok(sp)
    }

    pub fn len(&self) -> usize {
        self.pieces.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pieces.is_empty()
    }

    pub fn unk_id(&self) -> u32 {
        self.unk_id
    }

    /// The id of a piece string (`<unk>`'s id when absent), as `PieceToId`.
    pub fn piece_to_id(&self, piece: &str) -> u32 {
        self.reserved.get(piece).or_else(|| self.mergeable.get(piece)).copied().unwrap_or(self.unk_id)
    }

    /// The normaliser: identity rules, optional whitespace cleanup, dummy prefix, `▁` for spaces.
    fn normalize(&self, text: &str, add_dummy_prefix: bool) -> String {
        let text = if self.remove_extra_whitespaces {
            text.split(' ').filter(|w| !w.is_empty()).collect::<Vec<_>>().join(" ")
        } else {
            text.to_string()
        };
        if text.is_empty() {
            return text;
        }
        let mut s = String::with_capacity(text.len() + 3);
        let space = if self.escape_whitespaces { SPACE } else { ' ' };
        if add_dummy_prefix && !self.treat_whitespace_as_suffix {
            s.push(space);
        }
        s.extend(text.chars().map(|c| if c == ' ' { space } else { c }));
        if add_dummy_prefix && self.treat_whitespace_as_suffix {
            s.push(space);
        }
        s
    }

    /// `sp.encode(text)`: ids of the normalised text.
    pub fn encode(&self, text: &str) -> Vec<u32> {
        self.encode_with(text, self.add_dummy_prefix)
    }

    /// Encode with the dummy prefix switched on or off (transformers turns it
    /// off for non-legacy tokenizers).
    pub fn encode_with(&self, text: &str, add_dummy_prefix: bool) -> Vec<u32> {
        let normalized = self.normalize(text, add_dummy_prefix);
        let (symbols, unused_merges) = self.bpe(&normalized);
        let mut out = Vec::new();
        for sym in symbols {
            self.emit(sym, &unused_merges, &mut out);
        }
        out
    }

    /// Initial symbols (characters, or whole user-defined pieces), then merges:
    /// always the adjacent pair whose joined piece scores highest, leftmost on
    /// ties. Also returns how each unused piece that was formed was merged.
    fn bpe<'a>(&self, text: &'a str) -> (Vec<&'a str>, HashMap<&'a str, (&'a str, &'a str)>) {
        // Symbols as byte spans of `text`, linked left to right; a merged pair keeps the left index.
        let mut spans: Vec<(usize, usize)> = Vec::new();
        let mut at = 0;
        while let Some(c) = text[at..].chars().next() {
            let rest = &text[at..];
            let len = self.user_defined.iter().find(|u| rest.starts_with(u.as_str())).map_or(c.len_utf8(), |u| u.len());
            spans.push((at, at + len));
            at += len;
        }
        let n = spans.len();
        let mut prev: Vec<Option<usize>> = (0..n).map(|i| i.checked_sub(1)).collect();
        let mut next: Vec<usize> = (1..=n).collect();
        let mut unused_merges = HashMap::new();
        let candidate = |spans: &[(usize, usize)], l: usize, r: usize| -> Option<Candidate> {
            let piece = &text[spans[l].0..spans[r].1];
            let id = *self.mergeable.get(piece)?;
            Some(Candidate { score: self.pieces[id as usize].score, left: l, right: r, len: piece.len(), id })
        };
        let mut heap: std::collections::BinaryHeap<Candidate> =
            (1..n).filter_map(|i| candidate(&spans, i - 1, i)).collect();
        while let Some(c) = heap.pop() {
            // Stale: a side was merged away, or grew, since this pair was queued.
            let (l, r) = (c.left, c.right);
            let dead = |i: usize| spans[i].0 == spans[i].1;
            if dead(l) || dead(r) || next[l] != r || spans[r].1 - spans[l].0 != c.len {
                continue;
            }
            if self.pieces[c.id as usize].kind == PieceType::Unused {
                let (a, b) = (&text[spans[l].0..spans[l].1], &text[spans[r].0..spans[r].1]);
                unused_merges.insert(&text[spans[l].0..spans[r].1], (a, b));
            }
            spans[l].1 = spans[r].1;
            spans[r].1 = spans[r].0;
            next[l] = next[r];
            if next[r] < n {
                prev[next[r]] = Some(l);
            }
            if let Some(p) = prev[l] {
                heap.extend(candidate(&spans, p, l));
            }
            if next[l] < n {
                heap.extend(candidate(&spans, l, next[l]));
            }
        }
        let mut out = Vec::new();
        let mut i = 0;
        while i < n {
            out.push(&text[spans[i].0..spans[i].1]);
            i = next[i];
        }
        (out, unused_merges)
    }

    /// One final symbol as ids: its piece, the pieces an unused piece was merged
    /// from, or its UTF-8 bytes when it is not in the vocabulary.
    fn emit(&self, sym: &str, unused_merges: &HashMap<&str, (&str, &str)>, out: &mut Vec<u32>) {
        let id = self.piece_to_id(sym);
        if id != self.unk_id {
            match unused_merges.get(sym) {
                Some((a, b)) if self.pieces[id as usize].kind == PieceType::Unused => {
                    self.emit(a, unused_merges, out);
                    self.emit(b, unused_merges, out);
                }
                _ => out.push(id),
            }
        } else if self.byte_fallback {
            out.extend(sym.bytes().map(|b| self.bytes[b as usize]));
        } else {
            out.push(self.unk_id);
        }
    }

    /// `sp.decode(ids)`: control pieces vanish, `<unk>` is rendered, byte runs
    /// decode as UTF-8 (one U+FFFD per invalid byte), and the dummy prefix goes.
    pub fn decode(&self, ids: &[u32]) -> String {
        let mut out = String::new();
        let mut pending: Vec<u8> = Vec::new();
        // The first piece of the text loses its dummy prefix.
        let mut first = true;
        for &id in ids {
            let Some(p) = self.pieces.get(id as usize) else { continue };
            if p.kind == PieceType::Byte {
                pending.push(byte_piece(&p.piece).unwrap_or(0));
                continue;
            }
            flush_bytes(&mut pending, &mut out, &mut first);
            match p.kind {
                PieceType::Control => {}
                PieceType::Unknown => {
                    out.push_str(&self.unk_surface);
                    first = false;
                }
                _ => {
                    let mut s = p.piece.as_str();
                    if first && self.add_dummy_prefix && !self.treat_whitespace_as_suffix {
                        s = s.strip_prefix(SPACE).unwrap_or(s);
                    }
                    out.extend(s.chars().map(|c| if c == SPACE { ' ' } else { c }));
                    first = false;
                }
            }
        }
        flush_bytes(&mut pending, &mut out, &mut first);
        out
    }
}

fn flush_bytes(pending: &mut Vec<u8>, out: &mut String, first: &mut bool) {
    if pending.is_empty() {
        return;
    }
    let mut rest = &pending[..];
    while !rest.is_empty() {
        match std::str::from_utf8(rest) {
            Ok(s) => {
                out.push_str(s);
                break;
            }
            Err(e) => {
                let good = e.valid_up_to();
                out.push_str(std::str::from_utf8(&rest[..good]).expect("checked prefix"));
                out.push('\u{FFFD}');
                rest = &rest[good + 1..];
            }
        }
    }
    pending.clear();
    *first = false;
}

#[derive(Debug)]
struct Candidate {
    score: f32,
    left: usize,
    right: usize,
    len: usize,
    id: u32,
}

impl PartialEq for Candidate {
    fn eq(&self, o: &Self) -> bool {
        self.cmp(o) == std::cmp::Ordering::Equal
    }
}
impl Eq for Candidate {}
impl PartialOrd for Candidate {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Candidate {
    /// Max-heap order: higher score first, then the leftmost pair.
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        self.score.total_cmp(&o.score).then(o.left.cmp(&self.left))
    }
}

fn byte_piece(p: &str) -> Option<u8> {
    let hex = p.strip_prefix("<0x")?.strip_suffix('>')?;
    if hex.len() != 2 {
        return None;
    }
    u8::from_str_radix(hex, 16).ok()
}

fn utf8(b: &[u8], what: &str) -> Result<String, String> {
    String::from_utf8(b.to_vec()).map_err(|_| format!("{what} is not UTF-8"))
}

fn parse_piece(data: &[u8]) -> Result<Piece, String> {
    let mut p = Piece { piece: String::new(), score: 0.0, kind: PieceType::Normal };
    for f in Fields::new(data) {
        match f? {
            (1, Value::Bytes(s)) => p.piece = utf8(s, "a piece")?,
            (2, Value::Fixed32(v)) => p.score = f32::from_bits(v),
            (3, Value::Varint(v)) => {
                p.kind = match v {
                    1 => PieceType::Normal,
                    2 => PieceType::Unknown,
                    3 => PieceType::Control,
                    4 => PieceType::UserDefined,
                    5 => PieceType::Unused,
                    6 => PieceType::Byte,
                    t => return Err(format!("piece type {t} is unknown")),
                }
            }
            _ => {}
        }
    }
    Ok(p)
}

/// The protobuf wire format, just enough to walk `ModelProto`.
enum Value<'a> {
    Varint(u64),
    Fixed64,
    Bytes(&'a [u8]),
    Fixed32(u32),
}

struct Fields<'a> {
    data: &'a [u8],
    failed: bool,
}

impl<'a> Fields<'a> {
    fn new(data: &'a [u8]) -> Self {
        Self { data, failed: false }
    }

    fn varint(&mut self) -> Result<u64, String> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let (&b, rest) = self.data.split_first().ok_or("truncated varint")?;
            self.data = rest;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err("varint longer than 10 bytes".into())
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if self.data.len() < n {
            return Err("truncated field".into());
        }
        let (a, b) = self.data.split_at(n);
        self.data = b;
        Ok(a)
    }

    fn field(&mut self) -> Result<(u64, Value<'a>), String> {
        let key = self.varint()?;
        let value = match key & 7 {
            0 => Value::Varint(self.varint()?),
            1 => {
                self.take(8)?;
                Value::Fixed64
            }
            2 => {
                let n = usize::try_from(self.varint()?).map_err(|_| "field length overflows")?;
                Value::Bytes(self.take(n)?)
            }
            5 => Value::Fixed32(u32::from_le_bytes(self.take(4)?.try_into().expect("4 bytes"))),
            t => return Err(format!("wire type {t} is not valid protobuf")),
        };
        Ok((key >> 3, value))
    }
}

impl<'a> Iterator for Fields<'a> {
    type Item = Result<(u64, Value<'a>), String>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.data.is_empty() {
            return None;
        }
        let f = self.field();
        self.failed = f.is_err();
        Some(f)
    }
}
