//! Parity with HF transformers: CLIP selected-layer features, projector output,
//! LLaMA logits and full LLaVA logits, on every fixture layout (original LLaVA
//! with GQA in bf16 shards, original with f16 `.bin` shards, llava-hf, plain
//! LLaMA with tied embeddings), on every compiled-in backend.

mod common;

use burn::module::Module;
use burn::tensor::{Int, Tensor, TensorData};
use common::*;
use vocollama_model::checkpoint::info::{clip_params, llama_params, projector_params};
use vocollama_model::{AttentionLayout, IMAGE_TOKEN_INDEX, LlavaModel, Pixels};

fn llm_logits(model: &LlavaModel, ids: &[i64]) -> TensorData {
    let d = &model.device;
    let t = Tensor::<2, Int>::from_data(TensorData::new(ids.to_vec(), [1, ids.len()]), d);
    let mut cache = model.llm.new_cache();
    let h =
        model.llm.forward(model.llm.embed(t), model.positions(0, ids.len()), &AttentionLayout::causal(), &mut cache);
    model.llm.logits(h).into_data()
}

fn check_llava(name: &str, tower: Option<&str>) {
    let r = reference(name);
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture(name).join("reference.json")).unwrap()).unwrap();
    let image = assets().join(meta["image"].as_str().unwrap());
    for (backend, device, tol) in devices() {
        let label = |what: &str| format!("{name} [{backend}] {what}");
        let model = load_f32(name, tower, &device);

        // The model's parameter count equals the analytic one `info` prints.
        let v = model.vision.as_ref().unwrap();
        let mm = model.config.mm.as_ref().unwrap();
        assert_eq!(model.llm.num_params(), llama_params(&model.config.llm), "{}", label("llm params"));
        assert_eq!(
            v.projector.num_params(),
            projector_params(mm.projector_type, mm.mm_hidden_size, model.config.llm.hidden_size, true)
        );
        assert_eq!(v.tower.num_params(), clip_params(&v.config, v.tower.encoder.layers.len()));

        // CLIP features from the reference pixels, then the projector.
        let px = &r["pixel_values"];
        let pixels = Tensor::<4>::from_data(px.clone(), &device);
        let feats = v.tower.forward(pixels);
        assert_close(&label("clip features"), feats.clone().into_data(), &r["clip_features"], tol);
        assert_close(&label("projector"), v.projector.forward(feats).into_data(), &r["image_embeds"], tol);

        // LLaMA alone on token ids.
        assert_close(&label("llama logits"), llm_logits(&model, &ids(&r["llm_input_ids"])), &r["llm_logits"], tol);

        // The whole chain from the image file: preprocess, encode, splice, decode.
        let pixels = model.load_image(&image).unwrap();
        assert_eq!([1, 3, pixels.height, pixels.width], px.shape().as_slice());
        let embeds = model.encode_image(&pixels).unwrap();
        let lids = ids(&r["llava_input_ids"]);
        assert!(lids.contains(&IMAGE_TOKEN_INDEX));
        let x = model.embed_with_images(&lids, &[embeds]).unwrap();
        let len = x.dims()[1];
        let mut cache = model.llm.new_cache();
        let h = model.llm.forward(x, model.positions(0, len), &AttentionLayout::causal(), &mut cache);
        assert_close(&label("llava logits"), model.llm.logits(h).into_data(), &r["llava_logits"], tol);
    }
}

#[test]
fn llava_original_gqa_bf16_sharded_safetensors() {
    // mm_vision_tower = "../clip-full": resolved relative to the model directory.
    check_llava("llava-gqa-bf16", None);
}

#[test]
fn llava_original_f16_sharded_bin_mlp3x_cls_patch() {
    check_llava("llava-mha-f16-bin", Some("clip-vision-f16"));
}

#[test]
fn llava_hf_layout() {
    check_llava("llava-hf", None);
}

#[test]
fn plain_llama_with_tied_embeddings() {
    let r = reference("llama-tied");
    for (backend, device, tol) in devices() {
        let model = load_f32("llama-tied", None, &device);
        assert!(model.vision.is_none() && model.llm.lm_head.is_none());
        assert_eq!(model.llm.num_params(), llama_params(&model.config.llm));
        let got = llm_logits(&model, &ids(&r["llm_input_ids"]));
        assert_close(&format!("llama-tied [{backend}] logits"), got, &r["llm_logits"], tol);
    }
}

#[test]
fn kv_cache_decoding_equals_one_pass() {
    // Prefill a prefix, then feed the rest one token at a time at explicit positions.
    let r = reference("llama-tied");
    let ids = ids(&r["llm_input_ids"]);
    for (backend, device, tol) in devices() {
        let model = load_f32("llama-tied", None, &device);
        let mut cache = model.llm.new_cache();
        let mut rows = Vec::new();
        let split = 9;
        let t = Tensor::<2, Int>::from_data(TensorData::new(ids[..split].to_vec(), [1, split]), &device);
        let h =
            model.llm.forward(model.llm.embed(t), model.positions(0, split), &AttentionLayout::causal(), &mut cache);
        rows.push(model.llm.logits(h));
        for (i, &id) in ids.iter().enumerate().skip(split) {
            let t = Tensor::<2, Int>::from_data(TensorData::new(vec![id], [1, 1]), &device);
            let h =
                model.llm.forward(model.llm.embed(t), model.positions(i, 1), &AttentionLayout::causal(), &mut cache);
            rows.push(model.llm.logits(h));
        }
        assert_eq!(cache.len(), ids.len());
        let got = Tensor::cat(rows, 1).into_data();
        assert_close(&format!("llama-tied [{backend}] cached decode"), got, &r["llm_logits"], tol);
    }
}

#[test]
fn linear_projector() {
    use burn::tensor::FloatDType;
    use vocollama_model::checkpoint::config::ProjectorType;
    use vocollama_model::checkpoint::weights::{Checkpoint, Format, Target, load_module};
    use vocollama_model::model::projector::Projector;
    let path = fixture("projector-linear.safetensors");
    let r = read_tensors(path.clone());
    let ck = Checkpoint { dir: fixture(""), format: Format::Safetensors, files: vec![path] };
    for (backend, device, tol) in devices() {
        let p = Projector::init(ProjectorType::Linear, 48, 64, true, &device);
        let map = Projector::original_key_map(ProjectorType::Linear);
        let p = load_module(p, &ck.tensors().unwrap(), &map, "projector", &Target::float(FloatDType::F32)).unwrap();
        let out = p.forward(Tensor::<3>::from_data(r["input"].clone(), &device));
        assert_close(&format!("linear projector [{backend}]"), out.into_data(), &r["output"], tol);
    }
}

#[test]
fn preprocessing_matches_clip_image_processor() {
    use vocollama_model::media::preprocess::{CLIP_STD, Preprocessor};
    let r = read_tensors(fixture("preprocess.safetensors"));
    let cases = [
        ("photo", "photo.png", 336, false),
        ("photo_pad", "photo.png", 336, true),
        ("wide_pad_56", "wide.png", 56, true),
        ("wide_56", "wide.png", 56, false),
        ("tall_pad_56", "tall.png", 56, true),
        ("tall_56", "tall.png", 56, false),
    ];
    for (key, file, size, pad) in cases {
        let p = Preprocessor::clip_default(size, pad);
        let Pixels { data, height, width } = p.load(&assets().join("images").join(file)).unwrap();
        let want = &r[key];
        assert_eq!([3, height, width], want.shape().as_slice(), "{key}");
        let want = want.clone().convert::<f32>().try_into_vec::<f32>().unwrap();
        let plane = height * width;
        // Compare in 0..1 pixel units: |Δ| · std ≤ 1/255 (f16 storage of the 336 px references adds ~1e-3).
        let mut worst = 0f32;
        for (i, (g, w)) in data.iter().zip(&want).enumerate() {
            worst = worst.max((g - w).abs() * CLIP_STD[i / plane]);
        }
        eprintln!("{key}: worst pixel difference {:.5} (1/255 = {:.5})", worst, 1.0 / 255.0);
        assert!(worst <= 1.0 / 255.0, "{key}: worst pixel difference {worst} > 1/255");
        if !key.starts_with("photo") {
            // f32 references: PIL's resampler is reproduced exactly.
            assert!(worst < 1e-5, "{key}: {worst}");
        }
    }
}
