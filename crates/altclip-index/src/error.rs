//! Errors of the index crate; each names the database, file or query at fault.

use std::path::PathBuf;

pub type Result<T> = std::result::Result<T, Error>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("index database {path}: {source}")]
    Db {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },

    #[error(
        "{db} was built with model `{indexed}` but this run uses `{requested}`; embeddings of \
         different models are not comparable"
    )]
    ModelMismatch {
        db: PathBuf,
        indexed: String,
        requested: String,
    },

    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("{0}")]
    Invalid(String),

    /// A failure of an external vector-store backend (e.g. Milvus); the
    /// message names the backend's URI and suggests a fix.
    #[error("{0}")]
    Backend(String),

    #[error(transparent)]
    Engine(#[from] altclip::Error),
}
