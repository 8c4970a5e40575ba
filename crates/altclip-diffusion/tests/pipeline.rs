//! UNet, VAE and the whole AltDiffusion pipeline against diffusers on a tiny
//! random pipeline (tests/fixtures/diffusion/tiny-altdiffusion, made by
//! scripts/make_diffusion_fixtures.py with diffusers 0.42.1).

use std::path::PathBuf;

use altclip::{DType, Device};
use altclip_diffusion::{AltDiffusion, GenerateOptions, SchedulerKind};
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
        .model
        .decode(&(&latents / pipe.vae.scaling_factor).unwrap())
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
    };
    let latents = tensor(&p["latents"], &[1, 4, 8, 8]);
    let out = pipe.denoise(latents, &opts, &mut |_, _| {}).unwrap();
    let image = pipe.decode(&out).unwrap().permute((0, 2, 3, 1)).unwrap();
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
