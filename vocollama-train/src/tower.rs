//! The vision tower trained on the synthetic scenes before the LLaVA stages,
//! as LLaVA starts from a pretrained CLIP; the LLaVA stages then freeze it.
//!
//! The objective is supervised: from each of the tower's selected patch
//! features (what the projector reads), small linear heads predict the
//! object of the patch's quadrant — colour, shape, size, or nothing there —
//! and the quadrant itself, so a feature says where it is as well as what.
//! The scenes' attributes are known exactly, so no text encoder, large
//! contrastive batches or caption matching are needed, and the heads ask of
//! the features what the questions later ask of them: which object, where.
//! The heads are dropped afterwards; only the tower is kept.

use std::path::Path;
use std::time::Instant;

use burn::module::Module;
use burn::optim::{AdamWConfig, GradientsParams, ModuleOptimizer};
use burn::tensor::activation::log_softmax;
use burn::tensor::{Device, Int, Tensor, TensorData};
use serde_json::json;
use vocollama_model::io::json::read_json;
use vocollama_model::model::linear::{Linear, linear, zeros};
use vocollama_model::model::random::randomize;
use vocollama_model::rng::SplitMix64;
use vocollama_model::{Error, LlavaModel, Result};

use crate::checkpoint::{TOKENIZER_FILES, copy_files, llava_tensors, tower_tensors, write_json, write_safetensors};
use crate::model_dir::{mark, write_model_dir};
use crate::synthetic::{Scene, TARGET_CLASSES};
use crate::trainer::learning_rate;

#[derive(Debug, Clone)]
pub struct TowerConfig {
    /// Training scenes (drawn from `seed`, a stream of their own).
    pub scenes: usize,
    /// Held-out scenes the accuracy is measured on.
    pub test_scenes: usize,
    pub epochs: usize,
    pub batch_size: usize,
    /// Peak learning rate (warm-up over 3 % of the steps, then cosine decay).
    pub lr: f64,
    pub seed: u64,
}

impl Default for TowerConfig {
    fn default() -> Self {
        // What the miniatures use: ~5 minutes on two CPU cores for the tiny tower.
        Self { scenes: 20_000, test_scenes: 1_000, epochs: 15, batch_size: 64, lr: 5e-3, seed: 0 }
    }
}

/// One linear head per attribute over a patch feature, and one for the patch's quadrant.
#[derive(Module, Debug)]
pub struct QuadrantHeads {
    pub colour: Linear,
    pub shape: Linear,
    pub size: Linear,
    pub quadrant: Linear,
}

/// What one optimizer step did.
#[derive(Debug, Clone, Copy)]
pub struct TowerStep {
    pub step: usize,
    pub total: usize,
    pub epoch: usize,
    pub loss: f64,
    pub lr: f64,
    pub scenes_per_second: f64,
}

/// Held-out accuracy per attribute over all quadrants (an empty quadrant
/// counts as right when every head says "nothing"), the share of scenes
/// read entirely right, and the share of patches that name their own quadrant.
#[derive(Debug, Clone, Copy, Default)]
pub struct TowerAccuracy {
    pub colour: f64,
    pub shape: f64,
    pub size: f64,
    pub scene: f64,
    pub position: f64,
}

/// Scene streams: training and held-out scenes never come from the stream of
/// `vocollama data shapes` with the same seed.
fn scenes(count: usize, size: u32, seed: u64, stream: u64) -> Vec<Scene> {
    let mut rng = SplitMix64::new(seed ^ stream.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    (0..count).map(|_| Scene::random(&mut rng, size)).collect()
}

/// The scenes rendered and preprocessed for `model`'s tower: `[B, 3, S, S]`.
fn pixels(model: &LlavaModel, scenes: &[&Scene]) -> Result<Tensor<4>> {
    let mut data = Vec::new();
    let mut side = 0;
    for s in scenes {
        let p = model.preprocess(&s.render())?;
        side = p.height;
        data.extend_from_slice(&p.data);
    }
    Ok(Tensor::from_data(TensorData::new(data, [scenes.len(), 3, side, side]), &model.device))
}

/// Each head's log-probabilities `[B, patches, classes]` (colour, shape, size,
/// quadrant): every patch names the object of its quadrant (so every patch's
/// feature carries it, where the LLaVA stages read it) and the quadrant, and
/// the side of the patch grid.
fn patch_log_probs(model: &LlavaModel, heads: &QuadrantHeads, pixels: Tensor<4>) -> Result<([Tensor<3>; 4], usize)> {
    let f = model.vision()?.tower.forward(pixels);
    let [_, p, _] = f.dims();
    let side = (p as f64).sqrt() as usize;
    if side * side != p || !side.is_multiple_of(2) {
        return Err(Error::Invalid(format!(
            "the tower's {p} patch features are not an even square grid: quadrants need one"
        )));
    }
    let heads = [&heads.colour, &heads.shape, &heads.size, &heads.quadrant];
    Ok((heads.map(|head| log_softmax(linear(head, f.clone()), 2)), side))
}

/// The quadrant (0 top left .. 3 bottom right) of each patch of a `side` x `side` grid, row by row.
fn patch_quadrants(side: usize) -> Vec<usize> {
    (0..side * side).map(|i| (i / side) / (side / 2) * 2 + (i % side) / (side / 2)).collect()
}

/// The targets of [`Scene::quadrant_targets`] for every patch, then the
/// patch's own quadrant, as `[B, patches, 1]` indices per head.
fn targets(scenes: &[&Scene], side: usize, device: &Device) -> [Tensor<3, Int>; 4] {
    let quadrant = patch_quadrants(side);
    // Each patch's four targets, every scene's quadrants read once.
    let rows: Vec<[usize; 4]> = scenes
        .iter()
        .flat_map(|s| {
            let q = s.quadrant_targets();
            quadrant.iter().map(move |&k| [q[k][0], q[k][1], q[k][2], k])
        })
        .collect();
    [0, 1, 2, 3].map(|head| {
        let t: Vec<i64> = rows.iter().map(|r| r[head] as i64).collect();
        Tensor::from_data(TensorData::new(t, [scenes.len(), side * side, 1]), device)
    })
}

/// Train `model`'s vision tower (on an autodiff device) on synthetic scenes;
/// `on_step` hears every step. Returns the held-out accuracy of the heads.
pub fn pretrain_tower(
    model: &mut LlavaModel,
    config: &TowerConfig,
    on_step: &mut dyn FnMut(&TowerStep),
) -> Result<TowerAccuracy> {
    if !model.device.is_autodiff() {
        return Err(Error::Invalid("training needs an autodiff device".into()));
    }
    if config.scenes == 0 || config.epochs == 0 || config.batch_size == 0 {
        return Err(Error::Invalid("--scenes, --epochs and --batch-size must be at least 1".into()));
    }
    let size = model.vision()?.tower.image_size() as u32;
    let d = model.config.mm.as_ref().map(|m| m.mm_hidden_size).unwrap_or(0);
    let device = model.device.clone();
    let [c, s, z] = TARGET_CLASSES;
    let mut heads = randomize(
        QuadrantHeads {
            colour: zeros(d, c, true, &device),
            shape: zeros(d, s, true, &device),
            size: zeros(d, z, true, &device),
            quadrant: zeros(d, 4, true, &device),
        },
        config.seed ^ 5,
        0.02,
    );
    let train = scenes(config.scenes, size, config.seed, 3);
    let per_epoch = train.len().div_ceil(config.batch_size);
    let total = per_epoch * config.epochs;
    let warmup = ((total as f64 * 0.03).ceil() as usize).min(total);
    let mut optimizer: ModuleOptimizer = AdamWConfig::new().init();
    let mut rng = SplitMix64::new(config.seed);
    let mut step = 0;
    for epoch in 0..config.epochs {
        let mut order: Vec<usize> = (0..train.len()).collect();
        rng.shuffle(&mut order);
        for chunk in order.chunks(config.batch_size) {
            let start = Instant::now();
            let batch: Vec<&Scene> = chunk.iter().map(|&i| &train[i]).collect();
            let (logp, side) = patch_log_probs(model, &heads, pixels(model, &batch)?)?;
            let tgt = targets(&batch, side, &device);
            let loss = logp
                .into_iter()
                .zip(tgt)
                .map(|(l, t)| l.gather(2, t).mean().neg())
                .reduce(|a, b| a + b)
                .expect("four heads");
            let value = f64::from(loss.clone().into_scalar::<f32>());
            if !value.is_finite() {
                return Err(Error::Invalid(format!("the loss is {value} at step {step}: lower --lr")));
            }
            let mut grads = loss.backward();
            let g_tower = GradientsParams::from_module(&mut grads, &model.vision()?.tower);
            let g_heads = GradientsParams::from_module(&mut grads, &heads);
            let lr = learning_rate(step, total, warmup, config.lr);
            let v = model.vision.as_mut().expect("checked above");
            v.tower = optimizer.step(lr, v.tower.clone(), g_tower);
            heads = optimizer.step(lr, heads, g_heads);
            step += 1;
            on_step(&TowerStep {
                step,
                total,
                epoch,
                loss: value,
                lr,
                scenes_per_second: batch.len() as f64 / start.elapsed().as_secs_f64(),
            });
        }
    }
    accuracy(model, &heads, &scenes(config.test_scenes, size, config.seed, 4), config.batch_size)
}

fn accuracy(model: &LlavaModel, heads: &QuadrantHeads, test: &[Scene], batch: usize) -> Result<TowerAccuracy> {
    let (mut right, mut whole, mut quadrants) = ([0usize; 3], 0usize, 0usize);
    let (mut placed, mut patches) = (0usize, 0usize);
    for chunk in test.chunks(batch.max(1)) {
        let scenes: Vec<&Scene> = chunk.iter().collect();
        let ([colour, shape, size, quadrant], side) = patch_log_probs(model, heads, pixels(model, &scenes)?)?;
        // Each patch's own quadrant, named by the patch alone.
        let named: Vec<i64> =
            quadrant.argmax(2).into_data().convert::<i64>().try_into_vec::<i64>().expect("i64 indices");
        let truth = patch_quadrants(side);
        placed += named.iter().enumerate().filter(|&(i, &q)| q == truth[i % truth.len()] as i64).count();
        patches += named.len();
        // A quadrant's answer: its patches' log-probabilities averaged.
        let h = side / 2;
        let guesses: Vec<Vec<i64>> = [colour, shape, size]
            .into_iter()
            .map(|l| {
                let [b, _, c] = l.dims();
                let q = l.reshape([b, 2, h, 2, h, c]).mean_dim(4).mean_dim(2).reshape([b, 4, c]);
                q.argmax(2).into_data().convert::<i64>().try_into_vec::<i64>().expect("i64 indices")
            })
            .collect();
        for (i, s) in scenes.iter().enumerate() {
            let mut all = true;
            for (q, t) in s.quadrant_targets().iter().enumerate() {
                for a in 0..3 {
                    let ok = guesses[a][i * 4 + q] == t[a] as i64;
                    right[a] += usize::from(ok);
                    all &= ok;
                }
                quadrants += 1;
            }
            whole += usize::from(all);
        }
    }
    let share = |n: usize, of: usize| if of == 0 { 0.0 } else { n as f64 / of as f64 };
    Ok(TowerAccuracy {
        colour: share(right[0], quadrants),
        shape: share(right[1], quadrants),
        size: share(right[2], quadrants),
        scene: share(whole, test.len()),
        position: share(placed, patches),
    })
}

/// Write `model`'s directory again at `out` with its trained tower in
/// `vision_tower/` (the layers up to the selected one, as `vocollama init`
/// writes them) and `vision_tower/pretraining.json` saying how it was trained.
pub fn save_with_tower(model: &LlavaModel, out: &Path, config: &TowerConfig, acc: &TowerAccuracy) -> Result<()> {
    let v = model.vision()?;
    let source = model.config.path.parent().unwrap_or(Path::new(".")).to_path_buf();
    let mut cfg = read_json(&model.config.path)?;
    mark(cfg.as_object_mut().ok_or_else(|| Error::config(&model.config.path, "not a JSON object"))?);
    let tensors = tower_tensors(&v.tower);
    let report = json!({
        "objective": "from every selected patch feature, the attributes (colour, shape, size or empty) of the object in its quadrant, and the quadrant",
        "scenes": config.scenes, "epochs": config.epochs, "batch_size": config.batch_size, "lr": config.lr,
        "seed": config.seed,
        "held_out": {"scenes": config.test_scenes, "colour": acc.colour, "shape": acc.shape, "size": acc.size, "scene": acc.scene, "position": acc.position},
    });
    write_model_dir(out, |dir| {
        write_json(&dir.join("config.json"), &cfg)?;
        write_safetensors(&dir.join("model.safetensors"), &llava_tensors(&model.llm, Some(&v.projector)))?;
        copy_files(&source, dir, Some(&TOKENIZER_FILES))?;
        let tdir = dir.join("vision_tower");
        copy_files(&v.tower_dir, &tdir, Some(&["config.json", "preprocessor_config.json"]))?;
        write_safetensors(&tdir.join("model.safetensors"), &tensors)?;
        write_json(&tdir.join("pretraining.json"), &report)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patches_know_their_quadrant() {
        // A 4 x 4 grid: rows 0-1 are the top, columns 0-1 the left.
        assert_eq!(patch_quadrants(4), vec![0, 0, 1, 1, 0, 0, 1, 1, 2, 2, 3, 3, 2, 2, 3, 3]);
        assert_eq!(patch_quadrants(8).iter().filter(|&&q| q == 3).count(), 16);
    }
}
