//! vocollama-model: LLaVA-1.5 and VoCo-LLaMA written once for every Burn backend.
//!
//! An image becomes pixels ([`media`]), CLIP features, then image embeddings
//! spliced into the prompt ([`model`]); the LLaMA runs under an attention
//! layout with explicit positions. Stage 1 compresses the image into a
//! [`VocoCache`] ([`voco`]); stage 2 answers any number of questions from it
//! ([`infer`]), with the tokenizer and templates of [`text`]. [`checkpoint`]
//! reads model directories in the layouts people have; [`backend`] picks the
//! device. `docs/design.md` describes the whole.
//!
//! ```no_run
//! use std::path::Path;
//! use vocollama_model::{Chat, GenerateOptions, LlavaModel, LoadOptions, Sampler, SamplingConfig, Tokenizer, backend};
//!
//! # fn main() -> vocollama_model::Result<()> {
//! let device = backend::device(backend::DEFAULT)?;
//! let dir = Path::new("assets/demo/model");
//! let model = LlavaModel::load(dir, &LoadOptions::default(), &device)?;
//! let tokenizer = Tokenizer::for_model(dir, model.config.layout)?;
//! let pixels = model.load_image(Path::new("assets/demo/images/scene-03.png"))?;
//! let (mut chat, _cache) = Chat::compress(&model, &tokenizer, &pixels, 8)?;
//! let options = GenerateOptions::new(&tokenizer, &model, SamplingConfig::default(), 128);
//! let answer = chat.ask("What colour is the circle?", &options, &mut Sampler::new(options.sampling.clone()), &mut |_| {})?;
//! println!("{}", answer.text);
//! # Ok(())
//! # }
//! ```

pub mod backend;
pub mod checkpoint;
pub mod error;
pub mod infer;
pub mod io;
pub mod media;
pub mod memory;
pub mod model;
pub mod rng;
pub mod text;
pub mod voco;

pub use checkpoint::config::ModelConfig;
pub use error::{Error, Result};
pub use infer::chat::{Chat, Compression};
pub use infer::generate::{GenerateOptions, Generation, StopReason};
pub use infer::kv_cache::KvCache;
pub use infer::sampling::{Sampler, SamplingConfig};
pub use infer::session::Session;
pub use media::preprocess::Pixels;
pub use model::llava::{IMAGE_TOKEN_INDEX, LlavaModel, LoadOptions};
pub use text::Tokenizer;
pub use voco::{AttentionLayout, CacheDType, CacheSpec, FramePositions, Stage1Prompt, VocoCache};
