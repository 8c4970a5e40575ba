//! AdamW with decoupled weight decay (Loshchilov & Hutter), computed in the
//! order of `torch.optim.AdamW`'s single-tensor path, plus gradient
//! accumulation and clipping by global norm (`torch.nn.utils.clip_grad_norm_`).
//!
//! candle_nn's `AdamW` computes the same update but keeps its moments private,
//! so they could not be checkpointed; this one exposes its state.

use std::collections::HashMap;

use candle_core::backprop::GradStore;
use candle_core::{Tensor, Var};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

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
    exp_avg: Tensor,
    exp_avg_sq: Tensor,
    decay: bool,
}

/// AdamW over named variables.
pub struct AdamW {
    params: Vec<ParamState>,
    config: AdamWConfig,
    steps: u64,
}

impl AdamW {
    /// An optimizer for `vars` (their order is the order of [`Gradients`]).
    pub fn new(vars: &[(String, Var)], config: AdamWConfig) -> Result<Self> {
        let params = vars
            .iter()
            .map(|(name, var)| {
                Ok(ParamState {
                    name: name.clone(),
                    var: var.clone(),
                    exp_avg: var.zeros_like()?,
                    exp_avg_sq: var.zeros_like()?,
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
        let step_size = lr / bias_correction1;
        for (p, g) in self.params.iter_mut().zip(&grads.grads) {
            let Some(g) = g else { continue };
            let mut theta = p.var.as_tensor().detach();
            if p.decay && c.weight_decay != 0.0 {
                theta = (theta * (1.0 - lr * c.weight_decay))?;
            }
            // exp_avg.lerp_(grad, 1 - beta1); exp_avg_sq.mul_(beta2).addcmul_(grad, grad, 1 - beta2)
            p.exp_avg = (&p.exp_avg + ((g - &p.exp_avg)? * (1.0 - c.beta1))?)?;
            p.exp_avg_sq = ((&p.exp_avg_sq * c.beta2)? + (g.sqr()? * (1.0 - c.beta2))?)?;
            let denom = ((p.exp_avg_sq.sqrt()? / bias_correction2_sqrt)? + c.eps)?;
            let update = (p.exp_avg.div(&denom)? * step_size)?;
            p.var.set(&(theta - update)?)?;
        }
        Ok(())
    }

    /// The moments as named tensors (`exp_avg.<param>`, `exp_avg_sq.<param>`),
    /// for checkpoints.
    pub fn state_tensors(&self) -> HashMap<String, Tensor> {
        let mut out = HashMap::new();
        for p in &self.params {
            out.insert(format!("exp_avg.{}", p.name), p.exp_avg.clone());
            out.insert(format!("exp_avg_sq.{}", p.name), p.exp_avg_sq.clone());
        }
        out
    }

    /// Restores the moments written by [`AdamW::state_tensors`] and the step count.
    pub fn load_state(&mut self, tensors: &HashMap<String, Tensor>, steps: u64) -> Result<()> {
        for p in &mut self.params {
            for (slot, key) in [
                (&mut p.exp_avg, format!("exp_avg.{}", p.name)),
                (&mut p.exp_avg_sq, format!("exp_avg_sq.{}", p.name)),
            ] {
                let t = tensors.get(&key).ok_or_else(|| Error::MissingTensor {
                    name: key.clone(),
                    source_desc: "the optimizer state of the checkpoint".into(),
                })?;
                if t.dims() != slot.dims() {
                    return Err(Error::ShapeMismatch {
                        name: key,
                        source_desc: "the optimizer state of the checkpoint".into(),
                        expected: slot.dims().to_vec(),
                        found: t.dims().to_vec(),
                    });
                }
                *slot = t.to_device(p.var.device())?;
            }
        }
        self.steps = steps;
        Ok(())
    }
}

/// Gradients summed over the micro-batches of one optimizer step, one slot
/// per variable in the optimizer's order.
pub struct Gradients {
    grads: Vec<Option<Tensor>>,
}

impl Gradients {
    /// Empty slots for `n` variables.
    pub fn new(n: usize) -> Self {
        Self {
            grads: vec![None; n],
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

    /// The gradient of variable `i`, if it received one.
    pub fn get(&self, i: usize) -> Option<&Tensor> {
        self.grads.get(i).and_then(Option::as_ref)
    }

    /// The L2 norm of all gradients together.
    pub fn global_norm(&self) -> Result<f64> {
        let mut sum = 0.0f64;
        for g in self.grads.iter().flatten() {
            let n: f32 = g.sqr()?.sum_all()?.sqrt()?.to_scalar()?;
            sum += (n as f64) * (n as f64);
        }
        Ok(sum.sqrt())
    }

    /// Scales the gradients so that their global norm is at most `max_norm`
    /// (`clip_grad_norm_`: factor `max_norm / (norm + 1e-6)`, capped at 1).
    /// Returns the norm before clipping.
    pub fn clip(&mut self, max_norm: f64) -> Result<f64> {
        let norm = self.global_norm()?;
        let factor = (max_norm / (norm + 1e-6)).min(1.0);
        if factor < 1.0 {
            for g in self.grads.iter_mut().flatten() {
                *g = (&*g * factor)?;
            }
        }
        Ok(norm)
    }
}
