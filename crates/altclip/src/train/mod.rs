//! Training AltCLIP's text tower with the paper's two-phase recipe
//! (arXiv 2211.06679 §3): parallel-text distillation from CLIP's text encoder
//! ([`distill`]), then contrastive learning against frozen image features
//! ([`contrastive`]), both driven by one [`trainer::Trainer`].
//!
//! The student runs the inference modules of [`crate::text`]; its parameters
//! are candle `Var`s ([`student::Student`]), and LayerNorm / softmax switch to
//! differentiable formulations whenever their inputs take part in autograd
//! (see [`crate::nn::needs_grad`]).

pub mod contrastive;
pub mod data;
pub mod distill;
pub mod export;
pub mod optim;
pub mod rng;
pub mod schedule;
pub mod student;
pub mod trainer;

pub use student::{Student, StudentKind, StudentOptions};
pub use trainer::{Event, Objective, StepLog, TrainConfig, Trainer};
