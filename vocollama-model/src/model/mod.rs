//! The networks of a LLaVA-1.5 model, with HF's names: the CLIP vision tower
//! ([`clip`]), the multimodal projector ([`projector`]), the LLaMA decoder
//! ([`llama`]), the whole model that splices image embeddings into the
//! prompt ([`llava`]), and models with fresh random weights ([`random`]).

pub mod clip;
pub mod llama;
pub mod llava;
pub mod projector;
pub mod random;
