//! `altclip index`, `altclip search` and `altclip dedup`: a searchable index
//! of a photo library in one SQLite file.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use altclip_index::indexer::{self, Options};
use altclip_index::video::Sampling;
use altclip_index::walk::absolute;
use altclip_index::{
    dedup, filter, query, GraphUse, Index, ModelInfo, SqliteVectors, VectorDtype, VectorStore,
    ANN_THRESHOLD,
};
use anyhow::{Context, Result};

use altclip::args::ModelSettings;
use altclip::Towers;

use crate::common::{load_model, load_towers, print_json_line, progress, track, ImageArgs};

const DB_NAME: &str = ".altclip/index.db";

/// The index, model and vector store a library command works on.
#[derive(clap::Args, Debug)]
pub struct Target {
    /// Index database (default: .altclip/index.db in the first PATH for `index`;
    /// otherwise here or in the nearest parent directory that has one).
    #[arg(long, env = "ALTCLIP_DB")]
    db: Option<PathBuf>,
    /// Model directory or Hub id (default: the model the database was built with).
    #[arg(long, short = 'm', env = "ALTCLIP_MODEL")]
    model: Option<String>,
    #[command(flatten)]
    settings: ModelSettings,
    #[command(flatten)]
    images: ImageArgs,
    /// Keep the vectors in a Milvus collection (milvus://HOST:PORT/COLLECTION)
    /// instead of the index database; `index` records it for later commands.
    #[arg(long, env = "ALTCLIP_STORE")]
    store: Option<String>,
}

/// Where the vectors of an index live: `--store`, else what the index
/// recorded, else the index database itself (searched through its HNSW
/// graph when it has a fresh one, unless `exact`).
pub(crate) fn open_store(
    explicit: &Option<String>,
    index: &Index,
    dtype: VectorDtype,
    dim: usize,
    exact: bool,
) -> Result<Box<dyn VectorStore>> {
    let recorded = index.setting("store")?;
    if let (Some(asked), Some(recorded)) = (explicit, &recorded) {
        anyhow::ensure!(
            asked == recorded,
            "{} keeps its vectors in {recorded}; pass --store {recorded} or use another --db",
            index.path().display()
        );
    }
    let spec = explicit.clone().or(recorded.clone());
    let store: Box<dyn VectorStore> = match spec.as_deref() {
        None | Some("sqlite") => {
            let policy = index.ann_policy()?;
            Box::new(
                SqliteVectors::open(index.path(), dtype)?
                    .with_ann_policy(policy)
                    .graph_use(if exact {
                        GraphUse::Never
                    } else {
                        GraphUse::Auto
                    }),
            )
        }
        Some(uri) if uri.starts_with("milvus://") => Box::new(
            altclip_milvus::MilvusStore::connect(uri, dim)
                .with_context(|| format!("connecting to --store {uri}"))?,
        ),
        Some(other) => anyhow::bail!(
            "--store {other}: expected milvus://HOST:PORT/COLLECTION, or omit it to keep the \
             vectors in the index database"
        ),
    };
    if let (Some(spec), None) = (&spec, &recorded) {
        index.set_setting("store", spec)?;
    }
    Ok(store)
}

/// The database to search: --db, else `.altclip/index.db` in the current
/// directory or the nearest parent that has one.
fn find_db(explicit: &Option<PathBuf>) -> Result<PathBuf> {
    if let Some(db) = explicit {
        anyhow::ensure!(
            db.is_file(),
            "{}: no such index database; build it with `altclip index`",
            db.display()
        );
        return Ok(db.clone());
    }
    let cwd = std::env::current_dir()?;
    cwd.ancestors()
        .map(|d| d.join(DB_NAME))
        .find(|p| p.is_file())
        .with_context(|| {
            format!(
                "no {DB_NAME} in {} or its parents; run `altclip index DIR` first or pass --db FILE",
                cwd.display()
            )
        })
}

/// Index image folders for search (incremental and resumable).
///
/// Walks PATHs recursively (skipping hidden files and --exclude-dir names),
/// embeds new or changed images in batches and records them in a SQLite
/// database, by default PATH/.altclip/index.db. Unchanged files are not read
/// again; renamed or duplicated files are not embedded again. Each batch is
/// committed before the next, so an interrupted run resumes where it stopped.
/// Files that cannot be read are recorded with the reason (see --errors).
#[derive(clap::Args, Debug)]
#[command(
    after_help = "Examples:\n  altclip index ~/Pictures -m BAAI/AltCLIP\n  \
                        altclip index ~/Pictures --exclude-dir node_modules --exclude-dir '*.cache' --prune\n  \
                        altclip index --errors --db ~/Pictures/.altclip/index.db"
)]
pub struct IndexArgs {
    /// Folders to index.
    #[arg(required_unless_present = "errors")]
    paths: Vec<PathBuf>,
    #[command(flatten)]
    target: Target,
    /// Directory names not to descend into (wildcards * and ?). Repeatable.
    #[arg(long)]
    exclude_dir: Vec<String>,
    /// Forget indexed files that no longer exist.
    #[arg(long)]
    prune: bool,
    /// Retry files that failed before even if they have not changed.
    #[arg(long)]
    retry_errors: bool,
    /// Skip files larger than this many bytes without reading them.
    #[arg(long, default_value_t = 1 << 30)]
    max_file_size: u64,
    /// Images per forward pass (and per committed batch).
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u64).range(1..))]
    batch_size: u64,
    /// Storage of vectors: f16 (half the size) or f32.
    #[arg(long, default_value = "f16", value_parser = ["f16", "f32"])]
    vector_dtype: String,
    /// Keep an HNSW graph (in DB.hnsw/) for approximate search once the index
    /// holds this many images; below it, search scans every vector exactly.
    /// Remembered by the database. [default: 100000]
    #[arg(long)]
    ann_threshold: Option<usize>,
    /// List the files that could not be indexed, with reasons, and exit.
    #[arg(long)]
    errors: bool,
    /// Print the run's report (or the --errors list) as JSON.
    #[arg(long)]
    json: bool,
    /// Leave videos out (by default they are indexed with ffmpeg, when it is installed).
    #[arg(long)]
    no_videos: bool,
    /// Seconds between the video frames that are embedded, each found later as `video @ time`.
    #[arg(long, default_value_t = 2.0, value_name = "SECS", value_parser = positive_seconds)]
    video_interval: f64,
    /// At most this many frames per video; longer videos get them spread over their length.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    video_max_frames: u64,
    /// After indexing, keep watching PATHs and index what is added, changed, moved or deleted
    /// (deleted files are forgotten, as with --prune), one report per batch, until interrupted.
    #[arg(long)]
    watch: bool,
    /// With --watch, seconds without further changes before a batch is indexed.
    #[arg(long, default_value_t = 2.0, value_name = "SECS", requires = "watch")]
    watch_delay: f64,
}

fn model_for(db: &Index, explicit: &Option<String>) -> Result<String> {
    if let Some(m) = explicit {
        return Ok(m.clone());
    }
    match db.model()? {
        Some(info) => Ok(info.name),
        None => anyhow::bail!(
            "{} has no model yet: pass --model (a directory or a Hub id such as BAAI/AltCLIP)",
            db.path().display()
        ),
    }
}

/// The index's refusals, with the flags that answer them.
fn advise(e: altclip_index::Error) -> anyhow::Error {
    match &e {
        altclip_index::Error::ModelMismatch { indexed, .. } => {
            anyhow::anyhow!("{e}; use --model {indexed}, or index into another --db")
        }
        _ => e.into(),
    }
}

fn model_info(clip: &altclip::AltClip, name: &str, settings: &ModelSettings) -> Result<ModelInfo> {
    Ok(ModelInfo::describe(
        clip,
        name,
        settings.revision.as_deref(),
    )?)
}

pub fn index(args: IndexArgs) -> Result<ExitCode> {
    let db_path = match (&args.target.db, args.paths.first()) {
        (Some(db), _) => db.clone(),
        (None, Some(root)) => root.join(DB_NAME),
        (None, None) => find_db(&None)?,
    };
    if args.errors {
        return print_errors(&db_path, args.json);
    }
    for p in &args.paths {
        anyhow::ensure!(p.is_dir(), "{}: not a directory", p.display());
    }
    let mut db = Index::open(&db_path)?;
    let name = model_for(&db, &args.target.model)?;
    let clip = load_model(&args.target.settings, &name)?;
    let info = model_info(&clip, &name, &args.target.settings)?;
    let dtype = if args.vector_dtype == "f32" {
        VectorDtype::F32
    } else {
        VectorDtype::F16
    };
    if let Some(t) = args.ann_threshold {
        db.set_setting(ANN_THRESHOLD, &t.to_string())?;
    }
    let mut store = open_store(&args.target.store, &db, dtype, info.dim, false)?;
    let opts = Options {
        roots: args.paths.clone(),
        exclude_dirs: args.exclude_dir.clone(),
        prune: args.prune,
        batch_size: args.batch_size as usize,
        max_pixels: args.target.images.max_pixels,
        max_file_bytes: args.max_file_size,
        retry_errors: args.retry_errors,
        video: (!args.no_videos).then_some(Sampling {
            interval: args.video_interval,
            max_frames: args.video_max_frames as usize,
        }),
    };
    // Watching starts first, so that nothing changed during the first run is missed.
    let watcher = if args.watch {
        anyhow::ensure!(
            args.watch_delay.is_finite() && args.watch_delay >= 0.0,
            "--watch-delay {}: expected seconds, e.g. 2",
            args.watch_delay
        );
        let own = ["", "-wal", "-shm", ".hnsw"]
            .map(|suffix| PathBuf::from(format!("{}{suffix}", absolute(&db_path).display())));
        let roots: Vec<PathBuf> = args.paths.iter().map(|p| absolute(p)).collect();
        Some(altclip_index::watch::Watcher::new(&roots, own.to_vec())?)
    } else {
        None
    };
    let mut run = |opts: &Options| -> Result<()> {
        let bar = progress(0, "indexing");
        let report = indexer::run(
            &clip,
            &info,
            &mut db,
            store.as_mut(),
            opts,
            &mut |done, total| track(&bar, done, total),
        )
        .map_err(advise)?;
        bar.finish_and_clear();
        let bar = progress(0, "search graph");
        store.finish(&mut |done, total| track(&bar, done, total))?;
        bar.finish_and_clear();
        if args.json {
            println!("{}", serde_json::to_string(&report)?);
        } else {
            print_report(&db_path, &report)?;
        }
        Ok(())
    };
    run(&opts)?;
    let Some(watcher) = watcher else {
        return Ok(ExitCode::SUCCESS);
    };
    if !args.json {
        eprintln!(
            "watching {} for changes (Ctrl-C stops)",
            args.paths
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    let delay = std::time::Duration::from_secs_f64(args.watch_delay);
    let watching = Options {
        prune: true,
        ..opts
    };
    while watcher.next_batch(delay)?.is_some() {
        run(&watching)?;
    }
    Ok(ExitCode::SUCCESS)
}

fn positive_seconds(s: &str) -> std::result::Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 => Ok(v),
        _ => Err(format!(
            "{s:?}: expected a positive number of seconds, e.g. 2"
        )),
    }
}

/// `altclip index --errors`: the files the index could not take, and why.
fn print_errors(db_path: &Path, json: bool) -> Result<ExitCode> {
    anyhow::ensure!(
        db_path.is_file(),
        "{}: no such index database; build it with `altclip index DIR`",
        db_path.display()
    );
    let db = Index::open(db_path)?;
    let errors = db.errors()?;
    let mut out = std::io::stdout().lock();
    for e in &errors {
        if json {
            print_json_line(&mut out, e)?;
        } else {
            writeln!(out, "{}\t{}", e.path, e.reason)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The human summary of an indexing run, with the next command to run.
fn print_report(db_path: &Path, report: &indexer::Report) -> Result<()> {
    println!(
        "{}: {} files found, {} embedded{}, {} reused (renamed {}), {} unchanged, {} failed, {} removed, {} missing",
        db_path.display(),
        report.found,
        report.embedded,
        if report.frames > 0 {
            format!(" ({} video frames)", report.frames)
        } else {
            String::new()
        },
        report.reused,
        report.renamed,
        report.unchanged,
        report.failed + report.known_errors,
        report.removed,
        report.missing
    );
    let t = &report.time;
    if t.wall_ms > 0 {
        let share = |ms: u64| 100.0 * ms as f64 / t.wall_ms as f64;
        println!(
            "time: {:.1} s; the model {:.1} s ({:.0}%), waiting for decoded images {:.1} s ({:.0}%); \
             reading and decoding took {:.1} s on worker threads, alongside the model",
            t.wall_ms as f64 / 1e3,
            t.model_ms as f64 / 1e3,
            share(t.model_ms),
            t.waited_ms as f64 / 1e3,
            share(t.waited_ms),
            t.decode_ms as f64 / 1e3,
        );
    }
    if let Some((_, c)) = altclip_index::ann::status(db_path)? {
        println!(
            "search graph: recall@10 {:.3} at ef {}, {:.1} ms per query vs {:.1} ms for the \
             exact scan: searches {}",
            c.recall,
            c.ef,
            c.graph_ms,
            c.scan_ms,
            if c.graph_is_faster() {
                "use the graph"
            } else {
                "scan (faster here)"
            }
        );
    }
    if report.described > 0 {
        println!(
            "{} files indexed before dates, cameras and places were recorded were read again for them",
            report.described
        );
    }
    if report.live_photo_videos > 0 {
        println!(
            "Live Photo videos left to their stills (IMG_1.MOV beside IMG_1.HEIC): {}",
            report.live_photo_videos
        );
    }
    if report.failed + report.known_errors > 0 {
        println!(
            "see the failures with: altclip index --errors --db {}",
            db_path.display()
        );
    }
    if report.missing > 0 {
        println!(
            "{} indexed files are gone; --prune forgets them",
            report.missing
        );
    }
    Ok(())
}

/// Search an index with text, an image, or a weighted mix.
///
/// QUERY words are text in any language the model knows (quote multi-word
/// texts), an image path for image-to-image search, or a mix joined by + and
/// -, each term optionally weighted with W: — e.g. "2:一只猫" + ./beach.jpg - "雪".
/// Prints `score<TAB>path` per line, best first.
#[derive(clap::Args, Debug)]
#[command(
    after_help = "Examples:\n  altclip search \"海边的日落\"\n  altclip search \"a cat on the grass\" --top 20\n  \
                        altclip search \"2:一只猫\" + ./beach.jpg - \"雪\" -f | xargs open"
)]
pub struct SearchArgs {
    /// The query (see above).
    #[arg(required = true)]
    query: Vec<String>,
    #[command(flatten)]
    target: Target,
    /// How many results.
    #[arg(long, short = 'n', default_value_t = 10)]
    top: usize,
    /// Print only paths, for piping.
    #[arg(short = 'f', long = "files-only")]
    files_only: bool,
    /// Print JSON Lines `{"path":...,"score":...}`.
    #[arg(long)]
    json: bool,
    /// Scan every vector even when the index has an HNSW search graph
    /// (slower on large libraries, never misses).
    #[arg(long)]
    exact: bool,
    #[command(flatten)]
    filters: FilterArgs,
}

/// Filters and order for search results; they pick the candidates before
/// the top --top are chosen.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct FilterArgs {
    /// Only photos taken on or after this date or time (YYYY, YYYY-MM, YYYY-MM-DD or
    /// YYYY-MM-DDTHH:MM): EXIF's date taken, else the file's modification time.
    #[arg(long, value_name = "DATE", help_heading = "Filters")]
    after: Option<String>,
    /// Only photos taken before this date or time (same forms; `--before 2024` ends with 2023).
    #[arg(long, value_name = "DATE", help_heading = "Filters")]
    before: Option<String>,
    /// Only photos whose camera make or model contains TEXT (e.g. "iPhone", "Canon").
    #[arg(long, value_name = "TEXT", help_heading = "Filters")]
    camera: Option<String>,
    /// Only files whose absolute path matches GLOB (* ? [...], case-sensitive), e.g. '*/2023/*'.
    #[arg(long = "path", value_name = "GLOB", help_heading = "Filters")]
    path_glob: Option<String>,
    /// Only photos with a GPS position within KM kilometres of LAT,LON (e.g. 31.23,121.47,5).
    #[arg(
        long,
        value_name = "LAT,LON,KM",
        allow_hyphen_values = true,
        help_heading = "Filters"
    )]
    near: Option<String>,
    /// Only this kind of file.
    #[arg(long, value_parser = ["photo", "video"], help_heading = "Filters")]
    kind: Option<String>,
    /// Drop results scoring below S (cosine; try 0.2 for text queries on BAAI/AltCLIP).
    #[arg(
        long,
        value_name = "S",
        allow_hyphen_values = true,
        help_heading = "Filters"
    )]
    min_score: Option<f32>,
    /// Order: best match first, or newest first among the matches at or above --min-score
    /// (among the --top best, without it).
    #[arg(long, default_value = "score", value_parser = ["score", "date"], help_heading = "Filters")]
    sort: String,
}

impl FilterArgs {
    /// The search these flags ask for, returning `top` results.
    pub(crate) fn search(&self, top: usize) -> Result<filter::Search> {
        let date = |flag: &str, v: &Option<String>| -> Result<Option<String>> {
            v.as_deref()
                .map(|d| filter::parse_date(d).with_context(|| format!("--{flag}")))
                .transpose()
        };
        if let Some(s) = self.min_score {
            anyhow::ensure!(
                s.is_finite(),
                "--min-score {s}: expected a number such as 0.2"
            );
        }
        Ok(filter::Search {
            top,
            filter: filter::Filter {
                after: date("after", &self.after)?,
                before: date("before", &self.before)?,
                camera: self.camera.clone(),
                path: self.path_glob.clone(),
                near: self
                    .near
                    .as_deref()
                    .map(|n| filter::parse_near(n).context("--near"))
                    .transpose()?,
                kind: self.kind.clone(),
            },
            min_score: self.min_score,
            sort: if self.sort == "date" {
                filter::Sort::Date
            } else {
                filter::Sort::Score
            },
        })
    }
}

/// Opens an index for reading with a model it was built with.
fn open_for_query(
    db: &Option<PathBuf>,
    model: &Option<String>,
    settings: &ModelSettings,
    towers: Towers,
) -> Result<(Index, altclip::AltClip)> {
    let db_path = find_db(db)?;
    let index = Index::open(&db_path)?;
    let name = model_for(&index, model)?;
    let clip = load_towers(settings, &name, towers)?;
    let info = model_info(&clip, &name, settings)?;
    index.check_model(&info).map_err(advise)?;
    Ok((index, clip))
}

pub fn search(args: SearchArgs) -> Result<ExitCode> {
    let search = args.filters.search(args.top)?;
    let parts = query::parse(&args.query)?;
    // A text-only query loads only the text tower: most of a query's time
    // is loading the model.
    let towers = match parts
        .iter()
        .any(|p| matches!(p.term, query::Term::Image(_)))
    {
        true => Towers::Both,
        false => Towers::Text,
    };
    let t = &args.target;
    let (index, clip) = open_for_query(&t.db, &t.model, &t.settings, towers)?;
    let q = query::embed(&clip, &parts, args.target.images.max_pixels)?;
    let store = open_store(
        &args.target.store,
        &index,
        VectorDtype::F16,
        q.len(),
        args.exact,
    )?;
    let mut out = std::io::stdout().lock();
    let by_date = search.sort == filter::Sort::Date;
    for hit in filter::search(&*store, &index, &q, &search)? {
        if args.json {
            print_json_line(&mut out, &hit)?;
        } else if args.files_only {
            writeln!(out, "{}", hit.path)?;
        } else {
            let at = hit.at.map_or(String::new(), |s| {
                format!(" @ {}", altclip_index::video::clock((s * 1000.0) as u64))
            });
            if by_date {
                let taken = hit.media.as_ref().map_or("-", |m| m.taken.as_str());
                writeln!(out, "{:.4}\t{taken}\t{}{at}", hit.score, hit.path)?;
            } else {
                writeln!(out, "{:.4}\t{}{at}", hit.score, hit.path)?;
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// List groups of duplicate files in an index.
///
/// Three kinds of group, each with the file to keep (the most pixels, then
/// the earliest date):
///   identical  byte-identical files;
///   duplicate  one picture stored as different files (resized, re-encoded,
///              re-exported): embeddings at least --threshold alike AND
///              difference hashes at most --max-distance bits apart, and not
///              two different EXIF times; videos of the same length whose
///              sampled frames are all alike;
///   burst      (with --bursts) shots of one scene a moment apart: the same
///              picture by hash, but different EXIF times.
/// Photos that are only alike (two shots of one beach) are never grouped.
///
/// Large libraries page: --page-size groups per page, --page picks one.
///
/// Examples:
///   altclip dedup
///   altclip dedup --bursts --json --page 2 > page2.json
#[derive(clap::Args, Debug)]
#[command(verbatim_doc_comment)]
pub struct DedupArgs {
    /// Index database (default: .altclip/index.db here or in a parent directory).
    #[arg(long, env = "ALTCLIP_DB")]
    db: Option<PathBuf>,
    /// Vector store, when it differs from what the index recorded.
    #[arg(long, env = "ALTCLIP_STORE")]
    store: Option<String>,
    /// Cosine similarity of the embeddings at or above which two files are compared further.
    #[arg(long, default_value_t = 0.95, value_parser = parse_unit_interval, allow_negative_numbers = true)]
    threshold: f32,
    /// Most differing bits (of 64) between two photos' difference hashes for one picture.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(0..=64))]
    max_distance: u32,
    /// Also list bursts: the same picture taken at different EXIF times.
    #[arg(long)]
    bursts: bool,
    /// Groups per page.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..))]
    page_size: u64,
    /// Which page to print, from 1.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
    page: u64,
    /// Print the page as one JSON document: {"groups": [...], "total", "page", "pages", "page_size"}.
    #[arg(long)]
    json: bool,
}

fn parse_unit_interval(s: &str) -> std::result::Result<f32, String> {
    match s.parse::<f32>() {
        Ok(v) if (-1.0..=1.0).contains(&v) => Ok(v),
        Ok(v) => Err(format!("{v} is not a cosine similarity (from -1 to 1)")),
        Err(e) => Err(format!("{s:?} is not a number: {e}")),
    }
}

pub fn dedup(args: DedupArgs) -> Result<ExitCode> {
    let db_path = find_db(&args.db)?;
    let index = Index::open(&db_path)?;
    let dim = index.model()?.map_or(0, |m| m.dim);
    let store = open_store(&args.store, &index, VectorDtype::F16, dim, true)?;
    let vectors = store.all()?;
    let paths_by_hash = index.paths_by_hash()?;
    let all_paths: Vec<String> = paths_by_hash.values().flatten().cloned().collect();
    let library = dedup::Library {
        vectors: &vectors,
        paths_by_hash: &paths_by_hash,
        frames: &index.frames()?,
        media: &index.media_of(&all_paths)?,
    };
    let options = dedup::Options {
        threshold: args.threshold,
        max_distance: args.max_distance,
        bursts: args.bursts,
    };
    let picture_hash = |path: &str| {
        altclip::preprocess::open_rgb(Path::new(path), altclip::preprocess::DEFAULT_MAX_PIXELS)
            .ok()
            .map(|img| dedup::dhash(&img))
    };
    let bar = progress(0, "comparing");
    let groups = dedup::groups(&library, &options, &picture_hash, &|done, total| {
        track(&bar, done, total)
    })?;
    bar.finish_and_clear();

    let total = groups.len() as u64;
    let pages = total.div_ceil(args.page_size).max(1);
    let first = (args.page - 1).saturating_mul(args.page_size);
    let page: Vec<&dedup::Group> = groups
        .iter()
        .skip(first.min(total) as usize)
        .take(args.page_size as usize)
        .collect();
    if args.page > pages {
        anyhow::bail!(
            "--page {} is past the last page: {total} groups make {pages} pages of {}",
            args.page,
            args.page_size
        );
    }
    let mut out = std::io::stdout().lock();
    if args.json {
        print_json_line(
            &mut out,
            &serde_json::json!({
                "groups": page,
                "total": total,
                "page": args.page,
                "pages": pages,
                "page_size": args.page_size,
            }),
        )?;
    } else {
        for group in &page {
            print_group(&mut out, group)?;
        }
    }
    if pages > 1 {
        eprintln!(
            "page {} of {pages} ({total} groups){}",
            args.page,
            if args.page < pages {
                format!(": the next is --page {}", args.page + 1)
            } else {
                String::new()
            }
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// One group as text: its kind and size, then a line per file.
fn print_group(out: &mut impl Write, group: &dedup::Group) -> Result<()> {
    let kind = match group.kind {
        dedup::Kind::Identical => "identical",
        dedup::Kind::Duplicate => "duplicate",
        dedup::Kind::Burst => "burst",
    };
    writeln!(
        out,
        "{kind}: {} files, keep {}",
        group.members.len(),
        group.keep
    )?;
    for m in &group.members {
        let mut line = format!("  {}", m.path);
        if let (Some(w), Some(h)) = (m.width, m.height) {
            line.push_str(&format!("  {w}x{h}"));
        }
        if let Some(t) = &m.taken {
            line.push_str(&format!("  {t}"));
        }
        if m.path != group.keep {
            line.push_str(&format!("  similarity {:.4}", m.similarity));
            if let Some(d) = m.distance {
                line.push_str(&format!(", {d} bits apart"));
            }
        }
        writeln!(out, "{line}")?;
    }
    writeln!(out)?;
    Ok(())
}
