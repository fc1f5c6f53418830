//! Checkpoint discovery and loading: safetensors (read tensor by tensor) or
//! PyTorch `.bin`, single or sharded through an index json, f32/f16/bf16 on
//! disk (or quantized as vocollama saves it), loaded straight into the float
//! type or quantization asked for.
//!
//! A checkpoint's tensor names reach a module through a [`KeyMap`] of prefix
//! pairs, which also maps back, so a missing tensor is reported by the name
//! it should have in the file. Shapes are checked in PyTorch terms before
//! anything is applied.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::store::burn_pack::Tensor as PackTensor;
use burn::store::{ModuleStore, PytorchStore};
use burn::tensor::{DType, Device, FloatDType, Tensor, TensorData};

use super::quantized;
use crate::error::{Error, Result};
use crate::model::precision::{BLOCK, Quantize, dtype_bytes, float_dtype_of};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Safetensors,
    Pytorch,
}

/// The weight files of one model directory.
#[derive(Debug, Clone)]
pub struct Checkpoint {
    pub dir: PathBuf,
    pub format: Format,
    pub files: Vec<PathBuf>,
}

/// Every tensor of a checkpoint, by its name in the file: where it is and what it holds.
pub struct Tensors {
    pub dir: PathBuf,
    pub entries: BTreeMap<String, Entry>,
    /// How the linear weights were saved quantized (`checkpoint::quantized`), if they were.
    pub quantized: Option<Quantize>,
}

/// One tensor of a checkpoint, not yet read.
pub struct Entry {
    pub file: PathBuf,
    pub dtype: DType,
    pub shape: Vec<usize>,
    source: Source,
}

enum Source {
    /// Bytes `offset..offset + len` of a safetensors file, read with positioned
    /// reads (no memory map: a mapped 14 GB file would count in the process's
    /// resident memory as it is read).
    Range { offset: u64, len: usize },
    /// A quantized weight saved by vocollama: its values and its scales,
    /// two byte ranges of one safetensors file (`checkpoint::quantized`).
    Quantized { values: (u64, usize), scales: (u64, usize), quantize: Quantize },
    /// A tensor of a PyTorch `.bin` file, read by burn-store.
    Pickle(Box<PackTensor>),
}

impl Entry {
    /// The tensor's values as stored (its dtype, PyTorch's layout).
    pub fn read(&self) -> Result<TensorData> {
        match &self.source {
            Source::Range { offset, len } => {
                let mut bytes = vec![0u8; *len];
                read_at(&self.file, *offset, &mut bytes)?;
                TensorData::try_from_bytes_vec(bytes, self.shape.clone(), self.dtype)
                    .map_err(|e| Error::weights(&self.file, format!("a tensor's bytes do not match its header: {e:?}")))
            }
            Source::Quantized { values, scales, quantize } => {
                let mut v = vec![0u8; values.1];
                read_at(&self.file, values.0, &mut v)?;
                let mut s = vec![0u8; scales.1];
                read_at(&self.file, scales.0, &mut s)?;
                let shape = [self.shape[0], self.shape[1]];
                quantized::unpack(v, &s, shape, *quantize).map_err(|e| Error::weights(&self.file, e.to_string()))
            }
            Source::Pickle(t) => burn::store::bridge::to_data(t)
                .map_err(|e| Error::weights(&self.file, format!("not a readable PyTorch checkpoint: {e}"))),
        }
    }
}

/// Fill `buf` from `file` at `offset`.
fn read_at(file: &Path, offset: u64, buf: &mut [u8]) -> Result<()> {
    let f = std::fs::File::open(file).map_err(|e| Error::io(file, e))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileExt;
        f.read_exact_at(buf, offset).map_err(|e| Error::io(file, e))
    }
    #[cfg(not(unix))]
    {
        use std::io::{Read, Seek, SeekFrom};
        let mut f = f;
        f.seek(SeekFrom::Start(offset)).and_then(|_| f.read_exact(buf)).map_err(|e| Error::io(file, e))
    }
}

/// The largest safetensors header read (the format's own limit).
const MAX_HEADER: u64 = 100 * 1024 * 1024;

/// The tensor table of a safetensors file: every name, dtype, shape and byte
/// range, checked against the file's length before anything is read.
/// A file's tensors by name, in the order read.
type Table = Vec<(String, Entry)>;

fn safetensors_table(file: &Path) -> Result<(Table, Option<Quantize>)> {
    let bad = |msg: String| Error::weights(file, format!("not a readable safetensors file: {msg}"));
    let len = std::fs::metadata(file).map_err(|e| Error::io(file, e))?.len();
    if len < 8 {
        return Err(bad(format!("{len} bytes, shorter than the 8-byte header length")));
    }
    let mut head = [0u8; 8];
    read_at(file, 0, &mut head)?;
    let n = u64::from_le_bytes(head);
    if n > MAX_HEADER || n > len - 8 {
        return Err(bad(format!("a header of {n} bytes in a file of {len}")));
    }
    let mut header = vec![0u8; n as usize];
    read_at(file, 8, &mut header)?;
    let json: serde_json::Value = serde_json::from_slice(&header).map_err(|e| bad(format!("header: {e}")))?;
    let table = json.as_object().ok_or_else(|| bad("the header is not a JSON object".into()))?;
    let data_start = 8 + n;
    let quantize = match table.get("__metadata__").and_then(|m| m.get(quantized::METADATA_KEY)) {
        None => None,
        Some(q) => match (q.as_str(), table["__metadata__"].get("quantization_block").and_then(|b| b.as_str())) {
            (Some("q8"), Some("32")) => Some(Quantize::Q8),
            (Some("q4"), Some("32")) => Some(Quantize::Q4),
            _ => {
                return Err(bad(format!(
                    "__metadata__ says quantization {q} (block {:?}); vocollama reads q8 and q4 in blocks of 32",
                    table["__metadata__"].get("quantization_block")
                )));
            }
        },
    };
    let mut out = Vec::with_capacity(table.len());
    for (name, v) in table.iter().filter(|(k, _)| *k != "__metadata__") {
        let field = |k: &str| v.get(k).ok_or_else(|| bad(format!("tensor `{name}` has no `{k}`")));
        let dtype = match field("dtype")?.as_str() {
            Some("F32") => DType::F32,
            Some("F16") => DType::F16,
            Some("BF16") => DType::BF16,
            Some("F64") => DType::F64,
            Some("I64") => DType::I64,
            Some("I32") => DType::I32,
            Some("I16") => DType::I16,
            Some("I8") => DType::I8,
            Some("U8") => DType::U8,
            Some("BOOL") => DType::Bool(burn::tensor::BoolStore::Native),
            other => return Err(bad(format!("tensor `{name}` has dtype {other:?}, which vocollama does not read"))),
        };
        let shape: Vec<usize> = field("shape")?
            .as_array()
            .and_then(|a| a.iter().map(|d| d.as_u64().and_then(|d| usize::try_from(d).ok())).collect())
            .ok_or_else(|| bad(format!("tensor `{name}`: `shape` is not a list of sizes")))?;
        let offsets: Vec<u64> = field("data_offsets")?
            .as_array()
            .and_then(|a| a.iter().map(|d| d.as_u64()).collect())
            .filter(|o: &Vec<u64>| o.len() == 2 && o[0] <= o[1])
            .ok_or_else(|| bad(format!("tensor `{name}`: `data_offsets` is not [begin, end]")))?;
        let bytes = shape
            .iter()
            .try_fold(dtype.size() as u64, |acc, &d| acc.checked_mul(d as u64))
            .ok_or_else(|| bad(format!("tensor `{name}`: its shape {shape:?} overflows")))?;
        if offsets[1] - offsets[0] != bytes {
            return Err(bad(format!(
                "tensor `{name}` ({dtype:?} {shape:?}) needs {bytes} bytes, its offsets span {}",
                offsets[1] - offsets[0]
            )));
        }
        if data_start.checked_add(offsets[1]).is_none_or(|end| end > len) {
            return Err(bad(format!(
                "tensor `{name}` ends at byte {}, but the file has {len} (truncated?)",
                data_start.saturating_add(offsets[1])
            )));
        }
        let source = Source::Range { offset: data_start + offsets[0], len: bytes as usize };
        out.push((name.clone(), Entry { file: file.to_path_buf(), dtype, shape, source }));
    }
    match quantize {
        Some(q) => join_scales(out, q).map_err(bad).map(|t| (t, Some(q))),
        None => Ok((out, None)),
    }
}

/// Each quantized weight of a table joined with its scales into one entry of
/// the weight's `[out, in]` shape; a scale without its weight is an error.
fn join_scales(table: Table, q: Quantize) -> std::result::Result<Table, String> {
    let scheme = q.scheme().expect("a quantization");
    let (scales, mut rest): (Vec<_>, Vec<_>) =
        table.into_iter().partition(|(name, _)| name.ends_with(quantized::SCALE_SUFFIX));
    let index: HashMap<String, usize> = rest.iter().enumerate().map(|(i, (n, _))| (n.clone(), i)).collect();
    for (scale_name, s) in scales {
        let name = &scale_name[..scale_name.len() - quantized::SCALE_SUFFIX.len()];
        let i = *index.get(name).ok_or_else(|| format!("tensor `{scale_name}` has no weight `{name}`"))?;
        let v = &mut rest[i].1;
        let shape = quantized::joined_shape(name, q, (v.dtype, &v.shape), (s.dtype, &s.shape))?;
        let (Source::Range { offset: vo, len: vl }, Source::Range { offset: so, len: sl }) = (&v.source, &s.source)
        else {
            unreachable!("safetensors entries are byte ranges")
        };
        v.source = Source::Quantized { values: (*vo, *vl), scales: (*so, *sl), quantize: q };
        v.dtype = DType::QFloat(scheme);
        v.shape = shape.to_vec();
    }
    Ok(rest)
}

impl Checkpoint {
    /// Find the weights in `dir`: an index json first, then a single file; safetensors before `.bin`.
    pub fn discover(dir: &Path) -> Result<Self> {
        let candidates = [
            ("model.safetensors.index.json", Format::Safetensors, true),
            ("model.safetensors", Format::Safetensors, false),
            ("pytorch_model.bin.index.json", Format::Pytorch, true),
            ("pytorch_model.bin", Format::Pytorch, false),
        ];
        if !dir.is_dir() {
            return Err(Error::weights(
                dir,
                "not a directory (expected a model directory with config.json and weights)",
            ));
        }
        for (name, format, indexed) in candidates {
            let path = dir.join(name);
            if !path.is_file() {
                continue;
            }
            let files = if indexed { Self::shards(&path)? } else { vec![path] };
            return Ok(Self { dir: dir.to_path_buf(), format, files });
        }
        Err(Error::weights(
            dir,
            "no weights found (expected model.safetensors, model.safetensors.index.json, pytorch_model.bin or pytorch_model.bin.index.json)",
        ))
    }

    /// Feed the files' identity to `h`: names, sizes and 64 KiB samples from the
    /// start, middle and end of each (safetensors headers, hence every name,
    /// shape and offset, sit at the start). Cheap even for 14 GB of weights.
    pub fn identity(&self, h: &mut impl sha2::Digest) -> Result<()> {
        use std::io::{Read, Seek, SeekFrom};
        const SAMPLE: u64 = 64 * 1024;
        for file in &self.files {
            let mut f = std::fs::File::open(file).map_err(|e| Error::io(file, e))?;
            let len = f.metadata().map_err(|e| Error::io(file, e))?.len();
            h.update(file.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default().as_bytes());
            h.update(len.to_le_bytes());
            for start in [0, len.saturating_sub(SAMPLE) / 2, len.saturating_sub(SAMPLE)] {
                let mut buf = Vec::new();
                f.seek(SeekFrom::Start(start))
                    .and_then(|_| (&mut f).take(SAMPLE).read_to_end(&mut buf))
                    .map_err(|e| Error::io(file, e))?;
                h.update(&buf);
            }
        }
        Ok(())
    }

    fn shards(index: &Path) -> Result<Vec<PathBuf>> {
        let json = crate::io::json::read_json(index)?;
        let map = json
            .get("weight_map")
            .and_then(|m| m.as_object())
            .ok_or_else(|| Error::weights(index, "field `weight_map`: expected an object of tensor name -> file"))?;
        let dir = index.parent().unwrap_or(Path::new("."));
        let mut files = BTreeSet::new();
        for (key, file) in map {
            let file = file.as_str().ok_or_else(|| {
                Error::weights(index, format!("weight_map[`{key}`]: expected a file name, found {file}"))
            })?;
            // A model's own files name places inside it only: a shard is a file of the directory.
            let mut parts = Path::new(file).components();
            if !matches!((parts.next(), parts.next()), (Some(std::path::Component::Normal(_)), None)) {
                return Err(Error::weights(
                    index,
                    format!("weight_map[`{key}`]: \"{file}\" is not a file name in the model directory"),
                ));
            }
            files.insert(file.to_string());
        }
        let files: Vec<PathBuf> = files.into_iter().map(|f| dir.join(f)).collect();
        if let Some(missing) = files.iter().find(|f| !f.is_file()) {
            return Err(Error::weights(missing, format!("shard listed in {} does not exist", index.display())));
        }
        Ok(files)
    }

    /// Read every file's tensor table (the data stays on disk until loaded).
    pub fn tensors(&self) -> Result<Tensors> {
        let mut entries = BTreeMap::new();
        let mut quantized = None;
        for file in &self.files {
            let table = match self.format {
                Format::Safetensors => {
                    let (table, q) = safetensors_table(file)?;
                    if q.is_some() && quantized.is_some_and(|was| Some(was) != q) {
                        return Err(Error::weights(file, "its shards are quantized in different ways"));
                    }
                    quantized = quantized.or(q);
                    table
                }
                Format::Pytorch => PytorchStore::from_file(file)
                    .map_indices_contiguous(false)
                    .get_all_tensors()
                    .map_err(|e| Error::weights(file, format!("not a readable PyTorch checkpoint: {e}")))?
                    .iter()
                    .map(|(name, t)| {
                        let entry = Entry {
                            file: file.clone(),
                            dtype: t.dtype,
                            shape: t.shape.to_vec(),
                            source: Source::Pickle(Box::new(t.clone())),
                        };
                        (name.clone(), entry)
                    })
                    .collect(),
            };
            entries.extend(table);
        }
        Ok(Tensors { dir: self.dir.clone(), entries, quantized })
    }
}

impl Tensors {
    pub fn has_prefix(&self, prefix: &str) -> bool {
        self.entries.range(prefix.to_string()..).next().is_some_and(|(k, _)| k.starts_with(prefix))
    }

    /// The dtypes stored on disk, with how many elements each.
    pub fn dtype_census(&self) -> BTreeMap<String, usize> {
        let mut out = BTreeMap::new();
        for e in self.entries.values() {
            let name = match (e.dtype, self.quantized) {
                (DType::QFloat(_), Some(q)) => format!("{} (blocks of {BLOCK})", q.name()),
                (d, _) => format!("{d:?}"),
            };
            *out.entry(name).or_insert(0) += e.shape.iter().product::<usize>();
        }
        out
    }

    /// The float type holding most of the checkpoint's values (f32 when it holds none).
    pub fn float_dtype(&self) -> FloatDType {
        let mut counts: BTreeMap<u8, (usize, FloatDType)> = BTreeMap::new();
        for e in self.entries.values() {
            if let Some(d) = float_dtype_of(e.dtype) {
                counts.entry(dtype_bytes(d) as u8 * 2 + u8::from(d == FloatDType::BF16)).or_insert((0, d)).0 +=
                    e.shape.iter().product::<usize>();
            }
        }
        counts.into_values().max_by_key(|(n, _)| *n).map_or(FloatDType::F32, |(_, d)| d)
    }
}

/// Checkpoint name prefix → module path prefix, first match wins.
#[derive(Debug, Clone)]
pub struct KeyMap {
    pairs: Vec<(String, String)>,
}

impl KeyMap {
    pub fn new<S: Into<String>, T: Into<String>>(pairs: impl IntoIterator<Item = (S, T)>) -> Self {
        Self { pairs: pairs.into_iter().map(|(a, b)| (a.into(), b.into())).collect() }
    }

    pub fn to_module(&self, key: &str) -> Option<String> {
        self.pairs.iter().find_map(|(ck, mk)| key.strip_prefix(ck.as_str()).map(|rest| format!("{mk}{rest}")))
    }

    pub fn to_checkpoint(&self, path: &str) -> String {
        self.pairs
            .iter()
            .filter(|(_, mk)| path.starts_with(mk.as_str()))
            .max_by_key(|(_, mk)| mk.len())
            .map(|(ck, mk)| format!("{ck}{}", &path[mk.len()..]))
            .unwrap_or_else(|| path.to_string())
    }
}

/// One parameter as PyTorch names and lays it out.
pub struct PytorchParam {
    /// Dotted module path with PyTorch's leaf names (norm `weight`/`bias`).
    pub name: String,
    /// Shape in PyTorch's layout (Linear weights `[out, in]`).
    pub shape: Vec<usize>,
    /// The values in that layout, in f32, when asked for.
    pub data: Option<TensorData>,
}

/// Where a module walk (a visitor or a mapper) stands: the names and
/// container types entered so far.
#[derive(Default)]
struct ModulePath {
    path: Vec<String>,
    containers: Vec<String>,
}

impl ModulePath {
    fn enter(&mut self, name: &str, container_type: &str) {
        self.path.push(name.to_string());
        self.containers.push(container_type.to_string());
    }

    fn exit(&mut self) {
        self.path.pop();
        self.containers.pop();
    }

    /// The current parameter's PyTorch name (the path with its last element
    /// possibly renamed) and whether it is a Linear weight, stored transposed
    /// in Burn (`[in, out]`).
    fn pytorch_name(&self) -> (String, bool) {
        let module = self.containers.iter().rev().find(|c| c.starts_with("Struct:")).map(String::as_str);
        let mut path = self.path.clone();
        let name = path.last_mut().expect("a parameter has a name");
        let linear = match (module, name.as_str()) {
            (Some("Struct:Linear"), "weight") => true,
            (Some("Struct:LayerNorm" | "Struct:RmsNorm"), "gamma") => {
                *name = "weight".into();
                false
            }
            (Some("Struct:LayerNorm" | "Struct:RmsNorm"), "beta") => {
                *name = "bias".into();
                false
            }
            _ => false,
        };
        (path.join("."), linear)
    }
}

/// Every float parameter of `module` in PyTorch terms. With `read` false no
/// parameter is initialised or read: a 7B model must not be allocated once
/// as zeros before loading.
pub fn pytorch_params<M: Module>(module: &M, read: bool) -> Vec<PytorchParam> {
    struct Visit {
        read: bool,
        at: ModulePath,
        out: Vec<PytorchParam>,
    }
    impl ModuleVisitor for Visit {
        fn enter_module(&mut self, name: &str, container_type: &str) {
            self.at.enter(name, container_type);
        }
        fn exit_module(&mut self, _name: &str, _container_type: &str) {
            self.at.exit();
        }
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            let (name, linear) = self.at.pytorch_name();
            let mut shape = param.lazy_shape().to_vec();
            if linear {
                shape.swap(0, 1);
            }
            let data = self.read.then(|| {
                let t = param.val();
                let t = if matches!(t.dtype(), DType::QFloat(_)) { t.dequantize() } else { t };
                let t = if linear { t.swap_dims(0, 1) } else { t };
                t.cast(FloatDType::F32).into_data()
            });
            self.out.push(PytorchParam { name, shape, data });
        }
    }
    let mut v = Visit { read, at: ModulePath::default(), out: vec![] };
    module.visit(&mut v);
    v.out
}

fn expected_shapes<M: Module>(module: &M) -> HashMap<String, Vec<usize>> {
    pytorch_params(module, false).into_iter().map(|p| (p.name, p.shape)).collect()
}

/// How a module's parameters are held once loaded.
#[derive(Debug, Clone, Copy)]
pub struct Target {
    /// Every float parameter's type (quantized ones aside).
    pub dtype: FloatDType,
    /// How Linear weights are quantized.
    pub quantize: Quantize,
    /// Module paths (Burn's names) whose Linear weights stay unquantized.
    pub keep_float: &'static [&'static str],
}

impl Target {
    /// Every parameter in `dtype`, nothing quantized.
    pub fn float(dtype: FloatDType) -> Self {
        Self { dtype, quantize: Quantize::None, keep_float: &[] }
    }
}

/// Load `module`'s parameters from `tensors` through `map`, all or nothing:
/// a missing tensor or a shape that differs from the module's is an error
/// naming the tensor, the file and both shapes. Each tensor goes from the
/// file to `target`'s form one at a time (converted, quantized where asked,
/// Linear weights kept in PyTorch's `[out, in]` layout behind a transposed
/// view), so the whole model never exists in another form.
pub fn load_module<M: Module>(module: M, tensors: &Tensors, map: &KeyMap, what: &str, target: &Target) -> Result<M> {
    let expected = expected_shapes(&module);
    let mut chosen: HashMap<String, &str> = HashMap::with_capacity(expected.len());
    for (key, e) in &tensors.entries {
        let Some(path) = map.to_module(key) else { continue };
        let Some(shape) = expected.get(&path) else { continue };
        if e.shape != *shape {
            return Err(Error::weights(
                &e.file,
                format!("tensor `{key}` ({what}): expected shape {shape:?}, found {:?}", e.shape),
            ));
        }
        if float_dtype_of(e.dtype).is_none() && !matches!(e.dtype, DType::QFloat(_)) {
            return Err(Error::weights(
                &e.file,
                format!("tensor `{key}` ({what}): expected a float dtype, found {:?}", e.dtype),
            ));
        }
        chosen.insert(path, key);
    }
    let mut missing: Vec<&String> = expected.keys().filter(|k| !chosen.contains_key(*k)).collect();
    missing.sort();
    if let Some(first) = missing.first() {
        return Err(Error::weights(
            &tensors.dir,
            format!(
                "missing tensor `{}` ({what}, expected shape {:?}){}",
                map.to_checkpoint(first),
                expected[*first],
                if missing.len() > 1 { format!(" and {} more", missing.len() - 1) } else { String::new() }
            ),
        ));
    }
    let mut loader = Loader { tensors, chosen, target, at: ModulePath::default(), error: None };
    let module = module.map(&mut loader);
    match loader.error {
        Some(e) => Err(e),
        None => Ok(module),
    }
}

/// The module mapper that puts each checkpoint tensor in place of its parameter.
struct Loader<'a> {
    tensors: &'a Tensors,
    /// Module path (PyTorch leaf names) → checkpoint name.
    chosen: HashMap<String, &'a str>,
    target: &'a Target,
    at: ModulePath,
    error: Option<Error>,
}

impl Loader<'_> {
    fn tensor<const D: usize>(&self, name: &str, linear: bool, device: &Device) -> Result<Tensor<D>> {
        let key = self.chosen[name];
        let entry = &self.tensors.entries[key];
        if matches!(entry.dtype, DType::QFloat(_)) {
            // Saved quantized: to the device as it is, behind the transposed view.
            if !linear {
                return Err(Error::weights(
                    &entry.file,
                    format!("tensor `{key}` is quantized but is not a linear weight"),
                ));
            }
            return Ok(transpose_linear(Tensor::<D>::from_data(entry.read()?, device)));
        }
        let data = entry.read()?;
        // Quantized in PyTorch's layout, blocks running along the input dimension,
        // on the host (every core) so the device receives the quantized bytes; a
        // layer whose input is not a whole number of blocks stays in the float type.
        let module = name.rsplit_once('.').map_or("", |(m, _)| m);
        let shape = entry.shape.clone();
        let q = self.target.quantize;
        let quantize = q != Quantize::None
            && linear
            && shape.len() == 2
            && shape[1].is_multiple_of(BLOCK)
            && !self.target.keep_float.contains(&module);
        let t = if quantize {
            let shape = [shape[0], shape[1]];
            let packed = quantized::pack(data, shape, q)
                .map_err(|e| Error::weights(&entry.file, format!("tensor `{key}`: {e}")))?;
            Tensor::<D>::from_data(quantized::unpack(packed.values, &packed.scales, shape, q)?, device)
        } else {
            Tensor::<D>::from_data(data, (device, DType::from(self.target.dtype)))
        };
        Ok(if linear { transpose_linear(t) } else { t })
    }
}

/// A linear weight read as PyTorch's `[out, in]`, as Burn's `[in, out]` view; quantized
/// blocks keep their bytes in place on the CPU (`vocollama_kernels::linear::transpose`).
fn transpose_linear<const D: usize>(t: Tensor<D>) -> Tensor<D> {
    if D != 2 {
        return t.transpose();
    }
    // The same primitive seen at its rank, 2 (a reshape would requantize a quantized weight).
    let t2 = Tensor::<2>::from_dispatch(t.into_dispatch());
    Tensor::<D>::from_dispatch(vocollama_kernels::linear::transpose(t2).into_dispatch())
}

impl ModuleMapper for Loader<'_> {
    fn enter_module(&mut self, name: &str, container_type: &str) {
        self.at.enter(name, container_type);
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.at.exit();
    }

    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        if self.error.is_some() {
            return param;
        }
        let (name, linear) = self.at.pytorch_name();
        match self.tensor::<D>(&name, linear && D == 2, &param.lazy_device()) {
            Ok(t) => {
                let id = param.id;
                param.transform_for_load(t, id)
            }
            Err(e) => {
                self.error = Some(e);
                param
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_map_round_trips() {
        let m = KeyMap::new([("model.mm_projector.0.", "layers.0."), ("model.mm_projector.2.", "layers.1.")]);
        assert_eq!(m.to_module("model.mm_projector.2.weight").as_deref(), Some("layers.1.weight"));
        assert_eq!(m.to_module("model.layers.0.x"), None);
        assert_eq!(m.to_checkpoint("layers.1.bias"), "model.mm_projector.2.bias");
        let hf = KeyMap::new([("language_model.lm_head.", "lm_head."), ("language_model.model.", "")]);
        assert_eq!(hf.to_checkpoint("lm_head.weight"), "language_model.lm_head.weight");
        assert_eq!(hf.to_checkpoint("norm.weight"), "language_model.model.norm.weight");
    }
}
