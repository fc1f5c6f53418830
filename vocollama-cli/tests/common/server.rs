//! `vocollama serve` as the tests run it: the binary on an ephemeral loopback
//! port, talked to over real HTTP (`ureq`), killed when dropped.

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use base64::Engine;
use serde_json::{Value, json};

pub struct Server {
    child: Child,
    pub base: String,
    agent: ureq::Agent,
    /// What the server prints on stderr after it started listening.
    log: std::sync::Mutex<mpsc::Receiver<String>>,
}

/// A response: status and body (JSON where it parses).
pub struct Reply {
    pub status: u16,
    pub text: String,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or_else(|e| panic!("{e}: {}", self.text))
    }

    /// An OpenAI error body with `code`, and its message.
    pub fn assert_error(&self, status: u16, code: &str) -> String {
        assert_eq!(self.status, status, "{}", self.text);
        let e = &self.json()["error"];
        assert_eq!(e["code"], code, "{}", self.text);
        assert!(e["type"].is_string() && e.get("param").is_some(), "{}", self.text);
        e["message"].as_str().unwrap().to_string()
    }
}

impl Server {
    /// `vocollama serve ARGS --port 0`, once it listens.
    pub fn start(args: &[&str]) -> Server {
        Self::start_with_env(args, &[])
    }

    /// [`Server::start`] with these environment variables set.
    pub fn start_with_env(args: &[&str], env: &[(&str, &str)]) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_vocollama"))
            .envs(env.iter().copied())
            .arg("serve")
            .args(args)
            .args(["--port", "0"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start vocollama serve");
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut seen = String::new();
        let base = loop {
            match rx.recv_timeout(Duration::from_secs(120)) {
                Ok(line) => {
                    if let Some(at) = line.find("listening on http://") {
                        break line[at + "listening on ".len()..].trim().to_string();
                    }
                    seen.push_str(&line);
                    seen.push('\n');
                }
                Err(_) => panic!("the server did not start: {seen}{:?}", child.try_wait()),
            }
        };
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(300)))
            .build()
            .into();
        Server { child, base, agent, log: std::sync::Mutex::new(rx) }
    }

    pub fn get(&self, path: &str) -> Reply {
        let mut r = self.agent.get(format!("{}{path}", self.base)).call().expect("GET");
        Reply { status: r.status().as_u16(), text: r.body_mut().read_to_string().unwrap() }
    }

    /// POST `body`; `None` when the connection fails (the server died).
    pub fn try_post(&self, path: &str, body: &Value) -> Option<Reply> {
        let mut r = self
            .agent
            .post(format!("{}{path}", self.base))
            .header("Content-Type", "application/json")
            .send(body.to_string().as_bytes())
            .ok()?;
        let text = r.body_mut().read_to_string().ok()?;
        Some(Reply { status: r.status().as_u16(), text })
    }

    /// Wait for the server's process to end by itself; its exit status.
    pub fn wait(mut self) -> std::process::ExitStatus {
        self.child.wait().unwrap()
    }

    /// POST `body` as it is (any bytes), with optional headers.
    pub fn post_raw(&self, path: &str, body: &[u8], headers: &[(&str, &str)]) -> Reply {
        let mut req = self.agent.post(format!("{}{path}", self.base)).header("Content-Type", "application/json");
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let mut r = req.send(body).expect("POST");
        let text = r.body_mut().with_config().limit(64 << 20).read_to_string().unwrap();
        Reply { status: r.status().as_u16(), text }
    }

    pub fn post(&self, path: &str, body: &Value) -> Reply {
        self.post_raw(path, body.to_string().as_bytes(), &[])
    }

    /// A streamed chat completion: every `data:` payload until `[DONE]` (included) or the end.
    pub fn stream(&self, body: &Value) -> (u16, Vec<String>) {
        let mut r = self
            .agent
            .post(format!("{}/v1/chat/completions", self.base))
            .header("Content-Type", "application/json")
            .send(body.to_string().as_bytes())
            .expect("POST");
        let status = r.status().as_u16();
        let mut events = Vec::new();
        let mut text = String::new();
        if status != 200 {
            r.body_mut().as_reader().read_to_string(&mut text).unwrap();
            return (status, vec![text]);
        }
        for line in BufReader::new(r.body_mut().as_reader()).lines() {
            let line = line.unwrap();
            if let Some(data) = line.strip_prefix("data: ") {
                events.push(data.to_string());
            }
        }
        (status, events)
    }

    /// The value of one metric line (`name` with its labels, if any).
    pub fn metric(&self, name: &str) -> f64 {
        let text = self.get("/metrics").text;
        text.lines()
            .find_map(|l| l.strip_prefix(name).and_then(|rest| rest.strip_prefix(' ')))
            .unwrap_or_else(|| panic!("no metric {name} in\n{text}"))
            .parse()
            .unwrap()
    }

    /// Stop the server with SIGKILL (nothing of it runs after this).
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Lines the server printed after it started.
    pub fn log(&self) -> Vec<String> {
        self.log.lock().unwrap().try_iter().collect()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A file as a `data:` URL of `mime`.
pub fn data_url(path: &std::path::Path, mime: &str) -> String {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    format!("data:{mime};base64,{}", base64::engine::general_purpose::STANDARD.encode(bytes))
}

/// One user message: `question` about `images` (URLs).
pub fn chat(question: &str, images: &[String], extra: Value) -> Value {
    let mut content = vec![json!({"type": "text", "text": question})];
    content.extend(images.iter().map(|u| json!({"type": "image_url", "image_url": {"url": u}})));
    let mut body = json!({"messages": [{"role": "user", "content": content}]});
    if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
        b.extend(e.clone());
    }
    body
}

/// The text and the chunks' JSON of a streamed answer.
pub fn streamed_text(events: &[String]) -> (String, Vec<Value>) {
    let chunks: Vec<Value> = events
        .iter()
        .filter(|e| e.as_str() != "[DONE]")
        .map(|e| serde_json::from_str(e).unwrap_or_else(|err| panic!("{err}: {e}")))
        .collect();
    let text = chunks
        .iter()
        .flat_map(|c| c["choices"].as_array().cloned().unwrap_or_default())
        .filter_map(|c| c["delta"]["content"].as_str().map(str::to_string))
        .collect();
    (text, chunks)
}
