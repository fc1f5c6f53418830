//! LLaMA prefill and decode on every compiled-in backend, for a model shaped
//! by `VOCOLLAMA_BENCH_SHAPE` (`small`, default, or `tiny`): prefill of a
//! 576-token image-sized prompt, then per-token decode against its cache.
//! Reported as tokens/s and as ratios to the first backend, all measured in
//! this one run.
//!
//!     cargo bench -p vocollama-benches --bench llama

use std::time::{Duration, Instant};

use burn::tensor::{Device, Distribution, Int, Tensor};
use vocollama_model::config::LlamaConfig;
use vocollama_model::{AttentionLayout, Llama, backend};

fn shape() -> LlamaConfig {
    let small = std::env::var("VOCOLLAMA_BENCH_SHAPE").as_deref() != Ok("tiny");
    let (hidden, layers, heads, ffn) = if small { (1024, 4, 16, 2816) } else { (128, 2, 4, 256) };
    LlamaConfig {
        vocab_size: 32001,
        hidden_size: hidden,
        intermediate_size: ffn,
        num_hidden_layers: layers,
        num_attention_heads: heads,
        num_key_value_heads: heads,
        head_dim: hidden / heads,
        rms_norm_eps: 1e-5,
        rope_theta: 10000.0,
        max_position_embeddings: 4096,
        tie_word_embeddings: false,
        bos_token_id: Some(1),
        eos_token_id: Some(2),
    }
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn positions(start: usize, len: usize, device: &Device) -> Tensor<2, Int> {
    Tensor::<1, Int>::arange(start as i64..(start + len) as i64, device).unsqueeze()
}

/// (prefill seconds, decode seconds per token), medians.
fn run(c: &LlamaConfig, device: &Device, prompt: usize, decode: usize, reps: usize) -> (f64, f64) {
    let llm = Llama::init(c, device);
    let layout = AttentionLayout::causal();
    let x = Tensor::<3>::random([1, prompt, c.hidden_size], Distribution::Normal(0.0, 1.0), device);
    let step = Tensor::<3>::random([1, 1, c.hidden_size], Distribution::Normal(0.0, 1.0), device);
    let (mut pre, mut dec) = (Vec::new(), Vec::new());
    for rep in 0..=reps {
        let mut cache = llm.new_cache();
        let t = Instant::now();
        let h = llm.forward(x.clone(), positions(0, prompt, device), &layout, &mut cache);
        let _ = llm.logits(h.slice([0..1, prompt - 1..prompt])).into_data();
        let p = t.elapsed();
        let t = Instant::now();
        for i in 0..decode {
            let h = llm.forward(step.clone(), positions(prompt + i, 1, device), &layout, &mut cache);
            let _ = llm.logits(h).into_data();
        }
        let d = t.elapsed() / decode as u32;
        if rep > 0 {
            // The first round warms up kernels and autotuning.
            pre.push(p);
            dec.push(d);
        }
    }
    (median(pre).as_secs_f64(), median(dec).as_secs_f64())
}

fn main() {
    let c = shape();
    let (prompt, decode, reps) = (576, 16, 3);
    println!(
        "LLaMA {} layers, hidden {}, FFN {}, {} heads, vocab {}; prompt {prompt} tokens, {decode} decoded, median of {reps}\n",
        c.num_hidden_layers, c.hidden_size, c.intermediate_size, c.num_attention_heads, c.vocab_size
    );
    let backends = backend::compiled_backends();
    println!("| backend | prefill tok/s | decode tok/s | prefill speed vs {0} | decode speed vs {0} |", backends[0]);
    println!("| --- | ---: | ---: | ---: | ---: |");
    let mut first: Option<(f64, f64)> = None;
    for name in backends {
        let device = match backend::device(name) {
            Ok(d) => d,
            Err(e) => panic!("{name}: {e}"),
        };
        let (p, d) = run(&c, &device, prompt, decode, reps);
        let (p0, d0) = *first.get_or_insert((p, d));
        println!("| {name} | {:.1} | {:.1} | {:.2}x | {:.2}x |", prompt as f64 / p, 1.0 / d, p0 / p, d0 / d);
    }
}
