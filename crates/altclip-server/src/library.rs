//! The photo-library index of `altclip index`, served: nearest-neighbour
//! search in its vector store and thumbnails of its files.
//!
//! The manifest and the store are not `Sync` (SQLite connections, a Milvus
//! client with its own runtime), so one thread owns them and runs the jobs
//! that handlers send it.

use std::path::{Path, PathBuf};
use std::sync::mpsc;

use altclip_index::filter::{self, Catalog, Search};
use altclip_index::{Index, Media, SqliteVectors, VectorDtype, VectorStore};
use tokio::sync::oneshot;

use crate::error::ApiError;

/// Opens the vector store of an index, given the index and the embedding width.
pub type StoreOpener =
    Box<dyn FnOnce(&Index, usize) -> Result<Box<dyn VectorStore>, String> + Send>;

/// The default opener: vectors kept in the index database itself.
pub fn sqlite_store() -> StoreOpener {
    Box::new(|index: &Index, _dim| {
        match index.setting("store").map_err(|e| e.to_string())? {
            None => {}
            Some(s) if s == "sqlite" => {}
            Some(other) => {
                return Err(format!(
                    "{} keeps its vectors in {other}; this build of the server only reads \
                     vectors kept in the index database",
                    index.path().display()
                ))
            }
        }
        let store =
            SqliteVectors::open(index.path(), VectorDtype::F16).map_err(|e| e.to_string())?;
        Ok(Box::new(store) as Box<dyn VectorStore>)
    })
}

/// One search result: a content hash with the files that hold it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Hit {
    /// Content hash; also the thumbnail id (`/thumb/{id}`).
    pub id: String,
    pub score: f32,
    /// First path holding this content.
    pub path: String,
    /// Every indexed path with this content (duplicates) that passed the filters.
    pub paths: Vec<String>,
    /// The first path's metadata, when it was recorded.
    pub media: Option<Media>,
    /// For a video, the time (seconds) of its best-matching frame.
    pub at: Option<f64>,
}

/// Per-file hits as per-content results, in order.
fn group(hits: Vec<filter::Hit>) -> Vec<Hit> {
    let mut out: Vec<Hit> = Vec::new();
    for h in hits {
        match out.iter_mut().find(|r| r.id == h.hash) {
            Some(r) => r.paths.push(h.path),
            None => out.push(Hit {
                id: h.hash,
                score: h.score,
                path: h.path.clone(),
                paths: vec![h.path],
                media: h.media,
                at: h.at,
            }),
        }
    }
    out
}

struct State {
    index: Index,
    store: Box<dyn VectorStore>,
    /// Content hash → paths and the videos' frames, re-read when an indexer
    /// has committed since (`altclip index --watch` beside the server).
    catalog: Catalog,
    /// The manifest's `data_version` when `catalog` was read.
    version: i64,
}

impl State {
    /// Re-reads the catalog if an indexer committed since.
    fn sync(&mut self) -> Result<(), ApiError> {
        let internal = |e: altclip_index::Error| ApiError::Internal(e.to_string());
        let version = self.index.data_version().map_err(internal)?;
        if version != self.version {
            self.catalog = Catalog::read(&self.index).map_err(internal)?;
            self.version = version;
        }
        Ok(())
    }
}

type Job = Box<dyn FnOnce(&mut State) + Send>;

/// A handle on the library thread.
pub struct Library {
    jobs: std::sync::Mutex<mpsc::Sender<Job>>,
    db: PathBuf,
    files: usize,
}

impl Library {
    /// Opens `db` (which must exist) and its vector store on a new thread.
    pub fn open(db: &Path, dim: usize, opener: StoreOpener) -> Result<Self, String> {
        if !db.is_file() {
            return Err(format!(
                "{}: no such index database; build it with `altclip index DIR`",
                db.display()
            ));
        }
        let (tx, rx) = mpsc::channel::<Job>();
        let (ready_tx, ready_rx) = mpsc::channel::<Result<usize, String>>();
        let path = db.to_path_buf();
        std::thread::Builder::new()
            .name("altclip-library".into())
            .spawn(move || {
                let opened = (|| {
                    let index = Index::open(&path).map_err(|e| e.to_string())?;
                    let store = opener(&index, dim)?;
                    let version = index.data_version().map_err(|e| e.to_string())?;
                    let catalog = Catalog::read(&index).map_err(|e| e.to_string())?;
                    Ok(State {
                        index,
                        store,
                        catalog,
                        version,
                    })
                })();
                let mut state = match opened {
                    Ok(s) => {
                        let _ = ready_tx.send(Ok(s.catalog.files()));
                        s
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                while let Ok(job) = rx.recv() {
                    job(&mut state);
                }
            })
            .map_err(|e| format!("cannot start the library thread: {e}"))?;
        let files = ready_rx
            .recv()
            .map_err(|_| "the library thread stopped while opening the index".to_string())??;
        Ok(Self {
            jobs: std::sync::Mutex::new(tx),
            db: db.to_path_buf(),
            files,
        })
    }

    /// The index database.
    pub fn db(&self) -> &Path {
        &self.db
    }

    /// Indexed files when the server started.
    pub fn files(&self) -> usize {
        self.files
    }

    async fn call<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut State) -> T + Send + 'static,
    ) -> Result<T, ApiError> {
        let (tx, rx) = oneshot::channel();
        self.jobs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .send(Box::new(move |s: &mut State| {
                let _ = tx.send(f(s));
            }))
            .map_err(|_| ApiError::Internal("the library thread stopped".into()))?;
        rx.await
            .map_err(|_| ApiError::Internal("the library thread stopped".into()))
    }

    /// The best indexed images for a normalised query vector under
    /// `search` (its `top`, filters, cutoff and order), best first.
    pub async fn search(&self, query: Vec<f32>, search: Search) -> Result<Vec<Hit>, ApiError> {
        self.call(move |s| {
            let internal = |e: altclip_index::Error| ApiError::Internal(e.to_string());
            s.sync()?;
            let hits = filter::search_in(&*s.store, &s.index, &s.catalog, &query, &search)
                .map_err(internal)?;
            Ok(group(hits))
        })
        .await?
    }

    /// A file holding the content `id`, if it is indexed.
    pub async fn path_of(&self, id: String) -> Result<Option<PathBuf>, ApiError> {
        self.call(move |s| {
            s.sync()?;
            Ok(s.catalog
                .paths
                .get(&id)
                .and_then(|p| p.iter().find(|p| Path::new(p).is_file()))
                .map(PathBuf::from))
        })
        .await?
    }
}

/// Longest side of a thumbnail, in pixels.
pub const THUMB_SIZE: u32 = 256;

/// A JPEG thumbnail of the image file at `path`.
pub fn thumbnail(path: &Path, max_pixels: u64) -> Result<Vec<u8>, String> {
    let limit = altclip::preprocess::max_file_bytes(max_pixels);
    let bytes = if altclip_index::video::is_video_name(path) {
        // A video's first frame.
        altclip_index::video::tools()?;
        altclip_index::video::frame_png(path, 0)?
    } else {
        altclip::preprocess::read_image_file(path, limit).map_err(|e| e.to_string())?
    };
    let img = altclip::preprocess::decode_rgb(&bytes, &path.display().to_string(), max_pixels)
        .map_err(|e| e.to_string())?;
    let (w, h) = img.dimensions();
    let scale = (THUMB_SIZE as f64 / w.max(h) as f64).min(1.0);
    let (tw, th) = (
        ((w as f64 * scale).round() as u32).max(1),
        ((h as f64 * scale).round() as u32).max(1),
    );
    let small = image::imageops::thumbnail(&img, tw, th);
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 85)
        .encode_image(&small)
        .map_err(|e| format!("cannot encode the thumbnail of {}: {e}", path.display()))?;
    Ok(out)
}
