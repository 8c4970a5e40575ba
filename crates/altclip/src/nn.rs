//! The few layers both towers are made of, loaded by checkpoint key names.

use candle_core::{DType, Tensor, D};

use crate::config::Activation;
use crate::error::Result;
use crate::weights::Weights;

/// `y = x·Wᵀ + b`, with `W` stored `[out, in]` as in PyTorch.
#[derive(Debug, Clone)]
pub struct Linear {
    weight: Tensor,
    bias: Option<Tensor>,
}

impl Linear {
    /// Loads `{name}.weight` and `{name}.bias`.
    pub fn load(w: &Weights, in_dim: usize, out_dim: usize) -> Result<Self> {
        Ok(Self {
            weight: w.get(&[out_dim, in_dim], "weight")?,
            bias: Some(w.get(&[out_dim], "bias")?),
        })
    }

    /// Loads `{name}.weight` only, for bias-free projections.
    pub fn load_no_bias(w: &Weights, in_dim: usize, out_dim: usize) -> Result<Self> {
        Ok(Self {
            weight: w.get(&[out_dim, in_dim], "weight")?,
            bias: None,
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let w = self.weight.t()?;
        let y = match x.dims() {
            [b, l, d] => x.reshape((b * l, *d))?.matmul(&w)?.reshape((*b, *l, ()))?,
            _ => x.matmul(&w)?,
        };
        Ok(match &self.bias {
            Some(b) => y.broadcast_add(b)?,
            None => y,
        })
    }
}

/// LayerNorm over the last dimension; statistics are always taken in f32.
#[derive(Debug, Clone)]
pub struct LayerNorm {
    weight: Tensor,
    bias: Tensor,
    eps: f64,
}

impl LayerNorm {
    pub fn load(w: &Weights, dim: usize, eps: f64) -> Result<Self> {
        Ok(Self {
            weight: w.get_as(&[dim], "weight", DType::F32)?,
            bias: w.get_as(&[dim], "bias", DType::F32)?,
            eps,
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let dtype = x.dtype();
        let x = x.to_dtype(DType::F32)?.contiguous()?;
        let y = candle_nn::ops::layer_norm(&x, &self.weight, &self.bias, self.eps as f32)?;
        Ok(y.to_dtype(dtype)?)
    }
}

/// Applies a config-named activation.
pub fn activate(act: Activation, x: &Tensor) -> Result<Tensor> {
    Ok(match act {
        Activation::Gelu => x.gelu_erf()?,
        Activation::GeluNew | Activation::GeluPytorchTanh => x.gelu()?,
        Activation::QuickGelu => (x * candle_nn::ops::sigmoid(&(x * 1.702)?)?)?,
        Activation::Relu => x.relu()?,
        Activation::Silu => x.silu()?,
    })
}

/// Multi-head attention with separate q/k/v projections and an output projection.
#[derive(Debug, Clone)]
pub struct Attention {
    q: Linear,
    k: Linear,
    v: Linear,
    out: Linear,
    heads: usize,
    scale: f64,
}

/// Checkpoint names of the four projections, which differ between towers.
pub struct AttentionKeys<'a> {
    pub q: &'a str,
    pub k: &'a str,
    pub v: &'a str,
    pub out: &'a str,
}

impl Attention {
    pub fn load(w: &Weights, keys: &AttentionKeys, dim: usize, heads: usize) -> Result<Self> {
        Ok(Self {
            q: Linear::load(&w.pp(keys.q), dim, dim)?,
            k: Linear::load(&w.pp(keys.k), dim, dim)?,
            v: Linear::load(&w.pp(keys.v), dim, dim)?,
            out: Linear::load(&w.pp(keys.out), dim, dim)?,
            heads,
            scale: ((dim / heads) as f64).powf(-0.5),
        })
    }

    /// `x`: `[B, L, D]`; `mask`: additive `[B, 1, 1, L]` (0 to keep, very negative to drop).
    pub fn forward(&self, x: &Tensor, mask: Option<&Tensor>) -> Result<Tensor> {
        let (b, l, d) = x.dims3()?;
        let split = |t: Tensor| -> Result<Tensor> {
            Ok(t.reshape((b, l, self.heads, d / self.heads))?
                .transpose(1, 2)?
                .contiguous()?)
        };
        let q = split(self.q.forward(x)?)?;
        let k = split(self.k.forward(x)?)?;
        let v = split(self.v.forward(x)?)?;
        let scores = (q.matmul(&k.t()?)? * self.scale)?;
        let scores = match mask {
            Some(m) => scores.broadcast_add(m)?,
            None => scores,
        };
        let dtype = scores.dtype();
        let probs =
            candle_nn::ops::softmax_last_dim(&scores.to_dtype(DType::F32)?)?.to_dtype(dtype)?;
        let ctx = probs.matmul(&v)?.transpose(1, 2)?.reshape((b, l, d))?;
        self.out.forward(&ctx)
    }
}

/// Divides each row by its L2 norm.
pub fn l2_normalize(x: &Tensor) -> Result<Tensor> {
    let norm = x.sqr()?.sum_keepdim(D::Minus1)?.sqrt()?;
    Ok(x.broadcast_div(&norm)?)
}
