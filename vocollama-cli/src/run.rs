//! The commands that load a model: compress, ask, chat, logits, video.

use std::io::{BufRead, Write};
use std::path::Path;

use anyhow::{Context, bail};
use vocollama_model::checkpoint::info::Info;
use vocollama_model::media::frames::{self, Clip, FrameSampling};
use vocollama_model::model::llava::LoadPlan;
use vocollama_model::voco::file::Header;
use vocollama_model::voco::{FrameBudget, FrameStore, VideoOptions, compress_video};
use vocollama_model::{
    CacheDType, Chat, Compression, GenerateOptions, Generation, LlavaModel, Sampler, Tokenizer, VocoCache, backend,
};

use crate::progress::{Timing, spinner, steps};
use crate::{DEFAULT_MAX_NEW_TOKENS, ImageArgs, ModelArgs, SamplingArgs, VideoArgs, npy};

pub(crate) struct Loaded {
    pub model: LlavaModel,
    pub tokenizer: Tokenizer,
    /// How long loading took.
    load: std::time::Duration,
}

pub(crate) fn load(args: &ModelArgs) -> anyhow::Result<Loaded> {
    let device = backend::device(&args.backend)?;
    let pb = spinner(format!("loading {} on {}", args.model.display(), args.backend));
    let start = std::time::Instant::now();
    let model = LlavaModel::load(&args.model, &args.options(), &device);
    pb.finish_and_clear();
    let model = model?;
    let tokenizer = Tokenizer::for_model(&args.model, model.config.layout)?;
    Ok(Loaded { model, tokenizer, load: start.elapsed() })
}

impl Loaded {
    /// `--voco-tokens`, else `voco_num` of config.json, else 2; no more than
    /// fit in the context beside the image (checked before any prompt is built).
    pub(crate) fn voco_tokens(&self, arg: Option<usize>) -> anyhow::Result<usize> {
        let n = arg.or(self.model.config.voco_num).unwrap_or(2);
        let context = self.model.config.llm.max_position_embeddings;
        let image = self.model.image_tokens();
        let room = context.saturating_sub(image + 2);
        if n > room {
            anyhow::bail!(
                "--voco-tokens {n}: at most {room} fit in the model's context of {context} positions beside the image's {image} tokens"
            );
        }
        Ok(n)
    }

    /// Compress `image` (stage 1); the chat over it and the cache.
    fn compress(&self, image: &Path, n: usize) -> anyhow::Result<(Chat<'_>, VocoCache)> {
        let pixels = self.model.load_image(image)?;
        let pb = spinner(format!("compressing the image into {n} VoCo tokens"));
        let compressed = Chat::compress(&self.model, &self.tokenizer, &pixels, n);
        pb.finish_and_clear();
        Ok(compressed?)
    }

    /// The conversation `args` ask for: from an image (compressed or not) or from a `.voco` file.
    fn open(&self, args: &ImageArgs) -> anyhow::Result<Chat<'_>> {
        match (&args.image, &args.cache, args.compression) {
            (Some(image), _, Compression::Voco) => Ok(self.compress(image, self.voco_tokens(args.voco_tokens)?)?.0),
            (Some(image), _, Compression::None) => {
                let pixels = self.model.load_image(image)?;
                let pb = spinner("running the image tokens".into());
                let chat = Chat::uncompressed(&self.model, &self.tokenizer, &pixels);
                pb.finish_and_clear();
                Ok(chat?)
            }
            (None, Some(_), Compression::None) => {
                bail!("--compression none needs --image: a VoCo cache holds no image tokens")
            }
            (None, Some(path), Compression::Voco) => {
                let m = &self.model;
                let cache = VocoCache::load(path, &m.cache_spec(), &m.device, m.precision.dtype)?;
                if let Some(n) = args.voco_tokens.filter(|&n| n != cache.tokens_per_frame()) {
                    bail!(
                        "{}: the cache holds {} VoCo tokens per frame, --voco-tokens asks for {n}",
                        path.display(),
                        cache.tokens_per_frame()
                    );
                }
                Chat::from_cache(&self.model, &self.tokenizer, &cache).with_context(|| path.display().to_string())
            }
            (None, None, _) => unreachable!("clap requires --image or --cache"),
        }
    }

    /// The timing line's start: the image's cost, the weights and the load.
    fn timing(&self, image: vocollama_model::voco::ImageStats) -> Timing {
        let weights = format!("{} ({})", self.model.precision, self.model.precision_why);
        Timing { weights, load: self.load, image, ..Default::default() }
    }

    fn options(&self, sampling: &SamplingArgs) -> GenerateOptions {
        GenerateOptions::new(&self.tokenizer, &self.model, sampling.config(), sampling.max_new_tokens)
    }
}

pub fn compress(
    args: &ModelArgs,
    image: &Path,
    voco_tokens: Option<usize>,
    out: &Path,
    dtype: CacheDType,
) -> anyhow::Result<()> {
    let loaded = load(args)?;
    let (chat, cache) = loaded.compress(image, loaded.voco_tokens(voco_tokens)?)?;
    cache.save(out, &loaded.model.fingerprint, dtype)?;
    let bytes = std::fs::metadata(out).map(|m| m.len()).unwrap_or(0);
    eprintln!("wrote {}: {} VoCo tokens, {bytes} bytes", out.display(), cache.len());
    eprintln!("{}", loaded.timing(chat.stats).line());
    Ok(())
}

/// Load with `--quantize` and save the model with its linear weights quantized.
pub fn quantize(args: &ModelArgs, out: &Path) -> anyhow::Result<()> {
    if args.quantize == vocollama_model::model::precision::Quantize::None {
        anyhow::bail!("--quantize: expected q8 or q4 (the quantization to save the model with)");
    }
    vocollama_model::checkpoint::quantized::check_out(out)?;
    let loaded = load(args)?;
    let pb = spinner(format!("writing {}", out.display()));
    let start = std::time::Instant::now();
    let saved = vocollama_model::checkpoint::quantized::save(&loaded.model, out);
    pb.finish_and_clear();
    let saved = saved?;
    eprintln!(
        "wrote {}: {:.2} GiB of weights ({}; {} linear weights quantized){} in {:.1} s (load {:.1} s)",
        out.display(),
        saved.weights_bytes as f64 / (1u64 << 30) as f64,
        loaded.model.precision,
        saved.quantized_tensors,
        if saved.tower.is_some() { ", the CLIP tower copied into vision_tower/" } else { "" },
        start.elapsed().as_secs_f64(),
        loaded.load.as_secs_f64()
    );
    Ok(())
}

/// A conversation being run from the command line: answers stream to stdout.
struct Conversation<'a> {
    chat: Chat<'a>,
    options: GenerateOptions,
    sampler: Sampler,
    timing: Timing,
}

impl<'a> Conversation<'a> {
    fn open(loaded: &'a Loaded, image: &ImageArgs, sampling: &SamplingArgs) -> anyhow::Result<Self> {
        Ok(Self::new(loaded, loaded.open(image)?, sampling))
    }

    fn new(loaded: &'a Loaded, chat: Chat<'a>, sampling: &SamplingArgs) -> Self {
        let timing = loaded.timing(chat.stats);
        Self { chat, options: loaded.options(sampling), sampler: Sampler::new(sampling.config()), timing }
    }

    /// Each question answered on its own; `--json` prints one object per question.
    fn answer_each(&mut self, questions: &[String], json: bool) -> anyhow::Result<()> {
        for question in questions {
            self.chat.reset();
            let g = self.turn(question, !json)?;
            if json {
                let line = serde_json::json!({"question": question, "answer": g.text, "token_ids": g.ids, "finish_reason": g.stop.finish_reason()});
                println!("{line}");
            }
        }
        Ok(())
    }

    /// Answer the next turn; with `stream`, its text goes to stdout as it is decoded.
    fn turn(&mut self, question: &str, stream: bool) -> anyhow::Result<Generation> {
        let mut stdout = std::io::stdout().lock();
        let g = self.chat.ask(question, &self.options, &mut self.sampler, &mut |s| {
            if stream {
                let _ = stdout.write_all(s.as_bytes());
                let _ = stdout.flush();
            }
        })?;
        if stream {
            writeln!(stdout)?;
        }
        self.timing.add(&g);
        Ok(g)
    }
}

pub fn ask(
    args: &ModelArgs,
    image: &ImageArgs,
    sampling: &SamplingArgs,
    json: bool,
    questions: &[String],
) -> anyhow::Result<()> {
    let loaded = load(args)?;
    let mut c = Conversation::open(&loaded, image, sampling)?;
    c.answer_each(questions, json)?;
    eprintln!("{}", c.timing.line());
    Ok(())
}

/// The longest line `chat` reads as one question.
const MAX_LINE: usize = 64 * 1024;

pub fn chat(args: &ModelArgs, image: &ImageArgs, sampling: &SamplingArgs) -> anyhow::Result<()> {
    let loaded = load(args)?;
    let mut c = Conversation::open(&loaded, image, sampling)?;
    eprintln!("ask about the image; /reset starts over, /exit or end of input quits");
    let mut input = std::io::stdin().lock();
    let mut number = 0;
    // A bad line is reported and skipped; the conversation goes on.
    while let Some(line) = read_line(&mut input, MAX_LINE).context("reading the question from stdin")? {
        number += 1;
        let line = match line {
            Ok(line) => line,
            Err(why) => {
                eprintln!("error: line {number}: {why}; skipped");
                continue;
            }
        };
        match line.trim() {
            "" => continue,
            "/exit" => break,
            "/reset" => c.chat.reset(),
            question => match c.turn(question, true) {
                Ok(g) if g.stop == vocollama_model::StopReason::ContextFull => {
                    eprintln!("(the model's context is full: /reset to start over)")
                }
                Ok(_) => {}
                Err(e) => eprintln!("error: line {number}: {e}; /reset starts over"),
            },
        }
    }
    eprintln!("{}", c.timing.line());
    Ok(())
}

/// The next line of `input` (without its newline), at most `max` bytes: `None`
/// at the end, `Err(why)` for a line too long (the rest of it is read and
/// dropped) or not UTF-8.
fn read_line(input: &mut impl BufRead, max: usize) -> std::io::Result<Option<Result<String, String>>> {
    let mut buf = Vec::new();
    let n = <&mut _ as std::io::Read>::take(&mut *input, max as u64 + 1).read_until(b'\n', &mut buf)?;
    if n == 0 {
        return Ok(None);
    }
    if buf.last() == Some(&b'\n') {
        buf.pop();
    } else if buf.len() > max {
        // Drop the rest of the line, a bounded chunk at a time.
        loop {
            let chunk = input.fill_buf()?;
            if chunk.is_empty() {
                break;
            }
            match chunk.iter().position(|&b| b == b'\n') {
                Some(i) => {
                    input.consume(i + 1);
                    break;
                }
                None => {
                    let len = chunk.len();
                    input.consume(len);
                }
            }
        }
        return Ok(Some(Err(format!("longer than {max} bytes"))));
    }
    if buf.last() == Some(&b'\r') {
        buf.pop();
    }
    Ok(Some(String::from_utf8(buf).map_err(|_| "not UTF-8".to_string())))
}

pub fn logits(args: &ModelArgs, image: &ImageArgs, prompt: &str, out: &Path) -> anyhow::Result<()> {
    let loaded = load(args)?;
    let mut chat = loaded.open(image)?;
    let logits = chat.next_logits(prompt)?;
    npy::write_f32(out, &logits)?;
    eprintln!("wrote {}: {} logits", out.display(), logits.len());
    Ok(())
}

/// Frames from the chosen source, sampled, compressed into one video cache
/// (see `compress_video`), then the questions — or the cache written to `--out`.
pub fn video(
    args: &ModelArgs,
    source: &VideoArgs,
    sampling: &SamplingArgs,
    json: bool,
    questions: &[String],
) -> anyhow::Result<()> {
    let loaded = load(args)?;
    let model = &loaded.model;
    let frame_sampling = match source.fps {
        Some(f) => FrameSampling::Fps(f),
        None => FrameSampling::Count(source.num_frames),
    };
    let clip = match (&source.frames, &source.gif, &source.video) {
        (Some(dir), _, _) => Clip::from_dir(dir)?,
        (_, Some(gif), _) => Clip::from_gif(gif)?,
        // ffmpeg decodes at the asked rate, or at 2 frames a second to sample K from.
        (_, _, Some(video)) => Clip::from_video(video, source.fps.unwrap_or(2.0))?,
        _ => unreachable!("clap requires one frame source"),
    };
    let picked = frames::sample(&clip.times, frame_sampling)?;
    let n = loaded.voco_tokens(source.voco_tokens)?;
    let mut longest = 0;
    for q in questions {
        longest = longest.max(loaded.tokenizer.encode(q)?.len());
    }
    let store = source.frame_cache.as_deref().map(|d| FrameStore::open(d, model.cache_spec())).transpose()?;
    let options = VideoOptions {
        voco_tokens: n,
        positions: source.frame_positions,
        frame_batch: source.frame_batch,
        store: store.as_ref(),
        reserve: longest + sampling.max_new_tokens,
    };
    let pb = steps(picked.len() as u64, &format!("compressing {} frames into {n} VoCo tokens each", picked.len()));
    let video =
        compress_video(model, &loaded.tokenizer, clip.frames(&picked), picked.len(), &options, &mut || pb.inc(1));
    pb.finish_and_clear();
    let video = video?;
    if let Some(why) = &video.store_failed {
        eprintln!("warning: the frame cache kept no new frames ({why}); the clip was compressed without it");
    }
    let mut chat = Chat::from_cache(model, &loaded.tokenizer, &video.cache)?;
    chat.stats = video.stats;
    if let Some(out) = &source.out {
        video.cache.save(out, &model.fingerprint, source.cache_dtype)?;
        let bytes = std::fs::metadata(out).map(|m| m.len()).unwrap_or(0);
        eprintln!("wrote {}: {} frames x {n} VoCo tokens, {bytes} bytes", out.display(), video.cache.frames);
    }
    let mut c = Conversation::new(&loaded, chat, sampling);
    c.answer_each(questions, json)?;
    let computed = video.computed;
    let per = |d: std::time::Duration| if computed == 0 { 0.0 } else { d.as_secs_f64() * 1e3 / computed as f64 };
    eprintln!(
        "frames: {} of {} ({computed} computed, {} from the frame cache) | per frame: vision encode {:.1} ms, compress {:.1} ms | {} VoCo tokens in context",
        picked.len(),
        clip.len(),
        picked.len() - computed,
        per(video.stats.vision_encode),
        per(video.stats.compress),
        video.cache.len()
    );
    let b = &video.budget;
    eprintln!(
        "context: {} positions; frames that fit: {} at {n} VoCo tokens each, {} at {} image tokens each",
        b.context,
        b.voco_frames(options.reserve),
        b.image_frames(options.reserve),
        b.image_tokens
    );
    eprintln!("{}", c.timing.line());
    Ok(())
}

/// `info`'s video line: frames that fit in the context at the model's N VoCo
/// tokens per frame and uncompressed, with room for a default-length answer.
pub fn video_context(dir: &Path, info: &Info) -> anyhow::Result<Option<String>> {
    let Some(vision) = &info.vision else { return Ok(None) };
    let Ok(tokenizer) = Tokenizer::for_model(dir, info.config.layout) else {
        return Ok(Some("video       (no tokenizer: frames that fit in the context not counted)".into()));
    };
    let image_tokens = vision.image_tokens();
    let n = info.config.voco_num.unwrap_or(2);
    let budget = FrameBudget::new(&tokenizer, info.config.llm.max_position_embeddings, image_tokens, n)?;
    let reserve = DEFAULT_MAX_NEW_TOKENS;
    Ok(Some(format!(
        "video       frames that fit in {} positions (with a {DEFAULT_MAX_NEW_TOKENS}-token answer): {} at {n} VoCo tokens each, {} at {image_tokens} image tokens each",
        budget.context,
        budget.voco_frames(reserve),
        budget.image_frames(reserve)
    )))
}

fn gib(bytes: u64) -> String {
    format!("{:.1} GiB", bytes as f64 / (1u64 << 30) as f64)
}

/// `info`'s compute line: what the weights would be held in and why, and the memory that takes.
pub fn compute_line(plan: &LoadPlan, backend: &str) -> String {
    let f = &plan.footprint;
    let mut line = format!(
        "compute     {} on {backend} ({}); needs {} ({} of weights)",
        plan.precision,
        plan.precision_why,
        gib(f.total()),
        gib(f.weights)
    );
    if let Some(d) = plan.device_memory {
        line.push_str(&format!(", the device holds {}", gib(d)));
    }
    if let Some(h) = plan.host_memory {
        line.push_str(&format!(", the host has {} available", gib(h)));
    }
    if plan.check().is_err() {
        line.push_str(": too large, loading it is refused (try --dtype f16 or --quantize)");
    }
    line
}

/// `info --cache`: what a `.voco` file holds, and whether the model made it.
pub fn cache_line(path: &Path, fingerprint: &[u8; 32]) -> anyhow::Result<String> {
    // The header alone is read: the file's length is checked against it, not loaded.
    let h = Header::read(path)?;
    let len = h.file_bytes().expect("checked against the file's length");
    let stored = match h.dtype {
        CacheDType::F32 => "f32",
        CacheDType::F16 => "f16",
        CacheDType::BF16 => "bf16",
    };
    let computed = h.computed_in.map_or("not recorded".to_string(), |p| p.to_string());
    Ok(format!(
        "cache       {}: format {}, {} VoCo token{} ({} frame{}), {} layers x {} heads x {}, stored {stored}, computed in {computed}, {} bytes; {}",
        path.display(),
        h.version,
        h.tokens,
        if h.tokens == 1 { "" } else { "s" },
        h.frames,
        if h.frames == 1 { "" } else { "s" },
        h.layers,
        h.kv_heads,
        h.head_dim,
        len,
        if h.fingerprint == *fingerprint { "made by this model" } else { "made by another model" }
    ))
}
