//! Scaled dot-product attention with grouped-query heads and a structural key rule.

use burn::tensor::module::attention as burn_attention;
use burn::tensor::ops::AttentionModuleOptions;
use burn::tensor::{Bool, Tensor, TensorData};

/// Which keys one batch sample hides, in key indices of the full key sequence.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SampleRule {
    /// Keys `0..left_padding` are padding and never seen.
    pub left_padding: usize,
    /// VoCo span `(first, last)`: query rows after `last` see no key before `first`.
    pub voco: Option<(usize, usize)>,
}

/// Which keys every query row may see.
///
/// The queries are always the last `Lq` entries of the key sequence (self
/// attention over a cache), so query row `i` has key index `Lk - Lq + i`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyRule {
    /// A query sees only keys at or before its own index.
    pub causal: bool,
    /// One rule per batch sample; empty means "no padding, no VoCo" for all.
    pub samples: Vec<SampleRule>,
    /// An explicit `[batch, lq, lk]` mask (`true` = hidden) that replaces the
    /// rest: for layouts no structure describes (the slow-way references of
    /// tests). Only the tensor-op reference takes it.
    pub mask: Option<Vec<bool>>,
}

impl KeyRule {
    /// Plain causal attention.
    pub fn causal() -> Self {
        Self { causal: true, samples: Vec::new(), mask: None }
    }

    /// Every query sees every key (the CLIP encoder).
    pub fn full() -> Self {
        Self { causal: false, samples: Vec::new(), mask: None }
    }

    fn sample(&self, b: usize) -> SampleRule {
        self.samples.get(b).copied().unwrap_or_default()
    }

    /// Whether the rule is nothing but (optionally causal) attention.
    pub fn is_plain(&self) -> bool {
        self.mask.is_none() && self.samples.iter().all(|s| *s == SampleRule::default())
    }

    /// May query row `qi` (of `lq`) see key `kj` (of `lk`) in sample `b`?
    pub fn visible(&self, b: usize, qi: usize, kj: usize, lq: usize, lk: usize) -> bool {
        if let Some(mask) = &self.mask {
            return !mask[(b * lq + qi) * lk + kj];
        }
        let q = lk - lq + qi;
        let s = self.sample(b);
        if self.causal && kj > q {
            return false;
        }
        if kj < s.left_padding {
            return false;
        }
        if let Some((first, last)) = s.voco
            && q > last
            && kj < first
        {
            return false;
        }
        true
    }

    /// The dense `[batch, lq, lk]` form, `true` = hidden. For tests and for the
    /// reference path only: fast paths never build it.
    pub fn dense(&self, batch: usize, lq: usize, lk: usize) -> Vec<bool> {
        let mut out = Vec::with_capacity(batch * lq * lk);
        for b in 0..batch {
            for i in 0..lq {
                for j in 0..lk {
                    out.push(!self.visible(b, i, j, lq, lk));
                }
            }
        }
        out
    }
}

/// softmax(Q Kᵀ / √d) V over `q: [b, heads, lq, d]`, `k, v: [b, kv_heads, lk, d]`.
///
/// `heads` must be a multiple of `kv_heads`; each group of `heads / kv_heads`
/// query heads reads one key/value head. CubeCL devices run the fused kernel
/// ([`crate::fused`]); others the tensor-op [`reference`].
pub fn attention(q: Tensor<4>, k: Tensor<4>, v: Tensor<4>, rule: &KeyRule) -> Tensor<4> {
    let [_, heads, _, _] = q.dims();
    let [_, kv_heads, _, _] = k.dims();
    assert!(heads % kv_heads == 0, "{heads} query heads are not a multiple of {kv_heads} key/value heads");
    if rule.mask.is_none() && crate::fused::available(&q.device()) {
        return crate::fused::fused_attention(q, k, v, rule).expect("a fused-attention device");
    }
    reference(q, k, v, rule)
}

/// The tensor-op definition: Burn's attention with repeated key/value heads and,
/// when the rule is not plain, a dense mask.
pub fn reference(q: Tensor<4>, k: Tensor<4>, v: Tensor<4>, rule: &KeyRule) -> Tensor<4> {
    let [b, heads, lq, _] = q.dims();
    let [_, kv_heads, lk, _] = k.dims();
    let (k, v) = (repeat_kv(k, heads / kv_heads), repeat_kv(v, heads / kv_heads));
    if rule.is_plain() {
        let options = AttentionModuleOptions { is_causal: rule.causal && lq > 1, ..Default::default() };
        return burn_attention(q, k, v, None, None, options);
    }
    let device = q.device();
    let mask = Tensor::<3, Bool>::from_data(TensorData::new(rule.dense(b, lq, lk), [b, lq, lk]), &device)
        .unsqueeze_dim::<4>(1)
        .expand([b, heads, lq, lk]);
    burn_attention(q, k, v, Some(mask), None, AttentionModuleOptions::default())
}

/// `[b, kv, l, d]` → `[b, kv * groups, l, d]`, each key/value head repeated `groups` times in a row.
fn repeat_kv(x: Tensor<4>, groups: usize) -> Tensor<4> {
    if groups == 1 {
        return x;
    }
    let [b, kv, l, d] = x.dims();
    x.unsqueeze_dim::<5>(2).expand([b, kv, groups, l, d]).reshape([b, kv * groups, l, d])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(rule: &KeyRule, lq: usize, lk: usize) -> Vec<String> {
        let d = rule.dense(1, lq, lk);
        d.chunks(lk).map(|r| r.iter().map(|&m| if m { '.' } else { '1' }).collect()).collect()
    }

    #[test]
    fn voco_rule_matches_the_spec_picture() {
        // B I I I n n V V n t t t  (first VoCo 6, last 7)
        let rule =
            KeyRule { causal: true, samples: vec![SampleRule { left_padding: 0, voco: Some((6, 7)) }], mask: None };
        let r = rows(&rule, 12, 12);
        assert_eq!(r[7], "11111111....");
        assert_eq!(r[8], "......111...");
        assert_eq!(r[9], "......1111..");
        // Decoding one query against the same keys: the last row.
        assert_eq!(rows(&rule, 1, 12)[0], "......111111");
    }

    #[test]
    fn left_padding_hides_keys() {
        let rule = KeyRule { causal: true, samples: vec![SampleRule { left_padding: 2, voco: None }], mask: None };
        assert_eq!(rows(&rule, 3, 5), vec!["..1..", "..11.", "..111"]);
        assert!(!rule.is_plain());
        assert!(KeyRule::causal().is_plain());
    }
}
