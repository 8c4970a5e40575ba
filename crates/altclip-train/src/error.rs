//! The refusals that are the trainer's own; everything else is the engine's
//! error (a file, a tensor, a shape).

use std::path::PathBuf;

/// Why a training run was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A fresh run into a directory that holds another run's checkpoints.
    #[error("{} already holds checkpoints of an earlier run", .0.display())]
    CheckpointsExist(PathBuf),
    /// Fewer training examples than one batch.
    #[error("{examples} training examples are fewer than one batch of {batch_size}")]
    TooFewExamples { examples: usize, batch_size: usize },
    #[error(transparent)]
    Engine(#[from] altclip::Error),
}

impl From<candle_core::Error> for Error {
    fn from(e: candle_core::Error) -> Self {
        Error::Engine(e.into())
    }
}

/// Results of the trainer's entry points.
pub type Result<T> = std::result::Result<T, Error>;
