//! The KV cache: every layer's post-RoPE keys and values of the positions run
//! so far, which later tokens attend to. Stage 2 starts one from a VoCo
//! cache; a session grows it turn by turn.
//!
//! Each layer's keys and values live in a buffer `[batch, kv_heads,
//! capacity, head_dim]` in the model's float type. New positions are written
//! into it in place; when it is full it grows by whole chunks (one copy per
//! chunk, never one per token), and attention gets a view of its first `len`
//! rows, read in place by the fused attention (CubeCL kernels; on the CPU
//! for decoding-sized query blocks, `docs/design.md` §13). Going back to an earlier length ([`KvCache::truncate`])
//! keeps the buffer: the next positions overwrite the old ones.

use burn::tensor::Tensor;

/// Positions a buffer grows by when it is full.
pub const CHUNK: usize = 256;

#[derive(Debug, Clone)]
pub struct KvCache {
    /// Per layer: the key and value buffers (`None` until the first write).
    layers: Vec<Option<(Tensor<4>, Tensor<4>)>>,
    /// Positions held (the buffers' first `len` rows).
    len: usize,
    /// Times the buffers were reallocated to grow.
    grown: usize,
}

impl KvCache {
    pub fn new(num_layers: usize) -> Self {
        Self { layers: vec![None; num_layers], len: 0, grown: 0 }
    }

    /// A cache holding these keys and values, one `(K, V)` per layer, as its buffers.
    pub fn from_layers(layers: Vec<(Tensor<4>, Tensor<4>)>) -> Self {
        let len = layers.first().map_or(0, |(k, _)| k.dims()[2]);
        Self { layers: layers.into_iter().map(Some).collect(), len, grown: 0 }
    }

    /// Number of cached positions.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Positions the buffers hold room for.
    pub fn capacity(&self) -> usize {
        self.layers.first().and_then(|l| l.as_ref()).map_or(0, |(k, _)| k.dims()[2])
    }

    /// Times the buffers were reallocated to grow (each a copy of what they held).
    pub fn reallocations(&self) -> usize {
        self.grown
    }

    /// Layer `i`'s keys and values of the cached positions (views of its buffers).
    pub fn layer(&self, i: usize) -> Option<(Tensor<4>, Tensor<4>)> {
        let (k, v) = self.layers.get(i)?.as_ref()?;
        let rows = |t: &Tensor<4>| t.clone().narrow(2, 0, self.len);
        Some((rows(k), rows(v)))
    }

    /// Forget every position from `len` on; the buffers stay for the next ones.
    pub fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
    }

    /// Write layer `i`'s keys and values of the positions being run, `[b,
    /// kv_heads, l, head_dim]`, after the cached ones; the layer's whole
    /// buffers come back (attention reads their first `len + l` rows). The
    /// length moves on with [`KvCache::advance`] once every layer is written.
    pub(crate) fn write(&mut self, i: usize, k: Tensor<4>, v: Tensor<4>) -> (Tensor<4>, Tensor<4>) {
        let [b, h, l, d] = k.dims();
        let end = self.len + l;
        let (kb, vb) = match self.layers[i].take() {
            // Nothing held yet: the new rows are the buffer (a single forward copies nothing).
            None if self.len == 0 => (k, v),
            None => panic!("layer {i} of a KV cache holding {} positions has no buffer", self.len),
            Some((kb, vb)) => {
                let (kb, vb) = if end > kb.dims()[2] { self.grow(i, kb, vb, end) } else { (kb, vb) };
                let rows = [0..b, 0..h, self.len..end, 0..d];
                (kb.slice_assign(rows.clone(), k), vb.slice_assign(rows, v))
            }
        };
        self.layers[i] = Some((kb.clone(), vb.clone()));
        (kb, vb)
    }

    /// Buffers with room for `end` positions, rounded up to whole chunks, holding the cached rows.
    fn grow(&mut self, i: usize, kb: Tensor<4>, vb: Tensor<4>, end: usize) -> (Tensor<4>, Tensor<4>) {
        if i == 0 {
            self.grown += 1;
        }
        let [b, h, _, d] = kb.dims();
        let capacity = end.next_multiple_of(CHUNK);
        let moved = |t: Tensor<4>| {
            let buffer = Tensor::<4>::zeros([b, h, capacity, d], (&t.device(), t.dtype()));
            buffer.slice_assign([0..b, 0..h, 0..self.len, 0..d], t.narrow(2, 0, self.len))
        };
        (moved(kb), moved(vb))
    }

    /// The positions just written to every layer are now cached.
    pub(crate) fn advance(&mut self, l: usize) {
        self.len += l;
    }
}
