//! `altclip generate`: AltDiffusion text-to-image from Chinese or English prompts.

use std::path::PathBuf;
use std::process::ExitCode;

use altclip::Device;
use altclip_diffusion::pipeline::{output_path, save_png};
use altclip_diffusion::{AltDiffusion, GenerateOptions, InitImage, SchedulerKind};
use anyhow::{Context, Result};

use altclip::args::Dtype;

use crate::common::{progress, track};

/// The largest init image read, in pixels (a 12000 × 8000 photo); larger
/// ones are refused before they are decoded.
const MAX_INIT_PIXELS: u64 = 96_000_000;

/// Generate images from a prompt with AltDiffusion (bilingual Stable Diffusion).
///
/// Loads a diffusers AltDiffusion folder (model_index.json, text_encoder/,
/// tokenizer/, unet/, vae/, scheduler/; safetensors or .bin, f32 or f16
/// files), or a Hub id such as BAAI/AltDiffusion, and writes N PNG images to
/// --out, named NNN-seedS.png, with the prompt, negative prompt, seed, steps,
/// guidance, scheduler (and for img2img the init image and strength) in their
/// metadata. Image i uses seed --seed + i, so any image can be regenerated
/// alone.
///
/// img2img: --init-image starts from a picture instead of noise. Its size
/// (rounded down to a multiple of 8) is the output's; --strength says how far
/// from it to go (0.8: diffusers' default; 0.3 keeps the composition, 1.0
/// keeps only its colours), and runs that share of --steps.
#[derive(clap::Args, Debug)]
#[command(after_help = "Examples:\n  \
    altclip generate --model BAAI/AltDiffusion \"一只穿着宇航服的猫，油画\" --out out\n  \
    altclip generate --model BAAI/AltDiffusion \"a lighthouse at dusk\" --negative \"blurry\" \
    --scheduler dpm++ --steps 20 -n 4 --seed 7 --out out\n  \
    altclip generate --model BAAI/AltDiffusion \"水彩画风格\" --init-image photo.jpg --strength 0.6 --out out\n  \
    altclip generate --model BAAI/AltDiffusion \"城市夜景\" --width 1024 --height 768 --vae-tiling --dtype bf16 --out out")]
pub struct Args {
    /// The prompt, in Chinese or English.
    prompt: String,
    /// Diffusers AltDiffusion folder, or a Hub id.
    #[arg(long, short = 'm', env = "ALTDIFFUSION_MODEL")]
    model: String,
    /// Hub revision when --model is a Hub id.
    #[arg(long)]
    revision: Option<String>,
    /// What the image should not show.
    #[arg(long, default_value = "")]
    negative: String,
    /// Denoising steps.
    #[arg(long, default_value_t = 25, value_parser = clap::value_parser!(u64).range(1..=1000))]
    steps: u64,
    /// Classifier-free guidance scale (1 or less disables guidance).
    #[arg(long, default_value_t = 7.5, value_parser = finite)]
    guidance: f64,
    /// Seed of the first image.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Image width in pixels (a multiple of 8 for real models).
    #[arg(long, default_value_t = 512)]
    width: usize,
    /// Image height in pixels.
    #[arg(long, default_value_t = 512)]
    height: usize,
    /// Scheduler: pndm (AltDiffusion's default), ddim, euler-a or dpm++.
    #[arg(long, default_value = "pndm")]
    scheduler: SchedulerKind,
    /// How many images.
    #[arg(short = 'n', long = "num-images", default_value_t = 1,
          value_parser = clap::value_parser!(u64).range(1..=10_000))]
    num_images: u64,
    /// Compute dtype: f32, or bf16 (matmuls and convolutions in bf16 with
    /// f32 sums, norms in f32, as PyTorch's autocast) on CPUs with
    /// AVX512-BF16 or AMX-BF16.
    #[arg(long, value_enum, default_value = "f32")]
    dtype: Dtype,
    /// img2img: start from this image instead of noise.
    #[arg(long, value_name = "PATH")]
    init_image: Option<PathBuf>,
    /// img2img: how far from the init image to go, in (0, 1].
    #[arg(long, default_value_t = 0.8, requires = "init_image", value_parser = unit_interval)]
    strength: f64,
    /// img2img: encode the init image to its latent mean instead of a
    /// seeded sample of the latent distribution (diffusers samples).
    #[arg(long, requires = "init_image")]
    init_mean: bool,
    /// Decode in overlapping tiles, blended as diffusers does: large images
    /// in bounded memory.
    #[arg(long)]
    vae_tiling: bool,
    /// Output folder (created if needed).
    #[arg(long)]
    out: PathBuf,
}

/// A number that is not NaN or infinite.
fn finite(s: &str) -> std::result::Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() => Ok(v),
        Ok(v) => Err(format!("{v} is not a finite number")),
        Err(e) => Err(e.to_string()),
    }
}

/// A number in (0, 1].
fn unit_interval(s: &str) -> std::result::Result<f64, String> {
    let v = finite(s)?;
    match v > 0.0 && v <= 1.0 {
        true => Ok(v),
        false => Err(format!("{v} is outside (0, 1]")),
    }
}

/// mimalloc.h's `mi_option_purge_delay`: how long freed memory stays
/// committed before it is returned to the kernel; -1 is never.
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

pub fn run(args: Args) -> Result<ExitCode> {
    // The UNet and VAE free and allocate activations of up to hundreds of MB
    // per layer; returned to the kernel, each reuse pays page faults and
    // zeroing (about a tenth of the VAE decode). One image's peak stays the peak.
    // SAFETY: setting an allocator option is safe at any time.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) };
    anyhow::ensure!(
        matches!(args.dtype, Dtype::F32 | Dtype::Bf16),
        "generate runs in f32 or bf16; use --dtype f32 or --dtype bf16"
    );
    let dir = altclip_diffusion::hub::resolve(&args.model, args.revision.as_deref())?;
    let pipe = AltDiffusion::load(&dir, args.dtype.dtype(), &Device::Cpu)
        .map_err(|e| match e {
            altclip_diffusion::Error::Dtype { .. } => {
                anyhow::anyhow!("{e}; use --dtype f32")
            }
            e => e.into(),
        })
        .with_context(|| format!("loading AltDiffusion from {}", dir.display()))?;
    let init = match &args.init_image {
        Some(path) => Some(InitImage {
            image: altclip::preprocess::decode::open_rgb(path, MAX_INIT_PIXELS)
                .with_context(|| format!("reading --init-image {}", path.display()))?,
            strength: args.strength,
            sample: !args.init_mean,
        }),
        None => None,
    };
    let options = |seed: u64| GenerateOptions {
        prompt: args.prompt.clone(),
        negative_prompt: args.negative.clone(),
        steps: args.steps as usize,
        guidance_scale: args.guidance,
        width: args.width,
        height: args.height,
        scheduler: args.scheduler,
        seed,
        init: init.clone(),
        vae_tiling: args.vae_tiling,
    };
    // Everything that can be refused is refused before the first image.
    pipe.check(&options(args.seed))
        .context("checking --steps, --width, --height, --init-image and --strength")?;
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating --out {}", args.out.display()))?;
    for i in 0..args.num_images {
        let seed = args.seed.wrapping_add(i);
        let opts = options(seed);
        let bar = progress(0, &format!("image {}/{}", i + 1, args.num_images));
        let start = std::time::Instant::now();
        // When each step ended, to report the denoising rate apart from the
        // prompt encoding and the VAE decode.
        let mut ends = Vec::with_capacity(args.steps as usize);
        let image = pipe.generate(&opts, &mut |done, total| {
            ends.push(start.elapsed().as_secs_f64());
            track(&bar, done, total)
        })?;
        bar.finish_and_clear();
        let total = start.elapsed().as_secs_f64();
        let path = output_path(&args.out, i as usize, seed);
        let mut meta = vec![
            ("prompt", args.prompt.clone()),
            ("negative_prompt", args.negative.clone()),
            ("seed", seed.to_string()),
            ("steps", args.steps.to_string()),
            ("guidance_scale", args.guidance.to_string()),
            ("scheduler", args.scheduler.name().to_string()),
            ("model", args.model.clone()),
            ("software", format!("altclip {}", env!("CARGO_PKG_VERSION"))),
        ];
        if let Some(p) = &args.init_image {
            meta.push(("init_image", p.display().to_string()));
            meta.push(("strength", args.strength.to_string()));
        }
        save_png(&path, &image, &meta)?;
        let per_step = match ends.as_slice() {
            [first, .., last] => (last - first) / (ends.len() - 1) as f64,
            [only] => *only,
            [] => 0.0,
        };
        println!(
            "{} ({total:.1} s; {per_step:.2} s/step, decode {:.1} s)",
            path.display(),
            total - ends.last().copied().unwrap_or(0.0)
        );
    }
    Ok(ExitCode::SUCCESS)
}
