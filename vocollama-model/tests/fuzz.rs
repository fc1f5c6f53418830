//! A mutation fuzzer over every reader of untrusted files: `.voco` caches,
//! config.json (model, tower, preprocessor), safetensors headers and shard
//! indexes, PNG / JPEG / GIF images, and tokenizer files. Valid seeds from the
//! fixtures are mutated (bit flips, interesting integers over length fields,
//! cuts, repeats, inserted bytes, numbers in JSON swapped for extreme ones)
//! with a fixed seed; every case must return (`Ok` or an error), never panic,
//! abort or hang, and the process's peak memory must stay bounded.
//!
//! `VOCOLLAMA_FUZZ_CASES` (default 2,000 per reader, 12,000 in all) and
//! `VOCOLLAMA_FUZZ_SEED` set the budget and the seed; `VOCOLLAMA_FUZZ_SECONDS`
//! runs for that long instead (the long run). A case that panics is written
//! to `$VOCOLLAMA_FUZZ_OUT` (default the temp dir) for replay.

mod common;

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use burn::tensor::{Device, FloatDType};
use common::*;
use vocollama_model::checkpoint::weights::Checkpoint;
use vocollama_model::media::decode::{gif_decoder, open_rgb};
use vocollama_model::media::preprocess::Preprocessor;
use vocollama_model::text::tokenizer::TokenizerSource;
use vocollama_model::{CacheDType, LlavaModel, LoadOptions, ModelConfig, Tokenizer, VocoCache, memory};

/// xorshift64*: a fixed, dependency-free stream of numbers from a seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

const INTERESTING: [u32; 10] = [0, 1, 2, 0x7F, 0xFF, 0xFFFF, 0x7FFF_FFFF, 0x8000_0000, 0xFFFF_FFFE, 0xFFFF_FFFF];

/// One mutation of `data`; `hot` bytes at the start (headers) are hit more often.
fn mutate(rng: &mut Rng, data: &[u8], hot: usize) -> Vec<u8> {
    let mut d = data.to_vec();
    let rounds = 1 + rng.below(4);
    for _ in 0..rounds {
        let span = if !d.is_empty() && hot > 0 && rng.below(4) != 0 { hot.min(d.len()) } else { d.len().max(1) };
        let at = rng.below(span);
        match rng.below(8) {
            0 if !d.is_empty() => {
                let i = at.min(d.len() - 1);
                d[i] ^= 1 << rng.below(8);
            }
            1 if !d.is_empty() => {
                let i = at.min(d.len() - 1);
                d[i] = [0, 0xFF, 0x7F, 0x80][rng.below(4)];
            }
            2 if d.len() >= 4 => {
                let at = at.min(d.len() - 4);
                d[at..at + 4].copy_from_slice(&INTERESTING[rng.below(INTERESTING.len())].to_le_bytes());
            }
            3 if d.len() >= 8 => {
                let at = at.min(d.len() - 8);
                let v = [0u64, u64::MAX, 1 << 40, 1 << 62][rng.below(4)];
                d[at..at + 8].copy_from_slice(&v.to_le_bytes());
            }
            4 => d.truncate(at),
            5 if !d.is_empty() => {
                let from = rng.below(d.len());
                let len = rng.below(64).min(d.len() - from);
                let chunk = d[from..from + len].to_vec();
                let at = at.min(d.len());
                d.splice(at..at, chunk);
            }
            6 => {
                let at = at.min(d.len());
                let bytes: Vec<u8> = (0..1 + rng.below(8)).map(|_| rng.next() as u8).collect();
                d.splice(at..at, bytes);
            }
            _ => {
                // JSON-aware: a number somewhere becomes an extreme one.
                let text = String::from_utf8_lossy(&d).into_owned();
                let digits: Vec<usize> =
                    text.char_indices().filter(|(_, c)| c.is_ascii_digit()).map(|(i, _)| i).collect();
                if let Some(&i) = digits.get(rng.below(digits.len())) {
                    let extreme = ["0", "-1", "1e308", "4294967296", "18446744073709551615", "0.0", "NaN", "1e-320"];
                    let mut t = text.clone();
                    t.replace_range(i..i + 1, extreme[rng.below(extreme.len())]);
                    d = t.into_bytes();
                }
            }
        }
    }
    d
}

/// One case: the mutated bytes, and a scratch file path the reader may write them to.
type Reader = Box<dyn Fn(&[u8], &Path)>;

/// A reader under test: its seeds, how many header bytes to favour, and the call.
struct Target {
    name: &'static str,
    seeds: Vec<Vec<u8>>,
    hot: usize,
    run: Reader,
}

fn bytes(p: PathBuf) -> Vec<u8> {
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// A directory holding a copy of the fixture `name`'s files, with `file` to be replaced per case.
fn scratch_copy(name: &str, into: &Path) -> PathBuf {
    let dir = into.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    for e in std::fs::read_dir(fixture(name)).unwrap() {
        let p = e.unwrap().path();
        if p.is_file() {
            std::fs::copy(&p, dir.join(p.file_name().unwrap())).unwrap();
        }
    }
    dir
}

fn targets(scratch: &Path) -> Vec<Target> {
    let device = Device::flex();
    let model = LlavaModel::load(&fixture("llava-gqa-bf16"), &LoadOptions::f32(), &device).unwrap();
    let spec = model.cache_spec();
    let voco = 511;
    let r = read_tensors(fixture("llava-gqa-bf16/voco-reference.safetensors"));
    let ids = ids(&r["n2_ids"]);
    let end = ids.iter().rposition(|&t| t == voco).unwrap() + 1;
    let pixels = model.load_image(&assets().join("images/photo.png")).unwrap();
    let cache = compress_one(&model, &ids[..end], voco, &pixels);
    let voco_seeds =
        vec![cache.to_bytes(&spec.fingerprint, CacheDType::F16), cache.to_bytes(&spec.fingerprint, CacheDType::F32)];

    // Directories whose one file each case replaces.
    let model_dir = scratch_copy("llava-gqa-bf16", scratch);
    // Found by the model as its sibling `clip-full` (`mm_vision_tower: ../clip-full`).
    scratch_copy("clip-full", scratch);
    let tok_dir = scratch_copy("tokenizer", scratch);

    let mut jpeg = Vec::new();
    image::DynamicImage::ImageRgb8(image::open(assets().join("images/photo.png")).unwrap().to_rgb8())
        .write_to(&mut std::io::Cursor::new(&mut jpeg), image::ImageFormat::Jpeg)
        .unwrap();

    let md = model_dir.clone();
    let td = tok_dir.clone();
    vec![
        Target {
            name: ".voco",
            seeds: voco_seeds,
            hot: 72,
            run: Box::new(move |b, _| {
                let _ = VocoCache::from_bytes(b, &spec, &device, FloatDType::F32);
                // Again with the checksum made good, so the mutation reaches past it.
                if b.len() >= 32 {
                    use sha2::Digest;
                    let mut fixed = b[..b.len() - 32].to_vec();
                    let sum = sha2::Sha256::digest(&fixed);
                    fixed.extend_from_slice(&sum);
                    let _ = VocoCache::from_bytes(&fixed, &spec, &device, FloatDType::F32);
                }
            }),
        },
        Target {
            name: "config.json",
            seeds: ["llava-gqa-bf16", "llava-hf", "llava-mha-f16-bin", "llama-tied", "clip-full"]
                .iter()
                .map(|n| bytes(fixture(n).join("config.json")))
                .chain([bytes(fixture("clip-full/preprocessor_config.json"))])
                .collect(),
            hot: 0,
            run: Box::new(|b, file| {
                std::fs::write(file, b).unwrap();
                if let Ok(v) = serde_json::from_slice(b) {
                    let _ = ModelConfig::parse(file, &v);
                }
                let _ = Preprocessor::from_file(file, true);
            }),
        },
        Target {
            name: "safetensors",
            seeds: vec![bytes(fixture("llava-gqa-bf16/model-00002-of-00002.safetensors"))],
            hot: 4096,
            run: Box::new(move |b, _| {
                let shard = md.join("model-00002-of-00002.safetensors");
                std::fs::write(&shard, b).unwrap();
                read_checkpoint(&md);
                std::fs::copy(fixture("llava-gqa-bf16/model-00002-of-00002.safetensors"), &shard).unwrap();
            }),
        },
        Target {
            name: "index",
            seeds: vec![bytes(fixture("llava-gqa-bf16/model.safetensors.index.json"))],
            hot: 0,
            run: Box::new(move |b, _| {
                let index = model_dir.join("model.safetensors.index.json");
                std::fs::write(&index, b).unwrap();
                read_checkpoint(&model_dir);
                let _ = LlavaModel::plan(&model_dir, &LoadOptions::f32(), &Device::flex());
                std::fs::copy(fixture("llava-gqa-bf16/model.safetensors.index.json"), &index).unwrap();
            }),
        },
        Target {
            name: "images",
            seeds: vec![bytes(assets().join("images/photo.png")), bytes(assets().join("images/clip64.gif")), jpeg],
            hot: 256,
            run: Box::new(move |b, file| {
                std::fs::write(file, b).unwrap();
                if let Ok(img) = open_rgb(file) {
                    let p = Preprocessor::clip_default(56, true);
                    let _ = p.apply(&img);
                }
                if let Ok(d) = gif_decoder(file) {
                    use image::AnimationDecoder;
                    for f in d.into_frames().take(8) {
                        if f.is_err() {
                            break;
                        }
                    }
                }
            }),
        },
        Target {
            name: "tokenizer",
            seeds: [
                "tokenizer_config.json",
                "added_tokens.json",
                "special_tokens_map.json",
                "tokenizer.model",
                "tokenizer.json",
            ]
            .iter()
            .map(|f| {
                let mut seed = f.as_bytes().to_vec();
                seed.push(0);
                seed.extend(bytes(fixture("tokenizer").join(f)));
                seed
            })
            .collect(),
            hot: 64,
            run: Box::new(move |b, _| {
                // The seed names the file it replaces (before its first zero byte).
                let Some(cut) = b.iter().position(|&x| x == 0) else { return };
                let name = String::from_utf8_lossy(&b[..cut]).into_owned();
                let known = [
                    "tokenizer_config.json",
                    "added_tokens.json",
                    "special_tokens_map.json",
                    "tokenizer.model",
                    "tokenizer.json",
                ];
                let Some(name) = known.iter().find(|k| **k == name) else { return };
                std::fs::write(td.join(name), &b[cut + 1..]).unwrap();
                for source in [TokenizerSource::SentencePiece, TokenizerSource::Json] {
                    if let Ok(t) = Tokenizer::from_dir(&td, source) {
                        let ids = t.encode("USER: <voco> what is </s> in the <image>? ASSISTANT:").unwrap_or_default();
                        let _ = t.decode(&ids);
                    }
                }
                std::fs::copy(fixture("tokenizer").join(name), td.join(name)).unwrap();
            }),
        },
    ]
}

/// Open a checkpoint directory and read every tensor it lists.
fn read_checkpoint(dir: &Path) {
    if let Ok(c) = Checkpoint::discover(dir)
        && let Ok(t) = c.tensors()
    {
        for e in t.entries.values() {
            let _ = e.read();
        }
    }
}

#[test]
fn every_reader_survives_mutated_inputs() {
    let env = |k: &str| std::env::var(k).ok();
    let cases: usize = env("VOCOLLAMA_FUZZ_CASES").map_or(2000, |v| v.parse().expect("VOCOLLAMA_FUZZ_CASES"));
    let seed: u64 = env("VOCOLLAMA_FUZZ_SEED").map_or(0x5EED_1234, |v| v.parse().expect("VOCOLLAMA_FUZZ_SEED"));
    let seconds =
        env("VOCOLLAMA_FUZZ_SECONDS").map(|v| Duration::from_secs(v.parse().expect("VOCOLLAMA_FUZZ_SECONDS")));
    let out = env("VOCOLLAMA_FUZZ_OUT").map_or(std::env::temp_dir(), PathBuf::from);
    let scratch = tempfile::tempdir().unwrap();
    let targets = targets(scratch.path());
    let case_file = scratch.path().join("case");
    // Panics are caught per case and counted; their messages would flood the log.
    std::panic::set_hook(Box::new(|_| {}));
    let start = Instant::now();
    let mut rng = Rng(seed);
    let (mut total, mut failures) = (0usize, Vec::new());
    'run: for round in 0.. {
        for t in &targets {
            let s = &t.seeds[rng.below(t.seeds.len())];
            let input = mutate(&mut rng, s, t.hot);
            let outcome = catch_unwind(AssertUnwindSafe(|| (t.run)(&input, &case_file)));
            total += 1;
            if outcome.is_err() {
                let saved = out.join(format!("vocollama-fuzz-{}-{total}.bin", t.name.trim_start_matches('.')));
                std::fs::write(&saved, &input).unwrap();
                failures.push(format!("{}: case {total} panicked (input saved to {})", t.name, saved.display()));
            }
        }
        let done = match seconds {
            Some(limit) => start.elapsed() >= limit,
            None => round + 1 >= cases,
        };
        if done {
            break 'run;
        }
    }
    let _ = std::panic::take_hook();
    let peak = memory::peak_resident().unwrap_or(0) >> 20;
    eprintln!(
        "fuzz: {total} cases over {} readers in {:.1} s (seed {seed:#x}), {} panics, peak memory {peak} MiB",
        targets.len(),
        start.elapsed().as_secs_f64(),
        failures.len()
    );
    assert!(total >= 10_000 || seconds.is_some() || cases < 2000, "the budget must cover at least 10,000 cases");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(peak < 1024, "peak memory {peak} MiB: some input was allowed to allocate far beyond its size");
}

/// Every input a fuzz run once found panicking (`assets/hostile/fuzz/`, named
/// `vocollama-fuzz-<reader>-<case>.bin` as the fuzzer saves them) is replayed
/// through its reader and must now return. `VOCOLLAMA_FUZZ_REPLAY=DIR` replays
/// another directory of saved cases instead and prints where each one panics.
#[test]
fn saved_fuzz_cases_no_longer_panic() {
    let dir = std::env::var("VOCOLLAMA_FUZZ_REPLAY").map_or_else(|_| assets().join("hostile/fuzz"), PathBuf::from);
    let scratch = tempfile::tempdir().unwrap();
    let targets = targets(scratch.path());
    let case_file = scratch.path().join("case");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
    files.retain(|p| p.extension().is_some_and(|e| e == "bin"));
    files.sort();
    assert!(!files.is_empty(), "no saved cases in {}", dir.display());
    let at = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let hook_at = at.clone();
    std::panic::set_hook(Box::new(move |info| {
        *hook_at.lock().unwrap() =
            info.location().map_or_else(|| "?".to_string(), |l| format!("{}:{}", l.file(), l.line()));
    }));
    let mut failures = Vec::new();
    for f in &files {
        let name = f.file_name().unwrap().to_string_lossy().into_owned();
        let reader = name.trim_start_matches("vocollama-fuzz-").split('-').next().unwrap().to_string();
        let t = targets.iter().find(|t| t.name == reader).unwrap_or_else(|| panic!("{name}: no reader {reader}"));
        let input = bytes(f.clone());
        if catch_unwind(AssertUnwindSafe(|| (t.run)(&input, &case_file))).is_err() {
            failures.push(format!("{name}: panicked at {}", at.lock().unwrap()));
        }
    }
    let _ = std::panic::take_hook();
    eprintln!("replayed {} saved cases from {}: {} panic", files.len(), dir.display(), failures.len());
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
