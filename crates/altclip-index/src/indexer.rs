//! Bringing the index in step with the disk: only new or changed files are
//! read, content seen before (renames, duplicates, touched files) is not
//! embedded again, and every batch is committed before the next, so a run
//! killed at any point loses at most the batch in flight.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use altclip::cache::content_hash;
use altclip::AltClip;
use image::RgbImage;

use crate::db::{ErrorRow, FileRow, Index, ModelInfo};
use crate::error::Result;
use crate::media::{self, Media};
use crate::pipeline::pipelined;
use crate::store::VectorStore;
use crate::video::{self, Sampling};
use crate::walk::{absolute, find_media, split_live_photos};

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
    /// Videos' frames to embed; `None` leaves videos out of the walk.
    pub video: Option<Sampling>,
}

/// What a run did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Report {
    /// Image-named entries found under the roots.
    pub found: usize,
    /// Files whose path, size and modification time were already indexed.
    pub unchanged: usize,
    /// Images and videos that went through the model in this run.
    pub embedded: usize,
    /// Of those, the video frames embedded.
    pub frames: usize,
    /// New or changed files whose content was already indexed (renames,
    /// copies, touched files): recorded without running the model.
    pub reused: usize,
    /// Of those, files whose content had been indexed under a path that is now gone.
    pub renamed: usize,
    /// Unchanged files indexed before metadata was recorded, read again for it.
    pub described: usize,
    /// Live Photos' videos (`IMG_1.MOV` beside `IMG_1.HEIC`), left to their stills.
    pub live_photo_videos: usize,
    /// Files that could not be indexed in this run (see `--errors`).
    pub failed: usize,
    /// Files that failed before and were not retried.
    pub known_errors: usize,
    /// Indexed paths that no longer exist and were forgotten (`--prune`).
    pub removed: usize,
    /// Indexed paths that no longer exist but were kept (no `--prune`).
    pub missing: usize,
    /// Where the time went.
    pub time: Timings,
}

/// Milliseconds spent in each stage of a run. Reading and decoding run on
/// worker threads while the model runs, so they overlap: `decode_ms` sums
/// the workers' time, and `waited_ms` is how long the model sat idle waiting
/// for them (what decoding added to the wall time).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Timings {
    /// From the first batch handed to the workers to the last one committed.
    pub wall_ms: u64,
    /// Reading, hashing, decoding and orienting files, summed over workers.
    pub decode_ms: u64,
    /// Preprocessing and running the image tower.
    pub model_ms: u64,
    /// Waiting for the workers' next batch.
    pub waited_ms: u64,
}

fn millis(d: Duration) -> u64 {
    d.as_millis() as u64
}

/// Progress callback: `(files processed, files to process)`.
pub type OnProgress<'a> = dyn FnMut(usize, usize) + 'a;

struct Stat {
    path: String,
    size: u64,
    mtime_ns: i64,
    /// Indexed and unchanged, but without metadata (an index from before it
    /// was recorded): read again for it alone.
    backfill: bool,
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
        backfill: false,
    })
}

/// A file read and decoded by the worker stage.
struct Loaded {
    stat: Stat,
    outcome: std::result::Result<Decoded, String>,
    took: Duration,
}

fn load(
    stat: Stat,
    clip: &AltClip,
    max_pixels: u64,
    max_file_bytes: u64,
    video: Option<Sampling>,
) -> Loaded {
    let start = Instant::now();
    let outcome = read_and_decode(&stat, clip, max_pixels, max_file_bytes, video);
    Loaded {
        stat,
        outcome,
        took: start.elapsed(),
    }
}

/// An image (no time), or a video's frames with their times in ms.
type Frames = Vec<(Option<u64>, RgbImage)>;

/// What the worker stage makes of one file.
struct Decoded {
    hash: String,
    frames: Frames,
    media: Media,
}

/// The content hash, decoded image and metadata of one file, or why not.
fn read_and_decode(
    stat: &Stat,
    clip: &AltClip,
    max_pixels: u64,
    max_file_bytes: u64,
    video: Option<Sampling>,
) -> std::result::Result<Decoded, String> {
    // Videos are streamed, so the file-size limit is the images'.
    if let Some(sampling) = video.filter(|_| video::is_video_name(Path::new(&stat.path))) {
        return read_video(stat, clip, max_pixels, &sampling);
    }
    if stat.size > max_file_bytes {
        return Err(format!(
            "file is {} bytes, over the limit of {max_file_bytes}",
            stat.size
        ));
    }
    if stat.size == 0 {
        return Err("empty file".to_string());
    }
    let limit = max_file_bytes.min(altclip::preprocess::max_file_bytes(max_pixels));
    let bytes = altclip::preprocess::read_image_file(stat.path.as_ref(), limit)
        .map_err(|e| e.to_string())?;
    let hash = content_hash(&bytes);
    let image = (clip.decode_image(&bytes, &stat.path, max_pixels)).map_err(|e| e.to_string())?;
    let media = media::read(&bytes, stat.mtime_ns, image.dimensions());
    Ok(Decoded {
        hash,
        frames: vec![(None, image)],
        media,
    })
}

/// A video's content hash (streamed: videos are not held in memory), its
/// frames and its metadata, through ffmpeg.
fn read_video(
    stat: &Stat,
    clip: &AltClip,
    max_pixels: u64,
    sampling: &Sampling,
) -> std::result::Result<Decoded, String> {
    video::tools()?;
    let path = Path::new(&stat.path);
    let hash = std::fs::File::open(path)
        .and_then(|mut file| altclip::cache::content_hash_reader(&mut file))
        .map_err(|e| format!("cannot read: {e}"))?;
    let probe = video::probe(path)?;
    let mut frames = Vec::new();
    let mut failure = None;
    for ms in video::timestamps(probe.duration, sampling) {
        let name = format!("{} @ {}", stat.path, video::clock(ms));
        match video::frame_png(path, ms).and_then(|png| {
            clip.decode_image(&png, &name, max_pixels)
                .map_err(|e| e.to_string())
        }) {
            Ok(img) => frames.push((Some(ms), img)),
            Err(e) => failure = Some(e),
        }
    }
    if frames.is_empty() {
        return Err(failure.unwrap_or_else(|| "no frames".into()));
    }
    let (taken, taken_from) = match probe.created {
        Some(t) => (t, "video"),
        None => (media::file_time(stat.mtime_ns), "file"),
    };
    let media = Media {
        kind: "video".into(),
        taken,
        taken_from: taken_from.into(),
        make: None,
        model: None,
        lat: None,
        lon: None,
        width: probe.width,
        height: probe.height,
        duration: Some(probe.duration),
    };
    Ok(Decoded {
        hash,
        frames,
        media,
    })
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
    let mut report = Report::default();
    let scan = scan(index, &roots, opts, &mut report)?;
    report.failed += scan.failures.len();
    index.commit(&[], &scan.failures)?;

    let total = scan.todo.len();
    on_progress(0, total);
    let (max_pixels, max_bytes) = (opts.max_pixels, opts.max_file_bytes);
    let mut writer = BatchWriter {
        clip,
        index,
        store,
        gone_hashes: &scan.gone_hashes,
        stored_this_run: HashSet::new(),
        report: &mut report,
    };
    let mut done = 0;
    let (start, mut ready, mut waited) = (Instant::now(), Instant::now(), Duration::ZERO);
    pipelined(
        scan.todo,
        opts.batch_size.max(1),
        |s| load(s, clip, max_pixels, max_bytes, opts.video),
        |loaded: Vec<Loaded>| -> Result<()> {
            waited += ready.elapsed();
            done += loaded.len();
            writer.write(loaded)?;
            on_progress(done, total);
            ready = Instant::now();
            Ok(())
        },
    )?;
    report.time.wall_ms = millis(start.elapsed());
    report.time.waited_ms = millis(waited);

    if opts.prune {
        let orphans = index.remove(&scan.gone)?;
        store.remove(&orphans)?;
        report.removed = scan.gone.len();
    } else {
        report.missing = scan.gone.len();
    }
    Ok(report)
}

/// What a walk of the roots found, against the manifest.
struct Scan {
    /// New or changed files, to load and embed.
    todo: Vec<Stat>,
    /// Files found that cannot be indexed (not regular files, cannot stat).
    failures: Vec<ErrorRow>,
    /// Paths indexed before under the roots that are gone now.
    gone: Vec<String>,
    /// The content hashes of the gone paths: a file that appears with one of
    /// them was renamed.
    gone_hashes: HashSet<String>,
}

/// Walks `roots` and sorts each image into unchanged, known error or to do;
/// counts go into `report`.
fn scan(index: &Index, roots: &[PathBuf], opts: &Options, report: &mut Report) -> Result<Scan> {
    let files = index.files()?;
    let undescribed = index.paths_without_media()?;
    let known_errors: HashMap<String, (u64, i64)> = index
        .errors()?
        .into_iter()
        .map(|e| (e.path, (e.size, e.mtime_ns)))
        .collect();
    let mut todo = Vec::new();
    let mut failures = Vec::new();
    let mut seen = HashSet::new();
    let (media, motion) =
        split_live_photos(find_media(roots, &opts.exclude_dirs, opts.video.is_some()));
    report.live_photo_videos = motion.len();
    seen.extend(motion.iter().map(|f| f.path.display().to_string()));
    for found in media {
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
            if undescribed.contains(&st.path) {
                todo.push(Stat {
                    backfill: true,
                    ..st
                });
            } else {
                report.unchanged += 1;
            }
        } else if !opts.retry_errors && known_errors.get(&st.path) == Some(&(st.size, st.mtime_ns))
        {
            report.known_errors += 1;
        } else {
            todo.push(st);
        }
    }
    let under_roots = |p: &str| roots.iter().any(|r| Path::new(p).starts_with(r));
    let gone: Vec<String> = files
        .keys()
        .chain(known_errors.keys())
        .filter(|p| under_roots(p) && !seen.contains(*p))
        .cloned()
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    let gone_hashes = gone
        .iter()
        .filter_map(|p| files.get(p))
        .map(|f| f.hash.clone())
        .collect();
    Ok(Scan {
        todo,
        failures,
        gone,
        gone_hashes,
    })
}

/// Writes loaded batches: vectors the store already has are reused, the
/// rest embedded and stored, then the batch's manifest rows committed.
struct BatchWriter<'a> {
    clip: &'a AltClip,
    index: &'a mut Index,
    store: &'a mut dyn VectorStore,
    gone_hashes: &'a HashSet<String>,
    /// Hashes stored by earlier batches of this run.
    stored_this_run: HashSet<String>,
    report: &'a mut Report,
}

impl BatchWriter<'_> {
    fn write(&mut self, loaded: Vec<Loaded>) -> Result<()> {
        let mut rows = Vec::new();
        let mut errors = Vec::new();
        let mut to_embed: Vec<(FileRow, Frames)> = Vec::new();
        let known = self.known_hashes(&loaded)?;
        let decoding: Duration = loaded.iter().map(|l| l.took).sum();
        self.report.time.decode_ms += millis(decoding);
        for Loaded { stat, outcome, .. } in loaded {
            match outcome {
                // A backfill that fails keeps the indexed file as it was.
                Err(_) if stat.backfill => {}
                Err(reason) => errors.push(ErrorRow {
                    path: stat.path,
                    size: stat.size,
                    mtime_ns: stat.mtime_ns,
                    reason,
                }),
                Ok(Decoded {
                    hash,
                    frames,
                    media,
                }) => {
                    let row = FileRow {
                        path: stat.path,
                        size: stat.size,
                        mtime_ns: stat.mtime_ns,
                        hash,
                        media: Some(media),
                    };
                    if stat.backfill {
                        self.report.described += 1;
                        rows.push(row);
                    } else if known.contains(&row.hash)
                        || to_embed.iter().any(|(r, _)| r.hash == row.hash)
                    {
                        self.report.reused += 1;
                        self.report.renamed += self.gone_hashes.contains(&row.hash) as usize;
                        rows.push(row);
                    } else {
                        to_embed.push((row, frames));
                    }
                }
            }
        }
        if !to_embed.is_empty() {
            rows.extend(self.embed(to_embed)?);
        }
        self.report.failed += errors.len();
        self.index.commit(&rows, &errors)
    }

    /// The content hashes of `loaded` whose vectors are already stored.
    fn known_hashes(&mut self, loaded: &[Loaded]) -> Result<HashSet<String>> {
        let hashes: Vec<String> = loaded
            .iter()
            .filter_map(|l| l.outcome.as_ref().ok().map(|d| d.hash.clone()))
            .collect();
        let mut known: HashSet<String> = hashes
            .iter()
            .zip(self.store.contains(&hashes)?)
            .filter(|(_, present)| *present)
            .map(|(h, _)| h.clone())
            .collect();
        known.extend(self.index.hashes_with_frames(&hashes)?);
        known.extend(
            self.stored_this_run
                .iter()
                .filter(|h| hashes.contains(h))
                .cloned(),
        );
        Ok(known)
    }

    /// Embeds and stores new images and videos' frames; returns their
    /// manifest rows.
    fn embed(&mut self, to_embed: Vec<(FileRow, Frames)>) -> Result<Vec<FileRow>> {
        let (embedded, frames): (Vec<FileRow>, Vec<Frames>) = to_embed.into_iter().unzip();
        // One vector per image, keyed by its hash; per video frame, by
        // `HASH@MS`.
        let mut keys = Vec::new();
        let mut images = Vec::new();
        for (row, frames) in embedded.iter().zip(frames) {
            for (ms, img) in frames {
                keys.push(match ms {
                    Some(ms) => (format!("{}@{ms}", row.hash), Some((row.hash.clone(), ms))),
                    None => (row.hash.clone(), None),
                });
                images.push(img);
            }
        }
        let start = Instant::now();
        let vectors = self.clip.embed_images(&images)?;
        self.report.time.model_ms += millis(start.elapsed());
        let entries: Vec<(String, Vec<f32>)> =
            keys.iter().map(|(k, _)| k.clone()).zip(vectors).collect();
        // Vectors first: a crash before the manifest commit only leaves
        // vectors that the next run finds and reuses.
        self.store.upsert(&entries)?;
        let mut by_video: HashMap<String, Vec<(String, u64)>> = HashMap::new();
        for (key, frame) in keys {
            if let Some((hash, ms)) = frame {
                by_video.entry(hash).or_default().push((key, ms));
            }
        }
        for (hash, frames) in &by_video {
            self.report.frames += frames.len();
            self.index.record_frames(hash, frames)?;
        }
        self.report.embedded += embedded.len();
        self.stored_this_run
            .extend(embedded.iter().map(|r| r.hash.clone()));
        Ok(embedded)
    }
}
