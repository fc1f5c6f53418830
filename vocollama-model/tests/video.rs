//! Video caches: moving a cache by a RoPE rotation equals computing it at the
//! new positions, and answering from joined frame caches equals one masked
//! forward over the long sequence built the slow way (per frame `[BOS, image,
//! ▁\n, VoCo]` blocks that see only themselves, text that sees every VoCo
//! token), for both position policies.

mod common;

use burn::tensor::Tensor;
use common::*;
use vocollama_model::model::llava::expand_ids;
use vocollama_model::voco::compress;
use vocollama_model::{FramePositions, LlavaModel, LoadOptions, Pixels, Session, Stage1Prompt, VocoCache};

const VOCO: i64 = 511;
const N: usize = 2;

fn model(device: &burn::tensor::Device) -> LlavaModel {
    LlavaModel::load(&fixture("llava-gqa-bf16"), &LoadOptions::f32(), device).unwrap()
}

fn frame_pixels(model: &LlavaModel) -> Vec<Pixels> {
    ["wide.png", "tall.png", "photo.png"]
        .iter()
        .map(|f| model.load_image(&assets().join("images").join(f)).unwrap())
        .collect()
}

fn frames(model: &LlavaModel) -> Vec<Tensor<3>> {
    frame_pixels(model).iter().map(|p| model.encode_image(p).unwrap()).collect()
}

/// Each frame compressed alone.
fn frame_caches(model: &LlavaModel) -> Vec<VocoCache> {
    frame_pixels(model).iter().map(|p| compress_one(model, &stage1(), VOCO, p)).collect()
}

/// The stage-1 prompt of one frame: `[BOS, <image>, ▁, \n, <voco>*N]`.
fn stage1() -> Vec<i64> {
    [vec![1, -200, 453, 13], vec![VOCO; N]].concat()
}

#[test]
fn a_moved_cache_equals_one_computed_there() {
    for (name, device, _) in devices() {
        let m = model(&device);
        let img = frames(&m).remove(0);
        let at0 = frame_caches(&m).remove(0);
        for delta in [5usize, 77, 300] {
            let direct = compress_at(&m, &stage1(), VOCO, img.clone(), delta);
            let moved = at0.shifted(delta as i64, m.llm.inv_freq()).unwrap();
            assert_eq!(moved.positions, direct.positions);
            for (i, ((mk, mv), (dk, dv))) in moved.layers.iter().zip(&direct.layers).enumerate() {
                let (ek, ev) = (max_rel(mk.clone(), dk.clone()), max_rel(mv.clone(), dv.clone()));
                eprintln!("[{name}] Δ{delta} layer {i}: keys {ek:.2e}, values {ev:.2e}");
                assert!(ek <= 1e-5 && ev <= 1e-5, "[{name}] Δ{delta} layer {i}: keys {ek:e}, values {ev:e}");
            }
        }
    }
}

/// One forward over all frames and the text, with explicit positions and the
/// block mask: the definition the joined cache must reproduce. Logits of the text rows.
fn slow_way(m: &LlavaModel, images: &[Tensor<3>], text: &[i64], policy: FramePositions) -> Vec<f32> {
    let per = expand_ids(&stage1(), m.image_tokens()).len();
    let k = images.len();
    let ids: Vec<i64> = [stage1().repeat(k), text.to_vec()].concat();
    let shift = |t: usize| if policy == FramePositions::Sequential { t * N } else { 0 };
    let text_start = shift(k - 1) + per;
    let mut positions: Vec<i64> = (0..k).flat_map(|t| (0..per).map(move |p| (shift(t) + p) as i64)).collect();
    positions.extend((0..text.len()).map(|i| (text_start + i) as i64));
    let len = positions.len();
    let block = |r: usize| (r < k * per).then(|| r / per);
    let is_voco = |c: usize| c < k * per && c % per >= per - N;
    let mut mask = vec![true; len * len];
    for r in 0..len {
        for c in 0..=r {
            let visible = match (block(r), block(c)) {
                (Some(a), Some(b)) => a == b,
                (None, _) => is_voco(c) || block(c).is_none(),
                (Some(_), None) => false,
            };
            mask[r * len + c] = !visible;
        }
    }
    let x = m.embed_with_images(&ids, images).unwrap();
    let h = forward_with_mask(&m.llm, x, positions, mask);
    let [b, l, d] = h.dims();
    m.llm.logits(h.slice([0..b, l - text.len()..l, 0..d])).into_data().try_into_vec::<f32>().unwrap()
}

#[test]
fn joined_frames_equal_the_masked_long_sequence() {
    let text: Vec<i64> = vec![453, 13, 474, 264, 320, 308, 77, 123, 45];
    for (name, device, _) in devices() {
        let m = model(&device);
        let images = frames(&m);
        let caches = frame_caches(&m);
        for policy in [FramePositions::Sequential, FramePositions::Shared] {
            let joined = VocoCache::join(&caches, policy, m.llm.inv_freq()).unwrap();
            assert_eq!(joined.len(), 3 * N);
            let mut session = Session::from_voco(&m, &joined).unwrap();
            let h = session.feed(&text, &[]).unwrap();
            let [b, l, d] = h.dims();
            let got = m.llm.logits(h.slice([0..b, 0..l, 0..d])).into_data().try_into_vec::<f32>().unwrap();
            let want = slow_way(&m, &images, &text, policy);
            let scale = want.iter().fold(0f32, |a, x| a.max(x.abs()));
            let rel = got.iter().zip(&want).fold(0f32, |a, (x, y)| a.max((x - y).abs())) / scale;
            eprintln!("[{name}] {policy:?}: max|Δ|/max|ref| = {rel:.2e}");
            assert!(rel <= 1e-5, "[{name}] {policy:?}: {rel:e}");
        }
        // The policies differ: frame order is visible to RoPE only when sequential.
        let seq = VocoCache::join(&caches, FramePositions::Sequential, m.llm.inv_freq()).unwrap();
        let shared = VocoCache::join(&caches, FramePositions::Shared, m.llm.inv_freq()).unwrap();
        assert_ne!(seq.positions, shared.positions);
        assert!(VocoCache::join(&[], FramePositions::Shared, m.llm.inv_freq()).is_err());
    }
}

#[test]
fn batched_frames_equal_frames_compressed_alone() {
    for (name, device, _) in devices() {
        let m = model(&device);
        let alone = frame_caches(&m);
        let prompt = Stage1Prompt::from_ids(stage1(), VOCO).unwrap();
        let (batch, _) = compress(&m, &prompt, &frame_pixels(&m)).unwrap();
        assert_eq!(batch.len(), 3);
        for (t, (b, a)) in batch.iter().zip(&alone).enumerate() {
            assert_eq!(b.positions, a.positions);
            assert_eq!(b.frames, 1);
            for ((bk, bv), (ak, av)) in b.layers.iter().zip(&a.layers) {
                let (ek, ev) = (max_rel(bk.clone(), ak.clone()), max_rel(bv.clone(), av.clone()));
                assert!(ek <= 1e-5 && ev <= 1e-5, "[{name}] frame {t}: keys {ek:e}, values {ev:e}");
            }
        }
    }
}

#[test]
fn a_video_cache_file_keeps_its_frames() {
    use vocollama_model::CacheDType;
    let device = devices().remove(0).1;
    let m = model(&device);
    let caches = frame_caches(&m);
    // One image stays a version-1 file (older readers take it); a video is version 2.
    let one = caches[0].to_bytes(&m.fingerprint, CacheDType::F32);
    assert_eq!(one[8], 1);
    for policy in [FramePositions::Sequential, FramePositions::Shared] {
        let joined = VocoCache::join(&caches, policy, m.llm.inv_freq()).unwrap();
        assert_eq!((joined.frames, joined.tokens_per_frame()), (3, N));
        let bytes = joined.to_bytes(&m.fingerprint, CacheDType::F32);
        assert_eq!(bytes[8], 2);
        let back = VocoCache::from_bytes(&bytes, &m.cache_spec(), &device, burn::tensor::FloatDType::F32).unwrap();
        assert_eq!((back.frames, &back.positions), (3, &joined.positions));
        for ((bk, bv), (jk, jv)) in back.layers.iter().zip(&joined.layers) {
            assert_eq!(max_rel(bk.clone(), jk.clone()), 0.0);
            assert_eq!(max_rel(bv.clone(), jv.clone()), 0.0);
        }
        // A joined cache of frames of different N is refused.
        let mut three = caches[0].clone();
        three.positions.push(three.positions[N - 1] + 1);
        assert!(VocoCache::join(&[caches[0].clone(), three], policy, m.llm.inv_freq()).is_err());
    }
}

#[test]
fn frames_that_fit_in_the_context() {
    use vocollama_model::text::{Template, Tokenizer, tokenizer_image_token};
    use vocollama_model::voco::FrameBudget;
    let device = devices().remove(0).1;
    let m = model(&device);
    let tok = Tokenizer::for_model(&fixture("llava-gqa-bf16"), m.config.layout).unwrap();
    let ctx = m.config.llm.max_position_embeddings;
    for n in [1, 2, 8] {
        let b = FrameBudget::new(&tok, ctx, m.image_tokens(), n).unwrap();
        // The first frame ends where the video prompt puts its last VoCo token.
        let ids = tokenizer_image_token(&Template::VocoVideo { voco_tokens: n }.prompt(&[("", None)]), &tok).unwrap();
        let last = ids.iter().rposition(|&t| t == VOCO).unwrap();
        assert_eq!(b.first_frame_end, expand_ids(&ids[..=last], m.image_tokens()).len());
        assert_eq!(b.text_before + 1 + n + b.text_after, ids.len());
        let text = b.text_before + b.text_after;
        for reserve in [0, 40, 128] {
            let k = b.voco_frames(reserve);
            let used = |k: usize| b.voco_positions(k) + b.text_after + reserve;
            assert!(k >= 1 && used(k) <= ctx, "n {n} reserve {reserve}: {k} frames");
            assert!(used(k + 1) > ctx, "n {n} reserve {reserve}: {} frames fit", k + 1);
            let u = b.image_frames(reserve);
            assert!(u * m.image_tokens() + text + reserve <= ctx);
            assert!((u + 1) * m.image_tokens() + text + reserve > ctx);
            assert!(k > u, "VoCo fits more frames than the image tokens do");
        }
    }
}
