//! AltDiffusion: Stable Diffusion v1 conditioned on the AltCLIP text encoder.
//!
//! [`scheduler`] holds the denoising schedules (PNDM, DDIM, Euler ancestral,
//! DPM-Solver++), read from a diffusers `scheduler_config.json` and matching
//! diffusers' step math.

pub mod error;
pub mod scheduler;

pub use error::{Error, Result};
pub use scheduler::{Scheduler, SchedulerConfig, SchedulerKind};
