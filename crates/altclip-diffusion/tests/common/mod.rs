//! Helpers shared by the diffusion test binaries.
#![allow(dead_code)] // each test binary uses its own subset

use std::path::PathBuf;

use candle_core::{Device, Tensor};
use serde_json::Value;

#[path = "../../../../tests/support/fixtures.rs"]
mod support;
#[allow(unused_imports)] // each test binary uses its own subset
pub use support::{ids, indices};

/// `tests/fixtures/diffusion/`.
pub fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/diffusion")
}

/// A JSON list of numbers as a tensor of `shape`.
pub fn tensor(v: &Value, shape: &[usize]) -> Tensor {
    let data: Vec<f32> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect();
    Tensor::from_vec(data, shape, &Device::Cpu).unwrap()
}

/// The largest absolute element of `t`.
pub fn max_abs(t: &Tensor) -> f32 {
    t.abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar()
        .unwrap()
}

/// max |a − b|.
pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    max_abs(&(a - b).unwrap())
}
