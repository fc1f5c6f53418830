//! One decoded row through a Vicuna-7B MLP projection (`up_proj`: 4096 → 11008) on
//! the CPU backend: `vocollama_kernels::linear` against flex's own matmul, for f32,
//! f16 and bf16 weights (one row, four and eight: the server's batched decoding) and
//! for q8 and q4 blocks with f16 activations, packed as the model holds them after
//! loading (one row and eight; flex's path there dequantizes the whole weight). Reported:
//! median ms over 30 runs (or two seconds' worth) and the weight bytes read per ms
//! (GB/s), which one decoded token is bound by. `-- --layouts` times flex's matmul
//! with the weight behind a transposed view and contiguous, and vocollama's, at 1 to
//! 643 rows.
//!
//!     cargo bench -p vocollama-benches --bench linear [-- --layouts] [-- NAME…]

use std::time::Instant;

use burn::tensor::quantization::{QuantScheme, QuantStore, QuantValue, ScaleDtype};
use burn::tensor::{Device, Distribution, FloatDType, Tensor};

const D_IN: usize = 4096;
const D_OUT: usize = 11008;

/// The median of 30 runs, or of those that fit in two seconds (at least three).
fn median_ms(mut f: impl FnMut() -> Tensor<2>) -> f64 {
    let _ = f().into_data();
    let start = Instant::now();
    let mut v = Vec::new();
    while v.len() < 30 && (v.len() < 3 || start.elapsed().as_secs_f64() < 2.0) {
        let t = Instant::now();
        let _ = f().into_data();
        v.push(t.elapsed().as_secs_f64() * 1e3);
    }
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let device = Device::flex();
    if std::env::args().any(|a| a == "--layouts") {
        return layouts(&device);
    }
    // `-- NAME…` times only the rows whose label starts with one of the names.
    let only: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with('-')).collect();
    let wanted = |label: &str| only.is_empty() || only.iter().any(|o| label.starts_with(o.as_str()));
    println!("| weights | vocollama ms | GB/s | flex matmul ms | GB/s | flex / vocollama |");
    println!("| --- | ---: | ---: | ---: | ---: | ---: |");
    let oi = Tensor::<2>::random([D_OUT, D_IN], Distribution::Normal(0.0, 0.02), &device);
    let row = |label: &str, bytes: f64, ours: f64, theirs: f64| {
        println!(
            "| {label} | {ours:.2} | {:.1} | {theirs:.2} | {:.1} | {:.2}x |",
            bytes / ours / 1e6,
            bytes / theirs / 1e6,
            theirs / ours
        );
    };
    for (label, dtype, size) in
        [("f32", FloatDType::F32, 4.0), ("f16", FloatDType::F16, 2.0), ("bf16", FloatDType::BF16, 2.0)]
    {
        if !wanted(label) {
            continue;
        }
        // As the loader holds it: `[out, in]` behind the transposed view.
        let w = vocollama_kernels::linear::transpose(oi.clone().cast(dtype));
        // One decoded row, and four and eight (the server's batched decoding).
        for rows in [1, 4, 8] {
            let x = Tensor::<2>::random([rows, D_IN], Distribution::Normal(0.0, 1.0), &device);
            let xd = x.clone().cast(dtype);
            let ours = median_ms(|| {
                vocollama_kernels::linear::matmul(xd.clone(), w.clone()).unwrap_or_else(|| xd.clone().matmul(w.clone()))
            });
            let theirs = median_ms(|| xd.clone().matmul(w.clone()));
            row(
                &format!("{label} ({rows} row{})", if rows > 1 { "s" } else { "" }),
                (D_IN * D_OUT) as f64 * size,
                ours,
                theirs,
            );
        }
    }
    for (label, value) in [("q8", QuantValue::Q8S), ("q4", QuantValue::Q4S)] {
        if !wanted(label) {
            continue;
        }
        let scheme = QuantScheme::default()
            .with_value(value)
            .with_store(QuantStore::PackedU32(0))
            .per_block([32u8], ScaleDtype::F16);
        let q = oi.clone().quantize_dynamic(&scheme);
        let w = vocollama_kernels::linear::transpose(q);
        let packed = vocollama_kernels::linear::pack(&w).expect("packed on flex");
        for rows in [1, 8] {
            let x = Tensor::<2>::random([rows, D_IN], Distribution::Normal(0.0, 1.0), &device);
            let xd = x.cast(FloatDType::F16);
            let ours = median_ms(|| vocollama_kernels::linear::packed_matmul(xd.clone(), &packed));
            let theirs = median_ms(|| xd.clone().matmul(w.clone()));
            // The bytes the packed weight holds: values, and an f32 scale per block of 32.
            let name = format!("{label} ({rows} row{})", if rows > 1 { "s" } else { "" });
            row(&name, packed.bytes() as f64, ours, theirs);
        }
    }
}

/// A prefill-sized block of rows with the weight as the loader holds it (`[out, in]`
/// behind the transposed view): flex's matmul on that view and on a contiguous
/// `[in, out]`, and `vocollama_kernels::linear` (the view copied into a contiguous
/// buffer kept between calls, then the same matmul).
fn layouts(device: &Device) {
    println!("| rows | weights | view of [out, in] ms | contiguous [in, out] ms | vocollama ms | vocollama GFLOP/s |");
    println!("| ---: | --- | ---: | ---: | ---: | ---: |");
    let oi = Tensor::<2>::random([D_OUT, D_IN], Distribution::Normal(0.0, 0.02), device);
    for rows in [1, 4, 8, 17, 64, 128, 643] {
        for (label, dtype) in [("f32", FloatDType::F32), ("f16", FloatDType::F16)] {
            let view = oi.clone().cast(dtype).transpose();
            let contiguous =
                Tensor::<2>::from_data(view.clone().into_data(), (device, burn::tensor::DType::from(dtype)));
            let x = Tensor::<2>::random([rows, D_IN], Distribution::Normal(0.0, 1.0), device).cast(dtype);
            let (a, b, c) = three(&x, &view, &contiguous);
            let gflops = 2.0 * (rows * D_IN * D_OUT) as f64 / c / 1e6;
            println!("| {rows} | {label} | {a:.1} | {b:.1} | {c:.1} | {gflops:.0} |");
        }
    }
    // The vision tower's projections (CLIP ViT-L: 1024 wide, MLP 4096) on its 577 patches.
    for (d_in, d_out) in [(1024usize, 1024usize), (1024, 4096), (4096, 1024)] {
        let view = Tensor::<2>::random([d_out, d_in], Distribution::Normal(0.0, 0.02), device).transpose();
        let contiguous = Tensor::<2>::from_data(view.clone().into_data(), device);
        let x = Tensor::<2>::random([577, d_in], Distribution::Normal(0.0, 1.0), device);
        let (a, b, c) = three(&x, &view, &contiguous);
        let gflops = 2.0 * (577 * d_in * d_out) as f64 / c / 1e6;
        println!("| 577 | f32 {d_in} → {d_out} | {a:.1} | {b:.1} | {c:.1} | {gflops:.0} |");
    }
}

/// Median ms of `x` times the view (flex's matmul), the contiguous weight (flex's
/// matmul) and the view through `vocollama_kernels::linear`.
fn three(x: &Tensor<2>, view: &Tensor<2>, contiguous: &Tensor<2>) -> (f64, f64, f64) {
    let a = median_ms(|| x.clone().matmul(view.clone()));
    let b = median_ms(|| x.clone().matmul(contiguous.clone()));
    let c = median_ms(|| vocollama_kernels::linear::matmul(x.clone(), view.clone()).expect("on flex"));
    (a, b, c)
}
