//! llama.cpp on the same weights (`tools/bench_llamacpp.py`, through the
//! `llama-cpp-python` bindings built from source for this CPU), run as a child
//! process in the same benchmark run: the model directory's LLaMA part as
//! GGUF at F32, F16, Q8_0 and Q4_0, the same prompt lengths and decoding.

use std::path::Path;

use serde::{Deserialize, Serialize};
use vocollama_model::{Error, Result};

/// One GGUF type, timed (medians in ms, like ours).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LlamaCppRow {
    /// The precision it stands beside (`f32`, `f16`, `q8`, `q4`).
    pub dtype: String,
    /// GGML's name of it (`F16`, `Q8_0`, …).
    pub gguf_type: String,
    pub file_bytes: u64,
    /// The bytes a decoded token reads: the file less the embedding table.
    pub weight_bytes: u64,
    pub load_s: f64,
    pub threads: usize,
    pub prefill_short_ms: f64,
    pub prefill_long_ms: f64,
    pub decode_ms: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LlamaCppRun {
    pub llama_cpp_python: String,
    /// llama.cpp's own account of the build (the instruction sets it uses).
    pub system_info: String,
    pub short: usize,
    pub long: usize,
    pub decode: usize,
    pub rows: Vec<LlamaCppRow>,
}

/// The llama.cpp side of the precisions that map to a GGUF type (f32, f16, q8, q4).
#[allow(clippy::too_many_arguments)]
pub fn run(
    python: &str,
    script: &Path,
    model: &Path,
    dtypes: &[&str],
    work: &Path,
    (short, long, decode): (usize, usize, usize),
    reps: usize,
) -> Result<LlamaCppRun> {
    if !script.is_file() {
        return Err(Error::Invalid(format!("the llama.cpp benchmark script {} does not exist", script.display())));
    }
    let out = tempfile::NamedTempFile::new().map_err(|e| Error::io(Path::new("(temporary file)"), e))?;
    let args = [
        script.display().to_string(),
        format!("--model={}", model.display()),
        format!("--dtypes={}", dtypes.join(",")),
        format!("--work={}", work.display()),
        format!("--short={short}"),
        format!("--long={long}"),
        format!("--decode={decode}"),
        format!("--reps={reps}"),
        format!("--out={}", out.path().display()),
    ];
    crate::script::run(
        python,
        script,
        &args,
        out.path(),
        "the llama.cpp side",
        "set it up as tools/bench_llamacpp.py says, or leave out --llamacpp",
    )
}
