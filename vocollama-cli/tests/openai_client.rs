//! OpenAI's official Python client (`tools/setup_clients.sh` installs it)
//! against `vocollama serve`: whole and streamed answers about an image equal
//! `vocollama ask`'s, usage reports the VoCo store, refusals arrive as the
//! client's own exceptions.

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::server::Server;
use common::vocollama;
use serde_json::Value;

/// The clients' venv: fails loudly, naming the setup command, when it is missing.
pub fn clients_python() -> PathBuf {
    let venv = std::env::var("VOCOLLAMA_CLIENTS_VENV").unwrap_or_else(|_| "/var/tmp/vocollama-clients".into());
    let python = PathBuf::from(&venv).join("bin/python");
    assert!(
        python.is_file(),
        "{} is missing: run tools/setup_clients.sh (the README's test command does) to install the client libraries",
        python.display()
    );
    python
}

#[test]
fn the_official_openai_client_gets_the_answers_ask_gives() {
    let python = clients_python();
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let image = root.join("assets/demo/images/scene-01.png");
    let question = "What colour is the triangle?";
    let out = vocollama(&["ask", "--json", "--image", image.to_str().unwrap(), question]);
    assert!(out.ok, "{}", out.stderr);
    let want: Value = serde_json::from_str(out.stdout.trim()).unwrap();

    let server = Server::start(&["--api-key", "client-key"]);
    let run = Command::new(python)
        .arg(root.join("tools/openai_client.py"))
        .args([&server.base, image.to_str().unwrap(), question])
        .env("OPENAI_API_KEY", "client-key")
        .output()
        .unwrap();
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let got: Value = serde_json::from_slice(&run.stdout).unwrap();
    assert_eq!(got["plain"], want["answer"], "{got}");
    assert_eq!(got["stream"], want["answer"], "{got}");
    assert_eq!(got["by_key"], want["answer"], "{got}");
    assert_eq!(got["plain_finish"], want["finish_reason"]);
    assert_eq!(got["stream_finish"], want["finish_reason"]);
    assert_eq!(got["plain_usage"]["prompt_tokens_details"]["cached_tokens"], 0);
    assert!(got["stream_usage"]["prompt_tokens_details"]["cached_tokens"].as_u64().unwrap() > 0, "{got}");
    assert_eq!(got["stream_usage"]["completion_tokens"], got["plain_usage"]["completion_tokens"]);
    assert_eq!(got["refused"]["status"], 400, "{got}");
    assert_eq!(got["refused"]["param"], "n", "{got}");
}
