//! Context accounting for video: how many frames fit in the model's context
//! at N VoCo tokens per frame, against the 576 (or however many) image tokens
//! a frame takes uncompressed.

use crate::error::Result;
use crate::model::llava::expand_ids;
use crate::text::{Template, Tokenizer};

/// Where a clip's positions go in the context: the text before and after the
/// frames, and each frame's VoCo tokens (or its image tokens, uncompressed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameBudget {
    /// The model's context (`max_position_embeddings`).
    pub context: usize,
    /// Positions one frame's image takes uncompressed.
    pub image_tokens: usize,
    /// VoCo tokens per frame.
    pub voco_tokens: usize,
    /// Positions through the first frame's last VoCo token (system prompt, one image, its VoCo tokens).
    pub first_frame_end: usize,
    /// Text positions of the video prompt before the frames (BOS, system prompt).
    pub text_before: usize,
    /// Text positions after the frames for an empty question (roles and separators).
    pub text_after: usize,
}

impl FrameBudget {
    pub fn new(tokenizer: &Tokenizer, context: usize, image_tokens: usize, voco_tokens: usize) -> Result<Self> {
        let template = Template::VocoVideo { voco_tokens };
        let (ids, end) = template.first_turn_ids(tokenizer, "")?;
        let first_frame_end = expand_ids(&ids[..end], image_tokens).len();
        Ok(Self {
            context,
            image_tokens,
            voco_tokens,
            first_frame_end,
            text_before: first_frame_end - image_tokens - voco_tokens,
            text_after: ids.len() - end,
        })
    }

    /// Positions `frames` frames take in VoCo form, placed frame after frame (system prompt included).
    pub fn voco_positions(&self, frames: usize) -> usize {
        self.first_frame_end + frames.saturating_sub(1) * self.voco_tokens
    }

    /// Frames that fit in VoCo form, frame after frame, leaving `reserve`
    /// positions for the question and the answer.
    pub fn voco_frames(&self, reserve: usize) -> usize {
        let room = self.context.saturating_sub(reserve + self.text_after);
        if room < self.first_frame_end { 0 } else { 1 + (room - self.first_frame_end) / self.voco_tokens }
    }

    /// Frames that fit uncompressed (every image token in the context), leaving `reserve`.
    pub fn image_frames(&self, reserve: usize) -> usize {
        self.context.saturating_sub(reserve + self.text_before + self.text_after) / self.image_tokens.max(1)
    }
}
