//! Evaluating AltCLIP the way CLIP_benchmark does: the dataset formats it
//! reads ([`datasets`]: ImageFolder, CSV, Karpathy JSON, CLIP_benchmark text,
//! COCO, TSV), its metrics ([`metrics`]: acc1/acc5/mean per-class recall,
//! recall@K), and the zero-shot classification and retrieval runners that
//! turn embeddings into a result record ([`runner`]).
//!
//! It depends on the engine (`altclip`) only; image decoding, caching and
//! progress reporting are the caller's.

pub mod datasets;
pub mod error;
pub mod metrics;
pub mod runner;

pub use error::{Error, Result};
