//! The text tower: an XLM-RoBERTa encoder (`text_model.roberta`) and AltCLIP's
//! head, `transformation(pre_LN(h))` on the `<s>` token.

use candle_core::{Device, Tensor};

use crate::config::TextConfig;
use crate::error::{Error, Result};
use crate::nn::{Attention, AttentionKeys, LayerNorm, Linear};
use crate::weights::{Table, Weights};

/// Token ids of a batch, padded to the longest sequence, with the tensors the
/// encoder needs. Built by [`TextInputs::new`].
#[derive(Debug, Clone)]
pub struct TextInputs {
    /// `[B, L]` u32 token ids, right-padded with the pad id.
    pub input_ids: Tensor,
    /// `[B, L]` u32 position ids, fairseq style.
    pub position_ids: Tensor,
    /// `[B, 1, 1, L]` additive attention mask in f32.
    pub mask: Tensor,
}

impl TextInputs {
    /// Pads `ids` (special tokens included) to the longest sequence. See
    /// [`TextInputs::padded_to`].
    pub fn new(ids: &[Vec<u32>], pad_id: u32, device: &Device) -> Result<Self> {
        let longest = ids.iter().map(Vec::len).max().unwrap_or(0);
        Self::padded_to(ids, longest, pad_id, device)
    }

    /// Pads `ids` to `len` tokens (at least the longest sequence). As in
    /// transformers, the mask covers each sequence's own tokens, so a literal
    /// `<pad>` in a text is attended to; positions follow fairseq's
    /// `make_positions` over `ids != pad`, as `create_position_ids_from_input_ids`
    /// does: the n-th non-pad token gets `pad + n`, pad ids get `pad`.
    pub fn padded_to(ids: &[Vec<u32>], len: usize, pad_id: u32, device: &Device) -> Result<Self> {
        let b = ids.len();
        let l = ids.iter().map(Vec::len).max().unwrap_or(0).max(len);
        if b == 0 || l == 0 {
            return Err(Error::Invalid(
                "cannot encode an empty batch of token ids".into(),
            ));
        }
        let mut input = vec![pad_id; b * l];
        let mut pos = vec![pad_id; b * l];
        let mut mask = vec![f32::MIN; b * l];
        for (row, seq) in ids.iter().enumerate() {
            let mut n = 0;
            for (col, &id) in seq.iter().enumerate() {
                input[row * l + col] = id;
                mask[row * l + col] = 0.0;
                if id != pad_id {
                    n += 1;
                    pos[row * l + col] = pad_id + n;
                }
            }
        }
        Ok(Self {
            input_ids: Tensor::from_vec(input, (b, l), device)?,
            position_ids: Tensor::from_vec(pos, (b, l), device)?,
            mask: Tensor::from_vec(mask, (b, 1, 1, l), device)?,
        })
    }
}

struct Embeddings {
    /// Read row by row from the mapped file where it can be (see [`Weights::table`]).
    word: Table,
    position: Tensor,
    token_type: Tensor,
    layer_norm: LayerNorm,
}

impl Embeddings {
    fn load(w: &Weights, cfg: &TextConfig) -> Result<Self> {
        let h = cfg.hidden_size;
        let token_type = w.get(&[cfg.type_vocab_size, h], "token_type_embeddings.weight")?;
        Ok(Self {
            word: w.table(cfg.vocab_size, h, "word_embeddings.weight")?,
            position: w.get(
                &[cfg.max_position_embeddings, h],
                "position_embeddings.weight",
            )?,
            // token_type_ids are always zero, so row 0 is added to every token.
            token_type: token_type.get(0)?,
            layer_norm: LayerNorm::load(&w.pp("LayerNorm"), h, cfg.layer_norm_eps)?,
        })
    }

    fn forward(&self, inputs: &TextInputs) -> Result<Tensor> {
        let (b, l) = inputs.input_ids.dims2()?;
        let lookup = |table: &Tensor, ids: &Tensor| -> Result<Tensor> {
            Ok(table
                .index_select(&ids.flatten_all()?, 0)?
                .reshape((b, l, ()))?)
        };
        let word = self.word.rows(&inputs.input_ids)?.reshape((b, l, ()))?;
        let x = (word + lookup(&self.position, &inputs.position_ids)?)?
            .broadcast_add(&self.token_type)?;
        self.layer_norm.forward(&x)
    }
}

/// One post-LN BERT-style block.
struct Layer {
    attention: Attention,
    attention_norm: LayerNorm,
    intermediate: Linear,
    output: Linear,
    output_norm: LayerNorm,
    act: crate::config::Activation,
}

impl Layer {
    fn load(w: &Weights, cfg: &TextConfig) -> Result<Self> {
        let h = cfg.hidden_size;
        let keys = AttentionKeys {
            q: "self.query",
            k: "self.key",
            v: "self.value",
            out: "output.dense",
        };
        Ok(Self {
            attention: Attention::load(&w.pp("attention"), &keys, h, cfg.num_attention_heads)?,
            attention_norm: LayerNorm::load(
                &w.pp("attention.output.LayerNorm"),
                h,
                cfg.layer_norm_eps,
            )?,
            intermediate: Linear::load(&w.pp("intermediate.dense"), h, cfg.intermediate_size)?,
            output: Linear::load(&w.pp("output.dense"), cfg.intermediate_size, h)?,
            output_norm: LayerNorm::load(&w.pp("output.LayerNorm"), h, cfg.layer_norm_eps)?,
            act: cfg.hidden_act,
        })
    }

    fn forward(&self, x: &Tensor, mask: &Tensor) -> Result<Tensor> {
        let a = self.attention.forward_add(x, Some(mask), Some(x))?;
        let a = self.attention_norm.forward(&a)?;
        let h = self.intermediate.forward_fused(&a, Some(self.act), None)?;
        self.output_norm
            .forward(&self.output.forward_fused(&h, None, Some(&a))?)
    }
}

/// The XLM-RoBERTa encoder without a pooler (`roberta.*` keys).
pub struct XlmRoberta {
    embeddings: Embeddings,
    layers: Vec<Layer>,
}

impl XlmRoberta {
    /// Loads from a view positioned at the `roberta` prefix.
    pub fn load(w: &Weights, cfg: &TextConfig) -> Result<Self> {
        let prefix = w.pick_prefix(
            &["encoder.layer", "encoder.layers"],
            "0.attention.self.query.weight",
        );
        let layers = (0..cfg.num_hidden_layers)
            .map(|i| Layer::load(&w.pp(format!("{prefix}.{i}")), cfg))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            embeddings: Embeddings::load(&w.pp("embeddings"), cfg)?,
            layers,
        })
    }

    /// The last hidden state `[B, L, hidden]`.
    pub fn forward(&self, inputs: &TextInputs) -> Result<Tensor> {
        self.forward_layers(inputs, self.layers.len())
    }

    /// The hidden state after the first `n` layers (`hidden_states[n]` in
    /// transformers; `n` = the layer count gives the last hidden state).
    pub fn forward_layers(&self, inputs: &TextInputs, n: usize) -> Result<Tensor> {
        let mask = inputs.mask.to_dtype(self.embeddings.position.dtype())?;
        let mut x = self.embeddings.forward(inputs)?;
        for layer in self.layers.iter().take(n) {
            x = layer.forward(&x, &mask)?;
        }
        Ok(x)
    }

    /// The number of encoder layers.
    pub fn num_layers(&self) -> usize {
        self.layers.len()
    }
}

/// `AltCLIPTextModel`: XLM-R, then `pre_LN` and `transformation` on token 0.
pub struct TextTower {
    roberta: XlmRoberta,
    pre_ln: LayerNorm,
    transformation: Linear,
}

impl TextTower {
    /// Loads from a view positioned at the `text_model` prefix.
    pub fn load(w: &Weights, cfg: &TextConfig) -> Result<Self> {
        Self::load_parts(&w.pp("roberta"), w, cfg)
    }

    /// Loads the encoder from `roberta` (a view at the XLM-R keys) and
    /// `pre_LN` / `transformation` from `head`: for a student built from a
    /// plain XLM-R checkpoint plus a freshly initialised head.
    pub fn load_parts(roberta: &Weights, head: &Weights, cfg: &TextConfig) -> Result<Self> {
        Ok(Self {
            roberta: XlmRoberta::load(roberta, cfg)?,
            pre_ln: LayerNorm::load(&head.pp("pre_LN"), cfg.hidden_size, cfg.layer_norm_eps)?,
            transformation: Linear::load(
                &head.pp("transformation").float_linear(),
                cfg.hidden_size,
                cfg.project_dim,
            )?,
        })
    }

    /// The shared encoder, for heads other than AltCLIP's.
    pub fn roberta(&self) -> &XlmRoberta {
        &self.roberta
    }

    /// `pooler_output`: `transformation(pre_LN(h))[:, 0]`, `[B, project_dim]`.
    pub fn forward(&self, inputs: &TextInputs) -> Result<Tensor> {
        let h = self.roberta.forward(inputs)?;
        // Only token 0 is used; LN and the projection are per-token, so slice first.
        let cls = h.narrow(1, 0, 1)?;
        let out = self.transformation.forward(&self.pre_ln.forward(&cls)?)?;
        Ok(out.squeeze(1)?)
    }
}
