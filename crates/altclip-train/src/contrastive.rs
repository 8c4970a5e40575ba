//! Phase 2, contrastive learning: symmetric InfoNCE between the trainable text
//! side and frozen, precomputed image features, with the model's logit scale.

use candle_core::{DType, Tensor, D};

use altclip::error::{Error, Result};
use altclip::text::TextInputs;
use altclip_eval::metrics::retrieval_metrics;

use crate::student::Student;
use crate::trainer::Objective;

/// Divides each row by its L2 norm, in tensor ops that autograd
/// differentiates (the engine's `embedding::normalize` works on plain rows).
fn l2_normalize(x: &Tensor) -> Result<Tensor> {
    let norm = x.sqr()?.sum_keepdim(D::Minus1)?.sqrt()?;
    Ok(x.broadcast_div(&norm)?)
}

/// Captions (tokenised) with the image each describes.
pub struct CaptionSet {
    ids: Vec<Vec<u32>>,
    image_of: Vec<usize>,
    /// `[images, projection_dim]`, L2-normalised.
    images: Tensor,
}

impl CaptionSet {
    /// `captions[i]` describes image `image_of[i]`, a row of `image_features`
    /// (`get_image_features`, unnormalised).
    pub fn new(
        student: &Student,
        captions: &[String],
        image_of: Vec<usize>,
        image_features: &[Vec<f32>],
    ) -> Result<Self> {
        if captions.len() != image_of.len() {
            return Err(Error::Invalid(format!(
                "{} captions but {} image indices",
                captions.len(),
                image_of.len()
            )));
        }
        let dim = image_features.first().map_or(0, Vec::len);
        if let Some(&bad) = image_of.iter().find(|&&i| i >= image_features.len()) {
            return Err(Error::Invalid(format!(
                "caption refers to image {bad} of {}",
                image_features.len()
            )));
        }
        let flat: Vec<f32> = image_features.concat();
        let images = Tensor::from_vec(flat, (image_features.len(), dim), &student.device)?;
        let refs: Vec<&str> = captions.iter().map(String::as_str).collect();
        Ok(Self {
            ids: student.tokenizer.encode(&refs)?,
            image_of,
            images: l2_normalize(&images)?,
        })
    }

    /// Number of captions.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// True when there are no captions.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    fn text_features(&self, student: &Student, rows: &[usize]) -> Result<Tensor> {
        let ids: Vec<Vec<u32>> = rows.iter().map(|&i| self.ids[i].clone()).collect();
        let inputs = TextInputs::new(&ids, student.tokenizer.pad_id(), &student.device)?;
        l2_normalize(&student.text_features(&inputs)?)
    }

    fn images_of(&self, rows: &[usize]) -> Result<Tensor> {
        let idx: Vec<u32> = rows.iter().map(|&i| self.image_of[i] as u32).collect();
        let n = idx.len();
        Ok(self
            .images
            .index_select(&Tensor::from_vec(idx, n, self.images.device())?, 0)?)
    }
}

/// The contrastive objective, with optional held-out pairs.
pub struct ContrastiveObjective {
    pub train: CaptionSet,
    pub dev: Option<CaptionSet>,
    /// `exp(logit_scale)`, frozen.
    pub scale: f64,
    /// Captions per forward pass during evaluation.
    pub eval_batch_size: usize,
}

/// Mean cross-entropy of each row of `logits` against the diagonal.
fn diagonal_cross_entropy(logits: &Tensor) -> Result<Tensor> {
    let n = logits.dim(0)?;
    let shifted = logits.broadcast_sub(&logits.max_keepdim(D::Minus1)?.detach())?;
    let log_probs = shifted.broadcast_sub(&shifted.exp()?.sum_keepdim(D::Minus1)?.log()?)?;
    let eye = Tensor::eye(n, DType::F32, logits.device())?;
    Ok((log_probs * eye)?.sum_all()?.affine(-1.0 / n as f64, 0.0)?)
}

impl Objective for ContrastiveObjective {
    fn len(&self) -> usize {
        self.train.len()
    }

    /// `logits = exp(logit_scale) · cos(text_i, image_j)`; the loss is
    /// `(CE(logits, arange) + CE(logitsᵀ, arange)) / 2`. Every other caption
    /// of the batch is a negative, also when it shows the same image.
    fn loss(&self, student: &Student, batch: &[usize]) -> Result<Tensor> {
        let text = self.train.text_features(student, batch)?;
        let images = self.train.images_of(batch)?;
        let logits = (text.matmul(&images.t()?)? * self.scale)?;
        let loss = (diagonal_cross_entropy(&logits)? + diagonal_cross_entropy(&logits.t()?)?)?;
        Ok((loss * 0.5)?)
    }

    /// Retrieval recalls on the dev pairs (CLIP_benchmark's definitions).
    fn evaluate(&self, student: &Student) -> Result<Option<serde_json::Value>> {
        let Some(dev) = &self.dev else {
            return Ok(None);
        };
        let mut texts: Vec<Vec<f32>> = Vec::with_capacity(dev.len());
        let all: Vec<usize> = (0..dev.len()).collect();
        for chunk in all.chunks(self.eval_batch_size.max(1)) {
            texts.extend(
                dev.text_features(student, chunk)?
                    .detach()
                    .to_vec2::<f32>()?,
            );
        }
        let images: Vec<Vec<f32>> = dev.images.to_vec2()?;
        let metrics = retrieval_metrics(&texts, &images, &dev.image_of, &[1, 5, 10]);
        Ok(Some(serde_json::Value::Object(
            metrics.into_iter().map(|(k, v)| (k, v.into())).collect(),
        )))
    }
}
