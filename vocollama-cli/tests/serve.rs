//! `vocollama serve` over real HTTP: answers equal `vocollama ask`'s, the VoCo
//! store (hits, `voco:` keys, a directory that survives a kill), clips,
//! concurrent requests decoded together, and every bad request refused in
//! OpenAI's error shape while the server keeps serving.

mod common;

use std::path::{Path, PathBuf};

use common::server::{Server, chat, data_url, streamed_text};
use common::{model, vocollama, vocollama_stdin};
use serde_json::{Value, json};

fn demo(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../assets/demo").join(name)
}

fn asset(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../assets").join(path)
}

/// `vocollama ask --json` (greedy): the answer and its finish reason.
fn ask(args: &[&str], image: &Path, question: &str) -> (String, String) {
    let mut all = vec!["ask", "--json", "--image", image.to_str().unwrap()];
    all.extend_from_slice(args);
    all.push(question);
    let out = vocollama(&all);
    assert!(out.ok, "{}", out.stderr);
    let line: Value = serde_json::from_str(out.stdout.trim()).unwrap();
    (line["answer"].as_str().unwrap().into(), line["finish_reason"].as_str().unwrap().into())
}

fn png(path: &Path) -> String {
    data_url(path, "image/png")
}

fn content(reply: &Value) -> String {
    reply["choices"][0]["message"]["content"].as_str().unwrap().to_string()
}

#[test]
fn answers_equal_ask_streamed_or_not_and_a_repeated_image_comes_from_the_store() {
    let image = demo("images/scene-02.png");
    let question = "What colour is the circle?";
    let (want, finish) = ask(&[], &image, question);
    let server = Server::start(&[]);

    let models = server.get("/v1/models").json();
    let id = models["data"][0]["id"].as_str().unwrap().to_string();
    assert_eq!(server.get("/health").json()["status"], "ok");

    let r = server.post("/v1/chat/completions", &chat(question, &[png(&image)], json!({"model": id})));
    assert_eq!(r.status, 200, "{}", r.text);
    let body = r.json();
    assert_eq!(content(&body), want);
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(body["choices"][0]["finish_reason"], finish.as_str());
    assert_eq!(body["usage"]["prompt_tokens_details"]["cached_tokens"], 0, "the first sight of the image");
    assert!(body["usage"]["prompt_tokens"].as_u64().unwrap() > body["usage"]["completion_tokens"].as_u64().unwrap());
    assert_eq!(server.metric("vocollama_store_misses_total"), 1.0);
    assert_eq!(server.metric("vocollama_images_compressed_total"), 1.0);

    // The same picture again, streamed: no stage 1, the same answer.
    let (status, events) = server.stream(&chat(
        question,
        &[png(&image)],
        json!({"stream": true, "stream_options": {"include_usage": true}}),
    ));
    assert_eq!(status, 200, "{events:?}");
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    let (text, chunks) = streamed_text(&events);
    assert_eq!(text, want);
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    assert!(chunks.iter().all(|c| c["object"] == "chat.completion.chunk" && c["id"] == chunks[0]["id"]));
    let finished: Vec<&Value> = chunks.iter().filter(|c| !c["choices"][0]["finish_reason"].is_null()).collect();
    assert_eq!(finished.len(), 1);
    assert_eq!(finished[0]["choices"][0]["finish_reason"], finish.as_str());
    let usage = &chunks.last().unwrap()["usage"];
    assert!(usage["prompt_tokens_details"]["cached_tokens"].as_u64().unwrap() > 0, "{usage}");
    assert_eq!(usage["prompt_tokens"], body["usage"]["prompt_tokens"]);
    assert_eq!(finished[0]["timings"]["images_from_store"], 1);
    assert_eq!(server.metric("vocollama_store_hits_total"), 1.0);
    assert_eq!(server.metric("vocollama_images_compressed_total"), 1.0, "stage 1 ran once");

    // A second turn equals `vocollama chat`'s second answer.
    let second = "What shape is it?";
    let out = vocollama_stdin(&["chat", "--image", image.to_str().unwrap()], &format!("{question}\n{second}\n"));
    assert!(out.ok, "{}", out.stderr);
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines[0], want);
    let mut body = chat(question, &[png(&image)], json!({}));
    body["messages"]
        .as_array_mut()
        .unwrap()
        .extend([json!({"role": "assistant", "content": want}), json!({"role": "user", "content": second})]);
    let r = server.post("/v1/chat/completions", &body);
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(content(&r.json()), lines[1]);
}

#[test]
fn voco_keys_and_clips() {
    let server = Server::start(&[]);
    let image = demo("images/scene-02.png");
    let question = "What colour is the circle?";
    let stored = server.post("/v1/voco", &json!({"image": png(&image)})).json();
    let key = stored["key"].as_str().unwrap();
    assert_eq!(key.len(), 64);
    assert_eq!(stored["cached"], false);
    assert_eq!(stored["voco_tokens"], common::demo_voco_tokens(), "the demo model's N");
    let again = server.post("/v1/voco", &json!({"image": png(&image)})).json();
    assert_eq!((again["key"].as_str(), &again["cached"]), (Some(key), &json!(true)));

    let r = server.post("/v1/chat/completions", &chat(question, &[format!("voco:{key}")], json!({})));
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(content(&r.json()), ask(&[], &image, question).0);
    assert!(r.json()["usage"]["prompt_tokens_details"]["cached_tokens"].as_u64().unwrap() > 0);
    let unknown = format!("voco:{}", "0".repeat(64));
    server.post("/v1/chat/completions", &chat(question, &[unknown], json!({}))).assert_error(404, "voco_key_not_found");

    // Three images in one message: the frames of a clip, as `vocollama video` answers them.
    let frames = tempfile::tempdir().unwrap();
    let names = ["scene-03.png", "scene-01.png", "scene-04.png"];
    for (i, name) in names.iter().enumerate() {
        std::fs::copy(demo(&format!("images/{name}")), frames.path().join(format!("{i}.png"))).unwrap();
    }
    let q = "How many shapes are there?";
    let out = vocollama(&["video", "--json", "--frames", frames.path().to_str().unwrap(), "--num-frames", "3", q]);
    assert!(out.ok, "{}", out.stderr);
    let want: Value = serde_json::from_str(out.stdout.trim()).unwrap();
    let urls: Vec<String> = names.iter().map(|n| png(&demo(&format!("images/{n}")))).collect();
    let r = server.post("/v1/chat/completions", &chat(q, &urls, json!({})));
    assert_eq!(r.status, 200, "{}", r.text);
    let body = r.json();
    assert_eq!(content(&body), want["answer"].as_str().unwrap());
    assert_eq!(body["timings"]["images"], 3);
}

#[test]
fn bad_requests_get_openai_errors_and_the_server_keeps_serving() {
    let server = Server::start(&["--api-key", "sesame", "--max-body", "1MiB"]);
    let auth = [("Authorization", "Bearer sesame")];
    let image = png(&demo("images/scene-02.png"));
    let post = |body: &Value| server.post_raw("/v1/chat/completions", body.to_string().as_bytes(), &auth);
    let good = chat("What colour is the circle?", std::slice::from_ref(&image), json!({}));

    // Keys: none, wrong, right; /health stays open.
    server.post("/v1/chat/completions", &good).assert_error(401, "invalid_api_key");
    server
        .post_raw("/v1/chat/completions", good.to_string().as_bytes(), &[("Authorization", "Bearer sesame!")])
        .assert_error(401, "invalid_api_key");
    assert_eq!(server.get("/health").status, 200);
    assert_eq!(server.get("/metrics").status, 401);

    server.post_raw("/v1/chat/completions", b"{\"messages\": [", &auth).assert_error(400, "invalid_json");
    let text_url = "data:text/plain;base64,aGVsbG8=".to_string();
    let m = post(&chat("hi", &[text_url], json!({}))).assert_error(400, "invalid_request");
    assert!(m.contains("messages[0].content[1].image_url.url") && m.contains("text/plain"), "{m}");
    let m = post(&chat("hi", &[data_url(&asset("hostile/side-100000.png"), "image/png")], json!({})))
        .assert_error(400, "invalid_request");
    assert!(m.contains("messages[0].content[1].image_url.url") && m.contains("limit"), "{m}");
    post(&chat("hi", &[data_url(&asset("hostile/truncated.png"), "image/png")], json!({})))
        .assert_error(400, "invalid_request");
    post(&chat("hi", &["https://example.com/cat.png".to_string()], json!({}))).assert_error(400, "invalid_request");
    post(&chat("hi", &[format!("voco:{}", "ab".repeat(32))], json!({}))).assert_error(404, "voco_key_not_found");
    let long = "circle ".repeat(3000);
    post(&chat(&long, std::slice::from_ref(&image), json!({}))).assert_error(400, "context_length_exceeded");
    let huge = chat(&"x".repeat(2 << 20), std::slice::from_ref(&image), json!({}));
    post(&huge).assert_error(413, "request_too_large");
    for (field, value) in [
        ("n", json!(2)),
        ("temperature", json!(7)),
        ("top_p", json!(0)),
        ("frequency_penalty", json!(0.5)),
        ("max_tokens", json!(0)),
        ("stop", json!([1])),
        ("tools", json!([{"type": "function"}])),
    ] {
        let mut body = good.clone();
        body[field] = value;
        let m = post(&body).assert_error(400, "invalid_request");
        assert!(m.starts_with(field), "{field}: {m}");
    }
    let mut body = good.clone();
    body["model"] = json!("gpt-4o");
    post(&body).assert_error(404, "model_not_found");
    let late_system = json!({"messages": [good["messages"][0], {"role": "system", "content": "Be brief."}]});
    let m = post(&late_system).assert_error(400, "invalid_request");
    assert!(m.starts_with("messages[1].role"), "{m}");
    let text_only = json!({"messages": [{"role": "user", "content": "Hello?"}]});
    post(&text_only).assert_error(400, "invalid_request");
    let r = server.post_raw("/v1/nothing", b"{}", &auth);
    r.assert_error(404, "not_found");

    // Still serving, and the errors were counted.
    let r = post(&good);
    assert_eq!(r.status, 200, "{}", r.text);
    server.post_raw("/metrics", b"", &auth).assert_error(405, "method_not_allowed");
    let metrics = {
        let r = ureq_get_with_key(&server.base, "/metrics", "sesame");
        assert!(r.contains("vocollama_errors_total{code=\"invalid_json\"} 1"), "{r}");
        r
    };
    assert!(metrics.contains("vocollama_errors_total{code=\"invalid_api_key\"} 3"), "{metrics}");
}

/// GET with a bearer key (the shared helper sends none).
fn ureq_get_with_key(base: &str, path: &str, key: &str) -> String {
    let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
    let mut r = agent.get(format!("{base}{path}")).header("Authorization", format!("Bearer {key}")).call().unwrap();
    assert_eq!(r.status().as_u16(), 200);
    r.body_mut().read_to_string().unwrap()
}

/// The backends compiled in (`vocollama backends`): flex, and wgpu where it is.
fn backends() -> Vec<String> {
    let out = vocollama(&["backends"]);
    assert!(out.ok, "{}", out.stderr);
    ["flex", "wgpu"].into_iter().filter(|b| out.stdout.lines().any(|l| l == *b)).map(String::from).collect()
}

#[test]
fn concurrent_requests_are_decoded_together_and_each_equals_its_answer_alone() {
    for backend in backends() {
        // Random weights: the answers run to max_tokens, so the requests overlap.
        let server = Server::start(&["--model", &model(), "--max-batch", "4", "--backend", &backend]);
        let image = PathBuf::from(common::image("wide.png"));
        let questions = ["What is it?", "Describe the picture in detail.", "Colours?", "Where is the red part?"];
        let body = |q: &str, stream: bool| chat(q, &[png(&image)], json!({"max_tokens": 24, "stream": stream}));
        let alone: Vec<String> = questions
            .iter()
            .map(|q| {
                let r = server.post("/v1/chat/completions", &body(q, false));
                assert_eq!(r.status, 200, "[{backend}] {}", r.text);
                content(&r.json())
            })
            .collect();
        assert!(alone.iter().all(|a| !a.is_empty()));
        assert_eq!(server.metric("vocollama_decode_batch_max"), 1.0, "[{backend}] one at a time so far");
        let together: Vec<String> = std::thread::scope(|s| {
            let handles: Vec<_> = questions
                .iter()
                .map(|q| {
                    let server = &server;
                    let body = body(q, true);
                    s.spawn(move || {
                        let (status, events) = server.stream(&body);
                        assert_eq!(status, 200, "{events:?}");
                        streamed_text(&events).0
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert_eq!(together, alone, "[{backend}]");
        assert!(server.metric("vocollama_decode_batch_max") >= 2.0, "[{backend}] the requests were decoded together");
    }
}

#[test]
fn the_cache_directory_survives_a_kill_and_a_damaged_entry_is_recomputed() {
    let dir = tempfile::tempdir().unwrap();
    let cache_dir = dir.path().join("voco");
    let args = ["--cache-dir", cache_dir.to_str().unwrap()];
    let (one, two) = (demo("images/scene-02.png"), demo("images/scene-03.png"));
    let server = Server::start(&args);
    let k1 = server.post("/v1/voco", &json!({"image": png(&one)})).json()["key"].as_str().unwrap().to_string();
    let k2 = server.post("/v1/voco", &json!({"image": png(&two)})).json()["key"].as_str().unwrap().to_string();
    server.kill();
    let mut files: Vec<String> =
        std::fs::read_dir(&cache_dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    files.sort();
    let mut want = vec![format!("{k1}.voco"), format!("{k2}.voco")];
    want.sort();
    assert_eq!(files, want, "whole entries only");
    // The second entry cut short, as a write without the rename would leave it.
    let path = cache_dir.join(format!("{k2}.voco"));
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();

    let server = Server::start(&args);
    let question = "What colour is the circle?";
    let r = server.post("/v1/chat/completions", &chat(question, &[format!("voco:{k1}")], json!({})));
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(content(&r.json()), ask(&[], &one, question).0);
    assert_eq!(server.metric("vocollama_images_compressed_total"), 0.0, "read back, not recomputed");
    let q2 = "How many shapes are there?";
    let r = server.post("/v1/chat/completions", &chat(q2, &[png(&two)], json!({})));
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(content(&r.json()), ask(&[], &two, q2).0);
    assert_eq!(server.metric("vocollama_images_compressed_total"), 1.0, "the damaged entry was recomputed");
    assert_eq!(std::fs::read(&path).unwrap().len(), bytes.len(), "and written whole again");
}

/// `n` copies of a chat completion sent at once: each one's status and body.
fn burst(server: &Server, body: &Value, n: usize) -> Vec<(u16, String)> {
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..n)
            .map(|_| {
                s.spawn(move || {
                    let r = server.post("/v1/chat/completions", body);
                    (r.status, r.text)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

#[test]
fn a_full_queue_answers_429_and_a_client_that_leaves_is_dropped() {
    // One request decodes at a time and one waits: the rest of a burst is turned away.
    let server = Server::start(&["--model", &model(), "--max-batch", "1", "--queue", "1"]);
    let image = png(&PathBuf::from(common::image("wide.png")));
    let body = chat("Tell me everything.", std::slice::from_ref(&image), json!({"max_tokens": 300}));
    let statuses = burst(&server, &body, 24);
    let busy: Vec<&(u16, String)> = statuses.iter().filter(|(s, _)| *s == 429).collect();
    assert!(!busy.is_empty(), "a burst of 24 over a queue of 1 is turned away in part");
    assert!(statuses.iter().all(|(s, _)| *s == 200 || *s == 429), "{statuses:?}");
    assert!(busy[0].1.contains("\"queue_full\""), "{}", busy[0].1);
    assert!(statuses.iter().any(|(s, _)| *s == 200));
    assert_eq!(server.metric("vocollama_errors_total{code=\"queue_full\"}"), busy.len() as f64);

    // A streamed request whose client goes away after the first chunk leaves the batch.
    let mut stream = std::net::TcpStream::connect(server.base.trim_start_matches("http://")).unwrap();
    let long = chat("Tell me everything.", std::slice::from_ref(&image), json!({"max_tokens": 400, "stream": true}))
        .to_string();
    use std::io::{Read, Write};
    write!(
        stream,
        "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{long}",
        long.len()
    )
    .unwrap();
    let mut first = [0u8; 64];
    let n = stream.read(&mut first).unwrap();
    assert!(String::from_utf8_lossy(&first[..n]).starts_with("HTTP/1.1 200"));
    drop(stream);
    let left = (0..100).any(|_| {
        std::thread::sleep(std::time::Duration::from_millis(50));
        server.metric("vocollama_cancelled_total") >= 1.0
    });
    assert!(left, "the request was dropped when its client left");
    let r = server.post("/v1/chat/completions", &body);
    assert_eq!(r.status, 200, "still serving: {}", r.text);
}

#[test]
fn requests_past_their_deadline_end_with_a_timeout() {
    // One at a time with a one-second limit: the tail of a burst waits in the queue past its deadline.
    let server = Server::start(&["--model", &model(), "--max-batch", "1", "--request-timeout", "1"]);
    let image = png(&PathBuf::from(common::image("wide.png")));
    let body = chat("Tell me everything.", std::slice::from_ref(&image), json!({"max_tokens": 400}));
    let replies = burst(&server, &body, 40);
    assert!(replies.iter().all(|(s, _)| *s == 200 || *s == 503), "{replies:?}");
    let late: Vec<&(u16, String)> = replies.iter().filter(|(s, _)| *s == 503).collect();
    assert!(!late.is_empty(), "40 requests of 400 tokens one at a time outlast a second");
    assert!(late.iter().all(|(_, t)| t.contains("\"timeout\"") && t.contains("1 s")), "{late:?}");
    assert_eq!(server.metric("vocollama_errors_total{code=\"timeout\"}"), late.len() as f64);
}

#[test]
fn a_server_killed_while_writing_a_cache_leaves_no_entry_and_the_next_one_recomputes_it() {
    let dir = tempfile::tempdir().unwrap();
    let cache_dir = dir.path().join("voco");
    let args = ["--cache-dir", cache_dir.to_str().unwrap()];
    let image = demo("images/scene-02.png");
    // Killed (abort, as kill -9) after the cache's bytes are written to the temporary file, before the rename.
    let server = Server::start_with_env(&args, &[("VOCOLLAMA_KILL_AT", "before-rename")]);
    assert!(server.try_post("/v1/voco", &json!({"image": png(&image)})).is_none(), "the server died mid-write");
    assert!(!server.wait().success());
    let names: Vec<String> =
        std::fs::read_dir(&cache_dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    assert!(names.iter().all(|n| n.starts_with('.') && n.ends_with(".tmp")), "only the temporary file: {names:?}");
    assert_eq!(names.len(), 1, "{names:?}");

    let server = Server::start(&args);
    let question = "What colour is the circle?";
    let r = server.post("/v1/chat/completions", &chat(question, &[png(&image)], json!({})));
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(content(&r.json()), ask(&[], &image, question).0);
    assert_eq!(r.json()["usage"]["prompt_tokens_details"]["cached_tokens"], 0, "nothing partial was used");
    assert_eq!(server.metric("vocollama_images_compressed_total"), 1.0);
    let names: Vec<String> =
        std::fs::read_dir(&cache_dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    assert_eq!(names.len(), 1, "the entry, and the dead writer's temporary file swept: {names:?}");
    assert!(names[0].ends_with(".voco") && !names[0].starts_with('.'), "{names:?}");
}

#[test]
fn the_load_generator_reports_throughput_latency_and_store_hits() {
    let server = Server::start(&[]);
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("load.json");
    let run = std::process::Command::new("python3")
        .arg(root.join("tools/load_serve.py"))
        .args(["--url", &server.base, "--clients", "3", "--requests", "14", "--max-tokens", "8"])
        .args(["--images", root.join("assets/demo/images").to_str().unwrap(), "--json", report.to_str().unwrap()])
        .output()
        .expect("python3 runs the load generator");
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let r: Value = serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    assert_eq!((r["requests"].as_u64(), r["errors"].as_u64()), (Some(14), Some(0)), "{r}");
    assert!(r["completion_tokens"].as_u64().unwrap() >= 14, "{r}");
    for k in ["tokens_per_second", "decode_tokens_per_second", "latency_p50_s", "latency_p99_s", "first_token_p50_s"] {
        assert!(r[k].as_f64().is_some_and(|v| v > 0.0), "{k}: {r}");
    }
    // Fourteen requests round robin over the demo's ten pictures: each picture's
    // first request compresses it (long done when its second comes), the second hits.
    let pictures = std::fs::read_dir(root.join("assets/demo/images")).unwrap().count();
    assert_eq!(pictures, 10);
    assert_eq!(r["store_hit_rate"].as_f64().unwrap(), 4.0 / 14.0, "{r}");
    assert_eq!(server.metric("vocollama_store_misses_total"), 10.0);
    assert_eq!(server.metric("vocollama_store_hits_total"), 4.0);
}

#[test]
fn a_system_message_replaces_the_templates_own_and_the_image_still_comes_from_the_store() {
    let server = Server::start(&[]);
    let image = png(&demo("images/scene-02.png"));
    let question = "What colour is the circle?";
    let with_system = |system: &str| {
        let mut body = chat(question, std::slice::from_ref(&image), json!({}));
        body["messages"].as_array_mut().unwrap().insert(0, json!({"role": "system", "content": system}));
        let r = server.post("/v1/chat/completions", &body);
        assert_eq!(r.status, 200, "{}", r.text);
        r.json()
    };
    let plain = server.post("/v1/chat/completions", &chat(question, std::slice::from_ref(&image), json!({}))).json();
    // The template's own system prompt given as a message: the same prompt, the same answer.
    let same = with_system(vocollama_model::text::template::VOCO_SYSTEM);
    assert_eq!(content(&same), content(&plain));
    assert_eq!(same["usage"]["prompt_tokens"], plain["usage"]["prompt_tokens"]);
    // Another one is used (a shorter prompt), after the VoCo tokens: the image's cache still serves.
    let short = with_system("Answer in one word.");
    assert!(short["usage"]["prompt_tokens"].as_u64() < plain["usage"]["prompt_tokens"].as_u64(), "{short}");
    assert!(short["usage"]["prompt_tokens_details"]["cached_tokens"].as_u64().unwrap() > 0, "{short}");
    assert_eq!(server.metric("vocollama_images_compressed_total"), 1.0);
}

#[test]
fn bad_server_options_fail_in_one_line() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    common::assert_fails(&vocollama(&["serve", "--port", &port]), "Address already in use");
    let file = demo("questions.json");
    common::assert_fails(&vocollama(&["serve", "--port", "0", "--cache-dir", file.to_str().unwrap()]), "--cache-dir");
    common::assert_fails(&vocollama(&["serve", "--max-batch", "0"]), "--max-batch: expected at least 1");
    common::assert_fails(&vocollama(&["serve", "--request-timeout", "0"]), "--request-timeout");
}
