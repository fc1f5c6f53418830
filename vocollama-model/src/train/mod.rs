//! VoCo instruction tuning (`voco-spec.md` §7): data, batches with the VoCo
//! layout and answer-only labels, the training loop on Burn's autodiff, and
//! checkpoints in the layout the loader reads.

pub mod batch;
pub mod checkpoint;
pub mod data;
pub mod eval;
pub mod init;
pub mod synthetic;
pub mod trainer;
