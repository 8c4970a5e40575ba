//! `AltClipModel` (the two towers and their projections) and `AltClip`, the
//! user-facing bundle of model, tokenizer and preprocessor.

use std::path::{Path, PathBuf};

use altclip_kernels::{Kernel, Precision};
use candle_core::{DType, Device, Tensor};
use image::RgbImage;

use crate::config::AltClipConfig;
use crate::embedding::{normalize_rows, softmax_similarity};
use crate::error::{Error, Result};
use crate::hub::{self, ModelDir};
use crate::nn::Linear;
use crate::preprocess::Preprocessor;
use crate::text::{TextInputs, TextTower};
use crate::tokenize::{TextTokenizer, DEFAULT_MAX_LENGTH};
use crate::vision::VisionTower;
use crate::weights::Weights;

/// Which towers to load: a text query needs only the text side.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Towers {
    /// Both towers (the default).
    #[default]
    Both,
    /// The text tower and its projection only.
    Text,
    /// The vision tower and its projection only.
    Vision,
}

impl Towers {
    fn text(self) -> bool {
        self != Towers::Vision
    }

    fn vision(self) -> bool {
        self != Towers::Text
    }
}

/// One tower with its projection into the joint space.
struct Side<T> {
    tower: T,
    projection: Linear,
}

/// The network of `AltCLIPModel`: text and vision towers (either may be
/// left out at load), their projections into the joint space, and
/// `logit_scale`.
pub struct AltClipModel {
    text: Option<Side<TextTower>>,
    vision: Option<Side<VisionTower>>,
    logit_scale: f32,
    parameters: u64,
}

impl AltClipModel {
    /// Loads every tensor the config calls for, for the towers asked for;
    /// unknown extra tensors (e.g. `position_ids` buffers or a pooler) are
    /// ignored.
    pub fn load(w: &Weights, cfg: &AltClipConfig, towers: Towers) -> Result<Self> {
        let (t, v) = (&cfg.text_config, &cfg.vision_config);
        let projection = |name: &str, in_dim: usize| {
            Linear::load_no_bias(&w.pp(name).float_linear(), in_dim, cfg.projection_dim)
        };
        let text = match towers.text() {
            true => Some(Side {
                tower: TextTower::load(&w.pp("text_model"), t)?,
                projection: projection("text_projection", t.project_dim)?,
            }),
            false => None,
        };
        let vision = match towers.vision() {
            true => Some(Side {
                tower: VisionTower::load(&w.pp("vision_model"), v)?,
                projection: projection("visual_projection", v.hidden_size)?,
            }),
            false => None,
        };
        Ok(Self {
            text,
            vision,
            logit_scale: w
                .get_as(&[], "logit_scale", DType::F32)?
                .to_scalar::<f32>()?,
            // Fields load in the order written, so this counts all of them.
            parameters: w.loaded_elements(),
        })
    }

    /// `get_text_features`: unnormalised `[B, projection_dim]` in f32.
    pub fn text_features(&self, inputs: &TextInputs) -> Result<Tensor> {
        let side = self.text.as_ref().ok_or_else(|| missing_tower("text"))?;
        let pooled = side.tower.forward(inputs)?;
        Ok(side.projection.forward(&pooled)?.to_dtype(DType::F32)?)
    }

    /// `get_image_features`: unnormalised `[B, projection_dim]` in f32.
    pub fn image_features(&self, pixel_values: &Tensor) -> Result<Tensor> {
        let side = self
            .vision
            .as_ref()
            .ok_or_else(|| missing_tower("vision"))?;
        let pooled = side.tower.forward(pixel_values)?;
        Ok(side.projection.forward(&pooled)?.to_dtype(DType::F32)?)
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

/// How a model computes, decided once at load from the dtype asked for and
/// the device, and kept with the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ComputePlan {
    /// The dtype asked for.
    pub dtype: DType,
    /// The dtype of the activations: `dtype`, except for bf16 on a CPU with
    /// the bf16 kernel, where LayerNorm, softmax and residuals stay f32 and
    /// only the matmuls run in bf16, as under PyTorch's autocast (candle
    /// alone would widen bf16 to f32 in every op).
    pub activations: DType,
    /// The kernel the linear layers and attention run on; `None` for
    /// candle's matmul (other dtypes, other devices, or no kernel here).
    pub linear: Option<Kernel>,
}

impl ComputePlan {
    /// The plan for a model requested in `dtype` (with int8 linear layers
    /// when `int8`) on `device`.
    pub fn new(dtype: DType, int8: bool, device: &Device) -> Self {
        let kernel = |p: Precision| device.is_cpu().then(|| Kernel::select(p)).flatten();
        let (activations, linear) = match dtype {
            DType::F32 if int8 => (dtype, kernel(Precision::Int8).or(kernel(Precision::F32))),
            DType::F32 => (dtype, kernel(Precision::F32)),
            DType::BF16 => match kernel(Precision::Bf16) {
                Some(k) => (DType::F32, Some(k)),
                None => (dtype, None),
            },
            _ => (dtype, None),
        };
        Self {
            dtype,
            activations,
            linear,
        }
    }

    /// One line naming the path the linear layers take, for `bench`, `info`
    /// and `/info`.
    pub fn describe(&self) -> &'static str {
        match self.linear {
            Some(Kernel::Avx2) => "avx2 f32 kernels (packed weights)",
            Some(Kernel::Avx512) => "avx512f f32 kernels (packed weights)",
            Some(Kernel::Avx512Bf16) => "avx512-bf16 kernels (packed bf16 weights, f32 sums)",
            Some(Kernel::Avx512Vnni) => {
                "avx512-vnni int8 kernels (int8 weights per channel, activations per row)"
            }
            Some(Kernel::AmxBf16) => "amx-bf16 kernels (packed bf16 weights, f32 sums in tiles)",
            Some(Kernel::AmxInt8) => {
                "amx-int8 kernels (int8 weights per channel, activations per row, i32 tiles)"
            }
            None => "candle matmul",
        }
    }
}

fn missing_tower(which: &str) -> Error {
    Error::Invalid(format!("this model was loaded without its {which} tower"))
}

/// Settings for [`AltClip::load`].
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// Compute dtype: F32 (default, exact parity), F16 or BF16.
    pub dtype: DType,
    /// Linear layers in int8 (weights quantised per output channel at load,
    /// activations per row at each call, both symmetric), everything else
    /// in f32; needs `dtype` F32. Where the CPU has no int8 kernel the f32
    /// kernels run.
    pub int8: bool,
    pub device: Device,
    /// Hub revision (branch, tag or commit) when `model` is a Hub id.
    pub revision: Option<String>,
    /// Token truncation length, special tokens included.
    pub max_length: usize,
    /// The towers to load (both by default).
    pub towers: Towers,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            dtype: DType::F32,
            int8: false,
            device: Device::Cpu,
            revision: None,
            max_length: DEFAULT_MAX_LENGTH,
            towers: Towers::Both,
        }
    }
}

/// A ready-to-use AltCLIP: model, tokenizer and image preprocessor.
///
/// Each tower runs in two stages, so that a batching server can do the first
/// on worker threads and the second on the thread that owns the model:
/// [`AltClip::tokenize`] then [`AltClip::embed_token_ids`] for texts, and
/// [`AltClip::preprocess`] then [`AltClip::embed_pixels`] for images. The
/// one-call forms ([`AltClip::embed_texts`], [`AltClip::embed_images`]) chain
/// them. `embed_*` return L2-normalised rows, `*_features` the raw features.
///
/// ```no_run
/// use altclip::{AltClip, LoadOptions};
/// use altclip::preprocess::{open_rgb, DEFAULT_MAX_PIXELS};
/// let clip = AltClip::load("BAAI/AltCLIP", &LoadOptions::default())?;
/// let texts = clip.embed_texts(&["一只猫", "a dog"])?;
/// let image = open_rgb("cat.jpg".as_ref(), DEFAULT_MAX_PIXELS)?;
/// let images = clip.embed_images(&[image])?;
/// let score: f32 = texts[0].iter().zip(&images[0]).map(|(a, b)| a * b).sum();
/// # Ok::<(), altclip::Error>(())
/// ```
pub struct AltClip {
    model: AltClipModel,
    tokenizer: TextTokenizer,
    preprocessor: Preprocessor,
    config: AltClipConfig,
    files: ModelDir,
    weight_files: Vec<PathBuf>,
    plan: ComputePlan,
    device: Device,
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
        if opts.int8 && opts.dtype != DType::F32 {
            return Err(Error::Invalid(format!(
                "int8 linear layers run under f32 activations, not {:?}",
                opts.dtype
            )));
        }
        let plan = ComputePlan::new(opts.dtype, opts.int8, &opts.device);
        let weights =
            Weights::from_dir(dir, plan.activations, &opts.device)?.with_linear_kernel(plan.linear);
        let model = AltClipModel::load(&weights, &config, opts.towers)?;
        Ok(Self {
            model,
            tokenizer,
            preprocessor,
            config,
            files,
            weight_files: weights.paths().to_vec(),
            plan,
            device: opts.device.clone(),
        })
    }

    /// Only the tokenizer of a model, with the same resolution and truncation
    /// rules as [`AltClip::load`] but without reading the weights.
    pub fn load_tokenizer(model: &str, opts: &LoadOptions) -> Result<TextTokenizer> {
        let files = hub::resolve(model, opts.revision.as_deref())?;
        tokenizer_for(&files.dir, &read_config(&files.dir)?, opts.max_length)
    }

    /// The network, for callers that pass tensors themselves.
    pub fn model(&self) -> &AltClipModel {
        &self.model
    }

    /// The tokenizer, truncating at the `max_length` the model was loaded with.
    pub fn tokenizer(&self) -> &TextTokenizer {
        &self.tokenizer
    }

    /// The image preprocessor (`preprocessor_config.json`).
    pub fn preprocessor(&self) -> &Preprocessor {
        &self.preprocessor
    }

    /// The model's `config.json`.
    pub fn config(&self) -> &AltClipConfig {
        &self.config
    }

    /// The model directory and where it came from.
    pub fn files(&self) -> &ModelDir {
        &self.files
    }

    /// The weight files read (one, or every shard).
    pub fn weight_files(&self) -> &[PathBuf] {
        &self.weight_files
    }

    /// How the model computes (dtypes and linear-layer kernel).
    pub fn plan(&self) -> &ComputePlan {
        &self.plan
    }

    /// The dtype asked for at load.
    pub fn dtype(&self) -> DType {
        self.plan.dtype
    }

    /// The device the model runs on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The learned log temperature of the similarity logits.
    pub fn logit_scale(&self) -> f32 {
        self.model.logit_scale()
    }

    /// Width of the joint embedding space.
    pub fn embedding_dim(&self) -> usize {
        self.config.projection_dim
    }

    /// Text stage 1: token ids per text as the model sees them (special
    /// tokens included, truncated).
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

    /// Text stage 2, raw: `get_text_features` of tokenized texts.
    pub fn text_features_of_ids(&self, ids: &[Vec<u32>]) -> Result<Vec<Vec<f32>>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let inputs = TextInputs::new(ids, self.tokenizer.pad_id(), &self.device)?;
        finite(
            self.model.text_features(&inputs)?.to_vec2()?,
            "text features",
        )
    }

    /// Text stage 2: L2-normalised embeddings of tokenized texts.
    pub fn embed_token_ids(&self, ids: &[Vec<u32>]) -> Result<Vec<Vec<f32>>> {
        Ok(normalize_rows(self.text_features_of_ids(ids)?))
    }

    /// `get_text_features` per text: unnormalised.
    pub fn text_features(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
        self.text_features_of_ids(&self.tokenize(texts)?)
    }

    /// L2-normalised text embeddings.
    pub fn embed_texts(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
        self.embed_token_ids(&self.tokenize(texts)?)
    }

    /// Decodes an image file's bytes as [`crate::preprocess::decode_rgb`]
    /// does (`name` labels errors; at most `max_pixels`), then refuses an
    /// image whose resize this model's preprocessor could not afford.
    pub fn decode_image(&self, bytes: &[u8], name: &str, max_pixels: u64) -> Result<RgbImage> {
        let img = crate::preprocess::decode_rgb(bytes, name, max_pixels)?;
        self.preprocessor
            .check_size(img.width(), img.height())
            .map_err(|e| Error::Image {
                input: name.to_string(),
                reason: e.to_string(),
            })?;
        Ok(img)
    }

    /// Image stage 1: one image's pixel values, `[3, H, W]` row-major, as
    /// `CLIPImageProcessor` computes them; an image whose resize would be
    /// enormous is refused (see [`Preprocessor::check_size`]).
    pub fn preprocess(&self, image: &RgbImage) -> Result<Vec<f32>> {
        self.preprocessor.pixel_values(image)
    }

    /// Preprocesses RGB images into a `[B, 3, H, W]` tensor in the
    /// activation dtype.
    pub fn pixel_values(&self, images: &[RgbImage]) -> Result<Tensor> {
        let mut data = Vec::with_capacity(images.len() * self.pixels_per_image());
        for img in images {
            data.extend(self.preprocess(img)?);
        }
        self.pixel_tensor(data, images.len())
    }

    /// Floats per preprocessed image.
    fn pixels_per_image(&self) -> usize {
        let (h, w) = self.preprocessor.output_shape(1, 1);
        3 * h as usize * w as usize
    }

    /// `n` preprocessed images, concatenated, as a model input.
    fn pixel_tensor(&self, data: Vec<f32>, n: usize) -> Result<Tensor> {
        let (h, w) = self.preprocessor.output_shape(1, 1);
        let t = Tensor::from_vec(data, (n, 3, h as usize, w as usize), &self.device)?;
        Ok(t.to_dtype(self.plan.activations)?)
    }

    /// Image stage 2, raw: `get_image_features` of images from
    /// [`AltClip::preprocess`].
    pub fn image_features_of_pixels(&self, pixels: &[Vec<f32>]) -> Result<Vec<Vec<f32>>> {
        if pixels.is_empty() {
            return Ok(Vec::new());
        }
        let want = self.pixels_per_image();
        if let Some((i, p)) = pixels.iter().enumerate().find(|(_, p)| p.len() != want) {
            return Err(Error::Invalid(format!(
                "preprocessed image {i} has {} values; this model's preprocessor makes {want}",
                p.len()
            )));
        }
        let t = self.pixel_tensor(pixels.concat(), pixels.len())?;
        finite(self.model.image_features(&t)?.to_vec2()?, "image features")
    }

    /// Image stage 2: L2-normalised embeddings of preprocessed images.
    pub fn embed_pixels(&self, pixels: &[Vec<f32>]) -> Result<Vec<Vec<f32>>> {
        Ok(normalize_rows(self.image_features_of_pixels(pixels)?))
    }

    /// `get_image_features` per RGB image: unnormalised.
    pub fn image_features(&self, images: &[RgbImage]) -> Result<Vec<Vec<f32>>> {
        if images.is_empty() {
            return Ok(Vec::new());
        }
        let features = self.model.image_features(&self.pixel_values(images)?)?;
        finite(features.to_vec2()?, "image features")
    }

    /// L2-normalised image embeddings of RGB images (as
    /// [`crate::preprocess::decode_rgb`] and `open_rgb` return them).
    pub fn embed_images(&self, images: &[RgbImage]) -> Result<Vec<Vec<f32>>> {
        Ok(normalize_rows(self.image_features(images)?))
    }

    /// Per image, the softmax over `texts` of `exp(logit_scale)·cos`: what
    /// transformers' `logits_per_image.softmax(-1)` gives.
    pub fn similarity(&self, images: &[RgbImage], texts: &[&str]) -> Result<Vec<Vec<f32>>> {
        let img = self.embed_images(images)?;
        let txt = self.embed_texts(texts)?;
        softmax_similarity(&img, &txt, self.logit_scale(), &self.device)
    }
}

/// `rows`, unless one holds a NaN or an infinity: an error, not an answer.
fn finite(rows: Vec<Vec<f32>>, what: &str) -> Result<Vec<Vec<f32>>> {
    match rows.iter().position(|r| r.iter().any(|v| !v.is_finite())) {
        Some(i) => Err(Error::NonFinite {
            what: format!("the {what} of input {i}"),
        }),
        None => Ok(rows),
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
