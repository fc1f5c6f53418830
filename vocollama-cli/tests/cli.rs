//! The `vocollama` binary end to end.

mod common;

use common::{Out, fixture, vocollama};

#[test]
fn info_describes_an_original_llava_checkpoint() {
    let dir = fixture("llava-gqa-bf16");
    let Out { ok, stdout: out, stderr: err, .. } = vocollama(&["info", "--model", dir.to_str().unwrap()]);
    assert!(ok, "{err}");
    for want in [
        "LLaVA original layout",
        "2 files",
        "bf16",
        "4 heads (2 key/value, head dim 16)",
        "2 of 3 layers run (select layer -2)",
        "mlp2x_gelu 48 -> 64",
        "pad to square",
        // 2 layers x (K,V) x 2 kv heads x 16 dims x 4 bytes
        "kv cache    512 B per token in f32, 256 B in f16",
    ] {
        assert!(out.contains(want), "missing {want:?} in:\n{out}");
    }
}

#[test]
fn info_takes_a_vision_tower_override() {
    let Out { ok, stdout: out, stderr: err, .. } = vocollama(&[
        "info",
        "--model",
        fixture("llava-mha-f16-bin").to_str().unwrap(),
        "--vision-tower",
        fixture("clip-vision-f16").to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    assert!(out.contains("PyTorch .bin") && out.contains("mlp3x_gelu") && out.contains("cls_patch"), "{out}");
}

#[test]
fn bad_model_dir_is_one_line_and_a_failure() {
    let Out { ok, stdout: out, stderr: err, .. } = vocollama(&["info", "--model", "/nonexistent/model"]);
    assert!(!ok);
    assert!(out.is_empty());
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.starts_with("error: /nonexistent/model/config.json"), "{err}");
}

#[test]
fn a_closed_pipe_ends_quietly() {
    use std::process::{Command, Stdio};
    // `vocollama info | head -1`: the reader goes away before the writer is done.
    let mut child = Command::new(env!("CARGO_BIN_EXE_vocollama"))
        .args(["info", "--model", fixture("llava-gqa-bf16").to_str().unwrap()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        assert!(out.status.success() || out.status.signal() == Some(libc::SIGPIPE), "{:?}", out.status);
    }
}
