//! An HNSW index (instant-distance) over the stored vectors, for collections
//! too large to scan on every query. It is built from the store's matrix,
//! saved beside the database and tagged with the store's generation, so a
//! write to the store makes it stale and the next search rebuilds it.

use std::path::Path;

use instant_distance::{Builder, HnswMap, Search};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// A normalised vector; distance is `1 - cosine`.
#[derive(Clone, Serialize, Deserialize)]
struct Unit(Vec<f32>);

impl instant_distance::Point for Unit {
    fn distance(&self, other: &Self) -> f32 {
        1.0 - crate::store::dot(&self.0, &other.0)
    }
}

/// Build-time settings; `ef_search` is the candidate list kept per query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AnnParams {
    pub ef_construction: usize,
    pub ef_search: usize,
}

impl Default for AnnParams {
    fn default() -> Self {
        Self {
            ef_construction: 200,
            ef_search: 256,
        }
    }
}

/// An HNSW graph over rows `0..n` of a matrix, with the store generation it reflects.
#[derive(Serialize, Deserialize)]
pub struct Ann {
    generation: u64,
    map: HnswMap<Unit, u32>,
}

impl Ann {
    /// Builds the graph over the rows of `data` (`dim` columns each).
    pub fn build(data: &[f32], dim: usize, generation: u64, params: AnnParams) -> Self {
        let points: Vec<Unit> = data.chunks_exact(dim).map(|r| Unit(r.to_vec())).collect();
        let ids: Vec<u32> = (0..points.len() as u32).collect();
        let map = Builder::default()
            .ef_construction(params.ef_construction)
            .ef_search(params.ef_search)
            .seed(0x5eed)
            .build(points, ids);
        Self { generation, map }
    }

    /// The store generation this graph was built from.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The `k` nearest rows by cosine, best first, as `(row, cosine)`.
    pub fn search(&self, query: &[f32], k: usize) -> Vec<(usize, f32)> {
        let mut search = Search::default();
        self.map
            .search(&Unit(query.to_vec()), &mut search)
            .take(k)
            .map(|item| (*item.value as usize, 1.0 - item.distance))
            .collect()
    }

    /// Writes the graph to `path` (via a temporary file, so a crash never
    /// leaves a truncated graph behind).
    pub fn save(&self, path: &Path) -> Result<()> {
        let tmp = path.with_extension("tmp");
        let file = std::fs::File::create(&tmp)
            .map_err(|e| Error::Invalid(format!("cannot write {}: {e}", tmp.display())))?;
        bincode::serialize_into(std::io::BufWriter::new(file), self)
            .map_err(|e| Error::Invalid(format!("cannot write {}: {e}", tmp.display())))?;
        std::fs::rename(&tmp, path)
            .map_err(|e| Error::Invalid(format!("cannot write {}: {e}", path.display())))
    }

    /// Reads a graph written by [`Ann::save`]; `None` if it is absent or unreadable.
    pub fn load(path: &Path) -> Option<Self> {
        let file = std::fs::File::open(path).ok()?;
        bincode::deserialize_from(std::io::BufReader::new(file)).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_a_stored_point_first_and_round_trips() {
        let dim = 16;
        let mut data = Vec::new();
        let mut state = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..500 {
            let v: Vec<f32> = (0..dim)
                .map(|_| {
                    state = state
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    (state >> 40) as f32 / (1u64 << 24) as f32 - 0.5
                })
                .collect();
            let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
            data.extend(v.into_iter().map(|x| x / n));
        }
        let ann = Ann::build(&data, dim as usize, 7, AnnParams::default());
        let query = &data[42 * dim as usize..43 * dim as usize];
        let hits = ann.search(query, 3);
        assert_eq!(hits[0].0, 42);
        assert!((hits[0].1 - 1.0).abs() < 1e-5);
        let path = std::env::temp_dir().join(format!("altclip-ann-{}.bin", std::process::id()));
        ann.save(&path).unwrap();
        let back = Ann::load(&path).unwrap();
        assert_eq!(back.generation(), 7);
        assert_eq!(back.search(query, 3), hits);
        std::fs::remove_file(path).unwrap();
    }
}
