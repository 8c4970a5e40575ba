//! `Library`: read-only search over an `altclip index` database, as
//! `altclip search` does it.

use std::path::PathBuf;
use std::sync::Mutex;

use altclip_index::filter::{self, Filter, Search, Sort};
use altclip_index::{query, GraphUse, Index, ModelInfo, SqliteVectors, VectorDtype};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

use crate::engine::Engine;
use crate::ModelError;

/// An opened index database. Built by `altclip.Index`; see its docstrings.
#[pyclass(frozen, module = "altclip._altclip")]
pub struct Library {
    path: PathBuf,
    /// SQLite connections are not shared between threads: one query at a time.
    open: Mutex<(Index, SqliteVectors)>,
}

fn index_error(e: altclip_index::Error) -> PyErr {
    PyValueError::new_err(e.to_string())
}

#[pymethods]
impl Library {
    #[new]
    #[pyo3(signature = (path, exact = false))]
    fn new(py: Python<'_>, path: PathBuf, exact: bool) -> PyResult<Self> {
        if !path.is_file() {
            return Err(pyo3::exceptions::PyFileNotFoundError::new_err(format!(
                "{}: no such index database; build it with `altclip index DIR`",
                path.display()
            )));
        }
        let open = py.detach(|| -> PyResult<_> {
            let index = Index::open(&path).map_err(index_error)?;
            if let Some(store) = index.setting("store").map_err(index_error)? {
                if store != "sqlite" {
                    return Err(PyValueError::new_err(format!(
                        "{}: its vectors are in {store}; search it with `altclip search --db {}`",
                        path.display(),
                        path.display()
                    )));
                }
            }
            let policy = index.ann_policy().map_err(index_error)?;
            let vectors = SqliteVectors::open(&path, VectorDtype::F16)
                .map_err(index_error)?
                .with_ann_policy(policy)
                .graph_use(if exact {
                    GraphUse::Never
                } else {
                    GraphUse::Auto
                });
            Ok((index, vectors))
        })?;
        Ok(Self {
            path,
            open: Mutex::new(open),
        })
    }

    /// The model the index was built with, as it was named (`None` when the
    /// index is empty).
    #[getter]
    fn model(&self) -> PyResult<Option<String>> {
        let open = self.lock()?;
        Ok(open.0.model().map_err(index_error)?.map(|m| m.name))
    }

    /// The revision the index's model was loaded at, if any.
    #[getter]
    fn revision(&self) -> PyResult<Option<String>> {
        let open = self.lock()?;
        Ok(open
            .0
            .model()
            .map_err(index_error)?
            .and_then(|m| m.revision))
    }

    /// Indexed files.
    fn __len__(&self) -> PyResult<usize> {
        Ok(self.lock()?.0.files().map_err(index_error)?.len())
    }

    /// The `top_k` best files for the query words, as `altclip search`
    /// parses them, with `engine` (which must be the index's model), under
    /// the filters `altclip search` has.
    #[pyo3(signature = (engine, words, top_k, max_pixels, after = None, before = None, camera = None, path = None, near = None, kind = None, min_score = None, sort = "score"))]
    #[allow(clippy::too_many_arguments)]
    fn search(
        &self,
        py: Python<'_>,
        engine: &Engine,
        words: Vec<String>,
        top_k: usize,
        max_pixels: u64,
        after: Option<String>,
        before: Option<String>,
        camera: Option<String>,
        path: Option<String>,
        near: Option<(f64, f64, f64)>,
        kind: Option<String>,
        min_score: Option<f32>,
        sort: &str,
    ) -> PyResult<Vec<SearchHit>> {
        let date = |d: Option<String>| d.map(|d| filter::parse_date(&d)).transpose();
        let near = near
            .map(|(lat, lon, km)| filter::parse_near(&format!("{lat},{lon},{km}")))
            .transpose();
        let sort = match sort {
            "score" => Sort::Score,
            "date" => Sort::Date,
            other => {
                return Err(PyValueError::new_err(format!(
                    "sort={other:?}: expected \"score\" or \"date\""
                )))
            }
        };
        if kind
            .as_deref()
            .is_some_and(|k| k != "photo" && k != "video")
        {
            return Err(PyValueError::new_err(
                "kind: expected \"photo\" or \"video\"",
            ));
        }
        let search = Search {
            top: top_k,
            filter: Filter {
                after: date(after).map_err(index_error)?,
                before: date(before).map_err(index_error)?,
                camera,
                path,
                near: near.map_err(index_error)?,
                kind,
            },
            min_score,
            sort,
        };
        py.detach(|| {
            let open = self.lock()?;
            let (index, vectors) = &*open;
            let info = ModelInfo::describe(&engine.clip, &engine.name, engine.revision.as_deref())
                .map_err(|e| ModelError::new_err(e.to_string()))?;
            index
                .check_model(&info)
                .map_err(|e| ModelError::new_err(e.to_string()))?;
            let parts = query::parse(&words).map_err(index_error)?;
            let q = query::embed(&engine.clip, &parts, max_pixels).map_err(index_error)?;
            let hits = filter::search(vectors, index, &q, &search).map_err(index_error)?;
            Ok(hits
                .into_iter()
                .map(|h| {
                    let media = h.media.map(|m| {
                        (
                            m.kind,
                            m.taken,
                            m.taken_from,
                            m.make,
                            m.model,
                            m.lat,
                            m.lon,
                            m.width,
                            m.height,
                            m.duration,
                        )
                    });
                    (h.path, h.score, h.at, h.camera, media)
                })
                .collect())
        })
    }
}

/// `(path, score, seconds into a video, camera, metadata)`, the metadata as
/// `(kind, taken, taken_from, make, model, lat, lon, width, height, duration)`.
type SearchHit = (
    String,
    f32,
    Option<f64>,
    Option<String>,
    Option<(
        String,
        String,
        String,
        Option<String>,
        Option<String>,
        Option<f64>,
        Option<f64>,
        u32,
        u32,
        Option<f64>,
    )>,
);

impl Library {
    fn lock(&self) -> PyResult<std::sync::MutexGuard<'_, (Index, SqliteVectors)>> {
        self.open.lock().map_err(|_| {
            PyValueError::new_err(format!(
                "{}: an earlier search panicked; open the index again",
                self.path.display()
            ))
        })
    }
}
