//! AltDiffusion's text encoder, diffusers' `RobertaSeriesModelWithTransformation`:
//! the XLM-R encoder of the AltCLIP text tower (the same code) with a
//! per-token projection to the UNet's cross-attention width.
//!
//! - AltDiffusion: `transformation(last_hidden_state)` — no `pre_LN`.
//! - AltDiffusion-m18 (`has_pre_transformation`):
//!   `transformation_pre(pre_LN(hidden_states[-2]))`, the penultimate layer.

use std::path::Path;

use altclip::nn::{LayerNorm, Linear};
use altclip::text::{TextInputs, XlmRoberta};
use altclip::weights::Weights;
use altclip::{ComputePlan, Device, TextConfig};
use candle_core::Tensor;
use serde::Deserialize;

use crate::error::{Error, Result};

/// `text_encoder/config.json`: an XLM-R config plus the head's settings.
#[derive(Debug, Clone, Deserialize)]
pub struct TextEncoderConfig {
    #[serde(flatten)]
    pub text: TextConfig,
    /// The m18 head: `transformation_pre(pre_LN(hidden_states[-2]))`.
    #[serde(default)]
    pub has_pre_transformation: bool,
    /// Whether the pipeline passes the padding mask (`RobertaSeriesConfig`'s
    /// default); without it every one of the 77 positions is attended.
    #[serde(default = "yes")]
    pub use_attention_mask: bool,
}

fn yes() -> bool {
    true
}

enum Head {
    Last {
        transformation: Linear,
    },
    Penultimate {
        pre_ln: LayerNorm,
        transformation_pre: Linear,
    },
}

/// The loaded encoder.
pub struct TextEncoder {
    roberta: XlmRoberta,
    head: Head,
    pub config: TextEncoderConfig,
}

impl TextEncoder {
    /// Loads `dir` (diffusers' `text_encoder/`): `config.json` and weights
    /// (safetensors or `.bin`), on `plan`'s kernels.
    pub fn load(dir: &Path, plan: &ComputePlan, device: &Device) -> Result<Self> {
        let path = dir.join("config.json");
        let text = std::fs::read_to_string(&path).map_err(|e| Error::BadConfig {
            path: path.clone(),
            reason: format!("{e}; expected diffusers' text_encoder/ folder"),
        })?;
        let config: TextEncoderConfig =
            serde_json::from_str(&text).map_err(|e| Error::BadConfig {
                path: path.clone(),
                reason: format!("not an XLM-R text encoder config: {e}"),
            })?;
        let w = Weights::from_dir(dir, plan.activations, device)?.with_linear_kernel(plan.linear);
        let t = &config.text;
        let roberta = XlmRoberta::load(&w.pp("roberta"), t)?;
        let head = if config.has_pre_transformation {
            Head::Penultimate {
                pre_ln: LayerNorm::load(&w.pp("pre_LN"), t.hidden_size, t.layer_norm_eps)?,
                transformation_pre: Linear::load(
                    &w.pp("transformation_pre"),
                    t.hidden_size,
                    t.project_dim,
                )?,
            }
        } else {
            Head::Last {
                transformation: Linear::load(
                    &w.pp("transformation"),
                    t.hidden_size,
                    t.project_dim,
                )?,
            }
        };
        Ok(Self {
            roberta,
            head,
            config,
        })
    }

    /// `projection_state`, `[B, L, project_dim]`: one conditioning vector per
    /// token, padding positions included (the UNet attends to all 77).
    pub fn forward(&self, inputs: &TextInputs) -> Result<Tensor> {
        let unmasked;
        let inputs = if self.config.use_attention_mask {
            inputs
        } else {
            unmasked = TextInputs {
                input_ids: inputs.input_ids.clone(),
                position_ids: inputs.position_ids.clone(),
                mask: inputs.mask.zeros_like()?,
            };
            &unmasked
        };
        Ok(match &self.head {
            Head::Last { transformation } => {
                transformation.forward(&self.roberta.forward(inputs)?)?
            }
            Head::Penultimate {
                pre_ln,
                transformation_pre,
            } => {
                let n = self.roberta.num_layers().saturating_sub(1);
                let h = self.roberta.forward_layers(inputs, n)?;
                transformation_pre.forward(&pre_ln.forward(&h)?)?
            }
        })
    }
}
