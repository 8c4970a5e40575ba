//! diffusers' `UNet2DConditionModel` and `AutoencoderKL` configs
//! (`unet/config.json`, `vae/config.json`), with diffusers' defaults.
//!
//! Every field diffusers defines is either honoured by [`crate::unet`] and
//! [`crate::vae`] as diffusers honours it, or refused at load by name
//! ([`UNetConfig::check`], [`VaeConfig::check`]); keys diffusers does not
//! define are refused too, since a newer diffusers may compute with them.

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::Value;

use crate::error::{Error, Result};

/// An integer, or one per block, as diffusers allows for head counts and
/// layer counts.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum PerBlock {
    One(usize),
    Each(Vec<usize>),
}

impl PerBlock {
    /// The value for block `i`.
    pub fn get(&self, i: usize) -> usize {
        match self {
            PerBlock::One(n) => *n,
            PerBlock::Each(v) => v[i],
        }
    }

    fn len_matches(&self, n: usize) -> bool {
        match self {
            PerBlock::One(_) => true,
            PerBlock::Each(v) => v.len() == n,
        }
    }

    /// The values for the up path (blocks in reverse).
    pub fn reversed(&self) -> PerBlock {
        match self {
            PerBlock::One(n) => PerBlock::One(*n),
            PerBlock::Each(v) => PerBlock::Each(v.iter().rev().copied().collect()),
        }
    }
}

/// A boolean, or one per block (diffusers' `only_cross_attention`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum FlagPerBlock {
    One(bool),
    Each(Vec<bool>),
}

impl FlagPerBlock {
    fn any(&self) -> bool {
        match self {
            FlagPerBlock::One(b) => *b,
            FlagPerBlock::Each(v) => v.iter().any(|b| *b),
        }
    }
}

/// `unet/config.json`. Field names and defaults are diffusers'.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UNetConfig {
    /// The latent size it was trained at; it does not change the computation.
    #[serde(default)]
    pub sample_size: Option<Value>,
    #[serde(default = "four")]
    pub in_channels: usize,
    #[serde(default = "four")]
    pub out_channels: usize,
    #[serde(default)]
    pub center_input_sample: bool,
    #[serde(default = "yes")]
    pub flip_sin_to_cos: bool,
    #[serde(default)]
    pub freq_shift: f64,
    #[serde(default = "default_down")]
    pub down_block_types: Vec<String>,
    #[serde(default = "default_mid")]
    pub mid_block_type: Option<String>,
    #[serde(default = "default_up")]
    pub up_block_types: Vec<String>,
    #[serde(default = "no_flag")]
    pub only_cross_attention: FlagPerBlock,
    #[serde(default = "default_channels")]
    pub block_out_channels: Vec<usize>,
    #[serde(default = "two")]
    pub layers_per_block: PerBlock,
    #[serde(default = "one")]
    pub downsample_padding: usize,
    #[serde(default = "one_f")]
    pub mid_block_scale_factor: f64,
    /// Training only.
    #[serde(default)]
    pub dropout: f64,
    #[serde(default = "silu")]
    pub act_fn: String,
    #[serde(default = "thirty_two")]
    pub norm_num_groups: Option<usize>,
    #[serde(default = "eps")]
    pub norm_eps: f64,
    #[serde(default = "cross_dim")]
    pub cross_attention_dim: PerBlock,
    #[serde(default = "one_block")]
    pub transformer_layers_per_block: PerBlock,
    #[serde(default)]
    pub reverse_transformer_layers_per_block: Option<Value>,
    #[serde(default)]
    pub encoder_hid_dim: Option<Value>,
    #[serde(default)]
    pub encoder_hid_dim_type: Option<Value>,
    /// diffusers' SD configs give the head *count* here (its historical
    /// misnomer); `num_attention_heads`, when set, takes precedence.
    #[serde(default = "eight")]
    pub attention_head_dim: PerBlock,
    #[serde(default)]
    pub num_attention_heads: Option<PerBlock>,
    #[serde(default)]
    pub dual_cross_attention: bool,
    #[serde(default)]
    pub use_linear_projection: bool,
    #[serde(default)]
    pub class_embed_type: Option<Value>,
    #[serde(default)]
    pub addition_embed_type: Option<Value>,
    #[serde(default)]
    pub addition_time_embed_dim: Option<Value>,
    #[serde(default)]
    pub num_class_embeds: Option<Value>,
    /// Attention in f32 under reduced precision: ours always is.
    #[serde(default)]
    pub upcast_attention: bool,
    #[serde(default = "default_shift")]
    pub resnet_time_scale_shift: String,
    #[serde(default)]
    pub resnet_skip_time_act: bool,
    #[serde(default = "one_f")]
    pub resnet_out_scale_factor: f64,
    #[serde(default = "positional")]
    pub time_embedding_type: String,
    #[serde(default)]
    pub time_embedding_dim: Option<usize>,
    #[serde(default)]
    pub time_embedding_act_fn: Option<Value>,
    #[serde(default)]
    pub timestep_post_act: Option<Value>,
    #[serde(default)]
    pub time_cond_proj_dim: Option<Value>,
    #[serde(default = "three")]
    pub conv_in_kernel: usize,
    #[serde(default = "three")]
    pub conv_out_kernel: usize,
    #[serde(default)]
    pub projection_class_embeddings_input_dim: Option<Value>,
    #[serde(default = "default_attention")]
    pub attention_type: String,
    #[serde(default)]
    pub class_embeddings_concat: bool,
    #[serde(default)]
    pub mid_block_only_cross_attention: Option<bool>,
    #[serde(default)]
    pub cross_attention_norm: Option<Value>,
    /// Used only with `addition_embed_type`, which is refused.
    #[serde(default = "sixty_four")]
    pub addition_embed_type_num_heads: usize,
}

/// `vae/config.json`. Field names and defaults are diffusers'.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VaeConfig {
    #[serde(default = "three")]
    pub in_channels: usize,
    #[serde(default = "three")]
    pub out_channels: usize,
    #[serde(default = "default_encoder_blocks")]
    pub down_block_types: Vec<String>,
    #[serde(default = "default_decoder_blocks")]
    pub up_block_types: Vec<String>,
    #[serde(default = "default_vae_channels")]
    pub block_out_channels: Vec<usize>,
    #[serde(default = "one")]
    pub layers_per_block: usize,
    #[serde(default = "silu")]
    pub act_fn: String,
    #[serde(default = "four")]
    pub latent_channels: usize,
    #[serde(default = "thirty_two_groups")]
    pub norm_num_groups: usize,
    /// The tile size of `--vae-tiling`, in pixels, as in diffusers.
    #[serde(default = "thirty_two")]
    pub sample_size: Option<usize>,
    #[serde(default = "scaling")]
    pub scaling_factor: f64,
    #[serde(default)]
    pub shift_factor: Option<Value>,
    #[serde(default)]
    pub latents_mean: Option<Value>,
    #[serde(default)]
    pub latents_std: Option<Value>,
    /// Runs a half-precision VAE in f32: ours keeps its activations in f32.
    #[serde(default = "yes")]
    pub force_upcast: bool,
    #[serde(default = "yes")]
    pub use_quant_conv: bool,
    #[serde(default = "yes")]
    pub use_post_quant_conv: bool,
    #[serde(default = "yes")]
    pub mid_block_add_attention: bool,
}

fn three() -> usize {
    3
}
fn four() -> usize {
    4
}
fn two() -> PerBlock {
    PerBlock::One(2)
}
fn one() -> usize {
    1
}
fn one_block() -> PerBlock {
    PerBlock::One(1)
}
fn eight() -> PerBlock {
    PerBlock::One(8)
}
fn cross_dim() -> PerBlock {
    PerBlock::One(1280)
}
fn thirty_two() -> Option<usize> {
    Some(32)
}
fn thirty_two_groups() -> usize {
    32
}
fn sixty_four() -> usize {
    64
}
fn one_f() -> f64 {
    1.0
}
fn eps() -> f64 {
    1e-5
}
fn yes() -> bool {
    true
}
fn no_flag() -> FlagPerBlock {
    FlagPerBlock::One(false)
}
fn silu() -> String {
    "silu".into()
}
fn positional() -> String {
    "positional".into()
}
fn default_shift() -> String {
    "default".into()
}
fn default_attention() -> String {
    "default".into()
}
fn scaling() -> f64 {
    0.18215
}
fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}
fn default_down() -> Vec<String> {
    strings(&[
        "CrossAttnDownBlock2D",
        "CrossAttnDownBlock2D",
        "CrossAttnDownBlock2D",
        "DownBlock2D",
    ])
}
fn default_up() -> Vec<String> {
    strings(&[
        "UpBlock2D",
        "CrossAttnUpBlock2D",
        "CrossAttnUpBlock2D",
        "CrossAttnUpBlock2D",
    ])
}
fn default_mid() -> Option<String> {
    Some("UNetMidBlock2DCrossAttn".into())
}
fn default_channels() -> Vec<usize> {
    vec![320, 640, 1280, 1280]
}
fn default_encoder_blocks() -> Vec<String> {
    strings(&["DownEncoderBlock2D"])
}
fn default_decoder_blocks() -> Vec<String> {
    strings(&["UpDecoderBlock2D"])
}
fn default_vae_channels() -> Vec<usize> {
    vec![64]
}

/// Reads a diffusers `config.json`, minus its `_`-prefixed bookkeeping keys
/// (`_class_name`, `_diffusers_version`, `_name_or_path`).
pub fn read_config<T: DeserializeOwned>(path: &Path) -> Result<T> {
    let text = std::fs::read_to_string(path).map_err(|e| bad(path, e.to_string()))?;
    let mut value: Value =
        serde_json::from_str(&text).map_err(|e| bad(path, format!("not JSON: {e}")))?;
    if let Value::Object(map) = &mut value {
        map.retain(|k, _| !k.starts_with('_'));
    }
    serde_json::from_value(value).map_err(|e| bad(path, format!("unexpected contents: {e}")))
}

pub(crate) fn bad(path: &Path, reason: impl Into<String>) -> Error {
    Error::BadConfig {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

/// Collects the settings a config asks for that we do not implement.
struct Refusals {
    path: PathBuf,
    reasons: Vec<String>,
}

impl Refusals {
    fn new(path: &Path) -> Self {
        Self {
            path: path.to_path_buf(),
            reasons: Vec::new(),
        }
    }

    fn unless(&mut self, ok: bool, field: &str, reason: impl std::fmt::Display) {
        if !ok {
            self.reasons.push(format!("{field}: {reason}"));
        }
    }

    /// The block lists: one entry per `block_out_channels` entry (`n`), each
    /// one of `allowed` (down, up).
    fn blocks(&mut self, n: usize, down: &[String], up: &[String], allowed: [&[&str]; 2]) {
        self.unless(
            down.len() == n && up.len() == n,
            "down_block_types/up_block_types",
            format!("need one entry per block_out_channels entry ({n})"),
        );
        for (field, kinds, allowed) in [
            ("down_block_types", down, allowed[0]),
            ("up_block_types", up, allowed[1]),
        ] {
            let verb = if allowed.len() == 1 { "is" } else { "are" };
            for (i, kind) in kinds.iter().enumerate() {
                self.unless(
                    allowed.contains(&kind.as_str()),
                    &format!("{field}[{i}]"),
                    format!("{kind} is not supported ({} {verb})", allowed.join(", ")),
                );
            }
        }
    }

    fn unset(&mut self, value: &Option<Value>, field: &str, what: &str) {
        if let Some(v) = value.as_ref().filter(|v| !v.is_null()) {
            self.reasons
                .push(format!("{field} = {v}: {what} is not supported"));
        }
    }

    fn finish(self) -> Result<()> {
        match self.reasons.is_empty() {
            true => Ok(()),
            false => Err(bad(
                &self.path,
                format!("unsupported settings: {}", self.reasons.join("; ")),
            )),
        }
    }
}

fn act_ok(act: &str) -> bool {
    matches!(act, "silu" | "swish")
}

impl UNetConfig {
    /// Reads and checks `unet/config.json`.
    pub fn from_file(path: &Path) -> Result<Self> {
        let c: Self = read_config(path)?;
        c.check(path)?;
        Ok(c)
    }

    /// Refuses, by name, every setting this UNet does not compute as
    /// diffusers does (`path` names the file).
    pub fn check(&self, path: &Path) -> Result<()> {
        let mut r = Refusals::new(path);
        let n = self.block_out_channels.len();
        r.unless(n > 0, "block_out_channels", "is empty");
        r.blocks(
            n,
            &self.down_block_types,
            &self.up_block_types,
            [
                &["CrossAttnDownBlock2D", "DownBlock2D"],
                &["CrossAttnUpBlock2D", "UpBlock2D"],
            ],
        );
        r.unless(
            matches!(
                self.mid_block_type.as_deref(),
                None | Some("UNetMidBlock2DCrossAttn")
            ),
            "mid_block_type",
            format!(
                "{:?} is not supported (UNetMidBlock2DCrossAttn or null are)",
                self.mid_block_type
            ),
        );
        r.unless(
            !self.only_cross_attention.any(),
            "only_cross_attention",
            "true is not supported",
        );
        for (field, v) in [
            ("layers_per_block", &self.layers_per_block),
            ("cross_attention_dim", &self.cross_attention_dim),
            (
                "transformer_layers_per_block",
                &self.transformer_layers_per_block,
            ),
            ("attention_head_dim", &self.attention_head_dim),
        ] {
            r.unless(
                v.len_matches(n),
                field,
                format!("needs one entry per block ({n})"),
            );
        }
        if let Some(heads) = &self.num_attention_heads {
            r.unless(
                heads.len_matches(n),
                "num_attention_heads",
                format!("needs one entry per block ({n})"),
            );
        }
        r.unless(
            matches!(self.cross_attention_dim, PerBlock::One(_)),
            "cross_attention_dim",
            "one value per block is not supported",
        );
        r.unless(
            act_ok(&self.act_fn),
            "act_fn",
            format!("{:?} is not supported (silu is)", self.act_fn),
        );
        r.unless(
            self.norm_num_groups.is_some_and(|g| g > 0),
            "norm_num_groups",
            "null (no normalisation) is not supported",
        );
        if let Some(g) = self.norm_num_groups.filter(|&g| g > 0) {
            for &c in &self.block_out_channels {
                r.unless(
                    c % g == 0,
                    "norm_num_groups",
                    format!("{g} does not divide {c} channels"),
                );
            }
        }
        r.unset(
            &self.reverse_transformer_layers_per_block,
            "reverse_transformer_layers_per_block",
            "a separate up-path layer count",
        );
        r.unset(
            &self.encoder_hid_dim,
            "encoder_hid_dim",
            "an encoder projection",
        );
        r.unset(
            &self.encoder_hid_dim_type,
            "encoder_hid_dim_type",
            "an encoder projection",
        );
        r.unless(
            !self.dual_cross_attention,
            "dual_cross_attention",
            "true is not supported",
        );
        r.unset(
            &self.class_embed_type,
            "class_embed_type",
            "class conditioning",
        );
        r.unset(
            &self.addition_embed_type,
            "addition_embed_type",
            "added conditioning (SDXL)",
        );
        r.unset(
            &self.addition_time_embed_dim,
            "addition_time_embed_dim",
            "added time conditioning (SDXL)",
        );
        r.unset(
            &self.num_class_embeds,
            "num_class_embeds",
            "class conditioning",
        );
        r.unless(
            self.resnet_time_scale_shift == "default",
            "resnet_time_scale_shift",
            format!(
                "{:?} is not supported (\"default\" is)",
                self.resnet_time_scale_shift
            ),
        );
        r.unless(
            !self.resnet_skip_time_act,
            "resnet_skip_time_act",
            "true is not supported",
        );
        r.unless(
            self.resnet_out_scale_factor.is_finite() && self.resnet_out_scale_factor != 0.0,
            "resnet_out_scale_factor",
            "must be finite and non-zero",
        );
        r.unless(
            self.mid_block_scale_factor.is_finite() && self.mid_block_scale_factor != 0.0,
            "mid_block_scale_factor",
            "must be finite and non-zero",
        );
        r.unless(
            self.time_embedding_type == "positional",
            "time_embedding_type",
            format!(
                "{:?} is not supported (\"positional\" is)",
                self.time_embedding_type
            ),
        );
        r.unset(
            &self.time_embedding_act_fn,
            "time_embedding_act_fn",
            "an activation after the time embedding",
        );
        r.unset(
            &self.timestep_post_act,
            "timestep_post_act",
            "an activation inside the time embedding",
        );
        r.unset(
            &self.time_cond_proj_dim,
            "time_cond_proj_dim",
            "timestep conditioning (LCM)",
        );
        for (field, k) in [
            ("conv_in_kernel", self.conv_in_kernel),
            ("conv_out_kernel", self.conv_out_kernel),
        ] {
            r.unless(
                k % 2 == 1,
                field,
                format!("{k}: only odd kernel sizes keep the size, as diffusers pads (k-1)/2"),
            );
        }
        r.unset(
            &self.projection_class_embeddings_input_dim,
            "projection_class_embeddings_input_dim",
            "class conditioning",
        );
        r.unless(
            self.attention_type == "default",
            "attention_type",
            format!(
                "{:?} is not supported (\"default\" is)",
                self.attention_type
            ),
        );
        r.unless(
            !self.class_embeddings_concat,
            "class_embeddings_concat",
            "true is not supported",
        );
        r.unless(
            self.mid_block_only_cross_attention != Some(true),
            "mid_block_only_cross_attention",
            "true is not supported",
        );
        r.unset(
            &self.cross_attention_norm,
            "cross_attention_norm",
            "a norm on the conditioning",
        );
        r.unless(
            self.freq_shift.is_finite() && self.norm_eps.is_finite() && self.norm_eps >= 0.0,
            "freq_shift/norm_eps",
            "must be finite",
        );
        r.finish()
    }

    /// Attention heads of block `i` (diffusers: `num_attention_heads`, else
    /// `attention_head_dim`).
    pub fn heads(&self) -> &PerBlock {
        self.num_attention_heads
            .as_ref()
            .unwrap_or(&self.attention_head_dim)
    }

    /// Channels of the time embedding.
    pub fn time_embed_dim(&self) -> usize {
        self.time_embedding_dim
            .unwrap_or(self.block_out_channels[0] * 4)
    }

    /// Groups of every GroupNorm (checked to be set).
    pub fn groups(&self) -> usize {
        self.norm_num_groups.unwrap_or(32)
    }
}

impl VaeConfig {
    /// Reads and checks `vae/config.json`.
    pub fn from_file(path: &Path) -> Result<Self> {
        let c: Self = read_config(path)?;
        c.check(path)?;
        Ok(c)
    }

    /// Refuses, by name, every setting this VAE does not compute as
    /// diffusers' Stable Diffusion pipelines do.
    pub fn check(&self, path: &Path) -> Result<()> {
        let mut r = Refusals::new(path);
        let n = self.block_out_channels.len();
        r.unless(n > 0, "block_out_channels", "is empty");
        r.blocks(
            n,
            &self.down_block_types,
            &self.up_block_types,
            [&["DownEncoderBlock2D"], &["UpDecoderBlock2D"]],
        );
        r.unless(
            act_ok(&self.act_fn),
            "act_fn",
            format!("{:?} is not supported (silu is)", self.act_fn),
        );
        r.unless(
            self.norm_num_groups > 0,
            "norm_num_groups",
            "must be positive",
        );
        for &c in &self.block_out_channels {
            r.unless(
                self.norm_num_groups > 0 && c % self.norm_num_groups == 0,
                "norm_num_groups",
                format!("{} does not divide {c} channels", self.norm_num_groups),
            );
        }
        r.unless(
            self.scaling_factor.is_finite() && self.scaling_factor > 0.0,
            "scaling_factor",
            "must be positive",
        );
        // The Stable Diffusion pipelines never read these; a VAE that needs
        // them (SD3, Flux, SDXL's) would decode wrongly here, so they are refused.
        r.unset(
            &self.shift_factor,
            "shift_factor",
            "a latent shift (SD3/Flux VAEs)",
        );
        r.unset(
            &self.latents_mean,
            "latents_mean",
            "latent statistics (SDXL-style VAEs)",
        );
        r.unset(
            &self.latents_std,
            "latents_std",
            "latent statistics (SDXL-style VAEs)",
        );
        r.unless(
            self.sample_size.is_none_or(|s| s > 0),
            "sample_size",
            "must be positive",
        );
        r.finish()
    }

    /// Image pixels per latent pixel along each side.
    pub fn factor(&self) -> usize {
        1 << (self.block_out_channels.len() - 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unet(json: &str) -> Result<UNetConfig> {
        let c: UNetConfig =
            serde_json::from_str(json).map_err(|e| bad(Path::new("c"), e.to_string()))?;
        c.check(Path::new("unet/config.json"))?;
        Ok(c)
    }

    #[test]
    fn defaults_are_diffusers_and_pass() {
        let c = unet("{}").unwrap();
        assert_eq!(c.block_out_channels, vec![320, 640, 1280, 1280]);
        assert_eq!(c.heads().get(0), 8);
        assert_eq!(c.time_embed_dim(), 1280);
        assert_eq!(c.groups(), 32);
    }

    #[test]
    fn unsupported_settings_are_refused_by_name() {
        for (json, field) in [
            (r#"{"class_embed_type": "timestep"}"#, "class_embed_type"),
            (
                r#"{"addition_embed_type": "text_time"}"#,
                "addition_embed_type",
            ),
            (
                r#"{"resnet_time_scale_shift": "scale_shift"}"#,
                "resnet_time_scale_shift",
            ),
            (
                r#"{"only_cross_attention": [true, false, false, false]}"#,
                "only_cross_attention",
            ),
            (r#"{"norm_num_groups": 48}"#, "norm_num_groups"),
            (r#"{"act_fn": "mish"}"#, "act_fn"),
            (
                r#"{"time_embedding_type": "fourier"}"#,
                "time_embedding_type",
            ),
            (
                r#"{"mid_block_type": "UNetMidBlock2DSimpleCrossAttn"}"#,
                "mid_block_type",
            ),
            (
                r#"{"down_block_types": ["DownBlock2D"]}"#,
                "down_block_types",
            ),
            (r#"{"attention_head_dim": [8, 8]}"#, "attention_head_dim"),
        ] {
            let err = unet(json).unwrap_err().to_string();
            assert!(err.contains(field), "{json}: {err}");
        }
        let v: VaeConfig = serde_json::from_str(r#"{"shift_factor": 0.1159}"#).unwrap();
        let err = v
            .check(Path::new("vae/config.json"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("shift_factor") && err.contains("vae/config.json"),
            "{err}"
        );
    }

    #[test]
    fn unknown_keys_are_refused_and_bookkeeping_keys_are_not() {
        let dir = std::env::temp_dir().join(format!("altclip-unet-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("config.json");
        std::fs::write(
            &path,
            r#"{"_class_name": "UNet2DConditionModel", "_diffusers_version": "0.42.1"}"#,
        )
        .unwrap();
        UNetConfig::from_file(&path).unwrap();
        std::fs::write(&path, r#"{"flux_capacitor": 1}"#).unwrap();
        let err = UNetConfig::from_file(&path).unwrap_err().to_string();
        assert!(err.contains("flux_capacitor"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
