//! The convolutional layers the UNet and the VAE share, on channels-last
//! (`[B, H, W, C]`) f32 activations: convolutions, GroupNorm(+SiLU), the
//! ResNet block, and the 2× down- and upsamplers. Each loads from diffusers'
//! key names under the view it is given.

use altclip::weights::Weights;
use altclip_kernels::{group_norm, Activation, ConvGeometry, PackedConv2d, PackedUpsampleConv2d};
use candle_core::{DType, Tensor};

use crate::error::Result;

/// A 2-D convolution: packed for the plan's kernel, else candle's.
pub enum Conv2d {
    Packed(PackedConv2d),
    Candle {
        /// `[out, in, kh, kw]`, f32.
        weight: Tensor,
        bias: Option<Tensor>,
        geometry: ConvGeometry,
    },
}

impl Conv2d {
    /// Loads `weight` `[out, in, kh, kw]` and `bias` `[out]`.
    pub fn load(w: &Weights, in_c: usize, out_c: usize, geometry: ConvGeometry) -> Result<Self> {
        let (kh, kw) = geometry.kernel;
        Self::load_stored(w, &[out_c, in_c, kh, kw], in_c, out_c, geometry)
    }

    /// Loads a weight stored with shape `stored` (the same values as
    /// `[out, in, kh, kw]`, e.g. a linear layer's `[out, in]` for 1×1).
    fn load_stored(
        w: &Weights,
        stored: &[usize],
        in_c: usize,
        out_c: usize,
        geometry: ConvGeometry,
    ) -> Result<Self> {
        let (kh, kw) = geometry.kernel;
        let Some(kernel) = w.linear_kernel() else {
            return Ok(Self::Candle {
                weight: w
                    .get_as(stored, "weight", DType::F32)?
                    .reshape((out_c, in_c, kh, kw))?,
                bias: Some(w.get_as(&[out_c], "bias", DType::F32)?),
                geometry,
            });
        };
        let bias = w.read_f32(&[out_c], "bias", |b| Ok(b.to_vec()))?;
        Ok(Self::Packed(w.read_f32(stored, "weight", |data| {
            PackedConv2d::from_f32(data, out_c, in_c, geometry, Some(bias), kernel)
                .map_err(altclip::Error::from)
        })?))
    }

    /// `conv(x)`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.forward_fused(x, None, false, None)
    }

    /// `silu?(conv(x) + sample_bias[b]) + residual`, fused where packed;
    /// `sample_bias` holds `B × out` values.
    pub fn forward_fused(
        &self,
        x: &Tensor,
        sample_bias: Option<&[f32]>,
        silu: bool,
        residual: Option<&Tensor>,
    ) -> Result<Tensor> {
        match self {
            Self::Packed(p) => {
                let act = silu.then_some(Activation::Silu);
                Ok(p.forward(x, sample_bias, act, residual)?)
            }
            Self::Candle {
                weight,
                bias,
                geometry,
            } => {
                let [top, bottom, left, right] = geometry.padding;
                let nchw = x.permute((0, 3, 1, 2))?;
                let nchw = nchw
                    .pad_with_zeros(2, top, bottom)?
                    .pad_with_zeros(3, left, right)?;
                let mut y = nchw.conv2d(weight, 0, geometry.stride, 1, 1)?;
                if let Some(b) = bias {
                    y = y.broadcast_add(&b.reshape((1, (), 1, 1))?)?;
                }
                if let Some(extra) = sample_bias {
                    let (n, c) = (y.dim(0)?, y.dim(1)?);
                    let extra = Tensor::from_slice(extra, (n, c, 1, 1), y.device())?;
                    y = y.broadcast_add(&extra)?;
                }
                if silu {
                    y = y.silu()?;
                }
                let y = y.permute((0, 2, 3, 1))?.contiguous()?;
                Ok(match residual {
                    Some(r) => (y + r)?,
                    None => y,
                })
            }
        }
    }
}

/// A 1×1 convolution or a linear layer over channels: the same product on
/// channels-last activations.
pub fn pointwise(w: &Weights, in_c: usize, out_c: usize, as_conv: bool) -> Result<Conv2d> {
    let stored: &[usize] = match as_conv {
        true => &[out_c, in_c, 1, 1],
        false => &[out_c, in_c],
    };
    Conv2d::load_stored(w, stored, in_c, out_c, ConvGeometry::square(1, 1, 0))
}

/// `GroupNorm(groups, eps)` with affine parameters, optionally followed by SiLU.
pub struct GroupNorm {
    weight: Vec<f32>,
    bias: Vec<f32>,
    groups: usize,
    eps: f64,
}

impl GroupNorm {
    pub fn load(w: &Weights, channels: usize, groups: usize, eps: f64) -> Result<Self> {
        Ok(Self {
            weight: w.read_f32(&[channels], "weight", |v| Ok(v.to_vec()))?,
            bias: w.read_f32(&[channels], "bias", |v| Ok(v.to_vec()))?,
            groups,
            eps,
        })
    }

    /// Normalises channels-last `x` (then SiLU when `silu`).
    pub fn forward(&self, x: &Tensor, silu: bool) -> Result<Tensor> {
        Ok(group_norm(
            x,
            self.groups,
            self.eps,
            &self.weight,
            &self.bias,
            silu,
        )?)
    }
}

/// The norms' group count and epsilon, which diffusers passes down from the
/// model's config to every block.
#[derive(Debug, Clone, Copy)]
pub struct Norms {
    pub groups: usize,
    pub eps: f64,
}

/// diffusers' `ResnetBlock2D` (`time_embedding_norm = "default"`, SiLU):
/// `(shortcut(x) + conv2(silu(norm2(conv1(silu(norm1(x))) + temb)))) / scale`.
pub struct ResnetBlock2D {
    norm1: GroupNorm,
    conv1: Conv2d,
    time_emb_proj: Option<altclip::nn::Linear>,
    norm2: GroupNorm,
    conv2: Conv2d,
    conv_shortcut: Option<Conv2d>,
    output_scale_factor: f64,
}

impl ResnetBlock2D {
    /// `temb_channels` is `None` for the VAE's blocks, which have no time input.
    pub fn load(
        w: &Weights,
        in_c: usize,
        out_c: usize,
        temb_channels: Option<usize>,
        norms: Norms,
        output_scale_factor: f64,
    ) -> Result<Self> {
        let conv3 = ConvGeometry::square(3, 1, 1);
        Ok(Self {
            norm1: GroupNorm::load(&w.pp("norm1"), in_c, norms.groups, norms.eps)?,
            conv1: Conv2d::load(&w.pp("conv1"), in_c, out_c, conv3)?,
            time_emb_proj: temb_channels
                .map(|t| altclip::nn::Linear::load(&w.pp("time_emb_proj"), t, out_c))
                .transpose()?,
            norm2: GroupNorm::load(&w.pp("norm2"), out_c, norms.groups, norms.eps)?,
            conv2: Conv2d::load(&w.pp("conv2"), out_c, out_c, conv3)?,
            conv_shortcut: (in_c != out_c)
                .then(|| {
                    Conv2d::load(
                        &w.pp("conv_shortcut"),
                        in_c,
                        out_c,
                        ConvGeometry::square(1, 1, 0),
                    )
                })
                .transpose()?,
            output_scale_factor,
        })
    }

    /// `x` `[B, H, W, in]`; `temb` `[B, T]` (already the model's SiLU of
    /// the time embedding is taken here, as diffusers does).
    pub fn forward(&self, x: &Tensor, temb: Option<&Tensor>) -> Result<Tensor> {
        let h = self.norm1.forward(x, true)?;
        let time = match (&self.time_emb_proj, temb) {
            (Some(proj), Some(t)) => Some(
                proj.forward(&t.silu()?)?
                    .to_dtype(DType::F32)?
                    .flatten_all()?
                    .to_vec1::<f32>()?,
            ),
            _ => None,
        };
        let h = self.conv1.forward_fused(&h, time.as_deref(), false, None)?;
        let h = self.norm2.forward(&h, true)?;
        let shortcut = match &self.conv_shortcut {
            Some(c) => c.forward(x)?,
            None => x.clone(),
        };
        if self.output_scale_factor == 1.0 {
            return self.conv2.forward_fused(&h, None, false, Some(&shortcut));
        }
        let h = self.conv2.forward(&h)?;
        Ok(((shortcut + h)? / self.output_scale_factor)?)
    }
}

/// diffusers' `Downsample2D` with a convolution: stride 2, `padding` on every
/// side, or with `padding = 0` one zero row and column after (bottom, right).
pub struct Downsample2D {
    conv: Conv2d,
}

impl Downsample2D {
    pub fn load(w: &Weights, channels: usize, padding: usize) -> Result<Self> {
        let geometry = match padding {
            0 => ConvGeometry {
                kernel: (3, 3),
                stride: 2,
                padding: [0, 1, 0, 1],
            },
            p => ConvGeometry::square(3, 2, p),
        };
        Ok(Self {
            conv: Conv2d::load(&w.pp("conv"), channels, channels, geometry)?,
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.conv.forward(x)
    }
}

/// diffusers' `Upsample2D` with a convolution: nearest-neighbour to twice the
/// size (or to `size`, the skip connection's, when the input was odd), then 3×3.
pub enum Upsample2D {
    /// Upsampled, then convolved.
    Convolve(Conv2d),
    /// Both at once, as four 2×2 convolutions on the input (where the size
    /// always doubles and the kernels run): 16 products per input pixel, not 36.
    Phased(PackedUpsampleConv2d),
}

impl Upsample2D {
    /// `doubles`: the caller never asks for another size (the VAE).
    pub fn load(w: &Weights, channels: usize, doubles: bool) -> Result<Self> {
        let w = w.pp("conv");
        let kernel = w.linear_kernel().filter(|_| doubles);
        let Some(kernel) = kernel else {
            return Ok(Self::Convolve(Conv2d::load(
                &w,
                channels,
                channels,
                ConvGeometry::square(3, 1, 1),
            )?));
        };
        let bias = w.read_f32(&[channels], "bias", |b| Ok(b.to_vec()))?;
        Ok(Self::Phased(w.read_f32(
            &[channels, channels, 3, 3],
            "weight",
            |data| {
                PackedUpsampleConv2d::from_f32(data, channels, channels, Some(bias), kernel)
                    .map_err(altclip::Error::from)
            },
        )?))
    }

    pub fn forward(&self, x: &Tensor, size: Option<(usize, usize)>) -> Result<Tensor> {
        let (_, h, w, _) = x.dims4()?;
        let (th, tw) = size.unwrap_or((2 * h, 2 * w));
        match self {
            Self::Phased(p) if (th, tw) == (2 * h, 2 * w) => Ok(p.forward(x)?),
            Self::Phased(_) => Err(crate::Error::Unsupported(format!(
                "an upsampler built for doubling was asked for {th}x{tw} from {h}x{w}"
            ))),
            Self::Convolve(conv) => conv.forward(&nearest(x, th, tw)?),
        }
    }
}

/// PyTorch's `interpolate(mode="nearest")` on channels-last `x`: output row
/// `i` reads input row `floor(i · h / th)`.
pub fn nearest(x: &Tensor, th: usize, tw: usize) -> Result<Tensor> {
    let (_, h, w, _) = x.dims4()?;
    let index = |n: usize, t: usize| -> Result<Tensor> {
        let idx: Vec<u32> = (0..t).map(|i| (i * n / t) as u32).collect();
        Ok(Tensor::from_vec(idx, t, x.device())?)
    };
    let x = x.index_select(&index(h, th)?, 1)?;
    Ok(x.index_select(&index(w, tw)?, 2)?.contiguous()?)
}
