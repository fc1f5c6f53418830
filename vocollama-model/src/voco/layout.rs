//! Which key each query may see: the attention layout passed to every LLaMA
//! forward, as a structure rather than a mask.
//!
//! Plain causal attention, optionally with left padding per sample; a VoCo
//! span per sample makes rows after the last VoCo token blind to everything
//! before the first one (`docs/design.md` §4). The kernels get it as a
//! [`KeyRule`]: a few integers, never an L×L tensor.

use vocollama_kernels::{KeyRule, SampleRule};

/// First and last VoCo key index of one sample (inclusive).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VocoSpan {
    pub first: usize,
    pub last: usize,
}

impl VocoSpan {
    /// First and last position holding `voco_id`, if any.
    pub fn find(ids: &[i64], voco_id: i64) -> Option<Self> {
        let first = ids.iter().position(|&t| t == voco_id)?;
        let last = ids.iter().rposition(|&t| t == voco_id)?;
        Some(Self { first, last })
    }

    pub fn len(&self) -> usize {
        self.last + 1 - self.first
    }

    pub fn is_empty(&self) -> bool {
        false
    }
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

    /// The layout of one sequence, VoCo tokens located by id (`docs/design.md` §4):
    /// plain causal when it holds none. `ids` has one entry per position
    /// (image placeholders already expanded).
    pub fn for_sequence(ids: &[i64], voco_id: i64) -> Self {
        Self::causal().with_voco(vec![VocoSpan::find(ids, voco_id)])
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn voco_is_located_by_id_per_sample() {
        let ids = [1, -200, -200, 29871, 13, 7, 7, 29871, 13, 100];
        let l = AttentionLayout::for_sequence(&ids, 7);
        assert_eq!(l.voco, vec![Some(VocoSpan { first: 5, last: 6 })]);
        let rule = l.key_rule();
        assert!(rule.visible(0, 9, 5, 10, 10) && !rule.visible(0, 9, 4, 10, 10));
        assert!(rule.visible(0, 6, 0, 10, 10), "VoCo rows see the image");
        assert_eq!(
            AttentionLayout::for_sequence(&ids, 8).key_rule(),
            vocollama_kernels::KeyRule { causal: true, samples: vec![Default::default()] }
        );
    }
}
