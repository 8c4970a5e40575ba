//! Zero-shot classification: class embeddings from prompt templates, cached
//! once, then any number of images scored against them.

use std::path::{Path, PathBuf};

use crate::embedding::{normalize, normalize_rows};
use crate::error::{Error, Result};
use crate::model::AltClip;

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
/// object picked with `FILE#key` (see [`load_string_list`]).
pub fn load_templates(path: &Path) -> Result<Vec<String>> {
    let list = load_string_list(path, None, "template list")?;
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
        Self::from_prompt_embeddings(labels, &prompts, features, clip.logit_scale())
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
        let mut image = image_embedding.to_vec();
        normalize(&mut image);
        self.class_embeddings
            .iter()
            .map(|c| c.iter().zip(&image).map(|(a, b)| a * b).sum())
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
        crate::embedding::top_k(&probs, k)
            .into_iter()
            .map(|i| Scored {
                label: self.labels[i].clone(),
                index: i,
                prob: probs[i],
            })
            .collect()
    }
}

/// Reads a list of strings (class names, templates): a JSON list; a JSON
/// object of lists, from which `FILE#key` picks one (else `default_key`, else
/// its only entry), as in CLIP_benchmark's `{"imagenet1k": [...]}` files; or
/// a text file with one entry per line.
pub fn load_string_list(
    path: &Path,
    default_key: Option<&str>,
    what: &'static str,
) -> Result<Vec<String>> {
    let (file, key) = match path.to_str().and_then(|s| s.rsplit_once('#')) {
        Some((file, key)) if !path.exists() => (PathBuf::from(file), Some(key.to_string())),
        _ => (path.to_path_buf(), None),
    };
    let text = std::fs::read_to_string(&file).map_err(|e| Error::io(&file, e))?;
    let bad_json = |reason: String| Error::BadJson {
        path: file.clone(),
        what,
        reason,
    };
    let list: Vec<String> = match serde_json::from_str::<serde_json::Value>(&text) {
        Ok(value @ serde_json::Value::Array(_)) => {
            serde_json::from_value(value).map_err(|e| bad_json(e.to_string()))?
        }
        Ok(serde_json::Value::Object(map)) => {
            let wanted = key.as_deref().or(default_key);
            let entry = match wanted.and_then(|k| map.get(k)) {
                Some(entry) => entry,
                None if map.len() == 1 && key.is_none() => map.values().next().expect("one entry"),
                None => {
                    return Err(bad_json(format!(
                        "pick one of its lists with FILE#key; it has {:?}",
                        map.keys().collect::<Vec<_>>()
                    )))
                }
            };
            serde_json::from_value(entry.clone()).map_err(|e| bad_json(e.to_string()))?
        }
        _ => text
            .lines()
            .map(|l| l.trim_end_matches('\r').to_string())
            .filter(|l| !l.trim().is_empty())
            .collect(),
    };
    if list.is_empty() {
        return Err(Error::BadConfig {
            path: file,
            reason: format!("empty {what}"),
        });
    }
    Ok(list)
}

/// Reads class names (see [`load_string_list`]); a per-language object
/// (`{"en": [...], "zh": [...]}`) yields the `language` list.
pub fn load_classnames(path: &Path, language: &str) -> Result<Vec<String>> {
    load_string_list(path, Some(language), "class-name list")
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

    #[test]
    fn string_lists_pick_keys_like_clip_benchmark_files() {
        let dir = std::env::temp_dir().join(format!("altclip-lists-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let multi = dir.join("templates.json");
        std::fs::write(
            &multi,
            r#"{"imagenet1k": ["a {c}."], "cifar10": ["b {c}."]}"#,
        )
        .unwrap();
        let pick = |spec: &str| load_string_list(Path::new(spec), None, "list");
        assert_eq!(
            pick(&format!("{}#cifar10", multi.display())).unwrap(),
            vec!["b {c}."]
        );
        let err = pick(multi.to_str().unwrap()).unwrap_err().to_string();
        assert!(
            err.contains("FILE#key") && err.contains("imagenet1k"),
            "{err}"
        );
        let single = dir.join("cn.json");
        std::fs::write(&single, r#"{"imagenet1k": ["丁鲷", "金鱼"]}"#).unwrap();
        assert_eq!(
            load_classnames(&single, "zh").unwrap(),
            vec!["丁鲷", "金鱼"]
        );
        let lines = dir.join("names.txt");
        std::fs::write(&lines, "cat\r\n\ndog\n").unwrap();
        assert_eq!(load_classnames(&lines, "en").unwrap(), vec!["cat", "dog"]);
        std::fs::remove_dir_all(dir).unwrap();
    }
}
