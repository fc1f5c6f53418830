//! Pictures and clips in: an image decoded and preprocessed into the pixels
//! the tower takes ([`preprocess`]), and the frames of a clip taken one at a
//! time from a directory, a GIF or a video ([`frames`]).

pub mod decode;
pub mod frames;
pub mod preprocess;
