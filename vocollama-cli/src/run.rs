//! The commands that load a model: compress, ask, chat, logits.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use vocollama_model::chat::{Chat, ImageStats, compress_images, encode_image, encode_images};
use vocollama_model::frames::{self, Clip, FrameSampling};
use vocollama_model::generate::{GenerateOptions, Generation, stop_ids};
use vocollama_model::preprocess::Pixels;
use vocollama_model::sampling::Sampler;
use vocollama_model::text::Tokenizer;
use vocollama_model::voco::cache::CacheDType;
use vocollama_model::voco::{FrameBudget, FramePositions, FrameStore};
use vocollama_model::{LlavaModel, VocoCache, backend};

use crate::progress::{Timing, spinner, steps};
use crate::{CompressionArg, DEFAULT_MAX_NEW_TOKENS, ImageArgs, ModelArgs, SamplingArgs, VideoArgs, npy};

struct Loaded {
    model: LlavaModel,
    tokenizer: Tokenizer,
}

fn load(args: &ModelArgs) -> anyhow::Result<Loaded> {
    let device = backend::device(&args.backend)?;
    let pb = spinner(format!("loading {} on {}", args.model.display(), args.backend));
    let model = LlavaModel::load(&args.model, &args.options(), &device);
    pb.finish_and_clear();
    let model = model?;
    let tokenizer = Tokenizer::for_model(&args.model, model.config.layout)?;
    Ok(Loaded { model, tokenizer })
}

impl Loaded {
    /// `--voco-tokens`, else `voco_num` of config.json, else 2.
    fn voco_tokens(&self, arg: Option<usize>) -> usize {
        arg.or(self.model.config.voco_num).unwrap_or(2)
    }

    /// Compress `image` (stage 1) with a progress bar; the chat over it and the cache.
    fn compress(&self, image: &Path, n: usize) -> anyhow::Result<(Chat<'_>, VocoCache)> {
        let pb = steps(2, "encoding image");
        let pixels = self.model.load_image(image)?;
        let (embeds, vision_encode) = encode_image(&self.model, &pixels)?;
        pb.inc(1);
        pb.set_message(format!("compressing into {n} VoCo tokens"));
        let compressed = Chat::compress(&self.model, &self.tokenizer, embeds, n);
        pb.finish_and_clear();
        let (mut chat, cache) = compressed?;
        chat.stats.vision_encode = vision_encode;
        Ok((chat, cache))
    }

    /// The conversation `args` ask for: from an image (compressed or not) or from a `.voco` file.
    fn open(&self, args: &ImageArgs) -> anyhow::Result<Chat<'_>> {
        match (&args.image, &args.cache, args.compression) {
            (Some(image), _, CompressionArg::Voco) => Ok(self.compress(image, self.voco_tokens(args.voco_tokens))?.0),
            (Some(image), _, CompressionArg::None) => {
                let pb = steps(2, "encoding image");
                let pixels = self.model.load_image(image)?;
                let (embeds, vision_encode) = encode_image(&self.model, &pixels)?;
                pb.inc(1);
                pb.set_message("running the image tokens");
                let chat = Chat::uncompressed(&self.model, &self.tokenizer, embeds);
                pb.finish_and_clear();
                let mut chat = chat?;
                chat.stats.vision_encode = vision_encode;
                Ok(chat)
            }
            (None, Some(_), CompressionArg::None) => {
                bail!("--compression none needs --image: a VoCo cache holds no image tokens")
            }
            (None, Some(path), CompressionArg::Voco) => {
                let cache = VocoCache::load(path, &self.model.fingerprint, &self.model.device)?;
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

    fn options(&self, sampling: &SamplingArgs) -> GenerateOptions {
        let stop = stop_ids(&self.tokenizer, &self.model);
        GenerateOptions { sampling: sampling.config(), max_new_tokens: sampling.max_new_tokens, stop }
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
    let (chat, cache) = loaded.compress(image, loaded.voco_tokens(voco_tokens))?;
    cache.save(out, &loaded.model.fingerprint, dtype)?;
    let bytes = std::fs::metadata(out).map(|m| m.len()).unwrap_or(0);
    eprintln!("wrote {}: {} VoCo tokens, {bytes} bytes", out.display(), cache.len());
    eprintln!("{}", Timing { image: chat.stats, ..Default::default() }.line());
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
        let timing = Timing { image: chat.stats, ..Default::default() };
        Self { chat, options: loaded.options(sampling), sampler: Sampler::new(sampling.config()), timing }
    }

    /// Each question answered on its own; `--json` prints one object per question.
    fn answer_each(&mut self, questions: &[String], json: bool) -> anyhow::Result<()> {
        for question in questions {
            self.chat.reset();
            let g = self.turn(question, !json)?;
            if json {
                let line = serde_json::json!({"question": question, "answer": g.text, "token_ids": g.ids});
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

pub fn chat(args: &ModelArgs, image: &ImageArgs, sampling: &SamplingArgs) -> anyhow::Result<()> {
    let loaded = load(args)?;
    let mut c = Conversation::open(&loaded, image, sampling)?;
    eprintln!("ask about the image; /reset starts over, /exit or end of input quits");
    for line in std::io::stdin().lock().lines() {
        let line = line.context("reading the question from stdin")?;
        match line.trim() {
            "" => continue,
            "/exit" => break,
            "/reset" => c.chat.reset(),
            question => {
                c.turn(question, true)?;
            }
        }
    }
    eprintln!("{}", c.timing.line());
    Ok(())
}

pub fn logits(args: &ModelArgs, image: &ImageArgs, prompt: &str, out: &Path) -> anyhow::Result<()> {
    let loaded = load(args)?;
    let mut chat = loaded.open(image)?;
    let logits = chat.next_logits(prompt)?;
    npy::write_f32(out, &logits)?;
    eprintln!("wrote {}: {} logits", out.display(), logits.len());
    Ok(())
}

/// Frames from the chosen source, sampled, compressed a batch at a time (only
/// that batch's image tokens alive; frames found in `--frame-cache` are read
/// back), joined in time order, then the questions — or the video cache
/// written to `--out`.
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
    let n = loaded.voco_tokens(source.voco_tokens);
    if n == 0 {
        bail!("--voco-tokens must be at least 1");
    }
    if source.frame_batch == 0 {
        bail!("--frame-batch must be at least 1");
    }
    let budget =
        FrameBudget::new(&loaded.tokenizer, model.config.llm.max_position_embeddings, model.image_tokens(), n)?;
    // Frame after frame, positions grow with the clip: refuse before any work what cannot be answered.
    let mut longest = 0;
    for q in questions {
        longest = longest.max(loaded.tokenizer.encode(q)?.len());
    }
    let reserve = longest + sampling.max_new_tokens;
    let fit = budget.voco_frames(reserve);
    if FramePositions::from(source.frame_positions) == FramePositions::Sequential && picked.len() > fit {
        bail!(
            "{} frames at {n} VoCo tokens each need {} positions with the question and a {}-token answer, but the context is {}: \
             at most {fit} frames fit (--num-frames {fit}, or --frame-positions shared)",
            picked.len(),
            budget.voco_positions(picked.len()) + budget.text_after + reserve,
            sampling.max_new_tokens,
            budget.context
        );
    }
    let store = source.frame_cache.as_deref().map(|d| FrameStore::open(d, model.fingerprint)).transpose()?;
    let pb = steps(picked.len() as u64, &format!("compressing {} frames into {n} VoCo tokens each", picked.len()));
    let mut caches: Vec<Option<VocoCache>> = vec![None; picked.len()];
    let mut stats = ImageStats::default();
    let mut computed = 0usize;
    // Frames waiting for the tower: (slot, pixels, store path).
    let mut pending: Vec<(usize, Pixels, Option<PathBuf>)> = Vec::new();
    let mut flush = |pending: &mut Vec<(usize, Pixels, Option<PathBuf>)>,
                     caches: &mut Vec<Option<VocoCache>>|
     -> anyhow::Result<()> {
        if pending.is_empty() {
            return Ok(());
        }
        let (slots, pixels): (Vec<_>, Vec<Pixels>) =
            std::mem::take(pending).into_iter().map(|(slot, pixels, path)| ((slot, path), pixels)).unzip();
        let (embeds, vision_encode) = encode_images(model, &pixels)?;
        drop(pixels);
        let (batch, compress) = compress_images(model, &loaded.tokenizer, embeds, n)?;
        stats.vision_encode += vision_encode;
        stats.compress += compress;
        for ((slot, path), cache) in slots.into_iter().zip(batch) {
            if let (Some(store), Some(path)) = (&store, &path) {
                store.put(path, &cache)?;
            }
            caches[slot] = Some(cache);
            computed += 1;
            pb.inc(1);
        }
        Ok(())
    };
    for (slot, frame) in clip.frames(&picked).enumerate() {
        let frame = frame?;
        let path = store.as_ref().map(|s| s.path(&frame, n));
        if let (Some(store), Some(path)) = (&store, &path) {
            if let Some(cache) = store.get(path, &model.device) {
                caches[slot] = Some(cache);
                pb.inc(1);
                continue;
            }
        }
        pending.push((slot, model.preprocess(&frame)?, path));
        if pending.len() == source.frame_batch {
            flush(&mut pending, &mut caches)?;
        }
    }
    flush(&mut pending, &mut caches)?;
    pb.finish_and_clear();
    let caches: Vec<VocoCache> = caches.into_iter().map(|c| c.expect("every frame compressed or read")).collect();
    let joined = VocoCache::join(&caches, source.frame_positions.into(), model.llm.inv_freq())?;
    let mut chat = Chat::from_cache(model, &loaded.tokenizer, &joined)?;
    stats.cache_bytes = chat.stats.cache_bytes;
    chat.stats = stats;
    if let Some(out) = &source.out {
        joined.save(out, &model.fingerprint, source.dtype.into())?;
        let bytes = std::fs::metadata(out).map(|m| m.len()).unwrap_or(0);
        eprintln!("wrote {}: {} frames x {n} VoCo tokens, {bytes} bytes", out.display(), joined.frames);
    }
    let mut c = Conversation::new(&loaded, chat, sampling);
    c.answer_each(questions, json)?;
    let per = |d: std::time::Duration| if computed == 0 { 0.0 } else { d.as_secs_f64() * 1e3 / computed as f64 };
    eprintln!(
        "frames: {} of {} ({computed} computed, {} from the frame cache) | per frame: vision encode {:.1} ms, compress {:.1} ms | {} VoCo tokens in context",
        picked.len(),
        clip.len(),
        picked.len() - computed,
        per(stats.vision_encode),
        per(stats.compress),
        joined.len()
    );
    eprintln!(
        "context: {} positions; frames that fit: {} at {n} VoCo tokens each, {} at {} image tokens each",
        budget.context,
        fit,
        budget.image_frames(reserve),
        budget.image_tokens
    );
    eprintln!("{}", c.timing.line());
    Ok(())
}

/// `info`'s video line: frames that fit in the context at the model's N VoCo
/// tokens per frame and uncompressed, with room for a default-length answer.
pub fn video_context(dir: &Path, info: &vocollama_model::info::Info) -> anyhow::Result<Option<String>> {
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
