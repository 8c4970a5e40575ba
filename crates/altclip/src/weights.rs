//! Checkpoint tensors from `model.safetensors` (memory-mapped), sharded
//! safetensors, a zip-pickle `pytorch_model.bin`, or tensors in memory, looked
//! up by the checkpoint's own key names with shape checks. A
//! [`Weights::trainable`] view turns every tensor it loads into a candle
//! `Var`, so the same module loaders build inference and training models.

use std::collections::{BTreeSet, HashMap};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use candle_core::pickle::PthTensors;
use candle_core::safetensors::Load;
use candle_core::{DType, Device, Tensor, Var};
use candle_nn::VarMap;
use safetensors::tensor::{Metadata, TensorView};

use altclip_kernels::Kernel;

use crate::error::{Error, Result};

/// Weight files in order of preference.
pub const WEIGHT_FILES: [&str; 3] = [
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
];

/// One memory-mapped `.safetensors` file.
struct MappedFile {
    path: PathBuf,
    mmap: memmap2::Mmap,
    /// Byte offset of the tensor data (after the length prefix and JSON header).
    data_start: usize,
    metadata: Metadata,
}

impl MappedFile {
    fn open(path: &Path) -> Result<Self> {
        let bad = |reason: String| Error::BadWeights {
            path: path.to_path_buf(),
            reason,
        };
        let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
        // SAFETY: the file is mapped read-only; like every mmap loader we rely
        // on nobody truncating it while it is mapped.
        let mmap = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
        let (header_len, metadata) = safetensors::SafeTensors::read_metadata(&mmap)
            .map_err(|e| bad(format!("not a safetensors file: {e}")))?;
        Ok(Self {
            path: path.to_path_buf(),
            mmap,
            data_start: 8 + header_len,
            metadata,
        })
    }

    fn shape(&self, name: &str) -> Option<Vec<usize>> {
        self.metadata.info(name).map(|i| i.shape.clone())
    }

    /// Where tensor `name`'s bytes lie in the map, with its metadata.
    fn locate(&self, name: &str) -> Option<(&safetensors::tensor::TensorInfo, Range<usize>)> {
        let info = self.metadata.info(name)?;
        let (start, end) = info.data_offsets;
        Some((info, self.data_start + start..self.data_start + end))
    }

    /// Tells the kernel that the pages of `range` are no longer needed, so
    /// that peak memory is one copy of the model, not two.
    fn release(&self, range: Range<usize>) {
        // SAFETY: the map is private and read-only, so dropped pages are simply
        // re-read from the file if anything touches them again.
        #[cfg(unix)]
        let _ = unsafe {
            self.mmap.unchecked_advise_range(
                memmap2::UncheckedAdvice::DontNeed,
                range.start,
                range.len(),
            )
        };
    }

    /// Copies a tensor out of the map, then releases its pages.
    fn load(&self, name: &str, device: &Device) -> Result<Option<Tensor>> {
        let Some((info, range)) = self.locate(name) else {
            return Ok(None);
        };
        let bad = |e: &dyn std::fmt::Display| Error::BadWeights {
            path: self.path.clone(),
            reason: format!("tensor `{name}` ({:?} {:?}): {e}", info.dtype, info.shape),
        };
        let view = TensorView::new(info.dtype, info.shape.clone(), &self.mmap[range.clone()])
            .map_err(|e| bad(&e))?;
        let tensor = view.load(device).map_err(|e| bad(&e))?;
        self.release(range);
        Ok(Some(tensor))
    }

    /// Calls `f` with tensor `name` as f32: straight from the map when it is
    /// stored as aligned little-endian f32, else converted through
    /// [`MappedFile::load`]. Its pages are released afterwards either way.
    fn with_f32<R>(&self, name: &str, f: impl FnOnce(&[f32]) -> Result<R>) -> Result<Option<R>> {
        let Some((info, range)) = self.locate(name) else {
            return Ok(None);
        };
        let bytes = &self.mmap[range.clone()];
        if info.dtype == safetensors::Dtype::F32
            && cfg!(target_endian = "little")
            && bytes.as_ptr().align_offset(4) == 0
        {
            // SAFETY: aligned, length a multiple of 4 (checked by the metadata
            // parser), and every bit pattern is a valid f32.
            let data = unsafe {
                std::slice::from_raw_parts(bytes.as_ptr().cast::<f32>(), bytes.len() / 4)
            };
            let result = f(data)?;
            self.release(range);
            return Ok(Some(result));
        }
        let t = self.load(name, &Device::Cpu)?.expect("located above");
        Ok(Some(f(&t
            .to_dtype(DType::F32)?
            .flatten_all()?
            .to_vec1::<f32>()?)?))
    }
}

/// A tensor's elements as row-major f32.
fn f32_values(t: &Tensor) -> Result<Vec<f32>> {
    Ok(t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?)
}

enum Store {
    Safetensors(Vec<MappedFile>),
    Pickle(PthTensors),
    Memory(HashMap<String, Tensor>),
}

struct Inner {
    store: Store,
    /// The files the tensors come from.
    paths: Vec<PathBuf>,
    /// Human-readable list of the files, for error messages.
    files: String,
    dtype: DType,
    device: Device,
    /// Elements loaded so far, for parameter counts.
    loaded: AtomicU64,
}

/// A view of a checkpoint under a key prefix, like candle's `VarBuilder` but
/// with errors that name the tensor, the file and both shapes.
#[derive(Clone)]
pub struct Weights {
    inner: Arc<Inner>,
    prefix: String,
    trainable: Option<Trainable>,
    /// The kernel linear layers pack their weights for (the model's plan).
    linear_kernel: Option<Kernel>,
}

/// Where a trainable view registers the variables it creates.
#[derive(Clone)]
struct Trainable {
    vars: VarMap,
    prefix: String,
}

impl Weights {
    /// Opens the weights of a model directory, in the order of preference
    /// `model.safetensors`, `model.safetensors.index.json`, `pytorch_model.bin`.
    pub fn from_dir(dir: &Path, dtype: DType, device: &Device) -> Result<Self> {
        let Some(file) = WEIGHT_FILES
            .iter()
            .map(|f| dir.join(f))
            .find(|p| p.is_file())
        else {
            return Err(Error::MissingFile {
                dir: dir.to_path_buf(),
                what: "weights",
                expected: WEIGHT_FILES.join(", "),
            });
        };
        Self::from_file(&file, dtype, device)
    }

    /// Opens one weights file: `*.safetensors`, a shard index `*.index.json`,
    /// or a PyTorch zip pickle (`*.bin`, `*.pt`, `*.pth`).
    pub fn from_file(path: &Path, dtype: DType, device: &Device) -> Result<Self> {
        let name = path.to_string_lossy();
        let (store, paths) = if name.ends_with(".index.json") {
            let shards = shard_files(path)?;
            for shard in &shards {
                if !shard.is_file() {
                    return Err(Error::MissingFile {
                        dir: path.parent().unwrap_or(Path::new(".")).to_path_buf(),
                        what: "a shard listed in the index",
                        expected: shard.display().to_string(),
                    });
                }
            }
            let files = shards
                .iter()
                .map(|p| MappedFile::open(p))
                .collect::<Result<Vec<_>>>()?;
            (Store::Safetensors(files), shards)
        } else if name.ends_with(".safetensors") {
            let file = MappedFile::open(path)?;
            (Store::Safetensors(vec![file]), vec![path.to_path_buf()])
        } else {
            let bad = |reason: String| Error::BadWeights {
                path: path.to_path_buf(),
                reason,
            };
            // candle's unpickler panics on some malformed files (found by
            // altclip-fuzz); that is a bad file, not a crash.
            let pth = std::panic::catch_unwind(|| PthTensors::new(path, None))
                .map_err(|_| bad("the pickle is malformed (the reader gave up on it)".into()))?
                .map_err(|e| {
                    bad(format!(
                        "{e} (only the zip format that torch.save has written since PyTorch 1.6 is supported; \
                         re-save it or convert it to safetensors)"
                    ))
                })?;
            (Store::Pickle(pth), vec![path.to_path_buf()])
        };
        let files = paths
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", ");
        Ok(Self {
            inner: Arc::new(Inner {
                store,
                paths,
                files,
                dtype,
                device: device.clone(),
                loaded: AtomicU64::new(0),
            }),
            prefix: String::new(),
            trainable: None,
            linear_kernel: None,
        })
    }

    /// Tensors held in memory, e.g. freshly initialised layers; `description`
    /// stands for the source in error messages.
    pub fn from_tensors(
        tensors: HashMap<String, Tensor>,
        dtype: DType,
        device: &Device,
        description: &str,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                store: Store::Memory(tensors),
                paths: Vec::new(),
                files: description.to_string(),
                dtype,
                device: device.clone(),
                loaded: AtomicU64::new(0),
            }),
            prefix: String::new(),
            trainable: None,
            linear_kernel: None,
        }
    }

    /// A view whose keys are prefixed with `name.`.
    pub fn pp(&self, name: impl std::fmt::Display) -> Self {
        let name = name.to_string();
        Self {
            inner: self.inner.clone(),
            prefix: self.key(&name),
            trainable: self.trainable.as_ref().map(|t| Trainable {
                vars: t.vars.clone(),
                prefix: join_key(&t.prefix, &name),
            }),
            linear_kernel: self.linear_kernel,
        }
    }

    /// The same view, except that every tensor loaded through it (or its
    /// sub-views) becomes a trainable `Var` registered in `vars` under
    /// `name.<key relative to this view>`. A name already in `vars` is reused,
    /// so loading twice shares one variable.
    pub fn trainable(&self, vars: &VarMap, name: &str) -> Self {
        Self {
            inner: self.inner.clone(),
            prefix: self.prefix.clone(),
            trainable: Some(Trainable {
                vars: vars.clone(),
                prefix: name.to_string(),
            }),
            linear_kernel: self.linear_kernel,
        }
    }

    /// The same view, with linear layers packed for `kernel` (the choice
    /// [`crate::ComputePlan`] makes once per model).
    pub fn with_linear_kernel(mut self, kernel: Option<Kernel>) -> Self {
        self.linear_kernel = kernel;
        self
    }

    /// The same view, with int8 linear layers kept in the float kernel of
    /// their instruction set: for the few layers whose error every output
    /// carries (the projections into the joint space, the patch embedding).
    pub fn float_linear(&self) -> Self {
        self.clone()
            .with_linear_kernel(self.linear_kernel.map(Kernel::float_kernel))
    }

    /// The kernel linear layers loaded through this view pack their weights
    /// for; `None` (candle's matmul) through a trainable view, which needs
    /// gradients, or where the plan names none.
    pub fn linear_kernel(&self) -> Option<Kernel> {
        self.linear_kernel.filter(|_| self.trainable.is_none())
    }

    fn key(&self, name: &str) -> String {
        join_key(&self.prefix, name)
    }

    /// Every tensor name in the checkpoint (all prefixes), sorted.
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = match &self.inner.store {
            Store::Safetensors(files) => files
                .iter()
                .flat_map(|f| f.metadata.tensors().into_keys())
                .collect(),
            Store::Pickle(pth) => pth.tensor_infos().keys().cloned().collect(),
            Store::Memory(map) => map.keys().cloned().collect(),
        };
        names.sort();
        names
    }

    fn shape_of(&self, key: &str) -> Option<Vec<usize>> {
        match &self.inner.store {
            Store::Safetensors(files) => files.iter().find_map(|f| f.shape(key)),
            Store::Pickle(pth) => pth
                .tensor_infos()
                .get(key)
                .map(|i| i.layout.dims().to_vec()),
            Store::Memory(map) => map.get(key).map(|t| t.dims().to_vec()),
        }
    }

    /// The shape of `name` under this prefix, if the checkpoint holds it.
    pub fn shape(&self, name: &str) -> Option<Vec<usize>> {
        self.shape_of(&self.key(name))
    }

    /// True when the checkpoint holds `name` under this prefix.
    pub fn contains(&self, name: &str) -> bool {
        self.shape_of(&self.key(name)).is_some()
    }

    /// The first of `candidates` under which `probe` exists, else the first
    /// candidate (so that a missing tensor is reported by its canonical name).
    /// Checkpoints disagree on some module names, e.g. `encoder.layer` (hub
    /// files) versus `encoder.layers` (transformers 5's vision tower on save).
    pub fn pick_prefix<'a>(&self, candidates: &[&'a str], probe: &str) -> &'a str {
        candidates
            .iter()
            .find(|c| self.contains(&format!("{c}.{probe}")))
            .or(candidates.first())
            .copied()
            .unwrap_or_default()
    }

    /// Loads `name` in the model dtype, checking that it has shape `dims`.
    pub fn get(&self, dims: &[usize], name: &str) -> Result<Tensor> {
        self.get_as(dims, name, self.inner.dtype)
    }

    /// Loads `name` in `dtype`, checking that it has shape `dims`. Through a
    /// [`Weights::trainable`] view the result is a registered `Var`.
    pub fn get_as(&self, dims: &[usize], name: &str, dtype: DType) -> Result<Tensor> {
        let Some(trainable) = &self.trainable else {
            return self.load(dims, name, dtype);
        };
        let var_name = join_key(&trainable.prefix, name);
        let mut vars = trainable
            .vars
            .data()
            .lock()
            .map_err(|_| Error::Invalid("the variable map's lock is poisoned".into()))?;
        if let Some(var) = vars.get(&var_name) {
            if var.dims() != dims {
                return Err(Error::ShapeMismatch {
                    name: var_name,
                    source_desc: "the trainable variables".into(),
                    expected: dims.to_vec(),
                    found: var.dims().to_vec(),
                });
            }
            return Ok(var.as_tensor().clone());
        }
        let var = Var::from_tensor(&self.load(dims, name, dtype)?)?;
        let tensor = var.as_tensor().clone();
        vars.insert(var_name, var);
        Ok(tensor)
    }

    /// The full key of `name`, after checking that it exists with shape `dims`.
    fn checked_key(&self, dims: &[usize], name: &str) -> Result<String> {
        let key = self.key(name);
        let Some(found) = self.shape_of(&key) else {
            return Err(self.missing(key));
        };
        if found != dims {
            return Err(Error::ShapeMismatch {
                name: key,
                source_desc: self.inner.files.clone(),
                expected: dims.to_vec(),
                found,
            });
        }
        Ok(key)
    }

    /// Calls `f` with the elements of `name` (shape `dims`) as row-major f32,
    /// without a copy where the file stores aligned f32: for packing weights
    /// into another layout without holding them twice. Not trainable.
    pub fn read_f32<R>(
        &self,
        dims: &[usize],
        name: &str,
        f: impl FnOnce(&[f32]) -> Result<R>,
    ) -> Result<R> {
        let key = self.checked_key(dims, name)?;
        self.inner
            .loaded
            .fetch_add(dims.iter().product::<usize>() as u64, Ordering::Relaxed);
        if let Store::Safetensors(files) = &self.inner.store {
            if let Some(file) = files.iter().find(|f| f.shape(&key).is_some()) {
                return file.with_f32(&key, f)?.ok_or_else(|| self.missing(key));
            }
        }
        // Other stores: through a tensor (not counted twice).
        let t = self.load_uncounted(&key)?;
        f(&f32_values(&t)?)
    }

    fn load(&self, dims: &[usize], name: &str, dtype: DType) -> Result<Tensor> {
        let key = self.checked_key(dims, name)?;
        let tensor = self.load_uncounted(&key)?;
        self.inner
            .loaded
            .fetch_add(tensor.elem_count() as u64, Ordering::Relaxed);
        Ok(tensor.to_dtype(dtype)?)
    }

    fn load_uncounted(&self, key: &str) -> Result<Tensor> {
        let key = key.to_string();
        let device = &self.inner.device;
        let tensor = match &self.inner.store {
            Store::Safetensors(files) => files
                .iter()
                .find(|f| f.shape(&key).is_some())
                .map(|f| f.load(&key, device)),
            Store::Pickle(pth) => Some(
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| pth.get(&key)))
                    .map_err(|_| Error::BadWeights {
                        path: self.inner.paths[0].clone(),
                        reason: format!("tensor `{key}`: its storage is malformed"),
                    })?
                    .map_err(Error::from),
            ),
            Store::Memory(map) => map.get(&key).map(|t| Ok(Some(t.to_device(device)?))),
        };
        tensor
            .transpose()?
            .flatten()
            .ok_or_else(|| self.missing(key.clone()))
    }

    /// An embedding table `name` of shape `[rows, cols]`, for row lookups.
    /// From an f32 safetensors file on the CPU, outside training, and in an
    /// f32 model, the rows are read from the mapped file at each lookup (a
    /// text query touches a few rows of a 250k-row vocabulary, so loading
    /// does not copy a gigabyte); otherwise the table is loaded as a tensor.
    pub fn table(&self, rows: usize, cols: usize, name: &str) -> Result<Table> {
        let dims = [rows, cols];
        let key = self.checked_key(&dims, name)?;
        let mappable = self.trainable.is_none()
            && self.inner.device.is_cpu()
            && self.inner.dtype == DType::F32
            && cfg!(target_endian = "little");
        if let (true, Store::Safetensors(files)) = (mappable, &self.inner.store) {
            let found = files.iter().enumerate().find_map(|(i, f)| {
                let (info, range) = f.locate(&key)?;
                (info.dtype == safetensors::Dtype::F32).then_some((i, range.start))
            });
            if let Some((file, start)) = found {
                self.inner
                    .loaded
                    .fetch_add((rows * cols) as u64, Ordering::Relaxed);
                return Ok(Table {
                    kind: TableKind::Mapped {
                        inner: self.inner.clone(),
                        file,
                        start,
                        name: key,
                    },
                    rows,
                    cols,
                });
            }
        }
        Ok(Table {
            kind: TableKind::Tensor(self.get(&dims, name)?),
            rows,
            cols,
        })
    }

    /// Number of elements loaded through any view of this checkpoint.
    pub fn loaded_elements(&self) -> u64 {
        self.inner.loaded.load(Ordering::Relaxed)
    }

    /// The files the tensors come from.
    pub fn paths(&self) -> &[PathBuf] {
        &self.inner.paths
    }

    /// The error for a tensor `name` (a full key) these weights lack,
    /// naming the files searched.
    pub fn missing(&self, name: impl Into<String>) -> Error {
        Error::MissingTensor {
            name: name.into(),
            source_desc: self.inner.files.clone(),
        }
    }
}

/// An embedding table, looked up by row: see [`Weights::table`].
#[derive(Clone)]
pub struct Table {
    kind: TableKind,
    rows: usize,
    cols: usize,
}

#[derive(Clone)]
enum TableKind {
    Tensor(Tensor),
    /// f32 rows at byte `start` of mapped file `file`.
    Mapped {
        inner: Arc<Inner>,
        file: usize,
        start: usize,
        name: String,
    },
}

impl Table {
    /// The rows `ids` (u32, any shape) as `[ids.len(), cols]`.
    pub fn rows(&self, ids: &Tensor) -> Result<Tensor> {
        let ids = ids.flatten_all()?;
        let (inner, file, start, name) = match &self.kind {
            TableKind::Tensor(t) => return Ok(t.index_select(&ids, 0)?),
            TableKind::Mapped {
                inner,
                file,
                start,
                name,
            } => (inner, *file, *start, name),
        };
        let Store::Safetensors(files) = &inner.store else {
            unreachable!("mapped tables come from safetensors files")
        };
        let map = &files[file].mmap;
        let ids = ids.to_vec1::<u32>()?;
        let mut out = Vec::with_capacity(ids.len() * self.cols);
        for &id in &ids {
            let id = id as usize;
            if id >= self.rows {
                return Err(Error::Invalid(format!(
                    "row {id} of `{name}`, which has {} rows",
                    self.rows
                )));
            }
            let bytes = &map[start + id * self.cols * 4..][..self.cols * 4];
            out.extend(
                bytes
                    .chunks_exact(4)
                    .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
            );
        }
        Ok(Tensor::from_vec(
            out,
            (ids.len(), self.cols),
            &inner.device,
        )?)
    }
}

fn join_key(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_string()
    } else {
        format!("{prefix}.{name}")
    }
}

/// The shard files named by a `model.safetensors.index.json`, in order.
pub fn shard_files(index: &Path) -> Result<Vec<PathBuf>> {
    #[derive(serde::Deserialize)]
    struct Index {
        weight_map: std::collections::HashMap<String, String>,
    }
    let text = std::fs::read_to_string(index).map_err(|e| Error::io(index, e))?;
    let parsed: Index = serde_json::from_str(&text).map_err(|e| Error::BadJson {
        path: index.to_path_buf(),
        what: "safetensors shard index",
        reason: e.to_string(),
    })?;
    let dir = index.parent().unwrap_or(Path::new("."));
    let names: BTreeSet<String> = parsed.weight_map.into_values().collect();
    // A shard is a file beside the index: no directories, no `..`, no absolute paths.
    if let Some(bad) = names.iter().find(|n| {
        let mut parts = Path::new(n.as_str()).components();
        !matches!(
            (parts.next(), parts.next()),
            (Some(std::path::Component::Normal(_)), None)
        )
    }) {
        return Err(Error::BadWeights {
            path: index.to_path_buf(),
            reason: format!("shard `{bad}` is not a file name in the index's directory"),
        });
    }
    Ok(names.into_iter().map(|n| dir.join(n)).collect())
}
