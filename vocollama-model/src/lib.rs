//! vocollama-model: LLaVA-1.5 and VoCo-LLaMA written once for every Burn backend.
//!
//! Data flows image → [`preprocess`] → [`vision`] (CLIP, stopped at the
//! selected layer) → [`projector`] → spliced into the token embeddings
//! ([`llava`]) → [`llama`] with explicit positions and an attention
//! [`voco::layout`]. [`weights`] and [`config`] read checkpoints in the layouts
//! people have.

pub mod atomic;
pub mod backend;
pub mod chat;
pub mod config;
pub mod error;
pub mod frames;
pub mod generate;
pub mod info;
pub mod llama;
pub mod llava;
pub mod memory;
pub mod pipeline;
pub mod preprocess;
pub mod projector;
pub mod rng;
pub mod sampling;
pub mod text;
pub mod train;
pub mod vision;
pub mod voco;
pub mod weights;

pub use error::{Error, Result};
pub use llama::{KvCache, Llama};
pub use llava::{IMAGE_TOKEN_INDEX, LlavaModel, LoadOptions};
pub use voco::{AttentionLayout, VocoCache};
