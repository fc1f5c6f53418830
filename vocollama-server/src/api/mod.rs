//! The HTTP API: OpenAI's chat completions and models, VoCo-store images
//! (`/v1/voco`), health and metrics, and errors in OpenAI's shape.

pub mod chat;
pub mod error;
pub mod image_url;
pub mod request;
pub mod voco;

pub use error::ApiError;
