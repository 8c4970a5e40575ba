//! Vector storage behind a small trait, so that backends are interchangeable.
//! The default keeps vectors in the index's SQLite file and searches them
//! exactly with a dot product over one contiguous matrix, or, past a size
//! threshold, through an HNSW graph kept beside the database ([`crate::ann`]).

use std::cell::RefCell;
use std::collections::HashSet;
use std::path::Path;

use rusqlite::{params, OptionalExtension};

use crate::ann::{self, Ann, AnnParams};
use crate::db::Index;
use crate::error::{Error, Result};

/// A store of L2-normalised vectors keyed by content hash.
pub trait VectorStore {
    /// Inserts or replaces vectors.
    fn upsert(&mut self, vectors: &[(String, Vec<f32>)]) -> Result<()>;
    /// Removes vectors; unknown keys are ignored.
    fn remove(&mut self, keys: &[String]) -> Result<()>;
    /// The keys already stored, among `keys`.
    fn contains(&self, keys: &[String]) -> Result<Vec<bool>>;
    /// The `k` nearest keys by inner product, best first.
    fn search(&self, query: &[f32], k: usize) -> Result<Vec<(String, f32)>>;
    /// The `k` nearest among `keys` only (a filter's matches), best first.
    /// By default a widening search ([`search_known`]); a store that can
    /// scan a subset does so when the subset is small.
    fn search_among(
        &self,
        query: &[f32],
        k: usize,
        keys: &HashSet<String>,
    ) -> Result<Vec<(String, f32)>> {
        search_known(self, query, k, |h| keys.contains(h))
    }
    /// Every key with its vector, for whole-collection work such as dedup.
    fn all(&self) -> Result<Vec<(String, Vec<f32>)>>;
    /// Brings derived structures, such as a search graph, up to date after
    /// a run of writes; `on_progress(done, total)` reports long work.
    fn finish(&mut self, _on_progress: &mut dyn FnMut(usize, usize)) -> Result<()> {
        Ok(())
    }
}

/// The `k` nearest keys for which `known` holds, best first. A shared
/// collection (Milvus) may hold rows that another writer added; they would
/// take top-k places and then be dropped by the caller, so the search is
/// widened until `k` known keys are found or the store has no more.
pub fn search_known<S: VectorStore + ?Sized>(
    store: &S,
    query: &[f32],
    k: usize,
    known: impl Fn(&str) -> bool,
) -> Result<Vec<(String, f32)>> {
    let mut fetch = k;
    loop {
        let hits = store.search(query, fetch)?;
        let exhausted = hits.len() < fetch;
        let mut kept: Vec<(String, f32)> = hits.into_iter().filter(|(key, _)| known(key)).collect();
        if kept.len() >= k || exhausted {
            kept.truncate(k);
            return Ok(kept);
        }
        fetch = fetch.saturating_mul(4);
    }
}

/// When searches of [`SqliteVectors`] go through its HNSW graph. A graph
/// older than the database is never used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GraphUse {
    /// When the graph beat the exact scan at its calibration.
    Auto,
    /// Always scan exactly.
    Never,
    /// Whenever a fresh graph exists (for measuring it).
    Always,
}

/// When [`SqliteVectors`] keeps an HNSW graph for approximate search.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AnnPolicy {
    /// Stores with at least this many vectors get a graph; smaller ones are
    /// scanned exactly, which is fast enough and never misses.
    pub threshold: usize,
    /// How the graph is built and searched.
    pub params: AnnParams,
}

impl Default for AnnPolicy {
    fn default() -> Self {
        Self {
            threshold: 100_000,
            params: AnnParams::default(),
        }
    }
}

/// How vectors are written to disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VectorDtype {
    F16,
    F32,
}

impl VectorDtype {
    fn name(self) -> &'static str {
        match self {
            VectorDtype::F16 => "f16",
            VectorDtype::F32 => "f32",
        }
    }

    fn encode(self, v: &[f32]) -> Vec<u8> {
        match self {
            VectorDtype::F16 => v
                .iter()
                .flat_map(|x| half::f16::from_f32(*x).to_le_bytes())
                .collect(),
            VectorDtype::F32 => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        }
    }

    fn decode(name: &str, bytes: &[u8]) -> Option<Vec<f32>> {
        match name {
            "f16" => Some(
                bytes
                    .chunks_exact(2)
                    .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
                    .collect(),
            ),
            "f32" => Some(
                bytes
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect(),
            ),
            _ => None,
        }
    }
}

/// Rows of a matrix laid out contiguously for a fast scan.
struct Matrix {
    keys: Vec<String>,
    data: Vec<f32>,
    dim: usize,
    /// The store's write counter when the rows were read.
    generation: u64,
}

/// A filter matching fewer than one row in this many is scanned exactly.
const SELECTIVE: usize = 20;

/// Bumps the write counter that tells open stores their matrix is stale.
const BUMP_GENERATION: &str = "INSERT INTO meta (key, value) VALUES ('vectors_generation', '1') \
     ON CONFLICT(key) DO UPDATE SET value = CAST(value AS INTEGER) + 1";

/// Vectors in the `vectors` table of the index database.
pub struct SqliteVectors {
    index: Index,
    dtype: VectorDtype,
    /// Loaded on the first search and dropped on every write.
    matrix: RefCell<Option<Matrix>>,
    policy: AnnPolicy,
    /// When searches go through the graph.
    graph_use: GraphUse,
    /// The graph, once opened, while it matches the database.
    graph: RefCell<Option<Ann>>,
    /// Search-time candidate list size instead of the calibrated one.
    ef: Option<usize>,
}

impl SqliteVectors {
    /// Opens the vector table of the index at `path` (its own connection).
    pub fn open(path: &Path, dtype: VectorDtype) -> Result<Self> {
        Ok(Self {
            index: Index::open(path)?,
            dtype,
            matrix: RefCell::new(None),
            policy: AnnPolicy::default(),
            graph_use: GraphUse::Auto,
            graph: RefCell::new(None),
            ef: None,
        })
    }

    /// Sets when [`VectorStore::finish`] keeps a graph.
    pub fn with_ann_policy(mut self, policy: AnnPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// Overrides the graph's calibrated search-time candidate list size
    /// (larger: slower, better recall).
    pub fn set_expansion_search(&mut self, ef: usize) {
        self.ef = Some(ef);
        if let Some(g) = self.graph.borrow().as_ref() {
            g.set_expansion_search(ef);
        }
    }

    /// Sets when searches go through the graph.
    pub fn graph_use(mut self, graph_use: GraphUse) -> Self {
        self.graph_use = graph_use;
        self
    }

    /// Whether searches are answered by the graph.
    pub fn uses_graph(&self) -> Result<bool> {
        Ok(self.graph_use != GraphUse::Never && self.fresh_graph(self.generation()?)?)
    }

    /// Opens the graph if it matches write counter `generation`.
    fn fresh_graph(&self, generation: u64) -> Result<bool> {
        let cached = self
            .graph
            .borrow()
            .as_ref()
            .is_some_and(|g| g.generation() == generation);
        if !cached {
            self.graph.replace(Ann::open(
                self.index.path(),
                generation,
                self.ef,
                self.graph_use == GraphUse::Always,
            )?);
        }
        Ok(self.graph.borrow().is_some())
    }

    fn count(&self) -> Result<usize> {
        self.index
            .conn
            .query_row("SELECT COUNT(*) FROM vectors", [], |r| r.get::<_, i64>(0))
            .map(|n| n as usize)
            .map_err(|e| self.index.err(e))
    }

    /// Vectors by rowid, in the order asked.
    fn rows_by_id(&self, ids: &[i64]) -> Result<Vec<(String, Vec<f32>)>> {
        let mut stmt = self
            .index
            .conn
            .prepare_cached("SELECT hash, dtype, data FROM vectors WHERE rowid = ?1")
            .map_err(|e| self.index.err(e))?;
        ids.iter()
            .map(|id| {
                let (key, dtype, bytes): (String, String, Vec<u8>) = stmt
                    .query_row([id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                    .map_err(|e| self.index.err(e))?;
                let v = VectorDtype::decode(&dtype, &bytes).ok_or_else(|| {
                    Error::Invalid(format!("vector {key}: unknown dtype {dtype:?}"))
                })?;
                Ok((key, v))
            })
            .collect()
    }

    /// The graph's candidates, rescored exactly so scores equal the scan's.
    fn search_graph(&self, query: &[f32], k: usize) -> Result<Vec<(String, f32)>> {
        let ids = self
            .graph
            .borrow()
            .as_ref()
            .expect("opened by fresh_graph")
            .search(query, k)?;
        let mut rows = self.rows_by_id(&ids)?;
        // Key order gives ties the scan's rule: the lower key first.
        rows.sort_by(|a, b| a.0.cmp(&b.0));
        if let Some((key, v)) = rows.iter().find(|(_, v)| v.len() != query.len()) {
            return Err(Error::Invalid(format!(
                "query has {} dimensions but vector {key} has {}",
                query.len(),
                v.len()
            )));
        }
        let scores: Vec<f32> = rows.iter().map(|(_, v)| dot(v, query)).collect();
        Ok(altclip::embedding::top_k(&scores, k)
            .into_iter()
            .map(|i| (rows[i].0.clone(), scores[i]))
            .collect())
    }

    /// The exact scan, over every row or those in `among`.
    fn scan(
        &self,
        generation: u64,
        query: &[f32],
        k: usize,
        among: Option<&HashSet<String>>,
    ) -> Result<Vec<(String, f32)>> {
        if self
            .matrix
            .borrow()
            .as_ref()
            .is_none_or(|m| m.generation != generation)
        {
            let m = self.load()?;
            self.matrix.replace(Some(m));
        }
        let guard = self.matrix.borrow();
        let m = guard.as_ref().expect("loaded above");
        if m.keys.is_empty() {
            return Ok(Vec::new());
        }
        if query.len() != m.dim {
            return Err(Error::Invalid(format!(
                "query has {} dimensions but the index holds {}-dimensional vectors",
                query.len(),
                m.dim
            )));
        }
        let rows: Vec<usize> = match among {
            None => (0..m.keys.len()).collect(),
            Some(keys) => (0..m.keys.len())
                .filter(|&i| keys.contains(&m.keys[i]))
                .collect(),
        };
        let scores: Vec<f32> = rows
            .iter()
            .map(|&i| dot(&m.data[i * m.dim..(i + 1) * m.dim], query))
            .collect();
        Ok(altclip::embedding::top_k(&scores, k)
            .into_iter()
            .map(|j| (m.keys[rows[j]].clone(), scores[j]))
            .collect())
    }

    /// Stored vectors.
    fn len(&self) -> Result<usize> {
        let n: i64 = self
            .index
            .conn
            .query_row("SELECT COUNT(*) FROM vectors", [], |r| r.get(0))
            .map_err(|e| self.index.err(e))?;
        Ok(n as usize)
    }

    /// How many writes the vector table has seen, from any connection.
    fn generation(&self) -> Result<u64> {
        let v: Option<String> = self
            .index
            .conn
            .query_row(
                "SELECT value FROM meta WHERE key = 'vectors_generation'",
                [],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| self.index.err(e))?;
        Ok(v.and_then(|v| v.parse().ok()).unwrap_or(0))
    }

    fn load(&self) -> Result<Matrix> {
        let mut stmt = self
            .index
            .conn
            .prepare("SELECT hash, dtype, data FROM vectors ORDER BY hash")
            .map_err(|e| self.index.err(e))?;
        let mut rows = stmt.query([]).map_err(|e| self.index.err(e))?;
        let mut m = Matrix {
            keys: Vec::new(),
            data: Vec::new(),
            dim: 0,
            generation: self.generation()?,
        };
        while let Some(row) = rows.next().map_err(|e| self.index.err(e))? {
            let key: String = row.get(0).map_err(|e| self.index.err(e))?;
            let dtype: String = row.get(1).map_err(|e| self.index.err(e))?;
            let bytes: Vec<u8> = row.get(2).map_err(|e| self.index.err(e))?;
            let v = VectorDtype::decode(&dtype, &bytes)
                .ok_or_else(|| Error::Invalid(format!("vector {key}: unknown dtype {dtype:?}")))?;
            if m.dim == 0 {
                m.dim = v.len();
            } else if v.len() != m.dim {
                return Err(Error::Invalid(format!(
                    "{}: vector {key} has {} dimensions, others have {}",
                    self.index.path().display(),
                    v.len(),
                    m.dim
                )));
            }
            m.keys.push(key);
            m.data.extend(v);
        }
        Ok(m)
    }
}

/// The inner product of two vectors of one length.
pub(crate) fn dot(a: &[f32], b: &[f32]) -> f32 {
    // Eight independent accumulators let the compiler vectorise the loop.
    let mut acc = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    acc.iter().sum::<f32>() + ra.iter().zip(rb).map(|(x, y)| x * y).sum::<f32>()
}

impl VectorStore for SqliteVectors {
    fn upsert(&mut self, vectors: &[(String, Vec<f32>)]) -> Result<()> {
        let dtype = self.dtype;
        self.index.in_transaction(|tx| {
            let mut put = tx.prepare_cached(
                "INSERT OR REPLACE INTO vectors (hash, dtype, data) VALUES (?1, ?2, ?3)",
            )?;
            for (key, v) in vectors {
                put.execute(params![key, dtype.name(), dtype.encode(v)])?;
            }
            tx.execute(BUMP_GENERATION, [])?;
            Ok(())
        })?;
        self.matrix.replace(None);
        Ok(())
    }

    fn remove(&mut self, keys: &[String]) -> Result<()> {
        if keys.is_empty() {
            return Ok(());
        }
        self.index.in_transaction(|tx| {
            for key in keys {
                tx.execute("DELETE FROM vectors WHERE hash = ?1", [key])?;
            }
            tx.execute(BUMP_GENERATION, [])?;
            Ok(())
        })?;
        self.matrix.replace(None);
        Ok(())
    }

    fn contains(&self, keys: &[String]) -> Result<Vec<bool>> {
        let mut stmt = self
            .index
            .conn
            .prepare_cached("SELECT 1 FROM vectors WHERE hash = ?1")
            .map_err(|e| self.index.err(e))?;
        keys.iter()
            .map(|k| stmt.exists([k]).map_err(|e| self.index.err(e)))
            .collect()
    }

    fn search(&self, query: &[f32], k: usize) -> Result<Vec<(String, f32)>> {
        // Another connection (an indexer) may have written since the last load.
        let generation = self.generation()?;
        if self.graph_use != GraphUse::Never && self.fresh_graph(generation)? {
            return self.search_graph(query, k);
        }
        self.scan(generation, query, k, None)
    }

    fn search_among(
        &self,
        query: &[f32],
        k: usize,
        keys: &HashSet<String>,
    ) -> Result<Vec<(String, f32)>> {
        let generation = self.generation()?;
        // Over-fetching through the graph pays while the filter keeps a fair
        // share of the rows; a selective one scans its matches exactly.
        let selective = keys.len().saturating_mul(SELECTIVE) < self.len()?;
        if !selective && self.graph_use != GraphUse::Never && self.fresh_graph(generation)? {
            return search_known(self, query, k, |h| keys.contains(h));
        }
        self.scan(generation, query, k, Some(keys))
    }

    fn all(&self) -> Result<Vec<(String, Vec<f32>)>> {
        let m = self.load()?;
        Ok(m.keys
            .into_iter()
            .zip(m.data.chunks_exact(m.dim.max(1)).map(<[f32]>::to_vec))
            .collect())
    }

    fn finish(&mut self, on_progress: &mut dyn FnMut(usize, usize)) -> Result<()> {
        let path = self.index.path().to_path_buf();
        let count = self.count()?;
        if count == 0 || count < self.policy.threshold {
            self.graph.replace(None);
            return ann::remove(&path);
        }
        let rows: Vec<ann::Row> = {
            let mut stmt = self
                .index
                .conn
                .prepare("SELECT rowid, hash FROM vectors ORDER BY rowid")
                .map_err(|e| self.index.err(e))?;
            let rows = stmt
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
                .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
                .map_err(|e| self.index.err(e))?;
            rows
        };
        let dim = self.rows_by_id(&[rows[0].0])?[0].1.len();
        let fetch = |ids: &[i64]| -> Result<Vec<Vec<f32>>> {
            Ok(self.rows_by_id(ids)?.into_iter().map(|(_, v)| v).collect())
        };
        ann::sync(
            &path,
            &rows,
            self.generation()?,
            dim,
            self.policy.params,
            &fetch,
            on_progress,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn f16_round_trip_and_exact_ranking() {
        let dir = std::env::temp_dir().join(format!("altclip-store-{}", std::process::id()));
        let mut store = SqliteVectors::open(&dir.join("index.db"), VectorDtype::F16).unwrap();
        store
            .upsert(&[
                ("a".into(), vec![1.0, 0.0, 0.0]),
                ("b".into(), vec![0.0, 1.0, 0.0]),
                ("c".into(), vec![0.6, 0.8, 0.0]),
            ])
            .unwrap();
        let hits = store.search(&[0.0, 1.0, 0.0], 2).unwrap();
        assert_eq!(hits[0].0, "b");
        assert_eq!(hits[1].0, "c");
        assert!((hits[1].1 - 0.8).abs() < 1e-3);
        assert_eq!(
            store.contains(&["a".into(), "z".into()]).unwrap(),
            vec![true, false]
        );
        store.remove(&["b".into()]).unwrap();
        assert_eq!(store.search(&[0.0, 1.0, 0.0], 1).unwrap()[0].0, "c");

        // A write through another connection is seen by an open store.
        let mut writer = SqliteVectors::open(&dir.join("index.db"), VectorDtype::F16).unwrap();
        writer.upsert(&[("d".into(), vec![0.0, 1.0, 0.0])]).unwrap();
        assert_eq!(store.search(&[0.0, 1.0, 0.0], 1).unwrap()[0].0, "d");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn foreign_rows_do_not_take_top_k_places() {
        let dir = std::env::temp_dir().join(format!("altclip-foreign-{}", std::process::id()));
        let mut store = SqliteVectors::open(&dir.join("index.db"), VectorDtype::F32).unwrap();
        // Ten rows of another writer score above our three.
        let mut rows: Vec<(String, Vec<f32>)> = (0..10)
            .map(|i| (format!("foreign{i}"), vec![1.0, 0.01 * i as f32]))
            .collect();
        rows.extend([
            ("ours-a".into(), vec![0.5, 0.5]),
            ("ours-b".into(), vec![0.4, 0.6]),
            ("ours-c".into(), vec![0.1, 0.9]),
        ]);
        store.upsert(&rows).unwrap();
        let ours = |key: &str| key.starts_with("ours");
        let hits = search_known(&store, &[1.0, 0.0], 2, ours).unwrap();
        let keys: Vec<&str> = hits.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["ours-a", "ours-b"]);
        // Asking for more than there are returns all that are known.
        assert_eq!(search_known(&store, &[1.0, 0.0], 5, ours).unwrap().len(), 3);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn graph_is_built_updated_in_place_and_dropped_below_threshold() {
        let dir = std::env::temp_dir().join(format!("altclip-ann-{}", std::process::id()));
        let db = dir.join("index.db");
        let unit = |i: usize| -> Vec<f32> {
            let mut v: Vec<f32> = (0..16)
                .map(|j| ((i * 7919 + j * 104_729 + i * j * 31) % 1009) as f32 - 504.0)
                .collect();
            altclip::normalize(&mut v);
            v
        };
        let policy = AnnPolicy {
            threshold: 50,
            ..AnnPolicy::default()
        };
        let mut store = SqliteVectors::open(&db, VectorDtype::F32)
            .unwrap()
            .with_ann_policy(policy)
            .graph_use(GraphUse::Always);
        let rows: Vec<(String, Vec<f32>)> = (0..60).map(|i| (format!("k{i}"), unit(i))).collect();
        store.upsert(&rows).unwrap();
        assert!(!store.uses_graph().unwrap());
        store.finish(&mut |_, _| {}).unwrap();
        assert!(store.uses_graph().unwrap());
        assert!(ann::dir_for(&db).join("manifest.json").is_file());
        let exact = SqliteVectors::open(&db, VectorDtype::F32)
            .unwrap()
            .graph_use(GraphUse::Never);
        let (_, calibration) = ann::status(&db).unwrap().unwrap();
        assert!(calibration.recall >= ann::TARGET_RECALL, "{calibration:?}");
        // With ef above the row count the graph search is exhaustive, so it
        // must equal the scan, scores and tie order included.
        store.set_expansion_search(64);
        for q in [unit(3), unit(41)] {
            assert_eq!(store.search(&q, 5).unwrap(), exact.search(&q, 5).unwrap());
        }

        // A write makes the graph stale: searches fall back to the scan
        // until `finish` updates the graph in place.
        let odd = vec![1.0 / 4.0; 16];
        store.upsert(&[("new".into(), odd.clone())]).unwrap();
        assert!(!store.uses_graph().unwrap());
        assert_eq!(store.search(&odd, 1).unwrap()[0].0, "new");
        store.finish(&mut |_, _| {}).unwrap();
        assert!(store.uses_graph().unwrap());
        assert_eq!(store.search(&odd, 1).unwrap()[0].0, "new");
        let files = std::fs::read_dir(ann::dir_for(&db)).unwrap().count();
        assert_eq!(files, 3, "manifest, graph and row list; old ones removed");

        // Below the threshold the graph is removed.
        let gone: Vec<String> = (0..30).map(|i| format!("k{i}")).collect();
        store.remove(&gone).unwrap();
        store.finish(&mut |_, _| {}).unwrap();
        assert!(!ann::dir_for(&db).exists());
        assert_eq!(store.search(&odd, 1).unwrap()[0].0, "new");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
