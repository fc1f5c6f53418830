//! A model directory measured at every precision asked for (`vocollama bench
//! --model DIR`): the load itself and its peak host memory, then one image
//! compressed and one question answered from its VoCo cache, as the CLI does.
//! A precision the machine cannot hold is refused by the load's memory check,
//! and reported as refused.

use std::path::Path;
use std::time::{Duration, Instant};

use burn::tensor::Device;
use serde::Serialize;
use vocollama_model::model::precision::{Quantize, WeightDType};
use vocollama_model::voco::{ImageStats, compress};
use vocollama_model::{LlavaModel, LoadOptions, Result, Session, Stage1Prompt, Tokenizer, memory};

use crate::stages::{Workload, decode, median, pixels, text_ids, time};

/// One precision of the model directory.
#[derive(Debug, Clone, Serialize)]
pub struct PrecisionRun {
    /// As asked: `f16`, `q8`, ….
    pub asked: String,
    /// What it loaded as and why, or why it was refused.
    pub weights: String,
    pub refused: bool,
    pub load_s: f64,
    /// Peak resident host memory while loading, and over the whole run (MiB).
    pub load_peak_mib: Option<f64>,
    pub peak_mib: Option<f64>,
    pub vision_ms: f64,
    pub stage1_ms: f64,
    /// The question's prefill against the VoCo cache (median ms).
    pub prefill_ms: f64,
    /// A prompt as long as the image's whole sequence (`long_tokens`: BOS, the image
    /// tokens, `▁\n` and the question), prefilled from an empty cache (median ms).
    pub long_tokens: usize,
    pub long_prefill_ms: f64,
    pub decode_ms: f64,
    /// Bytes of weights one decoded token reads (the decoder's linear layers as
    /// held, and the output head): the decode ceiling's numerator.
    pub decode_weight_bytes: u64,
    /// Key/value bytes of the session after the question (VoCo tokens and text), as held.
    pub kv_bytes: u64,
}

/// The precisions `bench --model` measures by name.
pub fn parse(name: &str) -> Option<(WeightDType, Quantize)> {
    Some(match name {
        "auto" => (WeightDType::Auto, Quantize::None),
        "f32" => (WeightDType::F32, Quantize::None),
        "f16" => (WeightDType::F16, Quantize::None),
        "bf16" => (WeightDType::Bf16, Quantize::None),
        "q8" => (WeightDType::Auto, Quantize::Q8),
        "q4" => (WeightDType::Auto, Quantize::Q4),
        _ => return None,
    })
}

fn mib(bytes: Option<u64>) -> Option<f64> {
    bytes.map(|b| b as f64 / (1u64 << 20) as f64)
}

/// Load `dir` at `asked` on `device` and measure: the stages run `w.reps`
/// times each, with no warm-up run (a full-size model on a CPU takes minutes a run).
pub fn measure(
    dir: &Path,
    asked: &str,
    device: &Device,
    w: &Workload,
    log: &mut dyn FnMut(&str),
) -> Result<PrecisionRun> {
    let (dtype, quantize) = parse(asked).expect("checked by the caller");
    memory::reset_peak();
    log(&format!("{asked}: loading {}", dir.display()));
    let start = Instant::now();
    let options = LoadOptions { dtype, quantize, ..LoadOptions::default() };
    let model = match LlavaModel::load(dir, &options, device) {
        Ok(m) => m,
        Err(e) => {
            log(&format!("{asked}: {e}"));
            let refused = e.to_string();
            return Ok(PrecisionRun {
                asked: asked.into(),
                weights: refused,
                refused: true,
                load_s: 0.0,
                load_peak_mib: None,
                peak_mib: None,
                vision_ms: 0.0,
                stage1_ms: 0.0,
                prefill_ms: 0.0,
                long_tokens: 0,
                long_prefill_ms: 0.0,
                decode_ms: 0.0,
                decode_weight_bytes: 0,
                kv_bytes: 0,
            });
        }
    };
    let load_s = start.elapsed().as_secs_f64();
    let load_peak_mib = mib(memory::peak_resident());
    let tokenizer = Tokenizer::for_model(dir, model.config.layout)?;
    let size = model.vision.as_ref().map_or(336, |v| v.tower.image_size());
    let px = pixels(size);
    let prompt = Stage1Prompt::new(&tokenizer, w.voco)?;
    log(&format!("{asked}: vision encode and stage 1, {} runs", w.reps));
    let mut runs: Vec<ImageStats> = Vec::new();
    let mut cache = None;
    for _ in 0..w.reps {
        let (mut caches, stats) = compress(&model, &prompt, std::slice::from_ref(&px))?;
        runs.push(stats);
        cache = Some(caches.remove(0));
    }
    let cache = cache.expect("at least one run");
    let ms = |pick: fn(&ImageStats) -> Duration| median(runs.iter().map(|s| pick(s).as_secs_f64() * 1e3).collect());
    // Ids within the model's vocabulary (the cost does not depend on them).
    let vocab = model.config.llm.vocab_size as i64;
    let text: Vec<i64> = text_ids(w.text).into_iter().map(|id| id % vocab).collect();
    log(&format!("{asked}: the question's prefill and decoding"));
    let session = Session::from_voco(&model, &cache)?;
    // `time` warms up once; on a full-size model that is one more prefill, kept for the decode below.
    let prefill_ms = time(device, w.reps.saturating_sub(1).max(1), || session.clone().next_logits(&text, &[]))?;
    let mut after = session.clone();
    after.feed(&text, &[])?;
    let decode_ms = decode(&after, w)?;
    let long_tokens = 1 + model.image_tokens() + 2 + w.text;
    log(&format!("{asked}: a prompt of {long_tokens} tokens (an image's whole sequence)"));
    let long: Vec<i64> = text_ids(long_tokens).into_iter().map(|id| id % vocab).collect();
    let long_prefill_ms =
        time(device, w.reps.saturating_sub(1).max(1), || Session::empty(&model).next_logits(&long, &[]))?;
    let kv_bytes = (after.cached() * model.config.llm.kv_bytes_per_token(model.precision.float_bytes())) as u64;
    Ok(PrecisionRun {
        asked: asked.into(),
        weights: format!("{} ({})", model.precision, model.precision_why),
        refused: false,
        load_s,
        load_peak_mib,
        peak_mib: mib(memory::peak_resident()),
        vision_ms: ms(|s| s.vision_encode),
        stage1_ms: ms(|s| s.compress),
        prefill_ms,
        long_tokens,
        long_prefill_ms,
        decode_ms,
        decode_weight_bytes: decode_weight_bytes(&model, device),
        kv_bytes,
    })
}

/// The weight bytes a decoded token reads: every linear layer of the decoder blocks
/// as held (quantized values and their scales, or floats) and the float output head.
fn decode_weight_bytes(model: &LlavaModel, device: &Device) -> u64 {
    let c = &model.config.llm;
    let (d, kv) = (c.hidden_size, c.num_key_value_heads * c.head_dim);
    let q = c.num_attention_heads * c.head_dim;
    let linear = c.num_hidden_layers * (2 * d * q + 2 * d * kv + 3 * d * c.intermediate_size);
    let float = model.precision.float_bytes() as f64;
    let per_weight = match model.precision.quantize {
        Quantize::None => float,
        // Values packed everywhere; CubeCL's block scales in f16, flex's in f32.
        q => q.bytes_per_weight(!vocollama_kernels::device::is_cubecl(device)),
    };
    (linear as f64 * per_weight + (c.vocab_size * d) as f64 * float) as u64
}
