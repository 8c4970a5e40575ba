//! `POST /classify` (zero-shot classification of an image against labels,
//! with prompt templates) and `POST /rank` (clip-as-service's rank: one query
//! against candidates, scored by a softmax over the candidates).

use axum::extract::State;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use altclip::zeroshot::{Templates, EN_TEMPLATES, ZH_TEMPLATES};

use super::{JsonBody, Shared};
use crate::error::ApiError;
use crate::inputs::{check_count, check_text, Item};

/// Most prompt templates per request.
pub const MAX_TEMPLATES: usize = 64;

/// Prompt language of the built-in template sets.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Language {
    /// Chinese templates for labels with CJK characters, English otherwise.
    #[default]
    Auto,
    Zh,
    En,
    /// The bare label, no template.
    None,
}

/// The `/classify` request.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClassifyRequest {
    /// data: URI or base64 (or file:// / URL when allowed).
    pub image: String,
    /// Candidate labels, in Chinese, English or both.
    pub labels: Vec<String>,
    /// Built-in template set, used unless `templates` is given.
    #[serde(default)]
    pub language: Language,
    /// Custom templates, each with `{c}` where the label goes.
    #[serde(default)]
    pub templates: Option<Vec<String>>,
    /// How many labels to return (default: all).
    #[serde(default)]
    pub top_k: Option<usize>,
}

fn templates(req: &ClassifyRequest) -> Result<Templates, ApiError> {
    let list = |t: &[&str]| Templates::List(t.iter().map(|s| s.to_string()).collect());
    if let Some(custom) = &req.templates {
        if custom.is_empty() || custom.len() > MAX_TEMPLATES {
            return Err(ApiError::bad(
                "templates",
                format!("give 1 to {MAX_TEMPLATES} templates, or omit it to use `language`"),
            ));
        }
        if let Some(i) = custom.iter().position(|t| !t.contains("{c}")) {
            return Err(ApiError::bad(
                format!("templates[{i}]"),
                "has no {c} placeholder for the label",
            ));
        }
        return Ok(Templates::List(custom.clone()));
    }
    Ok(match req.language {
        Language::Auto => Templates::Auto,
        Language::Zh => list(ZH_TEMPLATES),
        Language::En => list(EN_TEMPLATES),
        Language::None => list(&["{c}"]),
    })
}

/// `POST /classify`: `{"image": ..., "labels": ["猫", "狗"], "language"?, "templates"?, "top_k"?}`.
pub async fn classify(
    State(state): State<Shared>,
    JsonBody(req): JsonBody<ClassifyRequest>,
) -> Result<Json<Value>, ApiError> {
    let limits = &state.limits;
    check_count(req.labels.len(), "labels", limits)?;
    for (i, label) in req.labels.iter().enumerate() {
        let field = format!("labels[{i}]");
        if label.trim().is_empty() {
            return Err(ApiError::bad(field, "is empty"));
        }
        check_text(label, &field, limits)?;
    }
    let templates = templates(&req)?;
    let labels: Vec<String> = req.labels.iter().map(|l| l.trim().to_string()).collect();
    let k = req.top_k.unwrap_or(labels.len()).clamp(1, labels.len());
    let (image, classifier) = tokio::join!(
        state.embed(vec![Item::Image(req.image)], "image"),
        state.classifier(labels, templates)
    );
    let image = image.map_err(rename_single("image"))?;
    let classifier = classifier?;
    let scored = classifier.top_k(&image.vectors[0], k);
    let (width, height) = image.sizes[0].unwrap_or_default();
    Ok(Json(json!({
        "model": state.model_name,
        "results": scored,
        "image": {"width": width, "height": height},
    })))
}

/// Errors on a one-item list name the field itself (`image`, not `image[0]`).
fn rename_single(field: &'static str) -> impl Fn(ApiError) -> ApiError {
    move |e| e.map_param(|p| p.replacen(&format!("{field}[0]"), field, 1))
}

/// The `/rank` request.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RankRequest {
    /// `{"image": ...}` or `{"text": ...}`.
    pub query: Value,
    /// `{"text": ...}` / `{"image": ...}` items to score against the query.
    pub candidates: Vec<Value>,
}

/// `POST /rank`: candidates re-ranked by `clip_score`, the softmax over the
/// candidates of `exp(logit_scale) · cosine` (what clip-as-service returns).
pub async fn rank(
    State(state): State<Shared>,
    JsonBody(req): JsonBody<RankRequest>,
) -> Result<Json<Value>, ApiError> {
    let query = Item::parse(&req.query, "query")?;
    check_count(req.candidates.len(), "candidates", &state.limits)?;
    let candidates = req
        .candidates
        .iter()
        .enumerate()
        .map(|(i, v)| Item::parse(v, &format!("candidates[{i}]")))
        .collect::<Result<Vec<_>, _>>()?;
    let (q, c) = tokio::join!(
        state.embed(vec![query], "query"),
        state.embed(candidates, "candidates")
    );
    let (q, c) = (q.map_err(rename_single("query"))?, c?);
    let probs = altclip::softmax_similarity(
        &q.vectors,
        &c.vectors,
        state.clip.logit_scale(),
        state.clip.device(),
    )
    .map_err(|e| ApiError::Internal(e.to_string()))?
    .remove(0);
    let mut matches: Vec<Value> = c
        .vectors
        .iter()
        .zip(&probs)
        .enumerate()
        .map(|(i, (v, p))| {
            let cosine: f32 = v.iter().zip(&q.vectors[0]).map(|(a, b)| a * b).sum();
            let mut m = json!({"index": i, "clip_score": p, "cosine": cosine});
            if let Some(Value::String(t)) = req.candidates[i].get("text") {
                m["text"] = json!(t);
            }
            m
        })
        .collect();
    matches.sort_by(|a, b| {
        b["clip_score"]
            .as_f64()
            .partial_cmp(&a["clip_score"].as_f64())
            .unwrap_or(std::cmp::Ordering::Equal)
            .then(a["index"].as_u64().cmp(&b["index"].as_u64()))
    });
    Ok(Json(json!({"model": state.model_name, "matches": matches})))
}
