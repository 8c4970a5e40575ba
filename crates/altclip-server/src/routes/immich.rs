//! immich's machine-learning API: `GET /ping` and `POST /predict`.
//!
//! immich's server sends multipart form data: `entries`, a JSON string such
//! as `{"clip":{"visual":{"modelName":"ViT-L-14__openai"}}}` or
//! `{"clip":{"textual":{"modelName":"...","options":{"language":"zh-CN"}}}}`,
//! and either an `image` file part or a `text` field. It reads back
//! `{"clip":"[0.01,...]"}` — the embedding serialised as a JSON string — plus
//! `imageHeight` and `imageWidth` for images. Bad `entries` get 422 and a
//! request with neither image nor text gets 400, as from immich's service.

use axum::extract::multipart::{MultipartError, MultipartRejection};
use axum::extract::{Multipart, State};
use axum::http::StatusCode;
use axum::Json;
use serde_json::{json, Value};

use super::Shared;
use crate::error::ApiError;
use crate::inputs::{check_text, ImageSource};

/// `GET /ping`: `pong`, immich's health check.
pub async fn ping() -> &'static str {
    "pong"
}

fn unprocessable(param: impl Into<String>, message: impl Into<String>) -> ApiError {
    ApiError::Unprocessable {
        param: param.into(),
        message: message.into(),
    }
}

fn multipart_error(field: &str, e: MultipartError) -> ApiError {
    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::TooLarge {
            param: field.to_string(),
            message: "request body is over this server's --payload-limit".into(),
        }
    } else {
        ApiError::bad(field, e.body_text())
    }
}

/// Which CLIP tower `entries` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClipType {
    Textual,
    Visual,
}

/// Parses immich's `entries`: only the `clip` task, with one of `textual` or `visual`.
pub fn parse_entries(entries: &str) -> Result<(ClipType, String), ApiError> {
    let v: Value = serde_json::from_str(entries)
        .map_err(|e| unprocessable("entries", format!("Invalid request format: {e}")))?;
    let Some(tasks) = v.as_object() else {
        return Err(unprocessable(
            "entries",
            "Invalid request format: expected a JSON object",
        ));
    };
    let mut wanted = None;
    for (task, types) in tasks {
        if task != "clip" {
            return Err(unprocessable(
                format!("entries.{task}"),
                format!(
                    "task `{task}` is not served by altclip, which serves only `clip` (smart \
                     search); turn it off in immich's machine-learning settings or give it \
                     another machine-learning URL"
                ),
            ));
        }
        let Some(types) = types.as_object() else {
            return Err(unprocessable(
                "entries.clip",
                "Invalid request format: expected an object",
            ));
        };
        for (ty, entry) in types {
            let clip_type = match ty.as_str() {
                "textual" => ClipType::Textual,
                "visual" => ClipType::Visual,
                other => {
                    return Err(unprocessable(
                        format!("entries.clip.{other}"),
                        "unknown CLIP model type; expected `textual` or `visual`",
                    ))
                }
            };
            let Some(name) = entry.get("modelName").and_then(Value::as_str) else {
                return Err(unprocessable(
                    format!("entries.clip.{ty}.modelName"),
                    "Invalid request format: missing modelName",
                ));
            };
            if wanted.replace((clip_type, name.to_string())).is_some() {
                return Err(unprocessable(
                    "entries.clip",
                    "asks for both textual and visual; send one per request as immich does",
                ));
            }
        }
    }
    wanted
        .ok_or_else(|| unprocessable("entries", "Invalid request format: no clip model requested"))
}

/// A form field's text; bytes that are not UTF-8 are refused rather than
/// replaced (which turned a garbled query into the embedding of "").
async fn utf8_field(
    field: axum::extract::multipart::Field<'_>,
    name: &str,
) -> Result<String, ApiError> {
    let bytes = field.bytes().await.map_err(|e| multipart_error(name, e))?;
    String::from_utf8(bytes.to_vec()).map_err(|e| {
        ApiError::bad(
            name,
            format!(
                "not valid UTF-8 (byte {} is not part of a UTF-8 character); send the text as UTF-8",
                e.utf8_error().valid_up_to()
            ),
        )
    })
}

/// `POST /predict`.
pub async fn predict(
    State(state): State<Shared>,
    multipart: Result<Multipart, MultipartRejection>,
) -> Result<Json<Value>, ApiError> {
    let mut multipart = multipart.map_err(|e| {
        ApiError::bad(
            "body",
            format!(
                "{}; immich sends multipart/form-data with `entries` and `image` or `text`",
                e.body_text()
            ),
        )
    })?;
    let (mut entries, mut image, mut text) = (None, None, None);
    while let Some(field) = multipart
        .next_field()
        .await
        .map_err(|e| multipart_error("body", e))?
    {
        let name = field.name().unwrap_or_default().to_string();
        match name.as_str() {
            "entries" => entries = Some(utf8_field(field, "entries").await?),
            "image" => {
                image = Some(
                    field
                        .bytes()
                        .await
                        .map_err(|e| multipart_error("image", e))?,
                )
            }
            "text" => text = Some(utf8_field(field, "text").await?),
            _ => {}
        }
    }
    let entries = entries.ok_or_else(|| {
        unprocessable(
            "entries",
            "missing form field; immich sends entries={\"clip\":{\"visual\":{\"modelName\":...}}}",
        )
    })?;
    let (clip_type, model_name) = parse_entries(&entries)?;
    tracing::debug!("immich asks for {clip_type:?} of {model_name}");
    let mut sizes = [None];
    let (vectors, _, _) = match (clip_type, image, text) {
        (ClipType::Visual, Some(bytes), _) => {
            let source = ImageSource::Bytes(bytes.to_vec());
            state
                .embed_sources(Vec::new(), vec![(0, source, "image".into())], &mut sizes)
                .await?
        }
        (ClipType::Textual, _, Some(text)) => {
            check_text(&text, "text", &state.limits)?;
            state
                .embed_sources(vec![(0, text)], Vec::new(), &mut sizes)
                .await?
        }
        (_, None, None) => {
            return Err(ApiError::bad(
                "image",
                "Either image or text must be provided",
            ))
        }
        (ClipType::Visual, None, Some(_)) => {
            return Err(ApiError::bad(
                "image",
                "entries asks for clip.visual, which needs the `image` file part",
            ))
        }
        (ClipType::Textual, Some(_), None) => {
            return Err(ApiError::bad(
                "text",
                "entries asks for clip.textual, which needs the `text` field",
            ))
        }
    };
    let embedding =
        serde_json::to_string(&vectors[0]).map_err(|e| ApiError::Internal(e.to_string()))?;
    let mut response = json!({ "clip": embedding });
    if let Some((width, height)) = sizes[0] {
        response["imageHeight"] = json!(height);
        response["imageWidth"] = json!(width);
    }
    Ok(Json(response))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_as_immich_sends_them() {
        let (t, name) =
            parse_entries(r#"{"clip":{"visual":{"modelName":"ViT-L-14__openai"}}}"#).unwrap();
        assert_eq!((t, name.as_str()), (ClipType::Visual, "ViT-L-14__openai"));
        let (t, _) = parse_entries(
            r#"{"clip":{"textual":{"modelName":"ViT-L-14__openai","options":{"language":"zh-CN"}}}}"#,
        )
        .unwrap();
        assert_eq!(t, ClipType::Textual);
        for bad in [
            "not json",
            "[]",
            r#"{"clip":{"visual":{}}}"#,
            r#"{"clip":{"audio":{"modelName":"x"}}}"#,
            r#"{"facial-recognition":{"detection":{"modelName":"buffalo_l"}}}"#,
        ] {
            let err = parse_entries(bad).unwrap_err();
            assert_eq!(
                err.status(),
                StatusCode::UNPROCESSABLE_ENTITY,
                "{bad}: {err}"
            );
            assert!(err.to_string().starts_with("entries"), "{err}");
        }
    }
}
