//! Text in and out: the model's tokenizer ([`tokenizer`], over
//! [`sentencepiece`] and transformers' slow tokenizer rules in [`slow`]), the
//! conversation templates and LLaVA's image-token chunking ([`template`]), and
//! decoding that streams whole characters ([`stream`]).

pub mod sentencepiece;
pub(crate) mod slow;
pub mod stream;
pub mod template;
pub mod tokenizer;

pub use stream::StreamDecoder;
pub use template::{Prompt, Template, prompt_ids, tokenizer_image_token};
pub use tokenizer::{Tokenizer, TokenizerSource};
