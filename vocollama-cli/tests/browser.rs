//! The chat page in a real browser: headless Chromium (Debian's `chromium`
//! and `chromium-driver`, driven by Selenium from `tools/setup_clients.sh`)
//! uploads a picture, asks two questions and reads the streamed answers,
//! which equal `vocollama chat`'s.

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::server::Server;
use common::vocollama_stdin;
use serde_json::Value;

fn required(var: &str, default: &str, what: &str) -> String {
    let path = std::env::var(var).unwrap_or_else(|_| default.into());
    assert!(PathBuf::from(&path).is_file(), "{path} is missing: {what} (or set {var})");
    path
}

#[test]
fn the_chat_page_streams_answers_in_a_real_browser() {
    let venv = std::env::var("VOCOLLAMA_CLIENTS_VENV").unwrap_or_else(|_| "/var/tmp/vocollama-clients".into());
    let python = required("VOCOLLAMA_CLIENTS_PYTHON", &format!("{venv}/bin/python"), "run tools/setup_clients.sh");
    let chromium = required("VOCOLLAMA_CHROMIUM", "/usr/bin/chromium", "install Debian's chromium");
    let driver = required("VOCOLLAMA_CHROMEDRIVER", "/usr/bin/chromedriver", "install Debian's chromium-driver");
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let image = root.join("assets/demo/images/scene-03.png");
    let questions = ["What colour is the circle?", "What shape is it?"];
    let out = vocollama_stdin(&["chat", "--image", image.to_str().unwrap()], &format!("{}\n", questions.join("\n")));
    assert!(out.ok, "{}", out.stderr);
    let want: Vec<&str> = out.stdout.lines().collect();

    let server = Server::start(&[]);
    let shot = tempfile::NamedTempFile::with_suffix(".png").unwrap();
    let run = Command::new(python)
        .arg(root.join("tools/browser_chat.py"))
        .args([&server.base, image.to_str().unwrap(), questions[0], questions[1]])
        .args(["--chromium", &chromium, "--chromedriver", &driver, "--screenshot", shot.path().to_str().unwrap()])
        .output()
        .unwrap();
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let page: Value = serde_json::from_slice(&run.stdout).unwrap();
    assert_eq!(page["model"], "model", "{page}");
    let n = common::demo_voco_tokens();
    let compressed = format!("compressed into {n} VoCo token{}", if n == 1 { "" } else { "s" });
    assert!(page["status"].as_str().unwrap().contains(&compressed), "{page}");
    for (i, a) in page["answers"].as_array().unwrap().iter().enumerate() {
        assert_eq!(a["error"], false, "{page}");
        assert_eq!(a["answer"], want[i], "{page}");
        assert_eq!(a["from_store"], true, "the page sends the image once and asks by key: {page}");
        assert!(a["meta"].as_str().unwrap().contains("tok/s"), "timings shown: {page}");
    }
    let png = std::fs::read(shot.path()).unwrap();
    assert!(png.starts_with(b"\x89PNG") && png.len() > 10_000, "a screenshot of the page");
}
