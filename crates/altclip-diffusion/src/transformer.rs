//! The attention parts of the UNet and VAE: diffusers' `Attention` (to_q,
//! to_k, to_v, to_out.0), the GEGLU feed-forward, `BasicTransformerBlock`
//! and `Transformer2DModel`, on channels-last activations.

use altclip::nn::{LayerNorm, Linear};
use altclip::weights::Weights;
use altclip_kernels::{attention_blocked, geglu, Kernel};
use candle_core::{Tensor, D};

use crate::error::Result;
use crate::layers::{pointwise, Conv2d, GroupNorm, Norms};

/// Queries per chunk on candle's path, which materialises its scores.
const CANDLE_QUERY_CHUNK: usize = 1024;

/// Multi-head attention; keys and values come from `context` when given
/// (cross-attention), else from the queries' input.
pub struct Attention {
    to_q: Linear,
    to_k: Linear,
    to_v: Linear,
    to_out: Linear,
    heads: usize,
    kernel: Option<Kernel>,
}

impl Attention {
    /// `bias`: whether q/k/v have biases (the VAE's do, the UNet's do not).
    pub fn load(
        w: &Weights,
        query_dim: usize,
        context_dim: usize,
        heads: usize,
        dim_head: usize,
        bias: bool,
    ) -> Result<Self> {
        let inner = heads * dim_head;
        let proj = |name: &str, from: usize| match bias {
            true => Linear::load(&w.pp(name), from, inner),
            false => Linear::load_no_bias(&w.pp(name), from, inner),
        };
        Ok(Self {
            to_q: proj("to_q", query_dim)?,
            to_k: proj("to_k", context_dim)?,
            to_v: proj("to_v", context_dim)?,
            to_out: Linear::load(&w.pp("to_out").pp(0), inner, query_dim)?,
            heads,
            kernel: w.linear_kernel(),
        })
    }

    /// `to_out(attention(x, context)) + residual` for `x` `[B, L, query_dim]`.
    pub fn forward(
        &self,
        x: &Tensor,
        context: Option<&Tensor>,
        residual: Option<&Tensor>,
    ) -> Result<Tensor> {
        let context = context.unwrap_or(x);
        let q = self.to_q.forward(x)?;
        let k = self.to_k.forward(context)?;
        let v = self.to_v.forward(context)?;
        let dim_head = q.dim(D::Minus1)? / self.heads;
        let scale = (dim_head as f64).powf(-0.5);
        let out = match self.kernel {
            Some(kernel) => attention_blocked(&q, &k, &v, self.heads, scale as f32, kernel)?,
            None => candle_attention(&q, &k, &v, self.heads, scale)?,
        };
        Ok(self.to_out.forward_fused(&out, None, residual)?)
    }
}

/// `softmax(scale·QKᵀ)·V` with candle's matmul, in chunks of queries.
fn candle_attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    heads: usize,
    scale: f64,
) -> Result<Tensor> {
    let (b, lq, d) = q.dims3()?;
    let lk = k.dim(1)?;
    let dh = d / heads;
    let split = |t: &Tensor, l: usize| -> Result<Tensor> {
        Ok(t.reshape((b, l, heads, dh))?
            .transpose(1, 2)?
            .contiguous()?)
    };
    let (q, k, v) = (split(q, lq)?, split(k, lk)?, split(v, lk)?);
    let kt = k.t()?.contiguous()?;
    let mut parts = Vec::new();
    for start in (0..lq).step_by(CANDLE_QUERY_CHUNK) {
        let len = CANDLE_QUERY_CHUNK.min(lq - start);
        let s = (q.narrow(2, start, len)?.matmul(&kt)? * scale)?;
        parts.push(candle_nn::ops::softmax_last_dim(&s)?.matmul(&v)?);
    }
    Ok(Tensor::cat(&parts, 2)?
        .transpose(1, 2)?
        .reshape((b, lq, d))?)
}

/// diffusers' `FeedForward` with GEGLU: `net.2(geglu(net.0.proj(x)))`.
struct FeedForward {
    proj: Linear,
    out: Linear,
}

impl FeedForward {
    fn load(w: &Weights, dim: usize) -> Result<Self> {
        let inner = 4 * dim;
        Ok(Self {
            proj: Linear::load(&w.pp("net.0.proj"), dim, 2 * inner)?,
            out: Linear::load(&w.pp("net.2"), inner, dim)?,
        })
    }

    fn forward(&self, x: &Tensor, residual: &Tensor) -> Result<Tensor> {
        let h = geglu(&self.proj.forward(x)?)?;
        Ok(self.out.forward_fused(&h, None, Some(residual))?)
    }
}

/// diffusers' `BasicTransformerBlock` (layer norms, self-attention,
/// cross-attention, GEGLU feed-forward, each with its residual).
struct BasicTransformerBlock {
    norm1: LayerNorm,
    attn1: Attention,
    norm2: LayerNorm,
    attn2: Attention,
    norm3: LayerNorm,
    ff: FeedForward,
}

impl BasicTransformerBlock {
    fn load(w: &Weights, dim: usize, heads: usize, context_dim: usize) -> Result<Self> {
        let dh = dim / heads;
        Ok(Self {
            norm1: LayerNorm::load(&w.pp("norm1"), dim, 1e-5)?,
            attn1: Attention::load(&w.pp("attn1"), dim, dim, heads, dh, false)?,
            norm2: LayerNorm::load(&w.pp("norm2"), dim, 1e-5)?,
            attn2: Attention::load(&w.pp("attn2"), dim, context_dim, heads, dh, false)?,
            norm3: LayerNorm::load(&w.pp("norm3"), dim, 1e-5)?,
            ff: FeedForward::load(&w.pp("ff"), dim)?,
        })
    }

    fn forward(&self, x: &Tensor, context: &Tensor) -> Result<Tensor> {
        let x = self.attn1.forward(&self.norm1.forward(x)?, None, Some(x))?;
        let x = self
            .attn2
            .forward(&self.norm2.forward(&x)?, Some(context), Some(&x))?;
        self.ff.forward(&self.norm3.forward(&x)?, &x)
    }
}

/// diffusers' `Transformer2DModel` over an image's pixels: GroupNorm,
/// `proj_in` (1×1 conv or linear), the blocks, `proj_out`, residual.
pub struct Transformer2DModel {
    norm: GroupNorm,
    proj_in: Conv2d,
    blocks: Vec<BasicTransformerBlock>,
    proj_out: Conv2d,
}

/// What shapes a [`Transformer2DModel`].
#[derive(Debug, Clone, Copy)]
pub struct TransformerShape {
    pub channels: usize,
    pub heads: usize,
    pub layers: usize,
    pub context_dim: usize,
    pub linear_projection: bool,
}

impl Transformer2DModel {
    pub fn load(w: &Weights, s: TransformerShape, norms: Norms) -> Result<Self> {
        let c = s.channels;
        Ok(Self {
            // diffusers builds this norm with eps 1e-6, whatever the UNet's norm_eps.
            norm: GroupNorm::load(&w.pp("norm"), c, norms.groups, 1e-6)?,
            proj_in: pointwise(&w.pp("proj_in"), c, c, !s.linear_projection)?,
            blocks: (0..s.layers)
                .map(|i| {
                    BasicTransformerBlock::load(
                        &w.pp("transformer_blocks").pp(i),
                        c,
                        s.heads,
                        s.context_dim,
                    )
                })
                .collect::<Result<_>>()?,
            proj_out: pointwise(&w.pp("proj_out"), c, c, !s.linear_projection)?,
        })
    }

    /// `x` `[B, H, W, C]`, `context` `[B, L, context_dim]`.
    pub fn forward(&self, x: &Tensor, context: &Tensor) -> Result<Tensor> {
        let (b, h, w, c) = x.dims4()?;
        let mut t = self
            .proj_in
            .forward(&self.norm.forward(x, false)?)?
            .reshape((b, h * w, c))?;
        for block in &self.blocks {
            t = block.forward(&t, context)?;
        }
        self.proj_out
            .forward_fused(&t.reshape((b, h, w, c))?, None, false, Some(x))
    }
}

/// The VAE's mid-block attention: GroupNorm, one head over all pixels,
/// `to_out.0`, residual.
pub struct SpatialAttention {
    norm: GroupNorm,
    attention: Attention,
}

impl SpatialAttention {
    pub fn load(w: &Weights, channels: usize, norms: Norms) -> Result<Self> {
        Ok(Self {
            norm: GroupNorm::load(&w.pp("group_norm"), channels, norms.groups, norms.eps)?,
            attention: Attention::load(w, channels, channels, 1, channels, true)?,
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (b, h, w, c) = x.dims4()?;
        let t = self.norm.forward(x, false)?.reshape((b, h * w, c))?;
        let flat = x.reshape((b, h * w, c))?;
        Ok(self
            .attention
            .forward(&t, None, Some(&flat))?
            .reshape((b, h, w, c))?)
    }
}
