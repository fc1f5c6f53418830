//! Scaled dot-product attention with grouped-query heads and a structural key rule.

use std::cell::Cell;

use burn::tensor::module::attention as burn_attention;
use burn::tensor::ops::AttentionModuleOptions;
use burn::tensor::{Bool, Device, Int, Tensor, TensorData};

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
}

impl KeyRule {
    /// Plain causal attention.
    pub fn causal() -> Self {
        Self { causal: true, samples: Vec::new() }
    }

    /// Every query sees every key (the CLIP encoder).
    pub fn full() -> Self {
        Self { causal: false, samples: Vec::new() }
    }

    fn sample(&self, b: usize) -> SampleRule {
        self.samples.get(b).copied().unwrap_or_default()
    }

    /// Whether the rule is nothing but (optionally causal) attention.
    pub fn is_plain(&self) -> bool {
        self.samples.iter().all(|s| *s == SampleRule::default())
    }

    /// May query row `qi` (of `lq`) see key `kj` (of `lk`) in sample `b`?
    pub fn visible(&self, b: usize, qi: usize, kj: usize, lq: usize, lk: usize) -> bool {
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

    /// The dense `[batch, lq, lk]` form, `true` = hidden. Only the tensor-op
    /// path and tests build it; the fused kernel reads the rule's integers.
    pub fn dense(&self, batch: usize, lq: usize, lk: usize) -> Vec<bool> {
        DENSE_MASKS_BUILT.set(DENSE_MASKS_BUILT.get() + 1);
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

    /// The rule made ready for one forward on `device` — `batch` samples,
    /// `lq` queries against `lk` keys, heads of `head_dim` — and shared by all
    /// its layers: the integers the fused attention reads where it runs (see
    /// [`crate::fused::runs`]), else (for rules beyond plain causal) the
    /// dense mask Burn's attention takes.
    pub fn prepare(&self, device: &Device, batch: usize, lq: usize, lk: usize, head_dim: usize) -> PreparedRule {
        if crate::fused::runs(device, lq, head_dim) {
            let rules = crate::fused::rule_tensor(self, batch, device);
            return PreparedRule { causal: self.causal, lq, lk, form: Form::Fused(rules) };
        }
        self.prepare_reference(device, batch, lq, lk)
    }

    /// [`KeyRule::prepare`] for the tensor-op path on any device.
    pub fn prepare_reference(&self, device: &Device, batch: usize, lq: usize, lk: usize) -> PreparedRule {
        let form = if self.is_plain() {
            Form::Plain
        } else {
            let mask = TensorData::new(self.dense(batch, lq, lk), [batch, 1, lq, lk]);
            Form::Dense(Tensor::<4, Bool>::from_data(mask, device))
        };
        PreparedRule { causal: self.causal, lq, lk, form }
    }
}

thread_local! {
    static DENSE_MASKS_BUILT: Cell<usize> = const { Cell::new(0) };
}

/// How many dense masks this thread has built so far (a forward must build at most one).
pub fn dense_masks_built() -> usize {
    DENSE_MASKS_BUILT.get()
}

/// A [`KeyRule`] ready for the attention of one forward (see [`KeyRule::prepare`]).
#[derive(Debug, Clone)]
pub struct PreparedRule {
    causal: bool,
    lq: usize,
    lk: usize,
    form: Form,
}

#[derive(Debug, Clone)]
enum Form {
    /// `[b, 4]` integers per sample for the fused kernel.
    Fused(Tensor<2, Int>),
    /// (Causal) attention with no mask.
    Plain,
    /// `[b, 1, lq, lk]`, `true` = hidden.
    Dense(Tensor<4, Bool>),
}

/// softmax(Q Kᵀ / √d) V over `q: [b, heads, lq, d]` and the first `lk` rows
/// (the rule's) of `k, v: [b, kv_heads, rows ≥ lk, d]` — a KV cache buffer
/// with spare capacity is passed whole.
///
/// `heads` must be a multiple of `kv_heads`; each group of `heads / kv_heads`
/// query heads reads one key/value head. The rule says which path runs: the
/// fused kernel ([`crate::fused`]) or Burn's attention with repeated key/value heads.
pub fn attention(q: Tensor<4>, k: Tensor<4>, v: Tensor<4>, rule: &PreparedRule) -> Tensor<4> {
    let [b, heads, lq, _] = q.dims();
    let [_, kv_heads, rows, _] = k.dims();
    assert!(heads % kv_heads == 0, "{heads} query heads are not a multiple of {kv_heads} key/value heads");
    assert!(
        lq == rule.lq && rule.lk <= rows,
        "the rule was prepared for {}x{} scores, not {lq} queries over {rows} key rows",
        rule.lq,
        rule.lk
    );
    let lk = rule.lk;
    if let Form::Fused(rules) = &rule.form {
        return crate::fused::launch(q, k, v, rules.clone(), lk, rule.causal);
    }
    // A cache buffer's spare rows are cut off (a view: nothing is copied here).
    let keys = |t: Tensor<4>| if rows == lk { t } else { t.narrow(2, 0, lk) };
    let (k, v) = (repeat_kv(keys(k), heads / kv_heads), repeat_kv(keys(v), heads / kv_heads));
    match &rule.form {
        Form::Dense(mask) => {
            let mask = mask.clone().expand([b, heads, lq, lk]);
            burn_attention(q, k, v, Some(mask), None, AttentionModuleOptions::default())
        }
        _ => {
            let options = AttentionModuleOptions { is_causal: rule.causal && lq > 1, ..Default::default() };
            burn_attention(q, k, v, None, None, options)
        }
    }
}

/// The tensor-op definition on any device: Burn's attention with repeated
/// key/value heads and, when the rule is not plain, a dense mask.
pub fn reference(q: Tensor<4>, k: Tensor<4>, v: Tensor<4>, rule: &KeyRule) -> Tensor<4> {
    let [b, _, lq, _] = q.dims();
    let lk = k.dims()[2];
    let prepared = rule.prepare_reference(&q.device(), b, lq, lk);
    attention(q, k, v, &prepared)
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
    fn voco_rule_matches_the_design_picture() {
        // B I I I n n V V n t t t  (first VoCo 6, last 7)
        let rule = KeyRule { causal: true, samples: vec![SampleRule { left_padding: 0, voco: Some((6, 7)) }] };
        let r = rows(&rule, 12, 12);
        assert_eq!(r[7], "11111111....");
        assert_eq!(r[8], "......111...");
        assert_eq!(r[9], "......1111..");
        // Decoding one query against the same keys: the last row.
        assert_eq!(rows(&rule, 1, 12)[0], "......111111");
    }

    #[test]
    fn left_padding_hides_keys() {
        let rule = KeyRule { causal: true, samples: vec![SampleRule { left_padding: 2, voco: None }] };
        assert_eq!(rows(&rule, 3, 5), vec!["..1..", "..11.", "..111"]);
        assert!(!rule.is_plain());
        assert!(KeyRule::causal().is_plain());
    }
}
