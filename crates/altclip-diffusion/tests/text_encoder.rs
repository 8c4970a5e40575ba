//! AltDiffusion's text encoder against diffusers' `RobertaSeriesModelWithTransformation`
//! (tiny random fixtures from scripts/make_diffusion_fixtures.py).

use altclip::text::TextInputs;
use altclip::{DType, Device};
use altclip_diffusion::TextEncoder;
use serde_json::Value;

mod common;
use common::{fixtures, ids, indices};

fn check(name: &str) -> f32 {
    let dir = fixtures().join(name);
    let want: Value =
        serde_json::from_slice(&std::fs::read(dir.join("outputs.json")).unwrap()).unwrap();
    let plan = altclip::ComputePlan::new(DType::F32, false, &Device::Cpu);
    let enc = TextEncoder::load(&dir, &plan, &Device::Cpu).unwrap();
    // The unpadded ids (as the attention mask says), padded back to the
    // reference's length: the mask covers exactly the real tokens.
    let padded = ids(&want["input_ids"]);
    let lengths = ids(&want["attention_mask"]);
    let real: Vec<Vec<u32>> = padded
        .iter()
        .zip(&lengths)
        .map(|(row, mask)| row[..mask.iter().filter(|&&m| m == 1).count()].to_vec())
        .collect();
    let inputs = TextInputs::padded_to(&real, padded[0].len(), 1, &Device::Cpu).unwrap();
    let got = enc.forward(&inputs).unwrap();
    let shape = indices(&want["shape"]);
    assert_eq!(got.dims(), &shape[..], "{name}");
    let got: Vec<Vec<Vec<f32>>> = got.to_vec3().unwrap();
    let mut worst = 0f32;
    for (b, row) in want["projection_state"]
        .as_array()
        .unwrap()
        .iter()
        .enumerate()
    {
        let flat: Vec<f32> = got[b].iter().flatten().copied().collect();
        for (g, w) in flat.iter().zip(row.as_array().unwrap()) {
            worst = worst.max((g - w.as_f64().unwrap() as f32).abs());
        }
    }
    assert!(worst < 1e-5, "{name}: max |Δ| {worst}");
    worst
}

#[test]
fn altdiffusion_text_encoder_matches_diffusers() {
    let d = check("text-encoder");
    eprintln!("text-encoder max |Δ| {d:e}");
}

#[test]
fn m18_text_encoder_uses_the_penultimate_layer_and_pre_ln() {
    let d = check("text-encoder-m18");
    eprintln!("text-encoder-m18 max |Δ| {d:e}");
}
