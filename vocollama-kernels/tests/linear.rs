//! Linear layers against the tensor-op reference on every device. Block-quantized
//! weights (q8, q4) against `x · dequantize(w)`: on flex the quantized matmul of
//! `vocollama_kernels::linear` (the fused loops up to 128 rows with half-precision
//! rows and 16 with f32 ones, the dequantize-then-matmul path above), on CubeCL
//! devices Burn's own quantized matmul, which is what the model runs there. Float
//! weights (f32, f16, bf16) in short and long blocks of rows (up to 64 and beyond)
//! against Burn's matmul. Weights as the loader makes them (`[out, in]` quantized
//! along `in`, then transposed) and quantized directly as `[in, out]` with blocks
//! along `in`; f32, f16 and bf16 activations.

mod common;

use burn::tensor::quantization::{QuantScheme, QuantStore, QuantValue, ScaleDtype};
use burn::tensor::{DType, Device, Distribution, FloatDType, Tensor};
use common::max_rel;
use vocollama_kernels::linear::{matmul, takes};

fn scheme(value: QuantValue, block: &[u8]) -> QuantScheme {
    QuantScheme::default().with_value(value).with_store(QuantStore::PackedU32(0)).per_block(block, ScaleDtype::F16)
}

/// The quantized weight `[d_in, d_out]` as the loader makes it; on flex also through Burn's
/// transpose and quantized directly as `[in, out]` (the other byte layout the kernel reads).
fn weights(value: QuantValue, d_in: usize, d_out: usize, device: &Device) -> Vec<(&'static str, Tensor<2>)> {
    let oi = Tensor::<2>::random([d_out, d_in], Distribution::Normal(0.0, 0.05), device)
        .quantize_dynamic(&scheme(value, &[32]));
    let loader = vocollama_kernels::linear::transpose(oi.clone());
    if !vocollama_kernels::device::is_cubecl(device) {
        // Burn's own transpose (dequantize, transpose, quantize again) gives the same values.
        let burn = oi.transpose();
        let (a, b) = (loader.clone().dequantize(), burn.clone().dequantize());
        assert_eq!(a.into_data().try_to_vec::<f32>().unwrap(), b.into_data().try_to_vec::<f32>().unwrap());
        return vec![
            ("as loaded", loader),
            ("burn's transpose", burn),
            ("[in, out]", direct(value, d_in, d_out, device)),
        ];
    }
    // CubeCL packs blocks along the last dimension only (a [32, 1] block is refused there).
    vec![("as loaded", loader)]
}

/// A weight quantized directly as `[in, out]`, blocks along `in` (bytes contiguous along `out`).
fn direct(value: QuantValue, d_in: usize, d_out: usize, device: &Device) -> Tensor<2> {
    Tensor::<2>::random([d_in, d_out], Distribution::Normal(0.0, 0.05), device)
        .quantize_dynamic(&scheme(value, &[32, 1]))
}

#[test]
fn quantized_linear_matches_the_dequantized_reference() {
    let mut fused = 0;
    for (name, device) in common::devices() {
        for value in [QuantValue::Q8S, QuantValue::Q4S] {
            // d_out off the 64-column task size; rows across the fused limit.
            for (label, w) in weights(value, 96, 200, &device) {
                assert!(matches!(w.dtype(), DType::QFloat(_)), "{label}: not quantized");
                let reference = w.clone().dequantize().cast(FloatDType::F32);
                for rows in [1, 3, 16, 17, 40, 128, 129] {
                    let x = Tensor::<2>::random([rows, 96], Distribution::Normal(0.0, 1.0), &device);
                    let want = x.clone().matmul(reference.clone());
                    for (dtype, tol) in [(FloatDType::F32, 1e-4), (FloatDType::F16, 1e-2), (FloatDType::BF16, 3e-2)] {
                        if dtype == FloatDType::BF16 && name == "wgpu" {
                            continue; // lavapipe has no bf16 (the precision tests say so)
                        }
                        let xd = x.clone().cast(dtype);
                        let got = match matmul(xd.clone(), w.clone()) {
                            Some(y) => {
                                fused += 1;
                                y
                            }
                            None => xd.matmul(w.clone()),
                        };
                        assert_eq!(got.dtype(), DType::from(dtype), "{name} {label}: output float type");
                        let rel = max_rel(got, want.clone());
                        eprintln!("{name} {value:?} {label} rows {rows} {dtype:?}: {rel:.2e}");
                        assert!(rel <= tol, "{name} {value:?} {label} rows {rows} {dtype:?}: {rel:e} > {tol:e}");
                    }
                }
            }
        }
        assert_eq!(takes(&device, DType::QFloat(scheme(QuantValue::Q8S, &[32]))), name == "flex");
    }
    #[cfg(feature = "flex")]
    assert!(fused > 0, "the flex quantized matmul was never run");
    let _ = fused;
}

/// Float weights as the loader holds them (`[out, in]` behind the transposed view), f32,
/// f16 and bf16, against Burn's matmul: short blocks of rows (the CPU's decode loops) and
/// long ones (the tiles, or the contiguous copy and the matmul library without AVX-512).
#[test]
fn float_rows_match_burns_matmul() {
    let mut taken = 0;
    for (name, device) in common::devices() {
        for (dtype, tol) in [(FloatDType::F32, 1e-5), (FloatDType::BF16, 1e-2), (FloatDType::F16, 1e-2)] {
            if dtype == FloatDType::BF16 && name == "wgpu" {
                continue; // lavapipe has no bf16
            }
            // 203 outputs: whole groups of four columns and a lone one, six tiles of 32 and
            // eleven columns. 592 inputs: two blocks of 256 and 80 more.
            for d_in in [96, 592] {
                let w =
                    Tensor::<2>::random([203, d_in], Distribution::Normal(0.0, 0.05), &device).cast(dtype).transpose();
                // 9 and 11 rows: whole groups of four rows and what is left after them; 65: five
                // tiles of twelve rows and five more; 649: past one pass of 648 rows.
                for rows in [1, 5, 9, 11, 16, 17, 64, 65, 649] {
                    let x = Tensor::<2>::random([rows, d_in], Distribution::Normal(0.0, 1.0), &device).cast(dtype);
                    let want = x.clone().cast(FloatDType::F32).matmul(w.clone().cast(FloatDType::F32));
                    let got = match matmul(x.clone(), w.clone()) {
                        Some(y) => {
                            taken += 1;
                            y
                        }
                        None => x.matmul(w.clone()),
                    };
                    assert_eq!(got.dtype(), DType::from(dtype), "{name}: output float type");
                    let rel = max_rel(got, want);
                    eprintln!("{name} float {dtype:?} d_in {d_in} rows {rows}: {rel:.2e}");
                    assert!(rel <= tol, "{name} {dtype:?} d_in {d_in} rows {rows}: {rel:e} > {tol:e}");
                }
            }
        }
        assert_eq!(takes(&device, DType::F32), name == "flex", "{name}");
    }
    #[cfg(feature = "flex")]
    assert!(taken > 0, "the CPU's float rows were never run");
    let _ = taken;
}

/// Packed weights (the model's form of a quantized weight on the CPU after loading): the
/// same products as the weight they were packed from, bit for bit, on every row count and
/// activation type, within the dequantized reference's tolerances, and the same tensor
/// back. Three and four blocks along the input (the 4-bit form pads an odd count).
#[test]
fn packed_weights_multiply_as_the_weights_they_hold() {
    use vocollama_kernels::linear::{pack, packed_matmul};
    let mut packed = 0;
    for (name, device) in common::devices() {
        for value in [QuantValue::Q8S, QuantValue::Q4S] {
            for d_in in [96, 128] {
                let (label, w) = weights(value, d_in, 200, &device).remove(0);
                assert_eq!(label, "as loaded");
                let Some(p) = pack(&w) else {
                    assert_ne!(name, "flex", "{value:?}: the loader's weight was not packed");
                    continue;
                };
                packed += 1;
                assert_eq!(p.dims(), [d_in, 200]);
                let reference = w.clone().dequantize().cast(FloatDType::F32);
                let back = p.tensor().dequantize().cast(FloatDType::F32).into_data();
                assert_eq!(
                    back,
                    reference.clone().into_data(),
                    "{value:?} {d_in}: the tensor rebuilt from the packed bytes"
                );
                for rows in [1, 3, 16, 17, 128, 129] {
                    let x = Tensor::<2>::random([rows, d_in], Distribution::Normal(0.0, 1.0), &device);
                    let want = x.clone().matmul(reference.clone());
                    for (dtype, tol) in [(FloatDType::F32, 1e-4), (FloatDType::F16, 1e-2), (FloatDType::BF16, 3e-2)] {
                        let xd = x.clone().cast(dtype);
                        let got = packed_matmul(xd.clone(), &p);
                        let unpacked = matmul(xd, w.clone()).expect("taken on flex");
                        let at = format!("{value:?} d_in {d_in} rows {rows} {dtype:?}");
                        assert_eq!(got.dtype(), DType::from(dtype), "{at}: output float type");
                        assert_eq!(got.to_data(), unpacked.to_data(), "{at}: packed and unpacked differ");
                        let rel = max_rel(got, want.clone());
                        assert!(rel <= tol, "{at}: {rel:e} > {tol:e}");
                    }
                }
            }
        }
    }
    #[cfg(feature = "flex")]
    assert_eq!(packed, 4, "flex packs q8 and q4 weights of both shapes");
    let _ = packed;
}
