//! Learning-rate schedules: linear warm-up, then cosine, linear or no decay,
//! exactly as transformers' `get_{cosine,linear,constant}_schedule_with_warmup`.

use serde::{Deserialize, Serialize};

/// What follows the warm-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Decay {
    /// Half a cosine wave from the base rate to 0 at the last step.
    Cosine,
    /// A straight line from the base rate to 0 at the last step.
    Linear,
    /// The base rate throughout.
    Constant,
}

/// The learning rate of each optimizer step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LrSchedule {
    pub base_lr: f64,
    pub warmup_steps: u64,
    pub total_steps: u64,
    pub decay: Decay,
}

impl LrSchedule {
    /// The rate for optimizer step `step` (0-based). As with transformers'
    /// `LambdaLR`, step 0 of a warm-up runs at rate 0.
    pub fn lr(&self, step: u64) -> f64 {
        let (s, w, t) = (
            step as f64,
            self.warmup_steps as f64,
            self.total_steps as f64,
        );
        if step < self.warmup_steps {
            return self.base_lr * s / w.max(1.0);
        }
        let factor = match self.decay {
            Decay::Constant => 1.0,
            Decay::Linear => ((t - s) / (t - w).max(1.0)).max(0.0),
            Decay::Cosine => {
                let progress = (s - w) / (t - w).max(1.0);
                (0.5 * (1.0 + (std::f64::consts::PI * progress).cos())).max(0.0)
            }
        };
        self.base_lr * factor
    }
}
