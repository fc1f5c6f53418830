//! Rotary position embedding in HF's rotate-half form, written once for the
//! LLaMA layers and for moving cached keys to other positions.
//!
//! RoPE turns a vector at position p by the angles `p · inv_freq`, pairing
//! dimension `i` with `i + d/2` (not adjacent pairs, as Burn's own
//! `RotaryEncoding` does), so a key cached at p moves to p + δ by one more
//! rotation of `δ · inv_freq`.

use burn::tensor::Tensor;

/// HF's `rotate_half`: `[x₁, x₂] → [−x₂, x₁]` over the last dimension.
pub fn rotate_half(x: Tensor<4>) -> Tensor<4> {
    let [b, h, l, d] = x.dims();
    let x1 = x.clone().slice([0..b, 0..h, 0..l, 0..d / 2]);
    let x2 = x.slice([0..b, 0..h, 0..l, d / 2..d]);
    Tensor::cat(vec![x2.neg(), x1], 3)
}

/// HF's `apply_rotary_pos_emb` for one tensor: `x · cos + rotate_half(x) · sin`,
/// with `cos` and `sin` broadcast against `x: [b, heads, len, head_dim]`.
pub fn apply_rope(x: Tensor<4>, cos: Tensor<4>, sin: Tensor<4>) -> Tensor<4> {
    x.clone() * cos + rotate_half(x) * sin
}
