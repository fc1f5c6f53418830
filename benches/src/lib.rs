//! vocollama's benchmarks: the paper's table 7 (baseline, full caching, VoCo)
//! per backend, the backend comparison with each backend's GEMM ceiling, and
//! PyTorch side by side — all measured in one run on models built from
//! random weights (no files). Run as `vocollama bench` or
//! `cargo bench -p vocollama-benches --bench table7 -- [FLAGS]`.

pub mod ceilings;
pub mod chart;
pub mod checkpoint;
pub mod flops;
pub mod llamacpp;
pub mod report;
pub mod script;
pub mod shapes;
pub mod stages;
pub mod torch;

use std::path::{Path, PathBuf};

use clap::Args;
use vocollama_model::{Error, Result, backend};

pub use report::Report;
pub use shapes::Shape;
pub use stages::Workload;

/// The benchmark's flags (shared by `vocollama bench` and the cargo bench target).
#[derive(Args, Debug, Clone)]
pub struct BenchArgs {
    /// Model shape: `tiny`, `small`, or `slice7b` (CLIP ViT-L/14-336 + Vicuna-7B-wide layers).
    #[arg(long, default_value = "slice7b")]
    pub shape: String,
    /// LLaMA layers (slice7b: 4 of Vicuna-7B's 32 unless given).
    #[arg(long)]
    pub layers: Option<usize>,
    /// Backends to run, comma-separated (default: every compiled-in backend).
    #[arg(long, value_delimiter = ',')]
    pub backends: Vec<String>,
    /// Text tokens of the question.
    #[arg(long, default_value_t = 64)]
    pub text: usize,
    /// Tokens decoded after the question.
    #[arg(long, default_value_t = 16)]
    pub decode: usize,
    /// VoCo tokens N.
    #[arg(long, default_value_t = 1)]
    pub voco_tokens: usize,
    /// Timed runs per stage (after one warm-up); the median is reported.
    #[arg(long, default_value_t = 3)]
    pub reps: usize,
    /// Side of the square f32 GEMM that measures each backend's matmul ceiling.
    #[arg(long, default_value_t = 2048)]
    pub gemm: usize,
    /// Also run the same shapes and stages in PyTorch (`tools/bench_torch.py`) and report the ratios.
    #[arg(long)]
    pub torch: bool,
    /// Python with torch and transformers, for --torch.
    #[arg(long, default_value = "python3")]
    pub python: String,
    /// The PyTorch benchmark script.
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/../tools/bench_torch.py"))]
    pub torch_script: PathBuf,
    /// Write the report as markdown to this file and as JSON beside it (`.json`).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Measure this model directory instead of a shape with random weights: the
    /// load, one image compressed and one question answered, at each of `--precisions`.
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// With --model: the precisions to load at (f32, f16, bf16, auto, q8, q4; q8 and q4 quantize
    /// the checkpoint's float type); one the machine cannot hold is reported as refused.
    #[arg(long, value_delimiter = ',', default_value = "f32,f16,q8,q4")]
    pub precisions: Vec<String>,
    /// With --model: also run llama.cpp on the same weights (as GGUF F32, F16, Q8_0, Q4_0
    /// for f32, f16, q8, q4) in this run, through `tools/bench_llamacpp.py`.
    #[arg(long)]
    pub llamacpp: bool,
    /// Python with `llama-cpp-python` and `gguf` (set up as tools/bench_llamacpp.py says), for --llamacpp.
    #[arg(long, default_value = "python3")]
    pub llamacpp_python: String,
    /// The llama.cpp benchmark script.
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/../tools/bench_llamacpp.py"))]
    pub llamacpp_script: PathBuf,
    /// Where --llamacpp writes its GGUF files (kept for the next run) [default: the temp dir].
    #[arg(long)]
    pub gguf_dir: Option<PathBuf>,
}

/// Run every stage on every chosen backend (then PyTorch), reporting progress through `log`.
pub fn run(a: &BenchArgs, command: String, log: &mut dyn FnMut(&str)) -> Result<Report> {
    if a.text == 0 || a.decode == 0 || a.voco_tokens == 0 || a.reps == 0 || a.gemm == 0 {
        return Err(Error::Invalid("--text, --decode, --voco-tokens, --reps and --gemm must be at least 1".into()));
    }
    if let Some(dir) = a.out.as_ref().and_then(|o| o.parent()).filter(|d| !d.as_os_str().is_empty() && !d.is_dir()) {
        return Err(Error::Invalid(format!("--out: the directory {} does not exist", dir.display())));
    }
    if let Some(dir) = &a.model {
        return run_checkpoint(a, dir, command, log);
    }
    if a.llamacpp {
        return Err(Error::Invalid(
            "--llamacpp needs --model DIR, the weights both runtimes read (tools/make_7b.py --layers 4 writes \
             the slice7b shape)"
                .into(),
        ));
    }
    let shape = Shape::named(&a.shape, a.layers)?;
    let positions = 1 + shape.image_tokens() + 2 + a.text + a.decode;
    if positions > shape.llm.max_position_embeddings {
        return Err(Error::Invalid(format!(
            "the benchmark needs {positions} positions but the `{}` shape's context is {}",
            shape.name, shape.llm.max_position_embeddings
        )));
    }
    let names: Vec<String> = if a.backends.is_empty() {
        backend::compiled_backends().into_iter().map(String::from).collect()
    } else {
        a.backends.clone()
    };
    // Every device first, so a missing backend fails before any measuring.
    let devices = names.iter().map(|n| backend::device(n)).collect::<Result<Vec<_>>>()?;
    let w = Workload { text: a.text, decode: a.decode, voco: a.voco_tokens, reps: a.reps };
    let mut runs = Vec::new();
    for (name, device) in names.iter().zip(&devices) {
        runs.push(stages::measure(name, device, &shape, &w, a.gemm, log)?);
    }
    let (torch, compared) = if a.torch {
        // PyTorch on the GPU when CUDA is benchmarked, else on the CPU next to flex.
        let (device, ours) = if names.iter().any(|n| n == "cuda") { ("cuda", "cuda") } else { ("cpu", "flex") };
        log(&format!("PyTorch ({device})"));
        let t = torch::run(&a.python, &a.torch_script, &shape, &w, device, a.gemm)?;
        (Some(t), names.iter().find(|n| *n == ours).cloned())
    } else {
        (None, None)
    };
    Ok(Report {
        command,
        shape: shape.describe(),
        workload: w,
        runs,
        torch,
        torch_compared_with: compared,
        checkpoint: None,
        ceilings: None,
        llamacpp: None,
    })
}

/// `--model DIR`: the directory at each precision, on the first backend asked for.
fn run_checkpoint(a: &BenchArgs, dir: &Path, command: String, log: &mut dyn FnMut(&str)) -> Result<Report> {
    if let Some(bad) = a.precisions.iter().find(|p| checkpoint::parse(p).is_none()) {
        return Err(Error::Invalid(format!(
            "--precisions: unknown precision `{bad}` (expected f32, f16, bf16, auto, q8 or q4)"
        )));
    }
    let name = a.backends.first().map_or(backend::DEFAULT, String::as_str);
    let device = backend::device(name)?;
    let w = Workload { text: a.text, decode: a.decode, voco: a.voco_tokens, reps: a.reps };
    // The other runtimes' inputs are checked before anything is measured.
    let config = vocollama_model::ModelConfig::from_dir(dir)?;
    let torch_shape = if a.torch { Some(Shape::of_model(&config)?) } else { None };
    let gguf_types: Vec<&str> =
        a.precisions.iter().map(String::as_str).filter(|p| ["f32", "f16", "q8", "q4"].contains(p)).collect();
    if a.llamacpp && gguf_types.is_empty() {
        return Err(Error::Invalid("--llamacpp: none of --precisions is f32, f16, q8 or q4".into()));
    }
    log("memory bandwidth (read and copy, every core)");
    let ceilings = ceilings::measure();
    let runs =
        a.precisions.iter().map(|p| checkpoint::measure(dir, p, &device, &w, log)).collect::<Result<Vec<_>>>()?;
    let torch = match &torch_shape {
        Some(shape) => {
            log("PyTorch (cpu, f32)");
            Some(torch::run(&a.python, &a.torch_script, shape, &w, "cpu", a.gemm)?)
        }
        None => None,
    };
    let llamacpp = if a.llamacpp {
        log("llama.cpp");
        let work = a.gguf_dir.clone().unwrap_or_else(|| std::env::temp_dir().join("vocollama-gguf"));
        let long = runs.iter().find(|r| !r.refused).map_or(1 + 576 + 2 + a.text, |r| r.long_tokens);
        Some(llamacpp::run(
            &a.llamacpp_python,
            &a.llamacpp_script,
            dir,
            &gguf_types,
            &work,
            (a.text, long, a.decode),
            a.reps,
        )?)
    } else {
        None
    };
    let shape = format!("the model directory `{}`", dir.display());
    let checkpoint = Some(report::CheckpointRuns { backend: name.to_string(), runs });
    Ok(Report {
        command,
        shape,
        workload: w,
        runs: vec![],
        torch,
        torch_compared_with: None,
        checkpoint,
        ceilings: Some(ceilings),
        llamacpp,
    })
}

/// The report as markdown at `out`, JSON beside it and its charts as `<stem>-<chart>.svg`
/// (linked from the markdown), each written whole or not at all; the markdown written.
pub fn write(report: &Report, out: &Path) -> Result<String> {
    use std::fmt::Write;
    use vocollama_model::io::atomic_write::write_atomic;
    let stem = out.file_stem().map_or("bench".into(), |s| s.to_string_lossy().into_owned());
    let mut markdown = report.markdown();
    let charts = report.charts();
    if !charts.is_empty() {
        let _ = writeln!(markdown, "## Charts\n");
    }
    for (name, svg) in &charts {
        let file = format!("{stem}-{name}.svg");
        write_atomic(&out.with_file_name(&file), svg.as_bytes())?;
        let _ = writeln!(markdown, "![{name}]({file})\n");
    }
    write_atomic(out, markdown.as_bytes())?;
    let json = serde_json::to_string_pretty(report).expect("the report serializes");
    write_atomic(&out.with_extension("json"), json.as_bytes())?;
    Ok(markdown)
}
