//! `altclip generate`: AltDiffusion text-to-image from Chinese or English prompts.

use std::path::PathBuf;
use std::process::ExitCode;

use altclip::Device;
use altclip_diffusion::pipeline::{output_path, save_png};
use altclip_diffusion::{AltDiffusion, GenerateOptions, SchedulerKind};
use anyhow::{Context, Result};

use altclip::args::Dtype;

use crate::common::{progress, track};

/// Generate images from a prompt with AltDiffusion (bilingual Stable Diffusion).
///
/// Loads a diffusers AltDiffusion folder (model_index.json, text_encoder/,
/// tokenizer/, unet/, vae/, scheduler/; safetensors or .bin, f32 or f16), or a
/// Hub id such as BAAI/AltDiffusion, and writes N PNG images to --out, named
/// NNN-seedS.png, with the prompt, negative prompt, seed, steps, guidance and
/// scheduler in their metadata. Image i uses seed --seed + i, so any image can
/// be regenerated alone.
#[derive(clap::Args, Debug)]
#[command(after_help = "Examples:\n  \
    altclip generate --model BAAI/AltDiffusion \"一只穿着宇航服的猫，油画\" --out out\n  \
    altclip generate --model BAAI/AltDiffusion \"a lighthouse at dusk\" --negative \"blurry\" \
    --scheduler dpm++ --steps 20 -n 4 --seed 7 --out out")]
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
    /// Classifier-free guidance scale (1 disables guidance).
    #[arg(long, default_value_t = 7.5)]
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
    #[arg(short = 'n', long = "num-images", default_value_t = 1)]
    num_images: usize,
    /// Compute dtype.
    #[arg(long, value_enum, default_value = "f32")]
    dtype: Dtype,
    /// Output folder (created if needed).
    #[arg(long)]
    out: PathBuf,
}

pub fn run(args: Args) -> Result<ExitCode> {
    anyhow::ensure!(
        args.dtype != Dtype::Int8,
        "generate has no int8 path; use --dtype f32 or f16"
    );
    let dir = altclip_diffusion::hub::resolve(&args.model, args.revision.as_deref())?;
    let pipe = AltDiffusion::load(&dir, args.dtype.dtype(), &Device::Cpu)
        .map_err(|e| match e {
            altclip_diffusion::Error::Dtype { .. } => {
                anyhow::anyhow!("{e}; use --dtype f32 or f16")
            }
            e => e.into(),
        })
        .with_context(|| format!("loading AltDiffusion from {}", dir.display()))?;
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating --out {}", args.out.display()))?;
    for i in 0..args.num_images {
        let seed = args.seed.wrapping_add(i as u64);
        let opts = GenerateOptions {
            prompt: args.prompt.clone(),
            negative_prompt: args.negative.clone(),
            steps: args.steps as usize,
            guidance_scale: args.guidance,
            width: args.width,
            height: args.height,
            scheduler: args.scheduler,
            seed,
        };
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
        let path = output_path(&args.out, i, seed);
        let meta = [
            ("prompt", args.prompt.clone()),
            ("negative_prompt", args.negative.clone()),
            ("seed", seed.to_string()),
            ("steps", args.steps.to_string()),
            ("guidance_scale", args.guidance.to_string()),
            ("scheduler", format!("{:?}", args.scheduler)),
            ("model", args.model.clone()),
            ("software", format!("altclip {}", env!("CARGO_PKG_VERSION"))),
        ];
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
