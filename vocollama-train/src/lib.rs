//! VoCo instruction tuning (`docs/design.md` §9) for vocollama models:
//! LLaVA-style records ([`data`]) and synthetic ones ([`synthetic`]), batches
//! with the VoCo layout and answer-only labels ([`batch`]), the training loop
//! on Burn's autodiff ([`trainer`]), models written in the layout the loader
//! reads ([`checkpoint`], whole or not at all: [`model_dir`]), new models with
//! random weights ([`init`]), the vision tower trained on the synthetic
//! scenes before the LLaVA stages ([`tower`]) and accuracy per question type
//! ([`eval`]).

pub mod batch;
pub mod checkpoint;
pub mod data;
pub mod eval;
pub mod init;
pub mod model_dir;
pub mod synthetic;
pub mod tower;
pub mod trainer;
