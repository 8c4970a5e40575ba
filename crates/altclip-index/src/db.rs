//! The manifest: which file (path, size, mtime) holds which content hash,
//! files that could not be indexed and why, and which model built the index.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use rusqlite::{params, Connection, OptionalExtension, Transaction};

use crate::error::{Error, Result};
use crate::media::Media;

/// An indexed file.
#[derive(Debug, Clone, PartialEq)]
pub struct FileRow {
    pub path: String,
    pub size: u64,
    pub mtime_ns: i64,
    pub hash: String,
    /// Its metadata, when this row carries it to [`Index::commit`] (rows
    /// read back by [`Index::files`] leave it out; see [`Index::media_of`]).
    pub media: Option<Media>,
}

/// A file that was skipped, with the reason.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ErrorRow {
    pub path: String,
    pub size: u64,
    pub mtime_ns: i64,
    pub reason: String,
}

/// Which model produced the vectors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelInfo {
    /// What the user passed as --model (a Hub id or a directory).
    pub name: String,
    pub revision: Option<String>,
    /// Content fingerprint of the model files (see `altclip::cache::model_key`).
    pub key: String,
    pub dim: usize,
}

impl ModelInfo {
    /// What an index records about `clip`, loaded from `name` (a Hub id or
    /// a directory) at `revision`. A local directory is recorded absolute,
    /// so that searches from any working directory find it.
    pub fn describe(clip: &altclip::AltClip, name: &str, revision: Option<&str>) -> Result<Self> {
        let name = match std::fs::canonicalize(name) {
            Ok(dir) if dir.is_dir() => dir.display().to_string(),
            _ => name.to_string(),
        };
        Ok(Self {
            name,
            revision: revision.map(str::to_string),
            key: altclip::cache::model_key(clip)?,
            dim: clip.embedding_dim(),
        })
    }
}

/// Index setting: the vector count from which an HNSW graph is kept.
pub const ANN_THRESHOLD: &str = "ann_threshold";

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS files (
    path TEXT PRIMARY KEY,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    hash TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS files_hash ON files(hash);
CREATE TABLE IF NOT EXISTS errors (
    path TEXT PRIMARY KEY,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    reason TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS vectors (hash TEXT PRIMARY KEY, dtype TEXT NOT NULL, data BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS media (
    path TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    taken TEXT NOT NULL,
    taken_from TEXT NOT NULL,
    make TEXT,
    model TEXT,
    lat REAL,
    lon REAL,
    width INTEGER NOT NULL,
    height INTEGER NOT NULL,
    duration REAL
);
CREATE INDEX IF NOT EXISTS media_taken ON media(taken);
CREATE TABLE IF NOT EXISTS frames (key TEXT PRIMARY KEY, hash TEXT NOT NULL, t_ms INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS frames_hash ON frames(hash);
";

/// The index database.
pub struct Index {
    pub(crate) conn: Connection,
    path: PathBuf,
}

impl Index {
    /// Opens or creates the database (and its directory). WAL journaling makes
    /// every committed batch durable across a crash or SIGKILL.
    pub fn open(path: &Path) -> Result<Self> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| Error::Invalid(format!("cannot create {}: {e}", dir.display())))?;
        }
        let conn = Connection::open(path).map_err(|e| Self::db_err(path, e))?;
        let index = Self {
            conn,
            path: path.to_path_buf(),
        };
        index
            .conn
            .execute_batch(
                "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA busy_timeout=5000;",
            )
            .and_then(|_| index.conn.execute_batch(SCHEMA))
            .map_err(|e| index.err(e))?;
        Ok(index)
    }

    fn db_err(path: &Path, source: rusqlite::Error) -> Error {
        Error::Db {
            path: path.to_path_buf(),
            source,
        }
    }

    pub(crate) fn err(&self, source: rusqlite::Error) -> Error {
        Self::db_err(&self.path, source)
    }

    /// Where the database lives.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The HNSW policy this index recorded (`ANN_THRESHOLD`), else the default.
    pub fn ann_policy(&self) -> Result<crate::AnnPolicy> {
        let mut policy = crate::AnnPolicy::default();
        if let Some(t) = self.setting(ANN_THRESHOLD)? {
            policy.threshold = t.parse().map_err(|_| {
                Error::Invalid(format!(
                    "{}: bad setting {ANN_THRESHOLD}={t:?} (expected a vector count)",
                    self.path.display()
                ))
            })?;
        }
        Ok(policy)
    }

    /// A free-form setting recorded in the database (e.g. `store`).
    pub fn setting(&self, key: &str) -> Result<Option<String>> {
        self.meta(&format!("setting.{key}"))
    }

    /// Records a setting; later runs read it back with [`Index::setting`].
    pub fn set_setting(&self, key: &str, value: &str) -> Result<()> {
        self.conn
            .execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES (?1, ?2)",
                [format!("setting.{key}").as_str(), value],
            )
            .map(|_| ())
            .map_err(|e| self.err(e))
    }

    fn meta(&self, key: &str) -> Result<Option<String>> {
        self.conn
            .query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
            .optional()
            .map_err(|e| self.err(e))
    }

    /// The model recorded at the first indexing run, if any.
    pub fn model(&self) -> Result<Option<ModelInfo>> {
        let Some(key) = self.meta("model_key")? else {
            return Ok(None);
        };
        Ok(Some(ModelInfo {
            name: self.meta("model")?.unwrap_or_default(),
            revision: self.meta("revision")?,
            key,
            dim: self.meta("dim")?.and_then(|d| d.parse().ok()).unwrap_or(0),
        }))
    }

    /// Checks that `model` computes the embeddings this index holds (the
    /// same model files, by [`ModelInfo::key`]); any model fits an index that
    /// has none yet. The one compatibility rule of every reader and writer.
    pub fn check_model(&self, model: &ModelInfo) -> Result<()> {
        match self.model()? {
            Some(existing) if existing.key != model.key => Err(Error::ModelMismatch {
                db: self.path.clone(),
                indexed: existing.name,
                requested: model.name.clone(),
            }),
            _ => Ok(()),
        }
    }

    /// Records `model` on first use; afterwards refuses any other model.
    pub fn bind_model(&self, model: &ModelInfo) -> Result<()> {
        self.check_model(model)?;
        match self.model()? {
            Some(_) => Ok(()),
            None => {
                let set = |k: &str, v: &str| {
                    self.conn
                        .execute(
                            "INSERT OR REPLACE INTO meta (key, value) VALUES (?1, ?2)",
                            [k, v],
                        )
                        .map(|_| ())
                        .map_err(|e| self.err(e))
                };
                set("model", &model.name)?;
                if let Some(rev) = &model.revision {
                    set("revision", rev)?;
                }
                set("model_key", &model.key)?;
                set("dim", &model.dim.to_string())
            }
        }
    }

    /// Every indexed file by path.
    pub fn files(&self) -> Result<HashMap<String, FileRow>> {
        let mut stmt = self
            .conn
            .prepare("SELECT path, size, mtime_ns, hash FROM files")
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([], |r| {
                Ok(FileRow {
                    path: r.get(0)?,
                    size: r.get::<_, i64>(1)? as u64,
                    mtime_ns: r.get(2)?,
                    hash: r.get(3)?,
                    media: None,
                })
            })
            .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
            .map_err(|e| self.err(e))?;
        Ok(rows.into_iter().map(|f| (f.path.clone(), f)).collect())
    }

    /// The metadata of those of `paths` that have it, by path.
    pub fn media_of(&self, paths: &[String]) -> Result<HashMap<String, Media>> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT kind, taken, taken_from, make, model, lat, lon, width, height, duration \
                 FROM media WHERE path = ?1",
            )
            .map_err(|e| self.err(e))?;
        let mut out = HashMap::new();
        for path in paths {
            let media = stmt
                .query_row([path], |r| {
                    Ok(Media {
                        kind: r.get(0)?,
                        taken: r.get(1)?,
                        taken_from: r.get(2)?,
                        make: r.get(3)?,
                        model: r.get(4)?,
                        lat: r.get(5)?,
                        lon: r.get(6)?,
                        width: r.get(7)?,
                        height: r.get(8)?,
                        duration: r.get(9)?,
                    })
                })
                .optional()
                .map_err(|e| self.err(e))?;
            if let Some(m) = media {
                out.insert(path.clone(), m);
            }
        }
        Ok(out)
    }

    /// Records a video's frames: `(vector key, frame time)` for content `hash`.
    pub fn record_frames(&mut self, hash: &str, frames: &[(String, u64)]) -> Result<()> {
        self.in_transaction(|tx| {
            let mut put = tx.prepare_cached(
                "INSERT OR REPLACE INTO frames (key, hash, t_ms) VALUES (?1, ?2, ?3)",
            )?;
            for (key, ms) in frames {
                put.execute(params![key, hash, *ms as i64])?;
            }
            Ok(())
        })
    }

    /// Those of `hashes` whose frames are recorded (videos already embedded).
    pub fn hashes_with_frames(
        &self,
        hashes: &[String],
    ) -> Result<std::collections::HashSet<String>> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT 1 FROM frames WHERE hash = ?1 LIMIT 1")
            .map_err(|e| self.err(e))?;
        let mut out = std::collections::HashSet::new();
        for h in hashes {
            if stmt.exists([h]).map_err(|e| self.err(e))? {
                out.insert(h.clone());
            }
        }
        Ok(out)
    }

    /// Vector key → (content hash, frame time): the frames of every video.
    pub fn frames(&self) -> Result<HashMap<String, (String, u64)>> {
        let mut stmt = self
            .conn
            .prepare("SELECT key, hash, t_ms FROM frames")
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    (r.get::<_, String>(1)?, r.get::<_, i64>(2)? as u64),
                ))
            })
            .and_then(|rows| rows.collect::<rusqlite::Result<HashMap<_, _>>>())
            .map_err(|e| self.err(e))?;
        Ok(rows)
    }

    /// A number that changes whenever another connection (an indexer)
    /// commits to the database: a reader's cue to re-read what it cached.
    pub fn data_version(&self) -> Result<i64> {
        self.conn
            .query_row("PRAGMA data_version", [], |r| r.get(0))
            .map_err(|e| self.err(e))
    }

    /// Indexed files without metadata (indexed before it was recorded).
    pub fn paths_without_media(&self) -> Result<std::collections::HashSet<String>> {
        let mut stmt = self
            .conn
            .prepare("SELECT f.path FROM files f LEFT JOIN media m ON m.path = f.path WHERE m.path IS NULL")
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([], |r| r.get(0))
            .and_then(|rows| rows.collect::<rusqlite::Result<_>>())
            .map_err(|e| self.err(e))?;
        Ok(rows)
    }

    /// Paths per content hash (several when files are duplicates).
    pub fn paths_by_hash(&self) -> Result<HashMap<String, Vec<String>>> {
        let mut out: HashMap<String, Vec<String>> = HashMap::new();
        for (path, row) in self.files()? {
            out.entry(row.hash).or_default().push(path);
        }
        for paths in out.values_mut() {
            paths.sort();
        }
        Ok(out)
    }

    /// Files recorded as unreadable, by path.
    pub fn errors(&self) -> Result<Vec<ErrorRow>> {
        let mut stmt = self
            .conn
            .prepare("SELECT path, size, mtime_ns, reason FROM errors ORDER BY path")
            .map_err(|e| self.err(e))?;
        stmt.query_map([], |r| {
            Ok(ErrorRow {
                path: r.get(0)?,
                size: r.get::<_, i64>(1)? as u64,
                mtime_ns: r.get(2)?,
                reason: r.get(3)?,
            })
        })
        .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
        .map_err(|e| self.err(e))
    }

    /// Runs `work` in one transaction, committed when it succeeds; every
    /// SQLite error is reported with the database's path.
    pub(crate) fn in_transaction<T>(
        &mut self,
        work: impl FnOnce(&Transaction) -> rusqlite::Result<T>,
    ) -> Result<T> {
        let path = self.path.clone();
        let run = || {
            let tx = self.conn.transaction()?;
            let out = work(&tx)?;
            tx.commit()?;
            Ok(out)
        };
        run().map_err(|e| Self::db_err(&path, e))
    }

    /// Records indexed files and failures in one transaction.
    pub fn commit(&mut self, files: &[FileRow], errors: &[ErrorRow]) -> Result<()> {
        self.in_transaction(|tx| {
            let mut put = tx.prepare_cached(
                "INSERT OR REPLACE INTO files (path, size, mtime_ns, hash) VALUES (?1, ?2, ?3, ?4)",
            )?;
            let mut clear = tx.prepare_cached("DELETE FROM errors WHERE path = ?1")?;
            let mut describe = tx.prepare_cached(
                "INSERT OR REPLACE INTO media (path, kind, taken, taken_from, make, model, lat, lon, \
                 width, height, duration) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
            )?;
            for f in files {
                put.execute(params![f.path, f.size as i64, f.mtime_ns, f.hash])?;
                clear.execute([&f.path])?;
                if let Some(m) = &f.media {
                    describe.execute(params![
                        f.path,
                        m.kind,
                        m.taken,
                        m.taken_from,
                        m.make,
                        m.model,
                        m.lat,
                        m.lon,
                        m.width,
                        m.height,
                        m.duration
                    ])?;
                }
            }
            let mut fail = tx.prepare_cached(
                "INSERT OR REPLACE INTO errors (path, size, mtime_ns, reason) VALUES (?1, ?2, ?3, ?4)",
            )?;
            let mut drop_file = tx.prepare_cached("DELETE FROM files WHERE path = ?1")?;
            let mut drop_media = tx.prepare_cached("DELETE FROM media WHERE path = ?1")?;
            for e in errors {
                fail.execute(params![e.path, e.size as i64, e.mtime_ns, e.reason])?;
                drop_file.execute([&e.path])?;
                drop_media.execute([&e.path])?;
            }
            Ok(())
        })
    }

    /// Forgets files (and their error records); returns the content hashes no
    /// remaining file refers to, whose vectors can be dropped.
    pub fn remove(&mut self, paths: &[String]) -> Result<Vec<String>> {
        self.in_transaction(|tx| {
            let mut hash_of = tx.prepare_cached("SELECT hash FROM files WHERE path = ?1")?;
            let mut del = tx.prepare_cached("DELETE FROM files WHERE path = ?1")?;
            let mut del_err = tx.prepare_cached("DELETE FROM errors WHERE path = ?1")?;
            let mut del_media = tx.prepare_cached("DELETE FROM media WHERE path = ?1")?;
            let mut frames_of = tx.prepare_cached("SELECT key FROM frames WHERE hash = ?1")?;
            let mut del_frames = tx.prepare_cached("DELETE FROM frames WHERE hash = ?1")?;
            let mut still_used = tx.prepare_cached("SELECT COUNT(*) FROM files WHERE hash = ?1")?;
            let mut orphans = Vec::new();
            for p in paths {
                let hash: Option<String> = hash_of.query_row([p], |r| r.get(0)).optional()?;
                del.execute([p])?;
                del_err.execute([p])?;
                del_media.execute([p])?;
                if let Some(hash) = hash {
                    let n: i64 = still_used.query_row([&hash], |r| r.get(0))?;
                    if n == 0 {
                        // A video's vectors are its frames'.
                        let keys: Vec<String> = frames_of
                            .query_map([&hash], |r| r.get(0))?
                            .collect::<rusqlite::Result<_>>()?;
                        del_frames.execute([&hash])?;
                        orphans.extend(keys);
                        orphans.push(hash);
                    }
                }
            }
            Ok(orphans)
        })
    }

    /// SQLite's own consistency check; `Ok` means the file is sound.
    pub fn integrity_check(&self) -> Result<()> {
        let status: String = self
            .conn
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .map_err(|e| self.err(e))?;
        if status == "ok" {
            Ok(())
        } else {
            Err(Error::Invalid(format!(
                "{}: integrity check failed: {status}",
                self.path.display()
            )))
        }
    }
}
