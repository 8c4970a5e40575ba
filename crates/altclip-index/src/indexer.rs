//! Bringing the index in step with the disk: only new or changed files are
//! read, content seen before (renames, duplicates, touched files) is not
//! embedded again, and every batch is committed before the next, so a run
//! killed at any point loses at most the batch in flight.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use altclip::cache::content_hash;
use altclip::preprocess::decode_rgb;
use altclip::AltClip;
use image::RgbImage;

use crate::db::{ErrorRow, FileRow, Index, ModelInfo};
use crate::error::Result;
use crate::pipeline::pipelined;
use crate::store::VectorStore;
use crate::walk::find_images;

/// What to index and how.
#[derive(Debug, Clone)]
pub struct Options {
    pub roots: Vec<PathBuf>,
    /// Directory names (wildcards `*`, `?`) not to descend into.
    pub exclude_dirs: Vec<String>,
    /// Forget files that no longer exist under the roots.
    pub prune: bool,
    pub batch_size: usize,
    pub max_pixels: u64,
    /// Files larger than this are recorded as errors without being read.
    pub max_file_bytes: u64,
    /// Try again files that failed before and have not changed since.
    pub retry_errors: bool,
}

/// What a run did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Report {
    /// Image-named entries found under the roots.
    pub found: usize,
    /// Files whose path, size and modification time were already indexed.
    pub unchanged: usize,
    /// Images that went through the model in this run.
    pub embedded: usize,
    /// New or changed files whose content was already indexed (renames,
    /// copies, touched files): recorded without running the model.
    pub reused: usize,
    /// Of those, files whose content had been indexed under a path that is now gone.
    pub renamed: usize,
    /// Files that could not be indexed in this run (see `--errors`).
    pub failed: usize,
    /// Files that failed before and were not retried.
    pub known_errors: usize,
    /// Indexed paths that no longer exist and were forgotten (`--prune`).
    pub removed: usize,
    /// Indexed paths that no longer exist but were kept (no `--prune`).
    pub missing: usize,
}

/// Progress callback: `(files processed, files to process)`.
pub type OnProgress<'a> = dyn FnMut(usize, usize) + 'a;

struct Stat {
    path: String,
    size: u64,
    mtime_ns: i64,
}

fn stat(path: &Path) -> std::io::Result<Stat> {
    let meta = std::fs::metadata(path)?;
    let mtime_ns = meta
        .modified()?
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64);
    Ok(Stat {
        path: path.display().to_string(),
        size: meta.len(),
        mtime_ns,
    })
}

fn absolute(path: &Path) -> PathBuf {
    std::fs::canonicalize(path).unwrap_or_else(|_| {
        std::env::current_dir()
            .map(|d| d.join(path))
            .unwrap_or_else(|_| path.to_path_buf())
    })
}

/// A file read and decoded by the worker stage.
struct Loaded {
    stat: Stat,
    outcome: std::result::Result<(String, RgbImage), String>,
}

fn load(stat: Stat, max_pixels: u64, max_file_bytes: u64) -> Loaded {
    let outcome = read_and_decode(&stat, max_pixels, max_file_bytes);
    Loaded { stat, outcome }
}

/// The content hash and the decoded image of one file, or why not.
fn read_and_decode(
    stat: &Stat,
    max_pixels: u64,
    max_file_bytes: u64,
) -> std::result::Result<(String, RgbImage), String> {
    if stat.size > max_file_bytes {
        return Err(format!(
            "file is {} bytes, over the limit of {max_file_bytes}",
            stat.size
        ));
    }
    if stat.size == 0 {
        return Err("empty file".to_string());
    }
    let bytes = std::fs::read(&stat.path).map_err(|e| format!("cannot read: {e}"))?;
    let hash = content_hash(&bytes);
    let img = decode_rgb(&bytes, &stat.path, max_pixels).map_err(|e| e.to_string())?;
    Ok((hash, img))
}

/// Indexes `opts.roots` into `index` and `store` with `clip`.
pub fn run(
    clip: &AltClip,
    model: &ModelInfo,
    index: &mut Index,
    store: &mut dyn VectorStore,
    opts: &Options,
    on_progress: &mut OnProgress,
) -> Result<Report> {
    index.bind_model(model)?;
    let roots: Vec<PathBuf> = opts.roots.iter().map(|r| absolute(r)).collect();
    let files = index.files()?;
    let known_errors: HashMap<String, (u64, i64)> = index
        .errors()?
        .into_iter()
        .map(|e| (e.path, (e.size, e.mtime_ns)))
        .collect();
    let mut report = Report::default();
    let mut todo = Vec::new();
    let mut failures = Vec::new();
    let mut seen = HashSet::new();
    for found in find_images(&roots, &opts.exclude_dirs) {
        report.found += 1;
        let path_str = found.path.display().to_string();
        seen.insert(path_str.clone());
        let st = match stat(&found.path) {
            Ok(st) if found.is_file => st,
            Ok(st) => {
                failures.push(ErrorRow {
                    path: st.path,
                    size: 0,
                    mtime_ns: st.mtime_ns,
                    reason: "not a regular file (a directory or device named like an image)".into(),
                });
                continue;
            }
            Err(e) => {
                failures.push(ErrorRow {
                    path: path_str,
                    size: 0,
                    mtime_ns: 0,
                    reason: format!("cannot stat: {e}"),
                });
                continue;
            }
        };
        if files
            .get(&st.path)
            .is_some_and(|f| f.size == st.size && f.mtime_ns == st.mtime_ns)
        {
            report.unchanged += 1;
        } else if !opts.retry_errors && known_errors.get(&st.path) == Some(&(st.size, st.mtime_ns))
        {
            report.known_errors += 1;
        } else {
            todo.push(st);
        }
    }

    // Paths indexed before under these roots that are gone now.
    let under_roots = |p: &str| roots.iter().any(|r| Path::new(p).starts_with(r));
    let gone: Vec<String> = files
        .keys()
        .chain(known_errors.keys())
        .filter(|p| under_roots(p) && !seen.contains(*p))
        .cloned()
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    let gone_hashes: HashSet<&str> = gone
        .iter()
        .filter_map(|p| files.get(p))
        .map(|f| f.hash.as_str())
        .collect();

    report.failed += failures.len();
    index.commit(&[], &failures)?;

    let total = todo.len();
    on_progress(0, total);
    let batch = opts.batch_size.max(1);
    let (max_pixels, max_bytes) = (opts.max_pixels, opts.max_file_bytes);
    let mut done = 0;
    let mut stored_this_run: HashSet<String> = HashSet::new();
    pipelined(
        todo,
        batch,
        |s| load(s, max_pixels, max_bytes),
        |loaded: Vec<Loaded>| -> Result<()> {
            let n = loaded.len();
            let mut rows = Vec::new();
            let mut errors = Vec::new();
            let mut to_embed: Vec<(FileRow, RgbImage)> = Vec::new();
            let hashes: Vec<String> = loaded
                .iter()
                .filter_map(|l| l.outcome.as_ref().ok().map(|(h, _)| h.clone()))
                .collect();
            let mut known: HashSet<String> = hashes
                .iter()
                .zip(store.contains(&hashes)?)
                .filter(|(_, present)| *present)
                .map(|(h, _)| h.clone())
                .collect();
            known.extend(
                stored_this_run
                    .iter()
                    .filter(|h| hashes.contains(h))
                    .cloned(),
            );
            for Loaded { stat, outcome } in loaded {
                match outcome {
                    Err(reason) => errors.push(ErrorRow {
                        path: stat.path,
                        size: stat.size,
                        mtime_ns: stat.mtime_ns,
                        reason,
                    }),
                    Ok((hash, img)) => {
                        let row = FileRow {
                            path: stat.path,
                            size: stat.size,
                            mtime_ns: stat.mtime_ns,
                            hash,
                        };
                        if known.contains(&row.hash)
                            || to_embed.iter().any(|(r, _)| r.hash == row.hash)
                        {
                            report.reused += 1;
                            report.renamed += gone_hashes.contains(row.hash.as_str()) as usize;
                            rows.push(row);
                        } else {
                            to_embed.push((row, img));
                        }
                    }
                }
            }
            if !to_embed.is_empty() {
                let (embedded, images): (Vec<FileRow>, Vec<RgbImage>) =
                    to_embed.into_iter().unzip();
                let vectors = clip.embed_images(&images)?;
                let entries: Vec<(String, Vec<f32>)> = embedded
                    .iter()
                    .map(|r| r.hash.clone())
                    .zip(vectors)
                    .collect();
                // Vectors first: a crash before the manifest commit only
                // leaves vectors that the next run finds and reuses.
                store.upsert(&entries)?;
                report.embedded += embedded.len();
                stored_this_run.extend(entries.into_iter().map(|(h, _)| h));
                rows.extend(embedded);
            }
            report.failed += errors.len();
            index.commit(&rows, &errors)?;
            done += n;
            on_progress(done, total);
            Ok(())
        },
    )?;

    if opts.prune {
        let orphans = index.remove(&gone)?;
        store.remove(&orphans)?;
        report.removed = gone.len();
    } else {
        report.missing = gone.len();
    }
    Ok(report)
}
