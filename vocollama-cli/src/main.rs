//! The `vocollama` command line: argument parsing and printing only; the
//! model logic lives in `vocollama-model`.

mod npy;
mod progress;
mod run;
mod serve;
mod train;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{ArgGroup, Args, Parser, Subcommand};
use vocollama_model::checkpoint::config::ImagePooling;
use vocollama_model::checkpoint::info;
use vocollama_model::model::precision::{Quantize, WeightDType};
use vocollama_model::{CacheDType, Compression, FramePositions, LlavaModel, LoadOptions, SamplingConfig, backend};
use vocollama_train::synthetic::{Answers, TurnOrder};

#[derive(Parser)]
#[command(name = "vocollama", version, about = "VoCo-LLaMA: vision compression with LLaVA-1.5 models, on Burn")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Args)]
pub struct ModelArgs {
    /// Model directory (config.json + weights + tokenizer): LLaVA, llava-hf or plain LLaMA layout.
    /// Without it, the tiny demo VoCo model kept in the repository's `assets/demo/model`.
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/../assets/demo/model"))]
    pub model: PathBuf,
    /// CLIP vision tower directory, overriding `mm_vision_tower` of config.json.
    #[arg(long)]
    pub vision_tower: Option<PathBuf>,
    /// Backend to run on (see `vocollama backends`).
    #[arg(long, default_value = backend::DEFAULT)]
    pub backend: String,
    /// Float type of the weights and activations (`auto`: the checkpoint's where the backend computes it well).
    #[arg(long, value_enum, default_value_t = WeightDType::Auto)]
    pub dtype: WeightDType,
    /// Quantize the linear weights of the language model and the projector as they load.
    #[arg(long, value_enum, default_value_t = Quantize::None)]
    pub quantize: Quantize,
}

impl ModelArgs {
    pub fn options(&self) -> LoadOptions {
        LoadOptions { vision_tower: self.vision_tower.clone(), dtype: self.dtype, quantize: self.quantize }
    }
}

/// Where the image comes from: a picture to encode, or a VoCo cache made earlier.
#[derive(Args)]
#[command(group(ArgGroup::new("source").required(true).args(["image", "cache"])))]
pub struct ImageArgs {
    /// Image file (PNG, JPEG, GIF, WebP, BMP).
    #[arg(long)]
    pub image: Option<PathBuf>,
    /// A `.voco` file written by `vocollama compress` with the same model.
    #[arg(long)]
    pub cache: Option<PathBuf>,
    /// VoCo tokens to compress the image into (default: `voco_num` of config.json, else 2).
    #[arg(long)]
    pub voco_tokens: Option<usize>,
    /// `voco`: answer from the VoCo cache; `none`: plain LLaVA with every image token (`llava_v1`).
    #[arg(long, value_enum, default_value_t = Compression::Voco)]
    pub compression: Compression,
}

/// A clip: its frames, which of them, and how they are compressed and joined.
#[derive(Args)]
#[command(group(ArgGroup::new("clip").required(true).args(["frames", "gif", "video"])))]
pub struct VideoArgs {
    /// A directory of frame images, in natural name order.
    #[arg(long)]
    pub frames: Option<PathBuf>,
    /// An animated GIF.
    #[arg(long)]
    pub gif: Option<PathBuf>,
    /// A video file (decoded by the system's `ffmpeg`).
    #[arg(long)]
    pub video: Option<PathBuf>,
    /// Frames to keep, spread uniformly over the clip.
    #[arg(long, default_value_t = 8, conflicts_with = "fps")]
    pub num_frames: usize,
    /// Frames per second of clip time, instead of --num-frames.
    #[arg(long)]
    pub fps: Option<f64>,
    /// VoCo tokens per frame (default: `voco_num` of config.json, else 2).
    #[arg(long)]
    pub voco_tokens: Option<usize>,
    /// `sequential`: each frame's tokens after the previous frame's (keys re-rotated); `shared`: all at stage-1 positions.
    #[arg(long, value_enum, default_value_t = FramePositions::Sequential)]
    pub frame_positions: FramePositions,
    /// Frames run through the vision tower and stage 1 together (memory grows with it, not with the clip).
    #[arg(long, default_value_t = 4)]
    pub frame_batch: usize,
    /// A directory of per-frame caches keyed by content: frames found there are not recomputed.
    #[arg(long)]
    pub frame_cache: Option<PathBuf>,
    /// Also write the video cache (all frames) to this `.voco` file, for `ask --cache`.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Storage type of the keys and values in --out.
    #[arg(long, value_enum, default_value_t = CacheDType::F16)]
    pub cache_dtype: CacheDType,
}

/// The paper's answer length.
pub const DEFAULT_MAX_NEW_TOKENS: usize = 128;

#[derive(Args)]
pub struct SamplingArgs {
    /// 0 = greedy (the paper's setting).
    #[arg(long, default_value_t = 0.0)]
    pub temperature: f32,
    /// Sample among the k most likely tokens (0 = all).
    #[arg(long, default_value_t = 0)]
    pub top_k: usize,
    /// Sample among the most likely tokens whose probability reaches p.
    #[arg(long, default_value_t = 1.0)]
    pub top_p: f32,
    /// Penalise tokens already in the context (1 = off).
    #[arg(long, default_value_t = 1.0)]
    pub repetition_penalty: f32,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Stop after this many tokens if no EOS came.
    #[arg(long, default_value_t = DEFAULT_MAX_NEW_TOKENS)]
    pub max_new_tokens: usize,
}

impl SamplingArgs {
    /// The settings checked before any work, named by their flags.
    pub fn check(&self) -> anyhow::Result<()> {
        self.config().check().map_err(|e| {
            let msg = e.to_string();
            let (field, rest) = msg.split_once(':').unwrap_or((&msg, ""));
            anyhow::anyhow!("--{}:{rest}", field.replace('_', "-"))
        })
    }

    pub fn config(&self) -> SamplingConfig {
        SamplingConfig {
            temperature: self.temperature,
            top_k: self.top_k,
            top_p: self.top_p,
            repetition_penalty: self.repetition_penalty,
            seed: self.seed,
        }
    }
}

#[derive(Subcommand)]
enum Command {
    /// Print a model's architecture, parameter counts, dtypes, KV-cache size per token and the memory it
    /// needs at the precision asked for (and what a `.voco` file holds, with --cache).
    Info {
        #[command(flatten)]
        model: ModelArgs,
        /// Also describe this `.voco` file: its tokens, frames, dtypes and whether this model made it.
        #[arg(long)]
        cache: Option<PathBuf>,
    },
    /// List the backends compiled into this build.
    Backends,
    /// Compress an image into a VoCo cache file (stage 1).
    Compress {
        #[command(flatten)]
        model: ModelArgs,
        /// Image file.
        #[arg(long)]
        image: PathBuf,
        /// VoCo tokens (default: `voco_num` of config.json, else 2).
        #[arg(long)]
        voco_tokens: Option<usize>,
        /// The `.voco` file to write.
        #[arg(long)]
        out: PathBuf,
        /// Storage type of the cached keys and values.
        #[arg(long, value_enum, default_value_t = CacheDType::F16)]
        cache_dtype: CacheDType,
    },
    /// Save a model with its linear weights quantized (--quantize q8|q4): a new model directory that
    /// loads quantized as it is, without quantizing again.
    Quantize {
        #[command(flatten)]
        model: ModelArgs,
        /// The new model directory to write (must not exist).
        #[arg(long)]
        out: PathBuf,
    },
    /// Answer questions about an image; each question is answered from the same compression.
    Ask {
        #[command(flatten)]
        model: ModelArgs,
        #[command(flatten)]
        image: ImageArgs,
        #[command(flatten)]
        sampling: SamplingArgs,
        /// One JSON object per question: {"question", "answer", "token_ids", "finish_reason"}.
        #[arg(long)]
        json: bool,
        /// The questions.
        #[arg(required = true)]
        questions: Vec<String>,
    },
    /// Talk about an image, turn after turn (one question per line; /reset, /exit).
    Chat {
        #[command(flatten)]
        model: ModelArgs,
        #[command(flatten)]
        image: ImageArgs,
        #[command(flatten)]
        sampling: SamplingArgs,
    },
    /// Answer questions about a video: every frame compressed on its own, the caches joined in time order.
    Video {
        #[command(flatten)]
        model: ModelArgs,
        #[command(flatten)]
        clip: VideoArgs,
        #[command(flatten)]
        sampling: SamplingArgs,
        /// One JSON object per question: {"question", "answer", "token_ids", "finish_reason"}.
        #[arg(long)]
        json: bool,
        /// The questions (optional with --out).
        #[arg(required_unless_present = "out")]
        questions: Vec<String>,
    },
    /// Train a model with the VoCo layout (or causally) on LLaVA-style records;
    /// `train tower` trains the vision tower on synthetic scenes first.
    Train(train::TrainCommand),
    /// Accuracy on LLaVA-style records, per question type.
    Eval(train::EvalArgs),
    /// Write a synthetic dataset.
    Data {
        #[command(subcommand)]
        kind: DataKind,
    },
    /// Write a new model with random weights (to train from scratch).
    Init {
        /// Model shape: tiny or small.
        #[arg(long, default_value = "tiny")]
        preset: String,
        #[command(flatten)]
        shape: train::Shape,
        /// A directory whose tokenizer (with `<voco>`) the model uses.
        #[arg(long)]
        tokenizer: PathBuf,
        /// VoCo tokens per image recorded in config.json.
        #[arg(long, default_value_t = 1)]
        voco_tokens: usize,
        /// `avg`: the image averaged into one token before a linear projector (the LLaMA-VID-style baseline).
        #[arg(long, value_enum, default_value_t = ImagePooling::None)]
        image_pooling: ImagePooling,
        /// Take this CLIP tower directory (e.g. a `vocollama train tower` model's
        /// `vision_tower/`) instead of a random one.
        #[arg(long)]
        vision_tower: Option<PathBuf>,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        #[arg(long)]
        out: PathBuf,
    },
    /// Benchmarks: the paper's table 7 per backend, backend comparison, PyTorch side by side.
    Bench(vocollama_benches::BenchArgs),
    /// Serve the model over HTTP: OpenAI's chat completions with images kept as VoCo caches, and a chat page.
    Serve(serve::ServeArgs),
    /// Write the f32 next-token logits after the templated prompt to a .npy file.
    Logits {
        #[command(flatten)]
        model: ModelArgs,
        #[command(flatten)]
        image: ImageArgs,
        /// The question.
        #[arg(long)]
        prompt: String,
        /// The .npy file to write (shape [vocab]).
        #[arg(long)]
        out: PathBuf,
    },
}

#[derive(Subcommand)]
enum DataKind {
    /// Coloured shapes with colour, shape, count, position and size questions.
    Shapes {
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value_t = 2000)]
        train: usize,
        #[arg(long, default_value_t = 200)]
        test: usize,
        /// Image side in pixels.
        #[arg(long, default_value_t = 64)]
        size: u32,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Question types to ask, comma-separated (default: colour,shape,count,position,size,caption).
        #[arg(long, value_delimiter = ',')]
        kinds: Vec<String>,
        /// Questions about each picture (each its own record; --train and --test count questions).
        #[arg(long, default_value_t = 1)]
        per_image: usize,
        /// Answers about one object: `named` restates the word the question names it by
        /// ("What colour is the circle?" → "circle red"), `plain` gives the attribute alone ("red").
        #[arg(long, value_enum, default_value_t = Answers::Named)]
        answers: Answers,
        /// Order of a training conversation's turns: `shuffled`; `caption-last` (shuffled, then
        /// the caption last, where it cannot answer the other questions for the model); or
        /// `caption-apart` (the caption asked alone in a record of its own, where it cannot repeat them).
        #[arg(long, value_enum, default_value_t = TurnOrder::Shuffled)]
        order: TurnOrder,
    },
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Info { model, cache } => {
            let device = backend::device(&model.backend)?;
            // Everything is read and checked before anything is printed: an error prints alone.
            let info = info::describe(&model.model, model.vision_tower.as_deref())?;
            let video = run::video_context(&model.model, &info)?;
            let plan = LlavaModel::plan(&model.model, &model.options(), &device)?;
            let cache = cache.map(|path| run::cache_line(&path, &plan.fingerprint)).transpose()?;
            println!("{info}");
            if let Some(line) = video {
                println!("{line}");
            }
            println!("{}", run::compute_line(&plan, &model.backend));
            if let Some(line) = cache {
                println!("{line}");
            }
        }
        Command::Backends => {
            for name in backend::compiled_backends() {
                println!("{name}");
            }
        }
        Command::Compress { model, image, voco_tokens, out, cache_dtype } => {
            run::compress(&model, &image, voco_tokens, &out, cache_dtype)?
        }
        Command::Quantize { model, out } => run::quantize(&model, &out)?,
        Command::Ask { model, image, sampling, json, questions } => {
            sampling.check()?;
            run::ask(&model, &image, &sampling, json, &questions)?
        }
        Command::Chat { model, image, sampling } => {
            sampling.check()?;
            run::chat(&model, &image, &sampling)?
        }
        Command::Video { model, clip, sampling, json, questions } => {
            sampling.check()?;
            run::video(&model, &clip, &sampling, json, &questions)?
        }
        Command::Bench(args) => {
            let command = std::iter::once("vocollama".to_string()).chain(std::env::args().skip(1)).collect::<Vec<_>>();
            let report = vocollama_benches::run(&args, command.join(" "), &mut |m| eprintln!("{m}"))?;
            // What is printed is what was written (with the charts' links when written).
            let markdown = match &args.out {
                Some(out) => vocollama_benches::write(&report, out)?,
                None => report.markdown(),
            };
            print!("{markdown}");
        }
        Command::Serve(args) => serve::serve(&args)?,
        Command::Logits { model, image, prompt, out } => run::logits(&model, &image, &prompt, &out)?,
        Command::Train(train::TrainCommand { stage: Some(train::TrainStage::Tower(args)), .. }) => train::tower(&args)?,
        Command::Train(train::TrainCommand { args: Some(args), .. }) => train::train(&args)?,
        Command::Train(_) => unreachable!("clap asks for the training options or a stage"),
        Command::Eval(args) => train::eval(&args)?,
        Command::Data { kind: DataKind::Shapes { out, train, test, size, seed, kinds, per_image, answers, order } } => {
            train::data_shapes(&out, train, test, size, seed, &kinds, per_image, answers, order)?
        }
        Command::Init { preset, shape, tokenizer, voco_tokens, image_pooling, vision_tower, seed, out } => {
            train::init(&out, &preset, shape, &tokenizer, voco_tokens, image_pooling, vision_tower.as_deref(), seed)?
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    // Rust ignores SIGPIPE, which turns a closed pipe into a panic in `println!`;
    // a command-line tool ends quietly instead, as `head` expects.
    #[cfg(unix)]
    // SAFETY: setting a signal's disposition to its default before any thread starts.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", one_line(&e));
            ExitCode::FAILURE
        }
    }
}

/// An error with every cause in its chain, on one line: `context: cause: ...`; a
/// cause whose text its context already quotes is not repeated.
fn one_line(e: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if text.is_empty() || line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line.lines().map(str::trim).filter(|l| !l.is_empty()).collect::<Vec<_>>().join("; ")
}

#[cfg(test)]
mod tests {
    use super::one_line;
    use anyhow::Context;

    #[test]
    fn an_error_prints_its_whole_chain_on_one_line() {
        let io = std::io::Error::new(std::io::ErrorKind::InvalidData, "stream did not contain valid UTF-8");
        let e = Err::<(), _>(io).context("reading the question from stdin").unwrap_err();
        assert_eq!(one_line(&e), "reading the question from stdin: stream did not contain valid UTF-8");
        // The library's errors quote their cause already: it is not said twice.
        let lib = vocollama_model::Error::io(
            std::path::Path::new("/m/config.json"),
            std::io::Error::new(std::io::ErrorKind::NotFound, "No such file"),
        );
        let e = Err::<(), _>(lib).context("resuming from /m").unwrap_err();
        assert_eq!(one_line(&e), "resuming from /m: /m/config.json: No such file");
        let e = anyhow::anyhow!("ffmpeg failed: line one\nline two\n");
        assert_eq!(one_line(&e), "ffmpeg failed: line one; line two");
    }
}
