//! The VoCo cache (`docs/design.md` §6): per layer, the post-RoPE keys and
//! values of the N VoCo positions of a compressed image (or of every frame of
//! a clip), with their absolute positions — all stage 2 needs of the image.

use burn::tensor::Tensor;

use super::file::CacheDType;
use crate::model::precision::Precision;

/// Keys and values of the VoCo tokens of one compressed image, `[1, kv_heads, N, head_dim]` per layer.
#[derive(Debug, Clone)]
pub struct VocoCache {
    pub layers: Vec<(Tensor<4>, Tensor<4>)>,
    /// Absolute positions of the N VoCo tokens (their natural indices in the stage-1 sequence).
    pub positions: Vec<usize>,
    /// Frames whose tokens it holds, in time order, `len() / frames` each (1 for an image).
    pub frames: usize,
    /// What the run that computed it held its weights in (`None`: read from a file that does not say).
    pub computed_in: Option<Precision>,
}

impl VocoCache {
    /// VoCo tokens per frame.
    pub fn tokens_per_frame(&self) -> usize {
        self.len() / self.frames
    }

    /// Number of VoCo tokens (all frames together).
    pub fn len(&self) -> usize {
        self.positions.len()
    }

    pub fn is_empty(&self) -> bool {
        self.positions.is_empty()
    }

    /// Where the text after the VoCo tokens starts.
    pub fn next_position(&self) -> usize {
        self.positions.last().map_or(0, |p| p + 1)
    }

    /// `(layers, kv_heads, head_dim)`.
    pub fn geometry(&self) -> (usize, usize, usize) {
        let [_, kv, _, d] = self.layers[0].0.dims();
        (self.layers.len(), kv, d)
    }

    /// Bytes of the keys and values at `dtype`.
    pub fn payload_bytes(&self, dtype: CacheDType) -> usize {
        let (l, kv, d) = self.geometry();
        2 * l * kv * self.len() * d * dtype.bytes()
    }

    /// Bytes of the keys and values as held on the device.
    pub fn device_bytes(&self) -> usize {
        let (l, kv, d) = self.geometry();
        2 * l * kv * self.len() * d * self.layers[0].0.dtype().size()
    }
}
