//! The networks of a LLaVA-1.5 model, with HF's names: the CLIP vision tower
//! ([`clip`]), the multimodal projector ([`projector`]), the LLaMA decoder
//! ([`llama`]), the whole model that splices image embeddings into the
//! prompt ([`llava`]), and models with fresh random weights ([`random`]);
//! the float type and quantization weights are held in ([`precision`]) and
//! the memory that takes ([`footprint`]).

pub mod clip;
pub mod footprint;
pub mod linear;
pub mod llama;
pub mod llava;
pub mod precision;
pub mod projector;
pub mod random;
