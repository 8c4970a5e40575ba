//! Scheduler step math against diffusers' (tests/fixtures/diffusion/schedulers.json,
//! made by scripts/make_diffusion_fixtures.py with diffusers 0.42.1).

use altclip_diffusion::{Scheduler, SchedulerConfig, SchedulerKind};
use candle_core::Tensor;
use serde_json::Value;

mod common;
use common::{fixtures, max_abs, max_abs_diff};

fn fixture() -> Value {
    serde_json::from_slice(&std::fs::read(fixtures().join("schedulers.json")).unwrap()).unwrap()
}

/// A `[1, 4, 4, 4]` sample of the fixture.
fn tensor(v: &Value) -> Tensor {
    common::tensor(v, &[1, 4, 4, 4])
}

#[test]
fn every_scheduler_matches_diffusers_step_by_step() {
    let f = fixture();
    let cfg: SchedulerConfig = serde_json::from_value(f["config"].clone()).unwrap();
    let mut worst = 0f32;
    for case in f["cases"].as_array().unwrap() {
        let kind: SchedulerKind = case["kind"].as_str().unwrap().parse().unwrap();
        let steps = case["steps"].as_u64().unwrap() as usize;
        let mut s = Scheduler::new(kind, &cfg, steps).unwrap();
        let want_t: Vec<f64> = case["timesteps"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t.as_f64().unwrap())
            .collect();
        assert_eq!(s.timesteps(), &want_t[..], "{kind:?} {steps}");
        let sigma = case["init_noise_sigma"].as_f64().unwrap();
        assert!(
            (s.init_noise_sigma() - sigma).abs() < 1e-5 * sigma,
            "{kind:?}: {} vs {sigma}",
            s.init_noise_sigma()
        );
        let mut sample = tensor(&case["sample"]);
        for (i, step) in case["trace"].as_array().unwrap().iter().enumerate() {
            let scaled = s.scale_model_input(&sample, i).unwrap();
            let d = max_abs_diff(&scaled, &tensor(&step["scaled_input"]));
            assert!(
                d < 1e-4,
                "{kind:?} {steps} step {i}: scaled input off by {d}"
            );
            let noise = step["noise"].is_array().then(|| tensor(&step["noise"]));
            let out = s
                .step(&tensor(&step["model_output"]), i, &sample, noise.as_ref())
                .unwrap();
            let want = tensor(&step["prev_sample"]);
            let scale = max_abs(&want).max(1.0);
            let d = max_abs_diff(&out, &want) / scale;
            worst = worst.max(d);
            assert!(
                d < 2e-6,
                "{kind:?} {steps} step {i}: off by {d} (relative to {scale})"
            );
            // Continue from diffusers' sample so errors do not compound.
            sample = want;
        }
    }
    eprintln!("worst relative step difference: {worst:e}");
}
