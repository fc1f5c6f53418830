//! The same shapes and stages in PyTorch/transformers (`tools/bench_torch.py`),
//! run as a child process in the same benchmark run so the ratios compare
//! like with like on this machine.

use std::path::Path;

use serde::{Deserialize, Serialize};
use vocollama_model::{Error, Result};

use crate::shapes::Shape;
use crate::stages::Workload;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TorchQuestion {
    pub prefill_ms: f64,
    pub decode_ms: f64,
}

/// What the script reports (times are medians in ms, like ours).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TorchRun {
    pub torch: String,
    pub transformers: String,
    pub device: String,
    pub dtype: String,
    pub threads: usize,
    pub vision_ms: f64,
    pub stage1_ms: f64,
    pub baseline: TorchQuestion,
    pub full_caching: TorchQuestion,
    pub voco: TorchQuestion,
    pub gemm_gflops: f64,
    /// FLOPs of the same stages as PyTorch's `FlopCounterMode` counts them.
    pub counted_flops: CountedFlops,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CountedFlops {
    pub vision: f64,
    pub baseline_prefill: f64,
    pub full_caching_prefill: f64,
    pub voco_prefill: f64,
}

/// Run `script` with `python` for `shape` and `w` on `device` (`cpu` or `cuda`).
pub fn run(python: &str, script: &Path, shape: &Shape, w: &Workload, device: &str, gemm: usize) -> Result<TorchRun> {
    if !script.is_file() {
        return Err(Error::Invalid(format!("the PyTorch benchmark script {} does not exist", script.display())));
    }
    let out = tempfile::NamedTempFile::new().map_err(|e| Error::io(Path::new("(temporary file)"), e))?;
    let (v, l) = (&shape.vision, &shape.llm);
    let args: Vec<String> = vec![
        script.display().to_string(),
        format!(
            "--vision={},{},{},{},{},{}",
            v.image_size, v.patch_size, v.hidden_size, v.intermediate_size, v.num_hidden_layers, v.num_attention_heads
        ),
        format!(
            "--llm={},{},{},{},{},{}",
            l.hidden_size,
            l.intermediate_size,
            l.num_hidden_layers,
            l.num_attention_heads,
            l.num_key_value_heads,
            l.vocab_size
        ),
        format!("--text={}", w.text),
        format!("--decode={}", w.decode),
        format!("--voco={}", w.voco),
        format!("--reps={}", w.reps),
        format!("--gemm={gemm}"),
        format!("--device={device}"),
        // The same dtype as the random-weight model on our side.
        "--dtype=f32".to_string(),
        format!("--out={}", out.path().display()),
    ];
    crate::script::run(
        python,
        script,
        &args,
        out.path(),
        "the PyTorch side",
        "install Python with torch and transformers, or leave out --torch",
    )
}
