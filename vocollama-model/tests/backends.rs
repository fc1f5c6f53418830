//! Every other backend compiled in computes each op of the test CLIP towers
//! as the CPU backend does, op by op from the same inputs: where a backend's
//! features differ from transformers' (`parity.rs`), the first op listed here
//! that differs names the kernel at fault.

mod common;

use burn::tensor::{Device, Int, Tensor, TensorData};
use common::*;
use vocollama_kernels::attention::reference as attention_reference;
use vocollama_kernels::{KeyRule, attention};
use vocollama_model::model::clip::{ClipVision, layer_norm};
use vocollama_model::model::linear::linear;

/// `x` (computed on the CPU) on `device`.
fn to<const D: usize>(x: &Tensor<D>, device: &Device) -> Tensor<D> {
    Tensor::from_data(x.to_data(), device)
}

/// Each op's `max|Δ|/max|ref|`, in the order the tower runs them.
struct Ops(Vec<(String, f32)>);

impl Ops {
    fn check<const D: usize>(&mut self, label: String, got: Tensor<D>, want: &Tensor<D>) {
        let rel = max_rel(Tensor::<D>::from_data(got.into_data(), &want.device()), want.clone());
        // Printed at once: a slow or stuck op shows where it is.
        eprintln!("  {label}: {rel:.3e}");
        self.0.push((label, rel));
    }
}

/// Runs the tower op by op on the CPU, and each op once more on `gpu` from the CPU's input.
fn compare(cpu: &ClipVision, gpu: &ClipVision, pixels: Tensor<4>, device: &Device) -> Ops {
    let mut ops = Ops(Vec::new());
    let eps = cpu.layer_norm_eps();
    let (ce, ge) = (&cpu.embeddings, &gpu.embeddings);
    let gpu_pixels = to(&pixels, device);
    let conv = ce.patch_embedding.forward(pixels.clone());
    ops.check("patch_embedding (conv2d)".into(), ge.patch_embedding.forward(gpu_pixels.clone()), &conv);
    let weight = ge.patch_embedding.weight.val();
    ops.check("patch_embedding as a matmul".into(), patches_by_matmul(gpu_pixels.clone(), weight), &conv);
    let l = conv.dims()[2] * conv.dims()[3] + 1;
    let ids = Tensor::<1, Int>::arange(0..l as i64, &pixels.device()).unsqueeze::<2>();
    let gids = Tensor::<2, Int>::from_data(ids.to_data(), device);
    let pos = ce.position_embedding.forward(ids);
    ops.check("position_embedding".into(), ge.position_embedding.forward(gids), &pos);
    let emb = cpu.embed(pixels.clone());
    ops.check("embeddings".into(), gpu.embed(gpu_pixels.clone()), &emb);
    let mut x = layer_norm(&cpu.pre_layrnorm, eps, emb.clone());
    ops.check("pre_layrnorm".into(), layer_norm(&gpu.pre_layrnorm, eps, to(&emb, device)), &x);

    let norm = &gpu.pre_layrnorm;
    let by_ops = norm_by_ops(to(&emb, device), norm.gamma.val(), norm.beta.as_ref().unwrap().val(), eps);
    ops.check("pre_layrnorm by tensor ops".into(), by_ops, &x);

    let [b, _, d] = x.dims();
    let head_dim = d / cpu.encoder.layers[0].self_attn.num_heads();
    let cpu_rule = KeyRule::full().prepare(&x.device(), b, l, l, head_dim);
    let gpu_rule = KeyRule::full().prepare(device, b, l, l, head_dim);
    for (i, (c, g)) in cpu.encoder.layers.iter().zip(&gpu.encoder.layers).enumerate() {
        let op = |name: &str| format!("layers.{i}.{name}");
        let h = layer_norm(&c.layer_norm1, eps, x.clone());
        ops.check(op("layer_norm1"), layer_norm(&g.layer_norm1, eps, to(&x, device)), &h);
        let heads = c.self_attn.num_heads();
        let split = |t: Tensor<3>| t.reshape([b, l, heads, d / heads]).swap_dims(1, 2);
        let (ca, ga) = (&c.self_attn, &g.self_attn);
        let mut projected = Vec::new();
        for (name, cl, gl) in
            [("q_proj", &ca.q_proj, &ga.q_proj), ("k_proj", &ca.k_proj, &ga.k_proj), ("v_proj", &ca.v_proj, &ga.v_proj)]
        {
            let want = linear(cl, h.clone());
            ops.check(op(&format!("self_attn.{name}")), linear(gl, to(&h, device)), &want);
            projected.push(want);
        }
        // The weight as a contiguous `[in, out]` matrix rather than the view of PyTorch's `[out, in]`.
        let contiguous = Tensor::<2>::from_data(ga.q_proj.weight.val().to_data(), device);
        let by_contiguous = to(&h, device).reshape([b * l, d]).matmul(contiguous).reshape([b, l, d])
            + ga.q_proj.bias.as_ref().unwrap().val().unsqueeze();
        ops.check(op("self_attn.q_proj, contiguous weight"), by_contiguous, &projected[0]);
        let (q, k, v) = (split(projected[0].clone()), split(projected[1].clone()), split(projected[2].clone()));
        ops.check(op("self_attn heads (reshape, swap_dims)"), split(linear(&ga.q_proj, to(&h, device))), &q);
        let want = attention(q.clone(), k.clone(), v.clone(), &cpu_rule);
        let (gq, gk, gv) = (to(&q, device), to(&k, device), to(&v, device));
        ops.check(op("self_attn attention"), attention(gq.clone(), gk.clone(), gv.clone(), &gpu_rule), &want);
        ops.check(op("self_attn attention (tensor ops)"), attention_reference(gq, gk, gv, &KeyRule::full()), &want);
        let a = ca.forward(h.clone(), &cpu_rule);
        ops.check(op("self_attn"), ga.forward(to(&h, device), &gpu_rule), &a);
        let x1 = x.clone() + a;
        let h = layer_norm(&c.layer_norm2, eps, x1.clone());
        ops.check(op("layer_norm2"), layer_norm(&g.layer_norm2, eps, to(&x1, device)), &h);
        let f = linear(&c.mlp.fc1, h.clone());
        ops.check(op("mlp.fc1"), linear(&g.mlp.fc1, to(&h, device)), &f);
        ops.check(op("mlp"), g.mlp.forward(to(&h, device)), &c.mlp.forward(h));
        let next = c.forward(x.clone(), eps, &cpu_rule);
        ops.check(op("layer"), g.forward(to(&x, device), eps, &gpu_rule), &next);
        x = next;
    }
    ops.check("tower".into(), gpu.forward(gpu_pixels), &cpu.forward(pixels));
    ops
}

/// Layer normalisation over the last dim written out: `(x − mean) / √(var + eps) · γ + β`.
fn norm_by_ops(x: Tensor<3>, gamma: Tensor<1>, beta: Tensor<1>, eps: f64) -> Tensor<3> {
    let mean = x.clone().mean_dim(2);
    let centred = x - mean;
    let var = centred.clone().square().mean_dim(2);
    let d = gamma.dims()[0];
    centred / (var + eps).sqrt() * gamma.reshape([1, 1, d]) + beta.reshape([1, 1, d])
}

/// A stride-`p` `p×p` convolution without bias written as one matrix
/// product over the flattened patches: `[b, d, H/p, W/p]`.
fn patches_by_matmul(pixels: Tensor<4>, weight: Tensor<4>) -> Tensor<4> {
    let [b, c, h, w] = pixels.dims();
    let [d, _, p, _] = weight.dims();
    let (gh, gw) = (h / p, w / p);
    let rows = pixels.reshape([b, c, gh, p, gw, p]).permute([0, 2, 4, 1, 3, 5]).reshape([b, gh * gw, c * p * p]);
    let out = rows.matmul(weight.reshape([d, c * p * p]).transpose().unsqueeze::<3>());
    out.swap_dims(1, 2).reshape([b, d, gh, gw])
}

#[test]
fn every_backend_runs_each_clip_op_as_the_cpu_does() {
    let devices = devices();
    let (_, cpu_device, _) =
        devices.iter().find(|(n, _, _)| *n == "flex").expect("the CPU backend is compiled in").clone();
    let others: Vec<_> = devices.into_iter().filter(|(n, _, _)| *n != "flex").collect();
    if others.is_empty() {
        eprintln!("only the CPU backend is compiled in: no other backend to compare");
        return;
    }
    let mut failures = Vec::new();
    for (name, fixture_tower) in
        [("llava-gqa-bf16", None), ("llava-hf", None), ("llava-mha-f16-bin", Some("clip-vision-f16"))]
    {
        let pixels: TensorData = reference(name)["pixel_values"].clone();
        let cpu = load_f32(name, fixture_tower, &cpu_device);
        let cpu_tower = &cpu.vision.as_ref().unwrap().tower;
        for (backend, device, tol) in &others {
            eprintln!("{name} [{backend}]");
            let gpu = load_f32(name, fixture_tower, device);
            let ops = compare(
                cpu_tower,
                &gpu.vision.as_ref().unwrap().tower,
                Tensor::from_data(pixels.clone(), &cpu_device),
                device,
            );
            for (op, rel) in ops.0 {
                if rel.is_nan() || rel > *tol {
                    failures.push(format!("{name} [{backend}] {op}: {rel:.3e} > {tol:e}"));
                }
            }
        }
    }
    assert!(failures.is_empty(), "ops that differ from the CPU backend:\n{}", failures.join("\n"));
}

/// Every backend's f32 matrix product within its tolerance of the CPU's (on CUDA Burn may
/// pick TF32 tensor-core kernels: 6.3e-4 relative measured on an H200, against ~6e-7 on lavapipe).
#[test]
fn every_backend_multiplies_f32_matrices_as_the_cpu_does() {
    let devices = devices();
    let (_, cpu, _) = devices.iter().find(|(n, _, _)| *n == "flex").expect("the CPU backend is compiled in").clone();
    let values = |n: usize, seed: usize| -> Vec<f32> {
        (0..n).map(|i| ((i * 7919 + seed) % 1009) as f32 / 504.5 - 1.0).collect()
    };
    let (m, k, n) = (64, 512, 96);
    let a = Tensor::<2>::from_data(TensorData::new(values(m * k, 1), [m, k]), &cpu);
    let b = Tensor::<2>::from_data(TensorData::new(values(k * n, 2), [k, n]), &cpu);
    let want = a.clone().matmul(b.clone());
    for (backend, device, tol) in devices.iter().filter(|(n, _, _)| *n != "flex") {
        let got = to(&a, device).matmul(to(&b, device));
        let rel = max_rel(Tensor::<2>::from_data(got.into_data(), &cpu), want.clone());
        eprintln!("[{backend}] {m}x{k}x{n} f32 matmul: max|Δ|/max|ref| = {rel:.3e}");
        assert!(rel <= *tol, "[{backend}] an f32 matmul is {rel:.3e} off the CPU's (> {tol:e})");
    }
}
