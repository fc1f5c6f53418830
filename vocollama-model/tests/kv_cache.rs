//! The KV cache written in place (`docs/design.md` §13): decoding token by
//! token reallocates once per 256 positions, never per token, and gives the
//! logits of one pass over the whole sequence; rewinding reuses the buffers.

mod common;

use common::*;
use vocollama_model::infer::kv_cache::CHUNK;
use vocollama_model::{LlavaModel, LoadOptions, Session};

#[test]
fn decoding_grows_the_cache_by_chunks_and_equals_one_pass() {
    const PROMPT: usize = 10;
    const DECODE: usize = 290; // 300 positions: past the first chunk
    for (backend, device, tol) in devices() {
        let model = LlavaModel::load(&fixture("llama-tied"), &LoadOptions::f32(), &device).unwrap();
        let ids: Vec<i64> = (0..(PROMPT + DECODE) as i64).map(|i| 3 + (i * 37) % 500).collect();

        let mut s = Session::empty(&model);
        s.feed(&ids[..PROMPT], &[]).unwrap();
        let mark = s.mark();
        let mut last = vec![];
        for &id in &ids[PROMPT..] {
            last = s.next_logits(&[id], &[]).unwrap();
        }
        let cache = s.cache();
        assert_eq!(cache.len(), PROMPT + DECODE);
        // The prompt's rows were the first buffer; growing past it takes whole chunks.
        assert_eq!(cache.reallocations(), (PROMPT + DECODE).div_ceil(CHUNK), "[{backend}]");
        assert_eq!(cache.capacity(), (PROMPT + DECODE).next_multiple_of(CHUNK), "[{backend}]");

        let whole = Session::empty(&model).next_logits(&ids, &[]).unwrap();
        let scale = whole.iter().fold(0f32, |m, x| m.max(x.abs()));
        let rel = last.iter().zip(&whole).fold(0f32, |m, (a, b)| m.max((a - b).abs())) / scale;
        assert!(rel <= tol, "[{backend}] token by token vs one pass: {rel:e}");

        // Back to the prompt and again: the same logits, the same buffers.
        let grown = s.cache().reallocations();
        s.rewind(mark);
        assert_eq!(s.cached(), PROMPT);
        let mut again = vec![];
        for &id in &ids[PROMPT..] {
            again = s.next_logits(&[id], &[]).unwrap();
        }
        assert_eq!(s.cache().reallocations(), grown, "[{backend}] rewinding keeps the buffers");
        let rel = again.iter().zip(&last).fold(0f32, |m, (a, b)| m.max((a - b).abs())) / scale;
        assert!(rel <= tol, "[{backend}] after rewinding: {rel:e}");
    }
}
