//! The commands that load a model: compress, ask, chat, logits.

use std::io::{BufRead, Write};
use std::path::Path;

use anyhow::{Context, bail};
use vocollama_model::chat::{Chat, ImageStats, compress_image, encode_image};
use vocollama_model::frames::{self, FrameSampling};
use vocollama_model::generate::{GenerateOptions, Generation};
use vocollama_model::sampling::Sampler;
use vocollama_model::text::Tokenizer;
use vocollama_model::voco::cache::CacheDType;
use vocollama_model::{LlavaModel, VocoCache, backend};

use crate::progress::{Timing, spinner, steps};
use crate::{CompressionArg, ImageArgs, ModelArgs, SamplingArgs, VideoArgs, npy};

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
                if let Some(n) = args.voco_tokens.filter(|&n| n != cache.len()) {
                    bail!(
                        "{}: the cache holds {} VoCo tokens, --voco-tokens asks for {n}",
                        path.display(),
                        cache.len()
                    );
                }
                Chat::from_cache(&self.model, &self.tokenizer, &cache).with_context(|| path.display().to_string())
            }
            (None, None, _) => unreachable!("clap requires --image or --cache"),
        }
    }

    fn options(&self, sampling: &SamplingArgs) -> GenerateOptions {
        let mut stop: Vec<u32> = self.tokenizer.eos_id().into_iter().collect();
        stop.extend(self.model.config.llm.eos_token_id.filter(|id| !stop.contains(id)));
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

/// Frames from the chosen source, sampled, each compressed on its own (one
/// frame's image tokens alive at a time), joined in time order, then the questions.
pub fn video(
    args: &ModelArgs,
    source: &VideoArgs,
    sampling: &SamplingArgs,
    json: bool,
    questions: &[String],
) -> anyhow::Result<()> {
    let loaded = load(args)?;
    let frame_sampling = match source.fps {
        Some(f) => FrameSampling::Fps(f),
        None => FrameSampling::Count(source.num_frames),
    };
    let all = match (&source.frames, &source.gif, &source.video) {
        (Some(dir), _, _) => frames::from_dir(dir)?,
        (_, Some(gif), _) => frames::from_gif(gif)?,
        // ffmpeg decodes at the asked rate, or at 2 frames a second to sample K from.
        (_, _, Some(video)) => frames::from_video(video, source.fps.unwrap_or(2.0))?,
        _ => unreachable!("clap requires one frame source"),
    };
    let times: Vec<f64> = all.iter().map(|f| f.seconds).collect();
    let picked = frames::sample(&times, frame_sampling)?;
    let n = loaded.voco_tokens(source.voco_tokens);
    let pb = steps(picked.len() as u64, &format!("compressing {} frames into {n} VoCo tokens each", picked.len()));
    let mut caches = Vec::with_capacity(picked.len());
    let mut stats = ImageStats::default();
    for &i in &picked {
        let pixels = loaded.model.preprocess(&all[i].image)?;
        let (embeds, vision_encode) = encode_image(&loaded.model, &pixels)?;
        let (cache, compress) = compress_image(&loaded.model, &loaded.tokenizer, embeds, n)?;
        stats.vision_encode += vision_encode;
        stats.compress += compress;
        caches.push(cache);
        pb.inc(1);
    }
    pb.finish_and_clear();
    let joined = VocoCache::join(&caches, source.frame_positions.into(), loaded.model.llm.inv_freq())?;
    let mut chat = Chat::from_video(&loaded.model, &loaded.tokenizer, &joined, n)?;
    stats.cache_bytes = chat.stats.cache_bytes;
    chat.stats = stats;
    let mut c = Conversation::new(&loaded, chat, sampling);
    c.answer_each(questions, json)?;
    let k = picked.len() as f64;
    eprintln!(
        "frames: {} of {} | per frame: vision encode {:.1} ms, compress {:.1} ms | {} VoCo tokens in context",
        picked.len(),
        all.len(),
        stats.vision_encode.as_secs_f64() * 1e3 / k,
        stats.compress.as_secs_f64() * 1e3 / k,
        joined.len()
    );
    eprintln!("{}", c.timing.line());
    Ok(())
}
