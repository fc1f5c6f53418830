//! Quantized weights on disk (`docs/design.md` §13): a model loaded with
//! `--quantize` is saved as a model directory whose linear weights stay
//! quantized, and loads again without quantizing anything.
//!
//! In its safetensors file each quantized linear weight `<m>.weight` holds the
//! values of Burn's block scheme in PyTorch's `[out, in]` layout — q8: `I8`
//! `[out, in]`; q4: `U8` `[out, in / 2]`, two 4-bit two's-complement values a
//! byte, the first in the low nibble — and `<m>.weight_scale` their `F16`
//! scales `[out, in / 32]`, one per block of 32 along the input dimension
//! (value × scale is the weight). `__metadata__` says `"quantization": "q8"`
//! or `"q4"` and `"quantization_block": "32"`. These are the bytes of Burn's
//! packed store (little-endian), so they go to the device as they are.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};

use burn::tensor::quantization::{QuantizedBytes, scale_to_dtype};
use burn::tensor::{DType, FloatDType, TensorData};
use half::f16;

use super::weights::KeyMap;
use crate::error::{Error, Result};
use crate::model::linear::Linear;
use crate::model::llava::LlavaModel;
use crate::model::precision::{BLOCK, Quantize, float_dtype_of};

/// The safetensors metadata key naming the quantization.
pub const METADATA_KEY: &str = "quantization";
/// Appended to a quantized weight's name to name its scales.
pub const SCALE_SUFFIX: &str = "_scale";

/// The bytes of one quantized `[out, in]` weight as the file holds them.
pub struct Packed {
    pub values: Vec<u8>,
    pub scales: Vec<u8>,
}

/// Bytes of the values and of the scales of an `[out, in]` weight.
pub fn packed_sizes(quantize: Quantize, out: usize, inp: usize) -> (usize, usize) {
    let values = match quantize {
        Quantize::Q4 => out * inp / 2,
        _ => out * inp,
    };
    (values, out * (inp / BLOCK) * 2)
}

/// The quantized form of an `[out, in]` weight read from a checkpoint, as the
/// load hands it to the device and the saved file holds it: quantized on the
/// host, or as it is if it was saved quantized.
pub fn pack(data: TensorData, shape: [usize; 2], quantize: Quantize) -> Result<Packed> {
    match data.dtype() {
        DType::QFloat(scheme) => {
            let (values, scales) =
                QuantizedBytes { bytes: data.into_bytes(), scheme, shape: shape.into() }.into_vec_i8();
            encode(&values, &scales.block, quantize, shape)
        }
        _ => {
            let weight = data
                .convert::<f32>()
                .try_into_vec::<f32>()
                .map_err(|e| Error::Invalid(format!("a weight is not readable as floats: {e:?}")))?;
            quantize_host(&weight, shape, quantize)
        }
    }
}

/// Quantize an `[out, in]` float weight on the host, rows in parallel, with
/// Burn's arithmetic for the scheme: per block of 32, scale = max|x| / 127
/// (q8) or / 7 (q4) rounded up to f16, value = round(x / scale).
fn quantize_host(weight: &[f32], shape: [usize; 2], quantize: Quantize) -> Result<Packed> {
    use rayon::prelude::*;
    let scheme = quantize.scheme().ok_or_else(|| Error::Invalid("quantizing with no quantization".into()))?;
    let [out, inp] = shape;
    if weight.len() != out * inp || !inp.is_multiple_of(BLOCK) {
        return Err(Error::Invalid(format!("cannot quantize {} values as [{out}, {inp}] in blocks", weight.len())));
    }
    let (lo, hi) = scheme.value.range();
    let scale_dtype = scheme.scale_dtype();
    let mut values = vec![0i8; out * inp];
    let mut scales = vec![0f32; out * inp / BLOCK];
    values.par_chunks_mut(BLOCK).zip(scales.par_iter_mut()).zip(weight.par_chunks(BLOCK)).for_each(|((v, s), w)| {
        let alpha = w.iter().fold(0f32, |m, x| m.max(x.abs()));
        let scale = scale_to_dtype(2.0 * alpha / (hi - lo), scale_dtype);
        // An all-zero block still needs a usable scale.
        *s = if scale > 0.0 && scale.is_finite() { scale } else { scale_to_dtype(f32::MIN_POSITIVE, scale_dtype) };
        let inv = 1.0 / *s;
        for (q, x) in v.iter_mut().zip(w) {
            *q = (x * inv).round().clamp(lo, hi) as i8;
        }
    });
    encode(&values, &scales, quantize, shape)
}

/// Values and scales in the file's byte form, checked against the shape.
fn encode(values: &[i8], scales: &[f32], quantize: Quantize, [out, inp]: [usize; 2]) -> Result<Packed> {
    let values: Vec<u8> = match quantize {
        Quantize::Q4 => values.chunks_exact(2).map(|p| (p[0] as u8 & 0x0f) | ((p[1] as u8 & 0x0f) << 4)).collect(),
        _ => values.iter().map(|&v| v as u8).collect(),
    };
    let scales: Vec<u8> = scales.iter().flat_map(|s| f16::from_f32(*s).to_le_bytes()).collect();
    let (nv, ns) = packed_sizes(quantize, out, inp);
    if values.len() != nv || scales.len() != ns {
        return Err(Error::Invalid(format!(
            "a quantized [{out}, {inp}] weight gave {} value and {} scale bytes, expected {nv} and {ns}",
            values.len(),
            scales.len()
        )));
    }
    Ok(Packed { values, scales })
}

/// Burn's tensor data for a weight read from a file: the values, then the
/// scales at a 4-byte boundary (Burn's layout of a quantized tensor's bytes).
pub fn unpack(values: Vec<u8>, scales: &[u8], shape: [usize; 2], quantize: Quantize) -> Result<TensorData> {
    let scheme = quantize.scheme().ok_or_else(|| Error::Invalid("unpacking unquantized weights".into()))?;
    let mut bytes = values;
    bytes.resize(bytes.len().next_multiple_of(4), 0);
    bytes.extend_from_slice(scales);
    TensorData::try_from_bytes_vec(bytes, shape.to_vec(), DType::QFloat(scheme))
        .map_err(|e| Error::Invalid(format!("quantized weight bytes do not fit their shape {shape:?}: {e:?}")))
}

/// The quantized weight named `values` and its scales, checked against each
/// other: the weight's `[out, in]` shape.
pub fn joined_shape(
    name: &str,
    quantize: Quantize,
    values: (DType, &[usize]),
    scales: (DType, &[usize]),
) -> std::result::Result<[usize; 2], String> {
    let (want_values, per_byte) = match quantize {
        Quantize::Q4 => (DType::U8, 2),
        _ => (DType::I8, 1),
    };
    let (&[out, cols], &[s_out, s_blocks]) = (values.1, scales.1) else {
        return Err(format!(
            "quantized tensor `{name}` and its scales must be 2-D, found {:?} and {:?}",
            values.1, scales.1
        ));
    };
    let inp = cols * per_byte;
    if values.0 != want_values || scales.0 != DType::F16 {
        return Err(format!(
            "quantized tensor `{name}` ({}): expected {want_values:?} values and F16 scales, found {:?} and {:?}",
            quantize.name(),
            values.0,
            scales.0
        ));
    }
    if !inp.is_multiple_of(BLOCK) || (s_out, s_blocks) != (out, inp / BLOCK) {
        return Err(format!(
            "quantized tensor `{name}`: values {:?} need scales [{out}, {}], found {:?}",
            values.1,
            inp / BLOCK,
            scales.1
        ));
    }
    Ok([out, inp])
}

/// The checkpoint names (through `map`) of the quantized weights among `linears`
/// (module paths and layers).
pub fn quantized_names(linears: &[(String, &Linear)], map: &KeyMap) -> BTreeSet<String> {
    linears
        .iter()
        .filter(|(_, l)| l.is_quantized())
        .map(|(path, _)| map.to_checkpoint(&format!("{path}.weight")))
        .collect()
}

/// What `save` wrote.
#[derive(Debug)]
pub struct Saved {
    pub weights_bytes: u64,
    pub quantized_tensors: usize,
    /// Where the separate CLIP tower was copied to, if the model has one.
    pub tower: Option<PathBuf>,
}

/// Write `model` (loaded with `--quantize`) as a new model directory `out`:
/// its quantized linear weights as they are, every other tensor in the
/// model's float type, its config and tokenizer files, and a separate CLIP
/// tower copied into `out/vision_tower`. `out` must not exist; the directory
/// is built beside it and renamed into place, so `out` is whole or absent.
pub fn save(model: &LlavaModel, out: &Path) -> Result<Saved> {
    let quantize = model.precision.quantize;
    if quantize == Quantize::None {
        return Err(Error::Invalid(
            "--quantize: the model was loaded unquantized, so there is nothing quantized to save (use --quantize q8 or q4)"
                .into(),
        ));
    }
    check_out(out)?;
    if out.file_name().is_none() {
        return Err(Error::Invalid(format!("--out {}: not a directory name", out.display())));
    }
    let tmp = crate::io::atomic_write::fresh_dir(out)?;
    let result = write_dir(model, quantize, &tmp).and_then(|saved| {
        crate::io::atomic_write::rename_new(&tmp, out)?;
        Ok(Saved { tower: saved.tower.map(|_| out.join(TOWER_DIR)), ..saved })
    });
    if result.is_err() {
        // Only what this call created: its own fresh directory.
        let _ = std::fs::remove_dir_all(&tmp);
    }
    result
}

/// `--out` of a quantized model must be a new path (checked before any work).
pub fn check_out(out: &Path) -> Result<()> {
    if std::fs::symlink_metadata(out).is_ok() {
        return Err(Error::Invalid(format!(
            "--out {}: already exists (expected a new path for the quantized model directory)",
            out.display()
        )));
    }
    Ok(())
}

/// The separate tower's directory inside a saved model.
const TOWER_DIR: &str = "vision_tower";

fn write_dir(model: &LlavaModel, quantize: Quantize, dir: &Path) -> Result<Saved> {
    let source = &model.checkpoint.dir;
    let config_path = source.join("config.json");
    let mut config = crate::io::json::read_json(&config_path)?;
    // A tower kept beside the model is copied in, and the config points at the copy.
    let separate_tower = model.vision.as_ref().map(|v| &v.tower_dir).filter(|t| *t != source);
    if let Some(tower) = separate_tower {
        let target = dir.join(TOWER_DIR);
        std::fs::create_dir(&target).map_err(|e| Error::io(&target, e))?;
        copy_files(tower, &target, |_| true)?;
        if let Some(obj) = config.as_object_mut() {
            obj.insert("mm_vision_tower".into(), TOWER_DIR.into());
        }
    }
    let text = serde_json::to_string_pretty(&config).map_err(|e| Error::Invalid(format!("config.json: {e}")))?;
    write_new(&dir.join("config.json"), text.as_bytes())?;
    // Tokenizer, preprocessing and generation files: every file but the config and weights.
    let weights_file = |n: &str| {
        n.ends_with(".safetensors") || n.ends_with(".bin") || n.ends_with(".index.json") || n == "config.json"
    };
    copy_files(source, dir, |n| !weights_file(n))?;

    let tensors = model.checkpoint.tensors()?;
    let (llm_map, proj_map) = crate::model::llava::key_maps(&model.config, &tensors);
    // Which weights the model holds quantized; their bytes are made again from
    // the checkpoint, on the host, exactly as the load made them (`quantize_host`).
    let mut quantized = quantized_names(&model.llm.linears(), &llm_map);
    if let (Some(v), Some(map)) = (&model.vision, &proj_map) {
        quantized.extend(quantized_names(&v.projector.linears(), map));
    }
    let float = model.precision.dtype;
    let path = dir.join("model.safetensors");
    let weights_bytes = write_safetensors(&path, quantize, &tensors.entries, &quantized, float)?;
    Ok(Saved { weights_bytes, quantized_tensors: quantized.len(), tower: separate_tower.cloned() })
}

/// One tensor of the file being written: its header fields and how to make its bytes.
enum Planned<'a> {
    Values(&'a super::weights::Entry),
    Scales,
    Float(&'a super::weights::Entry),
}

fn write_safetensors(
    path: &Path,
    quantize: Quantize,
    entries: &BTreeMap<String, super::weights::Entry>,
    quantized: &BTreeSet<String>,
    float: FloatDType,
) -> Result<u64> {
    // The header first: every size follows from the shapes.
    let mut plan: Vec<(String, &str, Vec<usize>, usize, Planned)> = vec![];
    for (key, e) in entries {
        if quantized.contains(key) {
            let &[out, inp] = e.shape.as_slice() else {
                return Err(Error::weights(&e.file, format!("tensor `{key}`: a linear weight of shape {:?}", e.shape)));
            };
            let (nv, ns) = packed_sizes(quantize, out, inp);
            let cols = if quantize == Quantize::Q4 { inp / 2 } else { inp };
            let vdt = if quantize == Quantize::Q4 { "U8" } else { "I8" };
            plan.push((key.clone(), vdt, vec![out, cols], nv, Planned::Values(e)));
            plan.push((format!("{key}{SCALE_SUFFIX}"), "F16", vec![out, inp / BLOCK], ns, Planned::Scales));
        } else {
            let dtype = if float_dtype_of(e.dtype).is_some() { DType::from(float) } else { e.dtype };
            let name = safetensors_dtype(dtype).ok_or_else(|| {
                Error::weights(&e.file, format!("tensor `{key}` has dtype {dtype:?}, which the saved file cannot hold"))
            })?;
            let n = e.shape.iter().product::<usize>() * dtype.size();
            plan.push((key.clone(), name, e.shape.clone(), n, Planned::Float(e)));
        }
    }
    let mut header = serde_json::Map::new();
    header.insert(
        "__metadata__".into(),
        serde_json::json!({"format": "pt", METADATA_KEY: quantize.name(), "quantization_block": BLOCK.to_string()}),
    );
    let mut offset = 0usize;
    for (name, dtype, shape, n, _) in &plan {
        header.insert(
            name.clone(),
            serde_json::json!({"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + n]}),
        );
        offset += n;
    }
    let mut head = serde_json::to_vec(&header).map_err(|e| Error::Invalid(e.to_string()))?;
    head.resize(head.len().next_multiple_of(8), b' ');

    let io = |e| Error::io(path, e);
    let mut f = std::io::BufWriter::new(std::fs::File::create_new(path).map_err(io)?);
    f.write_all(&(head.len() as u64).to_le_bytes()).map_err(io)?;
    f.write_all(&head).map_err(io)?;
    let mut pending_scales = None;
    for (name, _, _, n, what) in plan {
        let bytes = match what {
            Planned::Values(e) => {
                let p = pack(e.read()?, [e.shape[0], e.shape[1]], quantize)?;
                pending_scales = Some(p.scales);
                p.values
            }
            Planned::Scales => pending_scales.take().expect("scales follow their values"),
            Planned::Float(e) => {
                let data = e.read()?;
                let data =
                    if float_dtype_of(data.dtype()).is_some() { data.convert_dtype(DType::from(float)) } else { data };
                data.into_bytes().to_vec()
            }
        };
        if bytes.len() != n {
            return Err(Error::Invalid(format!("tensor `{name}`: {} bytes, the header says {n}", bytes.len())));
        }
        f.write_all(&bytes).map_err(io)?;
    }
    let f = f.into_inner().map_err(|e| io(e.into_error()))?;
    f.sync_all().map_err(io)?;
    Ok(8 + head.len() as u64 + offset as u64)
}

fn safetensors_dtype(d: DType) -> Option<&'static str> {
    Some(match d {
        DType::F32 => "F32",
        DType::F16 => "F16",
        DType::BF16 => "BF16",
        DType::F64 => "F64",
        DType::I64 => "I64",
        DType::I32 => "I32",
        DType::I16 => "I16",
        DType::I8 => "I8",
        DType::U8 => "U8",
        _ => return None,
    })
}

/// Create `path` (it must not exist) holding `bytes`.
fn write_new(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut f = std::fs::File::create_new(path).map_err(|e| Error::io(path, e))?;
    f.write_all(bytes).and_then(|_| f.sync_all()).map_err(|e| Error::io(path, e))
}

/// Copy the regular files of `from` whose names `keep` accepts into `to`.
fn copy_files(from: &Path, to: &Path, keep: impl Fn(&str) -> bool) -> Result<()> {
    for entry in std::fs::read_dir(from).map_err(|e| Error::io(from, e))? {
        let entry = entry.map_err(|e| Error::io(from, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let file_type = entry.file_type().map_err(|e| Error::io(&entry.path(), e))?;
        if name.starts_with('.') || !keep(&name) || !(file_type.is_file() || file_type.is_symlink()) {
            continue;
        }
        let src = entry.path();
        if !src.is_file() {
            continue;
        }
        let dst = to.join(&name);
        let mut r = std::fs::File::open(&src).map_err(|e| Error::io(&src, e))?;
        let mut w = std::fs::File::create_new(&dst).map_err(|e| Error::io(&dst, e))?;
        std::io::copy(&mut r, &mut w).and_then(|_| w.sync_all()).map_err(|e| Error::io(&dst, e))?;
    }
    Ok(())
}
