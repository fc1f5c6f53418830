//! VoCo-LLaMA's own parts: the attention layout that hides the image from the
//! text ([`layout`]), stage 1 ([`compress`]) and the VoCo cache it produces
//! ([`cache`]) with its file ([`file`]); for video, frame caches joined in
//! time ([`join`]), a whole clip compressed ([`video`]) with a store of frame
//! caches ([`frame_store`]) and the context it needs ([`budget`]).

pub mod budget;
pub mod cache;
pub mod compress;
pub mod file;
pub mod frame_store;
pub mod join;
pub mod layout;
pub mod video;

pub use budget::FrameBudget;
pub use cache::VocoCache;
pub use compress::{ImageStats, Stage1Prompt, compress};
pub use file::{CacheDType, CacheSpec};
pub use frame_store::FrameStore;
pub use join::FramePositions;
pub use layout::{AttentionLayout, VocoSpan};
pub use video::{CompressedVideo, VideoOptions, compress_video};
