//! Video caches: moving a cache by a RoPE rotation equals computing it at the
//! new positions, and answering from joined frame caches equals one masked
//! forward over the long sequence built the slow way (per frame `[BOS, image,
//! ▁\n, VoCo]` blocks that see only themselves, text that sees every VoCo
//! token), for both position policies.

mod common;

use burn::tensor::{Int, Tensor, TensorData};
use common::*;
use vocollama_model::pipeline::{Session, expand_ids};
use vocollama_model::voco::FramePositions;
use vocollama_model::{AttentionLayout, LlavaModel, LoadOptions, VocoCache};

const VOCO: i64 = 511;
const N: usize = 2;

fn model(device: &burn::tensor::Device) -> LlavaModel {
    LlavaModel::load(&fixture("llava-gqa-bf16"), &LoadOptions::default(), device).unwrap()
}

fn frames(model: &LlavaModel) -> Vec<Tensor<3>> {
    ["wide.png", "tall.png", "photo.png"]
        .iter()
        .map(|f| model.encode_image(&model.load_image(&assets().join("images").join(f)).unwrap()).unwrap())
        .collect()
}

/// The stage-1 prompt of one frame: `[BOS, <image>, ▁, \n, <voco>*N]`.
fn stage1() -> Vec<i64> {
    [vec![1, -200, 453, 13], vec![VOCO; N]].concat()
}

fn max_rel(got: Tensor<4>, want: Tensor<4>) -> f32 {
    let g = got.into_data().try_into_vec::<f32>().unwrap();
    let w = want.into_data().try_into_vec::<f32>().unwrap();
    let scale = w.iter().fold(0f32, |m, x| m.max(x.abs()));
    g.iter().zip(&w).fold(0f32, |m, (a, b)| m.max((a - b).abs())) / scale
}

#[test]
fn a_moved_cache_equals_one_computed_there() {
    for (name, device, _) in devices() {
        let m = model(&device);
        let img = frames(&m).remove(0);
        let at0 = m.compress(&stage1(), &[img.clone()], VOCO).unwrap();
        for delta in [5usize, 77, 300] {
            let direct = m.compress_at(&stage1(), &[img.clone()], VOCO, delta).unwrap();
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
    let pos = Tensor::<1, Int>::from_data(TensorData::new(positions, [len]), &m.device).unsqueeze::<2>();
    let layout = AttentionLayout { mask: Some(mask), ..AttentionLayout::causal() };
    let h = m.llm.forward(x, pos, &layout, &mut m.llm.new_cache());
    let [b, l, d] = h.dims();
    m.llm.logits(h.slice([0..b, l - text.len()..l, 0..d])).into_data().try_into_vec::<f32>().unwrap()
}

#[test]
fn joined_frames_equal_the_masked_long_sequence() {
    let text: Vec<i64> = vec![453, 13, 474, 264, 320, 308, 77, 123, 45];
    for (name, device, _) in devices() {
        let m = model(&device);
        let images = frames(&m);
        let caches: Vec<VocoCache> =
            images.iter().map(|i| m.compress(&stage1(), &[i.clone()], VOCO).unwrap()).collect();
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
