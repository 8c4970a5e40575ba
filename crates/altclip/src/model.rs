//! `AltClipModel` (the two towers and their projections) and `AltClip`, the
//! user-facing bundle of model, tokenizer and preprocessor.

use std::path::Path;

use candle_core::{DType, Device, Tensor, D};
use image::{DynamicImage, RgbImage};

use crate::config::AltClipConfig;
use crate::error::{Error, Result};
use crate::hub::{self, ModelDir};
use crate::kernels;
use crate::nn::{l2_normalize, Linear};
use crate::preprocess::{to_rgb, Preprocessor};
use crate::text::{TextInputs, TextTower};
use crate::tokenize::{TextTokenizer, DEFAULT_MAX_LENGTH};
use crate::vision::VisionTower;
use crate::weights::Weights;

/// The network of `AltCLIPModel`: text and vision towers, their projections
/// into the joint space, and `logit_scale`.
pub struct AltClipModel {
    text: TextTower,
    vision: VisionTower,
    text_projection: Linear,
    visual_projection: Linear,
    logit_scale: f32,
    parameters: u64,
}

impl AltClipModel {
    /// Loads every tensor the config calls for; unknown extra tensors (e.g.
    /// `position_ids` buffers or a pooler) are ignored.
    pub fn load(w: &Weights, cfg: &AltClipConfig) -> Result<Self> {
        let (t, v) = (&cfg.text_config, &cfg.vision_config);
        Ok(Self {
            text: TextTower::load(&w.pp("text_model"), t)?,
            vision: VisionTower::load(&w.pp("vision_model"), v)?,
            text_projection: Linear::load_no_bias(
                &w.pp("text_projection"),
                t.project_dim,
                cfg.projection_dim,
            )?,
            visual_projection: Linear::load_no_bias(
                &w.pp("visual_projection"),
                v.hidden_size,
                cfg.projection_dim,
            )?,
            logit_scale: w
                .get_as(&[], "logit_scale", DType::F32)?
                .to_scalar::<f32>()?,
            // Fields load in the order written, so this counts all of them.
            parameters: w.loaded_elements(),
        })
    }

    /// The text tower, e.g. for its XLM-R encoder.
    pub fn text_tower(&self) -> &TextTower {
        &self.text
    }

    /// The vision tower.
    pub fn vision_tower(&self) -> &VisionTower {
        &self.vision
    }

    /// `get_text_features`: unnormalised `[B, projection_dim]` in f32.
    pub fn text_features(&self, inputs: &TextInputs) -> Result<Tensor> {
        let pooled = self.text.forward(inputs)?;
        Ok(self
            .text_projection
            .forward(&pooled)?
            .to_dtype(DType::F32)?)
    }

    /// `get_image_features`: unnormalised `[B, projection_dim]` in f32.
    pub fn image_features(&self, pixel_values: &Tensor) -> Result<Tensor> {
        let pooled = self.vision.forward(pixel_values)?;
        Ok(self
            .visual_projection
            .forward(&pooled)?
            .to_dtype(DType::F32)?)
    }

    /// The learned log temperature, as stored in the checkpoint.
    pub fn logit_scale(&self) -> f32 {
        self.logit_scale
    }

    /// Number of parameters loaded from the checkpoint.
    pub fn parameter_count(&self) -> u64 {
        self.parameters
    }
}

/// Settings for [`AltClip::load`].
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// Compute dtype: F32 (default, exact parity), F16 or BF16.
    pub dtype: DType,
    pub device: Device,
    /// Hub revision (branch, tag or commit) when `model` is a Hub id.
    pub revision: Option<String>,
    /// Token truncation length, special tokens included.
    pub max_length: usize,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            dtype: DType::F32,
            device: Device::Cpu,
            revision: None,
            max_length: DEFAULT_MAX_LENGTH,
        }
    }
}

/// A ready-to-use AltCLIP: model, tokenizer and image preprocessor.
///
/// ```no_run
/// use altclip::{AltClip, LoadOptions};
/// let clip = AltClip::load("BAAI/AltCLIP", &LoadOptions::default())?;
/// let texts = clip.embed_texts(&["一只猫", "a dog"])?;
/// let image = image::open("cat.jpg").unwrap();
/// let images = clip.embed_images(&[image])?;
/// let score: f32 = texts[0].iter().zip(&images[0]).map(|(a, b)| a * b).sum();
/// # Ok::<(), altclip::Error>(())
/// ```
pub struct AltClip {
    pub model: AltClipModel,
    pub tokenizer: TextTokenizer,
    pub preprocessor: Preprocessor,
    pub config: AltClipConfig,
    pub files: ModelDir,
    /// The weight files read (one, or every shard).
    pub weight_files: Vec<std::path::PathBuf>,
    /// The dtype asked for.
    pub dtype: DType,
    /// The dtype of the activations: `dtype`, except for bf16 on CPUs with
    /// AVX512-BF16, where they stay f32 and only the matmuls run in bf16.
    pub activation_dtype: DType,
    pub device: Device,
}

impl AltClip {
    /// Loads from a local directory in Hub layout or a Hub id such as
    /// `BAAI/AltCLIP` (from the Hugging Face cache, or downloaded).
    pub fn load(model: &str, opts: &LoadOptions) -> Result<Self> {
        let files = hub::resolve(model, opts.revision.as_deref())?;
        Self::from_model_dir(files, opts)
    }

    /// Loads from a resolved model directory.
    pub fn from_model_dir(files: ModelDir, opts: &LoadOptions) -> Result<Self> {
        let dir: &Path = &files.dir;
        let config = read_config(dir)?;
        let tokenizer = tokenizer_for(dir, &config, opts.max_length)?;
        let image_size = config.vision_config.image_size as u32;
        let preprocessor = Preprocessor::from_dir(dir, image_size)?;
        if let Some((h, w)) = preprocessor.config.crop {
            if (h, w) != (image_size, image_size) {
                return Err(Error::BadConfig {
                    path: dir.join("preprocessor_config.json"),
                    reason: format!(
                        "crop_size {h}x{w} does not match vision_config.image_size {image_size}"
                    ),
                });
            }
        }
        let (activation_dtype, linear_dtype) = kernels::plan(opts.dtype, &opts.device);
        let mut weights = Weights::from_dir(dir, activation_dtype, &opts.device)?;
        if let Some(dtype) = linear_dtype {
            weights = weights.with_linear_dtype(dtype);
        }
        let model = AltClipModel::load(&weights, &config)?;
        Ok(Self {
            model,
            tokenizer,
            preprocessor,
            config,
            files,
            weight_files: weights.paths().to_vec(),
            dtype: opts.dtype,
            activation_dtype,
            device: opts.device.clone(),
        })
    }

    /// Only the tokenizer of a model, with the same resolution and truncation
    /// rules as [`AltClip::load`] but without reading the weights.
    pub fn load_tokenizer(model: &str, opts: &LoadOptions) -> Result<TextTokenizer> {
        let files = hub::resolve(model, opts.revision.as_deref())?;
        tokenizer_for(&files.dir, &read_config(&files.dir)?, opts.max_length)
    }

    /// Width of the joint embedding space.
    pub fn embedding_dim(&self) -> usize {
        self.config.projection_dim
    }

    /// Token ids per text as the model sees them (special tokens included).
    pub fn tokenize(&self, texts: &[&str]) -> Result<Vec<Vec<u32>>> {
        self.tokenizer.encode(texts)
    }

    /// Model inputs for a batch of texts, padded to the longest.
    pub fn text_inputs(&self, texts: &[&str]) -> Result<TextInputs> {
        TextInputs::new(
            &self.tokenize(texts)?,
            self.tokenizer.pad_id(),
            &self.device,
        )
    }

    /// `get_text_features` per text: unnormalised.
    pub fn text_features(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        Ok(self
            .model
            .text_features(&self.text_inputs(texts)?)?
            .to_vec2()?)
    }

    /// L2-normalised text embeddings.
    pub fn embed_texts(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
        Ok(normalize_rows(self.text_features(texts)?))
    }

    /// Preprocesses RGB images into a `[B, 3, H, W]` tensor in the model dtype.
    pub fn pixel_values(&self, images: &[RgbImage]) -> Result<Tensor> {
        let (h, w) = self.preprocessor.output_shape(1, 1);
        let mut data = Vec::with_capacity(images.len() * 3 * (h * w) as usize);
        for img in images {
            data.extend(self.preprocessor.pixel_values(img));
        }
        let t = Tensor::from_vec(
            data,
            (images.len(), 3, h as usize, w as usize),
            &self.device,
        )?;
        Ok(t.to_dtype(self.activation_dtype)?)
    }

    /// `get_image_features` per RGB image: unnormalised.
    pub fn image_features(&self, images: &[RgbImage]) -> Result<Vec<Vec<f32>>> {
        if images.is_empty() {
            return Ok(Vec::new());
        }
        Ok(self
            .model
            .image_features(&self.pixel_values(images)?)?
            .to_vec2()?)
    }

    /// L2-normalised image embeddings. Non-RGB images are converted the way
    /// transformers does (alpha composited over white).
    pub fn embed_images(&self, images: &[DynamicImage]) -> Result<Vec<Vec<f32>>> {
        let rgb: Vec<RgbImage> = images.iter().cloned().map(to_rgb).collect();
        Ok(normalize_rows(self.image_features(&rgb)?))
    }

    /// Per image, the softmax over `texts` of `exp(logit_scale)·cos`: what
    /// transformers' `logits_per_image.softmax(-1)` gives.
    pub fn similarity(&self, images: &[DynamicImage], texts: &[&str]) -> Result<Vec<Vec<f32>>> {
        let img = self.embed_images(images)?;
        let txt = self.embed_texts(texts)?;
        softmax_similarity(&img, &txt, self.model.logit_scale(), &self.device)
    }
}

fn read_config(dir: &Path) -> Result<AltClipConfig> {
    let path = dir.join("config.json");
    if !path.is_file() {
        return Err(Error::MissingFile {
            dir: dir.to_path_buf(),
            what: "config.json",
            expected: "an AltCLIP config.json (a Hugging Face model directory)".into(),
        });
    }
    AltClipConfig::from_file(&path)
}

/// The model's tokenizer truncating at `max_length`, which the position table must allow.
fn tokenizer_for(dir: &Path, config: &AltClipConfig, max_length: usize) -> Result<TextTokenizer> {
    let limit = config.max_text_tokens();
    if max_length > limit {
        return Err(Error::Invalid(format!(
            "max length {max_length} exceeds the {limit} tokens that max_position_embeddings={} allows",
            config.text_config.max_position_embeddings
        )));
    }
    let mut tokenizer = TextTokenizer::from_dir(dir)?;
    tokenizer.set_max_length(max_length)?;
    Ok(tokenizer)
}

/// Divides each row by its L2 norm.
pub fn normalize_rows(rows: Vec<Vec<f32>>) -> Vec<Vec<f32>> {
    rows.into_iter()
        .map(|r| {
            let norm = r.iter().map(|v| v * v).sum::<f32>().sqrt();
            r.into_iter().map(|v| v / norm).collect()
        })
        .collect()
}

/// `softmax(exp(logit_scale) · images · textsᵀ)` over the texts, for normalised rows.
pub fn softmax_similarity(
    images: &[Vec<f32>],
    texts: &[Vec<f32>],
    logit_scale: f32,
    device: &Device,
) -> Result<Vec<Vec<f32>>> {
    if images.is_empty() || texts.is_empty() {
        return Ok(vec![Vec::new(); images.len()]);
    }
    let to_tensor = |rows: &[Vec<f32>]| -> Result<Tensor> {
        let dim = rows[0].len();
        Ok(Tensor::from_vec(rows.concat(), (rows.len(), dim), device)?)
    };
    let (img, txt) = (l2_normalize(&to_tensor(images)?)?, to_tensor(texts)?);
    let logits = (img.matmul(&l2_normalize(&txt)?.t()?)? * (logit_scale as f64).exp())?;
    Ok(candle_nn::ops::softmax(&logits, D::Minus1)?.to_vec2()?)
}
