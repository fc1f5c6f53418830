//! Progress on stderr (drawn only when stderr is a terminal) and the timing line.

use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use vocollama_model::Generation;
use vocollama_model::voco::ImageStats;

/// A spinner for one step whose length is unknown (loading weights).
pub fn spinner(message: String) -> ProgressBar {
    let pb = ProgressBar::new_spinner().with_message(message);
    pb.enable_steady_tick(Duration::from_millis(100));
    pb
}

/// A bar over the named steps of a job (encoding, compressing).
pub fn steps(len: u64, message: &str) -> ProgressBar {
    let pb = ProgressBar::new(len).with_message(message.to_string());
    pb.set_style(
        ProgressStyle::with_template("{spinner} {msg} [{bar:20}] {pos}/{len} {elapsed}").expect("valid template"),
    );
    pb.enable_steady_tick(Duration::from_millis(100));
    pb
}

/// What a run measured, printed as one line like llama.cpp's.
#[derive(Default)]
pub struct Timing {
    /// What the weights compute in, and why.
    pub weights: String,
    /// Loading the model.
    pub load: Duration,
    pub image: ImageStats,
    pub prefill_tokens: usize,
    pub prefill: Duration,
    pub decode_tokens: usize,
    pub decode: Duration,
}

impl Timing {
    pub fn add(&mut self, g: &Generation) {
        self.prefill_tokens += g.prefill_tokens;
        self.prefill += g.prefill;
        self.decode_tokens += g.decode_tokens;
        self.decode += g.decode;
    }

    pub fn line(&self) -> String {
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        // Tokens a second, or seconds a token when that is slower than one a second.
        let rate = |n: usize, d: Duration| match n as f64 / d.as_secs_f64() {
            _ if n == 0 || d.is_zero() => "0.0 tok/s".to_string(),
            r if r < 1.0 => format!("{:.1} s/tok", 1.0 / r),
            r => format!("{r:.1} tok/s"),
        };
        format!(
            "timing: vision encode {:.1} ms | compress {:.1} ms | prefill {} tok, {} | decode {} tok, {} | cache {} bytes | weights {} | load {:.2} s{}",
            ms(self.image.vision_encode),
            ms(self.image.compress),
            self.prefill_tokens,
            rate(self.prefill_tokens, self.prefill),
            self.decode_tokens,
            rate(self.decode_tokens, self.decode),
            self.image.cache_bytes,
            self.weights,
            self.load.as_secs_f64(),
            vocollama_model::memory::peak_resident()
                .map(|b| format!(" | peak memory {:.1} MiB", b as f64 / (1u64 << 20) as f64))
                .unwrap_or_default()
        )
    }
}
