//! Counters for `GET /metrics`, in Prometheus' text format.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use crate::engine::Started;
use crate::store::StoreStats;

#[derive(Default)]
pub struct Metrics {
    /// Requests by endpoint.
    requests: Mutex<BTreeMap<&'static str, u64>>,
    /// Errors by OpenAI error code.
    errors: Mutex<BTreeMap<&'static str, u64>>,
    cancelled: AtomicU64,
    images_compressed: AtomicU64,
    prompt_tokens: AtomicU64,
    cached_tokens: AtomicU64,
    completion_tokens: AtomicU64,
    active: AtomicU64,
    steps: AtomicU64,
    /// The most requests one decode step has run.
    batch_max: AtomicU64,
    /// Tokens fed by decode steps, and the steps' time in nanoseconds: the decode rate of all requests together.
    step_tokens: AtomicU64,
    step_nanos: AtomicU64,
    /// Tokens per second of the last decode step (all requests together), as f64 bits.
    last_step_rate: AtomicU64,
}

fn bump<K: Ord>(map: &Mutex<BTreeMap<K, u64>>, key: K) {
    *map.lock().expect("metrics").entry(key).or_default() += 1;
}

impl Metrics {
    pub fn request(&self, endpoint: &'static str) {
        bump(&self.requests, endpoint);
    }

    pub fn error(&self, code: &'static str) {
        bump(&self.errors, code);
    }

    pub fn cancelled(&self) {
        self.cancelled.fetch_add(1, Relaxed);
    }

    pub fn compressed(&self, images: usize) {
        self.images_compressed.fetch_add(images as u64, Relaxed);
    }

    pub fn started(&self, s: &Started) {
        self.prompt_tokens.fetch_add(s.prompt_tokens as u64, Relaxed);
        self.cached_tokens.fetch_add(s.cached_tokens as u64, Relaxed);
    }

    pub fn generated(&self, tokens: usize) {
        self.completion_tokens.fetch_add(tokens as u64, Relaxed);
    }

    pub fn set_active(&self, n: usize) {
        self.active.store(n as u64, Relaxed);
    }

    pub fn step(&self, tokens: usize, took: Duration) {
        self.steps.fetch_add(1, Relaxed);
        self.batch_max.fetch_max(tokens as u64, Relaxed);
        self.step_tokens.fetch_add(tokens as u64, Relaxed);
        self.step_nanos.fetch_add(took.as_nanos() as u64, Relaxed);
        let rate = tokens as f64 / took.as_secs_f64().max(1e-9);
        self.last_step_rate.store(rate.to_bits(), Relaxed);
    }

    /// The exposition text, with the store's and the queue's state at this moment.
    pub fn render(&self, store: StoreStats, queued: usize) -> String {
        let mut out = String::new();
        let mut family = |name: &str, kind: &str, help: &str, samples: &[(String, f64)]| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for (labels, v) in samples {
                let _ = writeln!(out, "{name}{labels} {v}");
            }
        };
        let labelled = |map: &Mutex<BTreeMap<&'static str, u64>>, label: &str| -> Vec<(String, f64)> {
            map.lock().expect("metrics").iter().map(|(k, v)| (format!("{{{label}=\"{k}\"}}"), *v as f64)).collect()
        };
        let one = |v: f64| vec![(String::new(), v)];
        let get = |a: &AtomicU64| a.load(Relaxed) as f64;
        family(
            "vocollama_requests_total",
            "counter",
            "HTTP requests by endpoint.",
            &labelled(&self.requests, "endpoint"),
        );
        family("vocollama_errors_total", "counter", "Failed requests by error code.", &labelled(&self.errors, "code"));
        family(
            "vocollama_cancelled_total",
            "counter",
            "Requests whose client went away before the answer ended.",
            &one(get(&self.cancelled)),
        );
        family("vocollama_store_hits_total", "counter", "Images found in the VoCo store.", &one(store.hits as f64));
        family(
            "vocollama_store_misses_total",
            "counter",
            "Images not in the VoCo store (compressed by stage 1).",
            &one(store.misses as f64),
        );
        family(
            "vocollama_store_evictions_total",
            "counter",
            "VoCo caches dropped from memory for room.",
            &one(store.evictions as f64),
        );
        family("vocollama_store_entries", "gauge", "VoCo caches held in memory.", &one(store.entries as f64));
        family("vocollama_store_bytes", "gauge", "Bytes of VoCo caches held in memory.", &one(store.bytes as f64));
        family("vocollama_store_budget_bytes", "gauge", "The VoCo store's memory budget.", &one(store.budget as f64));
        family(
            "vocollama_images_compressed_total",
            "counter",
            "Images run through stage 1.",
            &one(get(&self.images_compressed)),
        );
        family(
            "vocollama_prompt_tokens_total",
            "counter",
            "Prompt positions of answered requests.",
            &one(get(&self.prompt_tokens)),
        );
        family(
            "vocollama_cached_tokens_total",
            "counter",
            "Prompt positions that came from the VoCo store.",
            &one(get(&self.cached_tokens)),
        );
        family("vocollama_completion_tokens_total", "counter", "Tokens generated.", &one(get(&self.completion_tokens)));
        family("vocollama_queue_depth", "gauge", "Requests waiting to be admitted.", &one(queued as f64));
        family("vocollama_active_requests", "gauge", "Requests decoding together.", &one(get(&self.active)));
        family("vocollama_decode_steps_total", "counter", "Batched decode steps.", &one(get(&self.steps)));
        family(
            "vocollama_decode_batch_max",
            "gauge",
            "The most requests one decode step has run.",
            &one(get(&self.batch_max)),
        );
        family(
            "vocollama_decode_step_tokens_total",
            "counter",
            "Tokens fed through decode steps.",
            &one(get(&self.step_tokens)),
        );
        family(
            "vocollama_decode_step_seconds_total",
            "counter",
            "Time spent in decode steps (tokens over it: the decode rate of all requests together).",
            &one(get(&self.step_nanos) / 1e9),
        );
        family(
            "vocollama_decode_tokens_per_second",
            "gauge",
            "Tokens per second of the last decode step, all requests together.",
            &one(f64::from_bits(self.last_step_rate.load(Relaxed))),
        );
        out
    }
}
