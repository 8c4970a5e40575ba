//! AltCLIP (BAAI, arXiv 2211.06679) on candle: the bilingual Chinese/English
//! CLIP with an XLM-R text tower and a CLIP ViT-L/14 image tower, matching
//! transformers' `AltCLIPModel` + `AltCLIPProcessor` to float precision.
//!
//! Start with [`AltClip::load`]; the modules below are the pieces it is built from.

pub mod cache;
pub mod clip_text;
pub mod config;
pub mod datasets;
pub mod error;
pub mod hub;
pub mod kernels;
pub mod metrics;
pub mod model;
pub mod nn;
pub mod preprocess;
pub mod text;
pub mod tokenize;
pub mod train;
pub mod vision;
pub mod weights;
pub mod zeroshot;

pub use config::{Activation, AltClipConfig, TextConfig, VisionConfig};
pub use error::{Error, Result};
pub use model::{normalize_rows, softmax_similarity, AltClip, AltClipModel, LoadOptions};
pub use preprocess::Preprocessor;
pub use tokenize::TextTokenizer;
pub use zeroshot::{Templates, ZeroShotClassifier};

/// Re-exported so users can pass dtypes and devices without depending on candle.
pub use candle_core::{DType, Device};
