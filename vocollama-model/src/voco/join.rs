//! Frame caches joined in time order (`docs/design.md` §8): every frame is
//! compressed on its own into a VoCo cache, and text attends to all of them.
//! RoPE lets a cached key move to another position by a rotation, so frames
//! are placed one after another without recomputing anything.

use burn::tensor::Tensor;
use vocollama_kernels::voco_handoff;

use super::cache::VocoCache;
use crate::error::{Error, Result};

/// Where the joined frames' VoCo tokens sit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum FramePositions {
    /// Frame t's tokens right after frame t−1's (keys re-rotated): order is visible to RoPE.
    #[default]
    Sequential,
    /// Every frame keeps its stage-1 positions.
    Shared,
}

impl VocoCache {
    /// This cache moved by `delta` positions: values as they are, keys rotated
    /// by `delta` (on the device, by the handoff kernel where there is one).
    pub fn shifted(&self, delta: i64, inv_freq: &[f32]) -> Result<VocoCache> {
        let positions = self
            .positions
            .iter()
            .map(|&p| usize::try_from(p as i64 + delta).ok())
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| Error::Invalid(format!("moving the cache by {delta} gives a negative position")))?;
        let layers = self
            .layers
            .iter()
            .map(|(k, v)| voco_handoff(k.clone(), v.clone(), 0, self.len(), delta, inv_freq))
            .collect();
        Ok(VocoCache { layers, positions, frames: self.frames, computed_in: self.computed_in })
    }

    /// Frame caches joined in time order under `policy`.
    pub fn join(frames: &[VocoCache], policy: FramePositions, inv_freq: &[f32]) -> Result<VocoCache> {
        let first = frames.first().ok_or_else(|| Error::Invalid("a video needs at least one frame".into()))?;
        let shape = |f: &VocoCache| (f.geometry(), f.tokens_per_frame());
        if let Some(f) = frames.iter().find(|f| shape(f) != shape(first)) {
            return Err(Error::Invalid(format!(
                "frame caches differ in shape: {:?} and {:?} ((layers, kv heads, head dim), tokens per frame)",
                shape(first),
                shape(f)
            )));
        }
        let placed: Vec<VocoCache> = match policy {
            FramePositions::Shared => frames.to_vec(),
            FramePositions::Sequential => {
                let mut next = first.positions[0];
                let mut out = Vec::with_capacity(frames.len());
                for f in frames {
                    out.push(f.shifted(next as i64 - f.positions[0] as i64, inv_freq)?);
                    next = out.last().expect("just pushed").next_position();
                }
                out
            }
        };
        let layers = (0..first.layers.len())
            .map(|i| {
                let cat = |pick: fn(&(Tensor<4>, Tensor<4>)) -> Tensor<4>| {
                    Tensor::cat(placed.iter().map(|f| pick(&f.layers[i])).collect(), 2)
                };
                (cat(|l| l.0.clone()), cat(|l| l.1.clone()))
            })
            .collect();
        let positions = placed.iter().flat_map(|f| f.positions.iter().copied()).collect();
        let computed_in = first.computed_in.filter(|p| frames.iter().all(|f| f.computed_in == Some(*p)));
        Ok(VocoCache { layers, positions, frames: placed.iter().map(|f| f.frames).sum(), computed_in })
    }
}
