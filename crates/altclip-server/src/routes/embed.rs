//! `POST /v1/embeddings` (OpenAI's shape, with infinity's `modality` for
//! images) and `POST /embed` (a mixed list of texts and images).

use axum::extract::State;
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{JsonBody, Shared};
use crate::error::ApiError;
use crate::inputs::{encode_base64, kind, Item};

/// What a bare string in `input` is.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Modality {
    #[default]
    Text,
    Image,
}

/// How vectors are written.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum EncodingFormat {
    #[default]
    Float,
    /// Base64 of little-endian f32 bytes, as OpenAI's clients decode it.
    Base64,
}

/// The OpenAI embeddings request; unknown fields (`user`, ...) are ignored.
#[derive(Debug, Deserialize)]
pub struct EmbeddingsRequest {
    pub input: Value,
    #[serde(default)]
    pub model: Option<String>,
    #[serde(default)]
    pub modality: Modality,
    #[serde(default)]
    pub encoding_format: EncodingFormat,
    #[serde(default)]
    pub dimensions: Option<usize>,
}

/// `input`: a string, a list of strings, or `{"text"}` / `{"image"}` objects.
fn parse_input(input: &Value, modality: Modality, field: &str) -> Result<Vec<Item>, ApiError> {
    let one = |v: &Value, name: &str| -> Result<Item, ApiError> {
        match v {
            Value::String(s) => Ok(match modality {
                Modality::Text => Item::Text(s.clone()),
                Modality::Image => Item::Image(s.clone()),
            }),
            Value::Object(_) => Item::parse(v, name),
            other => Err(ApiError::bad(
                name,
                format!(
                    "expected a string or {{\"text\"}}/{{\"image\"}} object, got {}",
                    kind(other)
                ),
            )),
        }
    };
    match input {
        Value::Array(list) => list
            .iter()
            .enumerate()
            .map(|(i, v)| one(v, &format!("{field}[{i}]")))
            .collect(),
        other => Ok(vec![one(other, field)?]),
    }
}

/// A vector as the response carries it. Floats are written as f32 (the
/// shortest text that reads back to the same f32), not widened to f64.
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum Encoded {
    Float(Vec<f32>),
    Base64(String),
}

fn encode(v: Vec<f32>, format: EncodingFormat) -> Encoded {
    match format {
        EncodingFormat::Float => Encoded::Float(v),
        EncodingFormat::Base64 => {
            let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
            Encoded::Base64(encode_base64(&bytes))
        }
    }
}

/// Token and image counts of a request.
#[derive(Debug, Serialize)]
pub struct Usage {
    pub prompt_tokens: usize,
    pub total_tokens: usize,
    pub images: usize,
}

/// One row of the OpenAI response.
#[derive(Debug, Serialize)]
pub struct EmbeddingData {
    pub object: &'static str,
    pub embedding: Encoded,
    pub index: usize,
}

/// The OpenAI embeddings response.
#[derive(Debug, Serialize)]
pub struct EmbeddingsResponse {
    pub object: &'static str,
    pub data: Vec<EmbeddingData>,
    pub model: String,
    pub usage: Usage,
}

/// `POST /v1/embeddings` and `POST /embeddings`.
pub async fn openai(
    State(state): State<Shared>,
    JsonBody(req): JsonBody<EmbeddingsRequest>,
) -> Result<Json<EmbeddingsResponse>, ApiError> {
    let dim = state.clip.embedding_dim();
    if let Some(d) = req.dimensions {
        if d != dim {
            return Err(ApiError::bad(
                "dimensions",
                format!("this model's embeddings have {dim} dimensions and cannot be shortened; omit `dimensions` or pass {dim}"),
            ));
        }
    }
    let items = parse_input(&req.input, req.modality, "input")?;
    let out = state.embed(items, "input").await?;
    let data = out
        .vectors
        .into_iter()
        .enumerate()
        .map(|(index, v)| EmbeddingData {
            object: "embedding",
            embedding: encode(v, req.encoding_format),
            index,
        })
        .collect();
    Ok(Json(EmbeddingsResponse {
        object: "list",
        data,
        model: req.model.unwrap_or_else(|| state.model_name.clone()),
        usage: Usage {
            prompt_tokens: out.tokens,
            total_tokens: out.tokens,
            images: out.images,
        },
    }))
}

/// The `/embed` request: `{"input": [...]}` or a bare list.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum MixedRequest {
    List(Vec<Value>),
    Object {
        input: Vec<Value>,
        #[serde(default)]
        encoding_format: EncodingFormat,
    },
}

/// One row of the `/embed` response.
#[derive(Debug, Serialize)]
pub struct MixedData {
    pub index: usize,
    pub modality: &'static str,
    pub embedding: Encoded,
}

/// The `/embed` response.
#[derive(Debug, Serialize)]
pub struct MixedResponse {
    pub model: String,
    pub dim: usize,
    pub data: Vec<MixedData>,
    pub usage: Usage,
}

/// `POST /embed`: `[{"text": ...}, {"image": ...}, ...]`.
pub async fn mixed(
    State(state): State<Shared>,
    JsonBody(req): JsonBody<Value>,
) -> Result<Json<MixedResponse>, ApiError> {
    let req: MixedRequest = serde_json::from_value(req).map_err(|_| {
        ApiError::bad(
            "input",
            "expected a list of {\"text\"}/{\"image\"} items, or {\"input\": [...]}",
        )
    })?;
    let (list, format) = match req {
        MixedRequest::List(l) => (l, EncodingFormat::Float),
        MixedRequest::Object {
            input,
            encoding_format,
        } => (input, encoding_format),
    };
    let items = list
        .iter()
        .enumerate()
        .map(|(i, v)| Item::parse(v, &format!("input[{i}]")))
        .collect::<Result<Vec<_>, _>>()?;
    let kinds: Vec<&'static str> = items
        .iter()
        .map(|i| match i {
            Item::Text(_) => "text",
            Item::Image(_) => "image",
        })
        .collect();
    let out = state.embed(items, "input").await?;
    let data = out
        .vectors
        .into_iter()
        .zip(kinds)
        .enumerate()
        .map(|(index, (v, modality))| MixedData {
            index,
            modality,
            embedding: encode(v, format),
        })
        .collect();
    Ok(Json(MixedResponse {
        model: state.model_name.clone(),
        dim: state.clip.embedding_dim(),
        data,
        usage: Usage {
            prompt_tokens: out.tokens,
            total_tokens: out.tokens,
            images: out.images,
        },
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn floats_are_written_as_f32() {
        let text = serde_json::to_string(&encode(vec![0.1], EncodingFormat::Float)).unwrap();
        assert_eq!(text, "[0.1]");
    }

    #[test]
    fn inputs_follow_modality_and_accept_objects() {
        let v = json!(["a", {"image": "AAAA"}]);
        let items = parse_input(&v, Modality::Text, "input").unwrap();
        assert_eq!(
            items,
            vec![Item::Text("a".into()), Item::Image("AAAA".into())]
        );
        let items = parse_input(&json!("AAAA"), Modality::Image, "input").unwrap();
        assert_eq!(items, vec![Item::Image("AAAA".into())]);
        let err = parse_input(&json!(["a", 5]), Modality::Text, "input").unwrap_err();
        assert!(err.to_string().starts_with("input[1]: "), "{err}");
    }

    #[test]
    fn base64_encoding_is_little_endian_f32() {
        let Encoded::Base64(text) = encode(vec![1.0, -2.5], EncodingFormat::Base64) else {
            panic!("not base64");
        };
        let bytes =
            base64::Engine::decode(&base64::engine::general_purpose::STANDARD, text).unwrap();
        assert_eq!(bytes.len(), 8);
        assert_eq!(f32::from_le_bytes(bytes[4..8].try_into().unwrap()), -2.5);
    }
}
