//! AltDiffusion: Stable Diffusion v1 conditioned on the AltCLIP text encoder,
//! on our own UNet and VAE.
//!
//! - [`config`]: diffusers' UNet and VAE configs, every field honoured or
//!   refused by name;
//! - [`layers`], [`transformer`]: the convolutional and attention blocks on
//!   channels-last f32 activations, with the convolutions, linear layers and
//!   attention on `altclip-kernels` (f32, or bf16 products);
//! - [`unet`], [`vae`]: `UNet2DConditionModel` and `AutoencoderKL`, with
//!   diffusers' key names, and the VAE's tiled decode;
//! - [`scheduler`]: PNDM, DDIM, Euler ancestral and DPM-Solver++ with
//!   diffusers' step math;
//! - [`text_encoder`]: the conditioning encoder, on the AltCLIP text tower's
//!   XLM-R code;
//! - [`pipeline`]: text-to-image and img2img with classifier-free guidance.

pub mod config;
pub mod error;
pub mod hub;
pub mod layers;
pub mod pipeline;
pub mod scheduler;
pub mod text_encoder;
pub mod transformer;
pub mod unet;
pub mod vae;

pub use error::{Error, Result};
pub use pipeline::{AltDiffusion, GenerateOptions, InitImage};
pub use scheduler::{Scheduler, SchedulerConfig, SchedulerKind};
pub use text_encoder::{TextEncoder, TextEncoderConfig};
