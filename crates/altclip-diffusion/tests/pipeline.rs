//! UNet, VAE and the whole AltDiffusion pipeline against diffusers on tiny
//! random pipelines (tests/fixtures/diffusion/tiny-altdiffusion and
//! tiny-uncommon, made by scripts/make_diffusion_fixtures.py with diffusers
//! 0.42.1): text-to-image, img2img, the tiled VAE decode, uncommon configs,
//! and bf16 against f32.

use std::path::PathBuf;

use altclip::{DType, Device};
use altclip_diffusion::{AltDiffusion, GenerateOptions, InitImage, SchedulerKind};
use serde_json::Value;

mod common;
use common::{fixtures, indices, max_abs_diff, tensor};

fn dir() -> PathBuf {
    fixtures().join("tiny-altdiffusion")
}

fn reference() -> Value {
    serde_json::from_slice(&std::fs::read(dir().join("reference.json")).unwrap()).unwrap()
}

#[test]
fn unet_vae_and_three_pipeline_steps_match_diffusers() {
    let r = reference();
    let pipe = AltDiffusion::load(&dir(), DType::F32, &Device::Cpu).unwrap();

    let u = &r["unet"];
    let out_shape = indices(&u["shape"]);
    let sample = tensor(&u["sample"], &out_shape);
    let states = tensor(&u["encoder_hidden_states"], &[2, 5, 24]);
    let got = pipe
        .unet
        .forward(&sample, u["timestep"].as_f64().unwrap(), &states)
        .unwrap();
    let d_unet = max_abs_diff(&got, &tensor(&u["output"], &out_shape));
    assert!(d_unet < 1e-4, "UNet max |Δ| {d_unet}");

    let v = &r["vae"];
    let latents = tensor(&v["latents"], &[1, 4, 8, 8]);
    let decoded = pipe
        .vae
        .decode(&(&latents / pipe.vae.config().scaling_factor).unwrap())
        .unwrap();
    let d_vae = max_abs_diff(&decoded, &tensor(&v["decoded"], &indices(&v["shape"])));
    assert!(d_vae < 1e-4, "VAE max |Δ| {d_vae}");

    let p = &r["pipeline"];
    let opts = GenerateOptions {
        prompt: p["prompt"].as_str().unwrap().into(),
        negative_prompt: p["negative_prompt"].as_str().unwrap().into(),
        steps: p["steps"].as_u64().unwrap() as usize,
        guidance_scale: p["guidance_scale"].as_f64().unwrap(),
        width: 16,
        height: 16,
        scheduler: SchedulerKind::Pndm,
        seed: 0,
        init: None,
        vae_tiling: false,
    };
    let latents = tensor(&p["latents"], &[1, 4, 8, 8]);
    let out = pipe.denoise(latents, &opts, &mut |_, _| {}).unwrap();
    let image = pipe
        .decode(&out, false)
        .unwrap()
        .permute((0, 2, 3, 1))
        .unwrap();
    let d_image = max_abs_diff(&image, &tensor(&p["image"], &indices(&p["image_shape"])));
    assert!(d_image < 1e-4, "pipeline image max |Δ| {d_image}");
    eprintln!("max |Δ|: UNet {d_unet:e}, VAE {d_vae:e}, 3-step pipeline image {d_image:e}");
}

#[test]
fn generate_is_reproducible_from_the_seed_and_refuses_bad_sizes() {
    let pipe = AltDiffusion::load(&dir(), DType::F32, &Device::Cpu).unwrap();
    let opts = GenerateOptions {
        prompt: "一只穿着宇航服的猫，油画".into(),
        negative_prompt: String::new(),
        steps: 2,
        guidance_scale: 7.5,
        width: 16,
        height: 16,
        scheduler: SchedulerKind::EulerAncestral,
        seed: 42,
        init: None,
        vae_tiling: false,
    };
    let mut steps = Vec::new();
    let a = pipe
        .generate(&opts, &mut |i, n| steps.push((i, n)))
        .unwrap();
    assert_eq!(steps, vec![(1, 2), (2, 2)]);
    let b = pipe.generate(&opts, &mut |_, _| {}).unwrap();
    assert_eq!(a, b);
    let c = pipe
        .generate(
            &GenerateOptions {
                seed: 43,
                ..opts.clone()
            },
            &mut |_, _| {},
        )
        .unwrap();
    assert_ne!(a, c);
    let err = pipe
        .generate(&GenerateOptions { width: 15, ..opts }, &mut |_, _| {})
        .unwrap_err();
    assert!(err.to_string().contains("multiples of 2"), "{err}");
    assert!(AltDiffusion::load(
        std::path::Path::new("/nonexistent"),
        DType::F32,
        &Device::Cpu
    )
    .err()
    .unwrap()
    .to_string()
    .contains("model_index.json"));
}

fn options(prompt: &str, negative: &str, steps: usize, guidance: f64) -> GenerateOptions {
    GenerateOptions {
        prompt: prompt.into(),
        negative_prompt: negative.into(),
        steps,
        guidance_scale: guidance,
        width: 16,
        height: 16,
        scheduler: SchedulerKind::Pndm,
        seed: 0,
        init: None,
        vae_tiling: false,
    }
}

fn img2img_reference() -> Value {
    serde_json::from_slice(&std::fs::read(dir().join("img2img.json")).unwrap()).unwrap()
}

#[test]
fn img2img_matches_diffusers_from_the_same_noise() {
    let r = &img2img_reference()["img2img"];
    let pipe = AltDiffusion::load(&dir(), DType::F32, &Device::Cpu).unwrap();
    // 21×19 pixels: rounded down to 20×18 with Pillow's Lanczos, as diffusers does.
    let image = image::open(dir().join("init.png")).unwrap().to_rgb8();
    let pixels = pipe.init_pixels(&image).unwrap();
    let d_pixels = max_abs_diff(&pixels, &tensor(&r["pixels"], &indices(&r["pixels_shape"])));
    assert!(d_pixels < 1e-6, "init pixels max |Δ| {d_pixels}");

    let shape = indices(&r["latent_shape"]);
    let dist = pipe.vae.encode(&pixels).unwrap();
    let d_mean = max_abs_diff(&dist.mean, &tensor(&r["mean"], &shape));
    let d_std = max_abs_diff(&dist.std, &tensor(&r["std"], &shape));
    assert!(
        d_mean < 1e-4 && d_std < 1e-4,
        "encode max |Δ| mean {d_mean}, std {d_std}"
    );

    let opts = GenerateOptions {
        init: Some(InitImage {
            image,
            strength: r["strength"].as_f64().unwrap(),
            sample: true,
        }),
        ..options(
            r["prompt"].as_str().unwrap(),
            "",
            r["steps"].as_u64().unwrap() as usize,
            r["guidance_scale"].as_f64().unwrap(),
        )
    };
    let scheduler = pipe.scheduler(&opts).unwrap();
    // int(5 · 0.6) = 3 of the 5 steps; PNDM's list has one repeated entry.
    assert_eq!(scheduler.timesteps().len(), 4);
    let init = opts.init.as_ref().unwrap();
    let latents = pipe
        .init_latents(
            init,
            &scheduler,
            Some(&tensor(&r["sample_noise"], &shape)),
            &tensor(&r["noise"], &shape),
        )
        .unwrap();
    let mut steps = 0;
    let out = pipe
        .denoise(latents, &opts, &mut |_, _| steps += 1)
        .unwrap();
    assert_eq!(steps, 4);
    let image = pipe
        .decode(&out, false)
        .unwrap()
        .permute((0, 2, 3, 1))
        .unwrap();
    let d_image = max_abs_diff(&image, &tensor(&r["image"], &indices(&r["image_shape"])));
    assert!(d_image < 1e-4, "img2img image max |Δ| {d_image}");
    eprintln!(
        "img2img max |Δ|: pixels {d_pixels:e}, mean {d_mean:e}, std {d_std:e}, image {d_image:e}"
    );

    // The whole call, from the seed: reproducible, and close to the init image at low strength.
    let a = pipe.generate(&opts, &mut |_, _| {}).unwrap();
    assert_eq!(a, pipe.generate(&opts, &mut |_, _| {}).unwrap());
    assert_eq!(a.dimensions(), (20, 18));
    for strength in [0.0, 1.5, f64::NAN] {
        let mut bad = opts.clone();
        bad.init.as_mut().unwrap().strength = strength;
        let err = pipe.generate(&bad, &mut |_, _| {}).unwrap_err();
        assert!(err.to_string().contains("strength"), "{strength}: {err}");
    }
    let mut few = opts.clone();
    few.init.as_mut().unwrap().strength = 0.1;
    let err = pipe.generate(&few, &mut |_, _| {}).unwrap_err();
    assert!(err.to_string().contains("runs no step"), "{err}");
}

#[test]
fn tiled_decode_blends_tiles_as_diffusers_does() {
    let r = &img2img_reference()["tiled"];
    let pipe = AltDiffusion::load(&dir(), DType::F32, &Device::Cpu).unwrap();
    let z = tensor(&r["latents"], &[1, 4, 12, 12]);
    let want = tensor(&r["decoded"], &indices(&r["shape"]));
    let tiled = pipe.vae.decode_tiled(&z).unwrap();
    let d = max_abs_diff(&tiled, &want);
    assert!(d < 1e-4, "tiled decode max |Δ| {d}");
    // The seams differ from the untiled decode, which shows the tiles were used.
    let whole = pipe.vae.decode(&z).unwrap();
    assert!(max_abs_diff(&whole, &want) > 1e-3);
    eprintln!("tiled decode max |Δ| {d:e}");
}

#[test]
fn uncommon_configs_compute_as_diffusers_does() {
    let root = fixtures().join("tiny-uncommon");
    let r: Value =
        serde_json::from_slice(&std::fs::read(root.join("reference.json")).unwrap()).unwrap();
    let pipe = AltDiffusion::load(&root, DType::F32, &Device::Cpu).unwrap();

    let u = &r["unet"];
    let sample = tensor(&u["sample"], &indices(&u["sample_shape"]));
    let states = tensor(&u["encoder_hidden_states"], &indices(&u["states_shape"]));
    let got = pipe
        .unet
        .forward(&sample, u["timestep"].as_f64().unwrap(), &states)
        .unwrap();
    let d_unet = max_abs_diff(&got, &tensor(&u["output"], &indices(&u["shape"])));
    assert!(d_unet < 1e-4, "UNet (odd 5×7 latents) max |Δ| {d_unet}");

    let v = &r["vae"];
    let latents = tensor(&v["latents"], &indices(&v["latent_shape"]));
    let decoded = pipe
        .vae
        .decode(&(&latents / pipe.vae.config().scaling_factor).unwrap())
        .unwrap();
    let d_vae = max_abs_diff(&decoded, &tensor(&v["decoded"], &indices(&v["shape"])));
    assert!(d_vae < 1e-4, "VAE decode max |Δ| {d_vae}");
    let dist = pipe
        .vae
        .encode(&tensor(&v["image"], &indices(&v["image_shape"])))
        .unwrap();
    let shape = dist.mean.dims().to_vec();
    let d_mean = max_abs_diff(&dist.mean, &tensor(&v["mean"], &shape));
    let d_std = max_abs_diff(&dist.std, &tensor(&v["std"], &shape));
    assert!(
        d_mean < 1e-4 && d_std < 1e-4,
        "VAE encode max |Δ| {d_mean}, {d_std}"
    );

    let p = &r["pipeline"];
    let opts = GenerateOptions {
        width: 24,
        ..options(
            p["prompt"].as_str().unwrap(),
            p["negative_prompt"].as_str().unwrap(),
            2,
            p["guidance_scale"].as_f64().unwrap(),
        )
    };
    let out = pipe.denoise(latents, &opts, &mut |_, _| {}).unwrap();
    let image = pipe
        .decode(&out, false)
        .unwrap()
        .permute((0, 2, 3, 1))
        .unwrap();
    let d_image = max_abs_diff(&image, &tensor(&p["image"], &indices(&p["image_shape"])));
    assert!(d_image < 1e-4, "pipeline image max |Δ| {d_image}");
    eprintln!("uncommon max |Δ|: UNet {d_unet:e}, decode {d_vae:e}, encode {d_mean:e}/{d_std:e}, image {d_image:e}");
}

/// PSNR in dB of `a` against `b`, both in `[0, 1]`.
fn psnr(a: &candle_core::Tensor, b: &candle_core::Tensor) -> f64 {
    let mse = (a - b)
        .unwrap()
        .sqr()
        .unwrap()
        .mean_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap() as f64;
    10.0 * (1.0 / mse).log10()
}

#[test]
fn bf16_images_stay_close_to_f32() {
    let kernel = altclip_kernels::Kernel::select(altclip_kernels::Precision::Bf16);
    if kernel.is_none() {
        eprintln!("{}", altclip_kernels::Kernel::Avx512Bf16.skip_line());
        return;
    }
    let r = reference();
    let p = &r["pipeline"];
    let opts = options(p["prompt"].as_str().unwrap(), "", 3, 7.5);
    let latents = tensor(&p["latents"], &[1, 4, 8, 8]);
    let run = |dtype| {
        let pipe = AltDiffusion::load(&dir(), dtype, &Device::Cpu).unwrap();
        let out = pipe
            .denoise(latents.clone(), &opts, &mut |_, _| {})
            .unwrap();
        pipe.decode(&out, false).unwrap()
    };
    let (f32_image, bf16_image) = (run(DType::F32), run(DType::BF16));
    let db = psnr(&bf16_image, &f32_image);
    eprintln!("bf16 ({kernel:?}) vs f32 image: PSNR {db:.1} dB");
    assert!(db >= 35.0, "bf16 image PSNR {db:.1} dB against f32");
}

#[test]
fn options_that_cannot_run_are_refused_before_any_work() {
    let pipe = AltDiffusion::load(&dir(), DType::F32, &Device::Cpu).unwrap();
    let base = options("a cat", "", 2, 7.5);
    for guidance in [f64::NAN, f64::INFINITY] {
        let err = pipe
            .generate(
                &GenerateOptions {
                    guidance_scale: guidance,
                    ..base.clone()
                },
                &mut |_, _| {},
            )
            .unwrap_err();
        assert!(err.to_string().contains("guidance"), "{err}");
    }
    for kind in [
        SchedulerKind::Pndm,
        SchedulerKind::Ddim,
        SchedulerKind::EulerAncestral,
        SchedulerKind::DpmPlusPlus,
    ] {
        // AltDiffusion's steps_offset 1 puts a 1000th step past the schedule.
        let opts = GenerateOptions {
            steps: 1000,
            scheduler: kind,
            ..base.clone()
        };
        match pipe.scheduler(&opts) {
            Ok(s) => assert!(s.timesteps().iter().all(|&t| t < 1000.0), "{kind:?}"),
            Err(e) => assert!(e.to_string().contains("use fewer steps"), "{kind:?}: {e}"),
        }
        pipe.scheduler(&GenerateOptions {
            steps: 1,
            scheduler: kind,
            ..base.clone()
        })
        .unwrap();
        pipe.scheduler(&GenerateOptions {
            steps: 500,
            scheduler: kind,
            ..base.clone()
        })
        .unwrap();
    }
    let one = pipe
        .generate(
            &GenerateOptions {
                steps: 1,
                ..base.clone()
            },
            &mut |_, _| {},
        )
        .unwrap();
    assert_eq!(one.dimensions(), (16, 16));
}
