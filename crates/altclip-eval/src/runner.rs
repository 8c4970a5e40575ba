//! The zero-shot runners: from image features and class or caption
//! embeddings to CLIP_benchmark's metrics, with unreadable images left out
//! and listed.

use std::path::{Path, PathBuf};

use altclip::embedding::normalize_rows;
use altclip::ZeroShotClassifier;
use serde::Serialize;

use crate::datasets::RetrievalDataset;
use crate::error::{Error, Result};
use crate::metrics::{classification_metrics, retrieval_metrics};

/// One image's features, or why it could not be read.
pub type ImageFeatures = std::result::Result<Vec<f32>, String>;

/// Computes the features of a list of texts (the caller batches and reports progress).
pub type TextFeatures<'a> = dyn FnMut(&[String]) -> altclip::Result<Vec<Vec<f32>>> + 'a;

/// What a run measured.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    /// CLIP_benchmark's metric names and values.
    pub metrics: serde_json::Map<String, serde_json::Value>,
    /// Images that took part.
    pub num_images: usize,
    /// Class names (classification) or captions (retrieval).
    pub num_texts: usize,
    /// Images left out because they could not be read.
    pub unreadable: Vec<PathBuf>,
}

/// Zero-shot classification of `samples` (`(image, class)`), whose image
/// features are `features` in the same order. Logits are 100 × cosine to
/// the class embeddings, as CLIP_benchmark computes them.
pub fn zeroshot_classification(
    classifier: &ZeroShotClassifier,
    samples: &[(PathBuf, usize)],
    features: Vec<ImageFeatures>,
    dataset: &Path,
) -> Result<Outcome> {
    let mut logits = Vec::new();
    let mut targets = Vec::new();
    let mut unreadable = Vec::new();
    for ((path, target), result) in samples.iter().zip(features) {
        match result {
            Ok(f) => {
                logits.push(classifier.cosines(&f).iter().map(|c| 100.0 * c).collect());
                targets.push(*target);
            }
            Err(_) => unreadable.push(path.clone()),
        }
    }
    if targets.is_empty() {
        return Err(Error::NoReadableImages(dataset.to_path_buf()));
    }
    let m = classification_metrics(&logits, &targets);
    let metrics = match serde_json::to_value(&m) {
        Ok(serde_json::Value::Object(map)) => map,
        _ => unreachable!("metrics serialise to an object"),
    };
    Ok(Outcome {
        metrics,
        num_images: targets.len(),
        num_texts: classifier.class_embeddings().len(),
        unreadable,
    })
}

/// Zero-shot retrieval over `dataset`, whose image features are `features`
/// in image order. The captions of the readable images are embedded by
/// `text_features` (raw features are fine: they are normalised here), and
/// recall is measured at each of `recall_k`.
pub fn zeroshot_retrieval(
    dataset: &RetrievalDataset,
    features: Vec<ImageFeatures>,
    text_features: &mut TextFeatures,
    recall_k: &[usize],
    images_dir: &Path,
) -> Result<Outcome> {
    let mut images = Vec::new();
    let mut texts = Vec::new();
    let mut owners = Vec::new();
    let mut unreadable = Vec::new();
    for ((path, captions), result) in dataset.images.iter().zip(&dataset.captions).zip(features) {
        match result {
            Ok(f) => {
                for c in captions {
                    texts.push(c.clone());
                    owners.push(images.len());
                }
                images.push(f);
            }
            Err(_) => unreadable.push(path.clone()),
        }
    }
    if images.is_empty() {
        return Err(Error::NoReadableImages(images_dir.to_path_buf()));
    }
    let text_emb = normalize_rows(text_features(&texts)?);
    let metrics = retrieval_metrics(&text_emb, &images, &owners, recall_k)
        .into_iter()
        .map(|(k, v)| (k, serde_json::Value::from(v)))
        .collect();
    Ok(Outcome {
        metrics,
        num_images: images.len(),
        num_texts: texts.len(),
        unreadable,
    })
}

/// CLIP_benchmark's result schema (`dataset, model, pretrained, task,
/// metrics, language`, which `clip_benchmark build` reads) plus what a
/// reader needs to trust it.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub dataset: String,
    pub model: String,
    /// The checkpoint of `model`: its Hub revision, or the model itself.
    pub pretrained: String,
    pub task: &'static str,
    pub language: String,
    pub metrics: serde_json::Map<String, serde_json::Value>,
    pub num_images: usize,
    pub num_texts: usize,
    pub unreadable_images: Vec<String>,
    pub seconds: f64,
    pub images_per_second: f64,
}
