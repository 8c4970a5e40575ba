//! AltDiffusion text-to-image: diffusers' `AltDiffusionPipeline` with
//! classifier-free guidance, on a diffusers folder (`model_index.json`,
//! `text_encoder/`, `tokenizer/`, `unet/`, `vae/`, `scheduler/`).

use std::path::{Path, PathBuf};

use altclip::preprocess::resample::{resize, Filter};
use altclip::text::TextInputs;
use altclip::weights::Weights;
use altclip::{ComputePlan, DType, Device, TextTokenizer};
use candle_core::Tensor;
use image::RgbImage;

use crate::error::{Error, Result};
use crate::scheduler::{Scheduler, SchedulerConfig, SchedulerKind};
use crate::text_encoder::TextEncoder;
use crate::unet::UNet2DConditionModel;
use crate::vae::AutoencoderKL;

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
    /// Ignored for img2img, whose size is the init image's.
    pub width: usize,
    pub height: usize,
    pub scheduler: SchedulerKind,
    /// Seeds the initial latents and any per-step noise.
    pub seed: u64,
    /// img2img: the image to start from, and how much of the schedule to run.
    pub init: Option<InitImage>,
    /// Decode in overlapping tiles (large images in bounded memory).
    pub vae_tiling: bool,
}

/// The starting point of img2img.
#[derive(Debug, Clone)]
pub struct InitImage {
    pub image: RgbImage,
    /// In `(0, 1]`: the share of the schedule run from the noised image; 1
    /// starts from noise alone, small values stay close to the image.
    pub strength: f64,
    /// Encode to a seeded sample of the latent distribution (diffusers'
    /// default) rather than its mean.
    pub sample: bool,
}

/// A loaded AltDiffusion pipeline.
pub struct AltDiffusion {
    pub tokenizer: TextTokenizer,
    pub text_encoder: TextEncoder,
    pub unet: UNet2DConditionModel,
    pub vae: AutoencoderKL,
    pub scheduler_config: SchedulerConfig,
    /// Which kernels the UNet, VAE and text encoder run on.
    pub plan: ComputePlan,
    pub device: Device,
}

/// The weight file of a diffusers component folder: safetensors preferred,
/// else PyTorch's `.bin`.
pub fn weight_file(dir: &Path) -> Result<PathBuf> {
    [
        "diffusion_pytorch_model.safetensors",
        "model.safetensors",
        "diffusion_pytorch_model.bin",
        "pytorch_model.bin",
    ]
    .iter()
    .map(|n| dir.join(n))
    .find(|p| p.is_file())
    .ok_or_else(|| {
        crate::config::bad(
            dir,
            "no diffusion_pytorch_model.safetensors (or .bin) here; is this a diffusers folder?",
        )
    })
}

/// The plan for `dtype` on `device`: f32, or bf16 through the bf16 kernels
/// (activations, norms and softmax stay f32, as under PyTorch's autocast).
pub fn compute_plan(dtype: DType, device: &Device) -> Result<ComputePlan> {
    if !device.is_cpu() {
        return Err(Error::Dtype {
            dtype: "any dtype",
            device: "GPU",
            reason: "the UNet and VAE run on the CPU kernels only".into(),
        });
    }
    let plan = ComputePlan::new(dtype, false, device);
    match dtype {
        DType::F32 => Ok(plan),
        DType::BF16 if plan.linear.is_some() => Ok(plan),
        DType::BF16 => Err(Error::Dtype {
            dtype: "bf16",
            device: "CPU",
            reason: format!(
                "no bf16 kernel runs here ({}); f32 does",
                altclip_kernels::Kernel::Avx512Bf16.missing().join(", ")
            ),
        }),
        other => Err(Error::Dtype {
            dtype: if other == DType::F16 {
                "f16"
            } else {
                "this dtype"
            },
            device: "CPU",
            reason: "the CPU kernels take f32 and bf16".into(),
        }),
    }
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
    /// Loads a diffusers AltDiffusion folder to run in `dtype` (f32, or bf16
    /// where a bf16 kernel runs; see [`compute_plan`]).
    pub fn load(dir: &Path, dtype: DType, device: &Device) -> Result<Self> {
        let plan = compute_plan(dtype, device)?;
        let index = dir.join("model_index.json");
        if !index.is_file() {
            return Err(Error::BadConfig {
                path: index,
                reason: "missing: expected a diffusers pipeline folder such as BAAI/AltDiffusion \
                         (model_index.json, text_encoder/, tokenizer/, unet/, vae/, scheduler/)"
                    .into(),
            });
        }
        let weights =
            |name: &str| -> Result<Weights> {
                let path = weight_file(&dir.join(name))?;
                Ok(Weights::from_file(&path, plan.activations, device)?
                    .with_linear_kernel(plan.linear))
            };
        let mut tokenizer = TextTokenizer::from_dir(&dir.join("tokenizer"))?;
        tokenizer.set_max_length(PROMPT_TOKENS)?;
        Ok(Self {
            tokenizer,
            text_encoder: TextEncoder::load(&dir.join("text_encoder"), &plan, device)?,
            unet: UNet2DConditionModel::load(&dir.join("unet"), &weights("unet")?)?,
            vae: AutoencoderKL::load(&dir.join("vae"), &weights("vae")?)?,
            scheduler_config: SchedulerConfig::from_file(
                &dir.join("scheduler").join("scheduler_config.json"),
            )?,
            plan,
            device: device.clone(),
        })
    }

    /// The conditioning of `prompts`, `[B, 77, D]`: padded to 77 tokens, as
    /// the pipeline tokenizes (the mask is used where the encoder's config
    /// says `use_attention_mask`).
    pub fn encode_prompts(&self, prompts: &[&str]) -> Result<Tensor> {
        let ids = self.tokenizer.encode(prompts)?;
        let inputs =
            TextInputs::padded_to(&ids, PROMPT_TOKENS, self.tokenizer.pad_id(), &self.device)?;
        Ok(self.text_encoder.forward(&inputs)?.to_dtype(DType::F32)?)
    }

    /// The latent shape for an image of `width` × `height`.
    pub fn latent_shape(&self, width: usize, height: usize) -> Result<[usize; 4]> {
        let f = self.vae.factor();
        if width == 0 || height == 0 || !width.is_multiple_of(f) || !height.is_multiple_of(f) {
            return Err(Error::Unsupported(format!(
                "{width}x{height}: width and height must be positive multiples of {f}"
            )));
        }
        Ok([1, self.vae.config().latent_channels, height / f, width / f])
    }

    /// Refuses options that cannot run, before any work: a guidance scale
    /// that is not a number, a step count the schedule cannot take, an
    /// img2img strength outside `(0, 1]` or one that runs no step, and image
    /// sizes that are not multiples of the VAE's factor.
    pub fn check(&self, opts: &GenerateOptions) -> Result<()> {
        if !opts.guidance_scale.is_finite() {
            return Err(Error::Unsupported(format!(
                "guidance scale {}: expected a finite number (7.5 is usual; 1 or less turns guidance off)",
                opts.guidance_scale
            )));
        }
        self.scheduler(opts)?;
        match &opts.init {
            Some(init) => {
                self.init_pixels(&init.image)?;
            }
            None => {
                self.latent_shape(opts.width, opts.height)?;
            }
        }
        Ok(())
    }

    /// The schedule for `opts`, started where img2img starts: diffusers runs
    /// the last `int(steps · strength)` steps.
    pub fn scheduler(&self, opts: &GenerateOptions) -> Result<Scheduler> {
        let mut s = Scheduler::new(opts.scheduler, &self.scheduler_config, opts.steps)?;
        if let Some(init) = &opts.init {
            if !(init.strength > 0.0 && init.strength <= 1.0) {
                return Err(Error::Unsupported(format!(
                    "strength {}: expected a number in (0, 1]",
                    init.strength
                )));
            }
            let run = ((opts.steps as f64 * init.strength) as usize).min(opts.steps);
            if run == 0 {
                return Err(Error::Unsupported(format!(
                    "strength {} of {} steps runs no step: raise the strength or the steps",
                    init.strength, opts.steps
                )));
            }
            s.begin_at(opts.steps - run)?;
        }
        Ok(s)
    }

    /// Runs the denoising loop from `latents` (already scaled by the
    /// scheduler's initial sigma, or img2img's noised latents);
    /// `on_step(i, total)` after each step. Guidance runs the unconditional
    /// and conditional halves as one batch of two.
    pub fn denoise(
        &self,
        latents: Tensor,
        opts: &GenerateOptions,
        on_step: &mut dyn FnMut(usize, usize),
    ) -> Result<Tensor> {
        self.check(opts)?;
        let guided = opts.guidance_scale > 1.0;
        let cond = self.encode_prompts(&[&opts.prompt])?;
        let context = if guided {
            let uncond = self.encode_prompts(&[&opts.negative_prompt])?;
            Tensor::cat(&[uncond, cond], 0)?
        } else {
            cond
        };
        let mut scheduler = self.scheduler(opts)?;
        let timesteps = scheduler.timesteps().to_vec();
        let mut latents = latents;
        for (i, &t) in timesteps.iter().enumerate() {
            let input = if guided {
                Tensor::cat(&[&latents, &latents], 0)?
            } else {
                latents.clone()
            };
            let input = scheduler.scale_model_input(&input, i)?;
            let noise_pred = self.unet.forward(&input, t, &context)?;
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

    /// Decodes latents to images in `[0, 1]`, `[B, 3, H, W]`; in tiles when
    /// `tiled` and the latents are larger than one tile.
    pub fn decode(&self, latents: &Tensor, tiled: bool) -> Result<Tensor> {
        let z = (latents / self.vae.config().scaling_factor)?;
        let images = match tiled {
            true => self.vae.decode_tiled(&z)?,
            false => self.vae.decode(&z)?,
        };
        Ok(((images / 2.0)? + 0.5)?.clamp(0f32, 1f32)?)
    }

    /// An init image as the VAE takes it, `[1, 3, H, W]` in `[-1, 1]`: sides
    /// rounded down to multiples of the VAE's factor with Pillow's Lanczos
    /// filter where they are not, as diffusers' `VaeImageProcessor` does.
    pub fn init_pixels(&self, image: &RgbImage) -> Result<Tensor> {
        let f = self.vae.factor() as u32;
        let (w, h) = (image.width() / f * f, image.height() / f * f);
        if w == 0 || h == 0 {
            return Err(Error::Unsupported(format!(
                "the init image is {}x{}: it must be at least {f} pixels on each side",
                image.width(),
                image.height()
            )));
        }
        let resized;
        let image = if (w, h) == image.dimensions() {
            image
        } else {
            resized = resize(image, w, h, Filter::Lanczos);
            &resized
        };
        let data: Vec<f32> = image
            .as_raw()
            .iter()
            .map(|&v| v as f32 / 255.0 * 2.0 - 1.0)
            .collect();
        let hwc = Tensor::from_vec(data, (h as usize, w as usize, 3), &self.device)?;
        Ok(hwc.permute((2, 0, 1))?.unsqueeze(0)?.contiguous()?)
    }

    /// img2img's starting latents: `init` encoded (the mean, or the sample
    /// `mean + std · sample_noise`), scaled, then noised with `noise` to the
    /// schedule's first timestep by `scheduler.add_noise`.
    pub fn init_latents(
        &self,
        init: &InitImage,
        scheduler: &Scheduler,
        sample_noise: Option<&Tensor>,
        noise: &Tensor,
    ) -> Result<Tensor> {
        let dist = self.vae.encode(&self.init_pixels(&init.image)?)?;
        let latents = (dist.latents(sample_noise.filter(|_| init.sample))?
            * self.vae.config().scaling_factor)?;
        scheduler.add_noise(&latents, noise, 0)
    }

    /// Text to image, or img2img when `opts.init` is set: initial latents
    /// from the seed (and the init image), denoising, decoding.
    pub fn generate(
        &self,
        opts: &GenerateOptions,
        on_step: &mut dyn FnMut(usize, usize),
    ) -> Result<RgbImage> {
        self.check(opts)?;
        let scheduler = self.scheduler(opts)?;
        let latents = match &opts.init {
            None => {
                let shape = self.latent_shape(opts.width, opts.height)?;
                (gaussian(&shape, opts.seed, &self.device)? * scheduler.init_noise_sigma())?
            }
            Some(init) => {
                let pixels = self.init_pixels(&init.image)?;
                let f = self.vae.factor();
                let shape = [
                    1,
                    self.vae.config().latent_channels,
                    pixels.dim(2)? / f,
                    pixels.dim(3)? / f,
                ];
                let sample = gaussian(&shape, opts.seed ^ SAMPLE_SALT, &self.device)?;
                let noise = gaussian(&shape, opts.seed, &self.device)?;
                self.init_latents(init, &scheduler, Some(&sample), &noise)?
            }
        };
        let latents = self.denoise(latents, opts, on_step)?;
        to_rgb(&self.decode(&latents, opts.vae_tiling)?)
    }
}

/// Separates img2img's latent-sample noise from its starting noise, which
/// uses the seed itself.
const SAMPLE_SALT: u64 = 0x5A3D_1E2B_0000_0000;

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
