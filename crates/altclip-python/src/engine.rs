//! `Engine`: one loaded AltCLIP, shared by every Python thread that uses it.
//! Each call releases the GIL while it decodes or computes.

use std::sync::Arc;

use altclip::{AltClip, DType, LoadOptions, Templates, Towers, ZeroShotClassifier};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::pybacked::PyBackedStr;
use pyo3::types::PyByteArray;

use crate::images::{pixel_values, Item};
use crate::{ImageError, ModelError};

/// A loaded model. Built by `altclip.AltCLIP`; see its docstrings.
#[pyclass(frozen, module = "altclip._altclip")]
pub struct Engine {
    pub(crate) clip: Arc<AltClip>,
    /// What the model was loaded from, and at which revision.
    pub(crate) name: String,
    pub(crate) revision: Option<String>,
    dtype: String,
    max_pixels: u64,
}

/// What `embed_images` returns: the rows of the images that worked
/// (row-major float32 bytes), which items worked, and why the others failed.
type ImageRows = (Py<PyByteArray>, Vec<bool>, Vec<(usize, String)>);

fn load_options(
    dtype: &str,
    revision: Option<String>,
    max_length: Option<usize>,
    towers: &str,
) -> PyResult<LoadOptions> {
    let (dtype, int8) = match dtype {
        "f32" => (DType::F32, false),
        "bf16" => (DType::BF16, false),
        "f16" => (DType::F16, false),
        "int8" => (DType::F32, true),
        other => {
            return Err(PyValueError::new_err(format!(
                "dtype {other:?}: expected \"f32\" (exact), \"bf16\", \"f16\" or \"int8\""
            )))
        }
    };
    let towers = match towers {
        "both" => Towers::Both,
        "text" => Towers::Text,
        "vision" => Towers::Vision,
        other => {
            return Err(PyValueError::new_err(format!(
                "towers {other:?}: expected \"both\", \"text\" or \"vision\""
            )))
        }
    };
    let mut opts = LoadOptions {
        dtype,
        int8,
        revision,
        towers,
        ..LoadOptions::default()
    };
    if let Some(n) = max_length {
        opts.max_length = n;
    }
    Ok(opts)
}

/// Row-major float32 bytes of `rows`, in a new `bytearray` that numpy wraps
/// without another copy.
pub(crate) fn rows_to_bytearray(py: Python<'_>, rows: &[Vec<f32>]) -> PyResult<Py<PyByteArray>> {
    let len = rows.iter().map(Vec::len).sum::<usize>() * 4;
    let out = PyByteArray::new_with(py, len, |buf| {
        for (dst, v) in buf.chunks_exact_mut(4).zip(rows.iter().flatten()) {
            dst.copy_from_slice(&v.to_ne_bytes());
        }
        Ok(())
    })?;
    Ok(out.unbind())
}

fn engine_error(e: altclip::Error) -> PyErr {
    PyValueError::new_err(e.to_string())
}

/// Templates as Python gives them: a name (`auto`, `zh`, `en`, `none`) or
/// a JSON file's path, or the templates themselves.
#[derive(FromPyObject)]
enum TemplatesArg {
    Spec(String),
    List(Vec<String>),
}

#[pymethods]
impl Engine {
    #[new]
    #[pyo3(signature = (model, dtype = "f32", revision = None, max_length = None, towers = "both", max_pixels = altclip::preprocess::DEFAULT_MAX_PIXELS))]
    fn new(
        py: Python<'_>,
        model: &str,
        dtype: &str,
        revision: Option<String>,
        max_length: Option<usize>,
        towers: &str,
        max_pixels: u64,
    ) -> PyResult<Self> {
        // Checks the dtype name, which is kept as given.
        let opts = load_options(dtype, revision.clone(), max_length, towers)?;
        let clip = py
            .detach(|| AltClip::load(model, &opts))
            .map_err(|e| ModelError::new_err(e.to_string()))?;
        Ok(Self {
            clip: Arc::new(clip),
            name: model.to_string(),
            revision,
            dtype: dtype.to_string(),
            max_pixels,
        })
    }

    /// Width of the joint embedding space.
    #[getter]
    fn embedding_dim(&self) -> usize {
        self.clip.embedding_dim()
    }

    /// The learned log temperature of the similarity logits.
    #[getter]
    fn logit_scale(&self) -> f32 {
        self.clip.logit_scale()
    }

    /// The dtype name the model was loaded with.
    #[getter]
    fn dtype(&self) -> &str {
        &self.dtype
    }

    /// What the model was loaded from (a Hub id or a directory).
    #[getter]
    fn name(&self) -> &str {
        &self.name
    }

    /// The directory the model's files were read from.
    #[getter]
    fn model_dir(&self) -> String {
        self.clip.files().dir.display().to_string()
    }

    /// How the linear layers run on this CPU.
    #[getter]
    fn kernels(&self) -> &'static str {
        self.clip.plan().describe()
    }

    /// Token ids per text, special tokens included, truncated.
    fn tokenize(&self, py: Python<'_>, texts: Vec<PyBackedStr>) -> PyResult<Vec<Vec<u32>>> {
        let refs: Vec<&str> = texts.iter().map(|t| &**t).collect();
        py.detach(|| self.clip.tokenize(&refs))
            .map_err(engine_error)
    }

    /// Text features as float32 bytes, `batch_size` texts per forward pass,
    /// L2-normalised when asked. Between batches a pending Ctrl-C raises
    /// `KeyboardInterrupt` and `on_batch(n)` reports progress.
    #[pyo3(signature = (texts, normalize, batch_size, on_batch = None))]
    fn embed_texts(
        &self,
        py: Python<'_>,
        texts: Vec<PyBackedStr>,
        normalize: bool,
        batch_size: usize,
        on_batch: Option<Bound<'_, PyAny>>,
    ) -> PyResult<Py<PyByteArray>> {
        let refs: Vec<&str> = texts.iter().map(|t| &**t).collect();
        let mut rows = Vec::with_capacity(refs.len());
        for chunk in refs.chunks(batch_size.max(1)) {
            rows.extend(
                py.detach(|| {
                    if normalize {
                        self.clip.embed_texts(chunk)
                    } else {
                        self.clip.text_features(chunk)
                    }
                })
                .map_err(engine_error)?,
            );
            between_batches(py, on_batch.as_ref(), chunk.len())?;
        }
        rows_to_bytearray(py, &rows)
    }

    /// One L2-normalised embedding per label: the mean of its normalised
    /// prompt embeddings, renormalised (CLIP's zero-shot recipe).
    fn class_embeddings(
        &self,
        py: Python<'_>,
        labels: Vec<String>,
        templates: TemplatesArg,
        batch_size: usize,
    ) -> PyResult<Py<PyByteArray>> {
        let templates = match templates {
            TemplatesArg::Spec(spec) => Templates::parse(&spec).map_err(engine_error)?,
            TemplatesArg::List(list) => {
                if let Some(bad) = list.iter().find(|t| !t.contains("{c}")) {
                    return Err(PyValueError::new_err(format!(
                        "template {bad:?} has no {{c}} placeholder for the label"
                    )));
                }
                Templates::List(list)
            }
        };
        let classifier = py
            .detach(|| ZeroShotClassifier::new(&self.clip, &labels, &templates, batch_size))
            .map_err(engine_error)?;
        rows_to_bytearray(py, classifier.class_embeddings())
    }

    /// Image features as float32 bytes, `batch_size` images per forward
    /// pass; `indices` are the items' places in the caller's list, which
    /// error messages give. With `skip_errors` false, the first failure
    /// raises `ImageError(message, index)` before its batch runs; otherwise
    /// the rows are those of the items that worked, with a mask and the
    /// reasons. Between batches as in `embed_texts`.
    #[pyo3(signature = (items, indices, normalize, skip_errors, batch_size, on_batch = None))]
    #[allow(clippy::too_many_arguments)]
    fn embed_images(
        &self,
        py: Python<'_>,
        items: Vec<Item>,
        indices: Vec<usize>,
        normalize: bool,
        skip_errors: bool,
        batch_size: usize,
        on_batch: Option<Bound<'_, PyAny>>,
    ) -> PyResult<ImageRows> {
        if indices.len() != items.len() {
            return Err(PyValueError::new_err(format!(
                "{} images but {} indices",
                items.len(),
                indices.len()
            )));
        }
        let batch = batch_size.max(1);
        let (mut rows, mut ok, mut failures) =
            (Vec::with_capacity(items.len()), Vec::new(), Vec::new());
        for (chunk, places) in items.chunks(batch).zip(indices.chunks(batch)) {
            let embedded = py.detach(|| -> PyResult<_> {
                let mut pixels = Vec::with_capacity(chunk.len());
                for (d, &i) in pixel_values(&self.clip, chunk, places, self.max_pixels)
                    .into_iter()
                    .zip(places)
                {
                    ok.push(d.is_ok());
                    match d {
                        Ok(p) => pixels.push(p),
                        Err(why) if skip_errors => failures.push((i, why)),
                        Err(why) => return Err(ImageError::new_err((why, i))),
                    }
                }
                if normalize {
                    self.clip.embed_pixels(&pixels)
                } else {
                    self.clip.image_features_of_pixels(&pixels)
                }
                .map_err(engine_error)
            })?;
            rows.extend(embedded);
            between_batches(py, on_batch.as_ref(), chunk.len())?;
        }
        Ok((rows_to_bytearray(py, &rows)?, ok, failures))
    }
}

/// What runs with the GIL between two batches: Ctrl-C, then progress.
fn between_batches(
    py: Python<'_>,
    on_batch: Option<&Bound<'_, PyAny>>,
    done: usize,
) -> PyResult<()> {
    py.check_signals()?;
    if let Some(report) = on_batch {
        report.call1((done,))?;
    }
    Ok(())
}
