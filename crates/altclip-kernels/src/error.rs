//! Errors of the kernels: a tensor they cannot take, or candle's own.

/// Why a kernel call was refused.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An input of the wrong dtype, layout or shape for the operation.
    #[error("{op}: {reason}")]
    Unsupported { op: &'static str, reason: String },
    /// A kernel asked for on a CPU without its instructions.
    #[error("the {} kernel needs instructions this CPU lacks", .0.name())]
    NotOnThisCpu(crate::Kernel),
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

/// Results of the kernels.
pub type Result<T> = std::result::Result<T, Error>;
