//! diffusers' `AutoencoderKL` with its key names: `encoder`, `quant_conv`,
//! `post_quant_conv`, `decoder`. Decoding can run in overlapping tiles
//! blended as diffusers' `tiled_decode` blends them, so that large images
//! fit in memory.

use std::path::Path;

use altclip::weights::Weights;
use altclip_kernels::ConvGeometry;
use candle_core::{DType, Tensor};

use crate::config::VaeConfig;
use crate::error::{Error, Result};
use crate::layers::{Conv2d, Downsample2D, GroupNorm, Norms, ResnetBlock2D, Upsample2D};
use crate::transformer::SpatialAttention;

/// diffusers builds every VAE norm with this epsilon.
const VAE_EPS: f64 = 1e-6;
/// diffusers' `tile_overlap_factor`.
const TILE_OVERLAP: f64 = 0.25;

/// `UNetMidBlock2D`: ResNet, optional attention, ResNet.
struct MidBlock {
    first: ResnetBlock2D,
    attention: Option<SpatialAttention>,
    second: ResnetBlock2D,
}

impl MidBlock {
    fn load(w: &Weights, channels: usize, norms: Norms, attention: bool) -> Result<Self> {
        let resnet = |j: usize| {
            ResnetBlock2D::load(&w.pp("resnets").pp(j), channels, channels, None, norms, 1.0)
        };
        Ok(Self {
            first: resnet(0)?,
            attention: attention
                .then(|| SpatialAttention::load(&w.pp("attentions").pp(0), channels, norms))
                .transpose()?,
            second: resnet(1)?,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut x = self.first.forward(x, None)?;
        if let Some(a) = &self.attention {
            x = a.forward(&x)?;
        }
        self.second.forward(&x, None)
    }
}

struct Encoder {
    conv_in: Conv2d,
    blocks: Vec<(Vec<ResnetBlock2D>, Option<Downsample2D>)>,
    mid: MidBlock,
    conv_norm_out: GroupNorm,
    conv_out: Conv2d,
}

struct Decoder {
    conv_in: Conv2d,
    mid: MidBlock,
    blocks: Vec<(Vec<ResnetBlock2D>, Option<Upsample2D>)>,
    conv_norm_out: GroupNorm,
    conv_out: Conv2d,
}

/// The VAE, with its latent scaling.
pub struct AutoencoderKL {
    config: VaeConfig,
    encoder: Encoder,
    quant_conv: Option<Conv2d>,
    post_quant_conv: Option<Conv2d>,
    decoder: Decoder,
}

/// The latent distribution of an encoded image: `mean` and `std`, `[B, L, h, w]`.
pub struct LatentDistribution {
    pub mean: Tensor,
    pub std: Tensor,
}

impl LatentDistribution {
    /// `mean + std · noise` (diffusers' `sample`), or the mean without noise.
    pub fn latents(&self, noise: Option<&Tensor>) -> Result<Tensor> {
        Ok(match noise {
            Some(n) => (&self.mean + (&self.std * n)?)?,
            None => self.mean.clone(),
        })
    }
}

fn conv3(w: &Weights, i: usize, o: usize) -> Result<Conv2d> {
    Conv2d::load(w, i, o, ConvGeometry::square(3, 1, 1))
}

fn conv1(w: &Weights, i: usize, o: usize) -> Result<Conv2d> {
    Conv2d::load(w, i, o, ConvGeometry::square(1, 1, 0))
}

fn nhwc(x: &Tensor) -> Result<Tensor> {
    Ok(x.to_dtype(DType::F32)?
        .permute((0, 2, 3, 1))?
        .contiguous()?)
}

fn nchw(x: &Tensor) -> Result<Tensor> {
    Ok(x.permute((0, 3, 1, 2))?.contiguous()?)
}

impl AutoencoderKL {
    /// Loads `dir` (diffusers' `vae/`): `config.json`, checked, and the
    /// weights through `w`.
    pub fn load(dir: &Path, w: &Weights) -> Result<Self> {
        let c = VaeConfig::from_file(&dir.join("config.json"))?;
        Self::new(c, w).map_err(|e| match e {
            Error::Engine(e) => {
                crate::config::bad(dir, format!("the weights do not fit config.json: {e}"))
            }
            e => e,
        })
    }

    /// Builds the VAE of a checked `config` from `w`.
    pub fn new(c: VaeConfig, w: &Weights) -> Result<Self> {
        let ch = &c.block_out_channels;
        let n = ch.len();
        let norms = Norms {
            groups: c.norm_num_groups,
            eps: VAE_EPS,
        };
        let resnet =
            |w: &Weights, i: usize, o: usize| ResnetBlock2D::load(w, i, o, None, norms, 1.0);
        let (l, last) = (c.latent_channels, ch[n - 1]);

        let e = w.pp("encoder");
        let mut blocks = Vec::with_capacity(n);
        for i in 0..n {
            let w = e.pp("down_blocks").pp(i);
            let (input, out) = (if i == 0 { ch[0] } else { ch[i - 1] }, ch[i]);
            let resnets = (0..c.layers_per_block)
                .map(|j| {
                    resnet(
                        &w.pp("resnets").pp(j),
                        if j == 0 { input } else { out },
                        out,
                    )
                })
                .collect::<Result<_>>()?;
            let down = (i + 1 < n)
                .then(|| Downsample2D::load(&w.pp("downsamplers").pp(0), out, 0))
                .transpose()?;
            blocks.push((resnets, down));
        }
        let encoder = Encoder {
            conv_in: conv3(&e.pp("conv_in"), c.in_channels, ch[0])?,
            blocks,
            mid: MidBlock::load(&e.pp("mid_block"), last, norms, c.mid_block_add_attention)?,
            conv_norm_out: GroupNorm::load(&e.pp("conv_norm_out"), last, norms.groups, VAE_EPS)?,
            conv_out: conv3(&e.pp("conv_out"), last, 2 * l)?,
        };

        let d = w.pp("decoder");
        let mut blocks = Vec::with_capacity(n);
        let mut prev = last;
        for i in 0..n {
            let w = d.pp("up_blocks").pp(i);
            let out = ch[n - 1 - i];
            let resnets = (0..=c.layers_per_block)
                .map(|j| resnet(&w.pp("resnets").pp(j), if j == 0 { prev } else { out }, out))
                .collect::<Result<_>>()?;
            let up = (i + 1 < n)
                .then(|| Upsample2D::load(&w.pp("upsamplers").pp(0), out, true))
                .transpose()?;
            blocks.push((resnets, up));
            prev = out;
        }
        let decoder = Decoder {
            conv_in: conv3(&d.pp("conv_in"), l, last)?,
            mid: MidBlock::load(&d.pp("mid_block"), last, norms, c.mid_block_add_attention)?,
            blocks,
            conv_norm_out: GroupNorm::load(&d.pp("conv_norm_out"), ch[0], norms.groups, VAE_EPS)?,
            conv_out: conv3(&d.pp("conv_out"), ch[0], c.out_channels)?,
        };
        Ok(Self {
            quant_conv: c
                .use_quant_conv
                .then(|| conv1(&w.pp("quant_conv"), 2 * l, 2 * l))
                .transpose()?,
            post_quant_conv: c
                .use_post_quant_conv
                .then(|| conv1(&w.pp("post_quant_conv"), l, l))
                .transpose()?,
            config: c,
            encoder,
            decoder,
        })
    }

    /// The config it was built from.
    pub fn config(&self) -> &VaeConfig {
        &self.config
    }

    /// Image pixels per latent pixel along each side.
    pub fn factor(&self) -> usize {
        self.config.factor()
    }

    /// The latent distribution of `images` `[B, 3, H, W]` in `[-1, 1]`
    /// (unscaled: multiply by `scaling_factor` for the UNet).
    pub fn encode(&self, images: &Tensor) -> Result<LatentDistribution> {
        let e = &self.encoder;
        let mut x = e.conv_in.forward(&nhwc(images)?)?;
        for (resnets, down) in &e.blocks {
            for r in resnets {
                x = r.forward(&x, None)?;
            }
            if let Some(d) = down {
                x = d.forward(&x)?;
            }
        }
        let x = e.mid.forward(&x)?;
        let mut x = e.conv_out.forward(&e.conv_norm_out.forward(&x, true)?)?;
        if let Some(q) = &self.quant_conv {
            x = q.forward(&x)?;
        }
        let moments = nchw(&x)?;
        let l = self.config.latent_channels;
        let mean = moments.narrow(1, 0, l)?.contiguous()?;
        let logvar = moments.narrow(1, l, l)?.clamp(-30f32, 20f32)?;
        let std = (logvar * 0.5)?.exp()?;
        Ok(LatentDistribution { mean, std })
    }

    /// Images `[B, 3, H, W]` (about `[-1, 1]`) from unscaled latents `z`.
    pub fn decode(&self, z: &Tensor) -> Result<Tensor> {
        let mut x = nhwc(z)?;
        if let Some(p) = &self.post_quant_conv {
            x = p.forward(&x)?;
        }
        let d = &self.decoder;
        let mut x = d.mid.forward(&d.conv_in.forward(&x)?)?;
        for (resnets, up) in &d.blocks {
            for r in resnets {
                x = r.forward(&x, None)?;
            }
            if let Some(u) = up {
                x = u.forward(&x, None)?;
            }
        }
        let x = d.conv_out.forward(&d.conv_norm_out.forward(&x, true)?)?;
        nchw(&x)
    }

    /// `(tile_sample_min_size, tile_latent_min_size)`, as diffusers derives
    /// them from `sample_size`.
    pub fn tile_sizes(&self) -> (usize, usize) {
        let sample = self.config.sample_size.unwrap_or(32);
        (sample, sample / self.factor())
    }

    /// [`AutoencoderKL::decode`] in overlapping tiles when `z` is larger
    /// than one tile, blended as diffusers' `tiled_decode` blends them (the
    /// same tiles, the same linear ramps, the same order of in-place blends).
    pub fn decode_tiled(&self, z: &Tensor) -> Result<Tensor> {
        let (sample, latent) = self.tile_sizes();
        let (_, _, h, w) = z.dims4()?;
        if (h <= latent && w <= latent) || latent == 0 {
            return self.decode(z);
        }
        let overlap = ((latent as f64 * (1.0 - TILE_OVERLAP)) as usize).max(1);
        let blend = (sample as f64 * TILE_OVERLAP) as usize;
        let limit = sample - blend;
        let mut rows: Vec<Vec<Tensor>> = Vec::new();
        for i in (0..h).step_by(overlap) {
            let mut row = Vec::new();
            for j in (0..w).step_by(overlap) {
                let tile = z
                    .narrow(2, i, latent.min(h - i))?
                    .narrow(3, j, latent.min(w - j))?;
                row.push(self.decode(&tile.contiguous()?)?);
            }
            rows.push(row);
        }
        for i in 0..rows.len() {
            for j in 0..rows[i].len() {
                if i > 0 {
                    rows[i][j] = blend_along(&rows[i - 1][j], &rows[i][j], blend, 2)?;
                }
                if j > 0 {
                    rows[i][j] = blend_along(&rows[i][j - 1], &rows[i][j], blend, 3)?;
                }
            }
        }
        let mut out_rows = Vec::with_capacity(rows.len());
        for row in &rows {
            let cropped = row
                .iter()
                .map(|t| {
                    let t = t.narrow(2, 0, limit.min(t.dim(2)?))?;
                    Ok(t.narrow(3, 0, limit.min(t.dim(3)?))?)
                })
                .collect::<Result<Vec<_>>>()?;
            out_rows.push(Tensor::cat(&cropped, 3)?);
        }
        Ok(Tensor::cat(&out_rows, 2)?)
    }
}

/// diffusers' `blend_v` (`dim` 2) / `blend_h` (`dim` 3): the first `extent`
/// rows (columns) of `b` ramp linearly from the last ones of `a` into `b`.
fn blend_along(a: &Tensor, b: &Tensor, extent: usize, dim: usize) -> Result<Tensor> {
    let extent = extent.min(a.dim(dim)?).min(b.dim(dim)?);
    if extent == 0 {
        return Ok(b.clone());
    }
    let len = b.dim(dim)?;
    let ramp: Vec<f32> = (0..extent).map(|y| y as f32 / extent as f32).collect();
    let mut shape = vec![1; 4];
    shape[dim] = extent;
    let ramp = Tensor::from_vec(ramp, shape, b.device())?;
    let tail = a.narrow(dim, a.dim(dim)? - extent, extent)?;
    let head = b.narrow(dim, 0, extent)?;
    let mixed = (tail.broadcast_mul(&(1.0 - &ramp)?)? + head.broadcast_mul(&ramp)?)?;
    Ok(Tensor::cat(
        &[mixed, b.narrow(dim, extent, len - extent)?],
        dim,
    )?)
}
