//! `config.json` of an AltCLIP checkpoint, with transformers' class defaults for
//! every missing key, so that BAAI/AltCLIP, AltCLIP-m9/m18 and small test
//! configs all load with no code change.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Activation functions named in transformers configs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Activation {
    /// Exact GELU, `x·Φ(x)` with erf.
    Gelu,
    /// `x·sigmoid(1.702x)`, OpenAI CLIP's activation.
    QuickGelu,
    /// Tanh approximation of GELU.
    GeluNew,
    /// Tanh approximation of GELU (PyTorch's name).
    GeluPytorchTanh,
    Relu,
    Silu,
}

/// Text tower config (`AltCLIPTextConfig`): XLM-RoBERTa plus the AltCLIP head.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TextConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    pub hidden_act: Activation,
    pub max_position_embeddings: usize,
    pub type_vocab_size: usize,
    pub layer_norm_eps: f64,
    pub pad_token_id: u32,
    pub bos_token_id: u32,
    pub eos_token_id: u32,
    /// Width of `transformation`, the projection applied after `pre_LN`.
    pub project_dim: usize,
}

impl Default for TextConfig {
    fn default() -> Self {
        Self {
            vocab_size: 250002,
            hidden_size: 1024,
            num_hidden_layers: 24,
            num_attention_heads: 16,
            intermediate_size: 4096,
            hidden_act: Activation::Gelu,
            max_position_embeddings: 514,
            type_vocab_size: 1,
            layer_norm_eps: 1e-5,
            pad_token_id: 1,
            bos_token_id: 0,
            eos_token_id: 2,
            project_dim: 768,
        }
    }
}

/// Vision tower config (`AltCLIPVisionConfig`): a CLIP ViT.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct VisionConfig {
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_channels: usize,
    pub image_size: usize,
    pub patch_size: usize,
    pub hidden_act: Activation,
    pub layer_norm_eps: f64,
}

impl Default for VisionConfig {
    fn default() -> Self {
        // transformers' class defaults are ViT-B/32; real checkpoints override them.
        Self {
            hidden_size: 768,
            intermediate_size: 3072,
            num_hidden_layers: 12,
            num_attention_heads: 12,
            num_channels: 3,
            image_size: 224,
            patch_size: 32,
            hidden_act: Activation::QuickGelu,
            layer_norm_eps: 1e-5,
        }
    }
}

impl VisionConfig {
    /// Patches per side of the (square) input.
    pub fn grid_size(&self) -> usize {
        self.image_size / self.patch_size
    }

    /// Tokens the encoder sees: the patches plus the class token.
    pub fn num_positions(&self) -> usize {
        self.grid_size() * self.grid_size() + 1
    }
}

/// Top-level `AltCLIPConfig`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct AltClipConfig {
    pub text_config: TextConfig,
    pub vision_config: VisionConfig,
    /// Width of the joint embedding space.
    pub projection_dim: usize,
    pub logit_scale_init_value: f64,
}

impl Default for AltClipConfig {
    fn default() -> Self {
        Self {
            text_config: TextConfig::default(),
            vision_config: VisionConfig::default(),
            projection_dim: 768,
            logit_scale_init_value: 2.6592,
        }
    }
}

/// The largest value any one dimension of a config may have (XLM-R's vocabulary
/// is 250,002): products of dimensions then stay far from overflow, and a typo
/// fails here rather than as an allocation.
pub const MAX_DIMENSION: usize = 1 << 22;

impl AltClipConfig {
    /// Reads and validates `config.json`.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let bad_json = |e: serde_json::Error| Error::BadJson {
            path: path.to_path_buf(),
            what: "AltCLIP config",
            reason: e.to_string(),
        };
        let mut raw: serde_json::Value = serde_json::from_str(&text).map_err(bad_json)?;
        merge_legacy_sub_configs(&mut raw);
        let config: Self = serde_json::from_value(raw).map_err(bad_json)?;
        config.validate(path)?;
        Ok(config)
    }

    fn validate(&self, path: &Path) -> Result<()> {
        let bad = |reason: String| {
            Err(Error::BadConfig {
                path: path.to_path_buf(),
                reason,
            })
        };
        let t = &self.text_config;
        let v = &self.vision_config;
        let dims = [
            ("text_config.vocab_size", t.vocab_size),
            ("text_config.hidden_size", t.hidden_size),
            ("text_config.num_hidden_layers", t.num_hidden_layers),
            ("text_config.num_attention_heads", t.num_attention_heads),
            ("text_config.intermediate_size", t.intermediate_size),
            (
                "text_config.max_position_embeddings",
                t.max_position_embeddings,
            ),
            ("text_config.type_vocab_size", t.type_vocab_size),
            ("text_config.project_dim", t.project_dim),
            ("vision_config.hidden_size", v.hidden_size),
            ("vision_config.intermediate_size", v.intermediate_size),
            ("vision_config.num_hidden_layers", v.num_hidden_layers),
            ("vision_config.num_attention_heads", v.num_attention_heads),
            ("vision_config.num_channels", v.num_channels),
            ("vision_config.image_size", v.image_size),
            ("vision_config.patch_size", v.patch_size),
            ("projection_dim", self.projection_dim),
        ];
        if let Some((name, value)) = dims.iter().find(|(_, d)| *d > MAX_DIMENSION) {
            return bad(format!(
                "{name} {value} is over the limit of {MAX_DIMENSION}; no checkpoint has such a shape"
            ));
        }
        if t.num_attention_heads == 0 || !t.hidden_size.is_multiple_of(t.num_attention_heads) {
            return bad(format!(
                "text_config.hidden_size {} is not divisible by num_attention_heads {}",
                t.hidden_size, t.num_attention_heads
            ));
        }
        if v.num_attention_heads == 0 || !v.hidden_size.is_multiple_of(v.num_attention_heads) {
            return bad(format!(
                "vision_config.hidden_size {} is not divisible by num_attention_heads {}",
                v.hidden_size, v.num_attention_heads
            ));
        }
        if v.patch_size == 0 || !v.image_size.is_multiple_of(v.patch_size) {
            return bad(format!(
                "vision_config.image_size {} is not a multiple of patch_size {}",
                v.image_size, v.patch_size
            ));
        }
        if t.max_position_embeddings < t.pad_token_id as usize + 2 {
            return bad(format!(
                "text_config.max_position_embeddings {} leaves no room for a token after the padding index {}",
                t.max_position_embeddings, t.pad_token_id
            ));
        }
        Ok(())
    }

    /// Longest input (special tokens included) the position table allows:
    /// positions start after the padding index.
    pub fn max_text_tokens(&self) -> usize {
        self.text_config.max_position_embeddings - self.text_config.pad_token_id as usize - 1
    }
}

/// Configs written by transformers 4.2x may carry `text_config_dict` /
/// `vision_config_dict`; as in transformers, their values win over
/// `text_config` / `vision_config`.
fn merge_legacy_sub_configs(raw: &mut serde_json::Value) {
    let Some(obj) = raw.as_object_mut() else {
        return;
    };
    for name in ["text_config", "vision_config"] {
        let Some(serde_json::Value::Object(legacy)) = obj.remove(&format!("{name}_dict")) else {
            continue;
        };
        let target = obj
            .entry(name)
            .or_insert_with(|| serde_json::Value::Object(Default::default()));
        if let Some(target) = target.as_object_mut() {
            target.extend(legacy);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_config_gets_transformers_defaults() {
        let c: AltClipConfig = serde_json::from_str("{}").unwrap();
        assert_eq!(c.projection_dim, 768);
        assert_eq!(c.text_config.hidden_size, 1024);
        assert_eq!(c.text_config.hidden_act, Activation::Gelu);
        assert_eq!(c.vision_config.patch_size, 32);
        assert_eq!(c.vision_config.hidden_act, Activation::QuickGelu);
        assert_eq!(c.max_text_tokens(), 512);
    }

    #[test]
    fn unknown_keys_are_ignored_and_partial_sub_configs_filled() {
        let c: AltClipConfig = serde_json::from_str(
            r#"{"direct_kd": false, "num_layers": 3, "projection_dim": 1024,
                "text_config": {"hidden_size": 64, "model_type": "altclip_text_model"},
                "vision_config": {"patch_size": 14, "hidden_act": "quick_gelu"}}"#,
        )
        .unwrap();
        assert_eq!(c.projection_dim, 1024);
        assert_eq!(c.text_config.hidden_size, 64);
        assert_eq!(c.text_config.num_hidden_layers, 24);
        assert_eq!(c.vision_config.patch_size, 14);
        assert_eq!(c.vision_config.grid_size(), 16);
        assert_eq!(c.vision_config.num_positions(), 257);
    }

    #[test]
    fn legacy_dict_sub_configs_override() {
        let mut raw = serde_json::json!({
            "text_config": {"hidden_size": 64},
            "vision_config_dict": {"patch_size": 14, "hidden_size": 1024}
        });
        merge_legacy_sub_configs(&mut raw);
        let c: AltClipConfig = serde_json::from_value(raw).unwrap();
        assert_eq!(c.text_config.hidden_size, 64);
        assert_eq!(c.vision_config.patch_size, 14);
        assert_eq!(c.vision_config.hidden_size, 1024);
    }

    #[test]
    fn invalid_head_count_names_the_file() {
        let dir = std::env::temp_dir().join(format!("altclip-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("config.json");
        std::fs::write(
            &path,
            r#"{"text_config": {"hidden_size": 30, "num_attention_heads": 4}}"#,
        )
        .unwrap();
        let err = AltClipConfig::from_file(&path).unwrap_err().to_string();
        assert!(err.contains("config.json"), "{err}");
        assert!(err.contains("not divisible"), "{err}");
    }
}
