//! Checkpoint discovery and loading: safetensors (memory-mapped) or PyTorch
//! `.bin`, single or sharded through an index json, f32/f16/bf16 on disk.
//!
//! A checkpoint's tensor names reach a module through a [`KeyMap`] of prefix
//! pairs, which also maps back, so a missing tensor is reported by the name
//! it should have in the file. Shapes are checked in PyTorch terms before
//! anything is applied.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use burn::module::{Module, ModuleVisitor, Param};
use burn::store::burn_pack::Tensor as PackTensor;
use burn::store::{
    ChainAdapter, FloatCastAdapter, ModuleSnapshot, ModuleStore, PyTorchToBurnAdapter, PytorchStore, SafetensorsStore,
};
use burn::tensor::{DType, Tensor, TensorData};

use crate::error::{Error, Result};

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

/// Every tensor of a checkpoint, by its name in the file, with the file it is in.
pub struct Tensors {
    pub dir: PathBuf,
    pub entries: BTreeMap<String, (PathBuf, PackTensor)>,
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
            files.insert(file.to_string());
        }
        let files: Vec<PathBuf> = files.into_iter().map(|f| dir.join(f)).collect();
        if let Some(missing) = files.iter().find(|f| !f.is_file()) {
            return Err(Error::weights(missing, format!("shard listed in {} does not exist", index.display())));
        }
        Ok(files)
    }

    /// Read every file's tensor table (the data stays on disk until applied).
    pub fn tensors(&self) -> Result<Tensors> {
        let mut entries = BTreeMap::new();
        for file in &self.files {
            let table = match self.format {
                Format::Safetensors => SafetensorsStore::from_file(file)
                    .get_all_tensors()
                    .cloned()
                    .map_err(|e| Error::weights(file, format!("not a readable safetensors file: {e}")))?,
                Format::Pytorch => PytorchStore::from_file(file)
                    .map_indices_contiguous(false)
                    .get_all_tensors()
                    .cloned()
                    .map_err(|e| Error::weights(file, format!("not a readable PyTorch checkpoint: {e}")))?,
            };
            for (name, tensor) in table {
                entries.insert(name, (file.clone(), tensor));
            }
        }
        Ok(Tensors { dir: self.dir.clone(), entries })
    }
}

impl Tensors {
    pub fn has_prefix(&self, prefix: &str) -> bool {
        self.entries.range(prefix.to_string()..).next().is_some_and(|(k, _)| k.starts_with(prefix))
    }

    /// The dtypes stored on disk, with how many elements each.
    pub fn dtype_census(&self) -> BTreeMap<String, usize> {
        let mut out = BTreeMap::new();
        for (_, t) in self.entries.values() {
            *out.entry(format!("{:?}", t.dtype)).or_insert(0) += t.shape.num_elements();
        }
        out
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

/// The dtype modules hold after loading. Weights stored as f16/bf16 are converted.
pub const COMPUTE_DTYPE: DType = DType::F32;

/// One parameter as PyTorch names and lays it out.
pub struct PytorchParam {
    /// Dotted module path with PyTorch's leaf names (norm `weight`/`bias`).
    pub name: String,
    /// Shape in PyTorch's layout (Linear weights `[out, in]`).
    pub shape: Vec<usize>,
    /// The values in that layout, when asked for.
    pub data: Option<TensorData>,
}

/// Every float parameter of `module` in PyTorch terms. With `read` false no
/// parameter is initialised or read: a 7B model must not be allocated once
/// as zeros before loading.
pub fn pytorch_params<M: Module>(module: &M, read: bool) -> Vec<PytorchParam> {
    struct Visit {
        read: bool,
        path: Vec<String>,
        containers: Vec<String>,
        out: Vec<PytorchParam>,
    }
    impl ModuleVisitor for Visit {
        fn enter_module(&mut self, name: &str, container_type: &str) {
            self.path.push(name.to_string());
            self.containers.push(container_type.to_string());
        }
        fn exit_module(&mut self, _name: &str, _container_type: &str) {
            self.path.pop();
            self.containers.pop();
        }
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            let module = self.containers.iter().rev().find(|c| c.starts_with("Struct:")).map(String::as_str);
            let mut path = self.path.clone();
            let mut shape = param.lazy_shape().to_vec();
            let name = path.last_mut().expect("a parameter has a name");
            let mut transpose = false;
            match (module, name.as_str()) {
                (Some("Struct:Linear"), "weight") if shape.len() == 2 => {
                    shape.swap(0, 1);
                    transpose = true;
                }
                (Some("Struct:LayerNorm" | "Struct:RmsNorm"), "gamma") => *name = "weight".into(),
                (Some("Struct:LayerNorm" | "Struct:RmsNorm"), "beta") => *name = "bias".into(),
                _ => {}
            }
            let data = self.read.then(|| {
                let t = param.val();
                let t = if transpose { t.swap_dims(0, 1) } else { t };
                t.into_data().convert::<f32>()
            });
            self.out.push(PytorchParam { name: path.join("."), shape, data });
        }
    }
    let mut v = Visit { read, path: vec![], containers: vec![], out: vec![] };
    module.visit(&mut v);
    v.out
}

fn expected_shapes<M: Module>(module: &M) -> HashMap<String, Vec<usize>> {
    pytorch_params(module, false).into_iter().map(|p| (p.name, p.shape)).collect()
}

/// Load `module`'s parameters from `tensors` through `map`, all or nothing:
/// a missing tensor or a shape that differs from the module's is an error
/// naming the tensor, the file and both shapes.
pub fn load_module<M: Module + ModuleSnapshot>(module: M, tensors: &Tensors, map: &KeyMap, what: &str) -> Result<M> {
    let expected = expected_shapes(&module);
    let mut chosen = Vec::with_capacity(expected.len());
    for (key, (file, tensor)) in &tensors.entries {
        let Some(path) = map.to_module(key) else { continue };
        let Some(shape) = expected.get(&path) else { continue };
        if tensor.shape.to_vec() != *shape {
            return Err(Error::weights(
                file,
                format!("tensor `{key}` ({what}): expected shape {shape:?}, found {:?}", tensor.shape.to_vec()),
            ));
        }
        if !matches!(tensor.dtype, DType::F32 | DType::F16 | DType::BF16 | DType::F64) {
            return Err(Error::weights(
                file,
                format!("tensor `{key}` ({what}): expected a float dtype, found {:?}", tensor.dtype),
            ));
        }
        let mut t = tensor.clone();
        t.name = path;
        chosen.push(t);
    }
    let found: BTreeSet<&str> = chosen.iter().map(|t| t.name.as_str()).collect();
    let mut missing: Vec<&String> = expected.keys().filter(|k| !found.contains(k.as_str())).collect();
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
    let mut module = module;
    let adapter = ChainAdapter::new(PyTorchToBurnAdapter, FloatCastAdapter::to(COMPUTE_DTYPE));
    let result = module.apply(chosen, None, Some(Box::new(adapter)), true);
    if let Some(e) = result.errors.first() {
        return Err(Error::weights(&tensors.dir, format!("{what}: {e}")));
    }
    if let Some((path, _)) = result.missing.first() {
        return Err(Error::weights(&tensors.dir, format!("missing tensor `{}` ({what})", map.to_checkpoint(path))));
    }
    Ok(module)
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
