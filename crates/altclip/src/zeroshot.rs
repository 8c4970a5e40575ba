//! Zero-shot classification: class embeddings from prompt templates, cached
//! once, then any number of images scored against them.

use std::path::Path;

use crate::error::{Error, Result};
use crate::model::{normalize_rows, AltClip};

/// Our English prompt set.
pub const EN_TEMPLATES: &[&str] = &[
    "a photo of a {c}.",
    "a picture of a {c}.",
    "a close-up photo of a {c}.",
    "a photo of the {c}.",
    "a bright photo of a {c}.",
    "a dark photo of a {c}.",
    "a cropped photo of a {c}.",
    "a good photo of a {c}.",
    "a blurry photo of a {c}.",
    "a photo of one {c}.",
    "a photo of many {c}.",
    "a photo of a small {c}.",
    "a photo of a large {c}.",
    "a drawing of a {c}.",
    "a painting of a {c}.",
    "a 3D rendering of a {c}.",
];

/// Our Chinese prompt set.
pub const ZH_TEMPLATES: &[&str] = &[
    "一张{c}的照片。",
    "{c}的照片。",
    "一张{c}的图片。",
    "{c}的特写照片。",
    "一张清晰的{c}的照片。",
    "一张明亮的{c}的照片。",
    "一张昏暗的{c}的照片。",
    "一张裁剪过的{c}的照片。",
    "一张模糊的{c}的照片。",
    "一张好看的{c}的照片。",
    "许多{c}的照片。",
    "一张小{c}的照片。",
    "一张大{c}的照片。",
    "一幅{c}的画。",
    "{c}的素描。",
    "{c}的三维渲染图。",
];

/// How labels become prompts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Templates {
    /// Chinese templates for labels containing CJK characters, English otherwise.
    Auto,
    /// These templates for every label; each contains `{c}`.
    List(Vec<String>),
}

impl Templates {
    /// Parses `auto`, `zh`, `en`, `none` (the bare label) or a path to a JSON
    /// list of templates with `{c}`.
    pub fn parse(spec: &str) -> Result<Self> {
        let list = |t: &[&str]| Templates::List(t.iter().map(|s| s.to_string()).collect());
        Ok(match spec {
            "auto" => Templates::Auto,
            "zh" => list(ZH_TEMPLATES),
            "en" => list(EN_TEMPLATES),
            "none" => list(&["{c}"]),
            path => Templates::List(load_templates(Path::new(path))?),
        })
    }

    /// The templates used for `label`.
    pub fn for_label(&self, label: &str) -> Vec<String> {
        match self {
            Templates::List(list) => list.clone(),
            Templates::Auto => {
                let set = if label.chars().any(is_cjk) {
                    ZH_TEMPLATES
                } else {
                    EN_TEMPLATES
                };
                set.iter().map(|s| s.to_string()).collect()
            }
        }
    }
}

fn is_cjk(c: char) -> bool {
    matches!(c as u32, 0x3400..=0x4DBF | 0x4E00..=0x9FFF | 0xF900..=0xFAFF | 0x20000..=0x2FA1F)
}

/// Reads templates, each with `{c}`: a JSON list, or one list of a JSON
/// object picked with `FILE#key` (see [`crate::datasets::load_string_list`]).
pub fn load_templates(path: &Path) -> Result<Vec<String>> {
    let list = crate::datasets::load_string_list(path, None, "template list")?;
    if let Some(bad) = list.iter().find(|t| !t.contains("{c}")) {
        return Err(Error::BadConfig {
            path: path.to_path_buf(),
            reason: format!("template {bad:?} has no {{c}} placeholder for the class name"),
        });
    }
    Ok(list)
}

/// Class embeddings for a fixed label set: for each label, the mean of its
/// L2-normalised template embeddings, renormalised (CLIP's recipe).
pub struct ZeroShotClassifier {
    pub labels: Vec<String>,
    class_embeddings: Vec<Vec<f32>>,
    logit_scale: f32,
}

/// A label with its probability.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Scored {
    pub label: String,
    pub index: usize,
    pub prob: f32,
}

impl ZeroShotClassifier {
    /// Encodes every label's prompts, `batch_size` texts per forward pass.
    pub fn new(
        clip: &AltClip,
        labels: &[String],
        templates: &Templates,
        batch_size: usize,
    ) -> Result<Self> {
        let prompts = Self::prompts(labels, templates);
        let flat: Vec<&str> = prompts.iter().flatten().map(String::as_str).collect();
        let mut features = Vec::with_capacity(flat.len());
        for chunk in flat.chunks(batch_size.max(1)) {
            features.extend(normalize_rows(clip.text_features(chunk)?));
        }
        Self::from_prompt_embeddings(labels, &prompts, features, clip.model.logit_scale())
    }

    /// Each label's prompts under `templates`, for callers that embed them
    /// themselves (e.g. a server batching them with other requests).
    pub fn prompts(labels: &[String], templates: &Templates) -> Vec<Vec<String>> {
        labels
            .iter()
            .map(|l| {
                templates
                    .for_label(l)
                    .iter()
                    .map(|t| t.replace("{c}", l))
                    .collect()
            })
            .collect()
    }

    /// The classifier from the L2-normalised embeddings of [`Self::prompts`],
    /// flattened in the same order.
    pub fn from_prompt_embeddings(
        labels: &[String],
        prompts: &[Vec<String>],
        embeddings: Vec<Vec<f32>>,
        logit_scale: f32,
    ) -> Result<Self> {
        if labels.is_empty() {
            return Err(Error::Invalid("no labels to classify against".into()));
        }
        if let Some(i) = prompts.iter().position(Vec::is_empty) {
            return Err(Error::Invalid(format!(
                "label {:?} has no prompts",
                labels[i]
            )));
        }
        let expected: usize = prompts.iter().map(Vec::len).sum();
        if prompts.len() != labels.len() || embeddings.len() != expected {
            return Err(Error::Invalid(format!(
                "{} prompt embeddings for {} prompts of {} labels",
                embeddings.len(),
                expected,
                labels.len()
            )));
        }
        let mut rows = embeddings.into_iter();
        let class_embeddings = prompts
            .iter()
            .map(|p| {
                let group: Vec<Vec<f32>> = rows.by_ref().take(p.len()).collect();
                let dim = group[0].len();
                let mean: Vec<f32> = (0..dim)
                    .map(|d| group.iter().map(|r| r[d]).sum::<f32>() / group.len() as f32)
                    .collect();
                mean
            })
            .collect();
        Ok(Self {
            labels: labels.to_vec(),
            class_embeddings: normalize_rows(class_embeddings),
            logit_scale,
        })
    }

    /// The normalised class embeddings, one per label.
    pub fn class_embeddings(&self) -> &[Vec<f32>] {
        &self.class_embeddings
    }

    /// Cosine similarity of an image embedding (normalised or not) to each class.
    pub fn cosines(&self, image_embedding: &[f32]) -> Vec<f32> {
        let norm = image_embedding.iter().map(|v| v * v).sum::<f32>().sqrt();
        self.class_embeddings
            .iter()
            .map(|c| {
                c.iter()
                    .zip(image_embedding)
                    .map(|(a, b)| a * b)
                    .sum::<f32>()
                    / norm
            })
            .collect()
    }

    /// Softmax over classes of `exp(logit_scale) · cos`, as transformers'
    /// `logits_per_image.softmax(-1)` would give.
    pub fn probabilities(&self, image_embedding: &[f32]) -> Vec<f32> {
        let scale = self.logit_scale.exp();
        let logits: Vec<f32> = self
            .cosines(image_embedding)
            .iter()
            .map(|c| c * scale)
            .collect();
        let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let exps: Vec<f32> = logits.iter().map(|l| (l - max).exp()).collect();
        let sum: f32 = exps.iter().sum();
        exps.iter().map(|e| e / sum).collect()
    }

    /// The `k` most probable labels, best first.
    pub fn top_k(&self, image_embedding: &[f32], k: usize) -> Vec<Scored> {
        let probs = self.probabilities(image_embedding);
        crate::metrics::top_k(&probs, k)
            .into_iter()
            .map(|i| Scored {
                label: self.labels[i].clone(),
                index: i,
                prob: probs[i],
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_templates_have_placeholders() {
        assert!(EN_TEMPLATES
            .iter()
            .chain(ZH_TEMPLATES)
            .all(|t| t.contains("{c}")));
    }

    #[test]
    fn auto_picks_the_language_of_the_label() {
        let t = Templates::Auto;
        assert_eq!(t.for_label("猫")[0], ZH_TEMPLATES[0]);
        assert_eq!(t.for_label("cat")[0], EN_TEMPLATES[0]);
        assert_eq!(
            Templates::parse("none").unwrap().for_label("x"),
            vec!["{c}"]
        );
    }
}
