//! OpenAI CLIP's text tower (transformers' `CLIPTextModel` /
//! `CLIPTextModelWithProjection` / the text half of `CLIPModel`), the teacher
//! of AltCLIP's distillation phase, and CLIP's byte-level BPE tokenizer.
//!
//! `pooler_output` is the hidden state at the EOS token after
//! `final_layer_norm`, before `text_projection`: the vector AltCLIP's student
//! learns to reproduce.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use serde::{Deserialize, Serialize};
use tokenizers::Tokenizer;

use altclip::config::{Activation, VisionConfig};
use altclip::error::{Error, Result};
use altclip::nn::{ClipEncoderLayer, ClipLayerDims, LayerNorm, Linear};
use altclip::tokenize::{TextTokenizer, TokenizerSource};
use altclip::weights::Weights;

/// `CLIPTextConfig`, with transformers' class defaults for missing keys.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ClipTextConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    /// Output width of `text_projection` in a `CLIPTextModelWithProjection`.
    pub projection_dim: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub max_position_embeddings: usize,
    pub hidden_act: Activation,
    pub layer_norm_eps: f64,
    pub pad_token_id: u32,
    pub bos_token_id: u32,
    /// 2 (the value of OpenAI's original configs) selects the legacy pooling
    /// rule, the argmax of the token ids; any other value pools the first
    /// occurrence of this id.
    pub eos_token_id: u32,
}

impl Default for ClipTextConfig {
    fn default() -> Self {
        Self {
            vocab_size: 49408,
            hidden_size: 512,
            intermediate_size: 2048,
            projection_dim: 512,
            num_hidden_layers: 12,
            num_attention_heads: 8,
            max_position_embeddings: 77,
            hidden_act: Activation::QuickGelu,
            layer_norm_eps: 1e-5,
            pad_token_id: 1,
            bos_token_id: 49406,
            eos_token_id: 49407,
        }
    }
}

/// The `config.json` of a CLIP checkpoint: a full `CLIPConfig`
/// (`model_type: clip`) or a text-only `CLIPTextConfig`.
#[derive(Debug, Clone, PartialEq)]
pub struct ClipConfig {
    pub text_config: ClipTextConfig,
    /// The image tower's config; `None` for a text-only config.
    pub vision_config: Option<VisionConfig>,
    /// Width of `text_projection`'s output.
    pub projection_dim: usize,
    /// The raw JSON, for fields this crate does not model.
    pub raw: serde_json::Value,
}

impl ClipConfig {
    /// Reads `config.json`, either layout.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let bad_json = |e: serde_json::Error| Error::BadJson {
            path: path.to_path_buf(),
            what: "CLIP config",
            reason: e.to_string(),
        };
        let mut raw: serde_json::Value = serde_json::from_str(&text).map_err(bad_json)?;
        let model_type = raw["model_type"].as_str().unwrap_or_default().to_string();
        let config = if raw.get("text_config").is_some() || raw.get("text_config_dict").is_some() {
            if let Some(legacy) = raw.get("text_config_dict").cloned() {
                merge_into(&mut raw, "text_config", legacy);
            }
            if let Some(legacy) = raw.get("vision_config_dict").cloned() {
                merge_into(&mut raw, "vision_config", legacy);
            }
            let text_config: ClipTextConfig =
                serde_json::from_value(raw["text_config"].clone()).map_err(bad_json)?;
            let vision_config: VisionConfig =
                serde_json::from_value(raw.get("vision_config").cloned().unwrap_or_default())
                    .map_err(bad_json)?;
            Self {
                text_config,
                vision_config: Some(vision_config),
                projection_dim: raw["projection_dim"].as_u64().unwrap_or(512) as usize,
                raw,
            }
        } else if model_type == "clip_text_model" || raw.get("hidden_size").is_some() {
            let text_config: ClipTextConfig =
                serde_json::from_value(raw.clone()).map_err(bad_json)?;
            Self {
                projection_dim: text_config.projection_dim,
                text_config,
                vision_config: None,
                raw,
            }
        } else {
            return Err(Error::BadConfig {
                path: path.to_path_buf(),
                reason: format!(
                    "model_type `{model_type}` is neither a CLIP model (`clip`, with text_config) \
                     nor a CLIP text model (`clip_text_model`); pass a CLIP checkpoint such as \
                     openai/clip-vit-large-patch14"
                ),
            });
        };
        let t = &config.text_config;
        if t.num_attention_heads == 0 || t.hidden_size % t.num_attention_heads != 0 {
            return Err(Error::BadConfig {
                path: path.to_path_buf(),
                reason: format!(
                    "text_config.hidden_size {} is not divisible by num_attention_heads {}",
                    t.hidden_size, t.num_attention_heads
                ),
            });
        }
        Ok(config)
    }
}

fn merge_into(raw: &mut serde_json::Value, name: &str, legacy: serde_json::Value) {
    let (Some(obj), serde_json::Value::Object(legacy)) = (raw.as_object_mut(), legacy) else {
        return;
    };
    let target = obj
        .entry(name)
        .or_insert_with(|| serde_json::Value::Object(Default::default()));
    if let Some(target) = target.as_object_mut() {
        target.extend(legacy);
    }
}

/// A padded batch for [`ClipTextModel`]. Built by [`ClipTextInputs::new`].
#[derive(Debug, Clone)]
pub struct ClipTextInputs {
    /// `[B, L]` u32 token ids, right-padded.
    pub input_ids: Tensor,
    /// `[B, 1, L, L]` additive causal + padding mask in f32.
    pub mask: Tensor,
    /// `[B]` u32: the position each row is pooled at.
    pub pool_positions: Tensor,
}

impl ClipTextInputs {
    /// Pads `ids` (special tokens included) with `pad_id` to the longest row
    /// and picks each row's pooling position with transformers' rule for
    /// `eos_token_id`: the argmax of the padded ids (first maximum) when it is
    /// 2, else the first position holding `eos_token_id` (0 if none).
    pub fn new(ids: &[Vec<u32>], pad_id: u32, eos_token_id: u32, device: &Device) -> Result<Self> {
        let b = ids.len();
        let l = ids.iter().map(Vec::len).max().unwrap_or(0);
        if b == 0 || l == 0 {
            return Err(Error::Invalid(
                "cannot encode an empty batch of token ids".into(),
            ));
        }
        let mut input = vec![pad_id; b * l];
        let mut mask = vec![f32::MIN; b * l * l];
        let mut pool = Vec::with_capacity(b);
        for (row, seq) in ids.iter().enumerate() {
            input[row * l..row * l + seq.len()].copy_from_slice(seq);
            let padded = &input[row * l..(row + 1) * l];
            let position = if eos_token_id == 2 {
                // torch.argmax returns the first maximal index.
                let max = padded.iter().copied().max().unwrap_or(0);
                padded.iter().position(|&t| t == max).unwrap_or(0)
            } else {
                padded.iter().position(|&t| t == eos_token_id).unwrap_or(0)
            };
            pool.push(position as u32);
            for q in 0..l {
                for k in 0..=q.min(seq.len().saturating_sub(1)) {
                    mask[(row * l + q) * l + k] = 0.0;
                }
            }
        }
        Ok(Self {
            input_ids: Tensor::from_vec(input, (b, l), device)?,
            mask: Tensor::from_vec(mask, (b, 1, l, l), device)?,
            pool_positions: Tensor::from_vec(pool, b, device)?,
        })
    }
}

/// What [`ClipTextModel::forward`] returns.
#[derive(Debug, Clone)]
pub struct ClipTextOutput {
    /// `[B, L, hidden]` after `final_layer_norm`.
    pub last_hidden_state: Tensor,
    /// `[B, hidden]`: the EOS rows of `last_hidden_state`.
    pub pooler_output: Tensor,
}

/// `CLIPTextTransformer` (`text_model.*` keys) with the optional
/// `text_projection`.
pub struct ClipTextModel {
    token_embedding: Tensor,
    position_embedding: Tensor,
    layers: Vec<ClipEncoderLayer>,
    final_layer_norm: LayerNorm,
    text_projection: Option<Linear>,
    config: ClipTextConfig,
}

impl ClipTextModel {
    /// Loads from a view at the checkpoint root. `text_projection` (shape
    /// `[projection_dim, hidden]`) is loaded when the checkpoint has it.
    pub fn load(w: &Weights, cfg: &ClipTextConfig, projection_dim: usize) -> Result<Self> {
        let h = cfg.hidden_size;
        let t = w.pp("text_model");
        let e = t.pp("embeddings");
        let dims = ClipLayerDims {
            hidden: h,
            intermediate: cfg.intermediate_size,
            heads: cfg.num_attention_heads,
            act: cfg.hidden_act,
            eps: cfg.layer_norm_eps,
        };
        let layers = ClipEncoderLayer::load_stack(&t, dims, cfg.num_hidden_layers)?;
        let text_projection = if w.contains("text_projection.weight") {
            Some(Linear::load_no_bias(
                &w.pp("text_projection"),
                h,
                projection_dim,
            )?)
        } else {
            None
        };
        Ok(Self {
            token_embedding: e.get(&[cfg.vocab_size, h], "token_embedding.weight")?,
            position_embedding: e.get(
                &[cfg.max_position_embeddings, h],
                "position_embedding.weight",
            )?,
            layers,
            final_layer_norm: LayerNorm::load(&t.pp("final_layer_norm"), h, cfg.layer_norm_eps)?,
            text_projection,
            config: cfg.clone(),
        })
    }

    /// The config the model was loaded with.
    pub fn config(&self) -> &ClipTextConfig {
        &self.config
    }

    /// Runs the tower: causal self-attention over `tokens + positions`, then
    /// `final_layer_norm`, then EOS pooling.
    pub fn forward(&self, inputs: &ClipTextInputs) -> Result<ClipTextOutput> {
        let (b, l) = inputs.input_ids.dims2()?;
        if l > self.config.max_position_embeddings {
            return Err(Error::Invalid(format!(
                "{l} tokens exceed the CLIP text model's {} positions; truncate the texts",
                self.config.max_position_embeddings
            )));
        }
        let dtype = self.token_embedding.dtype();
        let tokens = self
            .token_embedding
            .index_select(&inputs.input_ids.flatten_all()?, 0)?
            .reshape((b, l, ()))?;
        let mut x = tokens.broadcast_add(&self.position_embedding.narrow(0, 0, l)?)?;
        let mask = inputs.mask.to_dtype(dtype)?;
        for layer in &self.layers {
            x = layer.forward(&x, Some(&mask))?;
        }
        let x = self.final_layer_norm.forward(&x)?;
        let h = x.dim(2)?;
        let offsets: Vec<u32> = (0..b as u32).map(|i| i * l as u32).collect();
        let rows = (Tensor::new(offsets, x.device())? + &inputs.pool_positions)?;
        let pooled = x.reshape((b * l, h))?.index_select(&rows, 0)?;
        Ok(ClipTextOutput {
            last_hidden_state: x,
            pooler_output: pooled,
        })
    }

    /// `text_projection(pooler_output)` (`CLIPTextModelWithProjection.text_embeds`,
    /// `CLIPModel.get_text_features`).
    pub fn project(&self, pooled: &Tensor) -> Result<Tensor> {
        match &self.text_projection {
            Some(p) => p.forward(pooled),
            None => Err(Error::Invalid(
                "this CLIP checkpoint has no text_projection (a plain CLIPTextModel)".into(),
            )),
        }
    }
}

const CLIP_SPLIT: &str =
    r"<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+";
const BOS: &str = "<|startoftext|>";
const EOS: &str = "<|endoftext|>";
/// CLIP's context length, the truncation until the config says otherwise.
const CLIP_MAX_LENGTH: usize = 77;

/// CLIP's byte-level BPE tokenizer from `dir`, built the way transformers 5's
/// `CLIPTokenizer` builds it from the vocabulary and merges: NFC, whitespace
/// runs to one space, lower-casing; CLIP's split pattern then byte-level
/// pre-tokenization; BPE with the `</w>` end-of-word suffix; and
/// `<|startoftext|> … <|endoftext|>` around each text, truncated. The files
/// are `tokenizer.json`, else `vocab.json` + `merges.txt`; the pad token
/// comes from `tokenizer_config.json` (default `<|endoftext|>`).
pub fn clip_tokenizer(dir: &Path) -> Result<TextTokenizer> {
    let (vocab, merges, source) = read_bpe(dir)?;
    let fail = |reason: String| Error::Tokenizer {
        path: source.clone(),
        reason,
    };
    let id_of = |token: &str| -> Result<u32> {
        vocab[token]
            .as_u64()
            .map(|v| v as u32)
            .ok_or_else(|| fail(format!("the vocabulary has no {token}")))
    };
    let (bos, eos) = (id_of(BOS)?, id_of(EOS)?);
    let pad_token = special_token(dir, "pad_token").unwrap_or_else(|| EOS.to_string());
    let pad_id = id_of(&pad_token)?;
    let added = |id: u32, content: &str| {
        serde_json::json!({"id": id, "content": content, "single_word": false, "lstrip": false,
                           "rstrip": false, "normalized": false, "special": true})
    };
    let mut added_tokens = vec![added(bos, BOS), added(eos, EOS)];
    if pad_id != bos && pad_id != eos {
        added_tokens.push(added(pad_id, &pad_token));
    }
    let spec = serde_json::json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added_tokens,
        "normalizer": {"type": "Sequence", "normalizers": [
            {"type": "NFC"},
            {"type": "Replace", "pattern": {"Regex": "\\s+"}, "content": " "},
            {"type": "Lowercase"}
        ]},
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": CLIP_SPLIT}, "behavior": "Removed", "invert": true},
            {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true}
        ]},
        "post_processor": {"type": "RobertaProcessing", "sep": [EOS, eos], "cls": [BOS, bos],
                           "trim_offsets": false, "add_prefix_space": false},
        "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
        "model": {"type": "BPE", "dropout": null, "unk_token": EOS,
                  "continuing_subword_prefix": "", "end_of_word_suffix": "</w>",
                  "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
                  "vocab": vocab, "merges": merges}
    });
    let inner: Tokenizer = spec
        .to_string()
        .parse()
        .map_err(|e: tokenizers::Error| fail(e.to_string()))?;
    TextTokenizer::with_specials(
        inner,
        TokenizerSource::Bpe(source),
        (BOS, EOS),
        pad_id,
        CLIP_MAX_LENGTH,
    )
}

/// The BPE vocabulary (a JSON object), the merges (`"a b"` each) and the
/// file they came from: `tokenizer.json`, else `vocab.json` + `merges.txt`.
fn read_bpe(dir: &Path) -> Result<(serde_json::Value, Vec<String>, PathBuf)> {
    let json = dir.join("tokenizer.json");
    if json.is_file() {
        return read_bpe_tokenizer_json(&json);
    }
    let vocab_path = dir.join("vocab.json");
    let merges_path = dir.join("merges.txt");
    if !vocab_path.is_file() || !merges_path.is_file() {
        return Err(Error::MissingFile {
            dir: dir.to_path_buf(),
            what: "CLIP tokenizer",
            expected: "tokenizer.json, or vocab.json and merges.txt".into(),
        });
    }
    let text = std::fs::read_to_string(&vocab_path).map_err(|e| Error::io(&vocab_path, e))?;
    let vocab: serde_json::Value = serde_json::from_str(&text).map_err(|e| Error::Tokenizer {
        path: vocab_path.clone(),
        reason: format!("not valid JSON: {e}"),
    })?;
    let merges = std::fs::read_to_string(&merges_path)
        .map_err(|e| Error::io(&merges_path, e))?
        .lines()
        .filter(|l| !l.starts_with("#version") && !l.trim().is_empty())
        .map(str::to_string)
        .collect();
    Ok((vocab, merges, vocab_path))
}

/// [`read_bpe`] from a `tokenizers` JSON file whose model is BPE.
fn read_bpe_tokenizer_json(json: &Path) -> Result<(serde_json::Value, Vec<String>, PathBuf)> {
    let fail = |reason: String| Error::Tokenizer {
        path: json.to_path_buf(),
        reason,
    };
    let text = std::fs::read_to_string(json).map_err(|e| Error::io(json, e))?;
    let value: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| fail(format!("not valid JSON: {e}")))?;
    if value["model"]["type"] != "BPE" {
        return Err(fail(format!(
            "the model is {}, not BPE; this is not a CLIP tokenizer",
            value["model"]["type"]
        )));
    }
    let merges = value["model"]["merges"]
        .as_array()
        .ok_or_else(|| fail("model.merges is missing".into()))?
        .iter()
        .map(|m| match m {
            serde_json::Value::String(s) => Ok(s.clone()),
            serde_json::Value::Array(pair) if pair.len() == 2 => Ok(format!(
                "{} {}",
                pair[0].as_str().unwrap_or_default(),
                pair[1].as_str().unwrap_or_default()
            )),
            other => Err(fail(format!("unreadable merge {other}"))),
        })
        .collect::<Result<Vec<_>>>()?;
    Ok((value["model"]["vocab"].clone(), merges, json.to_path_buf()))
}

/// A special token's text from `tokenizer_config.json` or `special_tokens_map.json`.
fn special_token(dir: &Path, key: &str) -> Option<String> {
    ["tokenizer_config.json", "special_tokens_map.json"]
        .iter()
        .find_map(|file| {
            let text = std::fs::read_to_string(dir.join(file)).ok()?;
            let value: serde_json::Value = serde_json::from_str(&text).ok()?;
            match &value[key] {
                serde_json::Value::String(s) => Some(s.clone()),
                serde_json::Value::Object(o) => o.get("content")?.as_str().map(str::to_string),
                _ => None,
            }
        })
}

/// A CLIP checkpoint's text side, ready to embed: model, tokenizer, config.
pub struct ClipText {
    pub model: ClipTextModel,
    pub tokenizer: TextTokenizer,
    pub config: ClipConfig,
    /// The directory the files were read from.
    pub dir: PathBuf,
    /// The weight files read.
    pub weight_files: Vec<PathBuf>,
    pub device: Device,
}

impl ClipText {
    /// Loads the text tower of the CLIP checkpoint in `dir` (f32).
    pub fn load(dir: &Path, device: &Device) -> Result<Self> {
        let config_path = dir.join("config.json");
        if !config_path.is_file() {
            return Err(Error::MissingFile {
                dir: dir.to_path_buf(),
                what: "config.json",
                expected: "a CLIP config.json (a Hugging Face model directory)".into(),
            });
        }
        let config = ClipConfig::from_file(&config_path)?;
        let weights = Weights::from_dir(dir, DType::F32, device)?;
        let model = ClipTextModel::load(&weights, &config.text_config, config.projection_dim)?;
        let mut tokenizer = clip_tokenizer(dir)?;
        tokenizer.set_max_length(config.text_config.max_position_embeddings)?;
        Ok(Self {
            model,
            tokenizer,
            config,
            dir: dir.to_path_buf(),
            weight_files: weights.paths().to_vec(),
            device: device.clone(),
        })
    }

    /// Model inputs for a batch of texts.
    pub fn inputs(&self, texts: &[&str]) -> Result<ClipTextInputs> {
        ClipTextInputs::new(
            &self.tokenizer.encode(texts)?,
            self.tokenizer.pad_id(),
            self.config.text_config.eos_token_id,
            &self.device,
        )
    }

    /// `pooler_output` per text: the distillation target.
    pub fn pooled(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        Ok(self
            .model
            .forward(&self.inputs(texts)?)?
            .pooler_output
            .to_vec2()?)
    }
}
