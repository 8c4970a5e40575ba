//! Training AltCLIP's text tower with the paper's two-phase recipe
//! (arXiv 2211.06679 §3): parallel-text distillation from CLIP's text encoder,
//! then contrastive learning against frozen image features.
//!
//! The student runs the inference modules of [`crate::text`]; its parameters
//! are candle `Var`s ([`student::Student`]), and LayerNorm / softmax switch to
//! differentiable formulations whenever their inputs take part in autograd
//! (see [`crate::nn::needs_grad`]).

pub mod rng;
pub mod student;

pub use student::{Student, StudentKind, StudentOptions};
