//! Attention for vocollama, driven by a few integers instead of an L×L mask.
//!
//! [`attention`] takes queries and a key/value cache with possibly fewer heads
//! (grouped-query attention) and a [`KeyRule`] saying which keys each query row
//! may see. On CubeCL devices it runs the fused kernel of [`fused`]; elsewhere
//! (Flex, autodiff) the tensor-op [`attention::reference`]. [`voco_handoff`]
//! gathers the VoCo rows of a layer's cache (a kernel of [`handoff`] on CubeCL
//! devices). This crate knows nothing of the model; the model turns its
//! attention layout into a `KeyRule`.

pub mod attention;
pub mod fused;
pub mod handoff;

pub use attention::{KeyRule, SampleRule, attention};
pub use handoff::voco_handoff;
