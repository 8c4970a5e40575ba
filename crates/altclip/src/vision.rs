//! The vision tower: a CLIP ViT (`vision_model.*` keys), pooled as
//! `post_layernorm(x[:, 0])`.

use candle_core::{Tensor, D};

use crate::config::VisionConfig;
use crate::error::{Error, Result};
use crate::nn::{ClipEncoderLayer, ClipLayerDims, LayerNorm, Linear};
use crate::weights::Weights;

/// `AltCLIPVisionTransformer`.
pub struct VisionTower {
    /// Patch embedding as a matrix `[hidden, C·P·P]`: a stride-P conv without bias.
    patch: Linear,
    class_embedding: Tensor,
    position_embedding: Tensor,
    pre_layrnorm: LayerNorm,
    layers: Vec<ClipEncoderLayer>,
    post_layernorm: LayerNorm,
    cfg: VisionConfig,
}

impl VisionTower {
    /// Loads from a view positioned at the `vision_model` prefix.
    pub fn load(w: &Weights, cfg: &VisionConfig) -> Result<Self> {
        let (h, c, p) = (cfg.hidden_size, cfg.num_channels, cfg.patch_size);
        let e = w.pp("embeddings");
        let patch = e.get(&[h, c, p, p], "patch_embedding.weight")?;
        let dims = ClipLayerDims {
            hidden: h,
            intermediate: cfg.intermediate_size,
            heads: cfg.num_attention_heads,
            act: cfg.hidden_act,
            eps: cfg.layer_norm_eps,
        };
        let layers = ClipEncoderLayer::load_stack(w, dims, cfg.num_hidden_layers)?;
        Ok(Self {
            patch: Linear::from_parts(
                patch.reshape((h, c * p * p))?,
                None,
                w.float_linear().linear_kernel(),
            )?,
            class_embedding: e.get(&[h], "class_embedding")?,
            position_embedding: e.get(&[cfg.num_positions(), h], "position_embedding.weight")?,
            pre_layrnorm: LayerNorm::load(&w.pp("pre_layrnorm"), h, cfg.layer_norm_eps)?,
            layers,
            post_layernorm: LayerNorm::load(&w.pp("post_layernorm"), h, cfg.layer_norm_eps)?,
            cfg: cfg.clone(),
        })
    }

    /// Patchify + class token + positions: `[B, C, S, S]` to `[B, N+1, hidden]`.
    fn embed(&self, pixel_values: &Tensor) -> Result<Tensor> {
        let (b, c, hgt, wid) = pixel_values.dims4()?;
        let (s, p, g) = (
            self.cfg.image_size,
            self.cfg.patch_size,
            self.cfg.grid_size(),
        );
        if c != self.cfg.num_channels || hgt != s || wid != s {
            return Err(Error::Invalid(format!(
                "pixel values have shape [{b}, {c}, {hgt}, {wid}] but the vision tower expects \
                 [B, {}, {s}, {s}]; the preprocessor's crop size must match vision_config.image_size",
                self.cfg.num_channels
            )));
        }
        let pixel_values = pixel_values.to_dtype(self.class_embedding.dtype())?;
        // Row-major patch order, each patch flattened as (channel, row, col) like the conv kernel.
        let patches = pixel_values
            .reshape((b, c, g, p, g, p))?
            .permute((0, 2, 4, 1, 3, 5))?
            .contiguous()?
            .reshape((b * g * g, c * p * p))?;
        let x = self.patch.forward(&patches)?.reshape((b, g * g, ()))?;
        let cls =
            self.class_embedding
                .reshape((1, 1, ()))?
                .broadcast_as((b, 1, self.cfg.hidden_size))?;
        let x = Tensor::cat(&[&cls, &x], 1)?;
        Ok(x.broadcast_add(&self.position_embedding)?)
    }

    /// The last hidden state `[B, N+1, hidden]`, before `post_layernorm`.
    pub fn last_hidden_state(&self, pixel_values: &Tensor) -> Result<Tensor> {
        let mut x = self.pre_layrnorm.forward(&self.embed(pixel_values)?)?;
        for layer in &self.layers {
            x = layer.forward(&x, None)?;
        }
        Ok(x)
    }

    /// `pooler_output`: `post_layernorm` of the class token, `[B, hidden]`.
    pub fn forward(&self, pixel_values: &Tensor) -> Result<Tensor> {
        let x = self.last_hidden_state(pixel_values)?;
        let cls = x.narrow(D::Minus2, 0, 1)?.squeeze(1)?;
        self.post_layernorm.forward(&cls)
    }
}
