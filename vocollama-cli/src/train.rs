//! The training commands: synthetic data, new models, training, evaluation.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use vocollama_model::checkpoint::config::ImagePooling;
use vocollama_model::io::atomic_write::write_atomic;
use vocollama_model::model::random::{Preset, preset};
use vocollama_model::{LlavaModel, LoadOptions, Tokenizer, backend};
use vocollama_train::batch::{LossWeight, TrainLayout};
use vocollama_train::data::load_records;
use vocollama_train::eval::{EvalMode, EvalReport, evaluate};
use vocollama_train::init::init_model;
use vocollama_train::model_dir::check_out;
use vocollama_train::synthetic::{Answers, TurnOrder, write_dataset};
use vocollama_train::tower::{TowerConfig, pretrain_tower, save_with_tower};
use vocollama_train::trainer::{Checkpoints, TrainConfig, Trainer};

use crate::progress::steps;

/// `vocollama train`: the LLaVA stages with its options, or a stage before them.
#[derive(clap::Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct TrainCommand {
    #[command(subcommand)]
    pub stage: Option<TrainStage>,
    #[command(flatten)]
    pub args: Option<TrainArgs>,
}

#[derive(clap::Subcommand)]
pub enum TrainStage {
    /// Train the vision tower on synthetic scenes (what each quadrant holds), to freeze for the LLaVA stages.
    Tower(TowerArgs),
}

/// Arguments of `vocollama train tower`.
#[derive(clap::Args)]
pub struct TowerArgs {
    /// The model whose tower is trained (e.g. from `vocollama init`); its LLaMA and projector are kept as they are.
    #[arg(long)]
    pub model: PathBuf,
    /// Where the model with the trained tower goes.
    #[arg(long)]
    pub out: PathBuf,
    /// Training scenes, drawn from --seed (a stream of their own: never the pictures of `data shapes`).
    #[arg(long, default_value_t = 20_000)]
    pub scenes: usize,
    /// Held-out scenes the reported accuracy is measured on.
    #[arg(long, default_value_t = 1_000)]
    pub test_scenes: usize,
    #[arg(long, default_value_t = 15)]
    pub epochs: usize,
    #[arg(long, default_value_t = 64)]
    pub batch_size: usize,
    /// Peak learning rate (warm-up over 3 % of the steps, then cosine decay).
    #[arg(long, default_value_t = 5e-3)]
    pub lr: f64,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[arg(long, default_value = backend::DEFAULT)]
    pub backend: String,
}

pub fn tower(a: &TowerArgs) -> anyhow::Result<()> {
    check_out(&a.out)?;
    let device = backend::autodiff_device(&a.backend)?;
    let mut model = LlavaModel::load(&a.model, &LoadOptions::f32(), &device)?;
    let config = TowerConfig {
        scenes: a.scenes,
        test_scenes: a.test_scenes,
        epochs: a.epochs,
        batch_size: a.batch_size,
        lr: a.lr,
        seed: a.seed,
    };
    let started = std::time::Instant::now();
    let mut pb = None;
    let acc = pretrain_tower(&mut model, &config, &mut |r| {
        let bar = pb.get_or_insert_with(|| steps(r.total as u64, "training the tower"));
        bar.set_position(r.step as u64);
        bar.set_message(format!("loss {:.4}, {:.0} scenes/s", r.loss, r.scenes_per_second));
        if r.step % 50 == 0 || r.step == r.total {
            bar.suspend(|| {
                eprintln!(
                    "step {}/{} epoch {} loss {:.4} lr {:.3e} {:.0} scenes/s",
                    r.step,
                    r.total,
                    r.epoch + 1,
                    r.loss,
                    r.lr,
                    r.scenes_per_second
                )
            });
        }
    });
    if let Some(bar) = pb {
        bar.finish_and_clear();
    }
    let acc = acc?;
    save_with_tower(&model, &a.out, &config, &acc)?;
    eprintln!(
        "trained the tower in {:.1} s; held out ({} scenes): colour {:.1} %, shape {:.1} %, size {:.1} % per quadrant, \
         {:.1} % of scenes read entirely right, {:.1} % of patches name their quadrant; wrote {}",
        started.elapsed().as_secs_f64(),
        a.test_scenes,
        100.0 * acc.colour,
        100.0 * acc.shape,
        100.0 * acc.size,
        100.0 * acc.scene,
        100.0 * acc.position,
        a.out.display()
    );
    Ok(())
}

/// Arguments of `vocollama train` (the LLaVA stages).
#[derive(clap::Args)]
pub struct TrainArgs {
    /// The model to start from (original LLaVA layout; `vocollama init` makes new ones).
    #[arg(long, required = true)]
    pub model: PathBuf,
    /// Training records (LLaVA JSON: `conversations` with `<image>`); images relative to the file.
    #[arg(long, required = true)]
    pub data: PathBuf,
    /// Where the trained model goes (checkpoints as `OUT/checkpoint-STEP`).
    #[arg(long, required = true)]
    pub out: PathBuf,
    /// `voco`: text sees only the VoCo tokens; `causal`: plain attention (the upper bound).
    #[arg(long, value_enum, default_value_t = TrainLayout::Voco)]
    pub layout: TrainLayout,
    /// How answers weigh in the loss: `token` (every answer token alike, as LLaVA trains) or
    /// `answer` (every answer alike, a caption as much as a one-word answer).
    #[arg(long, value_enum, default_value_t = LossWeight::Token)]
    pub loss_weight: LossWeight,
    /// VoCo tokens per image (default: `voco_num` of config.json, else 1).
    #[arg(long)]
    pub voco_tokens: Option<usize>,
    /// Peak learning rate (the paper: 2e-5 for a pretrained 7B; tiny models from scratch want ~1e-3).
    #[arg(long, default_value_t = 2e-5)]
    pub lr: f64,
    #[arg(long, default_value_t = 1)]
    pub epochs: usize,
    /// Examples per forward.
    #[arg(long, default_value_t = 8)]
    pub batch_size: usize,
    /// Forwards per optimizer step.
    #[arg(long, default_value_t = 1)]
    pub grad_accum: usize,
    /// Fraction of steps warming up.
    #[arg(long, default_value_t = 0.03)]
    pub warmup: f64,
    #[arg(long, default_value_t = 0.0)]
    pub weight_decay: f32,
    /// AdamW's ε (transformers' Trainer default).
    #[arg(long, default_value_t = 1e-8)]
    pub adam_epsilon: f32,
    /// Clip the global gradient norm (0 = off).
    #[arg(long, default_value_t = 1.0)]
    pub max_grad_norm: f32,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Write a resumable checkpoint every this many steps (0 = only the final model).
    #[arg(long, default_value_t = 0)]
    pub save_every: usize,
    /// Continue from a checkpoint written by an earlier run with the same data and settings.
    #[arg(long)]
    pub resume: Option<PathBuf>,
    /// Backend to train on (wrapped in Burn's autodiff).
    #[arg(long, default_value = backend::DEFAULT)]
    pub backend: String,
}

pub fn train(a: &TrainArgs) -> anyhow::Result<()> {
    // Refused before any work: an --out that holds what is not a vocollama model.
    check_out(&a.out)?;
    let device = backend::autodiff_device(&a.backend)?;
    let start_dir = a.resume.as_deref().unwrap_or(&a.model);
    let mut model = LlavaModel::load(start_dir, &LoadOptions::default(), &device)?;
    let tokenizer = Tokenizer::for_model(start_dir, model.config.layout)?;
    let records = load_records(&a.data)?;
    let root = a.data.parent().unwrap_or(Path::new(".")).to_path_buf();
    let layout = a.layout;
    let config = TrainConfig {
        layout,
        loss_weight: a.loss_weight,
        voco_tokens: a.voco_tokens.or(model.config.voco_num).unwrap_or(1),
        lr: a.lr,
        epochs: a.epochs,
        batch_size: a.batch_size,
        grad_accum: a.grad_accum,
        warmup: a.warmup,
        weight_decay: a.weight_decay,
        adam_epsilon: a.adam_epsilon,
        max_grad_norm: a.max_grad_norm,
        seed: a.seed,
        feature_cache_bytes: vocollama_train::trainer::FEATURE_CACHE_BYTES,
    };
    let mut trainer = Trainer::new(config.clone(), &tokenizer)?;
    if let Some(dir) = &a.resume {
        trainer.resume(&mut model, dir).with_context(|| format!("resuming from {}", dir.display()))?;
    }
    let total = trainer.total_steps(records.len());
    let mut updates = serde_json::Map::new();
    updates.insert("voco_num".into(), config.voco_tokens.into());
    updates.insert("voco_training_layout".into(), layout.name().into());
    trainer.checkpoints = Some(Checkpoints { dir: a.out.clone(), every: a.save_every, updates: updates.clone() });
    let pb = steps(total as u64, "training");
    pb.set_position(trainer.step as u64);
    let mut last = None;
    let started = std::time::Instant::now();
    let result = trainer.train(&mut model, &tokenizer, &records, &root, &mut |r, _| {
        pb.set_position(r.step as u64);
        pb.set_message(format!("loss {:.4}, {:.0} tok/s", r.loss, r.tokens_per_second));
        if r.step % 10 == 0 || r.step == r.total {
            pb.suspend(|| {
                eprintln!(
                    "step {}/{} epoch {} loss {:.4} lr {:.3e} grad norm {:.3} {:.0} tok/s",
                    r.step,
                    r.total,
                    r.epoch + 1,
                    r.loss,
                    r.lr,
                    r.grad_norm,
                    r.tokens_per_second
                )
            });
        }
        last = Some(*r);
        Ok(())
    });
    pb.finish_and_clear();
    result?;
    trainer.save_checkpoint(&model, &a.out, &updates)?;
    if let Some(r) = last {
        let t = trainer.throughput;
        eprintln!(
            "trained {} steps in {:.1} s ({:.2} steps/s, {:.0} positions/s, {:.0} labelled tokens/s): final loss {:.4}; wrote {}",
            r.step,
            started.elapsed().as_secs_f64(),
            t.steps as f64 / t.seconds.max(1e-9),
            t.positions as f64 / t.seconds.max(1e-9),
            t.tokens as f64 / t.seconds.max(1e-9),
            r.loss,
            a.out.display()
        );
    }
    Ok(())
}

/// Arguments of `vocollama eval`.
#[derive(clap::Args)]
pub struct EvalArgs {
    #[arg(long)]
    pub model: PathBuf,
    /// Records to answer (LLaVA JSON; `type` groups the accuracy).
    #[arg(long)]
    pub data: PathBuf,
    /// `voco`: from the VoCo tokens only; `none`: image tokens visible (causal);
    /// `lower`: the VoCo restriction on a causally trained model (the paper's lower bound).
    #[arg(long, value_enum, default_value_t = EvalMode::Voco)]
    pub compression: EvalMode,
    /// VoCo tokens per image (default: `voco_num` of config.json, else 1).
    #[arg(long)]
    pub voco_tokens: Option<usize>,
    /// Answer at most the first this-many records.
    #[arg(long)]
    pub limit: Option<usize>,
    #[arg(long, default_value_t = 8)]
    pub max_new_tokens: usize,
    /// Also write every prediction and the accuracies as JSON here.
    #[arg(long)]
    pub out: Option<PathBuf>,
    #[arg(long, default_value = backend::DEFAULT)]
    pub backend: String,
}

pub fn eval(a: &EvalArgs) -> anyhow::Result<()> {
    let device = backend::device(&a.backend)?;
    let model = LlavaModel::load(&a.model, &LoadOptions::default(), &device)?;
    let tokenizer = Tokenizer::for_model(&a.model, model.config.layout)?;
    let mut records = load_records(&a.data)?;
    records.truncate(a.limit.unwrap_or(usize::MAX));
    if records.is_empty() {
        bail!("{}: no records to evaluate", a.data.display());
    }
    let root = a.data.parent().unwrap_or(Path::new(".")).to_path_buf();
    let mode = a.compression;
    let n = a.voco_tokens.or(model.config.voco_num).unwrap_or(1);
    let pb = steps(records.len() as u64, &format!("answering ({})", mode.name()));
    let report = evaluate(&model, &tokenizer, &records, &root, mode, n, a.max_new_tokens, &mut |_| pb.inc(1));
    pb.finish_and_clear();
    let report = report?;
    print!("{}", accuracy_table(&report, mode, n));
    std::io::stdout().flush()?;
    if let Some(out) = &a.out {
        let (kinds, (c, t)) = report.by_kind();
        let json = serde_json::json!({
            "model": a.model, "data": a.data, "compression": mode.name(), "voco_tokens": n,
            "accuracy": c as f64 / t as f64, "correct": c, "total": t,
            "by_type": kinds.iter().map(|(k, (c, t))| (k.clone(), serde_json::json!({"correct": c, "total": t, "accuracy": *c as f64 / *t as f64}))).collect::<serde_json::Map<_, _>>(),
            "predictions": report.predictions.iter().map(|p| serde_json::json!({"id": p.id, "type": p.kind, "question": p.question, "answer": p.answer, "predicted": p.predicted, "correct": p.correct})).collect::<Vec<_>>(),
        });
        write_atomic(out, serde_json::to_string_pretty(&json)?.as_bytes())?;
    }
    Ok(())
}

/// Accuracy per question type and overall, one line each.
pub fn accuracy_table(report: &EvalReport, mode: EvalMode, n: usize) -> String {
    let (kinds, (c, t)) = report.by_kind();
    let mut s = format!("compression {} (N = {n})\n", mode.name());
    for (k, (c, t)) in &kinds {
        s.push_str(&format!("  {k:<10} {:6.1} %  ({c}/{t})\n", 100.0 * *c as f64 / *t as f64));
    }
    s.push_str(&format!("  {:<10} {:6.1} %  ({c}/{t})\n", "all", 100.0 * c as f64 / t as f64));
    s
}

/// `vocollama data shapes`: the synthetic shapes dataset.
#[allow(clippy::too_many_arguments)]
pub fn data_shapes(
    out: &Path,
    train: usize,
    test: usize,
    size: u32,
    seed: u64,
    kinds: &[String],
    per_image: usize,
    answers: Answers,
    order: TurnOrder,
) -> anyhow::Result<()> {
    let kinds: Vec<&str> = kinds.iter().map(String::as_str).collect();
    write_dataset(out, train, test, size, seed, &kinds, per_image, answers, order)?;
    eprintln!(
        "wrote {} ({train} train, {test} test questions, {per_image} per picture, {} answers, {} turns, {size} px images)",
        out.display(),
        answers.name(),
        order.name()
    );
    Ok(())
}

/// The deepest language model `vocollama init --layers` makes (LLaMA-2-70B has 80 layers; these shapes are small).
const MAX_LAYERS: usize = 64;

/// What `vocollama init` changes of a preset's language model.
#[derive(clap::Args)]
pub struct Shape {
    /// Language-model layers instead of the preset's (1 to 64).
    #[arg(long)]
    pub layers: Option<usize>,
    /// Language-model attention heads instead of the preset's (a divisor of its width
    /// leaving an even head size).
    #[arg(long)]
    pub heads: Option<usize>,
    /// Key/value heads instead of the preset's (a divisor of the heads; equal to them,
    /// as in Vicuna-7B, gives every head its own keys and values).
    #[arg(long)]
    pub kv_heads: Option<usize>,
}

impl Shape {
    /// The preset with these changes, or which option is out of range and why.
    fn apply(&self, mut p: Preset) -> anyhow::Result<Preset> {
        if let Some(layers) = self.layers {
            if !(1..=MAX_LAYERS).contains(&layers) {
                anyhow::bail!("--layers: expected 1 to {MAX_LAYERS} language-model layers, got {layers}");
            }
            p.layers = layers;
        }
        if let Some(heads) = self.heads {
            // RoPE rotates pairs of a head's dimensions, so a head needs an even size.
            if heads == 0 || p.hidden % heads != 0 || (p.hidden / heads) % 2 != 0 {
                anyhow::bail!(
                    "--heads: expected a divisor of the width {} that leaves an even head size, got {heads}",
                    p.hidden
                );
            }
            p.heads = heads;
        }
        if let Some(kv_heads) = self.kv_heads {
            p.kv_heads = kv_heads;
        }
        if p.kv_heads == 0 || p.heads % p.kv_heads != 0 {
            anyhow::bail!("--kv-heads: expected a divisor of the {} attention heads, got {}", p.heads, p.kv_heads);
        }
        Ok(p)
    }
}

/// `vocollama init`: a new model with random weights.
#[allow(clippy::too_many_arguments)]
pub fn init(
    out: &Path,
    name: &str,
    shape: Shape,
    tokenizer: &Path,
    voco_tokens: usize,
    pooling: ImagePooling,
    vision_tower: Option<&Path>,
    seed: u64,
) -> anyhow::Result<()> {
    let p = shape.apply(preset(name)?)?;
    let tokens = init_model(out, &p, tokenizer, voco_tokens, pooling, vision_tower, seed)?;
    eprintln!(
        "wrote {} ({name}: {} layers x {}, {} heads, {} key/value heads, {tokens} image tokens)",
        out.display(),
        p.layers,
        p.hidden,
        p.heads,
        p.kv_heads
    );
    Ok(())
}
