//! Which key each query may see: the attention layout passed to every LLaMA
//! forward, as a structure rather than a mask.
//!
//! Plain causal attention, optionally with left padding per sample; a VoCo
//! span per sample makes rows after the last VoCo token blind to everything
//! before the first one (`voco-spec.md` §3). The kernels get it as a
//! [`KeyRule`]: a few integers, never an L×L tensor.

use vocollama_kernels::{KeyRule, SampleRule};

/// First and last VoCo key index of one sample (inclusive).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VocoSpan {
    pub first: usize,
    pub last: usize,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AttentionLayout {
    /// Per sample: keys `0..n` are padding. Empty: no padding anywhere.
    pub left_padding: Vec<usize>,
    /// Per sample: its VoCo span, if the sequence has VoCo tokens. Empty: none.
    pub voco: Vec<Option<VocoSpan>>,
}

impl AttentionLayout {
    /// Plain causal attention for every sample.
    pub fn causal() -> Self {
        Self::default()
    }

    pub fn with_left_padding(mut self, left_padding: Vec<usize>) -> Self {
        self.left_padding = left_padding;
        self
    }

    pub fn with_voco(mut self, voco: Vec<Option<VocoSpan>>) -> Self {
        self.voco = voco;
        self
    }

    /// The rule for the kernels (key indices count from the start of the KV cache).
    pub fn key_rule(&self) -> KeyRule {
        let n = self.left_padding.len().max(self.voco.len());
        let samples = (0..n)
            .map(|b| SampleRule {
                left_padding: self.left_padding.get(b).copied().unwrap_or(0),
                voco: self.voco.get(b).copied().flatten().map(|s| (s.first, s.last)),
            })
            .collect();
        KeyRule { causal: true, samples }
    }
}
