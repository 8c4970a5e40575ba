//! The trainable text tower: the same [`TextTower`] code path as inference,
//! loaded through a [`Weights::trainable`] view so that every parameter is a
//! candle `Var` in one [`VarMap`], named by its AltCLIP checkpoint key.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::VarMap;

use crate::rng::Rng;
use altclip::config::{AltClipConfig, TextConfig};
use altclip::error::{Error, Result};
use altclip::nn::Linear;
use altclip::text::{TextInputs, TextTower};
use altclip::tokenize::TextTokenizer;
use altclip::weights::Weights;

/// What kind of checkpoint the student starts from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StudentKind {
    /// A full AltCLIP checkpoint (`model_type: altclip`).
    AltClip,
    /// A plain XLM-RoBERTa checkpoint; `pre_LN` and `transformation` are new.
    XlmRoberta,
}

/// How to build a [`Student`].
#[derive(Debug, Clone)]
pub struct StudentOptions {
    /// Width of `transformation`'s output. Required for an XLM-R student
    /// (the teacher's hidden size); checked against an AltCLIP student's config.
    pub project_dim: Option<usize>,
    /// Also train `text_projection` (phase 2); AltCLIP students only.
    pub with_text_projection: bool,
    /// Seeds the initialisation of a fresh `transformation`.
    pub seed: u64,
}

/// A text tower whose parameters are trainable variables.
pub struct Student {
    pub tower: TextTower,
    /// `text_projection`, when [`StudentOptions::with_text_projection`] is set.
    pub text_projection: Option<Linear>,
    /// Every trainable parameter, keyed by its AltCLIP checkpoint name
    /// (`text_model.roberta.…`, `text_model.pre_LN.…`, `text_projection.weight`).
    pub vars: VarMap,
    pub text_config: TextConfig,
    pub kind: StudentKind,
    /// The AltCLIP config, for an AltCLIP student.
    pub altclip_config: Option<AltClipConfig>,
    pub tokenizer: TextTokenizer,
    /// The checkpoint directory.
    pub dir: PathBuf,
    /// Its weight files.
    pub weight_files: Vec<PathBuf>,
    pub device: Device,
}

impl Student {
    /// Loads a student from an AltCLIP or XLM-R checkpoint directory (f32).
    pub fn load(dir: &Path, opts: &StudentOptions, device: &Device) -> Result<Self> {
        let config_path = dir.join("config.json");
        let text = std::fs::read_to_string(&config_path).map_err(|e| Error::io(&config_path, e))?;
        let raw: serde_json::Value = serde_json::from_str(&text).map_err(|e| Error::BadJson {
            path: config_path.clone(),
            what: "model config",
            reason: e.to_string(),
        })?;
        let weights = Weights::from_dir(dir, DType::F32, device)?;
        let vars = VarMap::new();
        let source = Source {
            config_path: &config_path,
            raw: &raw,
            weights: &weights,
            vars: &vars,
            opts,
            device,
        };
        let Parts {
            kind,
            text_config,
            altclip_config,
            roberta,
            head,
        } = match raw["model_type"].as_str().unwrap_or_default() {
            "altclip" => source.altclip()?,
            "xlm-roberta" => source.xlm_roberta()?,
            other => {
                return Err(source.bad(format!(
                    "model_type `{other}` cannot be a student: pass an AltCLIP checkpoint \
                     (model_type altclip) or a plain XLM-R one (model_type xlm-roberta, e.g. \
                     FacebookAI/xlm-roberta-large)"
                )))
            }
        };
        let tower = TextTower::load_parts(&roberta, &head, &text_config)?;
        let text_projection = match (&altclip_config, opts.with_text_projection) {
            (Some(c), true) => Some(Linear::load_no_bias(
                &weights
                    .pp("text_projection")
                    .trainable(&vars, "text_projection"),
                text_config.project_dim,
                c.projection_dim,
            )?),
            _ => None,
        };
        let mut tokenizer = TextTokenizer::from_dir(dir)?;
        let limit = text_config.max_position_embeddings - text_config.pad_token_id as usize - 1;
        tokenizer.set_max_length(altclip::tokenize::DEFAULT_MAX_LENGTH.min(limit))?;
        Ok(Self {
            tower,
            text_projection,
            vars,
            text_config,
            kind,
            altclip_config,
            tokenizer,
            dir: dir.to_path_buf(),
            weight_files: weights.paths().to_vec(),
            device: device.clone(),
        })
    }

    /// Padded model inputs for `texts`.
    pub fn inputs(&self, texts: &[&str]) -> Result<TextInputs> {
        TextInputs::new(
            &self.tokenizer.encode(texts)?,
            self.tokenizer.pad_id(),
            &self.device,
        )
    }

    /// `transformation(pre_LN(h))[:, 0]`, `[B, project_dim]`: the vector
    /// distilled towards the teacher.
    pub fn pooled(&self, inputs: &TextInputs) -> Result<Tensor> {
        self.tower.forward(inputs)
    }

    /// `text_projection(pooled)`, `[B, projection_dim]`: `get_text_features`.
    pub fn text_features(&self, inputs: &TextInputs) -> Result<Tensor> {
        let projection = self.text_projection.as_ref().ok_or_else(|| {
            Error::Invalid("this student was loaded without text_projection".into())
        })?;
        projection.forward(&self.pooled(inputs)?)
    }

    /// The trainable variables sorted by name: the order optimizers, gradient
    /// norms and checkpoints use.
    pub fn named_vars(&self) -> Vec<(String, Var)> {
        sorted_vars(&self.vars)
    }
}

/// What [`Student::load`] reads a checkpoint with.
struct Source<'a> {
    config_path: &'a Path,
    raw: &'a serde_json::Value,
    weights: &'a Weights,
    vars: &'a VarMap,
    opts: &'a StudentOptions,
    device: &'a Device,
}

/// A student's tower before it is assembled: the trainable views of its
/// encoder and head, and its configs.
struct Parts {
    kind: StudentKind,
    text_config: TextConfig,
    altclip_config: Option<AltClipConfig>,
    roberta: Weights,
    head: Weights,
}

impl Source<'_> {
    fn bad(&self, reason: String) -> Error {
        Error::BadConfig {
            path: self.config_path.to_path_buf(),
            reason,
        }
    }

    /// An AltCLIP checkpoint: its own text tower and head.
    fn altclip(&self) -> Result<Parts> {
        let config = AltClipConfig::from_file(self.config_path)?;
        let t = config.text_config.clone();
        if let Some(p) = self.opts.project_dim.filter(|&p| p != t.project_dim) {
            return Err(self.bad(format!(
                "the student's text_config.project_dim is {} but the teacher's hidden size \
                 is {p}; distil from a teacher of width {} or start from a plain XLM-R \
                 checkpoint, which gets a fresh head",
                t.project_dim, t.project_dim
            )));
        }
        let text_model = self.weights.pp("text_model");
        let roberta = text_model
            .pp("roberta")
            .trainable(self.vars, "text_model.roberta");
        let head = text_model.trainable(self.vars, "text_model");
        Ok(Parts {
            kind: StudentKind::AltClip,
            text_config: t,
            altclip_config: Some(config),
            roberta,
            head,
        })
    }

    /// A plain XLM-R checkpoint: its encoder, and a freshly initialised head.
    fn xlm_roberta(&self) -> Result<Parts> {
        let (opts, weights, vars) = (self.opts, self.weights, self.vars);
        let (raw, config_path, device) = (self.raw, self.config_path, self.device);
        if opts.with_text_projection {
            return Err(self.bad(
                "a plain XLM-R checkpoint has no text_projection; contrastive training \
                 needs an AltCLIP model (run `altclip train distill` first)"
                    .into(),
            ));
        }
        let Some(project_dim) = opts.project_dim else {
            return Err(Error::Invalid(
                "an XLM-R student needs the width of its new transformation layer".into(),
            ));
        };
        let mut t: TextConfig =
            serde_json::from_value(raw.clone()).map_err(|e| Error::BadJson {
                path: config_path.to_path_buf(),
                what: "XLM-R config",
                reason: e.to_string(),
            })?;
        t.project_dim = project_dim;
        let prefix = ["roberta", "text_model.roberta", ""]
            .into_iter()
            .find(|p| {
                let key = if p.is_empty() {
                    "embeddings.word_embeddings.weight".to_string()
                } else {
                    format!("{p}.embeddings.word_embeddings.weight")
                };
                weights.contains(&key)
            })
            .ok_or_else(|| weights.missing("roberta.embeddings.word_embeddings.weight"))?;
        let base = if prefix.is_empty() {
            weights.clone()
        } else {
            weights.pp(prefix)
        };
        let roberta = base.trainable(vars, "text_model.roberta");
        let init_std = raw["initializer_range"].as_f64().unwrap_or(0.02);
        let head = Weights::from_tensors(
            fresh_head(&t, init_std, opts.seed, device)?,
            DType::F32,
            device,
            "the freshly initialised pre_LN and transformation",
        )
        .trainable(vars, "text_model");
        Ok(Parts {
            kind: StudentKind::XlmRoberta,
            text_config: t,
            altclip_config: None,
            roberta,
            head,
        })
    }
}

/// The variables of `vars` sorted by name.
pub fn sorted_vars(vars: &VarMap) -> Vec<(String, Var)> {
    let data = vars.data().lock().expect("variable map lock");
    let mut named: Vec<(String, Var)> = data.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    named.sort_by(|a, b| a.0.cmp(&b.0));
    named
}

/// transformers' `_init_weights` for the new head: LayerNorm weight 1, bias 0;
/// Linear weight N(0, initializer_range²), bias 0.
fn fresh_head(
    cfg: &TextConfig,
    std: f64,
    seed: u64,
    device: &Device,
) -> Result<HashMap<String, Tensor>> {
    let (h, p) = (cfg.hidden_size, cfg.project_dim);
    let mut rng = Rng::derived(seed, 0x5EED_4EAD);
    let weight: Vec<f32> = (0..p * h).map(|_| (rng.normal() * std) as f32).collect();
    Ok(HashMap::from([
        ("pre_LN.weight".into(), Tensor::ones(h, DType::F32, device)?),
        ("pre_LN.bias".into(), Tensor::zeros(h, DType::F32, device)?),
        (
            "transformation.weight".into(),
            Tensor::from_vec(weight, (p, h), device)?,
        ),
        (
            "transformation.bias".into(),
            Tensor::zeros(p, DType::F32, device)?,
        ),
    ]))
}
