//! `vocollama bench` end to end on the tiny shape, on flex and wgpu: every
//! table-7 stage measured on both backends, the KV sizes and FLOPs consistent
//! with the shape, the report written as markdown and JSON.

mod common;

use common::{Out, vocollama};
use serde_json::Value;

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("{v} is not a number"))
}

#[test]
fn bench_measures_every_stage_on_every_backend() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("report.md");
    let args = ["bench", "--shape", "tiny", "--backends", "flex,wgpu", "--reps", "1", "--decode", "2", "--gemm", "128"];
    let Out { ok, stdout, stderr, .. } = vocollama(&[&args[..], &["--out", out.to_str().unwrap()]].concat());
    assert!(ok, "{stderr}");
    let md = std::fs::read_to_string(&out).unwrap();
    assert_eq!(md, stdout, "the report printed is the report written");
    for section in ["## Table 7 analog: flex", "## Table 7 analog: wgpu", "## Backends", "| **VoCo-LLaMA** | 1 |"] {
        assert!(md.contains(section), "missing {section:?} in\n{md}");
    }
    let json: Value = serde_json::from_str(&std::fs::read_to_string(out.with_extension("json")).unwrap()).unwrap();
    let runs = json["runs"].as_array().unwrap();
    assert_eq!(runs.iter().map(|r| r["backend"].as_str().unwrap()).collect::<Vec<_>>(), ["flex", "wgpu"]);
    // tiny: 4 layers × (K, V) × 2 KV heads × 32 dims × 2 bytes per position; the image is BOS + 64 + `▁\n`.
    let per_position = 4.0 * 2.0 * 2.0 * 32.0 * 2.0;
    // The CPU backend says how many threads it ran on: every core.
    let cores = std::thread::available_parallelism().unwrap().get() as f64;
    assert_eq!(f(&runs[0]["cpu_threads"]), cores, "{}", runs[0]);
    assert!(runs[1]["cpu_threads"].is_null(), "{}", runs[1]);
    for r in runs {
        let (base, full, voco) = (&r["baseline"], &r["full_caching"], &r["voco"]);
        assert_eq!(f(&full["kv_positions"]), 67.0);
        assert_eq!(f(&voco["kv_positions"]), 1.0);
        assert_eq!(f(&full["kv_bytes_f16"]), 67.0 * per_position);
        assert_eq!(f(&voco["kv_bytes_f16"]), per_position);
        assert!(f(&voco["prefill_flops"]) < f(&full["prefill_flops"]));
        assert!(f(&full["prefill_flops"]) < f(&base["prefill_flops"]));
        for t in [&r["vision_ms"], &r["stage1_ms"], &base["prefill_ms"], &full["prefill_ms"], &voco["prefill_ms"]] {
            assert!(f(t) > 0.0, "{r}");
        }
        assert!(f(&voco["decode_ms"]) > 0.0 && f(&r["gemm_gflops"]) > 0.0, "{r}");
        // Decoding near the start and far into tiny's 1024-position context
        // (the VoCo cache's positions start after the image's 67).
        let at = r["decode_by_position"].as_array().unwrap();
        assert_eq!(at.iter().map(|a| f(&a["positions"])).collect::<Vec<_>>(), [100.0, 1024.0 - 67.0 - 2.0 - 8.0]);
        for a in at {
            assert!(f(&a["decode_ms"]) > 0.0 && f(&a["decode_flops"]) > 0.0, "{r}");
            assert!((0.0..1.0).contains(&f(&a["attention_share"])), "{r}");
        }
        assert!(f(&at[1]["attention_share"]) > f(&at[0]["attention_share"]), "{r}");
    }
    assert!(md.contains("Decoding as the KV cache grows"), "{md}");
}

#[test]
fn bad_bench_inputs_are_one_clear_error_each() {
    for (args, want) in [
        (vec!["--shape", "huge"], "unknown benchmark shape `huge`"),
        (vec!["--shape", "tiny", "--backends", "nope"], "backend `nope` is not compiled into this build"),
        (vec!["--shape", "tiny", "--layers", "0"], "--layers must be at least 1"),
        (vec!["--shape", "tiny", "--reps", "0"], "must be at least 1"),
        (
            vec!["--shape", "tiny", "--out", "/nonexistent/dir/report.md"],
            "--out: the directory /nonexistent/dir does not exist",
        ),
        (vec!["--shape", "tiny", "--text", "5000"], "positions but the `tiny` shape's context is 1024"),
    ] {
        let Out { ok, stdout, stderr, .. } = vocollama(&[&["bench"][..], &args].concat());
        assert!(!ok && stdout.is_empty(), "{args:?}: {stderr}");
        let lines: Vec<&str> = stderr.lines().collect();
        assert_eq!(lines.len(), 1, "{args:?}: {stderr}");
        assert!(lines[0].starts_with("error: ") && lines[0].contains(want), "{args:?}: {stderr}");
    }
}

#[test]
fn bench_measures_a_model_directory_at_each_precision() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("report.md");
    let model = common::fixture("llava-gqa-bf16");
    let args = ["bench", "--model", model.to_str().unwrap(), "--precisions", "f32,f16,q8,q4"];
    let rest = ["--reps", "1", "--decode", "2", "--text", "8", "--out", out.to_str().unwrap()];
    let Out { ok, stdout, stderr, .. } = vocollama(&[&args[..], &rest[..]].concat());
    assert!(ok, "{stderr}");
    let json: Value = serde_json::from_str(&std::fs::read_to_string(out.with_extension("json")).unwrap()).unwrap();
    let runs = json["checkpoint"]["runs"].as_array().unwrap();
    assert_eq!(runs.iter().map(|r| r["asked"].as_str().unwrap()).collect::<Vec<_>>(), ["f32", "f16", "q8", "q4"]);
    for (r, want) in runs.iter().zip(["f32", "f16", "q8 linear weights", "q4 linear weights"]) {
        assert_eq!(r["refused"], false, "{r}");
        assert!(r["weights"].as_str().unwrap().contains(want), "{r}");
        for key in ["load_s", "vision_ms", "stage1_ms", "prefill_ms", "decode_ms", "kv_bytes"] {
            assert!(f(&r[key]) > 0.0, "{key} in {r}");
        }
    }
    // The KV cache is held in the compute type: f16 holds half of f32's bytes.
    assert_eq!(f(&runs[0]["kv_bytes"]), 2.0 * f(&runs[1]["kv_bytes"]));
    assert!(stdout.contains("q4 linear weights"), "{stdout}");
    let bad = vocollama(&["bench", "--model", model.to_str().unwrap(), "--precisions", "f8"]);
    common::assert_fails(&bad, "--precisions: unknown precision `f8`");
}

/// The Python that `tools/setup_llamacpp.sh` sets up (`.ci/run` runs it first).
fn llamacpp_python() -> String {
    let venv = std::env::var("VOCOLLAMA_LLAMACPP_VENV").unwrap_or_else(|_| "/var/tmp/vocollama-llamacpp".into());
    let python = format!("{venv}/bin/python");
    let ready =
        std::process::Command::new(&python).args(["-c", "import llama_cpp, gguf"]).status().is_ok_and(|s| s.success());
    assert!(ready, "{python} has no llama_cpp/gguf: run tools/setup_llamacpp.sh (CI does)");
    python
}

/// llama.cpp beside vocollama on the same weights: the model directory's LLaMA
/// written as GGUF at each type, run through llama.cpp, and both in one report
/// with the ratios, the bandwidth ceiling and the charts.
#[test]
fn bench_runs_llamacpp_on_the_same_weights() {
    let python = llamacpp_python();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("report.md");
    let gguf = dir.path().join("gguf");
    let model = common::fixture("llava-gqa-bf16");
    let r = vocollama(&[
        "bench",
        "--model",
        model.to_str().unwrap(),
        "--precisions",
        "f32,q8,q4",
        "--llamacpp",
        "--llamacpp-python",
        &python,
        "--gguf-dir",
        gguf.to_str().unwrap(),
        "--reps",
        "1",
        "--decode",
        "2",
        "--text",
        "8",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(r.ok, "{}", r.stderr);
    let json: Value = serde_json::from_str(&std::fs::read_to_string(out.with_extension("json")).unwrap()).unwrap();
    let rows = json["llamacpp"]["rows"].as_array().unwrap();
    let types: Vec<&str> = rows.iter().map(|r| r["gguf_type"].as_str().unwrap()).collect();
    assert_eq!(types, ["F32", "Q8_0", "Q4_0"]);
    for row in rows {
        for key in ["prefill_short_ms", "prefill_long_ms", "decode_ms", "file_bytes", "threads"] {
            assert!(f(&row[key]) > 0.0, "{key} in {row}");
        }
        assert!(gguf.join(format!("llava-gqa-bf16-{}.gguf", row["gguf_type"].as_str().unwrap())).is_file());
    }
    // Quantized files are smaller than the f32 one: the types really differ.
    assert!(
        f(&rows[2]["file_bytes"]) < f(&rows[1]["file_bytes"]) && f(&rows[1]["file_bytes"]) < f(&rows[0]["file_bytes"])
    );
    let runs = json["checkpoint"]["runs"].as_array().unwrap();
    for run in runs {
        for key in ["long_prefill_ms", "decode_weight_bytes", "long_tokens"] {
            assert!(f(&run[key]) > 0.0, "{key} in {run}");
        }
    }
    assert!(f(&json["ceilings"]["read_gbs"]) > 0.0 && f(&json["ceilings"]["threads"]) >= 1.0);
    let md = std::fs::read_to_string(&out).unwrap();
    assert!(md.contains("## Runtimes side by side") && md.contains("| q4 | llama.cpp (Q4_0) |"), "{md}");
    for chart in ["report-stages.svg", "report-decode.svg"] {
        assert!(md.contains(chart), "{md}");
        let svg = std::fs::read_to_string(dir.path().join(chart)).unwrap();
        assert!(svg.starts_with("<svg") && svg.contains("llama.cpp"), "{chart}");
    }
    // Without a model directory there are no shared weights to compare on.
    let bad = vocollama(&["bench", "--llamacpp"]);
    common::assert_fails(&bad, "--llamacpp needs --model DIR");
}
