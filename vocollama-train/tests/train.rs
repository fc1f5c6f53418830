//! Training on Burn's autodiff: the loss falls on synthetic shapes, and
//! gradients reach the `<voco>` embedding through the VoCo layout.

mod common;

use burn::tensor::Device;
use common::*;
use vocollama_model::model::llava::expand_ids;
use vocollama_model::model::random::preset;
use vocollama_model::{AttentionLayout, LlavaModel, LoadOptions, Tokenizer};
use vocollama_train::batch::{Batch, LossWeight, TrainLayout, batch_loss, encode_example, record_pixels};
use vocollama_train::data::load_records;
use vocollama_train::init::init_model;
use vocollama_train::synthetic::{Answers, TurnOrder, write_dataset};
use vocollama_train::tower::{TowerConfig, pretrain_tower, save_with_tower};
use vocollama_train::trainer::{TrainConfig, Trainer};

const VOCO: i64 = 511;

fn setup(device: &Device) -> (LlavaModel, Tokenizer) {
    let dir = fixture("llava-gqa-bf16");
    let model = LlavaModel::load(&dir, &LoadOptions::f32(), device).unwrap();
    let tok = Tokenizer::for_model(&dir, model.config.layout).unwrap();
    (model, tok)
}

#[test]
fn gradients_reach_the_voco_embedding_on_every_backend() {
    let data = tempfile::tempdir().unwrap();
    write_dataset(data.path(), 4, 0, 48, 1, &[], 1, Answers::Plain, TurnOrder::Shuffled).unwrap();
    let records = load_records(&data.path().join("train.json")).unwrap();
    let mut losses = vec![];
    for (name, inner) in devices() {
        let device = Device::autodiff(inner);
        let l = gradients_on(&device, &records, data.path());
        eprintln!("[{name}] losses (voco, causal): {l:?}");
        losses.push(l);
    }
    // Every backend computes the same loss.
    for l in &losses[1..] {
        for (a, b) in l.iter().zip(&losses[0]) {
            assert!((a - b).abs() <= 1e-3 * b.abs(), "{l:?} vs {:?}", losses[0]);
        }
    }
}

/// One left-padded batch of two examples through the training loss, and the gradients of the
/// language model's and the projector's weights, against transformers'
/// (`tools/make_fixtures.py train`) on every backend.
#[test]
fn a_batch_loss_and_its_gradients_equal_transformers() {
    use burn::store::{ModuleStore, SafetensorsStore, bridge};
    use burn::tensor::{Tensor, TensorData};
    use vocollama_model::Pixels;
    use vocollama_train::batch::Example;

    let mut store = SafetensorsStore::from_file(fixture("llava-gqa-bf16").join("train-reference.safetensors"));
    let r = store.get_all_tensors().unwrap();
    let data = |k: &str| bridge::to_data(&r[k]).unwrap_or_else(|e| panic!("{k}: {e:?}"));
    let ints = |k: &str| data(k).convert::<i64>().try_into_vec::<i64>().unwrap();
    let floats = |d: TensorData| d.convert::<f32>().try_into_vec::<f32>().unwrap();
    let examples: Vec<Example> =
        (0..2).map(|i| Example { ids: ints(&format!("ids_{i}")), labels: ints(&format!("labels_{i}")) }).collect();
    let pixel_values = data("pixel_values");
    let side = pixel_values.shape()[3];
    let px = floats(pixel_values);
    let pixels: Vec<Option<Pixels>> =
        px.chunks(3 * side * side).map(|c| Some(Pixels { data: c.to_vec(), height: side, width: side })).collect();
    for (name, inner) in devices() {
        let tol = if name == "flex" { 1e-4 } else { 1e-3 };
        let (model, _) = setup(&Device::autodiff(inner));
        let batch = Batch::from_pixels(&model, examples.iter().collect(), &pixels).unwrap();
        let (loss, count) = batch_loss(&model, &batch, TrainLayout::Causal, LossWeight::Token, VOCO).unwrap();
        assert_eq!(count, 10, "[{name}] the two answers' tokens");
        let (got, want) = (loss.clone().into_scalar::<f32>(), floats(data("loss"))[0]);
        eprintln!("[{name}] loss {got} (transformers {want})");
        assert!((got - want).abs() <= tol * want.abs(), "[{name}] loss {got} against {want}");
        let grads = loss.backward();
        let check = |what: &str, g: Option<Vec<f32>>| {
            let g = g.unwrap_or_else(|| panic!("[{name}] {what}: no gradient"));
            let w = floats(data(&format!("grad.{what}")));
            let scale = w.iter().fold(0f32, |m, x| m.max(x.abs()));
            let diff = g.iter().zip(&w).fold(0f32, |m, (a, b)| m.max((a - b).abs()));
            assert_eq!(g.len(), w.len(), "[{name}] {what}: size");
            assert!(scale > 0.0, "[{name}] {what}: a zero reference could not fail");
            eprintln!("[{name}] {what}: max|Δ|/max|ref| = {:.3e}", diff / scale);
            assert!(diff <= tol * scale, "[{name}] {what}: max|Δ|/max|ref| = {:e}", diff / scale);
        };
        // Burn holds a Linear weight as `[in, out]`, PyTorch as `[out, in]`.
        let linear = |t: Tensor<2>| t.grad(&grads).map(|g| floats(g.transpose().into_data()));
        let plain2 = |t: Tensor<2>| t.grad(&grads).map(|g| floats(g.into_data()));
        let plain1 = |t: Tensor<1>| t.grad(&grads).map(|g| floats(g.into_data()));
        let l = &model.llm;
        check("lm_head.weight", linear(l.lm_head.as_ref().unwrap().weight.val()));
        check("model.embed_tokens.weight", plain2(l.embed_tokens.weight.val()));
        check("model.layers.0.self_attn.q_proj.weight", linear(l.layers[0].self_attn.q_proj.weight.val()));
        check("model.layers.0.self_attn.k_proj.weight", linear(l.layers[0].self_attn.k_proj.weight.val()));
        check("model.layers.1.mlp.down_proj.weight", linear(l.layers[1].mlp.down_proj.weight.val()));
        check("model.norm.weight", plain1(l.norm.gamma.val()));
        let p = &model.vision.as_ref().unwrap().projector;
        check("model.mm_projector.0.weight", linear(p.layers[0].weight.val()));
        check("model.mm_projector.2.bias", plain1(p.layers[1].bias.as_ref().unwrap().val()));
    }
}

/// The loss of one batch per layout, after checking its gradients.
fn gradients_on(device: &Device, records: &[vocollama_train::data::Record], root: &std::path::Path) -> Vec<f32> {
    let (model, tok) = setup(device);
    let template = vocollama_model::text::Template::VocoVicunaV1 { voco_tokens: 2 };
    let examples: Vec<_> =
        records.iter().map(|r| encode_example(r, template, &tok, model.image_tokens()).unwrap()).collect();
    // Only the answer and its </s> are labelled.
    let e = &examples[0];
    let labelled: Vec<i64> = e.labels.iter().copied().filter(|&l| l >= 0).collect();
    assert_eq!(tok.decode(&labelled.iter().map(|&t| t as u32).collect::<Vec<_>>()).trim(), records[0].turns[0].1);
    assert_eq!(*labelled.last().unwrap(), 2, "the answer's </s> is learned");
    let pixels: Vec<_> = records.iter().map(|r| record_pixels(&model, r, root).unwrap()).collect();
    let batch = Batch::from_pixels(&model, examples.iter().collect(), &pixels).unwrap();
    let mut losses = vec![];
    for layout in [TrainLayout::Voco, TrainLayout::Causal] {
        let (loss, count) = batch_loss(&model, &batch, layout, LossWeight::Token, VOCO).unwrap();
        losses.push(loss.clone().into_scalar::<f32>());
        assert!(count >= 8, "{count} labelled tokens");
        let grads = loss.backward();
        let g = model.llm.embed_tokens.weight.val().grad(&grads).expect("embedding gradient");
        let [v, d] = g.dims();
        let rows = |r: usize| g.clone().slice([r..r + 1, 0..d]).abs().sum().into_scalar::<f32>();
        assert_eq!(v, 512);
        assert!(rows(VOCO as usize) > 0.0, "{layout:?}: no gradient on <voco>");
        // A token the batch never uses gets none.
        assert_eq!(rows(300), 0.0);
    }
    losses
}

/// Weighed per answer, a batch's loss is the mean over its answers of each answer's token-mean
/// loss: each answer's computed alone (a copy of its example labelled only there) and averaged.
#[test]
fn a_loss_per_answer_is_the_mean_of_the_answers_losses() {
    let data = tempfile::tempdir().unwrap();
    // Three questions per picture: conversations of three answers, a caption among them.
    write_dataset(data.path(), 6, 0, 48, 3, &[], 3, Answers::Plain, TurnOrder::Shuffled).unwrap();
    let records = load_records(&data.path().join("train.json")).unwrap();
    let device = Device::autodiff(Device::flex());
    let (model, tok) = setup(&device);
    let template = vocollama_model::text::Template::VocoVicunaV1 { voco_tokens: 1 };
    let examples: Vec<_> =
        records.iter().map(|r| encode_example(r, template, &tok, model.image_tokens()).unwrap()).collect();
    let pixels: Vec<_> = records.iter().map(|r| record_pixels(&model, r, data.path()).unwrap()).collect();
    let loss = |examples: Vec<&vocollama_train::batch::Example>, px: &[Option<vocollama_model::Pixels>], w| {
        let batch = Batch::from_pixels(&model, examples, px).unwrap();
        batch_loss(&model, &batch, TrainLayout::Voco, w, VOCO).unwrap().0.into_scalar::<f32>()
    };
    let mut answers = vec![];
    let mut lengths = vec![];
    for (e, px) in examples.iter().zip(&pixels) {
        let mut k = 0;
        while k < e.labels.len() {
            if e.labels[k] < 0 {
                k += 1;
                continue;
            }
            let end = (k..e.labels.len()).find(|&j| e.labels[j] < 0).unwrap_or(e.labels.len());
            let mut alone = e.clone();
            alone.labels.iter_mut().enumerate().filter(|(j, _)| !(k..end).contains(j)).for_each(|(_, l)| *l = -100);
            answers.push(loss(vec![&alone], std::slice::from_ref(px), LossWeight::Token));
            lengths.push(end - k);
            k = end;
        }
    }
    assert_eq!(answers.len(), 6, "three answers in each of two conversations");
    assert!(lengths.iter().max() > lengths.iter().min(), "answers of one length could not tell the weightings apart");
    let want = answers.iter().sum::<f32>() / answers.len() as f32;
    let got = loss(examples.iter().collect(), &pixels, LossWeight::Answer);
    let per_token = loss(examples.iter().collect(), &pixels, LossWeight::Token);
    eprintln!("per answer {got} (answers alone {want}), per token {per_token}");
    assert!((got - want).abs() <= 1e-4 * want.abs(), "{got} against {want}");
    assert!((per_token - want).abs() > 1e-3 * want.abs(), "the weightings agree: the test could not fail");
}

#[test]
fn the_loss_falls() {
    let data = tempfile::tempdir().unwrap();
    write_dataset(data.path(), 32, 0, 48, 2, &[], 1, Answers::Plain, TurnOrder::Shuffled).unwrap();
    let records = load_records(&data.path().join("train.json")).unwrap();
    let device = Device::autodiff(Device::flex());
    let (mut model, tok) = setup(&device);
    let config =
        TrainConfig { lr: 3e-3, epochs: 6, batch_size: 8, grad_accum: 2, voco_tokens: 2, ..Default::default() };
    let mut trainer = Trainer::new(config, &tok).unwrap();
    let mut losses = vec![];
    trainer
        .train(&mut model, &tok, &records, data.path(), &mut |r, _| {
            assert!(r.grad_norm.is_finite() && r.lr > 0.0);
            losses.push(r.loss);
            Ok(())
        })
        .unwrap();
    assert_eq!(losses.len(), 12);
    // Features computed per batch (a data set whose features would not fit) train alike.
    let (mut model, tok) = setup(&device);
    let config = TrainConfig { feature_cache_bytes: 0, ..trainer.config.clone() };
    let mut per_batch = vec![];
    Trainer::new(config, &tok)
        .unwrap()
        .train(&mut model, &tok, &records, data.path(), &mut |r, _| {
            per_batch.push(r.loss);
            Ok(())
        })
        .unwrap();
    for (a, b) in losses.iter().zip(&per_batch) {
        assert!((a - b).abs() <= 1e-4 * a.abs(), "{losses:?} vs {per_batch:?}");
    }
    let first = losses[..3].iter().sum::<f64>() / 3.0;
    let last = losses[losses.len() - 3..].iter().sum::<f64>() / 3.0;
    eprintln!("loss {first:.3} -> {last:.3}: {losses:?}");
    assert!(last < 0.6 * first, "loss {first} -> {last}");
}

#[test]
fn a_saved_model_loads_back_with_the_same_outputs() {
    use vocollama_train::checkpoint::save_llava;
    let device = Device::flex();
    let (model, _) = setup(&device);
    let out = tempfile::tempdir().unwrap();
    let dir = out.path().join("saved");
    let mut updates = serde_json::Map::new();
    updates.insert("voco_num".into(), 1.into());
    save_llava(&model, &dir, &updates).unwrap();
    let back = LlavaModel::load(&dir, &LoadOptions::f32(), &device).unwrap();
    assert_eq!(back.config.voco_num, Some(1));
    assert!(dir.join("vision_tower/config.json").is_file() && dir.join("tokenizer.model").is_file());
    let pixels = model.load_image(&assets().join("images/wide.png")).unwrap();
    let ids = vec![1i64, -200, 453, 13, VOCO, VOCO, 100, 200];
    let logits = |m: &LlavaModel| {
        let img = m.encode_image(&pixels).unwrap();
        let layout = AttentionLayout::for_sequence(&expand_ids(&ids, m.image_tokens()), VOCO);
        let h = m.forward(&ids, &[img], 0, &layout, &mut m.llm.new_cache()).unwrap();
        m.llm.logits(h).into_data().try_into_vec::<f32>().unwrap()
    };
    assert_eq!(logits(&model), logits(&back), "f32 weights round trip exactly");
    // Saving again replaces the directory whole.
    save_llava(&back, &dir, &serde_json::Map::new()).unwrap();
    assert!(LlavaModel::load(&dir, &LoadOptions::f32(), &device).is_ok());
}

#[test]
fn a_new_model_loads_and_its_weights_are_random() {
    use vocollama_model::checkpoint::config::ImagePooling::{Avg, None as Patches};
    let out = tempfile::tempdir().unwrap();
    let dir = out.path().join("tiny");
    init_model(&dir, &preset("tiny").unwrap(), &fixture("tokenizer"), 1, Patches, None, 5).unwrap();
    let m = LlavaModel::load(&dir, &LoadOptions::f32(), &Device::flex()).unwrap();
    assert_eq!((m.image_tokens(), m.config.llm.hidden_size, m.config.voco_num), (64, 128, Some(1)));
    let w = m.llm.embed_tokens.weight.val().into_data().try_into_vec::<f32>().unwrap();
    let mean = w.iter().sum::<f32>() / w.len() as f32;
    let std = (w.iter().map(|x| (x - mean).powi(2)).sum::<f32>() / w.len() as f32).sqrt();
    assert!(mean.abs() < 2e-3 && (std - 0.02).abs() < 2e-3, "mean {mean}, std {std}");
    // The projector as `nn.Linear` initialises it: U(−1/√fan_in, 1/√fan_in), biases too.
    let proj = &m.vision.as_ref().unwrap().projector.layers;
    for (layer, fan_in) in proj.iter().zip([64usize, 128]) {
        let bound = 1.0 / (fan_in as f32).sqrt();
        for t in [layer.weight.val().flatten::<1>(0, 1), layer.bias.as_ref().unwrap().val()] {
            let v = t.into_data().try_into_vec::<f32>().unwrap();
            let max = v.iter().fold(0f32, |m, x| m.max(x.abs()));
            let std = (v.iter().map(|x| x * x).sum::<f32>() / v.len() as f32).sqrt();
            assert!(max <= bound && max > 0.9 * bound, "max |w| {max}, bound {bound}");
            assert!((std - bound / 3f32.sqrt()).abs() < 0.1 * bound, "std {std}, bound {bound}");
        }
    }
    // The same seed gives the same model; another seed another.
    let again = out.path().join("again");
    init_model(&again, &preset("tiny").unwrap(), &fixture("tokenizer"), 1, Patches, None, 5).unwrap();
    assert_eq!(
        std::fs::read(dir.join("model.safetensors")).unwrap(),
        std::fs::read(again.join("model.safetensors")).unwrap()
    );
    assert!(
        init_model(&again, &preset("tiny").unwrap(), &fixture("llava-hf"), 1, Patches, None, 5).is_err(),
        "a tokenizer without <voco>"
    );
    assert!(preset("huge").unwrap_err().to_string().contains("tiny"));
    // The average-pooling baseline: one image token through a linear projector.
    let pooled = out.path().join("pooled");
    init_model(&pooled, &preset("tiny").unwrap(), &fixture("tokenizer"), 1, Avg, None, 5).unwrap();
    let m = LlavaModel::load(&pooled, &LoadOptions::f32(), &Device::flex()).unwrap();
    assert_eq!(m.image_tokens(), 1);
    let img = m.encode_image(&m.load_image(&assets().join("images/wide.png")).unwrap()).unwrap();
    assert_eq!(img.dims(), [1, 1, 128]);
}

#[test]
fn a_resumed_run_continues_exactly() {
    let data = tempfile::tempdir().unwrap();
    write_dataset(data.path(), 24, 0, 48, 4, &[], 1, Answers::Plain, TurnOrder::Shuffled).unwrap();
    let records = load_records(&data.path().join("train.json")).unwrap();
    let device = Device::autodiff(Device::flex());
    let config = TrainConfig { lr: 2e-3, epochs: 2, batch_size: 6, voco_tokens: 2, seed: 9, ..Default::default() };
    let run = |trainer: &mut Trainer, model: &mut LlavaModel, tok: &Tokenizer| {
        let mut losses = vec![];
        trainer
            .train(model, tok, &records, data.path(), &mut |r, _| {
                let _: () = losses.push((r.step, r.loss));
                Ok(())
            })
            .unwrap();
        losses
    };
    let (mut model, tok) = setup(&device);
    let straight = run(&mut Trainer::new(config.clone(), &tok).unwrap(), &mut model, &tok);
    assert_eq!(straight.len(), 8);

    let (mut model, tok) = setup(&device);
    let mut first = Trainer::new(config.clone(), &tok).unwrap();
    first.stop_at = Some(3);
    let head = run(&mut first, &mut model, &tok);
    let ckpt = data.path().join("checkpoint-3");
    first.save_checkpoint(&model, &ckpt, &serde_json::Map::new()).unwrap();
    let mut model = LlavaModel::load(&ckpt, &LoadOptions::f32(), &device).unwrap();
    let mut second = Trainer::new(config.clone(), &tok).unwrap();
    second.resume(&mut model, &ckpt).unwrap();
    let tail = run(&mut second, &mut model, &tok);
    let resumed: Vec<(usize, f64)> = head.into_iter().chain(tail).collect();
    assert_eq!(resumed.iter().map(|r| r.0).collect::<Vec<_>>(), (1..=8).collect::<Vec<_>>());
    for ((s, a), (_, b)) in straight.iter().zip(&resumed) {
        assert!((a - b).abs() <= 1e-4 * a.abs(), "step {s}: {a} straight, {b} resumed");
    }
    // A checkpoint of another layout is refused.
    let other = TrainConfig { layout: TrainLayout::Causal, ..config.clone() };
    let err = Trainer::new(other, &tok).unwrap().resume(&mut model, &ckpt).unwrap_err().to_string();
    assert!(err.contains("layout"), "{err}");
    // So is one whose answers weighed otherwise.
    let other = TrainConfig { loss_weight: LossWeight::Answer, ..config };
    let err = Trainer::new(other, &tok).unwrap().resume(&mut model, &ckpt).unwrap_err().to_string();
    assert!(err.contains("loss_weight token") && err.contains("asks for answer"), "{err}");
}

/// The paper's comparison in miniature, small enough for CI: a tiny model
/// learns to read colours causally (as LLaVA's pretraining gives VoCo-LLaMA a
/// model that reads images), then one copy is tuned with the VoCo layout.
/// Through one VoCo token it must beat the lower bound — the causal model
/// under the same restriction — on held-out scenes.
#[test]
fn voco_beats_the_lower_bound_on_held_out_data() {
    use vocollama_model::checkpoint::config::ImagePooling;
    use vocollama_train::eval::{EvalMode, evaluate};
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("data");
    write_dataset(&data, 800, 100, 64, 2, &["colour"], 1, Answers::Plain, TurnOrder::Shuffled).unwrap();
    let train = load_records(&data.join("train.json")).unwrap();
    let test = load_records(&data.join("test.json")).unwrap();
    let random = work.path().join("init");
    init_model(&random, &preset("tiny").unwrap(), &fixture("tokenizer"), 1, ImagePooling::None, None, 1).unwrap();
    let device = Device::autodiff(Device::flex());
    // The tower first learns to see the scenes (as LLaVA starts from a pretrained CLIP), then stays frozen.
    let start = work.path().join("tower");
    let mut model = LlavaModel::load(&random, &LoadOptions::f32(), &device).unwrap();
    let config = TowerConfig { scenes: 4000, test_scenes: 200, epochs: 6, batch_size: 32, lr: 5e-3, seed: 1 };
    let seen = pretrain_tower(&mut model, &config, &mut |_| {}).unwrap();
    save_with_tower(&model, &start, &config, &seen).unwrap();
    assert!(seen.colour > 0.9, "{seen:?}");
    let tuned = |from: &std::path::Path, layout: TrainLayout, out: &str| {
        let mut model = LlavaModel::load(from, &LoadOptions::f32(), &device).unwrap();
        let tok = Tokenizer::for_model(from, model.config.layout).unwrap();
        let config = TrainConfig { layout, lr: 2e-3, epochs: 3, batch_size: 16, voco_tokens: 1, ..Default::default() };
        let mut trainer = Trainer::new(config, &tok).unwrap();
        trainer.train(&mut model, &tok, &train, &data, &mut |_, _| Ok(())).unwrap();
        let dir = work.path().join(out);
        trainer.save_checkpoint(&model, &dir, &serde_json::Map::new()).unwrap();
        dir
    };
    let causal = tuned(&start, TrainLayout::Causal, "causal");
    let voco = tuned(&causal, TrainLayout::Voco, "voco");
    let accuracy = |dir: &std::path::Path, mode: EvalMode| {
        let m = LlavaModel::load(dir, &LoadOptions::f32(), &Device::flex()).unwrap();
        let tok = Tokenizer::for_model(dir, m.config.layout).unwrap();
        evaluate(&m, &tok, &test, &data, mode, 1, 8, &mut |_| {}).unwrap().accuracy()
    };
    let (upper, lower, voco) =
        (accuracy(&causal, EvalMode::None), accuracy(&causal, EvalMode::Lower), accuracy(&voco, EvalMode::Voco));
    eprintln!("colour accuracy: upper {upper:.2}, VoCo (N = 1) {voco:.2}, lower {lower:.2} (chance 0.25)");
    assert!(upper > 0.35, "the causal model did not learn to read colours: {upper}");
    assert!(voco >= lower + 0.15, "VoCo {voco} does not beat the lower bound {lower}");
}

/// The tower learns what each quadrant holds from synthetic scenes; the
/// model written with it keeps its LLaMA and projector and loads as any other.
#[test]
fn the_tower_learns_to_see_the_scenes() {
    use vocollama_model::checkpoint::config::ImagePooling;
    let work = tempfile::tempdir().unwrap();
    let random = work.path().join("init");
    init_model(&random, &preset("tiny").unwrap(), &fixture("tokenizer"), 1, ImagePooling::None, None, 3).unwrap();
    let device = Device::autodiff(Device::flex());
    let mut model = LlavaModel::load(&random, &LoadOptions::f32(), &device).unwrap();
    let mut losses = vec![];
    let config = TowerConfig { scenes: 4000, test_scenes: 200, epochs: 6, batch_size: 32, lr: 5e-3, seed: 4 };
    let acc = pretrain_tower(&mut model, &config, &mut |r| losses.push(r.loss)).unwrap();
    eprintln!("held out: {acc:?}; loss {:.3} -> {:.3}", losses[0], losses[losses.len() - 1]);
    assert_eq!(losses.len(), 6 * 4000 / 32);
    assert!(losses[losses.len() - 1] < 0.6 * losses[0], "{losses:?}");
    // Half the quadrants are empty: saying "nothing" everywhere scores about 50 %.
    assert!(acc.colour > 0.9 && acc.size > 0.85 && acc.shape > 0.6, "{acc:?}");
    // Every patch also says where it is (a quarter of them by chance).
    assert!(acc.position > 0.7, "{acc:?}");
    let out = work.path().join("seen");
    save_with_tower(&model, &out, &config, &acc).unwrap();
    let before = LlavaModel::load(&random, &LoadOptions::f32(), &Device::flex()).unwrap();
    let after = LlavaModel::load(&out, &LoadOptions::f32(), &Device::flex()).unwrap();
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("vision_tower/pretraining.json")).unwrap()).unwrap();
    assert_eq!(report["held_out"]["colour"].as_f64().unwrap(), acc.colour);
    assert_eq!(report["held_out"]["position"].as_f64().unwrap(), acc.position);
    let pixels = before.load_image(&assets().join("images/wide.png")).unwrap();
    let features = |m: &LlavaModel| m.tower_features(std::slice::from_ref(&pixels)).unwrap().into_data();
    assert_ne!(features(&before), features(&after), "the tower changed");
    let weights = |m: &LlavaModel| m.llm.embed_tokens.weight.val().into_data();
    assert_eq!(weights(&before), weights(&after), "LLaMA kept as it was");
    // A new model can take the trained tower (the average-pooling baseline does).
    let pooled = work.path().join("pooled");
    let tower = out.join("vision_tower");
    init_model(&pooled, &preset("tiny").unwrap(), &fixture("tokenizer"), 1, ImagePooling::Avg, Some(&tower), 3)
        .unwrap();
    let m = LlavaModel::load(&pooled, &LoadOptions::f32(), &Device::flex()).unwrap();
    assert_eq!(features(&m), features(&after));
    // Not a tower without an autodiff device.
    let mut plain = LlavaModel::load(&random, &LoadOptions::f32(), &Device::flex()).unwrap();
    assert!(pretrain_tower(&mut plain, &config, &mut |_| {}).unwrap_err().to_string().contains("autodiff"));
}
