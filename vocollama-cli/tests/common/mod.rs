//! What the command-line tests share: running the binary, fixtures, and the
//! checks every command's output gets.
#![allow(dead_code)]

pub mod server;

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

pub fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../assets/fixtures").join(name)
}

pub fn image(name: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../assets/images").join(name).to_str().unwrap().into()
}

/// The VoCo fixture model (original LLaVA layout, GQA, bf16 shards).
pub fn model() -> String {
    fixture("llava-gqa-bf16").to_str().unwrap().into()
}

/// The embedded demo model's N (`voco_num` in its config).
pub fn demo_voco_tokens() -> u64 {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../assets/demo/model/config.json");
    let config: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    config["voco_num"].as_u64().expect("voco_num in the demo's config")
}

/// What one run of the binary did.
pub struct Out {
    pub ok: bool,
    /// The exit status (`None`: killed by a signal, as an abort is).
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

pub fn vocollama(args: &[&str]) -> Out {
    vocollama_stdin(args, "")
}

/// Run `vocollama args` with `input` on its standard input.
pub fn vocollama_stdin(args: &[&str], input: &str) -> Out {
    vocollama_bytes(args, input.as_bytes())
}

/// Run `vocollama args` with these bytes on its standard input.
pub fn vocollama_bytes(args: &[&str], input: &[u8]) -> Out {
    let mut child = Command::new(env!("CARGO_BIN_EXE_vocollama"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run vocollama");
    child.stdin.take().unwrap().write_all(input).unwrap();
    let out = child.wait_with_output().unwrap();
    Out {
        ok: out.status.success(),
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into(),
        stderr: String::from_utf8_lossy(&out.stderr).into(),
    }
}

/// A failure: exit status 1, nothing on stdout, one `error:` line naming `want`.
pub fn assert_fails(r: &Out, want: &str) {
    assert!(!r.ok, "expected a failure, got {}", r.stdout);
    assert_eq!(r.code, Some(1), "exit status (101 is a panic, none a signal such as an abort): {}", r.stderr);
    assert!(r.stdout.is_empty(), "{}", r.stdout);
    assert_eq!(r.stderr.lines().count(), 1, "{}", r.stderr);
    assert!(r.stderr.starts_with("error: ") && r.stderr.contains(want), "missing {want:?} in {}", r.stderr);
}

/// max|got − want| / max|want| ≤ tol, with equal lengths.
pub fn assert_close(label: &str, got: &[f32], want: &[f32], tol: f32) {
    assert_eq!(got.len(), want.len(), "{label}: length");
    let scale = want.iter().fold(0f32, |m, x| m.max(x.abs()));
    let diff = got.iter().zip(want).fold(0f32, |m, (a, b)| m.max((a - b).abs()));
    assert!(scale > 0.0 && got.iter().all(|x| x.is_finite()), "{label}");
    let rel = diff / scale;
    eprintln!("{label}: max|Δ|/max|ref| = {rel:.3e}");
    assert!(rel <= tol, "{label}: {rel:e} > {tol:e}");
}

/// One JSON value per line.
pub fn json_lines(s: &str) -> Vec<serde_json::Value> {
    s.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"))).collect()
}
