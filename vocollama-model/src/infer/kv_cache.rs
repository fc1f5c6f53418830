//! The KV cache: every layer's post-RoPE keys and values of the positions run
//! so far, which later tokens attend to. Stage 2 starts one from a VoCo
//! cache; a session grows it turn by turn.

use burn::tensor::Tensor;

/// Post-RoPE keys and values of every layer, `[batch, kv_heads, len, head_dim]`.
#[derive(Debug, Clone)]
pub struct KvCache {
    layers: Vec<Option<(Tensor<4>, Tensor<4>)>>,
}

impl KvCache {
    pub fn new(num_layers: usize) -> Self {
        Self { layers: vec![None; num_layers] }
    }

    /// A cache holding these keys and values, one `(K, V)` per layer.
    pub fn from_layers(layers: Vec<(Tensor<4>, Tensor<4>)>) -> Self {
        Self { layers: layers.into_iter().map(Some).collect() }
    }

    /// Number of cached positions.
    pub fn len(&self) -> usize {
        self.layers.first().and_then(|l| l.as_ref()).map_or(0, |(k, _)| k.dims()[2])
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Layer `i`'s keys and values, if anything was cached.
    pub fn layer(&self, i: usize) -> Option<&(Tensor<4>, Tensor<4>)> {
        self.layers.get(i).and_then(|l| l.as_ref())
    }

    /// Append new keys and values to layer `i`; returns the whole cache of that layer.
    pub(crate) fn append(&mut self, i: usize, k: Tensor<4>, v: Tensor<4>) -> (Tensor<4>, Tensor<4>) {
        let kv = match self.layers[i].take() {
            None => (k, v),
            Some((pk, pv)) => (Tensor::cat(vec![pk, k], 2), Tensor::cat(vec![pv, v], 2)),
        };
        self.layers[i] = Some(kv.clone());
        kv
    }
}
