//! AltCLIP (BAAI, arXiv 2211.06679) on candle: the bilingual Chinese/English
//! CLIP with an XLM-R text tower and a CLIP ViT-L/14 image tower, matching
//! transformers' `AltCLIPModel` + `AltCLIPProcessor` to float precision.
//!
//! This crate is the inference engine and its public API: finding a model's
//! files ([`hub`]), reading them ([`config`], [`weights`], [`tokenize`],
//! [`preprocess`]), the towers ([`nn`], [`text`], [`vision`]), the facade
//! ([`AltClip`]) and what is built on its embeddings ([`embedding`],
//! [`zeroshot`], [`cache`]). Its linear layers run on `altclip-kernels`;
//! training and evaluation live in their own crates above this one.
//!
//! Start with [`AltClip::load`].

#[cfg(feature = "clap")]
pub mod args;
pub mod cache;
pub mod config;
pub mod embedding;
pub mod error;
pub mod hub;
pub mod model;
pub mod nn;
pub mod preprocess;
pub mod text;
pub mod tokenize;
pub mod vision;
pub mod weights;
pub mod zeroshot;

pub use config::{Activation, AltClipConfig, TextConfig, VisionConfig};
pub use embedding::{normalize, normalize_rows, softmax_similarity};
pub use error::{Error, Result};
pub use model::{AltClip, AltClipModel, ComputePlan, LoadOptions, Towers};
pub use preprocess::Preprocessor;
pub use tokenize::TextTokenizer;
pub use zeroshot::{Templates, ZeroShotClassifier};

/// Re-exported so users can pass dtypes and devices without depending on candle.
pub use candle_core::{DType, Device};
