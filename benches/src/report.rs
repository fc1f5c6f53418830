//! The benchmark report: markdown (the paper's table-7 layout per backend,
//! the backend comparison, the PyTorch ratios) and the same data as JSON.

use std::fmt::Write;

use serde::Serialize;

use crate::ceilings::Ceilings;
use crate::checkpoint::PrecisionRun;
use crate::llamacpp::LlamaCppRun;
use crate::stages::{BackendRun, Question, Workload};
use crate::torch::TorchRun;

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub command: String,
    pub shape: String,
    pub workload: Workload,
    pub runs: Vec<BackendRun>,
    pub torch: Option<TorchRun>,
    /// The backend the PyTorch run is compared with (same device kind).
    pub torch_compared_with: Option<String>,
    /// `--model DIR`: that directory at each precision.
    pub checkpoint: Option<CheckpointRuns>,
    /// `--model DIR`: the machine's memory bandwidth, for the decode ceilings.
    pub ceilings: Option<Ceilings>,
    /// `--model DIR --llamacpp`: llama.cpp on the same weights.
    pub llamacpp: Option<LlamaCppRun>,
}

/// A model directory measured at several precisions on one backend.
#[derive(Debug, Clone, Serialize)]
pub struct CheckpointRuns {
    pub backend: String,
    pub runs: Vec<PrecisionRun>,
}

/// "−64.8 %" for a reduction from `base` to `x`, as the paper prints deltas.
fn delta(base: f64, x: f64) -> String {
    if base <= 0.0 {
        return "—".into();
    }
    let d = (x - base) / base * 100.0;
    if d <= 0.0 { format!("−{:.1} %", -d) } else { format!("+{d:.1} %") }
}

fn mib(bytes: u64) -> String {
    let m = bytes as f64 / (1u64 << 20) as f64;
    if m < 10.0 { format!("{m:.3} MiB") } else { format!("{m:.1} MiB") }
}

fn gflop(f: f64) -> String {
    let g = f / 1e9;
    if g < 10.0 { format!("{g:.3}") } else { format!("{g:.1}") }
}

impl Report {
    /// The run's charts as `(name, svg)`: stage times per runtime (or backend), and
    /// with --model, decoding per precision against its bandwidth ceiling.
    pub fn charts(&self) -> Vec<(&'static str, String)> {
        use crate::chart::{Chart, Group};
        let mut out = Vec::new();
        if let Some(c) = &self.checkpoint {
            let runs: Vec<&PrecisionRun> = c.runs.iter().filter(|r| !r.refused).collect();
            let llama =
                |r: &PrecisionRun| self.llamacpp.as_ref().and_then(|l| l.rows.iter().find(|x| x.dtype == r.asked));
            let torch = |r: &PrecisionRun| self.torch.as_ref().filter(|_| r.asked == "f32");
            let long = runs.first().map_or(0, |r| r.long_tokens);
            let mut groups = Vec::new();
            for r in &runs {
                let stages: [(String, f64, Option<f64>, Option<f64>); 3] = [
                    (
                        format!("{} prefill {}", r.asked, self.workload.text),
                        r.prefill_ms,
                        llama(r).map(|l| l.prefill_short_ms),
                        torch(r).map(|t| t.voco.prefill_ms),
                    ),
                    (
                        format!("{} prefill {long}", r.asked),
                        r.long_prefill_ms,
                        llama(r).map(|l| l.prefill_long_ms),
                        torch(r).map(|t| t.baseline.prefill_ms),
                    ),
                    (
                        format!("{} decode", r.asked),
                        r.decode_ms,
                        llama(r).map(|l| l.decode_ms),
                        torch(r).map(|t| t.voco.decode_ms),
                    ),
                ];
                for (label, ours, l, t) in stages {
                    let mut bars = vec![(0, ours)];
                    bars.extend(l.map(|v| (1, v)));
                    bars.extend(t.map(|v| (2, v)));
                    groups.push(Group { label, bars, marker: None });
                }
            }
            out.push((
                "stages",
                Chart {
                    title: "Stage times per runtime".into(),
                    unit: "ms, shorter is faster".into(),
                    series: vec!["vocollama".into(), "llama.cpp".into(), "PyTorch".into()],
                    groups,
                    marker_label: None,
                }
                .svg(),
            ));
            if let Some(m) = &self.ceilings {
                let groups = runs
                    .iter()
                    .map(|r| {
                        let mut bars = vec![(0, 1e3 / r.decode_ms)];
                        bars.extend(llama(r).map(|l| (1, 1e3 / l.decode_ms)));
                        bars.extend(torch(r).map(|t| (2, 1e3 / t.voco.decode_ms)));
                        let ceiling = m.read_gbs * 1e9 / r.decode_weight_bytes.max(1) as f64;
                        Group { label: r.asked.clone(), bars, marker: Some(ceiling) }
                    })
                    .collect();
                out.push((
                    "decode",
                    Chart {
                        title: "Decoding per weight precision".into(),
                        unit: "tokens/s, longer is faster".into(),
                        series: vec!["vocollama".into(), "llama.cpp".into(), "PyTorch".into()],
                        groups,
                        marker_label: Some(format!("ceiling: weights read at {:.1} GB/s", m.read_gbs)),
                    }
                    .svg(),
                ));
            }
        } else if !self.runs.is_empty() {
            let mut series: Vec<String> = self.runs.iter().map(|r| r.backend.clone()).collect();
            if self.torch.is_some() {
                series.push("PyTorch".into());
            }
            type Pick = fn(&BackendRun) -> f64;
            type TorchPick = fn(&TorchRun) -> f64;
            let stages: [(&str, Pick, TorchPick); 6] = [
                ("vision encode", |r| r.vision_ms, |t| t.vision_ms),
                ("stage 1", |r| r.stage1_ms, |t| t.stage1_ms),
                ("baseline prefill", |r| r.baseline.prefill_ms, |t| t.baseline.prefill_ms),
                ("full caching prefill", |r| r.full_caching.prefill_ms, |t| t.full_caching.prefill_ms),
                ("VoCo prefill", |r| r.voco.prefill_ms, |t| t.voco.prefill_ms),
                ("decode / token", |r| r.voco.decode_ms, |t| t.voco.decode_ms),
            ];
            let groups = stages
                .iter()
                .map(|(label, pick, tpick)| {
                    let mut bars: Vec<(usize, f64)> = self.runs.iter().enumerate().map(|(i, r)| (i, pick(r))).collect();
                    bars.extend(self.torch.as_ref().map(|t| (self.runs.len(), tpick(t))));
                    Group { label: label.to_string(), bars, marker: None }
                })
                .collect();
            out.push((
                "stages",
                Chart {
                    title: "Stage times per backend".into(),
                    unit: "ms, shorter is faster".into(),
                    series,
                    groups,
                    marker_label: None,
                }
                .svg(),
            ));
        }
        out
    }

    pub fn markdown(&self) -> String {
        let w = &self.workload;
        let mut s = String::new();
        let _ = writeln!(s, "# vocollama bench\n");
        let _ = writeln!(s, "`{}`\n", self.command);
        let _ = writeln!(s, "Shape {}.\n", self.shape);
        if self.checkpoint.is_some() {
            let _ = writeln!(
                s,
                "One image compressed into N = {} VoCo tokens and one question of {} text tokens answered from \
                 its cache, then {} greedily decoded tokens. Times are medians of {} runs, in ms.\n",
                w.voco, w.text, w.decode, w.reps
            );
        } else {
            let _ = writeln!(
                s,
                "One question of {} text tokens about one image, then {} greedily decoded tokens; VoCo with N = {}. \
                 Times are medians of {} runs after a warm-up run, in ms; f32 weights and activations. \
                 FLOPs are counted analytically (matrix products and attention over the keys a row may see). \
                 KV cache sizes are for the cache kept between questions, in f16 as `.voco` files store it.\n",
                w.text, w.decode, w.voco, w.reps
            );
        }
        if let Some(c) = &self.checkpoint {
            precisions(&mut s, c);
            runtimes(&mut s, c, self.ceilings.as_ref(), self.llamacpp.as_ref(), self.torch.as_ref(), (w.voco, w.text));
        }
        for r in &self.runs {
            table7(&mut s, r);
        }
        backends(&mut s, &self.runs);
        if let (Some(t), Some(name)) = (&self.torch, &self.torch_compared_with)
            && let Some(r) = self.runs.iter().find(|r| &r.backend == name)
        {
            torch(&mut s, r, t);
        }
        s
    }
}

fn precisions(s: &mut String, c: &CheckpointRuns) {
    let _ = writeln!(s, "## Precisions on {}\n", c.backend);
    let _ = writeln!(
        s,
        "| asked | load s | peak host MiB (load) | peak host MiB (run) | vision ms | stage 1 ms | VoCo prefill ms | \
         decode ms/token | KV cache |"
    );
    let _ = writeln!(s, "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    let m = |x: Option<f64>| x.map_or("—".into(), |v| format!("{v:.0}"));
    for r in &c.runs {
        if r.refused {
            let _ = writeln!(s, "| {} | refused | | | | | | | |", r.asked);
            continue;
        }
        let _ = writeln!(
            s,
            "| {} | {:.1} | {} | {} | {:.0} | {:.0} | {:.0} | {:.1} | {} |",
            r.asked,
            r.load_s,
            m(r.load_peak_mib),
            m(r.peak_mib),
            r.vision_ms,
            r.stage1_ms,
            r.prefill_ms,
            r.decode_ms,
            mib(r.kv_bytes)
        );
    }
    let _ = writeln!(s);
    for r in &c.runs {
        let _ = writeln!(s, "- {}: {}", r.asked, r.weights);
    }
    let _ = writeln!(s);
}

/// vocollama, llama.cpp and PyTorch on the same model, per weight precision, with the ratios
/// and each decode set against the time its weights take to read at the measured bandwidth.
fn runtimes(
    s: &mut String,
    c: &CheckpointRuns,
    ceilings: Option<&Ceilings>,
    llama: Option<&LlamaCppRun>,
    torch: Option<&TorchRun>,
    (voco, text): (usize, usize),
) {
    if llama.is_none() && torch.is_none() && ceilings.is_none() {
        return;
    }
    let _ = writeln!(
        s,
        "## Runtimes side by side
"
    );
    let runs: Vec<&PrecisionRun> = c.runs.iter().filter(|r| !r.refused).collect();
    let long = runs.first().map_or(0, |r| r.long_tokens);
    let short = text;
    if let Some(m) = ceilings {
        let _ = writeln!(
            s,
            "Memory on {} threads: {:.1} GB/s read (a parallel sum), {:.1} GB/s copied (read + written). \
             Decode ceiling = the weight bytes a token reads / the read bandwidth.{}\n",
            m.threads,
            m.read_gbs,
            m.copy_gbs,
            torch.map_or(String::new(), |t| format!(
                " PyTorch's f32 GEMM: {:.1} GFLOP/s on {} threads.",
                t.gemm_gflops, t.threads
            ))
        );
    }
    if let Some(l) = llama {
        let _ = writeln!(
            s,
            "llama.cpp through llama-cpp-python {} (built from source for this CPU: {}), the same weights as GGUF \
             (`tools/bench_llamacpp.py`); its prompts have the same lengths; its decoding follows the {}-token \
             prefill. vocollama's {short}-token prefill is the question against a {}-token VoCo cache; its long prompt \
             is {long} tokens from an empty cache.\n",
            l.llama_cpp_python, l.system_info, l.short, voco
        );
    }
    let _ = writeln!(
        s,
        "| weights | runtime | threads | prefill {short} tok ms | prefill {long} tok ms | decode ms/token | decode tok/s | \
         ceiling ms/token | share of ceiling |"
    );
    let _ = writeln!(s, "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    let ceiling = |r: &PrecisionRun| ceilings.map(|m| r.decode_weight_bytes as f64 / (m.read_gbs * 1e9) * 1e3);
    let threads = ceilings.map_or(0, |m| m.threads);
    for r in &runs {
        let cm = ceiling(r);
        let share = |ms: f64| cm.map_or("—".into(), |c| format!("{:.0} %", c / ms * 100.0));
        let cs = cm.map_or("—".into(), |c| format!("{c:.1}"));
        let _ = writeln!(
            s,
            "| {} | vocollama | {threads} | {:.1} | {:.1} | {:.1} | {:.2} | {cs} | {} |",
            r.asked,
            r.prefill_ms,
            r.long_prefill_ms,
            r.decode_ms,
            1e3 / r.decode_ms,
            share(r.decode_ms)
        );
        if let Some(l) = llama.and_then(|l| l.rows.iter().find(|x| x.dtype == r.asked)) {
            // Its own bytes: the GGUF file less the embedding table (a token reads one row of it).
            let lm = ceilings.map(|m| l.weight_bytes as f64 / (m.read_gbs * 1e9) * 1e3);
            let ls = lm.map_or("—".into(), |c| format!("{:.0} %", c / l.decode_ms * 100.0));
            let lc = lm.map_or("—".into(), |c| format!("{c:.1}"));
            let _ = writeln!(
                s,
                "| {} | llama.cpp ({}) | {} | {:.1} | {:.1} | {:.1} | {:.2} | {lc} | {ls} |",
                r.asked,
                l.gguf_type,
                l.threads,
                l.prefill_short_ms,
                l.prefill_long_ms,
                l.decode_ms,
                1e3 / l.decode_ms,
            );
        }
        if let Some(t) = torch.filter(|_| r.asked == "f32") {
            let _ = writeln!(
                s,
                "| f32 | PyTorch {} | {} | {:.1} | {:.1} | {:.1} | {:.2} | {cs} | {} |",
                t.torch,
                t.threads,
                t.voco.prefill_ms,
                t.baseline.prefill_ms,
                t.voco.decode_ms,
                1e3 / t.voco.decode_ms,
                share(t.voco.decode_ms)
            );
        }
    }
    let _ = writeln!(s, "\nTime ratios, vocollama / the other runtime (below 1.00: vocollama faster):\n");
    let _ = writeln!(s, "| weights | vs | prefill {short} tok | prefill {long} tok | decode | vision | stage 1 |");
    let _ = writeln!(s, "| --- | --- | ---: | ---: | ---: | ---: | ---: |");
    for r in &runs {
        if let Some(l) = llama.and_then(|l| l.rows.iter().find(|x| x.dtype == r.asked)) {
            let _ = writeln!(
                s,
                "| {} | llama.cpp | {:.2} | {:.2} | {:.2} | — | — |",
                r.asked,
                r.prefill_ms / l.prefill_short_ms,
                r.long_prefill_ms / l.prefill_long_ms,
                r.decode_ms / l.decode_ms
            );
        }
        if let Some(t) = torch.filter(|_| r.asked == "f32") {
            let _ = writeln!(
                s,
                "| f32 | PyTorch | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} |",
                r.prefill_ms / t.voco.prefill_ms,
                r.long_prefill_ms / t.baseline.prefill_ms,
                r.decode_ms / t.voco.decode_ms,
                r.vision_ms / t.vision_ms,
                r.stage1_ms / t.stage1_ms
            );
        }
    }
    let _ = writeln!(s);
}

fn table7(s: &mut String, r: &BackendRun) {
    let b = &r.baseline;
    let _ = writeln!(s, "## Table 7 analog: {}\n", r.backend);
    let _ = writeln!(
        s,
        "| method | KV cache length | KV cache (f16) | Δ | question prefill ms | Δ | question FLOPs (G) | Δ | decode ms/token |"
    );
    let _ = writeln!(s, "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    let fc = r.full_caching.kv_bytes_f16;
    let row = |s: &mut String, name: &str, q: &Question| {
        let (len, bytes, dkv) = match q.kv_positions {
            0 => ("— (recomputed)".to_string(), "—".to_string(), "—".to_string()),
            _ if q.kv_bytes_f16 == fc => (q.kv_positions.to_string(), mib(q.kv_bytes_f16), "—".to_string()),
            _ => (q.kv_positions.to_string(), mib(q.kv_bytes_f16), delta(fc as f64, q.kv_bytes_f16 as f64)),
        };
        let _ = writeln!(
            s,
            "| {name} | {len} | {bytes} | {dkv} | {:.1} | {} | {} | {} | {:.1} |",
            q.prefill_ms,
            if q.kv_positions == 0 { "—".into() } else { delta(b.prefill_ms, q.prefill_ms) },
            gflop(q.prefill_flops),
            if q.kv_positions == 0 { "—".into() } else { delta(b.prefill_flops, q.prefill_flops) },
            q.decode_ms
        );
    };
    row(s, "Baseline", b);
    row(s, "Full caching", &r.full_caching);
    row(s, "**VoCo-LLaMA**", &r.voco);
    let _ = writeln!(
        s,
        "\nOnce per image: vision encode {:.1} ms ({} GFLOP), stage 1 (compress) {:.1} ms ({} GFLOP). \
         KV-cache Δ is against full caching, time and FLOPs Δ against the baseline, as in the paper.\n",
        r.vision_ms,
        gflop(r.vision_flops),
        r.stage1_ms,
        gflop(r.stage1_flops)
    );
    let [near, far] = r.decode_by_position;
    let _ = writeln!(
        s,
        "Decoding as the KV cache grows (written in place, never copied per token): {:.1} ms/token with {} \
         positions cached, {:.1} ms/token with {} ({}); the attention's share of a token's FLOPs goes from \
         {:.1} % to {:.1} %.\n",
        near.decode_ms,
        near.positions,
        far.decode_ms,
        far.positions,
        delta(near.decode_ms, far.decode_ms),
        100.0 * near.attention_share,
        100.0 * far.attention_share
    );
}

fn backends(s: &mut String, runs: &[BackendRun]) {
    let Some(first) = runs.first() else { return };
    let _ = writeln!(s, "## Backends\n");
    let _ = writeln!(
        s,
        "| backend | vision ms | stage 1 ms | baseline ms | full caching ms | VoCo ms | VoCo decode ms/token | \
         peak host MiB | CPU threads | GEMM GFLOP/s | baseline prefill GFLOP/s | share of GEMM | speed vs {} (baseline) |",
        first.backend
    );
    let _ = writeln!(s, "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    for r in runs {
        let _ = writeln!(
            s,
            "| {} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {} | {} | {:.1} | {:.1} | {:.0} % | {:.2}x |",
            r.backend,
            r.vision_ms,
            r.stage1_ms,
            r.baseline.prefill_ms,
            r.full_caching.prefill_ms,
            r.voco.prefill_ms,
            r.voco.decode_ms,
            r.peak_mib.map_or("—".into(), |m| format!("{m:.0}")),
            r.cpu_threads.map_or("—".into(), |n| n.to_string()),
            r.gemm_gflops,
            r.prefill_gflops(),
            100.0 * r.gemm_fraction(),
            first.baseline.prefill_ms / r.baseline.prefill_ms
        );
    }
    let _ = writeln!(
        s,
        "\nGEMM: one {n}×{n}×{n} f32 matmul on the backend. Peak host memory is the process's resident peak \
         while that backend ran (device memory of a discrete GPU is not in it).\n",
        n = first.gemm_size
    );
}

fn torch(s: &mut String, r: &BackendRun, t: &TorchRun) {
    let _ = writeln!(s, "## Side by side with PyTorch\n");
    let _ = writeln!(
        s,
        "transformers {} on torch {} ({}, {}, {} threads), the same shapes, random weights and stages, \
         run by `tools/bench_torch.py` in this same run; vocollama on `{}`{}.\n",
        t.transformers,
        t.torch,
        t.device,
        t.dtype,
        t.threads,
        r.backend,
        r.cpu_threads.map_or(String::new(), |n| format!(" ({n} threads)"))
    );
    let _ = writeln!(s, "| stage | vocollama ms | PyTorch ms | vocollama / PyTorch | |");
    let _ = writeln!(s, "| --- | ---: | ---: | ---: | --- |");
    let rows = [
        ("vision encode", r.vision_ms, t.vision_ms),
        ("stage 1 (compress)", r.stage1_ms, t.stage1_ms),
        ("baseline prefill", r.baseline.prefill_ms, t.baseline.prefill_ms),
        ("full caching prefill", r.full_caching.prefill_ms, t.full_caching.prefill_ms),
        ("VoCo prefill", r.voco.prefill_ms, t.voco.prefill_ms),
        ("decode per token (baseline cache)", r.baseline.decode_ms, t.baseline.decode_ms),
        ("decode per token (VoCo cache)", r.voco.decode_ms, t.voco.decode_ms),
    ];
    for (name, ours, theirs) in rows {
        let ratio = ours / theirs;
        let note = if ratio > 1.05 {
            "vocollama slower"
        } else if ratio < 0.95 {
            "vocollama faster"
        } else {
            "even"
        };
        let _ = writeln!(s, "| {name} | {ours:.1} | {theirs:.1} | {ratio:.2} | {note} |");
    }
    let _ = writeln!(
        s,
        "\nGEMM ceiling: vocollama {:.1} GFLOP/s, PyTorch {:.1} GFLOP/s. PyTorch's `FlopCounterMode` counts \
         {} / {} / {} / {} GFLOP for vision / baseline / full caching / VoCo prefill (ours, analytic: {} / {} / {} / {}).\n",
        r.gemm_gflops,
        t.gemm_gflops,
        gflop(t.counted_flops.vision),
        gflop(t.counted_flops.baseline_prefill),
        gflop(t.counted_flops.full_caching_prefill),
        gflop(t.counted_flops.voco_prefill),
        gflop(r.vision_flops),
        gflop(r.baseline.prefill_flops),
        gflop(r.full_caching.prefill_flops),
        gflop(r.voco.prefill_flops),
    );
}
