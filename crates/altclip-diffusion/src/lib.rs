//! AltDiffusion: Stable Diffusion v1 conditioned on the AltCLIP text encoder.
//!
//! [`scheduler`] holds the denoising schedules (PNDM, DDIM, Euler ancestral,
//! DPM-Solver++), read from a diffusers `scheduler_config.json` and matching
//! diffusers' step math; [`text_encoder`] the conditioning encoder, which
//! shares the AltCLIP text tower's XLM-R code.

pub mod components;
pub mod error;
pub mod hub;
pub mod pipeline;
pub mod scheduler;
pub mod text_encoder;

pub use error::{Error, Result};
pub use pipeline::{AltDiffusion, GenerateOptions};
pub use scheduler::{Scheduler, SchedulerConfig, SchedulerKind};
pub use text_encoder::{TextEncoder, TextEncoderConfig};
