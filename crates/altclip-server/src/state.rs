//! What every handler shares: the model behind its batcher, the decode pool,
//! the optional library index, limits, metrics and small caches.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use altclip::cache::model_key;
use altclip::zeroshot::{Templates, ZeroShotClassifier};
use altclip::AltClip;
use altclip_index::{Index, ModelInfo};
use tokio::sync::Semaphore;

use crate::args::{Limits, ServeArgs};
use crate::batching::Batcher;
use crate::error::ApiError;
use crate::inputs::{
    check_count, check_text, image_source, load_image, ImageSource, Item, Workers,
};
use crate::library::{Library, StoreOpener};
use crate::metrics::Metrics;

/// Why the server could not start; each names the flag or file at fault.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("pass --model (a directory or a Hub id such as BAAI/AltCLIP), or --db with an index that records its model")]
    NoModel,
    #[error("loading model `{model}`: {source}")]
    Model {
        model: String,
        #[source]
        source: altclip::Error,
    },
    #[error("--db {db}: {reason}")]
    Index { db: PathBuf, reason: String },
    #[error(
        "--db {db} was built with model `{indexed}` but the server loads `{requested}`; \
         embeddings of different models are not comparable. Use --model {indexed}"
    )]
    ModelMismatch {
        db: PathBuf,
        indexed: String,
        requested: String,
    },
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("server: {0}")]
    Io(#[from] std::io::Error),
}

/// Classifiers for label sets seen recently, keyed by labels and templates.
type ClassifierKey = (Vec<String>, Vec<String>);
const CLASSIFIER_CACHE: usize = 64;
/// Most prompts (labels × templates) one classification may embed.
pub const MAX_PROMPTS: usize = 1024;
const THUMB_CACHE: usize = 1024;

/// The state behind every route.
pub struct AppState {
    pub clip: Arc<AltClip>,
    pub batcher: Batcher,
    pub workers: Workers,
    pub metrics: Arc<Metrics>,
    pub limits: Limits,
    /// Name reported as `model` in responses.
    pub model_name: String,
    pub api_key: Option<String>,
    /// One permit per request in flight (`--max-concurrent-requests`).
    pub permits: Arc<Semaphore>,
    /// One permit per body byte held in memory (`--max-body-bytes`).
    pub body_bytes: Arc<Semaphore>,
    pub library: Option<Library>,
    classifiers: Mutex<HashMap<ClassifierKey, Arc<ZeroShotClassifier>>>,
    thumbs: Mutex<HashMap<String, Arc<Vec<u8>>>>,
}

/// Embeddings of a mixed list, in input order.
#[derive(Debug, Clone)]
pub struct Embedded {
    pub vectors: Vec<Vec<f32>>,
    /// Text tokens seen by the model, special tokens included.
    pub tokens: usize,
    pub images: usize,
    /// Per input: the image's (width, height), None for texts.
    pub sizes: Vec<Option<(u32, u32)>>,
}

impl AppState {
    /// Loads the model (and the index, with `opener` for its vector store)
    /// and starts the model thread. Blocking: call it off the async runtime.
    pub fn load(args: &ServeArgs, opener: StoreOpener) -> Result<Self, StartError> {
        let index_model = match &args.db {
            Some(db) if db.is_file() => {
                Index::open(db)
                    .and_then(|i| i.model())
                    .map_err(|e| StartError::Index {
                        db: db.clone(),
                        reason: e.to_string(),
                    })?
            }
            _ => None,
        };
        let model = args
            .model
            .clone()
            .or_else(|| index_model.as_ref().map(|m| m.name.clone()))
            .ok_or(StartError::NoModel)?;
        let start = std::time::Instant::now();
        let clip =
            AltClip::load(&model, &args.load_options()).map_err(|source| StartError::Model {
                model: model.clone(),
                source,
            })?;
        tracing::info!(
            "loaded {} in {:.2}s",
            clip.files().dir.display(),
            start.elapsed().as_secs_f64()
        );
        let library = match &args.db {
            None => None,
            Some(db) => {
                if db.is_file() {
                    let key = model_key(&clip).map_err(|source| StartError::Model {
                        model: model.clone(),
                        source,
                    })?;
                    let served = ModelInfo {
                        name: model.clone(),
                        revision: args.settings.revision.clone(),
                        key,
                        dim: clip.embedding_dim(),
                    };
                    let index_error = |e: altclip_index::Error| match e {
                        altclip_index::Error::ModelMismatch { indexed, .. } => {
                            StartError::ModelMismatch {
                                db: db.clone(),
                                indexed,
                                requested: model.clone(),
                            }
                        }
                        e => StartError::Index {
                            db: db.clone(),
                            reason: e.to_string(),
                        },
                    };
                    Index::open(db)
                        .and_then(|i| i.check_model(&served))
                        .map_err(index_error)?;
                }
                let lib = Library::open(db, clip.embedding_dim(), opener).map_err(|reason| {
                    StartError::Index {
                        db: db.clone(),
                        reason,
                    }
                })?;
                Some(lib)
            }
        };
        let metrics = Arc::new(Metrics::default());
        let clip = Arc::new(clip);
        let workers = args
            .decode_workers
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()));
        let limits = args.limits();
        Ok(Self {
            batcher: Batcher::start(clip.clone(), args.batching(), metrics.clone()),
            workers: Workers::new(workers),
            model_name: args.served_model_name.clone().unwrap_or(model),
            api_key: args.api_key.clone(),
            permits: Arc::new(Semaphore::new(limits.max_concurrent_requests)),
            body_bytes: Arc::new(Semaphore::new(limits.max_body_bytes)),
            limits,
            metrics,
            clip,
            library,
            classifiers: Mutex::default(),
            thumbs: Mutex::default(),
        })
    }

    /// Embeds a mixed list of items; `field` names the list in errors and
    /// item `i` is `field[i]`. Texts are tokenized and images decoded on the
    /// worker pool; both towers' queues are fed concurrently.
    pub async fn embed(&self, items: Vec<Item>, field: &str) -> Result<Embedded, ApiError> {
        check_count(items.len(), field, &self.limits)?;
        let mut texts = Vec::new();
        let mut images = Vec::new();
        let mut sizes = vec![None; items.len()];
        for (i, item) in items.into_iter().enumerate() {
            let name = format!("{field}[{i}]");
            match item {
                Item::Text(t) => {
                    check_text(&t, &name, &self.limits)?;
                    texts.push((i, t));
                }
                Item::Image(r) => images.push((i, image_source(&r, &name, &self.limits)?, name)),
            }
        }
        self.embed_sources(texts, images, &mut sizes)
            .await
            .map(|(vectors, tokens, n_images)| Embedded {
                vectors,
                tokens,
                images: n_images,
                sizes,
            })
    }

    /// Embeds already-classified inputs: `(position, text)` and
    /// `(position, source, field name)`.
    pub async fn embed_sources(
        &self,
        texts: Vec<(usize, String)>,
        images: Vec<(usize, ImageSource, String)>,
        sizes: &mut [Option<(u32, u32)>],
    ) -> Result<(Vec<Vec<f32>>, usize, usize), ApiError> {
        let total = texts.len() + images.len();
        let text_positions: Vec<usize> = texts.iter().map(|(i, _)| *i).collect();
        let text_job = async {
            if texts.is_empty() {
                return Ok((Vec::new(), 0));
            }
            let clip = self.clip.clone();
            let ids = self
                .workers
                .spawn(move || {
                    let refs: Vec<&str> = texts.iter().map(|(_, t)| t.as_str()).collect();
                    clip.tokenize(&refs)
                })
                .await?
                .map_err(|e| ApiError::bad("input", e.to_string()))?;
            let tokens = ids.iter().map(Vec::len).sum::<usize>();
            Ok::<_, ApiError>((self.batcher.embed_tokens(ids).await?, tokens))
        };
        let image_positions: Vec<usize> = images.iter().map(|(i, _, _)| *i).collect();
        let n_images = images.len();
        let image_job = async {
            let jobs: Vec<_> = images
                .into_iter()
                .map(|(_, source, name)| {
                    let clip = self.clip.clone();
                    let limits = self.limits.clone();
                    self.workers
                        .spawn(move || load_image(source, &name, &clip, &limits))
                })
                .collect();
            let mut decoded = Vec::with_capacity(jobs.len());
            for job in jobs {
                decoded.push(job.await??);
            }
            let dims: Vec<(u32, u32)> = decoded.iter().map(|d| (d.width, d.height)).collect();
            let pixels = decoded.into_iter().map(|d| d.pixels).collect();
            let vectors = if n_images == 0 {
                Vec::new()
            } else {
                self.batcher.embed_pixels(pixels).await?
            };
            Ok::<_, ApiError>((vectors, dims))
        };
        let (text_out, image_out) = tokio::join!(text_job, image_job);
        let ((text_vectors, tokens), (image_vectors, dims)) = (text_out?, image_out?);
        let mut out = vec![Vec::new(); total];
        for (pos, v) in text_positions.into_iter().zip(text_vectors) {
            out[pos] = v;
        }
        for ((pos, v), d) in image_positions.into_iter().zip(image_vectors).zip(dims) {
            out[pos] = v;
            sizes[pos] = Some(d);
        }
        Ok((out, tokens, n_images))
    }

    /// A zero-shot classifier for `labels` with `templates`, cached. The
    /// prompts go through the text batcher like any other texts.
    pub async fn classifier(
        &self,
        labels: Vec<String>,
        templates: Templates,
    ) -> Result<Arc<ZeroShotClassifier>, ApiError> {
        let key_templates = match &templates {
            Templates::Auto => vec!["auto".to_string()],
            Templates::List(list) => list.clone(),
        };
        let key = (labels.clone(), key_templates);
        if let Some(c) = self.lock_classifiers().get(&key) {
            return Ok(c.clone());
        }
        let prompts = ZeroShotClassifier::prompts(&labels, &templates);
        let total: usize = prompts.iter().map(Vec::len).sum();
        if total > MAX_PROMPTS {
            return Err(ApiError::bad(
                "labels",
                format!(
                    "{} labels with their templates make {total} prompts, over this server's \
                     limit of {MAX_PROMPTS}; send fewer labels or templates",
                    labels.len()
                ),
            ));
        }
        let texts: Vec<(usize, String)> = prompts.iter().flatten().cloned().enumerate().collect();
        let mut sizes = vec![None; total];
        let (rows, _, _) = self.embed_sources(texts, Vec::new(), &mut sizes).await?;
        let built = ZeroShotClassifier::from_prompt_embeddings(
            &labels,
            &prompts,
            rows,
            self.clip.logit_scale(),
        )
        .map_err(|e| ApiError::bad("labels", e.to_string()))?;
        let built = Arc::new(built);
        let mut cache = self.lock_classifiers();
        if cache.len() >= CLASSIFIER_CACHE {
            cache.clear();
        }
        cache.insert(key, built.clone());
        Ok(built)
    }

    fn lock_classifiers(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<ClassifierKey, Arc<ZeroShotClassifier>>> {
        self.classifiers.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The JPEG thumbnail of indexed content `id`, cached.
    pub async fn thumbnail(&self, id: String) -> Result<Arc<Vec<u8>>, ApiError> {
        let library = self.library.as_ref().ok_or_else(no_index)?;
        if let Some(t) = self.lock_thumbs().get(&id) {
            return Ok(t.clone());
        }
        let path = library
            .path_of(id.clone())
            .await?
            .ok_or_else(|| ApiError::NotFound(format!("no indexed image has id {id}")))?;
        let max_pixels = self.limits.max_pixels;
        let jpeg = self
            .workers
            .spawn(move || crate::library::thumbnail(&path, max_pixels))
            .await?
            .map_err(ApiError::NotFound)?;
        let jpeg = Arc::new(jpeg);
        let mut cache = self.lock_thumbs();
        if cache.len() >= THUMB_CACHE {
            cache.clear();
        }
        cache.insert(id, jpeg.clone());
        Ok(jpeg)
    }

    fn lock_thumbs(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Vec<u8>>>> {
        self.thumbs.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Stops the model thread after the queued work.
    pub fn shutdown(&self) {
        self.batcher.shutdown();
    }
}

/// The error of index routes on a server started without --db.
pub fn no_index() -> ApiError {
    ApiError::Unavailable(
        "this server has no index: start it with --db FILE (built by `altclip index DIR`)".into(),
    )
}
