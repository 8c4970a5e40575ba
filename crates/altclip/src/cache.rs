//! An on-disk cache of image features, keyed by the model and the image's
//! content hash, so that re-running an evaluation (or evaluating a second
//! language) costs only the texts.

use std::io::Read;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::model::AltClip;

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// SHA-256 of `bytes`, in hex.
pub fn content_hash(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// [`content_hash`] of everything `reader` yields, read in pieces (for
/// files too large to hold, such as videos).
pub fn content_hash_reader(reader: &mut impl std::io::Read) -> std::io::Result<String> {
    let mut hasher = Sha256::new();
    std::io::copy(reader, &mut hasher)?;
    Ok(hex(&hasher.finalize()))
}

/// The default cache root: `$XDG_CACHE_HOME/altclip` or `~/.cache/altclip`.
pub fn default_root() -> PathBuf {
    crate::hub::user_cache_dir().join("altclip")
}

/// Identifies what produces image features: config, preprocessing, the
/// weight files and the dtype (see [`files_key`]).
pub fn model_key(clip: &AltClip) -> Result<String> {
    files_key(
        &clip.files().dir,
        &["config.json", "preprocessor_config.json"],
        clip.weight_files(),
        &format!("{:?}", clip.dtype()),
    )
}

/// The one recipe for keys derived from a model's files, 16 hex digits: the
/// whole of each of `small_files` in `dir` (an absent one counts as empty),
/// each weight file by name, size and modification time (hashing gigabytes
/// on every run would cost more than the caches save), then `extra`.
pub fn files_key(
    dir: &Path,
    small_files: &[&str],
    weight_files: &[PathBuf],
    extra: &str,
) -> Result<String> {
    let mut h = Sha256::new();
    for name in small_files {
        let path = dir.join(name);
        if path.is_file() {
            h.update(std::fs::read(&path).map_err(|e| Error::io(&path, e))?);
        }
        h.update([0]);
    }
    for path in weight_files {
        let (len, mtime) = file_stamp(path)?;
        h.update(format!(
            "{}|{len}|{mtime}\n",
            path.file_name().unwrap_or_default().to_string_lossy(),
        ));
    }
    h.update(extra);
    Ok(hex(&h.finalize())[..16].to_string())
}

/// A file's size and modification time (ns since the epoch, 0 if unknown):
/// what keys derived from weight files record instead of hashing gigabytes.
fn file_stamp(path: &Path) -> Result<(u64, u128)> {
    let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
    let mtime = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos());
    Ok((meta.len(), mtime))
}

/// Feature vectors stored one file per image under `root/<model key>/`.
#[derive(Debug, Clone)]
pub struct EmbeddingCache {
    dir: PathBuf,
}

impl EmbeddingCache {
    /// Opens (creating it if needed) the cache for `model_key` under `root`.
    pub fn open(root: &Path, model_key: &str) -> Result<Self> {
        let dir = root.join(model_key);
        std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        Ok(Self { dir })
    }

    /// Where entries are stored.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path(&self, hash: &str) -> PathBuf {
        self.dir.join(&hash[..2]).join(format!("{hash}.f32"))
    }

    /// The cached vector for a content hash, if any. A damaged entry counts as a miss.
    pub fn get(&self, hash: &str) -> Option<Vec<f32>> {
        let mut bytes = Vec::new();
        std::fs::File::open(self.path(hash))
            .ok()?
            .read_to_end(&mut bytes)
            .ok()?;
        if bytes.is_empty() || bytes.len() % 4 != 0 {
            return None;
        }
        Some(
            bytes
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
        )
    }

    /// Stores a vector. Written to a temporary file and renamed, so an
    /// interrupted run never leaves a truncated entry behind.
    pub fn put(&self, hash: &str, vector: &[f32]) -> Result<()> {
        let path = self.path(hash);
        let parent = path.parent().expect("entries live in a sub-directory");
        std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        let bytes: Vec<u8> = vector.iter().flat_map(|v| v.to_le_bytes()).collect();
        std::fs::write(&tmp, bytes).map_err(|e| Error::io(&tmp, e))?;
        std::fs::rename(&tmp, &path).map_err(|e| Error::io(&path, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_ignores_damaged_entries() {
        let root = std::env::temp_dir().join(format!("altclip-cache-{}", std::process::id()));
        let cache = EmbeddingCache::open(&root, "model").unwrap();
        let hash = content_hash(b"image bytes");
        assert_eq!(cache.get(&hash), None);
        cache.put(&hash, &[1.5, -2.0, 3.25]).unwrap();
        assert_eq!(cache.get(&hash), Some(vec![1.5, -2.0, 3.25]));
        std::fs::write(cache.path(&hash), [1, 2, 3]).unwrap();
        assert_eq!(cache.get(&hash), None);
        std::fs::remove_dir_all(root).unwrap();
    }
}
