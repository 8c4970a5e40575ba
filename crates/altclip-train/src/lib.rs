//! Training AltCLIP's text tower with the paper's two-phase recipe
//! (arXiv 2211.06679 §3): parallel-text distillation from CLIP's text encoder
//! ([`distill`], with the teacher in [`clip_text`]), then contrastive learning
//! against frozen image features ([`contrastive`]), both driven by one
//! [`trainer::Trainer`].
//!
//! The crate owns the trainer, AdamW, learning-rate schedules, training data,
//! the CLIP text teacher and the export to a Hugging Face layout. It depends
//! on the engine (`altclip`) and on `altclip-eval` for the retrieval metrics
//! it reports on the dev set; nothing that serves models depends on it.
//!
//! The student runs the inference modules of [`altclip::text`]; its parameters
//! are candle `Var`s ([`student::Student`]), and LayerNorm / softmax switch to
//! differentiable formulations whenever their inputs take part in autograd
//! (see [`altclip::nn::needs_grad`]).

pub mod clip_text;
pub mod contrastive;
pub mod data;
pub mod distill;
pub mod error;
pub mod export;
pub mod optim;
pub mod rng;
pub mod schedule;
pub mod student;
pub mod trainer;

pub use error::{Error, Result};
pub use student::{Student, StudentKind, StudentOptions};
pub use trainer::{Event, Objective, StepLog, TrainConfig, Trainer};
