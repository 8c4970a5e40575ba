//! The HTTP surface: one module per dialect, and the layers every request
//! goes through (metrics, API key, admission control, body limit).

pub mod classify;
pub mod embed;
pub mod immich;
pub mod ops;
pub mod search;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use axum::body::{Body, Bytes};
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, FromRequest, MatchedPath, Query, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde::de::DeserializeOwned;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error::ApiError;
use crate::state::AppState;

/// Shared state as handlers receive it.
pub type Shared = Arc<AppState>;

/// Every route. Inference routes count against --max-concurrent-requests;
/// all but `/`, `/health` and `/ping` need the API key when one is set.
pub fn router(state: Shared) -> Router {
    let limit = state.limits.payload_limit;
    let inference = Router::new()
        .route("/v1/embeddings", post(embed::openai))
        .route("/embeddings", post(embed::openai))
        .route("/embed", post(embed::mixed))
        .route("/classify", post(classify::classify))
        .route("/rank", post(classify::rank))
        .route("/search", post(search::search))
        .route("/predict", post(immich::predict))
        .route_layer(middleware::from_fn_with_state(state.clone(), admit))
        .route_layer(middleware::from_fn_with_state(state.clone(), receive));
    let other = Router::new()
        .route("/info", get(ops::info))
        .route("/metrics", get(ops::metrics))
        .route("/openapi.json", get(ops::openapi))
        .route("/thumb/{id}", get(search::thumb))
        .route("/video/{id}", get(search::video));
    let protected = inference
        .merge(other)
        .route_layer(middleware::from_fn_with_state(state.clone(), authorize));
    Router::new()
        .route("/", get(ops::page))
        .route("/health", get(ops::health))
        .route("/ping", get(immich::ping))
        .merge(protected)
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(limit))
        .layer(middleware::from_fn_with_state(state.clone(), record))
        .with_state(state)
}

async fn not_found(req: Request) -> ApiError {
    ApiError::NotFound(format!(
        "no route {} {}; see GET /openapi.json",
        req.method(),
        req.uri().path()
    ))
}

/// Counts every request by route and status, with its latency.
async fn record(State(state): State<Shared>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |p| p.as_str().to_string());
    let start = Instant::now();
    let _in_flight = state.metrics.enter();
    let response = next.run(req).await;
    state
        .metrics
        .record_request(&route, response.status().as_u16(), start.elapsed());
    response
}

/// Checks `Authorization: Bearer KEY` (or `?api_key=KEY`, which `<img>` tags
/// can send) when --api-key is set.
async fn authorize(State(state): State<Shared>, req: Request, next: Next) -> Response {
    if let Some(key) = &state.api_key {
        let bearer = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim);
        let query = Query::<HashMap<String, String>>::try_from_uri(req.uri())
            .ok()
            .and_then(|Query(q)| q.get("api_key").cloned());
        let ok = [bearer, query.as_deref()]
            .into_iter()
            .flatten()
            .any(|k| constant_time_eq(k.as_bytes(), key.as_bytes()));
        if !ok {
            return ApiError::Unauthorized.into_response();
        }
    }
    next.run(req).await
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Reads the whole body (within `--body-timeout` and the byte budget)
/// before [`admit`] sees the request, so a client that uploads slowly, or
/// declares a body it never sends, holds no slot that others need.
async fn receive(State(state): State<Shared>, req: Request, next: Next) -> Response {
    let limits = &state.limits;
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limits.payload_limit as u64) {
        return body_too_large().into_response();
    }
    let (parts, body) = req.into_parts();
    let read = read_body(body, limits.payload_limit, state.body_bytes.clone());
    match tokio::time::timeout(limits.body_timeout, read).await {
        Err(_) => ApiError::BodyTimeout {
            secs: limits.body_timeout.as_secs(),
        }
        .into_response(),
        Ok(Err(e)) => e.into_response(),
        Ok(Ok((bytes, _held))) => {
            // `_held` keeps the bytes counted until the answer is made.
            next.run(Request::from_parts(parts, Body::from(bytes)))
                .await
        }
    }
}

/// The body, at most `limit` bytes, with the budget permits its bytes hold.
async fn read_body(
    body: Body,
    limit: usize,
    budget: Arc<Semaphore>,
) -> Result<(Bytes, Option<OwnedSemaphorePermit>), ApiError> {
    use http_body_util::BodyExt;
    let mut body = body;
    let mut data = Vec::new();
    let mut held: Option<OwnedSemaphorePermit> = None;
    while let Some(frame) = body.frame().await {
        let frame =
            frame.map_err(|e| ApiError::bad("body", format!("cannot read the body: {e}")))?;
        let Ok(chunk) = frame.into_data() else {
            continue;
        };
        if data.len() + chunk.len() > limit {
            return Err(body_too_large());
        }
        // Waits for room when other bodies fill the budget; the budget is at
        // least `limit`, so a chunk within it always fits eventually.
        let permit = budget
            .clone()
            .acquire_many_owned(chunk.len() as u32)
            .await
            .map_err(|_| ApiError::Internal("the server is shutting down".into()))?;
        match held.as_mut() {
            Some(h) => h.merge(permit),
            None => held = Some(permit),
        }
        data.extend_from_slice(&chunk);
    }
    Ok((Bytes::from(data), held))
}

fn body_too_large() -> ApiError {
    ApiError::TooLarge {
        param: "body".into(),
        message: "request body is over this server's --payload-limit".into(),
    }
}

/// Admission control: a request runs only with a free permit, else 429;
/// an admitted request is answered within `--request-timeout`, else 503.
async fn admit(State(state): State<Shared>, req: Request, next: Next) -> Response {
    let Ok(_permit) = state.permits.clone().try_acquire_owned() else {
        return ApiError::Overloaded {
            limit: state.limits.max_concurrent_requests,
        }
        .into_response();
    };
    let deadline = state.limits.request_timeout;
    match tokio::time::timeout(deadline, next.run(req)).await {
        Ok(response) => response,
        Err(_) => ApiError::Deadline {
            secs: deadline.as_secs(),
        }
        .into_response(),
    }
}

/// A JSON body whose errors are JSON and name the field at fault
/// (`input[1]: invalid type: ...`), with the body-size limit as 413.
pub struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = Bytes::from_request(req, state).await.map_err(body_error)?;
        parse_json(&bytes).map(JsonBody)
    }
}

/// Parses JSON, naming the path of the first error.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    if bytes.is_empty() {
        return Err(ApiError::bad("body", "empty body; send a JSON object"));
    }
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    let value: T = serde_path_to_error::deserialize(&mut *de).map_err(|e| {
        let path = e.path().to_string();
        let message = e.inner().to_string();
        // A missing field is named by the error, not by the path.
        let missing = message
            .strip_prefix("missing field `")
            .and_then(|m| m.split('`').next());
        let param = match (path.as_str(), missing) {
            (".", Some(field)) => field.to_string(),
            (".", None) => "body".to_string(),
            (p, Some(field)) => format!("{p}.{field}"),
            (p, None) => p.to_string(),
        };
        ApiError::bad(param, message)
    })?;
    de.end().map_err(|e| {
        ApiError::bad(
            "body",
            format!("trailing characters after the JSON value ({e})"),
        )
    })?;
    Ok(value)
}

/// Maps a body-reading failure (over the limit, broken connection) to JSON.
pub fn body_error(rejection: BytesRejection) -> ApiError {
    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        body_too_large()
    } else {
        ApiError::bad("body", rejection.body_text())
    }
}
