//! VoCo-LLaMA's own parts: the attention layout that hides the image from the
//! text, and the VoCo cache that stage 1 produces and stage 2 answers from.

pub mod cache;
pub mod context;
pub mod frame_store;
pub mod layout;
pub mod video;

pub use cache::VocoCache;
pub use context::FrameBudget;
pub use frame_store::FrameStore;
pub use layout::{AttentionLayout, VocoSpan};
pub use video::FramePositions;
