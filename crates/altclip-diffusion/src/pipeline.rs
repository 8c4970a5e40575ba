//! AltDiffusion text-to-image: diffusers' `AltDiffusionPipeline` with
//! classifier-free guidance, on a diffusers folder (`model_index.json`,
//! `text_encoder/`, `tokenizer/`, `unet/`, `vae/`, `scheduler/`).

use std::path::{Path, PathBuf};

use altclip::text::TextInputs;
use altclip::{DType, Device, TextTokenizer};
use candle_core::Tensor;
use candle_transformers::models::stable_diffusion::unet_2d::UNet2DConditionModel;
use image::RgbImage;

use crate::components::{load_unet, load_vae, Vae};
use crate::error::{Error, Result};
use crate::scheduler::{Scheduler, SchedulerConfig, SchedulerKind};
use crate::text_encoder::TextEncoder;

/// Tokens per prompt: the pipeline pads and truncates every prompt to this.
pub const PROMPT_TOKENS: usize = 77;

/// What to generate.
#[derive(Debug, Clone)]
pub struct GenerateOptions {
    pub prompt: String,
    /// What to steer away from; `""` is the plain unconditional prompt.
    pub negative_prompt: String,
    pub steps: usize,
    /// Classifier-free guidance scale; ≤ 1 disables guidance.
    pub guidance_scale: f64,
    pub width: usize,
    pub height: usize,
    pub scheduler: SchedulerKind,
    /// Seeds the initial latents and any per-step noise.
    pub seed: u64,
}

/// A loaded AltDiffusion pipeline.
pub struct AltDiffusion {
    pub tokenizer: TextTokenizer,
    pub text_encoder: TextEncoder,
    pub unet: UNet2DConditionModel,
    pub vae: Vae,
    pub scheduler_config: SchedulerConfig,
    pub dtype: DType,
    pub device: Device,
}

/// Gaussian noise from a seed (SplitMix64 + Box–Muller): reproducible
/// across runs and platforms, unlike a global RNG.
pub fn gaussian(shape: &[usize], seed: u64, device: &Device) -> Result<Tensor> {
    let n: usize = shape.iter().product();
    let mut state = seed;
    let mut next = move || {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        // A uniform in (0, 1]: never 0, so the logarithm is finite.
        ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64 + f64::EPSILON
    };
    let mut data = Vec::with_capacity(n + 1);
    while data.len() < n {
        let (u1, u2) = (next().min(1.0), next());
        let r = (-2.0 * u1.ln()).sqrt();
        let a = std::f64::consts::TAU * u2;
        data.push((r * a.cos()) as f32);
        data.push((r * a.sin()) as f32);
    }
    data.truncate(n);
    Ok(Tensor::from_vec(data, shape, device)?)
}

impl AltDiffusion {
    /// Loads a diffusers AltDiffusion folder in `dtype` (F32, F16 or BF16).
    pub fn load(dir: &Path, dtype: DType, device: &Device) -> Result<Self> {
        if dtype == DType::BF16 && device.is_cpu() {
            // candle 0.11's CPU matmul rejects bf16 in the UNet's attention.
            return Err(Error::Dtype {
                dtype: "bf16",
                device: "CPU",
                reason: "candle's CPU matmul has no bf16 kernel for the UNet's attention",
            });
        }
        let index = dir.join("model_index.json");
        if !index.is_file() {
            return Err(Error::BadConfig {
                path: index,
                reason: "missing: expected a diffusers pipeline folder such as BAAI/AltDiffusion \
                         (model_index.json, text_encoder/, tokenizer/, unet/, vae/, scheduler/)"
                    .into(),
            });
        }
        let mut tokenizer = TextTokenizer::from_dir(&dir.join("tokenizer"))?;
        tokenizer.set_max_length(PROMPT_TOKENS)?;
        Ok(Self {
            tokenizer,
            text_encoder: TextEncoder::load(&dir.join("text_encoder"), dtype, device)?,
            unet: load_unet(&dir.join("unet"), dtype, device)?,
            vae: load_vae(&dir.join("vae"), dtype, device)?,
            scheduler_config: SchedulerConfig::from_file(
                &dir.join("scheduler").join("scheduler_config.json"),
            )?,
            dtype,
            device: device.clone(),
        })
    }

    /// The conditioning of `prompts`, `[B, 77, D]`: padded to 77 tokens with
    /// the attention mask, as the pipeline tokenizes.
    pub fn encode_prompts(&self, prompts: &[&str]) -> Result<Tensor> {
        let ids = self.tokenizer.encode(prompts)?;
        let inputs =
            TextInputs::padded_to(&ids, PROMPT_TOKENS, self.tokenizer.pad_id(), &self.device)?;
        Ok(self.text_encoder.forward(&inputs)?.to_dtype(self.dtype)?)
    }

    /// The latent shape for an image of `width` × `height`.
    pub fn latent_shape(&self, width: usize, height: usize) -> Result<[usize; 4]> {
        let f = self.vae.factor;
        if width == 0 || height == 0 || !width.is_multiple_of(f) || !height.is_multiple_of(f) {
            return Err(Error::Unsupported(format!(
                "{width}x{height}: width and height must be positive multiples of {f}"
            )));
        }
        Ok([1, self.vae.latent_channels, height / f, width / f])
    }

    /// Runs the denoising loop from `latents` (already scaled by the
    /// scheduler's initial sigma); `on_step(i, total)` after each step.
    pub fn denoise(
        &self,
        latents: Tensor,
        opts: &GenerateOptions,
        on_step: &mut dyn FnMut(usize, usize),
    ) -> Result<Tensor> {
        let guided = opts.guidance_scale > 1.0;
        let cond = self.encode_prompts(&[&opts.prompt])?;
        let context = if guided {
            let uncond = self.encode_prompts(&[&opts.negative_prompt])?;
            Tensor::cat(&[uncond, cond], 0)?
        } else {
            cond
        };
        let mut scheduler = Scheduler::new(opts.scheduler, &self.scheduler_config, opts.steps)?;
        let timesteps = scheduler.timesteps().to_vec();
        let mut latents = latents;
        for (i, &t) in timesteps.iter().enumerate() {
            let input = if guided {
                Tensor::cat(&[&latents, &latents], 0)?
            } else {
                latents.clone()
            };
            let input = scheduler
                .scale_model_input(&input, i)?
                .to_dtype(self.dtype)?;
            let noise_pred = self
                .unet
                .forward(&input, t, &context)?
                .to_dtype(DType::F32)?;
            let noise_pred = if guided {
                let parts = noise_pred.chunk(2, 0)?;
                let (u, c) = (&parts[0], &parts[1]);
                (u + ((c - u)? * opts.guidance_scale)?)?
            } else {
                noise_pred
            };
            let noise = if scheduler.needs_noise() {
                Some(gaussian(
                    latents.dims(),
                    opts.seed ^ ((i as u64 + 1) << 32),
                    &self.device,
                )?)
            } else {
                None
            };
            latents = scheduler.step(&noise_pred, i, &latents, noise.as_ref())?;
            on_step(i + 1, timesteps.len());
        }
        Ok(latents)
    }

    /// Decodes latents to images in `[0, 1]`, `[B, 3, H, W]`.
    pub fn decode(&self, latents: &Tensor) -> Result<Tensor> {
        let x = (latents / self.vae.scaling_factor)?.to_dtype(self.dtype)?;
        let images = self.vae.model.decode(&x)?.to_dtype(DType::F32)?;
        Ok(((images / 2.0)? + 0.5)?.clamp(0f32, 1f32)?)
    }

    /// Text to image: initial latents from the seed, denoising, decoding.
    pub fn generate(
        &self,
        opts: &GenerateOptions,
        on_step: &mut dyn FnMut(usize, usize),
    ) -> Result<RgbImage> {
        let shape = self.latent_shape(opts.width, opts.height)?;
        let scheduler = Scheduler::new(opts.scheduler, &self.scheduler_config, opts.steps)?;
        let latents = (gaussian(&shape, opts.seed, &self.device)? * scheduler.init_noise_sigma())?;
        let latents = self.denoise(latents, opts, on_step)?;
        to_rgb(&self.decode(&latents)?)
    }
}

/// The first image of a `[B, 3, H, W]` batch in `[0, 1]`, rounded to 8 bits
/// like diffusers' `numpy_to_pil`.
pub fn to_rgb(images: &Tensor) -> Result<RgbImage> {
    let (_, _, h, w) = images.dims4()?;
    let hwc = images.get(0)?.permute((1, 2, 0))?.contiguous()?;
    let data: Vec<u8> = hwc
        .flatten_all()?
        .to_vec1::<f32>()?
        .into_iter()
        .map(|v| (v * 255.0).round() as u8)
        .collect();
    RgbImage::from_raw(w as u32, h as u32, data)
        .ok_or_else(|| Error::Unsupported("image buffer of the wrong size".into()))
}

/// Where generated image `index` goes: `DIR/{index:03}-seed{seed}.png`.
pub fn output_path(dir: &Path, index: usize, seed: u64) -> PathBuf {
    dir.join(format!("{index:03}-seed{seed}.png"))
}

/// Writes `image` as a PNG with UTF-8 text chunks (`key`, `value`), such as
/// the prompt and the seed, through a temporary file renamed into place.
pub fn save_png(path: &Path, image: &RgbImage, text: &[(&str, String)]) -> Result<()> {
    let io = |e: std::io::Error| Error::Unsupported(format!("{}: {e}", path.display()));
    let enc = |e: png::EncodingError| Error::Unsupported(format!("{}: {e}", path.display()));
    let tmp = path.with_extension("png.tmp");
    {
        let file = std::io::BufWriter::new(std::fs::File::create(&tmp).map_err(io)?);
        let mut encoder = png::Encoder::new(file, image.width(), image.height());
        encoder.set_color(png::ColorType::Rgb);
        encoder.set_depth(png::BitDepth::Eight);
        for (key, value) in text {
            encoder
                .add_itxt_chunk((*key).to_string(), value.clone())
                .map_err(enc)?;
        }
        let mut writer = encoder.write_header().map_err(enc)?;
        writer.write_image_data(image.as_raw()).map_err(enc)?;
        writer.finish().map_err(enc)?;
    }
    std::fs::rename(&tmp, path).map_err(io)
}
