//! The training loop: AdamW with a warm-up + cosine schedule, global-norm
//! gradient clipping and gradient accumulation, on any autodiff device. The
//! vision tower is frozen (its features are computed once per picture);
//! LLaMA (embeddings with `<voco>`, layers, norm, `lm_head`) and the projector learn.

use std::collections::HashMap;
use std::path::Path;
use std::time::Instant;

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param, ParamId};
use burn::optim::{AdamWConfig, GradientsAccumulator, GradientsParams, ModuleOptimizer};
use burn::tensor::Tensor;
use vocollama_model::io::json::read_json;
use vocollama_model::model::llama::Llama;
use vocollama_model::model::projector::Projector;
use vocollama_model::rng::SplitMix64;
use vocollama_model::text::template::voco_id;
use vocollama_model::text::{Template, Tokenizer};
use vocollama_model::{Error, LlavaModel, Result};

use crate::batch::{
    Batch, Example, LossWeight, TrainLayout, batch_loss, encode_example, frozen_tower_features, record_pixels,
};
use crate::checkpoint::save_llava_with;
use crate::data::Record;

#[derive(Debug, Clone)]
pub struct TrainConfig {
    pub layout: TrainLayout,
    /// How answer tokens weigh in the loss.
    pub loss_weight: LossWeight,
    pub voco_tokens: usize,
    /// Peak learning rate.
    pub lr: f64,
    pub epochs: usize,
    /// Examples per forward.
    pub batch_size: usize,
    /// Forwards per optimizer step.
    pub grad_accum: usize,
    /// Fraction of the steps spent warming up linearly (the paper: 3 %).
    pub warmup: f64,
    pub weight_decay: f32,
    /// AdamW's ε, as transformers' Trainer (and so LLaVA and VoCo-LLaMA) sets it: 1e-8.
    /// Burn's default, 1e-5, damps the updates of weights whose gradients are
    /// small, and the small models trained here then often failed to learn to
    /// find the object a question names (`docs/results.md`).
    pub adam_epsilon: f32,
    /// Clip the global gradient norm to this (0 = off).
    pub max_grad_norm: f32,
    pub seed: u64,
    /// Keep the frozen tower's features of every picture for all epochs when
    /// they take at most this many bytes; compute them per batch otherwise.
    pub feature_cache_bytes: usize,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            layout: TrainLayout::Voco,
            loss_weight: LossWeight::Token,
            voco_tokens: 1,
            lr: 2e-5,
            epochs: 1,
            batch_size: 8,
            grad_accum: 1,
            warmup: 0.03,
            weight_decay: 0.0,
            adam_epsilon: 1e-8,
            max_grad_norm: 1.0,
            seed: 0,
            feature_cache_bytes: FEATURE_CACHE_BYTES,
        }
    }
}

/// Linear warm-up to `peak`, then cosine decay to 0 (transformers' `cosine` schedule).
pub fn learning_rate(step: usize, total: usize, warmup: usize, peak: f64) -> f64 {
    if step < warmup {
        return peak * (step + 1) as f64 / warmup as f64;
    }
    let progress = (step - warmup) as f64 / (total - warmup).max(1) as f64;
    peak * 0.5 * (1.0 + (std::f64::consts::PI * progress.min(1.0)).cos())
}

/// What one optimizer step did.
#[derive(Debug, Clone, Copy)]
pub struct StepReport {
    pub step: usize,
    pub total: usize,
    pub epoch: usize,
    pub loss: f64,
    pub lr: f64,
    pub grad_norm: f64,
    /// Labelled tokens per second over this step.
    pub tokens_per_second: f64,
    /// Sequence positions (prompt, image and answer tokens; padding not counted) per second over this step.
    pub positions_per_second: f64,
}

/// What a run has done so far: steps, seconds, labelled tokens and sequence
/// positions (written with each checkpoint as `throughput`).
#[derive(Debug, Clone, Copy, Default)]
pub struct Throughput {
    pub steps: usize,
    pub seconds: f64,
    pub tokens: usize,
    pub positions: usize,
}

impl Throughput {
    pub fn json(&self) -> serde_json::Value {
        let per = |n: f64| if self.seconds > 0.0 { n / self.seconds } else { 0.0 };
        serde_json::json!({
            "steps": self.steps, "seconds": self.seconds, "labelled_tokens": self.tokens, "positions": self.positions,
            "steps_per_second": per(self.steps as f64), "labelled_tokens_per_second": per(self.tokens as f64),
            "positions_per_second": per(self.positions as f64),
        })
    }
}

/// The trainable parts' gradients, clipped together.
struct Grads {
    llm: GradientsParams,
    projector: GradientsParams,
}

/// Sum of squares of every gradient a module has in `grads`.
struct SquaredNorm<'a> {
    grads: &'a GradientsParams,
    sum: f64,
}

impl ModuleVisitor for SquaredNorm<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if let Some(g) = self.grads.get::<D>(param.id) {
            self.sum += f64::from(g.powi_scalar(2).sum().into_scalar::<f32>());
        }
    }
}

/// Every gradient a module has in `grads`, multiplied by `scale`.
struct Scale<'a> {
    grads: &'a mut GradientsParams,
    scale: f32,
}

impl ModuleVisitor for Scale<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if let Some(g) = self.grads.remove::<D>(param.id) {
            self.grads.register(param.id, g * self.scale);
        }
    }
}

/// Every float parameter's id by its module path.
fn param_ids<M: Module>(module: &M) -> Vec<(String, u64)> {
    struct Ids {
        path: Vec<String>,
        out: Vec<(String, u64)>,
    }
    impl ModuleVisitor for Ids {
        fn enter_module(&mut self, name: &str, _: &str) {
            self.path.push(name.to_string());
        }
        fn exit_module(&mut self, _: &str, _: &str) {
            self.path.pop();
        }
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            self.out.push((self.path.join("."), param.id.val()));
        }
    }
    let mut v = Ids { path: vec![], out: vec![] };
    module.visit(&mut v);
    v.out
}

/// `module` with its parameters' ids set from `ids` (by module path), so the
/// optimizer state saved with a checkpoint finds them again.
fn with_param_ids<M: Module>(module: M, ids: &HashMap<String, u64>) -> M {
    struct SetIds<'a> {
        path: Vec<String>,
        ids: &'a HashMap<String, u64>,
    }
    impl ModuleMapper for SetIds<'_> {
        fn enter_module(&mut self, name: &str, _: &str) {
            self.path.push(name.to_string());
        }
        fn exit_module(&mut self, _: &str, _: &str) {
            self.path.pop();
        }
        fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
            let (id, value, mapper) = param.consume();
            let id = self.ids.get(&self.path.join(".")).map_or(id, |&v| ParamId::from(v));
            Param::from_mapped_value(id, value, mapper)
        }
    }
    module.map(&mut SetIds { path: vec![], ids })
}

/// Memory the frozen tower's features may take by default to be kept for
/// every epoch (the synthetic miniatures need ~100 MiB; LLaVA-665k at full
/// size would need terabytes, and gets them computed per batch instead).
pub const FEATURE_CACHE_BYTES: usize = 4 << 30;

/// The frozen tower's features of every record's image: computed once (per
/// picture, however many questions ask about it) and reused by every epoch
/// when they fit in [`TrainConfig::feature_cache_bytes`], else computed per batch.
struct TowerFeatures {
    /// `None`: computed per batch.
    cached: Option<Cached>,
}

struct Cached {
    /// `[pictures, patches, mm_hidden]`; `None` without pictures.
    all: Option<Tensor<3>>,
    /// Each record's row of `all`.
    row: Vec<Option<usize>>,
}

impl TowerFeatures {
    fn new(model: &LlavaModel, records: &[Record], root: &Path, budget: usize) -> Result<Self> {
        let mut index: HashMap<&Path, usize> = HashMap::new();
        let mut pictures: Vec<usize> = vec![];
        let row = records
            .iter()
            .enumerate()
            .map(|(i, r)| {
                r.image.as_deref().map(|p| {
                    *index.entry(p).or_insert_with(|| {
                        pictures.push(i);
                        pictures.len() - 1
                    })
                })
            })
            .collect();
        let mut parts: Vec<Tensor<3>> = vec![];
        for chunk in pictures.chunks(64) {
            let pixels: Vec<_> = chunk
                .iter()
                .map(|&i| record_pixels(model, &records[i], root).map(|p| p.expect("a record with an image")))
                .collect::<Result<_>>()?;
            let features = model.tower_features(&pixels)?.detach();
            let [_, p, d] = features.dims();
            if pictures.len().saturating_mul(p * d * 4) > budget {
                return Ok(Self { cached: None });
            }
            parts.push(features);
        }
        Ok(Self {
            cached: Some(Cached { all: if parts.is_empty() { None } else { Some(Tensor::cat(parts, 0)) }, row }),
        })
    }

    /// The features of the records `idx` (`None` for those without an image).
    fn batch(
        &self,
        model: &LlavaModel,
        records: &[Record],
        root: &Path,
        idx: &[usize],
    ) -> Result<Vec<Option<Tensor<3>>>> {
        match &self.cached {
            Some(Cached { all, row }) => Ok(idx
                .iter()
                .map(|&i| {
                    let (all, r) = (all.as_ref()?, row[i]?);
                    let [_, p, d] = all.dims();
                    Some(all.clone().slice([r..r + 1, 0..p, 0..d]))
                })
                .collect()),
            None => {
                let pixels: Vec<_> =
                    idx.iter().map(|&i| record_pixels(model, &records[i], root)).collect::<Result<_>>()?;
                frozen_tower_features(model, &pixels)
            }
        }
    }
}

fn adamw(c: &TrainConfig) -> ModuleOptimizer {
    AdamWConfig::new().with_epsilon(c.adam_epsilon).with_weight_decay(c.weight_decay).init()
}

const STATE_FILE: &str = "trainer_state.json";
const OPTIMIZER_FILE: &str = "optimizer.bpk";

pub struct Trainer {
    pub config: TrainConfig,
    optimizer: ModuleOptimizer,
    template: Template,
    voco_id: i64,
    /// Optimizer steps done.
    pub step: usize,
    /// Stop after this step (the schedule still spans every epoch), e.g. to checkpoint and resume.
    pub stop_at: Option<usize>,
    /// Write a resumable checkpoint every `every` steps as `dir/checkpoint-STEP`, with `updates` in its config.
    pub checkpoints: Option<Checkpoints>,
    /// This run's steps, time and tokens (not those of a run it resumed).
    pub throughput: Throughput,
}

#[derive(Debug, Clone)]
pub struct Checkpoints {
    pub dir: std::path::PathBuf,
    pub every: usize,
    pub updates: serde_json::Map<String, serde_json::Value>,
}

impl Trainer {
    pub fn new(config: TrainConfig, tokenizer: &Tokenizer) -> Result<Self> {
        if config.voco_tokens == 0 || config.batch_size == 0 || config.grad_accum == 0 || config.epochs == 0 {
            return Err(Error::Invalid(
                "--voco-tokens, --batch-size, --grad-accum and --epochs must be at least 1".into(),
            ));
        }
        if !(config.adam_epsilon.is_finite() && config.adam_epsilon > 0.0) {
            return Err(Error::Invalid(format!(
                "--adam-epsilon must be a positive number, not {}",
                config.adam_epsilon
            )));
        }
        let voco_id = voco_id(tokenizer)?;
        let optimizer = adamw(&config);
        let template = Template::VocoVicunaV1 { voco_tokens: config.voco_tokens };
        Ok(Self {
            config,
            optimizer,
            template,
            voco_id,
            step: 0,
            stop_at: None,
            checkpoints: None,
            throughput: Throughput::default(),
        })
    }

    /// Write `model` as a loadable model directory with what resuming needs:
    /// the optimizer state, the step and the parameters' ids.
    pub fn save_checkpoint(
        &self,
        model: &LlavaModel,
        out: &Path,
        updates: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<()> {
        let mut ids: serde_json::Map<String, serde_json::Value> = serde_json::Map::new();
        for (p, id) in param_ids(&model.llm) {
            ids.insert(format!("llm.{p}"), id.to_string().into());
        }
        if let Some(v) = &model.vision {
            for (p, id) in param_ids(&v.projector) {
                ids.insert(format!("projector.{p}"), id.to_string().into());
            }
        }
        let state = serde_json::json!({"step": self.step, "param_ids": ids, "layout": self.config.layout.name(),
            "loss_weight": self.config.loss_weight.name(), "voco_tokens": self.config.voco_tokens,
            "seed": self.config.seed, "throughput": self.throughput.json()});
        save_llava_with(model, out, updates, &|dir| {
            let path = dir.join(STATE_FILE);
            std::fs::write(&path, serde_json::to_string_pretty(&state).expect("json"))
                .map_err(|e| Error::io(&path, e))?;
            let path = dir.join(OPTIMIZER_FILE);
            self.optimizer.save(&path).map_err(|e| Error::Invalid(format!("{}: {e:?}", path.display())))
        })
    }

    /// Continue from a checkpoint `dir` written by [`Trainer::save_checkpoint`]
    /// (`model` loaded from it): the step, the optimizer state, the parameter ids.
    pub fn resume(&mut self, model: &mut LlavaModel, dir: &Path) -> Result<()> {
        let path = dir.join(STATE_FILE);
        let state = read_json(&path)?;
        let field = |k: &str| state.get(k).ok_or_else(|| Error::Invalid(format!("{}: no `{k}`", path.display())));
        let step = field("step")?
            .as_u64()
            .ok_or_else(|| Error::Invalid(format!("{}: `step` is not a number", path.display())))?;
        // Each setting the checkpoint must share with this run, and its value where the state lacks
        // it (checkpoints from before `loss_weight` weighed every token alike).
        for (k, want, missing) in [
            ("layout", self.config.layout.name().to_string(), None),
            ("voco_tokens", self.config.voco_tokens.to_string(), None),
            ("loss_weight", self.config.loss_weight.name().to_string(), Some(LossWeight::Token.name())),
        ] {
            let got = match (state.get(k), missing) {
                (Some(v), _) => v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string()),
                (None, Some(m)) => m.to_string(),
                (None, None) => field(k)?.to_string(),
            };
            if got != want {
                return Err(Error::Invalid(format!(
                    "{}: the checkpoint was trained with {k} {got}, this run asks for {want}",
                    path.display()
                )));
            }
        }
        let ids = field("param_ids")?
            .as_object()
            .ok_or_else(|| Error::Invalid(format!("{}: `param_ids` is not an object", path.display())))?;
        let pick = |prefix: &str| -> HashMap<String, u64> {
            ids.iter()
                .filter_map(|(k, v)| Some((k.strip_prefix(prefix)?.to_string(), v.as_str()?.parse().ok()?)))
                .collect()
        };
        model.llm = with_param_ids(model.llm.clone(), &pick("llm."));
        if let Some(v) = model.vision.as_mut() {
            v.projector = with_param_ids(v.projector.clone(), &pick("projector."));
        }
        let path = dir.join(OPTIMIZER_FILE);
        let fresh = adamw(&self.config);
        let optimizer = std::mem::replace(&mut self.optimizer, fresh);
        self.optimizer = optimizer.load(&path).map_err(|e| Error::Invalid(format!("{}: {e:?}", path.display())))?;
        self.step = step as usize;
        Ok(())
    }

    /// Token ids and labels of every record.
    pub fn encode(&self, records: &[Record], tokenizer: &Tokenizer, image_tokens: usize) -> Result<Vec<Example>> {
        records.iter().map(|r| encode_example(r, self.template, tokenizer, image_tokens)).collect()
    }

    /// Optimizer steps for `n` examples over all epochs.
    pub fn total_steps(&self, n: usize) -> usize {
        let per_epoch = n.div_ceil(self.config.batch_size).div_ceil(self.config.grad_accum);
        per_epoch * self.config.epochs
    }

    /// Train `model` (on an autodiff device) on `records`, images resolved
    /// against `root`; `on_step` hears every optimizer step. Starts from `self.step`
    /// (a resumed run skips the steps already done, in the same shuffled order).
    pub fn train(
        &mut self,
        model: &mut LlavaModel,
        tokenizer: &Tokenizer,
        records: &[Record],
        root: &Path,
        on_step: &mut dyn FnMut(&StepReport, &mut LlavaModel) -> Result<()>,
    ) -> Result<()> {
        if !model.device.is_autodiff() {
            return Err(Error::Invalid("training needs an autodiff device".into()));
        }
        if let Some(v) = model.vision.as_mut() {
            v.tower = v.tower.clone().no_grad();
        }
        let examples = self.encode(records, tokenizer, model.image_tokens())?;
        let c = self.config.clone();
        let features = TowerFeatures::new(model, records, root, c.feature_cache_bytes)?;
        let total = self.total_steps(examples.len());
        let warmup = ((total as f64 * c.warmup).ceil() as usize).min(total);
        let mut rng = SplitMix64::new(c.seed);
        let mut step = 0;
        for epoch in 0..c.epochs {
            let mut order: Vec<usize> = (0..examples.len()).collect();
            rng.shuffle(&mut order);
            let micro: Vec<&[usize]> = order.chunks(c.batch_size).collect();
            for group in micro.chunks(c.grad_accum) {
                if step < self.step {
                    step += 1;
                    continue;
                }
                if self.stop_at.is_some_and(|s| step >= s) {
                    return Ok(());
                }
                let start = Instant::now();
                let mut acc_llm = GradientsAccumulator::<Llama>::new();
                let mut acc_proj = GradientsAccumulator::<Projector>::new();
                let (mut loss_sum, mut tokens) = (0f64, 0usize);
                let positions: usize = group.iter().flat_map(|idx| idx.iter()).map(|&i| examples[i].labels.len()).sum();
                for idx in group {
                    let batch = Batch {
                        examples: idx.iter().map(|&i| &examples[i]).collect(),
                        features: features.batch(model, records, root, idx)?,
                    };
                    let (loss, count) = batch_loss(model, &batch, c.layout, c.loss_weight, self.voco_id)?;
                    // Each forward's mean loss weighted by its share of the step's forwards.
                    let loss = loss / group.len() as f32;
                    loss_sum += f64::from(loss.clone().into_scalar::<f32>());
                    tokens += count;
                    let mut grads = loss.backward();
                    acc_llm.accumulate(&model.llm, GradientsParams::from_module(&mut grads, &model.llm));
                    if let Some(v) = &model.vision {
                        acc_proj.accumulate(&v.projector, GradientsParams::from_module(&mut grads, &v.projector));
                    }
                }
                let mut g = Grads { llm: acc_llm.grads(), projector: acc_proj.grads() };
                let grad_norm = self.clip(model, &mut g);
                if !loss_sum.is_finite() {
                    return Err(Error::Invalid(format!("the loss is {loss_sum} at step {step}: lower --lr")));
                }
                let lr = learning_rate(step, total, warmup, c.lr);
                model.llm = self.optimizer.step(lr, model.llm.clone(), g.llm);
                if let Some(v) = model.vision.as_mut() {
                    v.projector = self.optimizer.step(lr, v.projector.clone(), g.projector);
                }
                step += 1;
                self.step = step;
                let seconds = start.elapsed().as_secs_f64();
                let report = StepReport {
                    step,
                    total,
                    epoch,
                    loss: loss_sum,
                    lr,
                    grad_norm,
                    tokens_per_second: tokens as f64 / seconds,
                    positions_per_second: positions as f64 / seconds,
                };
                let t = &mut self.throughput;
                (t.steps, t.seconds, t.tokens, t.positions) =
                    (t.steps + 1, t.seconds + seconds, t.tokens + tokens, t.positions + positions);
                on_step(&report, model)?;
                if let Some(c) =
                    self.checkpoints.as_ref().filter(|c| c.every > 0 && step % c.every == 0 && step < total)
                {
                    self.save_checkpoint(model, &c.dir.join(format!("checkpoint-{step}")), &c.updates)?;
                }
            }
        }
        Ok(())
    }

    /// Scale all gradients so their global norm is at most `max_grad_norm`; the norm before.
    fn clip(&self, model: &LlavaModel, g: &mut Grads) -> f64 {
        let mut n = SquaredNorm { grads: &g.llm, sum: 0.0 };
        model.llm.visit(&mut n);
        let mut sum = n.sum;
        if let Some(v) = &model.vision {
            let mut n = SquaredNorm { grads: &g.projector, sum: 0.0 };
            v.projector.visit(&mut n);
            sum += n.sum;
        }
        let norm = sum.sqrt();
        let max = self.config.max_grad_norm as f64;
        if max > 0.0 && norm > max {
            let scale = (max / (norm + 1e-6)) as f32;
            model.llm.visit(&mut Scale { grads: &mut g.llm, scale });
            if let Some(v) = &model.vision {
                v.projector.visit(&mut Scale { grads: &mut g.projector, scale });
            }
        }
        norm
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warm_up_then_cosine() {
        let lr = |s| learning_rate(s, 100, 10, 1.0);
        assert!((lr(0) - 0.1).abs() < 1e-12 && (lr(9) - 1.0).abs() < 1e-12);
        assert!((lr(10) - 1.0).abs() < 1e-12);
        assert!((lr(55) - 0.5).abs() < 1e-9);
        assert!(lr(99) < 0.01 && lr(99) > 0.0);
    }

    /// The first AdamW step moves a weight by lr · g / (|g| + ε): with gradients
    /// of 1e-7, ε = 1e-8 (transformers') moves it by 0.91 · lr, Burn's 1e-5 by 0.01 · lr.
    #[test]
    fn adamw_uses_transformers_epsilon() {
        use burn::nn::LinearConfig;
        use burn::tensor::Device;
        let device = Device::autodiff(Device::flex());
        let linear = LinearConfig::new(4, 1).with_bias(false).init(&device);
        let before = linear.weight.val().into_data().try_into_vec::<f32>().unwrap();
        let loss = linear.forward(Tensor::<2>::ones([1, 4], &device)).sum() * 1e-7;
        let grads = GradientsParams::from_grads(loss.backward(), &linear);
        let lr = 1e-3;
        let after = adamw(&TrainConfig::default()).step(lr, linear, grads);
        let after = after.weight.val().into_data().try_into_vec::<f32>().unwrap();
        let want = lr as f32 * 1e-7 / (1e-7 + 1e-8);
        for (b, a) in before.iter().zip(&after) {
            assert!(((b - a) - want).abs() < 1e-3 * want, "moved {} instead of {want}", b - a);
        }
    }
}
