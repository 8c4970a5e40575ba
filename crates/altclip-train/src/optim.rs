//! AdamW with decoupled weight decay (Loshchilov & Hutter), computed in the
//! order of `torch.optim.AdamW`'s single-tensor path, plus gradient
//! accumulation and clipping by global norm (`torch.nn.utils.clip_grad_norm_`).
//!
//! candle_nn's `AdamW` computes the same update but keeps its moments private,
//! so they could not be checkpointed, and it allocates a dozen full-size
//! temporaries per tensor per step; this one exposes its state and updates
//! each parameter in one in-place pass.

use std::collections::HashMap;
use std::sync::Mutex;

use candle_core::backprop::GradStore;
use candle_core::{CpuStorage, InplaceOp1, Layout, Storage, Tensor, Var};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use altclip::error::{Error, Result};

/// AdamW hyper-parameters (the learning rate comes from the schedule).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AdamWConfig {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    /// Decoupled weight decay, applied to tensors of rank ≥ 2 only: biases and
    /// LayerNorm parameters are exempt, as in transformers' Trainer and open_clip.
    pub weight_decay: f64,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        Self {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.01,
        }
    }
}

struct ParamState {
    name: String,
    var: Var,
    exp_avg: Vec<f32>,
    exp_avg_sq: Vec<f32>,
    decay: bool,
}

/// AdamW over named variables.
///
/// Runs on the CPU in f32: each step is one parallel pass per tensor that
/// updates the parameter in place (no temporaries), in the element-wise order
/// of PyTorch's kernels.
pub struct AdamW {
    params: Vec<ParamState>,
    config: AdamWConfig,
    steps: u64,
}

/// Elements per parallel work item.
const CHUNK: usize = 1 << 15;

/// Borrows the contiguous f32 data of a CPU tensor for `f`.
fn with_f32<R>(t: &Tensor, what: &str, f: impl FnOnce(&[f32]) -> Result<R>) -> Result<R> {
    let (storage, layout) = t.storage_and_layout();
    let Storage::Cpu(CpuStorage::F32(data)) = &*storage else {
        return Err(Error::Invalid(format!(
            "{what}: the trainer runs on the CPU in f32, this tensor is {:?} on {:?}",
            t.dtype(),
            t.device().location()
        )));
    };
    let (start, end) = layout
        .contiguous_offsets()
        .ok_or_else(|| Error::Invalid(format!("{what}: not contiguous")))?;
    f(&data[start..end])
}

/// One AdamW update of a parameter, applied in place by candle.
struct AdamWKernel<'a> {
    grad: &'a [f32],
    grad_scale: f32,
    exp_avg: Mutex<&'a mut [f32]>,
    exp_avg_sq: Mutex<&'a mut [f32]>,
    /// `1 - lr·weight_decay`, or `None` without decay.
    decay: Option<f32>,
    /// `1 - beta1`, the lerp weight of the first moment.
    one_minus_beta1: f32,
    beta2: f32,
    one_minus_beta2: f32,
    bias_correction2_sqrt: f32,
    eps: f32,
    /// `-lr / (1 - beta1^t)`.
    neg_step_size: f32,
}

impl InplaceOp1 for AdamWKernel<'_> {
    fn name(&self) -> &'static str {
        "adamw"
    }

    fn cpu_fwd(&self, storage: &mut CpuStorage, layout: &Layout) -> candle_core::Result<()> {
        let CpuStorage::F32(param) = storage else {
            candle_core::bail!("adamw: parameters must be f32");
        };
        let Some((start, end)) = layout.contiguous_offsets() else {
            candle_core::bail!("adamw: parameters must be contiguous");
        };
        let param = &mut param[start..end];
        let mut exp_avg = self.exp_avg.lock().expect("moment lock");
        let mut exp_avg_sq = self.exp_avg_sq.lock().expect("moment lock");
        if param.len() != self.grad.len() || param.len() != exp_avg.len() {
            candle_core::bail!("adamw: parameter, gradient and moments differ in size");
        }
        param
            .par_chunks_mut(CHUNK)
            .zip(exp_avg.par_chunks_mut(CHUNK))
            .zip(exp_avg_sq.par_chunks_mut(CHUNK))
            .zip(self.grad.par_chunks(CHUNK))
            .for_each(|(((p, m), v), g)| {
                for i in 0..p.len() {
                    let grad = if self.grad_scale == 1.0 {
                        g[i]
                    } else {
                        g[i] * self.grad_scale
                    };
                    let mut theta = p[i];
                    if let Some(d) = self.decay {
                        theta *= d; // param.mul_(1 - lr * weight_decay)
                    }
                    m[i] += self.one_minus_beta1 * (grad - m[i]); // exp_avg.lerp_(grad, 1 - beta1)
                    v[i] = v[i] * self.beta2 + self.one_minus_beta2 * grad * grad; // mul_.addcmul_
                    let denom = v[i].sqrt() / self.bias_correction2_sqrt + self.eps;
                    p[i] = theta + self.neg_step_size * (m[i] / denom); // addcdiv_
                }
            });
        Ok(())
    }
}

impl AdamW {
    /// An optimizer for `vars` (their order is the order of [`Gradients`]).
    /// The variables must be f32 tensors on the CPU.
    pub fn new(vars: &[(String, Var)], config: AdamWConfig) -> Result<Self> {
        let params = vars
            .iter()
            .map(|(name, var)| {
                with_f32(var.as_tensor(), name, |_| Ok(()))?;
                let n = var.elem_count();
                Ok(ParamState {
                    name: name.clone(),
                    var: var.clone(),
                    exp_avg: vec![0.0; n],
                    exp_avg_sq: vec![0.0; n],
                    decay: var.rank() >= 2,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            params,
            config,
            steps: 0,
        })
    }

    /// Optimizer steps taken so far.
    pub fn steps(&self) -> u64 {
        self.steps
    }

    /// One update at learning rate `lr`. Parameters without a gradient are
    /// left alone (moments and weight decay included), as in PyTorch.
    pub fn step(&mut self, grads: &Gradients, lr: f64) -> Result<()> {
        if grads.grads.len() != self.params.len() {
            return Err(Error::Invalid(format!(
                "{} gradients for {} parameters",
                grads.grads.len(),
                self.params.len()
            )));
        }
        self.steps += 1;
        let c = &self.config;
        let t = self.steps as i32;
        let bias_correction1 = 1.0 - c.beta1.powi(t);
        let bias_correction2_sqrt = (1.0 - c.beta2.powi(t)).sqrt();
        for (p, g) in self.params.iter_mut().zip(&grads.grads) {
            let Some(g) = g else { continue };
            let g = g.contiguous()?;
            with_f32(&g, &p.name, |grad| {
                let kernel = AdamWKernel {
                    grad,
                    grad_scale: grads.scale,
                    exp_avg: Mutex::new(&mut p.exp_avg),
                    exp_avg_sq: Mutex::new(&mut p.exp_avg_sq),
                    decay: (p.decay && c.weight_decay != 0.0)
                        .then_some((1.0 - lr * c.weight_decay) as f32),
                    one_minus_beta1: (1.0 - c.beta1) as f32,
                    beta2: c.beta2 as f32,
                    one_minus_beta2: (1.0 - c.beta2) as f32,
                    bias_correction2_sqrt: bias_correction2_sqrt as f32,
                    eps: c.eps as f32,
                    neg_step_size: (-lr / bias_correction1) as f32,
                };
                Ok(p.var.as_tensor().inplace_op1(&kernel)?)
            })?;
        }
        Ok(())
    }

    /// The moments as named tensors (`exp_avg.<param>`, `exp_avg_sq.<param>`),
    /// for checkpoints.
    pub fn state_tensors(&self) -> Result<HashMap<String, Tensor>> {
        let mut out = HashMap::new();
        for p in &self.params {
            let (shape, device) = (p.var.shape(), p.var.device());
            out.insert(
                format!("exp_avg.{}", p.name),
                Tensor::from_slice(&p.exp_avg, shape, device)?,
            );
            out.insert(
                format!("exp_avg_sq.{}", p.name),
                Tensor::from_slice(&p.exp_avg_sq, shape, device)?,
            );
        }
        Ok(out)
    }

    /// Restores the moments written by [`AdamW::state_tensors`] and the step count.
    pub fn load_state(&mut self, tensors: &HashMap<String, Tensor>, steps: u64) -> Result<()> {
        for p in &mut self.params {
            let dims = p.var.dims().to_vec();
            for (slot, key) in [
                (&mut p.exp_avg, format!("exp_avg.{}", p.name)),
                (&mut p.exp_avg_sq, format!("exp_avg_sq.{}", p.name)),
            ] {
                let t = tensors.get(&key).ok_or_else(|| Error::MissingTensor {
                    name: key.clone(),
                    source_desc: "the optimizer state of the checkpoint".into(),
                })?;
                if t.dims() != dims {
                    return Err(Error::ShapeMismatch {
                        name: key,
                        source_desc: "the optimizer state of the checkpoint".into(),
                        expected: dims.clone(),
                        found: t.dims().to_vec(),
                    });
                }
                *slot = t.flatten_all()?.to_vec1::<f32>()?;
            }
        }
        self.steps = steps;
        Ok(())
    }
}

/// Gradients summed over the micro-batches of one optimizer step, one slot
/// per variable in the optimizer's order, with a pending scale factor
/// (clipping) that the optimizer applies as it reads them.
pub struct Gradients {
    grads: Vec<Option<Tensor>>,
    scale: f32,
}

impl Gradients {
    /// Empty slots for `n` variables.
    pub fn new(n: usize) -> Self {
        Self {
            grads: vec![None; n],
            scale: 1.0,
        }
    }

    /// Adds the gradients of `vars` found in `store` (from `loss.backward()`).
    pub fn accumulate(&mut self, store: &GradStore, vars: &[(String, Var)]) -> Result<()> {
        for (slot, (_, var)) in self.grads.iter_mut().zip(vars) {
            if let Some(g) = store.get(var.as_tensor()) {
                let g = g.detach();
                *slot = Some(match slot.take() {
                    Some(sum) => (sum + g)?,
                    None => g,
                });
            }
        }
        Ok(())
    }

    /// True when variable `i` received a gradient.
    pub fn has(&self, i: usize) -> bool {
        self.grads.get(i).is_some_and(Option::is_some)
    }

    /// The L2 norm of all gradients together (scale included), accumulated in f64.
    pub fn global_norm(&self) -> Result<f64> {
        let mut sum = 0.0f64;
        for g in self.grads.iter().flatten() {
            let g = g.contiguous()?;
            sum += with_f32(&g, "gradient", |data| {
                Ok(data
                    .par_chunks(CHUNK)
                    .map(|c| c.iter().map(|&x| (x as f64) * (x as f64)).sum::<f64>())
                    .sum::<f64>())
            })?;
        }
        Ok(sum.sqrt() * self.scale as f64)
    }

    /// Scales the gradients so that their global norm is at most `max_norm`
    /// (`clip_grad_norm_`: factor `max_norm / (norm + 1e-6)`, capped at 1).
    /// Returns the norm before clipping.
    pub fn clip(&mut self, max_norm: f64) -> Result<f64> {
        let norm = self.global_norm()?;
        let factor = (max_norm / (norm + 1e-6)).min(1.0);
        if factor < 1.0 {
            self.scale *= factor as f32;
        }
        Ok(norm)
    }
}
