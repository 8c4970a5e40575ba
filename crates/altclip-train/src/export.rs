//! Writing a trained student as a Hugging Face AltCLIP model directory
//! (`config.json`, `model.safetensors`, tokenizer files,
//! `preprocessor_config.json`) that transformers' `AltCLIPModel` and
//! `altclip embed` load.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Tensor};

use crate::clip_text::ClipConfig;
use crate::student::{Student, StudentKind};
use altclip::error::{Error, Result};
use altclip::weights::Weights;

/// What goes into the directory besides the trained tensors.
pub struct ExportPlan {
    /// The complete `AltCLIPConfig` JSON.
    pub config: serde_json::Value,
    /// The untrained tensors (image tower, projections, `logit_scale`): their
    /// checkpoint and their names there.
    pub frozen: Weights,
    pub frozen_keys: Vec<String>,
    /// The `preprocessor_config.json` to copy.
    pub preprocessor: PathBuf,
    /// Where the tokenizer files are copied from.
    pub tokenizer_dir: PathBuf,
}

/// Files copied from the student's directory when present.
pub const TOKENIZER_FILES: [&str; 4] = [
    "tokenizer.json",
    "sentencepiece.bpe.model",
    "tokenizer_config.json",
    "special_tokens_map.json",
];

fn read_json(path: &Path) -> Result<serde_json::Value> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    serde_json::from_str(&text).map_err(|e| Error::BadJson {
        path: path.to_path_buf(),
        what: "JSON file",
        reason: e.to_string(),
    })
}

/// The untrained, non-buffer tensors of a checkpoint under `prefixes`.
fn keys_under(weights: &Weights, prefixes: &[&str], exclude: &[String]) -> Vec<String> {
    weights
        .names()
        .into_iter()
        .filter(|n| {
            prefixes
                .iter()
                .any(|p| n == p || n.starts_with(&format!("{p}.")))
        })
        .filter(|n| !n.ends_with("position_ids") && !exclude.contains(n))
        .collect()
}

impl ExportPlan {
    /// After distillation. The image tower, `visual_projection`,
    /// `text_projection` and `logit_scale` come from the teacher when it is a
    /// full CLIP model (the student learned the teacher's pre-projection
    /// space, which the teacher's `text_projection` maps into its image
    /// space); otherwise from an AltCLIP student.
    pub fn for_distill(student: &Student, teacher_dir: &Path) -> Result<Self> {
        let teacher_config = ClipConfig::from_file(&teacher_dir.join("config.json"))?;
        let teacher_weights = Weights::from_dir(teacher_dir, DType::F32, &student.device)?;
        let teacher_has_vision = teacher_config.vision_config.is_some()
            && teacher_weights.contains("vision_model.post_layernorm.weight")
            && teacher_weights.contains("text_projection.weight");
        let mut text_config = student_text_config(student)?;
        text_config["project_dim"] = student.text_config.project_dim.into();
        let frozen_prefixes = [
            "vision_model",
            "visual_projection",
            "text_projection",
            "logit_scale",
        ];
        if teacher_has_vision {
            let mut vision = teacher_config.raw["vision_config"].clone();
            if !vision.is_object() {
                vision = serde_json::json!({});
            }
            vision["model_type"] = "altclip_vision_model".into();
            let config = serde_json::json!({
                "architectures": ["AltCLIPModel"],
                "model_type": "altclip",
                "projection_dim": teacher_config.projection_dim,
                "logit_scale_init_value": teacher_config.raw["logit_scale_init_value"]
                    .as_f64().unwrap_or(2.6592),
                "text_config": text_config,
                "vision_config": vision,
                "torch_dtype": "float32",
            });
            let frozen_keys = keys_under(&teacher_weights, &frozen_prefixes, &[]);
            return Ok(Self {
                config,
                frozen: teacher_weights,
                frozen_keys,
                preprocessor: teacher_dir.join("preprocessor_config.json"),
                tokenizer_dir: student.dir.clone(),
            });
        }
        if student.kind != StudentKind::AltClip {
            return Err(Error::Invalid(format!(
                "the teacher in {} has no image tower and text_projection, and a plain XLM-R \
                 student has none either, so no AltCLIP model can be assembled; distil from a \
                 full CLIP checkpoint (e.g. openai/clip-vit-large-patch14)",
                teacher_dir.display()
            )));
        }
        let mut config = read_json(&student.dir.join("config.json"))?;
        config["text_config"] = text_config;
        let student_weights = Weights::from_dir(&student.dir, DType::F32, &student.device)?;
        let frozen_keys = keys_under(&student_weights, &frozen_prefixes, &[]);
        Ok(Self {
            config,
            frozen: student_weights,
            frozen_keys,
            preprocessor: student.dir.join("preprocessor_config.json"),
            tokenizer_dir: student.dir.clone(),
        })
    }

    /// After contrastive training: everything untrained comes from the
    /// AltCLIP student's own checkpoint.
    pub fn for_contrastive(student: &Student) -> Result<Self> {
        let config = read_json(&student.dir.join("config.json"))?;
        let weights = Weights::from_dir(&student.dir, DType::F32, &student.device)?;
        let trained: Vec<String> = student.named_vars().into_iter().map(|(n, _)| n).collect();
        let frozen_keys = keys_under(
            &weights,
            &[
                "vision_model",
                "visual_projection",
                "text_projection",
                "logit_scale",
            ],
            &trained,
        );
        Ok(Self {
            config,
            frozen: weights,
            frozen_keys,
            preprocessor: student.dir.join("preprocessor_config.json"),
            tokenizer_dir: student.dir.clone(),
        })
    }
}

/// The student's `text_config` as JSON, all original keys kept.
fn student_text_config(student: &Student) -> Result<serde_json::Value> {
    let raw = read_json(&student.dir.join("config.json"))?;
    let mut text = match student.kind {
        StudentKind::AltClip => raw["text_config"].clone(),
        StudentKind::XlmRoberta => raw,
    };
    if !text.is_object() {
        text = serde_json::json!({});
    }
    let obj = text.as_object_mut().expect("an object");
    obj.remove("architectures");
    obj.remove("_name_or_path");
    // Every field the engine models, so that a config missing some (relying
    // on class defaults) stays exact for transformers' AltCLIPTextConfig.
    if let serde_json::Value::Object(full) =
        serde_json::to_value(&student.text_config).map_err(json_error)?
    {
        obj.extend(full);
    }
    obj.insert("model_type".into(), "altclip_text_model".into());
    Ok(text)
}

fn json_error(e: serde_json::Error) -> Error {
    Error::Invalid(format!("cannot serialise the model config: {e}"))
}

/// Writes the model directory `out` (created if needed; existing model files
/// are replaced, anything else is left alone).
pub fn export_altclip(out: &Path, student: &Student, plan: &ExportPlan) -> Result<()> {
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    let mut tensors: BTreeMap<String, Tensor> = BTreeMap::new();
    for (name, var) in student.named_vars() {
        let name = name.replace(
            "text_model.roberta.encoder.layers.",
            "text_model.roberta.encoder.layer.",
        );
        tensors.insert(name, var.as_tensor().detach());
    }
    for key in &plan.frozen_keys {
        let shape = plan
            .frozen
            .shape(key)
            .ok_or_else(|| plan.frozen.missing(key.clone()))?;
        let name = key.replace(
            "vision_model.encoder.layer.",
            "vision_model.encoder.layers.",
        );
        tensors
            .entry(name)
            .or_insert(plan.frozen.get_as(&shape, key, DType::F32)?);
    }
    let path = out.join("model.safetensors");
    let tmp = out.join(".model.safetensors.tmp");
    let metadata = std::collections::HashMap::from([("format".to_string(), "pt".to_string())]);
    safetensors::tensor::serialize_to_file(tensors.iter(), Some(metadata), &tmp).map_err(|e| {
        Error::BadWeights {
            path: tmp.clone(),
            reason: e.to_string(),
        }
    })?;
    std::fs::rename(&tmp, &path).map_err(|e| Error::io(&path, e))?;

    let config_path = out.join("config.json");
    let json = serde_json::to_string_pretty(&plan.config).map_err(json_error)?;
    std::fs::write(&config_path, json + "\n").map_err(|e| Error::io(&config_path, e))?;

    let pp_path = out.join("preprocessor_config.json");
    let mut pp = read_json(&plan.preprocessor)?;
    if pp.get("processor_class").is_some() {
        pp["processor_class"] = "AltCLIPProcessor".into();
    }
    let json = serde_json::to_string_pretty(&pp).map_err(json_error)?;
    std::fs::write(&pp_path, json + "\n").map_err(|e| Error::io(&pp_path, e))?;

    for name in TOKENIZER_FILES {
        let src = plan.tokenizer_dir.join(name);
        if src.is_file() {
            let dst = out.join(name);
            std::fs::copy(&src, &dst).map_err(|e| Error::io(&dst, e))?;
        }
    }
    Ok(())
}
