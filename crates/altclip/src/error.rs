//! The engine's error type. Every variant names the file, tensor or input at
//! fault, and where there is an obvious fix the message suggests it.

use std::path::PathBuf;

/// Result alias used throughout the engine.
pub type Result<T> = std::result::Result<T, Error>;

/// Everything that can go wrong while loading or running a model.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// A Hub id was given but the files are neither cached nor downloadable.
    #[error(
        "model `{id}` is not in the local Hugging Face cache ({cache}) and could not be downloaded: {reason}\n\
         To fix: run once with network access, or download it with \
         `huggingface-cli download {id}` (set HF_HOME/HF_HUB_CACHE if your cache lives elsewhere), \
         or pass a local directory that holds config.json and the weights"
    )]
    ModelNotFound {
        id: String,
        cache: PathBuf,
        reason: String,
    },

    /// A model directory lacks a file the engine needs.
    #[error("{dir} has no {what}; expected {expected}")]
    MissingFile {
        dir: PathBuf,
        what: &'static str,
        expected: String,
    },

    /// A JSON file (config, preprocessor config, shard index) is malformed.
    #[error("{path} is not a valid {what}: {reason}")]
    BadJson {
        path: PathBuf,
        what: &'static str,
        reason: String,
    },

    /// A configuration value that the engine cannot honour.
    #[error("{path}: {reason}")]
    BadConfig { path: PathBuf, reason: String },

    /// A tensor the model needs is absent from the checkpoint.
    #[error(
        "tensor `{name}` is missing from {source_desc}; the checkpoint does not belong to this \
         architecture or was saved with other key names"
    )]
    MissingTensor { name: String, source_desc: String },

    /// A tensor has a different shape from what config.json implies.
    #[error(
        "tensor `{name}` in {source_desc} has shape {found:?}, but config.json implies {expected:?}; \
         config.json and the weights do not belong together"
    )]
    ShapeMismatch {
        name: String,
        source_desc: String,
        expected: Vec<usize>,
        found: Vec<usize>,
    },

    /// A weights file could not be parsed.
    #[error("cannot load weights from {path}: {reason}")]
    BadWeights { path: PathBuf, reason: String },

    /// The tokenizer could not be built or failed on an input.
    #[error("tokenizer {path}: {reason}")]
    Tokenizer { path: PathBuf, reason: String },

    /// An image could not be decoded.
    #[error("{input}: {reason}")]
    Image { input: String, reason: String },

    /// An image is larger than the configured pixel limit.
    #[error(
        "{input}: image is {width}x{height} ({pixels} pixels), over the limit of {limit} pixels"
    )]
    TooManyPixels {
        input: String,
        width: u32,
        height: u32,
        pixels: u64,
        limit: u64,
    },

    /// An image whose resize would be enormous (an extreme aspect ratio).
    #[error(
        "a {width}x{height} image resizes to {resized_width}x{resized_height} pixels before the \
         crop, over the limit of {limit} pixels: its aspect ratio is too extreme"
    )]
    ResizeTooLarge {
        width: u32,
        height: u32,
        resized_width: u32,
        resized_height: u32,
        limit: u64,
    },

    /// The model computed NaN or infinity.
    #[error(
        "{what} are not finite (NaN or infinity): the weights or the preprocessing settings hold \
         values the model cannot compute with"
    )]
    NonFinite { what: String },

    /// An invalid argument passed to the library.
    #[error("{0}")]
    Invalid(String),

    /// A kernel refused its inputs.
    #[error("kernel: {0}")]
    Kernel(#[from] altclip_kernels::Error),

    /// An error raised by the tensor backend.
    #[error("tensor backend: {0}")]
    Candle(#[from] candle_core::Error),
}

impl Error {
    /// An [`Error::Io`] for `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}
