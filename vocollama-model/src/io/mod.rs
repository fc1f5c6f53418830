//! Files in and out: read whole only when regular and within a cap, JSON read
//! with errors that name the file, and files written whole or not at all.

pub mod atomic_write;
pub mod bounded;
pub mod json;
