//! Operational routes: the web page, health, model info, Prometheus metrics
//! and the OpenAPI description.

use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::State;
use axum::http::header;
use axum::response::{Html, IntoResponse};
use axum::Json;
use serde_json::{json, Value};

use super::Shared;

/// The web page, embedded at compile time (no build step).
pub const INDEX_HTML: &str = include_str!("../web/index.html");
/// The hand-written OpenAPI 3 description of every route.
pub const OPENAPI_JSON: &str = include_str!("../openapi.json");

/// `GET /`.
pub async fn page() -> Html<&'static str> {
    Html(INDEX_HTML)
}

/// `GET /health`: 200 with the time, like infinity's.
pub async fn health() -> Json<Value> {
    let unix = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    Json(json!({"status": "ok", "unix": unix}))
}

/// `GET /info`: model, dimensions, dtype, device, limits and batching.
pub async fn info(State(state): State<Shared>) -> Json<Value> {
    let clip = &state.clip;
    let index = state
        .library
        .as_ref()
        .map(|l| json!({"db": l.db().display().to_string(), "files": l.files()}));
    Json(json!({
        "model": state.model_name,
        "model_dir": clip.files().dir.display().to_string(),
        "dim": clip.embedding_dim(),
        "dtype": format!("{:?}", clip.dtype()).to_lowercase(),
        "device": if clip.device().is_cpu() { "cpu".to_string() } else { format!("{:?}", clip.device()) },
        "linear_layers": clip.plan().describe(),
        "threads": rayon::current_num_threads(),
        "parameters": clip.model().parameter_count(),
        "max_length": clip.tokenizer().max_length(),
        "image_size": clip.config().vision_config.image_size,
        "logit_scale": clip.logit_scale(),
        "limits": state.limits,
        "batching": state.batcher.config(),
        "index": index,
        "immich": {
            "clip_model_name": immich_model_name(clip.embedding_dim()),
        },
        "version": env!("CARGO_PKG_VERSION"),
    }))
}

/// A CLIP model name immich accepts whose embeddings have `dim` dimensions:
/// immich sizes its vector column from the name it is configured with.
pub fn immich_model_name(dim: usize) -> Option<&'static str> {
    match dim {
        512 => Some("ViT-B-32__openai"),
        640 => Some("ViT-B-16-plus-240__laion400m_e32"),
        768 => Some("ViT-L-14__openai"),
        1024 => Some("ViT-H-14__laion2b-s32b-b79k"),
        _ => None,
    }
}

/// `GET /metrics`: Prometheus text exposition.
pub async fn metrics(State(state): State<Shared>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(state.batcher.depth()),
    )
}

/// `GET /openapi.json`.
pub async fn openapi() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI_JSON)
}
