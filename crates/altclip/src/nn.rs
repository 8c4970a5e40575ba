//! The few layers both towers are made of, loaded by checkpoint key names.

use std::sync::Arc;

use candle_core::{DType, Tensor, D};

use altclip_kernels::{Kernel, PackedLinear};

use crate::config::Activation;
use crate::error::Result;
use crate::weights::Weights;

/// `y = x·Wᵀ + b`, with `W` stored `[out, in]` as in PyTorch.
///
/// When the model's plan names a kernel (see [`crate::ComputePlan`]) the
/// weight is packed once for it by `altclip-kernels`, which also fuses the
/// activation and residual add of [`Linear::forward_fused`]; otherwise it is
/// a candle matmul.
#[derive(Debug, Clone)]
pub struct Linear {
    kind: LinearKind,
}

#[derive(Debug, Clone)]
enum LinearKind {
    Candle {
        weight: Tensor,
        bias: Option<Tensor>,
    },
    Packed(Arc<PackedLinear>),
}

impl Linear {
    /// Loads `{name}.weight` and `{name}.bias`.
    pub fn load(w: &Weights, in_dim: usize, out_dim: usize) -> Result<Self> {
        Self::load_parts(w, in_dim, out_dim, true)
    }

    /// Loads `{name}.weight` only, for bias-free projections.
    pub fn load_no_bias(w: &Weights, in_dim: usize, out_dim: usize) -> Result<Self> {
        Self::load_parts(w, in_dim, out_dim, false)
    }

    fn load_parts(w: &Weights, in_dim: usize, out_dim: usize, bias: bool) -> Result<Self> {
        let Some(kernel) = w.linear_kernel() else {
            let weight = w.get(&[out_dim, in_dim], "weight")?;
            let bias = bias.then(|| w.get(&[out_dim], "bias")).transpose()?;
            return Ok(Self {
                kind: LinearKind::Candle { weight, bias },
            });
        };
        // Packed straight from the file: the weight is never held twice.
        let bias = bias
            .then(|| w.read_f32(&[out_dim], "bias", |b| Ok(b.to_vec())))
            .transpose()?;
        let packed = w.read_f32(&[out_dim, in_dim], "weight", |data| {
            Ok(PackedLinear::from_f32(data, out_dim, in_dim, bias, kernel)?)
        })?;
        Ok(Self {
            kind: LinearKind::Packed(Arc::new(packed)),
        })
    }

    /// Several layers with the same input (`parts`, each `[out, in]` with a
    /// bias) as one packed layer whose output columns are theirs side by
    /// side; `None` where the layers are not packed (candle's matmul).
    pub fn load_stacked(parts: &[Weights], in_dim: usize, out_dim: usize) -> Result<Option<Self>> {
        let Some(kernel) = parts.first().and_then(Weights::linear_kernel) else {
            return Ok(None);
        };
        // Reserved from the checkpoint's data, once its shape has been checked,
        // never from the config's dimensions alone.
        let mut weight = Vec::new();
        let mut bias = Vec::with_capacity(parts.len() * out_dim);
        for w in parts {
            w.read_f32(&[out_dim, in_dim], "weight", |d| {
                weight.reserve(parts.len() * d.len());
                weight.extend_from_slice(d);
                Ok(())
            })?;
            w.read_f32(&[out_dim], "bias", |d| {
                bias.extend_from_slice(d);
                Ok(())
            })?;
        }
        let n = parts.len() * out_dim;
        let packed = PackedLinear::from_f32(&weight, n, in_dim, Some(bias), kernel)?;
        Ok(Some(Self {
            kind: LinearKind::Packed(Arc::new(packed)),
        }))
    }

    /// The kernel this layer's packed weight uses, when `x` (an input or
    /// output of it) is one the kernels take: f32 on the CPU, outside autograd.
    pub fn kernel_for(&self, x: &Tensor) -> Option<Kernel> {
        match &self.kind {
            LinearKind::Packed(p) if kernel_input(x) => Some(p.kernel()),
            _ => None,
        }
    }

    /// A layer from tensors: packed for `kernel` when there is one.
    pub fn from_parts(
        weight: Tensor,
        bias: Option<Tensor>,
        kernel: Option<Kernel>,
    ) -> Result<Self> {
        let kind = match kernel {
            Some(k) => LinearKind::Packed(Arc::new(PackedLinear::new(&weight, bias.as_ref(), k)?)),
            None => LinearKind::Candle { weight, bias },
        };
        Ok(Self { kind })
    }

    /// `x·Wᵀ + b`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.forward_fused(x, None, None)
    }

    /// `act(x·Wᵀ + b) + residual`, in one pass over the output where the
    /// kernels run.
    pub fn forward_fused(
        &self,
        x: &Tensor,
        act: Option<Activation>,
        residual: Option<&Tensor>,
    ) -> Result<Tensor> {
        let fallback;
        let (weight, bias) = match &self.kind {
            LinearKind::Packed(p) => {
                if kernel_input(x) && residual.is_none_or(kernel_input) {
                    return Ok(p.forward(x, act.map(fused_activation), residual)?);
                }
                // Autograd or an unusual input: unpack and take candle's path.
                fallback = p.unpack(x.device())?;
                (&fallback.0.to_dtype(x.dtype())?, fallback.1.as_ref())
            }
            LinearKind::Candle { weight, bias } => (weight, bias.as_ref()),
        };
        let w = weight.t()?;
        let y = match x.dims() {
            [b, l, d] => x.reshape((b * l, *d))?.matmul(&w)?.reshape((*b, *l, ()))?,
            _ => x.matmul(&w)?,
        };
        let y = match bias {
            Some(b) => y.broadcast_add(&b.to_dtype(y.dtype())?)?,
            None => y,
        };
        let y = match act {
            Some(act) => activate(act, &y)?,
            None => y,
        };
        Ok(match residual {
            Some(r) => (y + r)?,
            None => y,
        })
    }
}

/// The kernels' name for a config-named activation.
fn fused_activation(act: Activation) -> altclip_kernels::Activation {
    use altclip_kernels::Activation as K;
    match act {
        Activation::Gelu => K::GeluErf,
        Activation::GeluNew | Activation::GeluPytorchTanh => K::GeluTanh,
        Activation::QuickGelu => K::QuickGelu,
        Activation::Relu => K::Relu,
        Activation::Silu => K::Silu,
    }
}

/// True for tensors the kernels take: f32 on the CPU, outside autograd.
fn kernel_input(t: &Tensor) -> bool {
    t.device().is_cpu() && t.dtype() == DType::F32 && !t.track_op()
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

    /// Normalises `x` over its last dimension. candle's fused kernel has no
    /// backward pass, so when `x` or the parameters take part in autograd
    /// (training) the same formula is built from primitive ops instead.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let dtype = x.dtype();
        let x = x.to_dtype(DType::F32)?.contiguous()?;
        let y = if needs_grad(&[&x, &self.weight, &self.bias]) {
            layer_norm_differentiable(&x, &self.weight, &self.bias, self.eps)?
        } else {
            candle_nn::ops::layer_norm(&x, &self.weight, &self.bias, self.eps as f32)?
        };
        Ok(y.to_dtype(dtype)?)
    }
}

/// True when any of `tensors` is a trainable variable or depends on one, i.e.
/// when a result computed from them must be differentiable.
pub fn needs_grad(tensors: &[&Tensor]) -> bool {
    tensors.iter().any(|t| t.track_op())
}

/// PyTorch's LayerNorm, `(x − mean) / sqrt(var + eps) · w + b` with the
/// biased variance, from ops candle's autograd differentiates.
pub fn layer_norm_differentiable(x: &Tensor, w: &Tensor, b: &Tensor, eps: f64) -> Result<Tensor> {
    let centered = x.broadcast_sub(&x.mean_keepdim(D::Minus1)?)?;
    let var = centered.sqr()?.mean_keepdim(D::Minus1)?;
    let normed = centered.broadcast_div(&(var + eps)?.sqrt()?)?;
    Ok(normed.broadcast_mul(w)?.broadcast_add(b)?)
}

/// Softmax over the last dimension: candle's fused kernel at inference, the
/// differentiable formula (max-shifted, the shift detached as it cancels out)
/// when `x` takes part in autograd.
pub fn softmax_last_dim(x: &Tensor) -> Result<Tensor> {
    if !needs_grad(&[x]) {
        return Ok(candle_nn::ops::softmax_last_dim(x)?);
    }
    let shifted = x.broadcast_sub(&x.max_keepdim(D::Minus1)?.detach())?;
    let e = shifted.exp()?;
    Ok(e.broadcast_div(&e.sum_keepdim(D::Minus1)?)?)
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

/// Multi-head attention with q/k/v projections and an output projection.
#[derive(Debug, Clone)]
pub struct Attention {
    projections: Projections,
    out: Linear,
    heads: usize,
    scale: f64,
}

#[derive(Debug, Clone)]
enum Projections {
    Separate {
        q: Linear,
        k: Linear,
        v: Linear,
    },
    /// q, k and v stacked into one `[3·D, D]` packed layer: one GEMM, whose
    /// output the attention kernel reads in place.
    Stacked(Linear),
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
        let parts = [w.pp(keys.q), w.pp(keys.k), w.pp(keys.v)];
        let projections = match Linear::load_stacked(&parts, dim, dim)? {
            Some(qkv) => Projections::Stacked(qkv),
            None => Projections::Separate {
                q: Linear::load(&parts[0], dim, dim)?,
                k: Linear::load(&parts[1], dim, dim)?,
                v: Linear::load(&parts[2], dim, dim)?,
            },
        };
        Ok(Self {
            projections,
            out: Linear::load(&w.pp(keys.out), dim, dim)?,
            heads,
            scale: ((dim / heads) as f64).powf(-0.5),
        })
    }

    /// `x`: `[B, L, D]`; `mask`: additive, broadcastable to `[B, heads, L, L]`
    /// (`[B, 1, 1, L]` for padding, `[B, 1, L, L]` for causal masks; 0 to keep,
    /// very negative to drop).
    pub fn forward(&self, x: &Tensor, mask: Option<&Tensor>) -> Result<Tensor> {
        self.forward_add(x, mask, None)
    }

    /// [`Attention::forward`] plus `residual`, added in the output projection.
    pub fn forward_add(
        &self,
        x: &Tensor,
        mask: Option<&Tensor>,
        residual: Option<&Tensor>,
    ) -> Result<Tensor> {
        let (b, l, d) = x.dims3()?;
        let (q, k, v) = match &self.projections {
            Projections::Stacked(qkv) => {
                let t = qkv.forward(x)?;
                if let Some(kernel) = qkv.kernel_for(&t) {
                    if altclip_kernels::mask_supported(mask, b, l) {
                        let scale = self.scale as f32;
                        let ctx = altclip_kernels::attention(&t, self.heads, scale, mask, kernel)?;
                        return self.out.forward_fused(&ctx, None, residual);
                    }
                }
                (
                    t.narrow(2, 0, d)?,
                    t.narrow(2, d, d)?,
                    t.narrow(2, 2 * d, d)?,
                )
            }
            Projections::Separate { q, k, v } => (q.forward(x)?, k.forward(x)?, v.forward(x)?),
        };
        let split = |t: Tensor| -> Result<Tensor> {
            Ok(t.reshape((b, l, self.heads, d / self.heads))?
                .transpose(1, 2)?
                .contiguous()?)
        };
        let (q, k, v) = (split(q)?, split(k)?, split(v)?);
        let scores = (q.matmul(&k.t()?)? * self.scale)?;
        let scores = match mask {
            Some(m) => scores.broadcast_add(m)?,
            None => scores,
        };
        let dtype = scores.dtype();
        let probs = softmax_last_dim(&scores.to_dtype(DType::F32)?)?.to_dtype(dtype)?;
        let ctx = probs.matmul(&v)?.transpose(1, 2)?.reshape((b, l, d))?;
        self.out.forward_fused(&ctx, None, residual)
    }
}

/// One pre-LN transformer block of OpenAI CLIP (both towers):
/// `x + attn(ln1(x))`, then `x + fc2(act(fc1(ln2(x))))`.
pub struct ClipEncoderLayer {
    norm1: LayerNorm,
    attention: Attention,
    norm2: LayerNorm,
    fc1: Linear,
    fc2: Linear,
    act: Activation,
}

/// Sizes of a [`ClipEncoderLayer`].
#[derive(Debug, Clone, Copy)]
pub struct ClipLayerDims {
    pub hidden: usize,
    pub intermediate: usize,
    pub heads: usize,
    pub act: Activation,
    pub eps: f64,
}

impl ClipEncoderLayer {
    /// Loads `layer_norm1`, `self_attn.{q,k,v,out}_proj`, `layer_norm2`, `mlp.fc1`, `mlp.fc2`.
    pub fn load(w: &Weights, d: ClipLayerDims) -> Result<Self> {
        let keys = AttentionKeys {
            q: "q_proj",
            k: "k_proj",
            v: "v_proj",
            out: "out_proj",
        };
        Ok(Self {
            norm1: LayerNorm::load(&w.pp("layer_norm1"), d.hidden, d.eps)?,
            attention: Attention::load(&w.pp("self_attn"), &keys, d.hidden, d.heads)?,
            norm2: LayerNorm::load(&w.pp("layer_norm2"), d.hidden, d.eps)?,
            fc1: Linear::load(&w.pp("mlp.fc1"), d.hidden, d.intermediate)?,
            fc2: Linear::load(&w.pp("mlp.fc2"), d.intermediate, d.hidden)?,
            act: d.act,
        })
    }

    /// The `count` layers of an encoder under `w` (a tower's root), found at
    /// `encoder.layers.N` or, as transformers 5 saves them, `encoder.layer.N`.
    pub fn load_stack(w: &Weights, d: ClipLayerDims, count: usize) -> Result<Vec<Self>> {
        let prefix = w.pick_prefix(&["encoder.layers", "encoder.layer"], "0.layer_norm1.weight");
        (0..count)
            .map(|i| Self::load(&w.pp(format!("{prefix}.{i}")), d))
            .collect()
    }

    /// `x`: `[B, L, hidden]`; `mask` as in [`Attention::forward`].
    pub fn forward(&self, x: &Tensor, mask: Option<&Tensor>) -> Result<Tensor> {
        let x = self
            .attention
            .forward_add(&self.norm1.forward(x)?, mask, Some(x))?;
        let h = self
            .fc1
            .forward_fused(&self.norm2.forward(&x)?, Some(self.act), None)?;
        self.fc2.forward_fused(&h, None, Some(&x))
    }
}
