//! Answering: the KV cache ([`kv_cache`]) a conversation grows
//! ([`session`]), the decode loop ([`generate`]) and how it picks tokens
//! ([`sampling`]), a conversation about one image or clip ([`chat`]), and
//! conversations decoded together a token at a time ([`batch`]).

pub mod batch;
pub mod chat;
pub mod generate;
pub mod kv_cache;
pub mod sampling;
pub mod session;
