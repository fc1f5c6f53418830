//! Conversations decoded together ([`DecodeBatch`]) against each decoded
//! alone, and against transformers' greedy tokens: caches of different
//! lengths joined and left mid-way, on every backend.

mod common;

use common::*;
use vocollama_model::infer::batch::DecodeBatch;
use vocollama_model::infer::sampling::argmax;
use vocollama_model::{LlavaModel, LoadOptions, Session};

const VOCO: i64 = 511;
const TOKENS: usize = 8;

/// One conversation: its stage-2 session after the prompt, and what it decodes alone.
struct Stream<'m> {
    session: Option<Session<'m>>,
    first: Vec<f32>,
    /// Per step: the logits the conversation alone gets, and its greedy token.
    alone: Vec<(Vec<f32>, i64)>,
    /// transformers' greedy tokens, where the prompt is the reference's.
    reference: Option<Vec<i64>>,
}

fn rel(got: &[f32], want: &[f32]) -> f32 {
    let scale = want.iter().fold(0f32, |m, x| m.max(x.abs()));
    assert!(scale > 0.0 && got.iter().all(|x| x.is_finite()));
    got.iter().zip(want).fold(0f32, |m, (a, b)| m.max((a - b).abs())) / scale
}

#[test]
fn batched_decoding_equals_each_conversation_alone() {
    let r = read_tensors(fixture("llava-gqa-bf16/voco-reference.safetensors"));
    for (backend, device, tol) in devices() {
        let m = LlavaModel::load(&fixture("llava-gqa-bf16"), &LoadOptions::f32(), &device).unwrap();
        let pixels = m.load_image(&assets().join("images/wide.png")).unwrap();
        // N = 1, 8, 2 with the reference question, then N = 2 with a shorter one: four cache lengths.
        let cases: Vec<(usize, bool)> = vec![(1, true), (8, true), (2, true), (2, false)];
        let mut streams: Vec<Stream> = cases
            .iter()
            .map(|&(n, full)| {
                let ids = ids(&r[&format!("n{n}_ids")]);
                let cut = ids.iter().rposition(|&t| t == VOCO).unwrap() + 1;
                let (prefix, text) = ids.split_at(cut);
                let text: Vec<i64> = if full { text.to_vec() } else { text[..text.len() / 2].to_vec() };
                let cache = compress_one(&m, prefix, VOCO, &pixels);
                let mut s = Session::from_voco(&m, &cache).unwrap();
                let first = s.next_logits(&text, &[]).unwrap();
                let mut alone_session = s.clone();
                let mut logits = first.clone();
                let mut alone = Vec::new();
                for _ in 0..TOKENS {
                    let id = argmax(&logits) as i64;
                    alone.push((logits.clone(), id));
                    logits = alone_session.next_logits(&[id], &[]).unwrap();
                }
                let reference = full.then(|| common::ids(&r[&format!("n{n}_greedy")]));
                Stream { session: Some(s), first, alone, reference }
            })
            .collect();

        // Streams 0 and 1 start together; 2 joins after two steps, 3 after three;
        // each leaves after its TOKENS tokens, so samples leave from the middle too.
        let mut batch = DecodeBatch::new(&m);
        let mut members: Vec<(usize, Vec<f32>, Vec<i64>)> = Vec::new(); // (stream, logits, tokens)
        let joins = [(0, 0), (0, 1), (2, 2), (3, 3)];
        for global in 0.. {
            for &(_, s) in joins.iter().filter(|(at, _)| *at == global) {
                batch.join(streams[s].session.take().unwrap());
                members.push((s, streams[s].first.clone(), Vec::new()));
            }
            if members.is_empty() {
                break;
            }
            let mut feed = Vec::new();
            for (s, logits, tokens) in &mut members {
                let step = tokens.len();
                let (want, id) = &streams[*s].alone[step];
                let d = rel(logits, want);
                assert!(d <= tol, "[{backend}] stream {s} step {step}: batched logits {d:.3e} from alone's > {tol:e}");
                let got = argmax(logits) as i64;
                assert_eq!(got, *id, "[{backend}] stream {s} step {step}: greedy token");
                tokens.push(got);
                feed.push(got);
            }
            // Finished streams leave before the step.
            let keep: Vec<bool> = members.iter().map(|m| m.2.len() < TOKENS).collect();
            for (s, _, tokens) in members.iter().filter(|m| m.2.len() == TOKENS) {
                if let Some(want) = &streams[*s].reference {
                    assert_eq!(tokens, want, "[{backend}] stream {s}: transformers' greedy tokens");
                }
            }
            let mut flags = keep.iter();
            members.retain(|_| *flags.next().unwrap());
            let mut flags = keep.iter();
            feed.retain(|_| *flags.next().unwrap());
            batch.retain(&keep);
            if members.is_empty() {
                assert!(batch.is_empty());
                continue;
            }
            let logits = batch.step(&feed).unwrap();
            assert_eq!(logits.len(), members.len());
            for (member, l) in members.iter_mut().zip(logits) {
                member.1 = l;
            }
        }
        assert!(streams.iter().all(|s| s.session.is_none()), "[{backend}] every stream ran");
    }
}
