//! The error every handler returns: a status code and a JSON body that names
//! the request field at fault.
//!
//! The body carries the OpenAI shape (`{"error":{"message","type","param","code"}}`)
//! and FastAPI's `detail` (what immich logs), so clients of either dialect
//! find the message where they look for it.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The request is malformed; `param` names the field (e.g. `input[2]`).
    #[error("{param}: {message}")]
    BadRequest { param: String, message: String },

    /// Well-formed but not processable (immich answers 422 for bad `entries`).
    #[error("{param}: {message}")]
    Unprocessable { param: String, message: String },

    /// The body or one input is over a configured size limit.
    #[error("{param}: {message}")]
    TooLarge { param: String, message: String },

    /// `--max-concurrent-requests` requests are already in flight.
    #[error(
        "the server is at its limit of {limit} concurrent requests (--max-concurrent-requests); \
         retry later"
    )]
    Overloaded { limit: usize },

    /// The request body did not arrive within `--body-timeout`.
    #[error("the request body did not arrive within {secs} s (--body-timeout)")]
    BodyTimeout { secs: u64 },

    /// The request was admitted but not answered within `--request-timeout`.
    #[error("the request was not answered within {secs} s (--request-timeout); retry later")]
    Deadline { secs: u64 },

    /// `--api-key` is set and the request did not present it.
    #[error("missing or wrong API key: send `Authorization: Bearer <key>`")]
    Unauthorized,

    /// No such resource (e.g. a thumbnail id that is not in the index).
    #[error("{0}")]
    NotFound(String),

    /// A feature that this server was started without (e.g. search without --db).
    #[error("{0}")]
    Unavailable(String),

    /// A failure inside the server (model, index or I/O); not the client's fault.
    #[error("internal error: {0}")]
    Internal(String),
}

impl ApiError {
    /// A 400 naming `param`.
    pub fn bad(param: impl Into<String>, message: impl Into<String>) -> Self {
        ApiError::BadRequest {
            param: param.into(),
            message: message.into(),
        }
    }

    /// Rewrites the field name of a client error (e.g. `input[0]` → `image`).
    pub fn map_param(self, f: impl Fn(&str) -> String) -> Self {
        match self {
            ApiError::BadRequest { param, message } => ApiError::BadRequest {
                param: f(&param),
                message,
            },
            ApiError::Unprocessable { param, message } => ApiError::Unprocessable {
                param: f(&param),
                message,
            },
            ApiError::TooLarge { param, message } => ApiError::TooLarge {
                param: f(&param),
                message,
            },
            other => other,
        }
    }

    /// The HTTP status of this error.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest { .. } => StatusCode::BAD_REQUEST,
            ApiError::Unprocessable { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Overloaded { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::BodyTimeout { .. } => StatusCode::REQUEST_TIMEOUT,
            ApiError::Deadline { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            ApiError::BadRequest { .. } | ApiError::Unprocessable { .. } => "invalid_request_error",
            ApiError::TooLarge { .. } => "payload_too_large",
            ApiError::Overloaded { .. } | ApiError::Deadline { .. } => "overloaded",
            ApiError::BodyTimeout { .. } => "timeout",
            ApiError::Unauthorized => "authentication_error",
            ApiError::NotFound(_) => "not_found",
            ApiError::Unavailable(_) => "unavailable",
            ApiError::Internal(_) => "internal_error",
        }
    }

    fn param(&self) -> Option<&str> {
        match self {
            ApiError::BadRequest { param, .. }
            | ApiError::Unprocessable { param, .. }
            | ApiError::TooLarge { param, .. } => Some(param),
            _ => None,
        }
    }

    /// Maps an engine error on an input named `param` to a client error when
    /// the input is at fault (undecodable or oversized image).
    pub fn from_engine(param: &str, err: altclip::Error) -> Self {
        match err {
            altclip::Error::Image { reason, .. } => ApiError::bad(param, reason),
            altclip::Error::TooManyPixels {
                width,
                height,
                pixels,
                limit,
                ..
            } => ApiError::TooLarge {
                param: param.to_string(),
                message: format!(
                    "image is {width}x{height} ({pixels} pixels), over this server's limit of \
                     {limit} pixels (--max-pixels)"
                ),
            },
            e @ altclip::Error::ResizeTooLarge { .. } => ApiError::TooLarge {
                param: param.to_string(),
                message: e.to_string(),
            },
            other => ApiError::Internal(other.to_string()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            tracing::error!("{self}");
        }
        let message = self.to_string();
        let body = json!({
            "error": {
                "message": message,
                "type": self.kind(),
                "param": self.param(),
                "code": status.as_u16(),
            },
            "detail": message,
        });
        let mut response = (status, axum::Json(body)).into_response();
        if let ApiError::Overloaded { .. } | ApiError::Deadline { .. } = self {
            // Clients (the OpenAI SDK among them) back off by this header.
            response.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from_static("1"),
            );
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn engine_image_errors_are_client_errors_naming_the_field() {
        let err = ApiError::from_engine(
            "input[1]",
            altclip::Error::Image {
                input: "x".into(),
                reason: "not a recognised image format".into(),
            },
        );
        assert_eq!(err.status(), StatusCode::BAD_REQUEST);
        assert!(err.to_string().starts_with("input[1]: "), "{err}");
        let big = ApiError::from_engine(
            "image",
            altclip::Error::TooManyPixels {
                input: "x".into(),
                width: 10,
                height: 10,
                pixels: 100,
                limit: 50,
            },
        );
        assert_eq!(big.status(), StatusCode::PAYLOAD_TOO_LARGE);
    }
}
