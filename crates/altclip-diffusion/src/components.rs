//! The UNet and VAE of a diffusers folder, on candle-transformers' Stable
//! Diffusion modules (their key names are diffusers'); our part is reading
//! diffusers' `config.json` into candle's config structs and the weights.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use altclip::{DType, Device};
use candle_nn::VarBuilder;
use candle_transformers::models::stable_diffusion::unet_2d::{
    BlockConfig, UNet2DConditionModel, UNet2DConditionModelConfig,
};
use candle_transformers::models::stable_diffusion::vae::{AutoEncoderKL, AutoEncoderKLConfig};
use serde::Deserialize;

use crate::error::{Error, Result};

/// An integer or one per block, as diffusers allows for head counts.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum PerBlock {
    One(usize),
    Each(Vec<usize>),
}

impl PerBlock {
    fn get(&self, i: usize) -> usize {
        match self {
            PerBlock::One(n) => *n,
            PerBlock::Each(v) => v[i.min(v.len() - 1)],
        }
    }
}

fn bad(path: &Path, reason: impl Into<String>) -> Error {
    Error::BadConfig {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T> {
    let text = std::fs::read_to_string(path).map_err(|e| bad(path, e.to_string()))?;
    serde_json::from_str(&text).map_err(|e| bad(path, format!("unexpected contents: {e}")))
}

/// The weight file of a diffusers component folder: safetensors preferred,
/// else PyTorch's `.bin`.
fn weight_file(dir: &Path) -> Result<PathBuf> {
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
        bad(
            dir,
            "no diffusion_pytorch_model.safetensors (or .bin) here; is this a diffusers folder?",
        )
    })
}

/// All tensors of `dir`'s weight file, cast to `dtype` (f32 or f16 files).
fn var_builder(dir: &Path, dtype: DType, device: &Device) -> Result<VarBuilder<'static>> {
    let path = weight_file(dir)?;
    let tensors: HashMap<String, candle_core::Tensor> =
        if path.extension().is_some_and(|e| e == "safetensors") {
            candle_core::safetensors::load(&path, device)?
        } else {
            candle_core::pickle::read_all(&path)?
                .into_iter()
                .map(|(k, t)| Ok((k, t.to_device(device)?)))
                .collect::<Result<_>>()?
        };
    Ok(VarBuilder::from_tensors(tensors, dtype, device))
}

#[derive(Debug, Deserialize)]
struct UNetJson {
    #[serde(default = "four")]
    in_channels: usize,
    #[serde(default = "four")]
    out_channels: usize,
    block_out_channels: Vec<usize>,
    down_block_types: Vec<String>,
    up_block_types: Vec<String>,
    #[serde(default = "two")]
    layers_per_block: usize,
    #[serde(default)]
    attention_head_dim: Option<PerBlock>,
    #[serde(default)]
    num_attention_heads: Option<PerBlock>,
    #[serde(default)]
    transformer_layers_per_block: Option<PerBlock>,
    cross_attention_dim: usize,
    #[serde(default = "thirty_two")]
    norm_num_groups: usize,
    #[serde(default = "eps")]
    norm_eps: f64,
    #[serde(default = "one")]
    downsample_padding: usize,
    #[serde(default = "one_f")]
    mid_block_scale_factor: f64,
    #[serde(default)]
    use_linear_projection: bool,
    #[serde(default)]
    center_input_sample: bool,
    #[serde(default = "yes")]
    flip_sin_to_cos: bool,
    #[serde(default)]
    freq_shift: f64,
    #[serde(default)]
    mid_block_type: Option<String>,
}

fn four() -> usize {
    4
}
fn two() -> usize {
    2
}
fn one() -> usize {
    1
}
fn thirty_two() -> usize {
    32
}
fn one_f() -> f64 {
    1.0
}
fn eps() -> f64 {
    1e-5
}
fn yes() -> bool {
    true
}

/// The denoising UNet of `dir` (diffusers' `unet/`).
pub fn load_unet(dir: &Path, dtype: DType, device: &Device) -> Result<UNet2DConditionModel> {
    let path = dir.join("config.json");
    let c: UNetJson = read_json(&path)?;
    let n = c.block_out_channels.len();
    if c.down_block_types.len() != n || c.up_block_types.len() != n {
        return Err(bad(
            &path,
            "block_out_channels, down_block_types and up_block_types differ in length",
        ));
    }
    if c.mid_block_type
        .as_deref()
        .is_some_and(|m| m != "UNetMidBlock2DCrossAttn")
    {
        return Err(bad(
            &path,
            "only mid_block_type UNetMidBlock2DCrossAttn (Stable Diffusion v1/v2) is supported",
        ));
    }
    // diffusers' SD configs name the head count `attention_head_dim`.
    let heads = c
        .num_attention_heads
        .clone()
        .or(c.attention_head_dim.clone())
        .unwrap_or(PerBlock::One(8));
    let layers = c
        .transformer_layers_per_block
        .clone()
        .unwrap_or(PerBlock::One(1));
    let mut blocks = Vec::with_capacity(n);
    for (i, kind) in c.down_block_types.iter().enumerate() {
        let up = &c.up_block_types[n - 1 - i];
        let use_cross_attn = match (kind.as_str(), up.as_str()) {
            ("CrossAttnDownBlock2D", "CrossAttnUpBlock2D") => Some(layers.get(i)),
            ("DownBlock2D", "UpBlock2D") => None,
            _ => {
                return Err(bad(
                    &path,
                    format!("down block {kind} with up block {up}: only mirrored CrossAttn/plain 2D blocks are supported"),
                ))
            }
        };
        blocks.push(BlockConfig {
            out_channels: c.block_out_channels[i],
            use_cross_attn,
            attention_head_dim: heads.get(i),
        });
    }
    let config = UNet2DConditionModelConfig {
        center_input_sample: c.center_input_sample,
        flip_sin_to_cos: c.flip_sin_to_cos,
        freq_shift: c.freq_shift,
        blocks,
        layers_per_block: c.layers_per_block,
        downsample_padding: c.downsample_padding,
        mid_block_scale_factor: c.mid_block_scale_factor,
        norm_num_groups: c.norm_num_groups,
        norm_eps: c.norm_eps,
        cross_attention_dim: c.cross_attention_dim,
        sliced_attention_size: None,
        use_linear_projection: c.use_linear_projection,
    };
    let vb = var_builder(dir, dtype, device)?;
    UNet2DConditionModel::new(vb, c.in_channels, c.out_channels, false, config)
        .map_err(|e| bad(dir, format!("the weights do not fit config.json: {e}")))
}

#[derive(Debug, Deserialize)]
struct VaeJson {
    #[serde(default = "three")]
    in_channels: usize,
    #[serde(default = "three")]
    out_channels: usize,
    block_out_channels: Vec<usize>,
    #[serde(default = "one")]
    layers_per_block: usize,
    #[serde(default = "four")]
    latent_channels: usize,
    #[serde(default = "thirty_two")]
    norm_num_groups: usize,
    #[serde(default = "scaling")]
    scaling_factor: f64,
    #[serde(default = "yes")]
    use_quant_conv: bool,
    #[serde(default = "yes")]
    use_post_quant_conv: bool,
}

fn three() -> usize {
    3
}
fn scaling() -> f64 {
    0.18215
}

/// The VAE of `dir` (diffusers' `vae/`), its latent scaling factor and its
/// downsampling factor.
pub struct Vae {
    pub model: AutoEncoderKL,
    pub scaling_factor: f64,
    pub latent_channels: usize,
    /// Image pixels per latent pixel along each side.
    pub factor: usize,
}

/// Loads diffusers' `vae/`.
pub fn load_vae(dir: &Path, dtype: DType, device: &Device) -> Result<Vae> {
    let c: VaeJson = read_json(&dir.join("config.json"))?;
    let config = AutoEncoderKLConfig {
        block_out_channels: c.block_out_channels.clone(),
        layers_per_block: c.layers_per_block,
        latent_channels: c.latent_channels,
        norm_num_groups: c.norm_num_groups,
        use_quant_conv: c.use_quant_conv,
        use_post_quant_conv: c.use_post_quant_conv,
    };
    let vb = var_builder(dir, dtype, device)?;
    let model = AutoEncoderKL::new(vb, c.in_channels, c.out_channels, config)
        .map_err(|e| bad(dir, format!("the weights do not fit config.json: {e}")))?;
    Ok(Vae {
        model,
        scaling_factor: c.scaling_factor,
        latent_channels: c.latent_channels,
        factor: 1 << (c.block_out_channels.len() - 1),
    })
}
