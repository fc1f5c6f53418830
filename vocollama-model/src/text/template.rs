//! Conversation templates (`docs/design.md` §3) and LLaVA's
//! `tokenizer_image_token`: the exact prompt text and ids the models were trained on.

use super::Tokenizer;
use crate::error::{Error, Result};
use crate::model::llava::IMAGE_TOKEN_INDEX;

/// The system prompt of VoCo-LLaMA's `voco_conv_vicuna_v1`.
pub const VOCO_SYSTEM: &str = "A chat between a curious user and an artificial intelligence assistant of the image. \
The assistant gives helpful, detailed, and polite answers to the user's questions.";

/// The video system prompt of VoCo-LLaMA's templates (`docs/design.md` §8).
pub const VOCO_VIDEO_SYSTEM: &str = "A chat between a curious user and an artificial intelligence assistant of the video. \
The assistant carefully watch the video and pay attention to the cause and sequence of events, the detail and \
movement of objects, and the action and pose of persons. Based on his observations, give the answer that best \
addresses the question.";

/// The system prompt of LLaVA-1.5's `conv_llava_v1`.
pub const LLAVA_SYSTEM: &str = "A chat between a curious human and an artificial intelligence assistant. \
The assistant gives helpful, detailed, and polite answers to the human's questions.";

/// The placeholder split out of the prompt text, replaced by the image's embeddings.
pub const IMAGE_PLACEHOLDER: &str = "<image>";
/// VoCo-LLaMA's compression token.
pub const VOCO_TOKEN: &str = "<voco>";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Template {
    /// `voco_vicuna_v1`: `<image>\n<voco>*N\n` first, then the vicuna_v1
    /// conversation with every `\n` removed.
    VocoVicunaV1 { voco_tokens: usize },
    /// The same layout with the video system prompt; the text follows the last
    /// frame's VoCo tokens (the prompt shows one frame's stage 1, which every frame repeats).
    VocoVideo { voco_tokens: usize },
    /// `llava_v1`: vicuna_v1 with `<image>\n` at the start of the first question.
    LlavaV1,
}

/// A prompt's text and the byte ranges in it that are someone's own words
/// (questions, answers): there special-token strings are text, not tokens.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Prompt {
    pub text: String,
    pub user: Vec<std::ops::Range<usize>>,
}

impl Prompt {
    /// Template text: its special tokens are tokens.
    fn template(&mut self, s: &str) {
        self.text.push_str(s);
    }

    /// A user's words (as text whatever they contain).
    fn user(&mut self, s: &str) {
        let start = self.text.len();
        self.text.push_str(s);
        if !s.is_empty() {
            self.user.push(start..self.text.len());
        }
    }
}

/// Vicuna v1's separator style (`SeparatorStyle.TWO`): `sep` " " after a
/// question, `sep2` "</s>" after an answer; the open turn ends in "ASSISTANT:".
/// `image_first` puts `<image>\n` before the first question (llava_v1);
/// `strip_newlines` drops every `\n` (the VoCo templates do, over the whole conversation).
fn vicuna_v1(p: &mut Prompt, system: System, turns: &[(&str, Option<&str>)], image_first: bool, strip_newlines: bool) {
    let clean = |s: &str| if strip_newlines { s.replace('\n', "") } else { s.to_string() };
    match system {
        System::Template(s) => p.template(&format!("{} ", clean(s))),
        System::User(s) => {
            p.user(&clean(s));
            p.template(" ");
        }
    }
    for (i, (q, a)) in turns.iter().enumerate() {
        p.template("USER: ");
        if i == 0 && image_first {
            p.template(&format!("{IMAGE_PLACEHOLDER}\n"));
        }
        p.user(&clean(q));
        p.template(" ");
        match a {
            Some(a) => {
                p.template("ASSISTANT: ");
                p.user(&clean(a));
                p.template("</s>");
            }
            None => p.template("ASSISTANT:"),
        }
    }
}

/// A conversation's system prompt: the template's own, or one a user gave (their words, as text).
#[derive(Clone, Copy)]
enum System<'a> {
    Template(&'a str),
    User(&'a str),
}

fn voco_prompt(voco_tokens: usize, system: System, turns: &[(&str, Option<&str>)]) -> Prompt {
    let mut p = Prompt::default();
    p.template(&format!("{IMAGE_PLACEHOLDER}\n{}\n", VOCO_TOKEN.repeat(voco_tokens)));
    vicuna_v1(&mut p, system, turns, false, true);
    p
}

impl Template {
    /// VoCo-LLaMA's image template with `n` VoCo tokens (at least one).
    pub fn voco(n: usize) -> Result<Self> {
        if n == 0 {
            return Err(Error::Invalid("--voco-tokens must be at least 1".into()));
        }
        Ok(Template::VocoVicunaV1 { voco_tokens: n })
    }

    /// The whole prompt text for `turns` (the last one usually unanswered).
    pub fn prompt(&self, turns: &[(&str, Option<&str>)]) -> String {
        self.prompt_parts(turns).text
    }

    /// The prompt for `turns` with the questions and answers marked as the user's words.
    pub fn prompt_parts(&self, turns: &[(&str, Option<&str>)]) -> Prompt {
        self.prompt_parts_with_system(None, turns)
    }

    /// [`Template::prompt_parts`] with `system` (a user's words) in place of the
    /// template's system prompt. In the VoCo templates the system prompt follows
    /// the VoCo tokens, so the image's part of the prompt is the same whatever it is.
    pub fn prompt_parts_with_system(&self, system: Option<&str>, turns: &[(&str, Option<&str>)]) -> Prompt {
        let pick = |own: &'static str| system.map_or(System::Template(own), System::User);
        match *self {
            Template::VocoVicunaV1 { voco_tokens } => voco_prompt(voco_tokens, pick(VOCO_SYSTEM), turns),
            Template::VocoVideo { voco_tokens } => voco_prompt(voco_tokens, pick(VOCO_VIDEO_SYSTEM), turns),
            Template::LlavaV1 => {
                let mut p = Prompt::default();
                vicuna_v1(&mut p, pick(LLAVA_SYSTEM), turns, true, false);
                p
            }
        }
    }

    /// The ids of the first turn's whole prompt for `question`, and where the
    /// image stage ends in it: after the last `<voco>` (VoCo templates) or
    /// after `<image>` (`llava_v1`).
    pub fn first_turn_ids(&self, tokenizer: &Tokenizer, question: &str) -> Result<(Vec<i64>, usize)> {
        let ids = prompt_ids(&self.prompt_parts(&[(question, None)]), tokenizer)?;
        let end = match self {
            Template::VocoVicunaV1 { .. } | Template::VocoVideo { .. } => {
                let voco = voco_id(tokenizer)?;
                ids.iter().rposition(|&t| t == voco)
            }
            Template::LlavaV1 => ids.iter().position(|&t| t == IMAGE_TOKEN_INDEX),
        };
        let end = end.ok_or_else(|| Error::Invalid("the prompt lost its image placeholder".into()))?;
        Ok((ids, end + 1))
    }

    /// The text of a later turn after an answer: `</s>USER: q ASSISTANT:`.
    /// `</s>` is a special token, so the tokenizer encodes what follows it on
    /// its own: these ids equal the tail of the re-tokenized whole conversation.
    pub fn next_turn(&self, question: &str) -> String {
        self.next_turn_parts(question).text
    }

    fn next_turn_parts(&self, question: &str) -> Prompt {
        let q = match self {
            Template::VocoVicunaV1 { .. } | Template::VocoVideo { .. } => question.replace('\n', ""),
            Template::LlavaV1 => question.to_string(),
        };
        let mut p = Prompt::default();
        p.template("</s>USER: ");
        p.user(&q);
        p.template(" ASSISTANT:");
        p
    }

    /// The ids of a later turn (see [`Template::next_turn`]), without the BOS a
    /// chunk after the first loses in `tokenizer_image_token`.
    pub fn next_turn_ids(&self, tokenizer: &Tokenizer, question: &str) -> Result<Vec<i64>> {
        let p = self.next_turn_parts(question);
        let mut ids: Vec<i64> = tokenizer.encode_marked(&p.text, &p.user)?.into_iter().map(i64::from).collect();
        if ids.first().and_then(|&t| u32::try_from(t).ok()).is_some_and(|t| Some(t) == tokenizer.bos_id()) {
            ids.remove(0);
        }
        Ok(ids)
    }
}

/// `<voco>`'s id from the tokenizer; its absence means the model is not a VoCo model.
pub fn voco_id(tokenizer: &Tokenizer) -> Result<i64> {
    tokenizer.token_to_id(VOCO_TOKEN).map(i64::from).ok_or_else(|| {
        Error::Invalid(format!(
            "the tokenizer ({}) has no {VOCO_TOKEN} token: not a VoCo-LLaMA model (use --compression none)",
            tokenizer.path.display()
        ))
    })
}

/// LLaVA's `tokenizer_image_token`: split on `<image>`, encode each chunk with
/// BOS, keep the first chunk's BOS and drop the others', and put
/// [`IMAGE_TOKEN_INDEX`] where each `<image>` was.
pub fn tokenizer_image_token(prompt: &str, tokenizer: &Tokenizer) -> Result<Vec<i64>> {
    prompt_ids(&Prompt { text: prompt.to_string(), user: Vec::new() }, tokenizer)
}

/// [`tokenizer_image_token`] of a prompt whose user's words are text: an `<image>`,
/// `<voco>` or `</s>` typed by a user is encoded as the characters it is.
pub fn prompt_ids(prompt: &Prompt, tokenizer: &Tokenizer) -> Result<Vec<i64>> {
    let text = &prompt.text;
    let in_user = |at: usize| prompt.user.iter().any(|r| r.start <= at && at < r.end);
    // Chunks between the template's own `<image>` placeholders, each with its user ranges.
    let mut cuts: Vec<usize> = text.match_indices(IMAGE_PLACEHOLDER).map(|(i, _)| i).filter(|&i| !in_user(i)).collect();
    cuts.push(text.len());
    let mut chunks = Vec::new();
    let mut start = 0;
    for cut in cuts {
        let ranges: Vec<std::ops::Range<usize>> = prompt
            .user
            .iter()
            .filter(|r| r.start >= start && r.end <= cut)
            .map(|r| r.start - start..r.end - start)
            .collect();
        chunks.push(tokenizer.encode_marked(&text[start..cut], &ranges)?);
        start = (cut + IMAGE_PLACEHOLDER.len()).min(text.len());
    }
    let bos = tokenizer.bos_id();
    let offset = usize::from(chunks.first().and_then(|c| c.first()).is_some_and(|&t| Some(t) == bos));
    let mut ids: Vec<i64> = Vec::new();
    if offset == 1 {
        ids.push(i64::from(chunks[0][0]));
    }
    for (i, chunk) in chunks.iter().enumerate() {
        if i > 0 {
            // The separator is [IMAGE; offset + 1] with its first `offset` entries dropped: one placeholder.
            ids.push(IMAGE_TOKEN_INDEX);
        }
        ids.extend(chunk.iter().skip(offset).map(|&t| i64::from(t)));
    }
    Ok(ids)
}
