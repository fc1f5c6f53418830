//! `compress`, `ask`, `chat` and `logits` end to end on the VoCo fixture, against
//! transformers references for real templated prompts (`tools/make_fixtures.py prompts`).

mod common;

use std::path::Path;

use common::*;

const QUESTION: &str = "What colour is the\ncircle?";

/// A tensor of `prompt-reference.safetensors` as f32 or i64 values.
fn reference_f32(name: &str) -> Vec<f32> {
    let bytes = std::fs::read(fixture("llava-gqa-bf16").join("prompt-reference.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let t = st.tensor(name).unwrap();
    t.data().chunks(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect()
}

fn reference_ids(name: &str) -> Vec<i64> {
    let bytes = std::fs::read(fixture("llava-gqa-bf16").join("prompt-reference.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let t = st.tensor(name).unwrap();
    t.data().chunks(8).map(|c| i64::from_le_bytes(c.try_into().unwrap())).collect()
}

fn read_npy(path: &Path) -> Vec<f32> {
    let b = std::fs::read(path).unwrap();
    assert_eq!(&b[..8], b"\x93NUMPY\x01\x00");
    let hlen = u16::from_le_bytes([b[8], b[9]]) as usize;
    b[10 + hlen..].chunks(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect()
}

fn backends() -> Vec<(&'static str, f32)> {
    let out = vocollama(&["backends"]);
    let mut v = vec![("flex", 1e-4)];
    if out.stdout.lines().any(|l| l == "wgpu") {
        v.push(("wgpu", 1e-3));
    }
    v
}

fn logits(args: &[&str]) -> Vec<f32> {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("logits.npy");
    let m = model();
    let mut all = vec!["logits", "--model", &m, "--dtype", "f32", "--prompt", QUESTION, "--out", out.to_str().unwrap()];
    all.extend_from_slice(args);
    let r = vocollama(&all);
    assert!(r.ok, "{}", r.stderr);
    read_npy(&out)
}

#[test]
fn logits_equal_transformers_for_the_voco_and_plain_templates() {
    let img = image("wide.png");
    for (backend, tol) in backends() {
        let common = ["--image", img.as_str(), "--backend", backend];
        // voco_num = 2 in config.json is the default.
        assert_close(&format!("{backend} voco N=2"), &logits(&common), &reference_f32("voco_n2_logits"), tol);
        let n1 = [&common[..], &["--voco-tokens", "1"]].concat();
        assert_close(&format!("{backend} voco N=1"), &logits(&n1), &reference_f32("voco_n1_logits"), tol);
        let none = [&common[..], &["--compression", "none"]].concat();
        assert_close(&format!("{backend} none"), &logits(&none), &reference_f32("llava_v1_logits"), tol);
    }
}

#[test]
fn a_saved_cache_answers_like_the_image() {
    let dir = tempfile::tempdir().unwrap();
    let m = model();
    let img = image("wide.png");
    for (dtype, tol) in [("f32", 1e-4), ("f16", 1e-2)] {
        let file = dir.path().join(format!("wide-{dtype}.voco"));
        let r = vocollama(&[
            "compress",
            "--model",
            &m,
            "--dtype",
            "f32",
            "--image",
            &img,
            "--out",
            file.to_str().unwrap(),
            "--cache-dtype",
            dtype,
        ]);
        assert!(r.ok, "{}", r.stderr);
        assert!(r.stderr.contains("2 VoCo tokens") && r.stderr.contains("timing: vision encode"), "{}", r.stderr);
        let got = logits(&["--cache", file.to_str().unwrap()]);
        assert_close(&format!("from a {dtype} cache"), &got, &reference_f32("voco_n2_logits"), tol);
    }
    // A cache computed in f16 answers a run of another precision of the same
    // checkpoint, and says what computed it.
    let f16_run = dir.path().join("computed-in-f16.voco");
    let r =
        vocollama(&["compress", "--model", &m, "--dtype", "f16", "--image", &img, "--out", f16_run.to_str().unwrap()]);
    assert!(r.ok, "{}", r.stderr);
    let info = vocollama(&["info", "--model", &m, "--cache", f16_run.to_str().unwrap()]);
    assert!(info.ok, "{}", info.stderr);
    let line = info.stdout.lines().find(|l| l.starts_with("cache ")).unwrap_or_else(|| panic!("{}", info.stdout));
    for want in ["2 VoCo tokens", "stored f16", "computed in f16", "made by this model"] {
        assert!(line.contains(want), "missing {want:?} in {line}");
    }
    let got = logits(&["--cache", f16_run.to_str().unwrap()]);
    assert_close("f32 run from a cache computed in f16", &got, &reference_f32("voco_n2_logits"), 1e-2);
    for precision in [["--dtype", "f16"], ["--quantize", "q8"]] {
        let r = vocollama(
            &[&["ask", "--model", &m, "--cache", f16_run.to_str().unwrap()][..], &precision, &[QUESTION]].concat(),
        );
        assert!(r.ok && !r.stdout.trim().is_empty(), "{precision:?}: {}", r.stderr);
    }
    // 2 layers x (K,V) x 2 kv heads x 16 dims x 2 bytes = 256 bytes per VoCo token in f16.
    let header_and_sums = std::fs::metadata(dir.path().join("wide-f16.voco")).unwrap().len() - 2 * 256;
    assert!(header_and_sums < 200, "{header_and_sums} bytes besides the payload");
}

fn greedy_reference(name: &str) -> Vec<i64> {
    reference_ids(name).into_iter().filter(|&t| t >= 0).collect()
}

#[test]
fn ask_answers_greedily_like_transformers_and_reuses_one_compression() {
    let m = model();
    let img = image("wide.png");
    let r = vocollama(&[
        "ask",
        "--model",
        &m,
        "--dtype",
        "f32",
        "--image",
        &img,
        "--max-new-tokens",
        "8",
        "--json",
        QUESTION,
        "Second?",
        QUESTION,
    ]);
    assert!(r.ok, "{}", r.stderr);
    let lines = json_lines(&r.stdout);
    assert_eq!(lines.len(), 3);
    let ids = |v: &serde_json::Value| -> Vec<i64> {
        v["token_ids"].as_array().unwrap().iter().map(|x| x.as_i64().unwrap()).collect()
    };
    assert_eq!(ids(&lines[0]), greedy_reference("voco_n2_greedy"));
    assert_eq!(lines[0]["question"], QUESTION);
    // Questions are independent: the third equals the first.
    assert_eq!(lines[2], lines[0]);
    for want in ["timing: vision encode", "ms | compress", "prefill", "tok/s | decode", "cache 1024 bytes"] {
        assert!(r.stderr.contains(want), "missing {want:?} in {}", r.stderr);
    }

    // Streamed text equals the JSON answer; the plain path gives the plain reference.
    let r2 = vocollama(&["ask", "--model", &m, "--dtype", "f32", "--image", &img, "--max-new-tokens", "8", QUESTION]);
    assert!(r2.ok, "{}", r2.stderr);
    assert_eq!(r2.stdout, format!("{}\n", lines[0]["answer"].as_str().unwrap()));
    let r3 = vocollama(&[
        "ask",
        "--model",
        &m,
        "--dtype",
        "f32",
        "--image",
        &img,
        "--compression",
        "none",
        "--max-new-tokens",
        "8",
        "--json",
        QUESTION,
    ]);
    assert!(r3.ok, "{}", r3.stderr);
    assert_eq!(ids(&json_lines(&r3.stdout)[0]), greedy_reference("llava_v1_greedy"));

    // From a cache file: the same answer, and no vision time.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("wide.voco");
    assert!(
        vocollama(&[
            "compress",
            "--model",
            &m,
            "--dtype",
            "f32",
            "--image",
            &img,
            "--out",
            file.to_str().unwrap(),
            "--cache-dtype",
            "f32"
        ])
        .ok
    );
    let r4 = vocollama(&[
        "ask",
        "--model",
        &m,
        "--dtype",
        "f32",
        "--cache",
        file.to_str().unwrap(),
        "--max-new-tokens",
        "8",
        "--json",
        QUESTION,
    ]);
    assert!(r4.ok, "{}", r4.stderr);
    assert_eq!(json_lines(&r4.stdout)[0], lines[0]);
    assert!(r4.stderr.contains("vision encode 0.0 ms"), "{}", r4.stderr);
}

#[test]
fn an_answer_that_reaches_the_context_is_kept_with_its_reason() {
    let m = model();
    let img = image("wide.png");
    let r = vocollama(&["ask", "--model", &m, "--image", &img, "--max-new-tokens", "100000", "--json", QUESTION]);
    assert!(r.ok, "{}", r.stderr);
    let line = &json_lines(&r.stdout)[0];
    assert_eq!(line["finish_reason"], "length", "{line}");
    // The fixture's context is 512 positions; the image and prompt take about 120 of them.
    let n = line["token_ids"].as_array().unwrap().len();
    assert!(n > 300 && n < 512, "{n} tokens");
    assert!(!line["answer"].as_str().unwrap().is_empty());
    // A short limit is `length` too; EOS would be `stop`.
    let r = vocollama(&["ask", "--model", &m, "--image", &img, "--max-new-tokens", "3", "--json", QUESTION]);
    assert_eq!(json_lines(&r.stdout)[0]["finish_reason"], "length");
}

#[test]
fn sampling_is_seeded() {
    let m = model();
    let img = image("wide.png");
    let run = |seed: &str| {
        let r = vocollama(&[
            "ask",
            "--model",
            &m,
            "--dtype",
            "f32",
            "--image",
            &img,
            "--max-new-tokens",
            "12",
            "--temperature",
            "1.5",
            "--top-k",
            "50",
            "--top-p",
            "0.95",
            "--repetition-penalty",
            "1.1",
            "--seed",
            seed,
            "--json",
            QUESTION,
        ]);
        assert!(r.ok, "{}", r.stderr);
        json_lines(&r.stdout)[0]["token_ids"].clone()
    };
    assert_eq!(run("7"), run("7"));
    assert_ne!(run("7"), run("8"));
}

#[test]
fn chat_keeps_the_conversation_across_turns() {
    let m = model();
    let img = image("wide.png");
    let r = vocollama_stdin(
        &["chat", "--model", &m, "--dtype", "f32", "--image", &img, "--max-new-tokens", "6"],
        &format!("{}\nAnd the square?\n/reset\n{}\n", "What colour is the circle?", "What colour is the circle?"),
    );
    assert!(r.ok, "{}", r.stderr);
    let answers: Vec<&str> = r.stdout.lines().collect();
    assert_eq!(answers.len(), 3, "{}", r.stdout);
    // After /reset the same first question gets the same answer.
    assert_eq!(answers[0], answers[2]);
    assert!(r.stderr.contains("timing:"), "{}", r.stderr);
}

#[test]
fn chat_reports_a_bad_line_and_answers_the_next() {
    let m = model();
    let img = image("wide.png");
    let q = "What colour is the circle?";
    let mut input = Vec::new();
    input.extend_from_slice(b"\xff\xfe not text\n");
    input.extend_from_slice(&vec![b'a'; 70 * 1024]);
    input.extend_from_slice(b"\n");
    input.extend_from_slice(format!("{}\n", "word ".repeat(600)).as_bytes());
    input.extend_from_slice(format!("{q}\n").as_bytes());
    let args = ["chat", "--model", &m, "--dtype", "f32", "--image", &img, "--max-new-tokens", "6"];
    let r = vocollama_bytes(&args, &input);
    assert!(r.ok, "{}", r.stderr);
    for want in ["line 1: not UTF-8; skipped", "line 2: longer than 65536 bytes; skipped", "line 3: ", "context"] {
        assert!(r.stderr.contains(want), "missing {want:?} in {}", r.stderr);
    }
    // The question after them is answered as on its own.
    let alone = vocollama_stdin(&args, &format!("{q}\n"));
    assert_eq!(r.stdout, alone.stdout);
    assert_eq!(r.stdout.lines().count(), 1, "{}", r.stdout);
}

#[test]
fn bad_inputs_are_one_clear_error_each() {
    let dir = tempfile::tempdir().unwrap();
    let m = model();
    let img = image("wide.png");
    let q = "What?";

    assert_fails(
        &vocollama(&["ask", "--model", &m, "--dtype", "f32", "--image", "/nonexistent/cat.png", q]),
        "/nonexistent/cat.png",
    );
    let corrupt = dir.path().join("corrupt.png");
    std::fs::write(&corrupt, b"\x89PNG\r\n\x1a\nnot really").unwrap();
    assert_fails(
        &vocollama(&["ask", "--model", &m, "--dtype", "f32", "--image", corrupt.to_str().unwrap(), q]),
        "corrupt.png",
    );

    assert_fails(
        &vocollama(&["ask", "--model", &m, "--dtype", "f32", "--image", &img, "--voco-tokens", "0", q]),
        "at least 1",
    );
    // More VoCo tokens than the context holds: refused before any prompt is built.
    assert_fails(
        &vocollama(&["ask", "--model", &m, "--dtype", "f32", "--image", &img, "--voco-tokens", "3000000000", q]),
        "--voco-tokens 3000000000: at most",
    );
    // Sampling settings that would sample nonsense, named by their flags.
    for (flag, value, want) in [
        ("--temperature", "NaN", "--temperature: expected a finite number"),
        ("--temperature", "-1", "--temperature: expected a finite number"),
        ("--top-p", "0", "--top-p: expected a number in (0, 1]"),
        ("--top-p", "1.5", "--top-p: expected a number in (0, 1]"),
        ("--repetition-penalty", "0", "--repetition-penalty: expected a finite number > 0"),
    ] {
        let arg = format!("{flag}={value}");
        assert_fails(&vocollama(&["ask", "--model", &m, "--image", &img, &arg, q]), want);
    }
    let long = "word ".repeat(600);
    assert_fails(
        &vocollama(&["ask", "--model", &m, "--dtype", "f32", "--image", &img, &long]),
        "context is 512 tokens",
    );
    assert_fails(
        &vocollama(&["ask", "--model", &m, "--dtype", "f32", "--image", &img, "--backend", "tpu", q]),
        "backend `tpu`",
    );

    // Caches: truncated, from another model (same files, other config), or used without VoCo.
    let file = dir.path().join("wide.voco");
    assert!(
        vocollama(&["compress", "--model", &m, "--dtype", "f32", "--image", &img, "--out", file.to_str().unwrap()]).ok
    );
    let bytes = std::fs::read(&file).unwrap();
    let truncated = dir.path().join("truncated.voco");
    std::fs::write(&truncated, &bytes[..bytes.len() - 100]).unwrap();
    assert_fails(
        &vocollama(&["ask", "--model", &m, "--dtype", "f32", "--cache", truncated.to_str().unwrap(), q]),
        "truncated.voco",
    );

    let other = dir.path().join("other-model");
    std::fs::create_dir(&other).unwrap();
    for entry in std::fs::read_dir(fixture("llava-gqa-bf16")).unwrap() {
        let p = entry.unwrap().path();
        std::fs::copy(&p, other.join(p.file_name().unwrap())).unwrap();
    }
    let cfg = std::fs::read_to_string(other.join("config.json"))
        .unwrap()
        .replace("\"rms_norm_eps\": 1e-05", "\"rms_norm_eps\": 1e-06");
    std::fs::write(other.join("config.json"), cfg).unwrap();
    let r = vocollama(&[
        "ask",
        "--model",
        other.to_str().unwrap(),
        "--vision-tower",
        fixture("clip-full").to_str().unwrap(),
        "--cache",
        file.to_str().unwrap(),
        q,
    ]);
    assert_fails(&r, "made by a different model");

    assert_fails(
        &vocollama(&[
            "ask",
            "--model",
            &m,
            "--dtype",
            "f32",
            "--cache",
            file.to_str().unwrap(),
            "--compression",
            "none",
            q,
        ]),
        "needs --image",
    );
    assert_fails(
        &vocollama(&[
            "ask",
            "--model",
            &m,
            "--dtype",
            "f32",
            "--cache",
            file.to_str().unwrap(),
            "--voco-tokens",
            "3",
            q,
        ]),
        "holds 2 VoCo tokens",
    );

    // A failed compress leaves no file behind.
    let out = dir.path().join("never.voco");
    let r = vocollama(&[
        "compress",
        "--model",
        &m,
        "--dtype",
        "f32",
        "--image",
        corrupt.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_fails(&r, "corrupt.png");
    assert_eq!(
        std::fs::read_dir(dir.path())
            .unwrap()
            .filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().contains("never"))
            .count(),
        0
    );

    // A plain LLaVA tokenizer has no <voco>: VoCo mode says so.
    let hf = fixture("llava-hf");
    assert_fails(&vocollama(&["ask", "--model", hf.to_str().unwrap(), "--image", &img, q]), "no <voco> token");
}

/// `assets/images/clip64.gif`, written by `tools/make_fixtures.py gif`: 64 frames of a ball crossing the field.
fn clip64() -> String {
    image("clip64.gif")
}

#[test]
fn video_from_a_gif_and_a_frame_directory() {
    let dir = tempfile::tempdir().unwrap();
    let m = model();
    let gif_s = clip64();
    for policy in ["sequential", "shared"] {
        let r = vocollama(&[
            "video",
            "--model",
            &m,
            "--dtype",
            "f32",
            "--gif",
            &gif_s,
            "--num-frames",
            "64",
            "--frame-positions",
            policy,
            "--max-new-tokens",
            "4",
            "--json",
            "Where does the ball go?",
        ]);
        assert!(r.ok, "{}", r.stderr);
        assert_eq!(json_lines(&r.stdout).len(), 1);
        for want in [
            "frames: 64 of 64 (64 computed, 0 from the frame cache)",
            "per frame: vision encode",
            "128 VoCo tokens in context",
            "context: 512 positions; frames that fit:",
            "timing: vision encode",
            "peak memory",
        ] {
            assert!(r.stderr.contains(want), "missing {want:?} in {}", r.stderr);
        }
    }
    // A directory of frames, sampled uniformly.
    let frames = dir.path().join("frames");
    std::fs::create_dir(&frames).unwrap();
    for (i, f) in ["wide.png", "tall.png", "photo.png", "wide.png"].iter().enumerate() {
        std::fs::copy(image(f), frames.join(format!("frame{}.png", i + 1))).unwrap();
    }
    let r = vocollama(&[
        "video",
        "--model",
        &m,
        "--dtype",
        "f32",
        "--frames",
        frames.to_str().unwrap(),
        "--num-frames",
        "2",
        "--max-new-tokens",
        "4",
        "Which frame?",
    ]);
    assert!(r.ok, "{}", r.stderr);
    assert!(r.stderr.contains("frames: 2 of 4"), "{}", r.stderr);
}

#[test]
fn bad_video_inputs_are_one_clear_error_each() {
    let dir = tempfile::tempdir().unwrap();
    let m = model();
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    assert_fails(
        &vocollama(&["video", "--model", &m, "--dtype", "f32", "--frames", empty.to_str().unwrap(), "q"]),
        "holds no files",
    );
    let mixed = dir.path().join("mixed");
    std::fs::create_dir(&mixed).unwrap();
    std::fs::copy(image("wide.png"), mixed.join("a.png")).unwrap();
    std::fs::write(mixed.join("b.txt"), "not a frame").unwrap();
    assert_fails(
        &vocollama(&["video", "--model", &m, "--dtype", "f32", "--frames", mixed.to_str().unwrap(), "q"]),
        "b.txt",
    );
    assert_fails(
        &vocollama(&["video", "--model", &m, "--dtype", "f32", "--gif", &clip64(), "--num-frames", "0", "q"]),
        "at least 1",
    );
    assert_fails(
        &vocollama(&["video", "--model", &m, "--dtype", "f32", "--gif", &clip64(), "--frame-batch", "0", "q"]),
        "at least 1",
    );
    // 64 frames of 8 VoCo tokens need more positions than the fixture's 512.
    assert_fails(
        &vocollama(&[
            "video",
            "--model",
            &m,
            "--dtype",
            "f32",
            "--gif",
            &clip64(),
            "--num-frames",
            "64",
            "--voco-tokens",
            "8",
            "q",
        ]),
        "frames fit",
    );
    let frameless = dir.path().join("frameless.gif");
    std::fs::write(&frameless, b"GIF89a\x01\x00\x01\x00\x00\x00\x00;").unwrap();
    assert_fails(
        &vocollama(&["video", "--model", &m, "--dtype", "f32", "--gif", frameless.to_str().unwrap(), "q"]),
        "frameless.gif",
    );
    // Without ffmpeg the error names it; with ffmpeg, its refusal of a text file.
    let fake = dir.path().join("clip.mp4");
    std::fs::write(&fake, "not a video").unwrap();
    assert_fails(
        &vocollama(&["video", "--model", &m, "--dtype", "f32", "--video", fake.to_str().unwrap(), "q"]),
        "ffmpeg",
    );
}

/// The peak memory the timing line reports, MiB.
fn peak_mib(stderr: &str) -> f64 {
    let tail = stderr.split("peak memory ").nth(1).unwrap_or_else(|| panic!("no peak memory in {stderr}"));
    tail.split_whitespace().next().unwrap().parse().unwrap()
}

#[test]
fn video_memory_stays_flat_in_the_number_of_frames() {
    // Only a batch of frames is decoded, preprocessed and run at a time: 64
    // frames peak where 4 do. Holding the clip's decoded frames alone would add
    // 64 x 256 x 192 x 4 bytes = 12 MiB.
    let m = model();
    let peak = |k: &str| {
        let r = vocollama(&[
            "video",
            "--model",
            &m,
            "--dtype",
            "f32",
            "--gif",
            &clip64(),
            "--num-frames",
            k,
            "--max-new-tokens",
            "1",
            "q",
        ]);
        assert!(r.ok, "{}", r.stderr);
        peak_mib(&r.stderr)
    };
    let (few, many) = (peak("4"), peak("64"));
    eprintln!("peak memory: 4 frames {few:.1} MiB, 64 frames {many:.1} MiB");
    // Allocator and thread-pool noise between runs reaches ~4 MiB under a loaded machine;
    // holding the frames would add 12.
    assert!(many - few < 6.0, "peak memory grows with the frames: 4 frames {few:.1} MiB, 64 frames {many:.1} MiB");
}

#[test]
fn video_cache_files_frame_store_and_batches() {
    let dir = tempfile::tempdir().unwrap();
    let m = model();
    let store = dir.path().join("frames");
    let q = "Where is the ball at the end?";
    let gif = clip64();
    let run = |extra: &[&str]| {
        let mut args =
            vec!["video", "--model", &m, "--dtype", "f32", "--gif", &gif, "--num-frames", "8", "--max-new-tokens", "6"];
        args.extend_from_slice(extra);
        args.extend(["--json", q]);
        let r = vocollama(&args);
        assert!(r.ok, "{}", r.stderr);
        r
    };
    for policy in ["sequential", "shared"] {
        let file = dir.path().join(format!("{policy}.voco"));
        let fresh = run(&[
            "--frame-positions",
            policy,
            "--frame-cache",
            store.to_str().unwrap(),
            "--out",
            file.to_str().unwrap(),
            "--cache-dtype",
            "f32",
        ]);
        let ids = &json_lines(&fresh.stdout)[0]["token_ids"];
        assert!(
            fresh.stderr.contains("wrote") && fresh.stderr.contains("8 frames x 2 VoCo tokens"),
            "{}",
            fresh.stderr
        );
        // The same frames again: read from the frame cache, not recomputed; the same answer.
        let again = run(&["--frame-positions", policy, "--frame-cache", store.to_str().unwrap()]);
        assert!(again.stderr.contains("(0 computed, 8 from the frame cache)"), "{}", again.stderr);
        assert_eq!(&json_lines(&again.stdout)[0]["token_ids"], ids);
        // Frames one at a time through the tower answer as four at a time.
        let single = run(&["--frame-positions", policy, "--frame-batch", "1"]);
        assert!(single.stderr.contains("(8 computed, 0 from the frame cache)"), "{}", single.stderr);
        assert_eq!(&json_lines(&single.stdout)[0]["token_ids"], ids);
        // The video file answers through `ask --cache` exactly as the run that wrote it.
        let r = vocollama(&[
            "ask",
            "--model",
            &m,
            "--dtype",
            "f32",
            "--cache",
            file.to_str().unwrap(),
            "--max-new-tokens",
            "6",
            "--json",
            q,
        ]);
        assert!(r.ok, "{}", r.stderr);
        assert_eq!(&json_lines(&r.stdout)[0]["token_ids"], ids);
        assert_fails(
            &vocollama(&[
                "ask",
                "--model",
                &m,
                "--dtype",
                "f32",
                "--cache",
                file.to_str().unwrap(),
                "--voco-tokens",
                "3",
                q,
            ]),
            "2 VoCo tokens per frame",
        );
    }
    let entries = std::fs::read_dir(&store)
        .unwrap()
        .filter(|e| e.as_ref().unwrap().path().extension().is_some_and(|x| x == "voco"))
        .count();
    assert_eq!(entries, 8, "one cache per distinct frame");
    // Entries are bound to their frames: two swapped are not taken, an entry that is a
    // directory is neither read nor replaced, and the clip answers the same all along.
    let mut names: Vec<_> = std::fs::read_dir(&store).unwrap().map(|e| e.unwrap().path()).collect();
    names.sort();
    let (a, b, c) = (&names[0], &names[1], &names[2]);
    let swap = dir.path().join("swap");
    std::fs::rename(a, &swap).unwrap();
    std::fs::rename(b, a).unwrap();
    std::fs::rename(&swap, b).unwrap();
    std::fs::remove_file(c).unwrap();
    std::fs::create_dir(c).unwrap();
    let r = run(&["--frame-positions", "shared", "--frame-cache", store.to_str().unwrap()]);
    assert!(r.stderr.contains("(3 computed, 5 from the frame cache)"), "{}", r.stderr);
    assert!(r.stderr.contains("warning: the frame cache kept no new frames"), "{}", r.stderr);
    assert!(c.is_dir(), "the directory in the store is left as it was");
    let shared = vocollama(&[
        "ask",
        "--model",
        &m,
        "--dtype",
        "f32",
        "--cache",
        dir.path().join("shared.voco").to_str().unwrap(),
        "--max-new-tokens",
        "6",
        "--json",
        q,
    ]);
    assert_eq!(json_lines(&r.stdout)[0]["token_ids"], json_lines(&shared.stdout)[0]["token_ids"]);
    // `info` counts the frames that fit.
    let r = vocollama(&["info", "--model", &m]);
    assert!(r.ok, "{}", r.stderr);
    assert!(r.stdout.contains("video       frames that fit in 512 positions"), "{}", r.stdout);
}

#[test]
fn training_commands_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let p = |name: &str| dir.path().join(name).to_str().unwrap().to_string();
    let ok = |args: &[&str]| {
        let r = vocollama(args);
        assert!(r.ok, "{args:?}: {}", r.stderr);
        r
    };
    ok(&[
        "data",
        "shapes",
        "--out",
        &p("data"),
        "--train",
        "48",
        "--test",
        "10",
        "--size",
        "48",
        "--kinds",
        "colour,size",
    ]);
    let tokenizer = fixture("tokenizer");
    ok(&["init", "--preset", "tiny", "--tokenizer", tokenizer.to_str().unwrap(), "--out", &p("new"), "--seed", "3"]);
    let t = tokenizer.to_str().unwrap();
    let shape = ["--layers", "6", "--heads", "8", "--kv-heads", "8"];
    ok(&[&["init", "--preset", "tiny", "--tokenizer", t, "--out", &p("deeper"), "--seed", "3"][..], &shape].concat());
    let deeper: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(p("deeper/config.json")).unwrap()).unwrap();
    assert_eq!(deeper["num_hidden_layers"], 6);
    assert_eq!(deeper["num_attention_heads"], 8);
    assert_eq!(deeper["num_key_value_heads"], 8);
    for (flags, error) in [
        (&["--heads", "5"][..], "--heads: expected a divisor of the width 128 that leaves an even head size, got 5"),
        (&["--heads", "0"][..], "--heads: expected a divisor of the width 128"),
        (&["--heads", "8", "--kv-heads", "3"][..], "--kv-heads: expected a divisor of the 8 attention heads, got 3"),
        (&["--kv-heads", "0"][..], "--kv-heads: expected a divisor of the 4 attention heads, got 0"),
        (&["--layers", "0"][..], "--layers: expected 1 to 64 language-model layers"),
        (&["--layers", "65"][..], "--layers: expected 1 to 64 language-model layers"),
    ] {
        let r = vocollama(&[&["init", "--tokenizer", t, "--out", &p("none")][..], flags].concat());
        assert_fails(&r, error);
        assert!(!dir.path().join("none").exists());
    }
    let train = p("data/train.json");
    let args = |out: &str| {
        vec!["train", "--lr", "2e-3", "--batch-size", "8", "--epochs", "1", "--data", &train[..], "--out", out]
            .into_iter()
            .map(String::from)
            .collect::<Vec<_>>()
    };
    let mut first = args(&p("trained"));
    first.extend(["--model", &p("new"), "--save-every", "3"].map(String::from));
    let r = ok(&first.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(r.stderr.contains("trained 6 steps"), "{}", r.stderr);
    assert!(dir.path().join("trained/checkpoint-3/optimizer.bpk").is_file());
    // Resuming runs the remaining steps of the same schedule.
    let mut resumed = args(&p("resumed"));
    resumed.extend(["--model", &p("new"), "--resume", &p("trained/checkpoint-3")].map(String::from));
    let r = ok(&resumed.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(r.stderr.contains("step 6/6"), "{}", r.stderr);
    // An error keeps its cause after its context, on one line.
    let mut bad = args(&p("resumed-bad"));
    bad.extend(["--model", &p("new"), "--resume", &p("new")].map(String::from));
    let r = vocollama(&bad.iter().map(String::as_str).collect::<Vec<_>>());
    assert_fails(&r, &format!("resuming from {}: ", p("new")));
    assert!(r.stderr.trim_end().len() > format!("error: resuming from {}: ", p("new")).len() + 5, "{}", r.stderr);
    let r = ok(&["eval", "--model", &p("trained"), "--data", &p("data/test.json"), "--out", &p("eval.json")]);
    assert!(
        r.stdout.contains("compression voco (N = 1)") && r.stdout.contains("colour") && r.stdout.contains("all"),
        "{}",
        r.stdout
    );
    let report: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(p("eval.json")).unwrap()).unwrap();
    assert_eq!(report["total"], 10);
    assert_eq!(report["predictions"].as_array().unwrap().len(), 10);
    for mode in ["none", "lower"] {
        ok(&["eval", "--model", &p("trained"), "--data", &p("data/test.json"), "--compression", mode, "--limit", "2"]);
    }
    // The trained model is an ordinary model for every other command.
    ok(&[
        "ask",
        "--model",
        &p("trained"),
        "--image",
        &p("data/images/test-000000.png"),
        "--max-new-tokens",
        "3",
        "What colour is the circle?",
    ]);
    // Bad input: one clear line each.
    assert_fails(&vocollama(&["eval", "--model", &p("trained"), "--data", &p("nope.json")]), "nope.json");
    let mut zero_eps = args(&p("zero-eps"));
    zero_eps.extend(["--model", &p("new"), "--adam-epsilon", "0"].map(String::from));
    let r = vocollama(&zero_eps.iter().map(String::as_str).collect::<Vec<_>>());
    assert_fails(&r, "--adam-epsilon must be a positive number");
    assert!(!dir.path().join("zero-eps").exists(), "nothing written");
    assert_fails(
        &vocollama(&["data", "shapes", "--out", &p("bad"), "--kinds", "weight"]),
        "unknown question type `weight`",
    );
    assert_fails(&vocollama(&["data", "shapes", "--out", &p("bad"), "--per-image", "0"]), "--per-image");
    // The tower trained on scenes first, then the LLaVA stage on its frozen features.
    let r = ok(&[
        "train",
        "tower",
        "--model",
        &p("new"),
        "--out",
        &p("seen"),
        "--scenes",
        "128",
        "--test-scenes",
        "16",
        "--epochs",
        "1",
        "--batch-size",
        "32",
    ]);
    assert!(r.stderr.contains("held out (16 scenes): colour"), "{}", r.stderr);
    assert!(dir.path().join("seen/vision_tower/pretraining.json").is_file());
    ok(&["data", "shapes", "--out", &p("per-image"), "--train", "8", "--test", "2", "--per-image", "4"]);
    assert_eq!(std::fs::read_dir(p("per-image/images")).unwrap().count(), 2 + 1);
    let mut staged = args(&p("staged"));
    staged.extend(["--model", &p("seen")].map(String::from));
    ok(&staged.iter().map(String::as_str).collect::<Vec<_>>());
    let tower = p("seen/vision_tower");
    ok(&[
        "init",
        "--preset",
        "tiny",
        "--tokenizer",
        tokenizer.to_str().unwrap(),
        "--image-pooling",
        "avg",
        "--vision-tower",
        &tower,
        "--out",
        &p("pooled"),
    ]);
    assert_eq!(
        std::fs::read(p("pooled/vision_tower/model.safetensors")).unwrap(),
        std::fs::read(p("seen/vision_tower/model.safetensors")).unwrap()
    );
    assert_fails(&vocollama(&["train", "tower", "--model", &p("new"), "--out", &p("t0"), "--scenes", "0"]), "--scenes");
    assert_fails(&vocollama(&["train", "tower", "--model", &p("nope"), "--out", &p("t1")]), "nope");
    let hf = fixture("llava-hf");
    let mut bad = args(&p("hf-out"));
    bad.extend(["--model", hf.to_str().unwrap()].map(String::from));
    assert_fails(&vocollama(&bad.iter().map(String::as_str).collect::<Vec<_>>()), "<voco>");
}

#[test]
fn init_and_train_refuse_an_out_that_is_not_theirs() {
    let dir = tempfile::tempdir().unwrap();
    let user = dir.path().join("mine");
    std::fs::create_dir(&user).unwrap();
    std::fs::write(user.join("thesis.tex"), "years of work").unwrap();
    let tokenizer = fixture("tokenizer");
    let out = user.to_str().unwrap();
    assert_fails(
        &vocollama(&["init", "--preset", "tiny", "--tokenizer", tokenizer.to_str().unwrap(), "--out", out]),
        "not a model directory written by vocollama",
    );
    let data = dir.path().join("data");
    assert!(vocollama(&["data", "shapes", "--out", data.to_str().unwrap(), "--train", "4", "--test", "0"]).ok);
    let train = data.join("train.json");
    let r = vocollama(&["train", "--model", &model(), "--data", train.to_str().unwrap(), "--out", out]);
    assert_fails(&r, "refusing to replace it");
    assert_eq!(std::fs::read_to_string(user.join("thesis.tex")).unwrap(), "years of work");
    assert_eq!(std::fs::read_dir(&user).unwrap().count(), 1, "nothing added");
    let names: Vec<String> =
        std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into()).collect();
    assert!(names.iter().all(|n| !n.starts_with('.')), "no temporary directory left: {names:?}");
}

#[test]
fn quantize_writes_a_model_that_answers_like_the_quantized_load() {
    let m = model();
    let img = image("wide.png");
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("q8");
    let out_s = out.to_str().unwrap();
    let r = vocollama(&["quantize", "--model", &m, "--quantize", "q8", "--out", out_s]);
    assert!(r.ok, "{}", r.stderr);
    assert!(r.stderr.contains("q8 linear weights") && r.stderr.contains("vision_tower/"), "{}", r.stderr);
    let ask = |args: &[&str]| {
        let all = [&["ask", "--image", &img, "--max-new-tokens", "8", "--json"][..], args, &[QUESTION]].concat();
        let r = vocollama(&all);
        assert!(r.ok, "{}", r.stderr);
        (json_lines(&r.stdout), r.stderr)
    };
    let (want, _) = ask(&["--model", &m, "--quantize", "q8"]);
    let (got, stderr) = ask(&["--model", out_s]);
    assert_eq!(got, want, "the saved model answers as the model it was saved from");
    assert!(stderr.contains("q8 linear weights") && stderr.contains("saved as q8"), "{stderr}");

    // What it cannot do: one line each, nothing written.
    assert_fails(
        &vocollama(&["quantize", "--model", &m, "--out", tmp.path().join("x").to_str().unwrap()]),
        "--quantize: expected q8 or q4",
    );
    assert_fails(&vocollama(&["quantize", "--model", &m, "--quantize", "q4", "--out", out_s]), "already exists");
    assert_fails(
        &vocollama(&["ask", "--model", out_s, "--quantize", "q4", "--image", &img, "q"]),
        "saved quantized as q8",
    );
    let left: Vec<_> = std::fs::read_dir(tmp.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(left, ["q8"]);
}
