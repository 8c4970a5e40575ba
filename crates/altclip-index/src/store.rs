//! Vector storage behind a small trait, so that backends are interchangeable.
//! The default keeps vectors in the index's SQLite file and searches them
//! exactly with a dot product over one contiguous matrix.

use std::cell::RefCell;
use std::path::Path;

use rusqlite::{params, OptionalExtension};

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
    /// Every key with its vector, for whole-collection work such as dedup.
    fn all(&self) -> Result<Vec<(String, Vec<f32>)>>;
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

/// Bumps the write counter that tells open stores their matrix is stale.
const BUMP_GENERATION: &str = "INSERT INTO meta (key, value) VALUES ('vectors_generation', '1') \
     ON CONFLICT(key) DO UPDATE SET value = CAST(value AS INTEGER) + 1";

/// Vectors in the `vectors` table of the index database.
pub struct SqliteVectors {
    index: Index,
    dtype: VectorDtype,
    /// Loaded on the first search and dropped on every write.
    matrix: RefCell<Option<Matrix>>,
}

impl SqliteVectors {
    /// Opens the vector table of the index at `path` (its own connection).
    pub fn open(path: &Path, dtype: VectorDtype) -> Result<Self> {
        Ok(Self {
            index: Index::open(path)?,
            dtype,
            matrix: RefCell::new(None),
        })
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

fn dot(a: &[f32], b: &[f32]) -> f32 {
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
        let scores: Vec<f32> = m
            .data
            .chunks_exact(m.dim)
            .map(|row| dot(row, query))
            .collect();
        Ok(altclip::metrics::top_k(&scores, k)
            .into_iter()
            .map(|i| (m.keys[i].clone(), scores[i]))
            .collect())
    }

    fn all(&self) -> Result<Vec<(String, Vec<f32>)>> {
        let m = self.load()?;
        Ok(m.keys
            .into_iter()
            .zip(m.data.chunks_exact(m.dim.max(1)).map(<[f32]>::to_vec))
            .collect())
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
}
