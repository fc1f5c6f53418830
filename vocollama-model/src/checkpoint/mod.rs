//! What a model directory holds: its configs ([`config`]), its weight files
//! and how their tensors reach the modules ([`weights`]), where its CLIP
//! tower and preprocessing are ([`tower`]), the identity stamped into VoCo
//! caches ([`fingerprint`]), and the summary `vocollama info` prints ([`info`]).

pub mod config;
pub(crate) mod fields;
pub(crate) mod fingerprint;
pub mod info;
pub mod quantized;
pub(crate) mod tower;
pub mod weights;
