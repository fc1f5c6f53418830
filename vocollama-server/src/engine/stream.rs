//! One request while it decodes: its sampler, the text streamed so far, and
//! the stop sequences, which may end mid-token and span tokens.

use std::time::{Duration, Instant};

use tokio::sync::mpsc::UnboundedSender;
use vocollama_model::Sampler;
use vocollama_model::text::StreamDecoder;

use super::{Done, Event};

/// Text passed on as it comes, except what may be the start of a stop
/// sequence: that waits until it is known to be one (the answer ends before
/// it) or not (it is passed on).
#[derive(Debug, Default)]
pub struct StopFilter {
    stops: Vec<String>,
    held: String,
}

impl StopFilter {
    pub fn new(stops: Vec<String>) -> Self {
        Self { stops, held: String::new() }
    }

    /// Add `text`; what can be passed on, and whether a stop sequence was met.
    pub fn push(&mut self, text: &str) -> (String, bool) {
        self.held.push_str(text);
        if let Some(at) = self.stops.iter().filter_map(|s| self.held.find(s.as_str())).min() {
            let out = self.held[..at].to_string();
            self.held.clear();
            return (out, true);
        }
        // The longest tail of what is held that begins some stop sequence stays held.
        let keep = self
            .held
            .char_indices()
            .map(|(i, _)| i)
            .find(|&i| self.stops.iter().any(|s| s.starts_with(&self.held[i..])))
            .unwrap_or(self.held.len());
        let out = self.held[..keep].to_string();
        self.held.drain(..keep);
        (out, false)
    }

    /// The answer ended: what was held is text after all.
    pub fn finish(&mut self) -> String {
        std::mem::take(&mut self.held)
    }
}

/// A request in the decode batch.
pub struct Active<'t> {
    pub events: UnboundedSender<Event>,
    pub sampler: Sampler,
    /// Every id so far, prompt included (the repetition penalty's context).
    pub context: Vec<i64>,
    pub decoder: StreamDecoder<'t>,
    pub stop: StopFilter,
    pub generated: usize,
    /// Tokens this request may generate: its `max_tokens`, or what is left of the context.
    pub limit: usize,
    /// Next-token logits.
    pub logits: Vec<f32>,
    pub deadline: Instant,
    pub timeout: Duration,
    pub decode_started: Instant,
}

impl Active<'_> {
    /// Send text on, unless it is empty. A client that went away is noticed at the next step.
    pub fn send_text(&self, text: String) {
        if !text.is_empty() {
            let _ = self.events.send(Event::Text(text));
        }
    }

    /// The answer is over: the text held back, then `Done`.
    pub fn finish(mut self, finish_reason: &'static str) {
        let tail = self.decoder.finish().unwrap_or_default();
        let (text, stopped) = self.stop.push(&tail);
        self.send_text(text);
        if !stopped {
            let rest = self.stop.finish();
            self.send_text(rest);
        }
        let decode = self.decode_started.elapsed();
        let done = Done { finish_reason, completion_tokens: self.generated, decode };
        let _ = self.events.send(Event::Done(done));
    }
}

#[cfg(test)]
mod tests {
    use super::StopFilter;

    fn run(stops: &[&str], pieces: &[&str]) -> (String, bool) {
        let mut f = StopFilter::new(stops.iter().map(|s| s.to_string()).collect());
        let mut out = String::new();
        for p in pieces {
            let (t, hit) = f.push(p);
            out.push_str(&t);
            if hit {
                return (out, true);
            }
        }
        out.push_str(&f.finish());
        (out, false)
    }

    #[test]
    fn stop_sequences_end_the_answer_before_them_even_across_pieces() {
        assert_eq!(run(&["END"], &["a b", "c E", "N", "D tail"]), ("a bc ".into(), true));
        assert_eq!(run(&["END"], &["a E", "Nx"]), ("a ENx".into(), false));
        assert_eq!(run(&["\n\n", "."], &["one", ". two"]), ("one".into(), true));
        assert_eq!(run(&[], &["as ", "is"]), ("as is".into(), false));
        assert_eq!(run(&["é!"], &["caf", "é", "!"]), ("caf".into(), true));
    }
}
