//! diffusers' `UNet2DConditionModel` (Stable Diffusion v1/v2 layout) with
//! its key names: `conv_in`, `time_embedding`, `down_blocks`, `mid_block`,
//! `up_blocks`, `conv_norm_out`, `conv_out`. Activations run channels last
//! in f32; convolutions, linear layers and attention on the plan's kernel.

use std::path::Path;

use altclip::nn::Linear;
use altclip::weights::Weights;
use altclip_kernels::ConvGeometry;
use candle_core::{DType, Device, Tensor};

use crate::config::UNetConfig;
use crate::error::{Error, Result};
use crate::layers::{Conv2d, Downsample2D, GroupNorm, Norms, ResnetBlock2D, Upsample2D};
use crate::transformer::{Transformer2DModel, TransformerShape};

/// One block of the down or up path: ResNets, each followed by its
/// transformer when the block has cross-attention, then the resampler.
struct Block {
    resnets: Vec<ResnetBlock2D>,
    attentions: Vec<Transformer2DModel>,
}

impl Block {
    /// Runs resnet `j` and its transformer, if any.
    fn layer(&self, j: usize, x: &Tensor, temb: &Tensor, context: &Tensor) -> Result<Tensor> {
        let x = self.resnets[j].forward(x, Some(temb))?;
        match self.attentions.get(j) {
            Some(a) => a.forward(&x, context),
            None => Ok(x),
        }
    }
}

struct DownBlock {
    block: Block,
    downsampler: Option<Downsample2D>,
}

struct UpBlock {
    block: Block,
    upsampler: Option<Upsample2D>,
}

struct MidBlock {
    first: ResnetBlock2D,
    layers: Vec<(Transformer2DModel, ResnetBlock2D)>,
}

/// The denoising UNet.
pub struct UNet2DConditionModel {
    config: UNetConfig,
    conv_in: Conv2d,
    linear_1: Linear,
    linear_2: Linear,
    down: Vec<DownBlock>,
    mid: Option<MidBlock>,
    up: Vec<UpBlock>,
    conv_norm_out: GroupNorm,
    conv_out: Conv2d,
}

fn same_padding(k: usize) -> ConvGeometry {
    ConvGeometry::square(k, 1, (k - 1) / 2)
}

impl UNet2DConditionModel {
    /// Loads `dir` (diffusers' `unet/`): `config.json`, checked, and the
    /// weights through `w` (a view of the folder's weight file).
    pub fn load(dir: &Path, w: &Weights) -> Result<Self> {
        let c = UNetConfig::from_file(&dir.join("config.json"))?;
        Self::new(c, w).map_err(|e| match e {
            Error::Engine(e) => {
                crate::config::bad(dir, format!("the weights do not fit config.json: {e}"))
            }
            e => e,
        })
    }

    /// Builds the model of a checked `config` from `w`.
    pub fn new(c: UNetConfig, w: &Weights) -> Result<Self> {
        let ch = &c.block_out_channels;
        let n = ch.len();
        let temb = c.time_embed_dim();
        let norms = Norms {
            groups: c.groups(),
            eps: c.norm_eps,
        };
        let context_dim = c.cross_attention_dim.get(0);
        let heads = c.heads();
        let transformer = |w: &Weights, channels: usize, i: usize, layers: usize| {
            Transformer2DModel::load(
                w,
                TransformerShape {
                    channels,
                    heads: heads.get(i),
                    layers,
                    context_dim,
                    linear_projection: c.use_linear_projection,
                },
                norms,
            )
        };
        let resnet = |w: &Weights, i: usize, o: usize, scale: f64| {
            ResnetBlock2D::load(w, i, o, Some(temb), norms, scale)
        };
        let mut down = Vec::with_capacity(n);
        for (i, kind) in c.down_block_types.iter().enumerate() {
            let w = w.pp("down_blocks").pp(i);
            let (input, out) = (if i == 0 { ch[0] } else { ch[i - 1] }, ch[i]);
            let layers = c.layers_per_block.get(i);
            let resnets = (0..layers)
                .map(|j| {
                    resnet(
                        &w.pp("resnets").pp(j),
                        if j == 0 { input } else { out },
                        out,
                        c.resnet_out_scale_factor,
                    )
                })
                .collect::<Result<_>>()?;
            let attentions = match kind.as_str() {
                "CrossAttnDownBlock2D" => (0..layers)
                    .map(|j| {
                        transformer(
                            &w.pp("attentions").pp(j),
                            out,
                            i,
                            c.transformer_layers_per_block.get(i),
                        )
                    })
                    .collect::<Result<_>>()?,
                _ => Vec::new(),
            };
            let downsampler = (i + 1 < n)
                .then(|| Downsample2D::load(&w.pp("downsamplers").pp(0), out, c.downsample_padding))
                .transpose()?;
            down.push(DownBlock {
                block: Block {
                    resnets,
                    attentions,
                },
                downsampler,
            });
        }
        let mid = match c.mid_block_type {
            Some(_) => {
                let w = w.pp("mid_block");
                let last = ch[n - 1];
                let layers = c.transformer_layers_per_block.get(n - 1);
                let scale = c.mid_block_scale_factor;
                Some(MidBlock {
                    first: resnet(&w.pp("resnets").pp(0), last, last, scale)?,
                    layers: vec![(
                        transformer(&w.pp("attentions").pp(0), last, n - 1, layers)?,
                        resnet(&w.pp("resnets").pp(1), last, last, scale)?,
                    )],
                })
            }
            None => None,
        };
        let mut up = Vec::with_capacity(n);
        let mut prev_out = ch[n - 1];
        for (i, kind) in c.up_block_types.iter().enumerate() {
            let w = w.pp("up_blocks").pp(i);
            let rev = n - 1 - i;
            let out = ch[rev];
            let input = ch[rev.saturating_sub(1)];
            let layers = c.layers_per_block.get(rev) + 1;
            let resnets = (0..layers)
                .map(|j| {
                    let skip = if j == layers - 1 { input } else { out };
                    let from = if j == 0 { prev_out } else { out };
                    resnet(
                        &w.pp("resnets").pp(j),
                        from + skip,
                        out,
                        c.resnet_out_scale_factor,
                    )
                })
                .collect::<Result<_>>()?;
            let attentions = match kind.as_str() {
                "CrossAttnUpBlock2D" => (0..layers)
                    .map(|j| {
                        transformer(
                            &w.pp("attentions").pp(j),
                            out,
                            rev,
                            c.transformer_layers_per_block.get(rev),
                        )
                    })
                    .collect::<Result<_>>()?,
                _ => Vec::new(),
            };
            let upsampler = (i + 1 < n)
                .then(|| Upsample2D::load(&w.pp("upsamplers").pp(0), out, false))
                .transpose()?;
            up.push(UpBlock {
                block: Block {
                    resnets,
                    attentions,
                },
                upsampler,
            });
            prev_out = out;
        }
        Ok(Self {
            conv_in: Conv2d::load(
                &w.pp("conv_in"),
                c.in_channels,
                ch[0],
                same_padding(c.conv_in_kernel),
            )?,
            linear_1: Linear::load(&w.pp("time_embedding.linear_1"), ch[0], temb)?,
            linear_2: Linear::load(&w.pp("time_embedding.linear_2"), temb, temb)?,
            down,
            mid,
            up,
            conv_norm_out: GroupNorm::load(&w.pp("conv_norm_out"), ch[0], norms.groups, norms.eps)?,
            conv_out: Conv2d::load(
                &w.pp("conv_out"),
                ch[0],
                c.out_channels,
                same_padding(c.conv_out_kernel),
            )?,
            config: c,
        })
    }

    /// The config it was built from.
    pub fn config(&self) -> &UNetConfig {
        &self.config
    }

    /// diffusers' sinusoidal `Timesteps` embedding of `t` for `batch` rows,
    /// in f32 as PyTorch computes it.
    fn time_proj(&self, t: f64, batch: usize, device: &Device) -> Result<Tensor> {
        let dim = self.config.block_out_channels[0];
        let half = dim / 2;
        let shift = self.config.freq_shift as f32;
        let log_period = -(10000f64.ln() as f32);
        let args: Vec<f32> = (0..half)
            .map(|i| (log_period * i as f32 / (half as f32 - shift)).exp() * t as f32)
            .collect();
        let (sin, cos): (Vec<f32>, Vec<f32>) = args.iter().map(|a| (a.sin(), a.cos())).unzip();
        let mut row = if self.config.flip_sin_to_cos {
            [cos, sin].concat()
        } else {
            [sin, cos].concat()
        };
        row.resize(dim, 0.0);
        Ok(Tensor::from_vec(row.repeat(batch), (batch, dim), device)?)
    }

    /// The noise prediction for `sample` `[B, C, H, W]` at timestep `t`,
    /// conditioned on `context` `[B, L, cross_attention_dim]`.
    pub fn forward(&self, sample: &Tensor, t: f64, context: &Tensor) -> Result<Tensor> {
        let (b, _, _, _) = sample.dims4()?;
        let context = context.to_dtype(DType::F32)?.contiguous()?;
        let mut x = sample
            .to_dtype(DType::F32)?
            .permute((0, 2, 3, 1))?
            .contiguous()?;
        if self.config.center_input_sample {
            x = ((x * 2.0)? - 1.0)?;
        }
        let temb = self.time_proj(t, b, sample.device())?;
        let temb = self
            .linear_2
            .forward(&self.linear_1.forward(&temb)?.silu()?)?;

        let mut x = self.conv_in.forward(&x)?;
        let mut skips = vec![x.clone()];
        for d in &self.down {
            for j in 0..d.block.resnets.len() {
                x = d.block.layer(j, &x, &temb, &context)?;
                skips.push(x.clone());
            }
            if let Some(ds) = &d.downsampler {
                x = ds.forward(&x)?;
                skips.push(x.clone());
            }
        }
        if let Some(m) = &self.mid {
            x = m.first.forward(&x, Some(&temb))?;
            for (attention, resnet) in &m.layers {
                x = resnet.forward(&attention.forward(&x, &context)?, Some(&temb))?;
            }
        }
        for u in &self.up {
            for j in 0..u.block.resnets.len() {
                let skip = skips.pop().ok_or_else(|| {
                    Error::Unsupported("the UNet ran out of skip connections".into())
                })?;
                x = u
                    .block
                    .layer(j, &Tensor::cat(&[&x, &skip], 3)?, &temb, &context)?;
            }
            if let Some(us) = &u.upsampler {
                // The next skip's size: twice this one's, or one less where
                // the downsampler rounded an odd size up.
                let size = skips
                    .last()
                    .map(Tensor::dims4)
                    .transpose()?
                    .map(|(_, h, w, _)| (h, w));
                x = us.forward(&x, size)?;
            }
        }
        let x = self.conv_norm_out.forward(&x, true)?;
        let x = self.conv_out.forward(&x)?;
        Ok(x.permute((0, 3, 1, 2))?.contiguous()?)
    }
}
