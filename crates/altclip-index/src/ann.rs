//! Approximate nearest-neighbour search for large libraries: an HNSW graph
//! (usearch) kept in a folder beside the database, `index.db.hnsw/`.
//!
//! The graph is keyed by the `vectors` table's rowid. Each save writes a new
//! graph file and then, atomically, a small manifest naming it and the
//! database write counter it matches, so a crash mid-save leaves the previous
//! pair intact. A graph whose counter differs from the database's is stale
//! and is never searched.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::{Deserialize, Serialize};
use usearch::{Index as Hnsw, IndexOptions, MetricKind, ScalarKind};

use crate::error::{Error, Result};
use crate::files::{io_err, write_bytes_atomically};

/// How the graph is built. The search-time candidate list size is not a
/// parameter: each save calibrates it (see [`TARGET_RECALL`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct AnnParams {
    /// Links per node (HNSW's M).
    pub connectivity: usize,
    /// Candidate list size while inserting (ef_construction).
    pub expansion_add: usize,
}

impl Default for AnnParams {
    fn default() -> Self {
        Self {
            connectivity: 32,
            expansion_add: 256,
        }
    }
}

/// The recall@10 against exact search that each save calibrates the graph's
/// search-time candidate list size (ef) to reach on sample queries. Clustered
/// data such as real embeddings needs a small ef; uniformly random vectors,
/// the worst case, a large one.
pub const TARGET_RECALL: f64 = 0.98;

/// Candidate list sizes tried by calibration, smallest first.
const EF_LADDER: [usize; 9] = [32, 64, 128, 256, 512, 1024, 2048, 4096, 8192];

/// The manifest: which graph file is current and what it holds.
#[derive(Debug, Serialize, Deserialize)]
struct Manifest {
    /// Graph file name inside the folder.
    graph: String,
    /// File listing the `(rowid, key)` pairs the graph holds.
    rows: String,
    /// The database write counter the graph matches.
    generation: u64,
    dim: usize,
    params: AnnParams,
    #[serde(flatten)]
    calibration: Calibration,
}

/// How the graph searched the calibration queries when it was saved.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Calibration {
    /// Search-time candidate list size chosen.
    pub ef: usize,
    /// Recall@10 against exact search at `ef`.
    pub recall: f64,
    /// Mean milliseconds per top-10 query through the graph at `ef`.
    pub graph_ms: f64,
    /// Mean milliseconds per top-10 query by exact scan of the same vectors.
    pub scan_ms: f64,
}

impl Calibration {
    /// Whether the graph beat the scan; if not, searches keep scanning
    /// (unless told to use the graph), since the scan never misses.
    pub fn graph_is_faster(&self) -> bool {
        self.graph_ms < self.scan_ms
    }
}

/// The calibration of the graph of the database at `db`, if it has one,
/// with the database write counter it matches.
pub fn status(db: &Path) -> Result<Option<(u64, Calibration)>> {
    Ok(read_manifest(&dir_for(db))?.map(|m| (m.generation, m.calibration)))
}

/// A loaded graph, ready to search.
pub struct Ann {
    graph: Hnsw,
    generation: u64,
}

/// A row of the `vectors` table, as the graph sees it.
pub type Row = (i64, String);

/// Reads vectors by rowid, in the order asked.
pub type Fetch<'a> = dyn Fn(&[i64]) -> Result<Vec<Vec<f32>>> + 'a;

fn ann_err(dir: &Path, what: &str, e: impl std::fmt::Display) -> Error {
    Error::Invalid(format!(
        "{}: {what}: {e}; delete this folder and re-run `altclip index` to rebuild it",
        dir.display()
    ))
}

/// The folder that holds the graph of the database at `db`.
pub fn dir_for(db: &Path) -> PathBuf {
    let mut name = db.file_name().unwrap_or_default().to_os_string();
    name.push(".hnsw");
    db.with_file_name(name)
}

fn read_manifest(dir: &Path) -> Result<Option<Manifest>> {
    let path = dir.join("manifest.json");
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| ann_err(dir, "unreadable manifest.json", e)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_err(&path, e)),
    }
}

fn new_graph(dir: &Path, dim: usize, params: AnnParams) -> Result<Hnsw> {
    Hnsw::new(&IndexOptions {
        dimensions: dim,
        metric: MetricKind::IP,
        quantization: ScalarKind::F16,
        connectivity: params.connectivity,
        expansion_add: params.expansion_add,
        expansion_search: EF_LADDER[0],
        multi: false,
    })
    .map_err(|e| ann_err(dir, "cannot create a graph", e))
}

impl Ann {
    /// Opens the graph read-only (memory-mapped) if there is one, it
    /// matches write counter `generation`, and either it beat the scan at
    /// calibration or `always`. It searches with the calibrated candidate
    /// list size unless `ef` overrides it.
    pub fn open(
        db: &Path,
        generation: u64,
        ef: Option<usize>,
        always: bool,
    ) -> Result<Option<Self>> {
        let dir = dir_for(db);
        let Some(m) = read_manifest(&dir)?
            .filter(|m| m.generation == generation)
            .filter(|m| always || m.calibration.graph_is_faster())
        else {
            return Ok(None);
        };
        let path = dir.join(&m.graph);
        let graph = Hnsw::restore_view(&path.to_string_lossy())
            .map_err(|e| ann_err(&dir, &format!("cannot map {}", m.graph), e))?;
        graph.change_expansion_search(ef.unwrap_or(m.calibration.ef));
        Ok(Some(Self {
            graph,
            generation: m.generation,
        }))
    }

    /// The database write counter this graph matches.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Changes the search-time candidate list size.
    pub fn set_expansion_search(&self, ef: usize) {
        self.graph.change_expansion_search(ef);
    }

    /// The rowids of the (approximately) `k` best rows by inner product.
    pub fn search(&self, query: &[f32], k: usize) -> Result<Vec<i64>> {
        let found = self
            .graph
            .search(query, k)
            .map_err(|e| Error::Invalid(format!("HNSW search failed: {e}")))?;
        Ok(found.keys.into_iter().map(|k| k as i64).collect())
    }
}

/// Brings the graph of the database at `db` up to date with `rows`, the
/// whole `vectors` table at write counter `generation`. Changed rows are
/// added and removed in place; a graph with other parameters, or one that
/// would change by more than a fifth, is rebuilt. `vectors` fetches rows by
/// rowid; `on_progress(done, total)` reports insertions.
pub fn sync(
    db: &Path,
    rows: &[Row],
    generation: u64,
    dim: usize,
    params: AnnParams,
    vectors: &Fetch,
    on_progress: &mut dyn FnMut(usize, usize),
) -> Result<()> {
    let dir = dir_for(db);
    std::fs::create_dir_all(&dir).map_err(|e| io_err(&dir, e))?;
    let old = read_manifest(&dir)?;
    if old.as_ref().is_some_and(|m| m.generation == generation) {
        return Ok(());
    }
    let held: Vec<Row> = match &old {
        Some(m) if m.dim == dim && m.params == params => {
            let path = dir.join(&m.rows);
            let bytes = std::fs::read(&path).map_err(|e| io_err(&path, e))?;
            serde_json::from_slice(&bytes).map_err(|e| ann_err(&dir, "unreadable row list", e))?
        }
        _ => Vec::new(),
    };
    let wanted: HashMap<i64, &str> = rows.iter().map(|(id, k)| (*id, k.as_str())).collect();
    let stale: Vec<i64> = held
        .iter()
        .filter(|(id, k)| wanted.get(id) != Some(&k.as_str()))
        .map(|(id, _)| *id)
        .collect();
    let have: HashMap<i64, &str> = held.iter().map(|(id, k)| (*id, k.as_str())).collect();
    let mut fresh: Vec<i64> = rows
        .iter()
        .filter(|(id, k)| have.get(id) != Some(&k.as_str()))
        .map(|(id, _)| *id)
        .collect();

    let rebuild = held.is_empty() || (stale.len() + fresh.len()) * 5 > held.len();
    let graph = new_graph(&dir, dim, params)?;
    if rebuild {
        fresh = rows.iter().map(|(id, _)| *id).collect();
    } else {
        let m = old.as_ref().expect("held rows come from a manifest");
        let path = dir.join(&m.graph);
        graph
            .load(&path.to_string_lossy())
            .map_err(|e| ann_err(&dir, &format!("cannot load {}", m.graph), e))?;
        for id in &stale {
            graph
                .remove(*id as u64)
                .map_err(|e| ann_err(&dir, "cannot remove a row", e))?;
        }
    }
    let threads = rayon::current_num_threads();
    graph
        .reserve_capacity_and_threads(graph.size() + fresh.len(), threads)
        .map_err(|e| ann_err(&dir, "cannot reserve memory", e))?;
    let total = fresh.len();
    on_progress(0, total);
    for (n, chunk) in fresh.chunks(4096).enumerate() {
        let vs = vectors(chunk)?;
        use rayon::prelude::*;
        chunk
            .par_iter()
            .zip(vs.par_iter())
            .try_for_each(|(id, v)| graph.add(*id as u64, v))
            .map_err(|e| ann_err(&dir, "cannot insert a row", e))?;
        on_progress((n * 4096 + chunk.len()).min(total), total);
    }

    let calibration = calibrate(&graph, rows, dim)?;

    // New files first, then the manifest that names them, then cleanup.
    let graph_name = format!("graph-{generation}.usearch");
    let rows_name = format!("rows-{generation}.json");
    let graph_path = dir.join(&graph_name);
    graph
        .save(&graph_path.to_string_lossy())
        .map_err(|e| ann_err(&dir, "cannot save the graph", e))?;
    write_bytes_atomically(
        &dir.join(&rows_name),
        &serde_json::to_vec(rows).expect("rows"),
    )?;
    let manifest = Manifest {
        graph: graph_name,
        rows: rows_name,
        generation,
        dim,
        params,
        calibration,
    };
    write_bytes_atomically(
        &dir.join("manifest.json"),
        &serde_json::to_vec_pretty(&manifest).expect("manifest"),
    )?;
    remove_unlisted(&dir, &manifest);
    Ok(())
}

fn fail(e: impl std::fmt::Display) -> Error {
    Error::Invalid(format!("HNSW calibration failed: {e}"))
}

/// The smallest ladder ef whose recall@10 against the graph's own exact
/// search reaches [`TARGET_RECALL`] (or the largest tried), with that
/// recall and the time per query of both searches. Queries: uniformly
/// random unit vectors, and stored vectors with noise, which stand in for
/// queries near the data.
fn calibrate(graph: &Hnsw, rows: &[Row], dim: usize) -> Result<Calibration> {
    const QUERIES: usize = 50;
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = move || {
        // xorshift64*: reproducible without a dependency.
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        state.wrapping_mul(0x2545_F491_4F6C_DD1D)
    };
    let mut queries = Vec::with_capacity(2 * QUERIES);
    for i in 0..2 * QUERIES {
        let mut q: Vec<f32> = (0..dim)
            .map(|_| (next() >> 40) as f32 / (1u64 << 24) as f32 - 0.5)
            .collect();
        if i % 2 == 1 {
            let mut v = vec![0f32; dim];
            let key = rows[(next() % rows.len() as u64) as usize].0 as u64;
            graph.get(key, &mut v).map_err(fail)?;
            let norm = q.iter().map(|x| x * x).sum::<f32>().sqrt();
            q.iter_mut()
                .zip(&v)
                .for_each(|(x, y)| *x = y + 0.5 * *x / norm);
        }
        queries.push(q);
    }
    let ms_per_query = |start: Instant| start.elapsed().as_secs_f64() * 1e3 / queries.len() as f64;
    let start = Instant::now();
    let truth = queries
        .iter()
        .map(|q| Ok(graph.exact_search(q, 10).map_err(fail)?.keys))
        .collect::<Result<Vec<_>>>()?;
    let scan_ms = ms_per_query(start);
    let wanted: usize = truth.iter().map(Vec::len).sum();
    let mut last = None;
    for ef in EF_LADDER {
        graph.change_expansion_search(ef);
        let mut found = 0;
        let start = Instant::now();
        for (q, t) in queries.iter().zip(&truth) {
            let keys = graph.search(q, 10).map_err(fail)?.keys;
            found += keys.iter().filter(|k| t.contains(k)).count();
        }
        let c = Calibration {
            ef,
            recall: found as f64 / wanted.max(1) as f64,
            graph_ms: ms_per_query(start),
            scan_ms,
        };
        last = Some(c);
        if c.recall >= TARGET_RECALL {
            break;
        }
    }
    Ok(last.expect("the ladder is not empty"))
}

/// Removes the graph folder of the database at `db`, if any.
pub fn remove(db: &Path) -> Result<()> {
    let dir = dir_for(db);
    match std::fs::remove_dir_all(&dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io_err(&dir, e)),
        _ => Ok(()),
    }
}

/// Deletes graph and row files left by earlier saves; failures only waste space.
fn remove_unlisted(dir: &Path, m: &Manifest) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name != "manifest.json" && name != m.graph && name != m.rows {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}
