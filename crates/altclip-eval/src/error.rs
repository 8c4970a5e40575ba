//! Errors of the evaluation crate: each names the dataset file (and line)
//! at fault, or wraps the engine's error.

use std::path::PathBuf;

/// Why a dataset could not be read or an evaluation could not run.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A dataset (file or directory) that does not hold what it should.
    #[error("{}: {reason}", path.display())]
    Dataset { path: PathBuf, reason: String },
    /// One line of a dataset file is malformed.
    #[error("{}:{line}: {reason}", path.display())]
    Line {
        path: PathBuf,
        line: usize,
        reason: String,
    },
    /// A JSON dataset file is malformed.
    #[error("{} is not a valid {what}: {reason}", path.display())]
    BadJson {
        path: PathBuf,
        what: &'static str,
        reason: String,
    },
    /// Neither the file's name nor its content tells its caption format.
    #[error(
        "{}: cannot tell the caption format (karpathy-json, clip-benchmark-txt, coco-json or tsv) \
         from its name or content",
        path.display()
    )]
    UnknownCaptionFormat { path: PathBuf },
    /// The labels of a dataset and its class names do not fit together.
    #[error("the dataset has {classes} classes but the class-name list has {names}")]
    ClassCount { classes: usize, names: usize },
    /// Every image of the dataset failed to load.
    #[error("no readable images in {}", .0.display())]
    NoReadableImages(PathBuf),
    #[error(transparent)]
    Engine(#[from] altclip::Error),
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

/// Results of the evaluation crate.
pub type Result<T> = std::result::Result<T, Error>;
