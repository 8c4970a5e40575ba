//! The XLM-R tokenizer: from `tokenizer.json`, or rebuilt from
//! `sentencepiece.bpe.model` exactly as transformers' `XLMRobertaTokenizer` does.

use std::path::{Path, PathBuf};

use tokenizers::models::unigram::Unigram;
use tokenizers::normalizers::Precompiled;
use tokenizers::pre_tokenizers::metaspace::{Metaspace, PrependScheme};
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::whitespace::WhitespaceSplit;
use tokenizers::processors::template::TemplateProcessing;
use tokenizers::{
    AddedToken, Tokenizer, TruncationDirection, TruncationParams, TruncationStrategy,
};

use crate::error::{Error, Result};

/// Truncation length used by FlagAI and AltDiffusion; the default here.
pub const DEFAULT_MAX_LENGTH: usize = 77;

/// Where a tokenizer was built from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenizerSource {
    /// A `tokenizer.json` file.
    TokenizerJson(PathBuf),
    /// A SentencePiece model with the fairseq id offset applied.
    SentencePiece(PathBuf),
    /// A byte-level BPE vocabulary and merges (CLIP's tokenizer), from this
    /// file (`tokenizer.json` or `vocab.json`).
    Bpe(PathBuf),
}

impl TokenizerSource {
    /// The file the tokenizer was built from.
    pub fn path(&self) -> &Path {
        match self {
            TokenizerSource::TokenizerJson(p)
            | TokenizerSource::SentencePiece(p)
            | TokenizerSource::Bpe(p) => p,
        }
    }
}

/// Turns texts into the token ids a text tower sees: `bos … eos` (`<s> … </s>`
/// for XLM-R), truncated to `max_length` tokens (special tokens included),
/// unpadded.
#[derive(Clone)]
pub struct TextTokenizer {
    inner: Tokenizer,
    source: TokenizerSource,
    /// The begin and end tokens, which truncation keeps.
    specials: (&'static str, &'static str),
    max_length: usize,
    pad_id: u32,
}

impl TextTokenizer {
    /// Loads `tokenizer.json` from `dir`, falling back to `sentencepiece.bpe.model`.
    pub fn from_dir(dir: &Path) -> Result<Self> {
        let json = dir.join("tokenizer.json");
        if json.is_file() {
            return Self::from_tokenizer_json(&json);
        }
        let spm = dir.join("sentencepiece.bpe.model");
        if spm.is_file() {
            return Self::from_sentencepiece(&spm);
        }
        Err(Error::MissingFile {
            dir: dir.to_path_buf(),
            what: "tokenizer",
            expected: "tokenizer.json or sentencepiece.bpe.model".into(),
        })
    }

    /// Loads a `tokenizers` JSON file. For XLM-R (unigram) files the
    /// normaliser and pre-tokeniser are replaced by the ones transformers 5's
    /// `XLMRobertaTokenizer` rebuilds on load (the file's precompiled charsmap,
    /// then whitespace split + `▁` metaspace), so that ids match it even for
    /// files written by older converters; this only matters for unusual
    /// whitespace such as U+0085 or trailing spaces.
    pub fn from_tokenizer_json(path: &Path) -> Result<Self> {
        let fail = |reason: String| Error::Tokenizer {
            path: path.to_path_buf(),
            reason,
        };
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let mut json: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| fail(format!("not valid JSON: {e}")))?;
        if json["model"]["type"] == "Unigram" {
            json["normalizer"] =
                find_precompiled(&json["normalizer"]).unwrap_or(serde_json::Value::Null);
            json["pre_tokenizer"] = serde_json::json!({
                "type": "Sequence",
                "pretokenizers": [
                    {"type": "WhitespaceSplit"},
                    {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "always", "split": true}
                ]
            });
        }
        let inner: Tokenizer = json
            .to_string()
            .parse()
            .map_err(|e: tokenizers::Error| fail(e.to_string()))?;
        Self::finish(inner, TokenizerSource::TokenizerJson(path.to_path_buf()))
    }

    /// Builds the XLM-R tokenizer from a SentencePiece unigram model, as
    /// transformers 5 does: vocabulary `<s> <pad> </s> <unk>`, then the pieces
    /// from id 3 on (fairseq offset +1), then `<mask>`; the model's precompiled
    /// normaliser; whitespace split + `▁` metaspace; template `<s> $A </s>`.
    pub fn from_sentencepiece(path: &Path) -> Result<Self> {
        let fail = |reason: String| Error::Tokenizer {
            path: path.to_path_buf(),
            reason,
        };
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        let model = sentencepiece_model::SentencePieceModel::from_slice(&bytes)
            .map_err(|e| fail(format!("not a SentencePiece model: {e}")))?;
        let mut vocab: Vec<(String, f64)> = ["<s>", "<pad>", "</s>", "<unk>"]
            .iter()
            .map(|t| (t.to_string(), 0.0))
            .collect();
        vocab.extend(model.pieces().iter().skip(3).map(|p| {
            (
                p.piece.clone().unwrap_or_default(),
                p.score.unwrap_or(0.0) as f64,
            )
        }));
        vocab.push(("<mask>".to_string(), 0.0));
        let unigram = Unigram::from(vocab, Some(3), false).map_err(|e| fail(e.to_string()))?;
        let mut inner = Tokenizer::new(unigram);
        let charsmap = model
            .normalizer()
            .and_then(|n| n.precompiled_charsmap.clone())
            .unwrap_or_default();
        if !charsmap.is_empty() {
            let precompiled = Precompiled::from(&charsmap).map_err(|e| fail(e.to_string()))?;
            inner
                .with_normalizer(Some(precompiled))
                .map_err(|e| fail(e.to_string()))?;
        }
        inner.with_pre_tokenizer(Some(Sequence::new(vec![
            WhitespaceSplit.into(),
            Metaspace::new('▁', PrependScheme::Always, true).into(),
        ])));
        let template = TemplateProcessing::builder()
            .try_single("<s> $A </s>")
            .and_then(|b| b.try_pair("<s> $A </s> </s> $B </s>"))
            .map_err(|e| fail(e.to_string()))?
            .special_tokens(vec![("<s>", 0), ("</s>", 2)])
            .build()
            .map_err(|e| fail(e.to_string()))?;
        inner.with_post_processor(Some(template));
        let specials = ["<s>", "<pad>", "</s>", "<unk>"]
            .into_iter()
            .map(|t| AddedToken::from(t, true))
            .chain(std::iter::once(
                AddedToken::from("<mask>", true).lstrip(true),
            ));
        inner
            .add_special_tokens(specials.collect::<Vec<_>>())
            .map_err(|e| fail(e.to_string()))?;
        Self::finish(inner, TokenizerSource::SentencePiece(path.to_path_buf()))
    }

    fn finish(inner: Tokenizer, source: TokenizerSource) -> Result<Self> {
        let Some(pad_id) = inner.token_to_id("<pad>") else {
            return Err(Error::Tokenizer {
                path: source.path().to_path_buf(),
                reason: "the vocabulary has no <pad> token; this is not an XLM-R tokenizer".into(),
            });
        };
        Self::with_specials(inner, source, ("<s>", "</s>"), pad_id, DEFAULT_MAX_LENGTH)
    }

    /// Wraps a `tokenizers` tokenizer whose post-processor puts `specials`
    /// (begin, end) around each text, e.g. CLIP's BPE tokenizer; batches are
    /// padded with `pad_id` by the model input builder, not here.
    pub fn with_specials(
        mut inner: Tokenizer,
        source: TokenizerSource,
        specials: (&'static str, &'static str),
        pad_id: u32,
        max_length: usize,
    ) -> Result<Self> {
        inner.with_padding(None);
        let mut tok = Self {
            inner,
            source,
            specials,
            max_length,
            pad_id,
        };
        tok.set_max_length(max_length)?;
        Ok(tok)
    }

    /// Sets the truncation length (special tokens included).
    pub fn set_max_length(&mut self, max_length: usize) -> Result<()> {
        let (bos, eos) = self.specials;
        if max_length < 2 {
            return Err(Error::Invalid(format!(
                "max length {max_length} leaves no room for {bos} and {eos}"
            )));
        }
        self.inner
            .with_truncation(Some(TruncationParams {
                max_length,
                strategy: TruncationStrategy::LongestFirst,
                direction: TruncationDirection::Right,
                stride: 0,
            }))
            .map_err(|e| Error::Tokenizer {
                path: self.source.path().to_path_buf(),
                reason: e.to_string(),
            })?;
        self.max_length = max_length;
        Ok(())
    }

    /// The truncation length.
    pub fn max_length(&self) -> usize {
        self.max_length
    }

    /// The id of `<pad>`.
    pub fn pad_id(&self) -> u32 {
        self.pad_id
    }

    /// Where the tokenizer came from.
    pub fn source(&self) -> &TokenizerSource {
        &self.source
    }

    /// Number of entries in the vocabulary, added tokens included.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// Token ids per text, special tokens included, truncated, not padded.
    pub fn encode(&self, texts: &[&str]) -> Result<Vec<Vec<u32>>> {
        let encodings =
            self.inner
                .encode_batch(texts.to_vec(), true)
                .map_err(|e| Error::Tokenizer {
                    path: self.source.path().to_path_buf(),
                    reason: e.to_string(),
                })?;
        Ok(encodings
            .into_iter()
            .map(|e| e.get_ids().to_vec())
            .collect())
    }
}

/// The `Precompiled` step of a normaliser, alone or inside a `Sequence`.
fn find_precompiled(normalizer: &serde_json::Value) -> Option<serde_json::Value> {
    match normalizer["type"].as_str()? {
        "Precompiled" => Some(normalizer.clone()),
        "Sequence" => normalizer["normalizers"]
            .as_array()?
            .iter()
            .find_map(find_precompiled),
        _ => None,
    }
}
