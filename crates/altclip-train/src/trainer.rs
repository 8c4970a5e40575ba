//! The optimisation loop both phases share: deterministic shuffling, gradient
//! accumulation, clipping, AdamW on a warm-up + decay schedule, a JSON Lines
//! log, periodic evaluation, and checkpoints with optimizer state that a
//! resumed run continues from exactly.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{Tensor, Var};
use serde::{Deserialize, Serialize};

use altclip::error::{Error, Result};

use crate::error::{Error as TrainError, Result as TrainResult};
use crate::optim::{AdamW, AdamWConfig, Gradients};
use crate::rng::epoch_order;
use crate::schedule::{Decay, LrSchedule};
use crate::student::Student;

/// A training objective over examples numbered `0..len()`.
pub trait Objective {
    /// Number of training examples.
    fn len(&self) -> usize;

    /// True when there are no examples.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The mean loss over the examples `batch`, a differentiable scalar.
    fn loss(&self, student: &Student, batch: &[usize]) -> Result<Tensor>;

    /// Metrics on held-out data, when the objective has some.
    fn evaluate(&self, _student: &Student) -> Result<Option<serde_json::Value>> {
        Ok(None)
    }
}

/// Everything that determines the sequence of updates. A resumed run must
/// use the same values (except the bookkeeping ones, see [`Trainer::resume`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    /// Examples per optimizer step (the effective batch).
    pub batch_size: usize,
    /// Micro-batches per step; each holds `batch_size / grad_accumulation` examples.
    pub grad_accumulation: usize,
    /// Passes over the data, unless `max_steps` is set.
    pub epochs: usize,
    /// Stop after this many optimizer steps (the data is cycled as needed).
    pub max_steps: Option<u64>,
    /// Peak learning rate.
    pub lr: f64,
    pub warmup_steps: u64,
    pub decay: Decay,
    pub optimizer: AdamWConfig,
    /// Clip gradients to this global L2 norm.
    pub clip_grad_norm: Option<f64>,
    /// Seeds the data order.
    pub seed: u64,
    /// Checkpoint every this many steps (bookkeeping).
    pub save_every: Option<u64>,
    /// Evaluate every this many steps, and at the end (bookkeeping).
    pub eval_every: Option<u64>,
    /// Checkpoints kept on disk, newest first (bookkeeping).
    pub keep_checkpoints: usize,
    /// A digest of the training data (e.g. the data file's content hash): a
    /// resumed run must train on the same data, not only as many examples.
    #[serde(default)]
    pub data: String,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            batch_size: 32,
            grad_accumulation: 1,
            epochs: 1,
            max_steps: None,
            lr: 1e-4,
            warmup_steps: 0,
            decay: Decay::Cosine,
            optimizer: AdamWConfig::default(),
            clip_grad_norm: Some(1.0),
            seed: 0,
            save_every: None,
            eval_every: None,
            keep_checkpoints: 2,
            data: String::new(),
        }
    }
}

impl TrainConfig {
    /// The fields that change the updates, for comparing a resumed run.
    fn fingerprint(&self) -> serde_json::Value {
        let mut v = serde_json::to_value(self).expect("config serialises");
        if let Some(o) = v.as_object_mut() {
            for k in ["save_every", "eval_every", "keep_checkpoints"] {
                o.remove(k);
            }
        }
        v
    }
}

/// What one optimizer step did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepLog {
    /// Steps completed, counting this one.
    pub step: u64,
    pub epoch: u64,
    /// Mean of the micro-batch losses.
    pub loss: f64,
    pub lr: f64,
    /// Global gradient norm before clipping.
    pub grad_norm: f64,
    /// Examples consumed so far.
    pub samples: u64,
    /// Training examples per second over this run (excluding evaluation).
    pub samples_per_s: f64,
}

/// Progress reported to the caller of [`Trainer::run`].
pub enum Event<'a> {
    Step {
        log: &'a StepLog,
        total_steps: u64,
    },
    Eval {
        step: u64,
        metrics: &'a serde_json::Value,
    },
    Checkpoint {
        step: u64,
        path: &'a Path,
    },
}

#[derive(Serialize, Deserialize)]
struct TrainerState {
    format: u32,
    step: u64,
    examples: usize,
    config: TrainConfig,
}

/// Optimises a [`Student`] for an [`Objective`].
pub struct Trainer<'s> {
    student: &'s Student,
    vars: Vec<(String, Var)>,
    optimizer: AdamW,
    config: TrainConfig,
    schedule: LrSchedule,
    examples: usize,
    steps_per_epoch: u64,
    step: u64,
    out_dir: PathBuf,
}

/// File names inside the output directory.
pub const LOG_FILE: &str = "train_log.jsonl";
/// Sub-directory of the output directory holding the checkpoints.
pub const CHECKPOINT_DIR: &str = "checkpoints";

impl<'s> Trainer<'s> {
    /// A trainer for `examples` examples writing its log and checkpoints under `out_dir`.
    pub fn new(
        student: &'s Student,
        examples: usize,
        config: TrainConfig,
        out_dir: &Path,
    ) -> TrainResult<Self> {
        let c = &config;
        if c.grad_accumulation == 0
            || c.batch_size == 0
            || !c.batch_size.is_multiple_of(c.grad_accumulation)
        {
            return Err(Error::Invalid(format!(
                "batch size {} must be a positive multiple of the gradient accumulation {}",
                c.batch_size, c.grad_accumulation
            ))
            .into());
        }
        if examples < c.batch_size {
            return Err(TrainError::TooFewExamples {
                examples,
                batch_size: c.batch_size,
            });
        }
        let steps_per_epoch = (examples / c.batch_size) as u64;
        let total_steps = c
            .max_steps
            .unwrap_or(steps_per_epoch * c.epochs.max(1) as u64);
        let vars = student.named_vars();
        let optimizer = AdamW::new(&vars, c.optimizer.clone())?;
        Ok(Self {
            schedule: LrSchedule {
                base_lr: c.lr,
                warmup_steps: c.warmup_steps,
                total_steps,
                decay: c.decay,
            },
            student,
            vars,
            optimizer,
            config,
            examples,
            steps_per_epoch,
            step: 0,
            out_dir: out_dir.to_path_buf(),
        })
    }

    /// Optimizer steps completed.
    pub fn step(&self) -> u64 {
        self.step
    }

    /// Steps the run will take in all.
    pub fn total_steps(&self) -> u64 {
        self.schedule.total_steps
    }

    /// The learning-rate schedule.
    pub fn schedule(&self) -> &LrSchedule {
        &self.schedule
    }

    /// The examples of step `step` (0-based): a slice of the epoch's shuffled order.
    pub fn batch_for(&self, step: u64) -> Vec<usize> {
        let epoch = step / self.steps_per_epoch;
        let k = (step % self.steps_per_epoch) as usize;
        let order = epoch_order(self.examples, self.config.seed, epoch);
        order[k * self.config.batch_size..(k + 1) * self.config.batch_size].to_vec()
    }

    /// One optimizer step on `batch`: `grad_accumulation` micro-batches, each
    /// loss divided by their number before its backward pass, gradients
    /// summed, clipped, then AdamW at the schedule's rate for this step.
    pub fn train_step(&mut self, objective: &dyn Objective, batch: &[usize]) -> Result<StepLog> {
        let accumulation = self.config.grad_accumulation;
        if batch.is_empty() || !batch.len().is_multiple_of(accumulation) {
            return Err(Error::Invalid(format!(
                "a batch of {} examples does not split into {accumulation} equal micro-batches",
                batch.len()
            )));
        }
        let mut grads = Gradients::new(self.vars.len());
        let mut loss_sum = 0.0;
        let (mut t_forward, mut t_backward) = (0.0, 0.0);
        for micro in batch.chunks(batch.len() / accumulation) {
            let t0 = Instant::now();
            let loss = objective.loss(self.student, micro)?;
            let value: f32 = loss.to_scalar()?;
            if !value.is_finite() {
                return Err(Error::Invalid(format!(
                    "the loss of step {} is {value}; lower the learning rate or check the data",
                    self.step + 1
                )));
            }
            loss_sum += value as f64;
            let t1 = Instant::now();
            let store = (loss / accumulation as f64)?.backward()?;
            grads.accumulate(&store, &self.vars)?;
            t_forward += (t1 - t0).as_secs_f64();
            t_backward += t1.elapsed().as_secs_f64();
        }
        let t2 = Instant::now();
        let grad_norm = match self.config.clip_grad_norm {
            Some(max) => grads.clip(max)?,
            None => grads.global_norm()?,
        };
        let t3 = Instant::now();
        let lr = self.schedule.lr(self.step);
        self.optimizer.step(&grads, lr)?;
        tracing::debug!(
            "step {}: forward {t_forward:.3}s, backward {t_backward:.3}s, clip {:.3}s, AdamW {:.3}s",
            self.step + 1,
            (t3 - t2).as_secs_f64(),
            t3.elapsed().as_secs_f64()
        );
        self.step += 1;
        Ok(StepLog {
            step: self.step,
            epoch: (self.step - 1) / self.steps_per_epoch,
            loss: loss_sum / accumulation as f64,
            lr,
            grad_norm,
            samples: self.step * self.config.batch_size as u64,
            samples_per_s: 0.0,
        })
    }

    /// Continues from the newest checkpoint under `out_dir/checkpoints`:
    /// parameters, optimizer moments and step count. The training config and
    /// the number of examples must match the checkpoint's. Returns the step
    /// resumed from, or `None` when there is no checkpoint.
    pub fn resume(&mut self) -> Result<Option<u64>> {
        let Some(dir) = latest_checkpoint(&self.out_dir)? else {
            return Ok(None);
        };
        let state_path = dir.join("trainer_state.json");
        let text = std::fs::read_to_string(&state_path).map_err(|e| Error::io(&state_path, e))?;
        let state: TrainerState = serde_json::from_str(&text).map_err(|e| Error::BadJson {
            path: state_path.clone(),
            what: "trainer state",
            reason: e.to_string(),
        })?;
        if state.examples != self.examples {
            return Err(Error::Invalid(format!(
                "{} was written for {} training examples, this run has {}; resume with the same data",
                dir.display(),
                state.examples,
                self.examples
            )));
        }
        let (saved, now) = (state.config.fingerprint(), self.config.fingerprint());
        if saved != now {
            let differing: Vec<String> = now
                .as_object()
                .into_iter()
                .flatten()
                .filter(|(k, v)| saved.get(k.as_str()) != Some(*v))
                .map(|(k, v)| format!("{k} (checkpoint {}, now {v})", saved[k.as_str()]))
                .collect();
            return Err(Error::Invalid(format!(
                "{} was written with other training settings: {}; resume with the original ones",
                dir.display(),
                differing.join(", ")
            )));
        }
        let device = self.student.device.clone();
        let params_path = dir.join("params.safetensors");
        let params = candle_core::safetensors::load(&params_path, &device)?;
        for (name, var) in &self.vars {
            let t = params.get(name).ok_or_else(|| Error::MissingTensor {
                name: name.clone(),
                source_desc: params_path.display().to_string(),
            })?;
            if t.dims() != var.dims() {
                return Err(Error::ShapeMismatch {
                    name: name.clone(),
                    source_desc: params_path.display().to_string(),
                    expected: var.dims().to_vec(),
                    found: t.dims().to_vec(),
                });
            }
            var.set(t)?;
        }
        let optim = candle_core::safetensors::load(dir.join("optimizer.safetensors"), &device)?;
        self.optimizer.load_state(&optim, state.step)?;
        self.step = state.step;
        Ok(Some(state.step))
    }

    /// Writes `checkpoints/step-NNNNNNNN` (parameters, optimizer state,
    /// trainer state) atomically and prunes old ones. Returns its path.
    pub fn save_checkpoint(&self) -> Result<PathBuf> {
        let root = self.out_dir.join(CHECKPOINT_DIR);
        let final_dir = root.join(format!("step-{:08}", self.step));
        let tmp = root.join(format!(".tmp-step-{:08}", self.step));
        let _ = std::fs::remove_dir_all(&tmp);
        std::fs::create_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
        let params: HashMap<String, Tensor> = self
            .vars
            .iter()
            .map(|(n, v)| (n.clone(), v.as_tensor().detach()))
            .collect();
        candle_core::safetensors::save(&params, tmp.join("params.safetensors"))?;
        candle_core::safetensors::save(
            &self.optimizer.state_tensors()?,
            tmp.join("optimizer.safetensors"),
        )?;
        let state = TrainerState {
            format: 1,
            step: self.step,
            examples: self.examples,
            config: self.config.clone(),
        };
        let state_path = tmp.join("trainer_state.json");
        let json = serde_json::to_string_pretty(&state).expect("state serialises");
        std::fs::write(&state_path, json).map_err(|e| Error::io(&state_path, e))?;
        let _ = std::fs::remove_dir_all(&final_dir);
        std::fs::rename(&tmp, &final_dir).map_err(|e| Error::io(&final_dir, e))?;
        let mut all = checkpoints(&self.out_dir)?;
        while all.len() > self.config.keep_checkpoints.max(1) {
            let (_, oldest) = all.remove(0);
            std::fs::remove_dir_all(&oldest).map_err(|e| Error::io(&oldest, e))?;
        }
        Ok(final_dir)
    }

    /// Trains to the last step: shuffled batches, a log line per step in
    /// `train_log.jsonl`, evaluation and checkpoints as configured. A resumed
    /// run (see [`Trainer::resume`]) keeps the log up to its step and appends;
    /// a fresh run refuses an output directory that already has checkpoints.
    /// `on_event` sees every step, evaluation and checkpoint; returning
    /// `false` stops the run there (as an interruption would).
    pub fn run(
        &mut self,
        objective: &dyn Objective,
        on_event: &mut dyn FnMut(Event) -> bool,
    ) -> TrainResult<()> {
        if objective.len() != self.examples {
            return Err(Error::Invalid(format!(
                "the trainer was built for {} examples, the objective has {}",
                self.examples,
                objective.len()
            ))
            .into());
        }
        if self.step == 0 && !checkpoints(&self.out_dir)?.is_empty() {
            return Err(TrainError::CheckpointsExist(
                self.out_dir.join(CHECKPOINT_DIR),
            ));
        }
        let mut log = open_log(&self.out_dir, self.step)?;
        let start = Instant::now();
        let mut trained = std::time::Duration::ZERO;
        let first = self.step;
        while self.step < self.schedule.total_steps {
            let t0 = Instant::now();
            let batch = self.batch_for(self.step);
            let mut entry = self.train_step(objective, &batch)?;
            trained += t0.elapsed();
            entry.samples_per_s = ((self.step - first) * self.config.batch_size as u64) as f64
                / trained.as_secs_f64().max(1e-9);
            write_line(
                &mut log,
                &self.out_dir,
                &serde_json::to_value(&entry).unwrap(),
            )?;
            let mut go_on = on_event(Event::Step {
                log: &entry,
                total_steps: self.schedule.total_steps,
            });
            let last = self.step == self.schedule.total_steps;
            if self
                .config
                .eval_every
                .is_some_and(|n| self.step.is_multiple_of(n))
                || last
            {
                if let Some(metrics) = objective.evaluate(self.student)? {
                    let line = serde_json::json!({"step": self.step, "eval": metrics});
                    write_line(&mut log, &self.out_dir, &line)?;
                    go_on &= on_event(Event::Eval {
                        step: self.step,
                        metrics: &metrics,
                    });
                }
            }
            if self
                .config
                .save_every
                .is_some_and(|n| self.step.is_multiple_of(n))
            {
                let path = self.save_checkpoint()?;
                go_on &= on_event(Event::Checkpoint {
                    step: self.step,
                    path: &path,
                });
            }
            if !go_on {
                break;
            }
        }
        tracing::info!(
            "trained {} steps in {:.1}s",
            self.step - first,
            start.elapsed().as_secs_f64()
        );
        Ok(())
    }
}

/// The checkpoints under `out_dir/checkpoints`, oldest first.
fn checkpoints(out_dir: &Path) -> Result<Vec<(u64, PathBuf)>> {
    let root = out_dir.join(CHECKPOINT_DIR);
    if !root.is_dir() {
        return Ok(Vec::new());
    }
    let mut found = Vec::new();
    for entry in std::fs::read_dir(&root).map_err(|e| Error::io(&root, e))? {
        let path = entry.map_err(|e| Error::io(&root, e))?.path();
        let step = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_prefix("step-"))
            .and_then(|n| n.parse::<u64>().ok());
        if let Some(step) = step {
            if path.join("trainer_state.json").is_file() {
                found.push((step, path));
            }
        }
    }
    found.sort();
    Ok(found)
}

/// The newest complete checkpoint under `out_dir/checkpoints`.
pub fn latest_checkpoint(out_dir: &Path) -> Result<Option<PathBuf>> {
    Ok(checkpoints(out_dir)?.pop().map(|(_, p)| p))
}

/// Opens the log for appending after keeping the entries of steps ≤ `step`.
fn open_log(out_dir: &Path, step: u64) -> Result<std::fs::File> {
    std::fs::create_dir_all(out_dir).map_err(|e| Error::io(out_dir, e))?;
    let path = out_dir.join(LOG_FILE);
    let kept: String = if step == 0 {
        String::new()
    } else {
        std::fs::read_to_string(&path)
            .unwrap_or_default()
            .lines()
            .filter(|line| {
                serde_json::from_str::<serde_json::Value>(line)
                    .ok()
                    .and_then(|v| v["step"].as_u64())
                    .is_some_and(|s| s <= step)
            })
            .map(|l| format!("{l}\n"))
            .collect()
    };
    std::fs::write(&path, kept).map_err(|e| Error::io(&path, e))?;
    std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .map_err(|e| Error::io(&path, e))
}

fn write_line(file: &mut std::fs::File, out_dir: &Path, value: &serde_json::Value) -> Result<()> {
    let path = out_dir.join(LOG_FILE);
    writeln!(file, "{value}").map_err(|e| Error::io(&path, e))?;
    file.flush().map_err(|e| Error::io(&path, e))
}
