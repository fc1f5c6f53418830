//! The table-7 stages on one backend, through the same pipeline the CLI
//! answers with: the vision stage, stage 1 (compress), and one question of
//! T text tokens answered three ways — *baseline* (the whole sequence, image
//! included, run again for the question), *full caching* (the image's KV
//! cached, the question run against it), *VoCo* (the question run against an
//! N-token VoCo cache) — each followed by greedy decoding.

use std::time::Instant;

use burn::tensor::{Device, Tensor, TensorData};
use serde::Serialize;
use vocollama_model::backend::{self, timed};
use vocollama_model::infer::sampling::argmax;
use vocollama_model::model::clip::layers_to_run;
use vocollama_model::voco::{ImageStats, compress};
use vocollama_model::{IMAGE_TOKEN_INDEX, LlavaModel, Pixels, Result, Session, Stage1Prompt, memory};

use crate::flops;
use crate::shapes::{Shape, VOCAB};

/// What is measured: one question of `text` tokens, `decode` tokens after it,
/// `voco` VoCo tokens, each timing the median of `reps` runs after a warm-up.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Workload {
    pub text: usize,
    pub decode: usize,
    pub voco: usize,
    pub reps: usize,
}

/// One way of answering the question.
#[derive(Debug, Clone, Serialize)]
pub struct Question {
    /// Key/value positions kept for the image between questions (0: none kept, recomputed).
    pub kv_positions: usize,
    /// Bytes of that cache in f16, the `.voco` default.
    pub kv_bytes_f16: u64,
    /// The question's prefill, to the first token's logits (median ms).
    pub prefill_ms: f64,
    pub prefill_flops: f64,
    /// One decoded token against this cache (median ms per token).
    pub decode_ms: f64,
    pub decode_flops: f64,
}

/// Greedy decoding with `positions` already in the KV cache.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct DecodeAt {
    pub positions: usize,
    pub decode_ms: f64,
    pub decode_flops: f64,
    /// The attention's share of those FLOPs (the keys it reads grow with the position).
    pub attention_share: f64,
}

/// Everything measured on one backend.
#[derive(Debug, Clone, Serialize)]
pub struct BackendRun {
    pub backend: String,
    pub vision_ms: f64,
    pub vision_flops: f64,
    pub stage1_ms: f64,
    pub stage1_flops: f64,
    pub baseline: Question,
    pub full_caching: Question,
    pub voco: Question,
    /// Decoding at two lengths of the session's KV cache: per-token time stays
    /// flat but for the attention's own cost (the cache is written in place).
    pub decode_by_position: [DecodeAt; 2],
    /// Peak resident host memory during this backend's run (MiB).
    pub peak_mib: Option<f64>,
    /// Threads the backend computes on, for the CPU backend (its thread pool's size).
    pub cpu_threads: Option<usize>,
    /// The backend's measured f32 matmul rate on a large GEMM.
    pub gemm_gflops: f64,
    pub gemm_size: usize,
}

impl BackendRun {
    /// The baseline prefill's (the largest) achieved rate, GFLOP/s.
    pub fn prefill_gflops(&self) -> f64 {
        self.baseline.prefill_flops / (self.baseline.prefill_ms * 1e-3) / 1e9
    }

    /// That rate's share of the backend's GEMM rate.
    pub fn gemm_fraction(&self) -> f64 {
        self.prefill_gflops() / self.gemm_gflops
    }
}

// Token ids of Vicuna's tokenizer: `<s>`, `▁`, `\n`; `<voco>` is the last id.
const BOS: i64 = 1;
const SPACE: i64 = 29871;
const NEWLINE: i64 = 13;
/// What precedes the VoCo tokens or the question: `[BOS, image, ▁, \n]`.
const IMAGE_PREFIX: [i64; 4] = [BOS, IMAGE_TOKEN_INDEX, SPACE, NEWLINE];

pub(crate) fn text_ids(n: usize) -> Vec<i64> {
    // Any ids: the cost does not depend on them.
    (0..n as i64).map(|i| 300 + (i * 37) % 20000).collect()
}

pub(crate) fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// `f` once to warm up (kernels compiled, autotuning settled), then `reps`
/// runs, each timed to completion on `device`: the median ms.
pub(crate) fn time<T>(device: &Device, reps: usize, mut f: impl FnMut() -> Result<T>) -> Result<f64> {
    f()?;
    let mut ms = Vec::with_capacity(reps);
    for _ in 0..reps {
        ms.push(timed(device, &mut f)?.1.as_secs_f64() * 1e3);
    }
    Ok(median(ms))
}

/// A random image already preprocessed (the cost does not depend on the pixels).
pub(crate) fn pixels(size: usize) -> Pixels {
    let data = (0..3 * size * size).map(|i| ((i * 7919) % 255) as f32 / 127.5 - 1.0).collect();
    Pixels { data, height: size, width: size }
}

/// The question on a session: its prefill's median time, then decoding's.
fn question(device: &Device, session: &Session, w: &Workload, text: &[i64]) -> Result<(f64, f64)> {
    let prefill = time(device, w.reps, || session.clone().next_logits(text, &[]))?;
    let mut after = session.clone();
    after.feed(text, &[])?;
    Ok((prefill, decode(&after, w)?))
}

/// Greedy decoding after `after`: median ms per token over `reps` runs of `decode` tokens.
pub(crate) fn decode(after: &Session, w: &Workload) -> Result<f64> {
    let mut per_token = Vec::new();
    // One copy of the session, rewound before each run (as a chat rewinds to a question):
    // its cache buffers are copied once, by the warm-up's first write, never in a timed run.
    let mut s = after.clone();
    let start = s.mark();
    for _ in 0..=w.reps {
        s.rewind(start);
        let mut next = BOS;
        let t = Instant::now();
        for _ in 0..w.decode {
            next = argmax(&s.next_logits(&[next], &[])?) as i64;
        }
        per_token.push(t.elapsed().as_secs_f64() * 1e3 / w.decode.max(1) as f64);
    }
    // The first run warms up.
    Ok(median(per_token.split_off(1)))
}

/// Build `shape` with random weights on `device` and measure every stage.
pub fn measure(
    name: &str,
    device: &Device,
    shape: &Shape,
    w: &Workload,
    gemm_size: usize,
    log: &mut dyn FnMut(&str),
) -> Result<BackendRun> {
    memory::reset_peak();
    log(&format!("{name}: building `{}` with random weights", shape.name));
    let model = LlavaModel::random(&shape.llm, &shape.vision, w.voco, 0x5eed, device)?;
    let c = &shape.llm;
    let p = model.image_tokens();
    let voco_id = (VOCAB - 1) as i64;
    let text = text_ids(w.text);

    log(&format!("{name}: vision encode and stage 1 (compress into {} VoCo tokens)", w.voco));
    let px = pixels(shape.vision.image_size);
    let prompt = Stage1Prompt::from_ids([&IMAGE_PREFIX[..], &vec![voco_id; w.voco]].concat(), voco_id)?;
    // One warm-up, then `reps` runs, each timed stage by stage to completion on the device.
    let mut runs: Vec<ImageStats> = Vec::with_capacity(w.reps);
    for rep in 0..=w.reps {
        let (_, stats) = compress(&model, &prompt, std::slice::from_ref(&px))?;
        if rep > 0 {
            runs.push(stats);
        }
    }
    let ms = |pick: fn(&ImageStats) -> std::time::Duration| {
        median(runs.iter().map(|s| pick(s).as_secs_f64() * 1e3).collect())
    };
    let (vision_ms, stage1_ms) = (ms(|s| s.vision_encode), ms(|s| s.compress));
    let image = model.encode_image(&px)?;
    let cache = compress(&model, &prompt, std::slice::from_ref(&px))?.0.remove(0);

    // Positions of the image prefix once the image is spliced in.
    let prefix = IMAGE_PREFIX.len() - 1 + p;
    let decode_flops = |cached: usize| flops::llm(c, cached + w.text, 1, 1);
    log(&format!("{name}: baseline (whole sequence per question)"));
    let mut whole = IMAGE_PREFIX.to_vec();
    whole.extend(&text);
    let baseline_ms =
        time(device, w.reps, || Session::empty(&model).next_logits(&whole, std::slice::from_ref(&image)))?;
    let mut s = Session::empty(&model);
    s.feed(&whole, std::slice::from_ref(&image))?;
    let baseline_decode = decode(&s, w)?;
    let baseline = Question {
        kv_positions: 0,
        kv_bytes_f16: 0,
        prefill_ms: baseline_ms,
        prefill_flops: flops::llm(c, 0, prefix + w.text, 1),
        decode_ms: baseline_decode,
        decode_flops: decode_flops(prefix),
    };

    log(&format!("{name}: full caching (the image's {prefix} positions cached)"));
    let mut cached = Session::empty(&model);
    cached.feed(&IMAGE_PREFIX, std::slice::from_ref(&image))?;
    let (prefill_ms, decode_ms) = question(device, &cached, w, &text)?;
    let full_caching = Question {
        kv_positions: prefix,
        kv_bytes_f16: flops::kv_bytes(c, prefix, 2),
        prefill_ms,
        prefill_flops: flops::llm(c, prefix, w.text, 1),
        decode_ms,
        decode_flops: decode_flops(prefix),
    };

    log(&format!("{name}: VoCo ({} cached positions)", w.voco));
    let (prefill_ms, decode_ms) = question(device, &Session::from_voco(&model, &cache)?, w, &text)?;
    let voco = Question {
        kv_positions: w.voco,
        kv_bytes_f16: flops::kv_bytes(c, w.voco, 2),
        prefill_ms,
        prefill_flops: flops::llm(c, w.voco, w.text, 1),
        decode_ms,
        decode_flops: decode_flops(w.voco),
    };
    // Decoding near the start of the context and far into it, from the VoCo cache.
    // A VoCo cache's positions continue after the image's (design.md §5), so the
    // context left is counted from where the cache's next position starts.
    let skipped = cache.next_position() - w.voco;
    let far = 2000.min(c.max_position_embeddings - skipped - w.decode - 8);
    let mut decode_by_position = [100, far].map(|positions| DecodeAt {
        positions,
        decode_ms: 0.0,
        decode_flops: flops::llm(c, positions, 1, 1),
        attention_share: (flops::llm(c, positions, 1, 1) - flops::llm(c, 0, 1, 1)) / flops::llm(c, positions, 1, 1),
    });
    for at in &mut decode_by_position {
        log(&format!("{name}: decoding with {} positions cached", at.positions));
        let mut session = Session::from_voco(&model, &cache)?;
        session.feed(&text_ids(at.positions - w.voco), &[])?;
        at.decode_ms = decode(&session, w)?;
    }
    drop((cache, image, cached, s));
    let peak_mib = memory::peak_resident().map(|b| b as f64 / (1u64 << 20) as f64);
    drop(model);

    log(&format!("{name}: GEMM ceiling ({gemm_size}³)"));
    let gemm_ms = gemm(device, gemm_size, w.reps)?;
    let gemm_gflops = 2.0 * (gemm_size as f64).powi(3) / (gemm_ms * 1e-3) / 1e9;
    let layers = layers_to_run(shape.vision.num_hidden_layers, -2)?;
    Ok(BackendRun {
        backend: name.into(),
        vision_ms,
        vision_flops: flops::vision(&shape.vision, layers, c.hidden_size),
        stage1_ms,
        stage1_flops: flops::llm(c, 0, prefix + w.voco, 0),
        baseline,
        full_caching,
        voco,
        decode_by_position,
        peak_mib,
        cpu_threads: (name == "flex").then(backend::cpu_threads),
        gemm_gflops,
        gemm_size,
    })
}

/// Median ms of one `n × n × n` f32 matmul.
fn gemm(device: &Device, n: usize, reps: usize) -> Result<f64> {
    let values = |seed: usize| -> Vec<f32> { (0..n * n).map(|i| ((i * 31 + seed) % 97) as f32 / 97.0 - 0.5).collect() };
    let a = Tensor::<2>::from_data(TensorData::new(values(1), [n, n]), device);
    let b = Tensor::<2>::from_data(TensorData::new(values(2), [n, n]), device);
    backend::sync(device)?;
    time(device, reps.max(3), || Ok(a.clone().matmul(b.clone())))
}
