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

/// Vicuna v1's separator style (`SeparatorStyle.TWO`): `sep` " " after a
/// question, `sep2` "</s>" after an answer; the open turn ends in "ASSISTANT:".
fn vicuna_v1(system: &str, turns: &[(&str, Option<&str>)]) -> String {
    let mut s = format!("{system} ");
    for (q, a) in turns {
        s.push_str("USER: ");
        s.push_str(q);
        s.push(' ');
        match a {
            Some(a) => {
                s.push_str("ASSISTANT: ");
                s.push_str(a);
                s.push_str("</s>");
            }
            None => s.push_str("ASSISTANT:"),
        }
    }
    s
}

fn voco_prompt(voco_tokens: usize, system: &str, turns: &[(&str, Option<&str>)]) -> String {
    format!("{IMAGE_PLACEHOLDER}\n{}\n{}", VOCO_TOKEN.repeat(voco_tokens), vicuna_v1(system, turns).replace('\n', ""))
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
        match *self {
            Template::VocoVicunaV1 { voco_tokens } => voco_prompt(voco_tokens, VOCO_SYSTEM, turns),
            Template::VocoVideo { voco_tokens } => voco_prompt(voco_tokens, VOCO_VIDEO_SYSTEM, turns),
            Template::LlavaV1 => {
                let mut turns = turns.to_vec();
                let first = turns.first().map(|t| format!("{IMAGE_PLACEHOLDER}\n{}", t.0));
                if let (Some(t), Some(first)) = (turns.first_mut(), first.as_deref()) {
                    t.0 = first;
                }
                vicuna_v1(LLAVA_SYSTEM, &turns)
            }
        }
    }

    /// The ids of the first turn's whole prompt for `question`, and where the
    /// image stage ends in it: after the last `<voco>` (VoCo templates) or
    /// after `<image>` (`llava_v1`).
    pub fn first_turn_ids(&self, tokenizer: &Tokenizer, question: &str) -> Result<(Vec<i64>, usize)> {
        let ids = tokenizer_image_token(&self.prompt(&[(question, None)]), tokenizer)?;
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
        let q = match self {
            Template::VocoVicunaV1 { .. } | Template::VocoVideo { .. } => question.replace('\n', ""),
            Template::LlavaV1 => question.to_string(),
        };
        format!("</s>USER: {q} ASSISTANT:")
    }

    /// The ids of a later turn (see [`Template::next_turn`]), without the BOS a
    /// chunk after the first loses in `tokenizer_image_token`.
    pub fn next_turn_ids(&self, tokenizer: &Tokenizer, question: &str) -> Result<Vec<i64>> {
        let mut ids: Vec<i64> = tokenizer.encode(&self.next_turn(question))?.into_iter().map(i64::from).collect();
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
    let chunks = prompt.split(IMAGE_PLACEHOLDER).map(|c| tokenizer.encode(c)).collect::<Result<Vec<_>>>()?;
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
