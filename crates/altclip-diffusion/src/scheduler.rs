//! Denoising schedules with diffusers' step math: PNDM (PLMS steps, as
//! Stable Diffusion configures it), DDIM (η = 0), Euler ancestral and
//! DPM-Solver++ (multistep, order ≤ 2).
//!
//! The noise schedule is computed in f32 the way PyTorch does it
//! (`torch.linspace` then a double-accumulated `cumprod`), so timesteps and
//! sigmas equal diffusers'. Keys missing from `scheduler_config.json` take
//! the defaults of the *chosen* scheduler class, as diffusers' `from_config`
//! does when a user switches schedulers.

use std::path::Path;
use std::str::FromStr;

use candle_core::Tensor;
use serde::Deserialize;

use crate::error::{Error, Result};

/// The supported schedulers, by their `--scheduler` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SchedulerKind {
    /// `PNDMScheduler` with `skip_prk_steps` (AltDiffusion's default).
    Pndm,
    /// `DDIMScheduler`, deterministic (η = 0).
    Ddim,
    /// `EulerAncestralDiscreteScheduler`: draws fresh noise every step.
    EulerAncestral,
    /// `DPMSolverMultistepScheduler` with `algorithm_type = "dpmsolver++"`.
    DpmPlusPlus,
}

impl SchedulerKind {
    /// The name `--scheduler` takes, which the PNG metadata records.
    pub fn name(self) -> &'static str {
        match self {
            Self::Pndm => "pndm",
            Self::Ddim => "ddim",
            Self::EulerAncestral => "euler-a",
            Self::DpmPlusPlus => "dpm++",
        }
    }
}

impl std::fmt::Display for SchedulerKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for SchedulerKind {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        Ok(match s {
            "pndm" => Self::Pndm,
            "ddim" => Self::Ddim,
            "euler-a" | "euler_a" | "euler-ancestral" => Self::EulerAncestral,
            "dpm++" | "dpmpp" | "dpm-solver++" => Self::DpmPlusPlus,
            other => {
                return Err(format!(
                    "unknown scheduler {other:?}: expected pndm, ddim, euler-a or dpm++"
                ))
            }
        })
    }
}

/// The keys of a diffusers `scheduler_config.json` that change the math;
/// absent keys are `None` and take the chosen class's default.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct SchedulerConfig {
    pub num_train_timesteps: Option<usize>,
    pub beta_start: Option<f64>,
    pub beta_end: Option<f64>,
    pub beta_schedule: Option<String>,
    pub trained_betas: Option<Vec<f64>>,
    pub prediction_type: Option<String>,
    pub timestep_spacing: Option<String>,
    pub steps_offset: Option<usize>,
    pub set_alpha_to_one: Option<bool>,
    pub skip_prk_steps: Option<bool>,
    pub clip_sample: Option<bool>,
    pub clip_sample_range: Option<f64>,
    pub solver_order: Option<usize>,
    pub algorithm_type: Option<String>,
    pub solver_type: Option<String>,
    pub lower_order_final: Option<bool>,
    pub euler_at_final: Option<bool>,
    pub final_sigmas_type: Option<String>,
    pub use_karras_sigmas: Option<bool>,
    pub thresholding: Option<bool>,
    pub rescale_betas_zero_snr: Option<bool>,
}

impl SchedulerConfig {
    /// Reads `scheduler_config.json`.
    pub fn from_file(path: &Path) -> Result<Self> {
        let bad = |reason: String| Error::BadConfig {
            path: path.to_path_buf(),
            reason,
        };
        let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
        serde_json::from_str(&text).map_err(|e| bad(format!("not a scheduler config: {e}")))
    }
}

/// How the model output is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Prediction {
    Epsilon,
    Sample,
    V,
}

/// Where the inference timesteps fall on the training schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Spacing {
    Linspace,
    Leading,
    Trailing,
}

/// A schedule set up for a number of inference steps, with the state that
/// multistep methods carry between steps. Call [`Scheduler::step`] once per
/// entry of [`Scheduler::timesteps`], in order.
pub struct Scheduler {
    kind: SchedulerKind,
    prediction: Prediction,
    num_train: usize,
    alphas_cumprod: Vec<f32>,
    final_alpha_cumprod: f32,
    timesteps: Vec<f64>,
    /// Euler and DPM: σ per step, then the final σ.
    sigmas: Vec<f32>,
    init_noise_sigma: f64,
    /// PNDM/DDIM: training steps between inference steps.
    ratio: usize,
    clip_sample: Option<f64>,
    // PNDM state.
    ets: Vec<Tensor>,
    counter: usize,
    cur_sample: Option<Tensor>,
    // DPM-Solver++ state.
    solver_order: usize,
    heun: bool,
    lower_order_final: bool,
    euler_at_final: bool,
    final_sigma_zero: bool,
    model_outputs: Vec<Tensor>,
    lower_order_nums: usize,
    /// Timesteps skipped at the start ([`Scheduler::begin_at`]).
    begin: usize,
}

/// `torch.linspace(start, end, n, dtype=float32)` on the CPU: f32
/// arithmetic, each half counted from its own end.
fn linspace_f32(start: f32, end: f32, n: usize) -> Vec<f32> {
    if n == 1 {
        return vec![start];
    }
    let step = (end - start) / (n - 1) as f32;
    let half = n / 2;
    (0..n)
        .map(|i| {
            if i < half {
                start + step * i as f32
            } else {
                end - step * (n - 1 - i) as f32
            }
        })
        .collect()
}

/// `np.interp(x, 0..len, ys)`. (Timestep rounding uses `round_ties_even`,
/// NumPy's rule.)
fn interp(x: f64, ys: &[f32]) -> f64 {
    let last = ys.len() - 1;
    if x <= 0.0 {
        return ys[0] as f64;
    }
    if x >= last as f64 {
        return ys[last] as f64;
    }
    let i = x.floor() as usize;
    let f = x - i as f64;
    ys[i] as f64 + (ys[i + 1] as f64 - ys[i] as f64) * f
}

/// diffusers' "trailing" spacing, `round(n − i·n/steps) − 1`, descending.
fn trailing(n: usize, steps: usize) -> impl Iterator<Item = f64> {
    let ratio = n as f64 / steps as f64;
    (0..steps).map(move |i| (n as f64 - i as f64 * ratio).round_ties_even() - 1.0)
}

/// `x·a + y·b` elementwise.
fn lin(x: &Tensor, a: f64, y: &Tensor, b: f64) -> Result<Tensor> {
    Ok(((x * a)? + (y * b)?)?)
}

impl Scheduler {
    /// Sets up `kind` from `cfg` for `steps` inference steps.
    pub fn new(kind: SchedulerKind, cfg: &SchedulerConfig, steps: usize) -> Result<Self> {
        let unsupported = |what: String| Error::Unsupported(format!("scheduler {kind:?}: {what}"));
        if cfg.thresholding == Some(true) {
            return Err(unsupported("thresholding is not supported".into()));
        }
        if cfg.rescale_betas_zero_snr == Some(true) {
            return Err(unsupported(
                "rescale_betas_zero_snr is not supported".into(),
            ));
        }
        if cfg.use_karras_sigmas == Some(true) {
            return Err(unsupported("use_karras_sigmas is not supported".into()));
        }
        let num_train = cfg.num_train_timesteps.unwrap_or(1000);
        if steps == 0 || steps > num_train {
            return Err(unsupported(format!(
                "{steps} steps: expected 1..={num_train} (num_train_timesteps)"
            )));
        }
        let betas: Vec<f32> = match (&cfg.trained_betas, cfg.beta_schedule.as_deref()) {
            (Some(b), _) => b.iter().map(|&x| x as f32).collect(),
            (None, None | Some("linear")) => linspace_f32(
                cfg.beta_start.unwrap_or(1e-4) as f32,
                cfg.beta_end.unwrap_or(0.02) as f32,
                num_train,
            ),
            (None, Some("scaled_linear")) => linspace_f32(
                cfg.beta_start.unwrap_or(1e-4).sqrt() as f32,
                cfg.beta_end.unwrap_or(0.02).sqrt() as f32,
                num_train,
            )
            .into_iter()
            .map(|x| x * x)
            .collect(),
            (None, Some(other)) => {
                return Err(unsupported(format!(
                    "beta_schedule {other:?} is not supported"
                )))
            }
        };
        // torch.cumprod on the CPU accumulates in double.
        let mut acc = 1f64;
        let alphas_cumprod: Vec<f32> = betas
            .iter()
            .map(|b| {
                acc *= (1.0 - b) as f64;
                acc as f32
            })
            .collect();
        let prediction = match cfg.prediction_type.as_deref() {
            None | Some("epsilon") => Prediction::Epsilon,
            Some("sample") if kind != SchedulerKind::EulerAncestral => Prediction::Sample,
            Some("v_prediction") => Prediction::V,
            Some(other) => return Err(unsupported(format!("prediction_type {other:?}"))),
        };
        if prediction == Prediction::Sample && kind == SchedulerKind::Pndm {
            return Err(unsupported("prediction_type \"sample\"".into()));
        }
        let spacing = match cfg.timestep_spacing.as_deref() {
            Some("linspace") => Spacing::Linspace,
            Some("leading") => Spacing::Leading,
            Some("trailing") => Spacing::Trailing,
            None => match kind {
                SchedulerKind::Pndm | SchedulerKind::Ddim => Spacing::Leading,
                SchedulerKind::EulerAncestral | SchedulerKind::DpmPlusPlus => Spacing::Linspace,
            },
            Some(other) => return Err(unsupported(format!("timestep_spacing {other:?}"))),
        };
        let offset = cfg.steps_offset.unwrap_or(0);
        let set_alpha_to_one = cfg.set_alpha_to_one.unwrap_or(kind == SchedulerKind::Ddim);
        let final_alpha_cumprod = if set_alpha_to_one {
            1.0
        } else {
            alphas_cumprod[0]
        };
        let mut s = Self {
            kind,
            prediction,
            num_train,
            final_alpha_cumprod,
            timesteps: Vec::new(),
            sigmas: Vec::new(),
            init_noise_sigma: 1.0,
            ratio: num_train / steps,
            clip_sample: None,
            ets: Vec::new(),
            counter: 0,
            cur_sample: None,
            solver_order: cfg.solver_order.unwrap_or(2),
            heun: false,
            lower_order_final: cfg.lower_order_final.unwrap_or(true),
            euler_at_final: cfg.euler_at_final.unwrap_or(false),
            final_sigma_zero: true,
            model_outputs: Vec::new(),
            lower_order_nums: 0,
            begin: 0,
            alphas_cumprod,
        };
        match kind {
            SchedulerKind::Pndm => {
                if !cfg.skip_prk_steps.unwrap_or(false) {
                    return Err(unsupported(
                        "Runge-Kutta warm-up steps (skip_prk_steps = false) are not supported; \
                         Stable Diffusion configs set skip_prk_steps: true"
                            .into(),
                    ));
                }
                let base = s.integer_timesteps(spacing, steps, offset);
                // PLMS repeats the second-to-last training step once.
                let mut asc: Vec<usize> = base.iter().rev().copied().collect();
                let n = asc.len();
                if n >= 2 {
                    asc.insert(n - 1, asc[n - 2]);
                }
                s.timesteps = asc.iter().rev().map(|&t| t as f64).collect();
            }
            SchedulerKind::Ddim => {
                s.timesteps = s
                    .integer_timesteps(spacing, steps, offset)
                    .into_iter()
                    .map(|t| t as f64)
                    .collect();
                if cfg.clip_sample.unwrap_or(true) {
                    s.clip_sample = Some(cfg.clip_sample_range.unwrap_or(1.0));
                }
            }
            SchedulerKind::EulerAncestral => s.euler_schedule(spacing, steps, offset),
            SchedulerKind::DpmPlusPlus => {
                match cfg.algorithm_type.as_deref() {
                    None | Some("dpmsolver++") => {}
                    Some(other) => {
                        return Err(unsupported(format!(
                            "algorithm_type {other:?}: only dpmsolver++ is supported"
                        )))
                    }
                }
                s.heun = match cfg.solver_type.as_deref() {
                    None | Some("midpoint") => false,
                    Some("heun") => true,
                    Some(other) => return Err(unsupported(format!("solver_type {other:?}"))),
                };
                if !(1..=2).contains(&s.solver_order) {
                    return Err(unsupported(format!(
                        "solver_order {}: only 1 and 2 are supported",
                        s.solver_order
                    )));
                }
                s.final_sigma_zero = match cfg.final_sigmas_type.as_deref() {
                    None | Some("zero") => true,
                    Some("sigma_min") => false,
                    Some(other) => return Err(unsupported(format!("final_sigmas_type {other:?}"))),
                };
                s.dpm_schedule(spacing, steps, offset);
            }
        }
        // A large steps_offset pushes the last steps past the schedule, where
        // diffusers raises IndexError mid-run; refuse before any work.
        if let Some(&t) = s.timesteps.iter().find(|&&t| t >= num_train as f64) {
            return Err(unsupported(format!(
                "{steps} steps with steps_offset {offset} reach training timestep {t}, \
                 past the schedule's last ({}); use fewer steps",
                num_train - 1
            )));
        }
        Ok(s)
    }

    /// DDIM's and PNDM's integer timesteps, descending.
    fn integer_timesteps(&self, spacing: Spacing, steps: usize, offset: usize) -> Vec<usize> {
        let n = self.num_train;
        match spacing {
            Spacing::Linspace => (0..steps)
                .rev()
                .map(|i| {
                    (i as f64 * (n - 1) as f64 / (steps.max(2) - 1) as f64).round_ties_even()
                        as usize
                })
                .collect(),
            Spacing::Leading => (0..steps).rev().map(|i| i * (n / steps) + offset).collect(),
            Spacing::Trailing => trailing(n, steps).map(|t| t as usize).collect(),
        }
    }

    /// σ at fractional training timesteps `ts`: √((1 − ᾱ)/ᾱ) in f32 as torch
    /// computes it, interpolated like `np.interp`.
    fn sigmas_at(&self, ts: impl Iterator<Item = f64>) -> Vec<f32> {
        let train: Vec<f32> = self
            .alphas_cumprod
            .iter()
            .map(|a| ((1.0 - a) / a).sqrt())
            .collect();
        ts.map(|t| interp(t, &train) as f32).collect()
    }

    fn euler_schedule(&mut self, spacing: Spacing, steps: usize, offset: usize) {
        let n = self.num_train;
        let ts: Vec<f32> = match spacing {
            Spacing::Linspace => (0..steps)
                .rev()
                .map(|i| {
                    if steps == 1 {
                        0.0
                    } else {
                        (i as f64 * (n - 1) as f64 / (steps - 1) as f64) as f32
                    }
                })
                .collect(),
            Spacing::Leading => (0..steps)
                .rev()
                .map(|i| (i * (n / steps)) as f32 + offset as f32)
                .collect(),
            Spacing::Trailing => trailing(n, steps).map(|t| t as f32).collect(),
        };
        self.sigmas = self.sigmas_at(ts.iter().map(|&t| t as f64));
        self.sigmas.push(0.0);
        let max = self.sigmas.iter().copied().fold(0f32, f32::max);
        self.init_noise_sigma = match spacing {
            Spacing::Linspace | Spacing::Trailing => max as f64,
            Spacing::Leading => (max * max + 1.0).sqrt() as f64,
        };
        self.timesteps = ts.into_iter().map(|t| t as f64).collect();
    }

    fn dpm_schedule(&mut self, spacing: Spacing, steps: usize, offset: usize) {
        let last = self.num_train; // lambda_min_clipped = -inf clips nothing
        let ts: Vec<usize> = match spacing {
            Spacing::Linspace => (1..=steps)
                .rev()
                .map(|i| (i as f64 * (last - 1) as f64 / steps as f64).round_ties_even() as usize)
                .collect(),
            Spacing::Leading => (1..=steps)
                .rev()
                .map(|i| i * (last / (steps + 1)) + offset)
                .collect(),
            Spacing::Trailing => trailing(last, steps).map(|t| t as usize).collect(),
        };
        self.sigmas = self.sigmas_at(ts.iter().map(|&t| t as f64));
        let sigma_min = ((1.0 - self.alphas_cumprod[0]) / self.alphas_cumprod[0]).sqrt();
        self.sigmas.push(if self.final_sigma_zero {
            0.0
        } else {
            sigma_min
        });
        self.timesteps = ts.into_iter().map(|t| t as f64).collect();
    }

    /// The timesteps to denoise at, in order; pass each to the UNet. Step
    /// indices `i` elsewhere count from the first of these.
    pub fn timesteps(&self) -> &[f64] {
        &self.timesteps[self.begin..]
    }

    /// Starts the schedule `begin` steps in, as diffusers' img2img does with
    /// `set_begin_index`: the first `begin` timesteps are dropped, and the
    /// multistep methods start their history afresh.
    pub fn begin_at(&mut self, begin: usize) -> Result<()> {
        if begin >= self.timesteps.len() {
            return Err(Error::Unsupported(format!(
                "cannot start step {begin} of a {}-step schedule",
                self.timesteps.len()
            )));
        }
        self.begin = begin;
        Ok(())
    }

    /// The standard deviation to scale the initial Gaussian noise by.
    pub fn init_noise_sigma(&self) -> f64 {
        self.init_noise_sigma
    }

    /// Whether [`Scheduler::step`] needs fresh Gaussian noise.
    pub fn needs_noise(&self) -> bool {
        self.kind == SchedulerKind::EulerAncestral
    }

    /// The UNet input at step `i` (Euler divides by √(σ² + 1)).
    pub fn scale_model_input(&self, sample: &Tensor, i: usize) -> Result<Tensor> {
        let i = i + self.begin;
        Ok(match self.kind {
            SchedulerKind::EulerAncestral => {
                let s = self.sigmas[i];
                (sample / (s * s + 1.0).sqrt() as f64)?
            }
            _ => sample.clone(),
        })
    }

    /// Adds noise to clean latents at step `i` (img2img: 0, the first step).
    pub fn add_noise(&self, original: &Tensor, noise: &Tensor, i: usize) -> Result<Tensor> {
        let i = i + self.begin;
        match self.kind {
            SchedulerKind::EulerAncestral | SchedulerKind::DpmPlusPlus => {
                lin(original, 1.0, noise, self.sigmas[i] as f64)
            }
            SchedulerKind::Pndm | SchedulerKind::Ddim => {
                let a = self.alphas_cumprod[self.timesteps[i] as usize] as f64;
                lin(original, a.sqrt(), noise, (1.0 - a).sqrt())
            }
        }
    }

    /// One denoising step at index `i` from `sample` given the UNet's
    /// `model_output`; `noise` (same shape) is required when
    /// [`Scheduler::needs_noise`].
    pub fn step(
        &mut self,
        model_output: &Tensor,
        i: usize,
        sample: &Tensor,
        noise: Option<&Tensor>,
    ) -> Result<Tensor> {
        let i = i + self.begin;
        if i >= self.timesteps.len() {
            return Err(Error::Unsupported(format!(
                "step {i} of a {}-step schedule",
                self.timesteps.len()
            )));
        }
        match self.kind {
            SchedulerKind::Pndm => self.step_plms(model_output, i, sample),
            SchedulerKind::Ddim => self.step_ddim(model_output, i, sample),
            SchedulerKind::EulerAncestral => {
                let noise = noise
                    .ok_or_else(|| Error::Unsupported("Euler ancestral steps need noise".into()))?;
                self.step_euler_ancestral(model_output, i, sample, noise)
            }
            SchedulerKind::DpmPlusPlus => self.step_dpm(model_output, i, sample),
        }
    }

    fn alpha_at(&self, t: isize) -> f64 {
        if t >= 0 {
            self.alphas_cumprod[t as usize] as f64
        } else {
            self.final_alpha_cumprod as f64
        }
    }

    fn step_ddim(&mut self, model_output: &Tensor, i: usize, sample: &Tensor) -> Result<Tensor> {
        let t = self.timesteps[i] as isize;
        let prev = t - self.ratio as isize;
        let (a_t, a_prev) = (self.alpha_at(t), self.alpha_at(prev));
        let b_t = 1.0 - a_t;
        let (mut x0, eps) = match self.prediction {
            Prediction::Epsilon => (
                lin(
                    sample,
                    1.0 / a_t.sqrt(),
                    model_output,
                    -b_t.sqrt() / a_t.sqrt(),
                )?,
                model_output.clone(),
            ),
            Prediction::Sample => (
                model_output.clone(),
                lin(
                    sample,
                    1.0 / b_t.sqrt(),
                    model_output,
                    -a_t.sqrt() / b_t.sqrt(),
                )?,
            ),
            Prediction::V => (
                lin(sample, a_t.sqrt(), model_output, -b_t.sqrt())?,
                lin(model_output, a_t.sqrt(), sample, b_t.sqrt())?,
            ),
        };
        if let Some(r) = self.clip_sample {
            x0 = x0.clamp(-r, r)?;
        }
        lin(&x0, a_prev.sqrt(), &eps, (1.0 - a_prev).sqrt())
    }

    fn step_plms(&mut self, model_output: &Tensor, i: usize, sample: &Tensor) -> Result<Tensor> {
        let mut t = self.timesteps[i] as isize;
        let mut prev = t - self.ratio as isize;
        if self.counter != 1 {
            let keep = self.ets.len().saturating_sub(3);
            self.ets.drain(..keep);
            self.ets.push(model_output.clone());
        } else {
            prev = t;
            t += self.ratio as isize;
        }
        let e = &self.ets;
        let n = e.len();
        let mut sample = sample.clone();
        let eps = if n == 1 && self.counter == 0 {
            self.cur_sample = Some(sample.clone());
            model_output.clone()
        } else if n == 1 && self.counter == 1 {
            sample = self.cur_sample.take().expect("set at the first step");
            ((model_output + &e[0])? / 2.0)?
        } else if n == 2 {
            lin(&e[1], 1.5, &e[0], -0.5)?
        } else if n == 3 {
            ((lin(&e[2], 23.0, &e[1], -16.0)? + (&e[0] * 5.0)?)? / 12.0)?
        } else {
            let a = lin(&e[n - 1], 55.0, &e[n - 2], -59.0)?;
            let b = lin(&e[n - 3], 37.0, &e[n - 4], -9.0)?;
            ((a + b)? / 24.0)?
        };
        let (a_t, a_prev) = (self.alpha_at(t), self.alpha_at(prev));
        let (b_t, b_prev) = (1.0 - a_t, 1.0 - a_prev);
        let eps = match self.prediction {
            Prediction::V => lin(&eps, a_t.sqrt(), &sample, b_t.sqrt())?,
            _ => eps,
        };
        let denom = a_t * b_prev.sqrt() + (a_t * b_t * a_prev).sqrt();
        self.counter += 1;
        lin(
            &sample,
            (a_prev / a_t).sqrt(),
            &eps,
            -(a_prev - a_t) / denom,
        )
    }

    fn step_euler_ancestral(
        &mut self,
        model_output: &Tensor,
        i: usize,
        sample: &Tensor,
        noise: &Tensor,
    ) -> Result<Tensor> {
        let sigma = self.sigmas[i] as f64;
        let x0 = match self.prediction {
            Prediction::Epsilon => lin(sample, 1.0, model_output, -sigma)?,
            Prediction::V => {
                let s2 = sigma * sigma + 1.0;
                lin(model_output, -sigma / s2.sqrt(), sample, 1.0 / s2)?
            }
            Prediction::Sample => unreachable!("refused in new()"),
        };
        let (from, to) = (sigma, self.sigmas[i + 1] as f64);
        let up = (to * to * (from * from - to * to) / (from * from)).sqrt();
        let down = (to * to - up * up).sqrt();
        let derivative = ((sample - &x0)? / sigma)?;
        let prev = (sample + (derivative * (down - sigma))?)?;
        Ok((prev + (noise * up)?)?)
    }

    /// (α_t, σ_t, λ_t) of DPM-Solver for a σ of the Karras parametrisation.
    fn dpm_coords(sigma: f64) -> (f64, f64, f64) {
        let alpha = 1.0 / (sigma * sigma + 1.0).sqrt();
        let sigma_t = sigma * alpha;
        (alpha, sigma_t, alpha.ln() - sigma_t.ln())
    }

    fn step_dpm(&mut self, model_output: &Tensor, i: usize, sample: &Tensor) -> Result<Tensor> {
        let n = self.timesteps.len();
        let lower_order_final = i == n - 1
            && (self.euler_at_final || (self.lower_order_final && n < 15) || self.final_sigma_zero);
        let (alpha_s0, sigma_s0, lambda_s0) = Self::dpm_coords(self.sigmas[i] as f64);
        let x0 = match self.prediction {
            Prediction::Epsilon => lin(sample, 1.0 / alpha_s0, model_output, -sigma_s0 / alpha_s0)?,
            Prediction::Sample => model_output.clone(),
            Prediction::V => lin(sample, alpha_s0, model_output, -sigma_s0)?,
        };
        if self.model_outputs.len() == self.solver_order {
            self.model_outputs.remove(0);
        }
        self.model_outputs.push(x0);
        let (alpha_t, sigma_t, lambda_t) = Self::dpm_coords(self.sigmas[i + 1] as f64);
        let h = lambda_t - lambda_s0;
        let m0 = self.model_outputs.last().expect("pushed above");
        // At σ = 0 the update is x0 itself (h = ∞, e^{-h} = 0).
        let ratio = if sigma_t == 0.0 {
            0.0
        } else {
            sigma_t / sigma_s0
        };
        let expm = (-h).exp() - 1.0;
        let prev = if self.solver_order == 1 || self.lower_order_nums < 1 || lower_order_final {
            lin(sample, ratio, m0, -alpha_t * expm)?
        } else {
            let m1 = &self.model_outputs[self.model_outputs.len() - 2];
            let (_, _, lambda_s1) = Self::dpm_coords(self.sigmas[i - 1] as f64);
            let r0 = (lambda_s0 - lambda_s1) / h;
            let d1 = ((m0 - m1)? / r0)?;
            let c1 = if self.heun {
                alpha_t * (expm / h + 1.0)
            } else {
                -0.5 * alpha_t * expm
            };
            (lin(sample, ratio, m0, -alpha_t * expm)? + (d1 * c1)?)?
        };
        if self.lower_order_nums < self.solver_order {
            self.lower_order_nums += 1;
        }
        Ok(prev)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linspace_matches_torch_endpoints_and_symmetry() {
        let v = linspace_f32(0.0, 1.0, 5);
        assert_eq!(v, vec![0.0, 0.25, 0.5, 0.75, 1.0]);
        assert_eq!(*linspace_f32(0.1, 0.7, 1000).last().unwrap(), 0.7);
    }

    #[test]
    fn unsupported_settings_are_named() {
        let cfg = SchedulerConfig {
            use_karras_sigmas: Some(true),
            ..Default::default()
        };
        let err = Scheduler::new(SchedulerKind::DpmPlusPlus, &cfg, 10)
            .err()
            .unwrap();
        assert!(err.to_string().contains("use_karras_sigmas"), "{err}");
        assert!("euler".parse::<SchedulerKind>().is_err());
    }
}
