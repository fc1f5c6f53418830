//! VoCo end to end against transformers (a LlamaForCausalLM run with the
//! VoCo layout of `docs/design.md` §4 as a 4D mask over the spliced embeddings), and the two-stage path
//! against the masked single pass.

mod common;

use burn::tensor::{Device, Distribution, FloatDType, Tensor, TensorData};
use common::*;
use vocollama_model::infer::sampling::argmax;
use vocollama_model::infer::session::last_logits;
use vocollama_model::model::llava::expand_ids;
use vocollama_model::{
    AttentionLayout, CacheDType, CacheSpec, KvCache, LlavaModel, LoadOptions, Pixels, Session, Stage1Prompt, VocoCache,
};

const VOCO: i64 = 511;

fn model(device: &Device) -> LlavaModel {
    LlavaModel::load(&fixture("llava-gqa-bf16"), &LoadOptions::f32(), device).unwrap()
}

fn pixels(model: &LlavaModel) -> Pixels {
    model.load_image(&assets().join("images/wide.png")).unwrap()
}

fn image(model: &LlavaModel) -> Tensor<3> {
    model.encode_image(&pixels(model)).unwrap()
}

fn data(t: Tensor<3>) -> TensorData {
    t.into_data()
}

/// Split a VoCo prompt after its last VoCo token.
fn split(ids: &[i64]) -> (&[i64], &[i64]) {
    let l = ids.iter().rposition(|&t| t == VOCO).unwrap();
    ids.split_at(l + 1)
}

fn rows(t: Tensor<3>, from: usize) -> Tensor<3> {
    let [b, l, v] = t.dims();
    t.slice([0..b, from..l, 0..v])
}

/// Every backend × N ∈ {1, 2, 8}: `f(backend, tolerance, model, image, reference, N, prompt ids)`.
fn each_case(mut f: impl FnMut(&str, f32, &LlavaModel, &Tensor<3>, &Refs, usize, Vec<i64>)) {
    let r = read_tensors(fixture("llava-gqa-bf16/voco-reference.safetensors"));
    for (backend, device, tol) in devices() {
        let m = model(&device);
        let img = image(&m);
        for n in [1, 2, 8] {
            f(backend, tol, &m, &img, &r, n, ids(&r[&format!("n{n}_ids")]));
        }
    }
}

type Refs = std::collections::HashMap<String, TensorData>;

#[test]
fn masked_single_pass_matches_transformers() {
    each_case(|backend, tol, m, img, r, n, ids| {
        let h = masked_single_pass(m, &ids, std::slice::from_ref(img), VOCO);
        assert_close(
            &format!("[{backend}] N={n} masked logits"),
            data(m.llm.logits(h)),
            &r[&format!("n{n}_logits")],
            tol,
        );
    });
}

#[test]
fn two_stage_equals_the_masked_single_pass() {
    each_case(|backend, _, m, img, _, n, ids| {
        let (prefix, text) = split(&ids);
        let single = masked_single_pass(m, &ids, std::slice::from_ref(img), VOCO);
        let text_start = expand_ids(prefix, m.image_tokens()).len();
        let want = data(rows(m.llm.logits(single), text_start));

        let cache = compress_one(m, prefix, VOCO, &pixels(m));
        assert_eq!(cache.len(), n);
        assert_eq!(cache.next_position(), text_start);
        let mut s = Session::from_voco(m, &cache).unwrap();
        let got = data(m.llm.logits(s.feed(text, &[]).unwrap()));
        assert_close(&format!("[{backend}] N={n} two-stage vs masked"), got, &want, 1e-5);
        assert_eq!(s.cached(), n + text.len(), "stage 2 holds only VoCo + text");
    });
}

#[test]
fn greedy_tokens_second_turn_and_second_question() {
    each_case(|backend, tol, m, img, r, n, ids| {
        let (prefix, text) = split(&ids);
        let cache = compress_one(m, prefix, VOCO, &pixels(m));

        // 8 greedy tokens, each decoded against the growing stage-2 cache.
        let mut s = Session::from_voco(m, &cache).unwrap();
        let mut logits = s.next_logits(text, &[]).unwrap();
        let mut greedy = Vec::new();
        for step in 0..8 {
            let next = argmax(&logits) as i64;
            greedy.push(next);
            if step < 7 {
                logits = s.next_logits(&[next], &[]).unwrap();
            }
        }
        assert_eq!(greedy, common::ids(&r[&format!("n{n}_greedy")]), "[{backend}] N={n} greedy tokens");

        // Second chat turn in the same session.
        let turn2 = common::ids(&r[&format!("n{n}_turn2_ids")]);
        let fed = ids.len() + 7;
        let h = s.feed(&turn2[fed..], &[]).unwrap();
        let got = data(rows(m.llm.logits(h), 1));
        assert_close(&format!("[{backend}] N={n} 2nd turn"), got, &r[&format!("n{n}_turn2_logits")], tol);

        // A second question from the same cache equals its own masked single pass.
        let q2: Vec<i64> = text.iter().rev().copied().collect();
        let mut s2 = Session::from_voco(m, &cache).unwrap();
        let got = data(m.llm.logits(s2.feed(&q2, &[]).unwrap()));
        let full = [prefix, &q2].concat();
        let single = masked_single_pass(m, &full, std::slice::from_ref(img), VOCO);
        let want = data(rows(m.llm.logits(single), cache.next_position()));
        assert_close(&format!("[{backend}] N={n} 2nd question"), got, &want, 1e-5);
    });
}

#[test]
fn voco_file_round_trip_is_exact_in_f32() {
    let r = read_tensors(fixture("llava-gqa-bf16/voco-reference.safetensors"));
    let dir = tempfile::tempdir().unwrap();
    for (backend, device, _) in devices() {
        let m = model(&device);
        let ids = ids(&r["n8_ids"]);
        let (prefix, text) = split(&ids);
        let cache = compress_one(&m, prefix, VOCO, &pixels(&m));
        let want = Session::from_voco(&m, &cache).unwrap().next_logits(text, &[]).unwrap();
        for (dtype, tol) in [(CacheDType::F32, 1e-5f32), (CacheDType::F16, 1e-2), (CacheDType::BF16, 5e-2)] {
            let path = dir.path().join(format!("{backend}-{dtype:?}.voco"));
            cache.save(&path, &m.fingerprint, dtype).unwrap();
            let size = std::fs::metadata(&path).unwrap().len() as usize;
            assert_eq!(size, 8 + 4 + 32 + 16 + 4 + 4 * 8 + cache.payload_bytes(dtype) + 32);
            let loaded = VocoCache::load(&path, &m.cache_spec(), &device, FloatDType::F32).unwrap();
            assert_eq!(loaded.positions, cache.positions);
            let got = Session::from_voco(&m, &loaded).unwrap().next_logits(text, &[]).unwrap();
            let scale = want.iter().fold(0f32, |a, x| a.max(x.abs()));
            let diff = got.iter().zip(&want).fold(0f32, |a, (x, y)| a.max((x - y).abs()));
            assert!(diff / scale <= tol, "[{backend}] {dtype:?}: {}", diff / scale);
        }
        // No temporary file is left beside the cache.
        assert!(
            std::fs::read_dir(dir.path()).unwrap().all(|e| !e.unwrap().file_name().to_string_lossy().starts_with('.'))
        );
    }
}

#[test]
fn voco_file_errors() {
    let device = Device::flex();
    let m = model(&device);
    let r = read_tensors(fixture("llava-gqa-bf16/voco-reference.safetensors"));
    let n2 = ids(&r["n2_ids"]);
    let (prefix, _) = split(&n2);
    let cache = compress_one(&m, prefix, VOCO, &pixels(&m));
    let good = cache.to_bytes(&m.fingerprint, CacheDType::F16);
    use sha2::Digest;
    let spec = m.cache_spec();
    let err = |b: &[u8], spec: &CacheSpec| VocoCache::from_bytes(b, spec, &device, FloatDType::F32).unwrap_err();

    assert!(err(&good, &CacheSpec { fingerprint: [7; 32], ..spec.clone() }).contains("different model"));
    assert!(err(&good[..good.len() - 10], &spec).contains("truncated"));
    assert!(err(b"hello", &spec).contains("not a .voco file"));
    let mut bad = good.clone();
    bad[200] ^= 1;
    assert!(err(&bad, &spec).contains("corrupted"));
    let mut newer = good.clone();
    newer[8] = 9;
    assert!(err(&newer, &spec).contains("newer"));
    // The geometry is compared with the model's from the header, before any tensor is made.
    let e = err(&good, &CacheSpec { layers: spec.layers + 1, ..spec.clone() });
    assert!(e.contains(&format!("declares {} layers", spec.layers)), "{e}");
    // A position beyond the context (checksum made good again, so only the position is wrong).
    let mut far = good[..good.len() - 32].to_vec();
    far[64..68].copy_from_slice(&(spec.context as u32).to_le_bytes());
    let sum = sha2::Sha256::digest(&far);
    far.extend_from_slice(&sum);
    let e = err(&far, &spec);
    assert!(e.contains("outside the model's context"), "{e}");

    // Files: an endless device is refused before it is read; a header declaring sizes that
    // overflow, or more than the file holds, is refused from the header and the file's length.
    let e =
        VocoCache::load(std::path::Path::new("/dev/zero"), &spec, &device, FloatDType::F32).unwrap_err().to_string();
    assert!(e.contains("/dev/zero: not a regular file"), "{e}");
    let dir = tempfile::tempdir().unwrap();
    let huge = dir.path().join("huge.voco");
    let mut h = good[..64].to_vec();
    for at in [44, 48, 52, 56] {
        h[at..at + 4].copy_from_slice(&u32::MAX.to_le_bytes());
    }
    std::fs::write(&huge, &h).unwrap();
    let e = VocoCache::load(&huge, &spec, &device, FloatDType::F32).unwrap_err().to_string();
    assert!(e.contains("huge.voco") && (e.contains("overflow") || e.contains("needs")), "{e}");
    let many = dir.path().join("many-layers.voco");
    let mut h = good.clone();
    h[48..52].copy_from_slice(&1_000_000u32.to_le_bytes());
    std::fs::write(&many, &h).unwrap();
    let e = VocoCache::load(&many, &spec, &device, FloatDType::F32).unwrap_err().to_string();
    assert!(e.contains("1000000 layers") && e.contains("needs"), "{e}");
    // Another model's fingerprint differs: the tied LLaMA has no tower, the llava-hf fixture other weights.
    let other = LlavaModel::load(&fixture("llava-hf"), &LoadOptions::f32(), &device).unwrap();
    assert_ne!(other.fingerprint, m.fingerprint);
}

#[test]
fn text_cannot_see_the_image() {
    let r = read_tensors(fixture("llava-gqa-bf16/voco-reference.safetensors"));
    let device = Device::flex();
    let m = model(&device);
    let img = image(&m);
    let ids = ids(&r["n2_ids"]);
    let (prefix, text) = split(&ids);
    let p = m.image_tokens();

    // Stage 1 over the whole prefix, then replace the image's keys and values with noise:
    // under the VoCo layout the text's logits do not move.
    let mut cache = m.llm.new_cache();
    m.forward(prefix, std::slice::from_ref(&img), 0, &AttentionLayout::causal(), &mut cache).unwrap();
    let expanded = expand_ids(&ids, p);
    let layout = AttentionLayout::for_sequence(&expanded, VOCO);
    let mut clean = cache.clone();
    let start = clean.len();
    let clean_logits = last_logits(&m, m.forward(text, &[], start, &layout, &mut clean).unwrap());
    let noisy_layers = (0..m.llm.num_layers())
        .map(|i| {
            let (k, v) = cache.layer(i).unwrap().clone();
            let [b, h, l, d] = k.dims();
            let noise = |t: Tensor<4>| {
                let junk = Tensor::<4>::random([b, h, p, d], Distribution::Normal(0.0, 5.0), &device);
                t.slice_assign([0..b, 0..h, 1..1 + p, 0..d], junk)
            };
            assert!(l > p);
            (noise(k), noise(v))
        })
        .collect();
    let mut noisy = KvCache::from_layers(noisy_layers);
    let noisy_logits = last_logits(&m, m.forward(text, &[], start, &layout, &mut noisy).unwrap());
    assert_eq!(clean_logits, noisy_logits, "text rows read no image key or value");

    // A different image, compressed again, changes the answer's logits.
    let other = m.load_image(&assets().join("images/photo.png")).unwrap();
    let a =
        Session::from_voco(&m, &compress_one(&m, prefix, VOCO, &pixels(&m))).unwrap().next_logits(text, &[]).unwrap();
    let b = Session::from_voco(&m, &compress_one(&m, prefix, VOCO, &other)).unwrap().next_logits(text, &[]).unwrap();
    let diff = a.iter().zip(&b).fold(0f32, |x, (p, q)| x.max((p - q).abs()));
    assert!(diff > 1e-3, "a new image must change the logits ({diff})");
}

#[test]
fn stage_one_input_errors() {
    let device = Device::flex();
    let m = model(&device);
    let e = Stage1Prompt::from_ids(vec![1, -200, 175, 13], VOCO).unwrap_err().to_string();
    assert!(e.contains("N must be at least 1"), "{e}");
    let e = Stage1Prompt::from_ids(vec![1, -200, VOCO, 13], VOCO).unwrap_err().to_string();
    assert!(e.contains("must end in its VoCo tokens"), "{e}");
    let long = vec![5i64; 600];
    let cache = compress_one(&m, &[1, -200, 175, 13, VOCO], VOCO, &pixels(&m));
    let e = Session::from_voco(&m, &cache).unwrap().feed(&long, &[]).unwrap_err().to_string();
    assert!(e.contains("context is 512 tokens"), "{e}");
}

#[test]
fn uncompressed_session_equals_the_plain_llava_reference() {
    // `--compression none`: the whole prompt, all image tokens, plain causal attention.
    let r = reference("llava-gqa-bf16");
    for (backend, device, tol) in devices() {
        let m = model(&device);
        let mut s = Session::empty(&m);
        let h = s.feed(&ids(&r["llava_input_ids"]), &[image(&m)]).unwrap();
        assert_eq!(s.cached(), s.position());
        assert_close(&format!("[{backend}] uncompressed session"), data(m.llm.logits(h)), &r["llava_logits"], tol);
    }
}

#[test]
fn the_dense_mask_is_built_once_per_forward() {
    use vocollama_kernels::attention::dense_masks_built;
    // Flex runs Burn's attention with a boolean mask: one per forward, shared by every layer.
    let device = Device::flex();
    let m = model(&device);
    assert!(m.llm.num_layers() >= 2, "a one-layer model could not tell once per forward from once per layer");
    let r = read_tensors(fixture("llava-gqa-bf16/voco-reference.safetensors"));
    let ids = ids(&r["n2_ids"]);
    let img = image(&m);
    let before = dense_masks_built();
    masked_single_pass(&m, &ids, std::slice::from_ref(&img), VOCO);
    assert_eq!(dense_masks_built() - before, 1, "the VoCo layout: one mask for {} layers", m.llm.num_layers());
    // Causal attention (stage 1, the tower's full attention, decoding) needs none.
    let before = dense_masks_built();
    let (prefix, text) = split(&ids);
    let mut s = Session::from_voco(&m, &compress_one(&m, prefix, VOCO, &pixels(&m))).unwrap();
    s.feed(text, &[]).unwrap();
    assert_eq!(dense_masks_built() - before, 0, "plain causal and full attention build no mask");
}
