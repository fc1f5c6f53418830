//! Choosing the next token from logits: greedy, or temperature with top-k,
//! top-p and a repetition penalty, from a seeded generator so a run repeats.

use crate::rng::SplitMix64;

/// Sampling settings; the default is greedy, as the paper evaluates (`docs/design.md` §10).
#[derive(Debug, Clone, PartialEq)]
pub struct SamplingConfig {
    /// 0 = greedy.
    pub temperature: f32,
    /// Keep only the k most likely tokens (0 = all).
    pub top_k: usize,
    /// Keep the smallest set of tokens whose probability reaches p (1 = all).
    pub top_p: f32,
    /// CTRL-style penalty for tokens already in the context (1 = none).
    pub repetition_penalty: f32,
    pub seed: u64,
}

impl Default for SamplingConfig {
    fn default() -> Self {
        Self { temperature: 0.0, top_k: 0, top_p: 1.0, repetition_penalty: 1.0, seed: 0 }
    }
}

impl SamplingConfig {
    /// Refuse settings that would sample nonsense, naming the first bad one.
    pub fn check(&self) -> crate::Result<()> {
        self.problem().map_or(Ok(()), |(_, msg)| Err(crate::Error::Invalid(msg)))
    }

    /// The first setting that would sample nonsense: its name, and what is wrong.
    pub fn problem(&self) -> Option<(&'static str, String)> {
        let bad =
            |field: &'static str, want: &str, got: f32| Some((field, format!("{field}: expected {want}, got {got}")));
        if !(self.temperature.is_finite() && self.temperature >= 0.0) {
            return bad("temperature", "a finite number ≥ 0 (0 = greedy)", self.temperature);
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return bad("top_p", "a number in (0, 1]", self.top_p);
        }
        if !(self.repetition_penalty.is_finite() && self.repetition_penalty > 0.0) {
            return bad("repetition_penalty", "a finite number > 0 (1 = off)", self.repetition_penalty);
        }
        None
    }
}

/// A seeded sampler (SplitMix64: small, fast, reproducible on every platform).
#[derive(Debug, Clone)]
pub struct Sampler {
    config: SamplingConfig,
    rng: SplitMix64,
}

impl Sampler {
    pub fn new(config: SamplingConfig) -> Self {
        Self { rng: SplitMix64::new(config.seed), config }
    }

    /// The next token given `logits` and the ids seen so far (for the penalty).
    pub fn sample(&mut self, logits: &[f32], context: &[i64]) -> usize {
        let c = &self.config;
        let mut logits = logits.to_vec();
        if c.repetition_penalty != 1.0 {
            for &t in context {
                if let Some(x) = usize::try_from(t).ok().and_then(|t| logits.get_mut(t)) {
                    // As transformers: shrink positive logits, push negative ones further down.
                    *x = if *x > 0.0 { *x / c.repetition_penalty } else { *x * c.repetition_penalty };
                }
            }
        }
        if c.temperature <= 0.0 {
            return argmax(&logits);
        }
        let mut order: Vec<usize> = (0..logits.len()).collect();
        order.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]).then(a.cmp(&b)));
        if c.top_k > 0 {
            order.truncate(c.top_k);
        }
        let max = logits[order[0]];
        let weights: Vec<f64> = order.iter().map(|&i| (((logits[i] - max) / c.temperature) as f64).exp()).collect();
        let total: f64 = weights.iter().sum();
        let mut keep = order.len();
        if c.top_p < 1.0 {
            let mut acc = 0.0;
            for (n, w) in weights.iter().enumerate() {
                acc += w / total;
                if acc >= c.top_p as f64 {
                    keep = n + 1;
                    break;
                }
            }
        }
        let total: f64 = weights[..keep].iter().sum();
        let mut r = self.rng.next_f64() * total;
        for (n, w) in weights[..keep].iter().enumerate() {
            r -= w;
            if r <= 0.0 {
                return order[n];
            }
        }
        order[keep - 1]
    }
}

/// Index of the largest value (the first, on ties).
pub fn argmax(v: &[f32]) -> usize {
    v.iter().enumerate().fold(0, |best, (i, &x)| if x > v[best] { i } else { best })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(config: SamplingConfig, logits: &[f32], n: usize) -> Vec<usize> {
        let mut s = Sampler::new(config);
        let mut c = vec![0; logits.len()];
        for _ in 0..n {
            c[s.sample(logits, &[])] += 1;
        }
        c
    }

    #[test]
    fn greedy_is_argmax_and_penalty_applies() {
        let mut s = Sampler::new(SamplingConfig::default());
        assert_eq!(s.sample(&[0.1, 2.0, 1.9], &[]), 1);
        let mut s = Sampler::new(SamplingConfig { repetition_penalty: 1.2, ..Default::default() });
        assert_eq!(s.sample(&[0.1, 2.0, 1.9], &[1]), 2, "2.0 / 1.2 < 1.9");
        assert_eq!(s.sample(&[-1.0, -1.1, -3.0], &[0]), 1, "-1.0 * 1.2 < -1.1");
    }

    #[test]
    fn temperature_follows_the_softmax() {
        let logits = [0.0, (3f32).ln()]; // probabilities 1/4, 3/4
        let c = counts(SamplingConfig { temperature: 1.0, seed: 7, ..Default::default() }, &logits, 20000);
        let frac = c[1] as f64 / 20000.0;
        assert!((frac - 0.75).abs() < 0.02, "{frac}");
    }

    #[test]
    fn top_k_and_top_p_cut_the_tail() {
        let logits = [3.0, 2.0, 1.0, 0.0];
        let c = counts(SamplingConfig { temperature: 1.0, top_k: 2, seed: 1, ..Default::default() }, &logits, 2000);
        assert_eq!((c[2], c[3]), (0, 0));
        assert!(c[0] > 0 && c[1] > 0);
        // p(0) = 0.64: top_p 0.5 keeps only it.
        let c = counts(SamplingConfig { temperature: 1.0, top_p: 0.5, seed: 1, ..Default::default() }, &logits, 500);
        assert_eq!(c[0], 500);
    }

    #[test]
    fn a_seed_repeats_and_another_differs() {
        let logits: Vec<f32> = (0..50).map(|i| (i % 7) as f32 * 0.3).collect();
        let run = |seed| {
            let mut s = Sampler::new(SamplingConfig { temperature: 1.0, seed, ..Default::default() });
            (0..40).map(|_| s.sample(&logits, &[])).collect::<Vec<_>>()
        };
        assert_eq!(run(3), run(3));
        assert_ne!(run(3), run(4));
    }
}
