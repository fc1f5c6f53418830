//! Files in and out: JSON read with errors that name the file, and files
//! written whole or not at all.

pub mod atomic_write;
pub mod json;
