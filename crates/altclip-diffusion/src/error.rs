//! Errors of the diffusion crate; each names the file or setting at fault.

use std::path::PathBuf;

pub type Result<T> = std::result::Result<T, Error>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {reason}")]
    BadConfig { path: PathBuf, reason: String },

    #[error("{0}")]
    Unsupported(String),

    /// A dtype that the pipeline cannot run on the device.
    #[error("{dtype} is not supported on the {device}: {reason}")]
    Dtype {
        dtype: &'static str,
        device: &'static str,
        reason: String,
    },

    #[error(transparent)]
    Tensor(#[from] candle_core::Error),

    #[error(transparent)]
    Engine(#[from] altclip::Error),

    #[error(transparent)]
    Kernel(#[from] altclip_kernels::Error),
}
