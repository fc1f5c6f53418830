//! Attention for vocollama, driven by a few integers instead of an L×L mask.
//!
//! [`attention`] takes queries and a key/value cache with possibly fewer heads
//! (grouped-query attention) and a [`KeyRule`] saying which keys each query row
//! may see, prepared once per forward ([`KeyRule::prepare`]). On CubeCL
//! devices it runs the fused kernel of [`fused`]; elsewhere (Flex, autodiff)
//! Burn's attention with a boolean mask built once per forward. [`voco_handoff`]
//! gathers the VoCo rows of a layer's cache (a kernel of [`handoff`] on CubeCL
//! devices); [`rope`] is the rotate-half RoPE both the model and the handoff
//! use. This crate knows nothing of the model; the model turns its attention
//! layout into a `KeyRule`.

pub mod attention;
#[cfg(feature = "flex")]
mod cpu;
pub mod device;
pub mod fused;
pub mod handoff;
pub mod linear;
pub mod rope;

pub use attention::{KeyRule, PreparedRule, SampleRule, attention};
pub use handoff::voco_handoff;
