//! Request inputs: `{"text"}` / `{"image"}` items, image references (data:
//! URI, base64, and — only when allowed — `file://` and `http(s)://`), the
//! limits they are checked against, and the worker pool that decodes and
//! preprocesses images off the async runtime.

use std::io::Read;
use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::time::Duration;

use altclip::AltClip;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine;
use serde_json::Value;
use tokio::sync::oneshot;

use crate::args::Limits;
use crate::error::ApiError;

/// One input of a mixed request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    Text(String),
    /// An image reference, resolved by [`image_source`].
    Image(String),
}

impl Item {
    /// Parses `{"text": "..."}` or `{"image": "..."}`; `field` names it in errors.
    pub fn parse(v: &Value, field: &str) -> Result<Self, ApiError> {
        let expected = "expected {\"text\": \"...\"} or {\"image\": \"<data: URI or base64>\"}";
        let Some(obj) = v.as_object() else {
            return Err(ApiError::bad(field, format!("{expected}, got {}", kind(v))));
        };
        match (obj.get("text"), obj.get("image")) {
            (Some(Value::String(t)), None) => Ok(Item::Text(t.clone())),
            (None, Some(Value::String(i))) => Ok(Item::Image(i.clone())),
            (Some(_), Some(_)) => Err(ApiError::bad(
                field,
                "has both `text` and `image`; send them as two items",
            )),
            (Some(other), None) => Err(ApiError::bad(
                format!("{field}.text"),
                format!("expected a string, got {}", kind(other)),
            )),
            (None, Some(other)) => Err(ApiError::bad(
                format!("{field}.image"),
                format!("expected a string, got {}", kind(other)),
            )),
            (None, None) => Err(ApiError::bad(field, expected)),
        }
    }
}

/// A JSON value's type, for messages.
pub fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Where an image's bytes come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageSource {
    /// Base64 text (the payload of a data: URI, or bare).
    Base64(String),
    /// Raw bytes (a multipart file).
    Bytes(Vec<u8>),
    /// A server-side file (`file://`, with --allow-file-paths).
    File(PathBuf),
    /// A URL (with --allow-urls).
    Url(String),
}

/// Classifies an image reference without decoding it.
pub fn image_source(
    reference: &str,
    field: &str,
    limits: &Limits,
) -> Result<ImageSource, ApiError> {
    let r = reference.trim();
    if let Some(rest) = r.strip_prefix("data:") {
        let Some((meta, payload)) = rest.split_once(',') else {
            return Err(ApiError::bad(
                field,
                "data: URI without a comma before the data",
            ));
        };
        let Some(media) = meta.strip_suffix(";base64") else {
            return Err(ApiError::bad(
                field,
                "only base64 data: URIs are accepted (data:image/png;base64,...)",
            ));
        };
        if !(media.is_empty() || media.starts_with("image/") || media == "application/octet-stream")
        {
            return Err(ApiError::bad(
                field,
                format!("data: URI of type {media:?} is not an image"),
            ));
        }
        return Ok(ImageSource::Base64(payload.to_string()));
    }
    let lower = r.get(..8).unwrap_or(r).to_ascii_lowercase();
    if lower.starts_with("http://") || lower.starts_with("https://") {
        if !limits.allow_urls {
            return Err(ApiError::bad(
                field,
                "image URLs are not fetched by this server (start it with --allow-urls); send a \
                 data: URI or base64 instead",
            ));
        }
        return Ok(ImageSource::Url(r.to_string()));
    }
    if let Some(path) = r.strip_prefix("file://") {
        if !limits.allow_file_paths {
            return Err(ApiError::bad(
                field,
                "file paths are not read by this server (start it with --allow-file-paths); send \
                 a data: URI or base64 instead",
            ));
        }
        return Ok(ImageSource::File(PathBuf::from(path)));
    }
    if r.is_empty() {
        return Err(ApiError::bad(field, "empty image reference"));
    }
    Ok(ImageSource::Base64(r.to_string()))
}

/// Standard base64, padded or not.
const BASE64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Standard base64 encoding (padded).
pub fn encode_base64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn decode_base64(text: &str, field: &str) -> Result<Vec<u8>, ApiError> {
    let compact: String;
    let text = if text.bytes().any(|b| b.is_ascii_whitespace()) {
        compact = text.chars().filter(|c| !c.is_ascii_whitespace()).collect();
        &compact
    } else {
        text
    };
    BASE64.decode(text).map_err(|e| {
        ApiError::bad(
            field,
            format!(
                "not a data: URI and not valid base64 ({e}); send \
                 data:image/png;base64,... or the base64 of the image file"
            ),
        )
    })
}

fn too_large(field: &str, what: String) -> ApiError {
    ApiError::TooLarge {
        param: field.to_string(),
        message: what,
    }
}

/// Reads the bytes of an image source, bounded by the payload limit.
fn read_source(source: ImageSource, field: &str, limits: &Limits) -> Result<Vec<u8>, ApiError> {
    let limit = limits.payload_limit as u64;
    match source {
        ImageSource::Bytes(b) => Ok(b),
        ImageSource::Base64(text) => decode_base64(&text, field),
        ImageSource::File(path) => {
            let shown = path.display();
            let meta = std::fs::metadata(&path)
                .map_err(|e| ApiError::bad(field, format!("cannot read {shown}: {e}")))?;
            if meta.len() > limit {
                return Err(too_large(
                    field,
                    format!(
                        "{shown} is {} bytes, over --payload-limit {limit}",
                        meta.len()
                    ),
                ));
            }
            std::fs::read(&path)
                .map_err(|e| ApiError::bad(field, format!("cannot read {shown}: {e}")))
        }
        ImageSource::Url(url) => {
            let agent = ureq::AgentBuilder::new()
                .timeout(Duration::from_secs(30))
                .redirects(3)
                .build();
            let response = agent
                .get(&url)
                .call()
                .map_err(|e| ApiError::bad(field, format!("cannot fetch {url}: {e}")))?;
            let mut bytes = Vec::new();
            response
                .into_reader()
                .take(limit + 1)
                .read_to_end(&mut bytes)
                .map_err(|e| ApiError::bad(field, format!("cannot fetch {url}: {e}")))?;
            if bytes.len() as u64 > limit {
                return Err(too_large(
                    field,
                    format!("{url} is over --payload-limit {limit} bytes"),
                ));
            }
            Ok(bytes)
        }
    }
}

/// A decoded, preprocessed image.
#[derive(Debug, Clone)]
pub struct Decoded {
    /// `[3, H, W]` pixel values for the model, flattened.
    pub pixels: Vec<f32>,
    /// Size after EXIF orientation, before resizing.
    pub width: u32,
    pub height: u32,
}

/// Reads, decodes (pixel limit checked before decoding) and preprocesses one
/// image. A decoder panic on a hostile input is reported as a bad input.
pub fn load_image(
    source: ImageSource,
    field: &str,
    clip: &AltClip,
    limits: &Limits,
) -> Result<Decoded, ApiError> {
    let bytes = read_source(source, field, limits)?;
    let img = clip
        .decode_image(&bytes, field, limits.max_pixels)
        .map_err(|e| ApiError::from_engine(field, e))?;
    let (width, height) = img.dimensions();
    Ok(Decoded {
        pixels: clip
            .preprocess(&img)
            .map_err(|e| ApiError::from_engine(field, e))?,
        width,
        height,
    })
}

/// Rejects an empty text and a text over the length limit, as OpenAI does:
/// a 400 naming the field (a 413 would be a bare status error to its SDK).
pub fn check_text(text: &str, field: &str, limits: &Limits) -> Result<(), ApiError> {
    if text.is_empty() {
        return Err(ApiError::bad(field, "is an empty string"));
    }
    let chars = text.chars().count();
    if chars > limits.max_text_chars {
        return Err(ApiError::bad(
            field,
            format!(
                "text is {chars} characters, over this server's limit of {} (--max-text-chars)",
                limits.max_text_chars
            ),
        ));
    }
    Ok(())
}

/// Rejects an empty list and one longer than the per-request limit (400).
pub fn check_count(n: usize, field: &str, limits: &Limits) -> Result<(), ApiError> {
    if n == 0 {
        return Err(ApiError::bad(field, "is empty"));
    }
    if n > limits.max_items {
        return Err(ApiError::bad(
            field,
            format!(
                "has {n} items, over this server's limit of {} per request \
                 (--max-client-batch-size)",
                limits.max_items
            ),
        ));
    }
    Ok(())
}

/// The thread pool that decodes and preprocesses images and tokenizes texts.
pub struct Workers {
    pool: rayon::ThreadPool,
}

impl Workers {
    /// A pool of `threads` threads.
    pub fn new(threads: usize) -> Self {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads.max(1))
            .thread_name(|i| format!("altclip-decode-{i}"))
            .build()
            .expect("building the decode pool");
        Self { pool }
    }

    /// Starts `f` on the pool now; the returned future yields its result.
    pub fn spawn<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> impl std::future::Future<Output = Result<T, ApiError>> + Send + 'static {
        let (tx, rx) = oneshot::channel();
        self.pool.spawn(move || {
            let _ = tx.send(std::panic::catch_unwind(AssertUnwindSafe(f)));
        });
        async move {
            rx.await
                .map_err(|_| ApiError::Internal("a worker thread stopped".into()))?
                .map_err(|_| ApiError::Internal("a worker thread panicked".into()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        crate::args::ServeArgs::for_model("m").limits()
    }

    #[test]
    fn image_references_are_classified_and_gated() {
        let l = limits();
        assert_eq!(
            image_source("data:image/png;base64,AAAA", "input[0]", &l).unwrap(),
            ImageSource::Base64("AAAA".into())
        );
        assert_eq!(
            image_source("/9j/4AAQ", "input[0]", &l).unwrap(),
            ImageSource::Base64("/9j/4AAQ".into())
        );
        for refused in ["https://example.com/a.jpg", "file:///etc/passwd"] {
            let err = image_source(refused, "input[3]", &l).unwrap_err();
            assert!(err.to_string().starts_with("input[3]: "), "{err}");
        }
        let err = image_source("data:text/plain;base64,AAAA", "image", &l).unwrap_err();
        assert!(err.to_string().contains("not an image"), "{err}");
        let open = Limits {
            allow_file_paths: true,
            allow_urls: true,
            ..l
        };
        assert_eq!(
            image_source("file:///tmp/x.png", "i", &open).unwrap(),
            ImageSource::File("/tmp/x.png".into())
        );
        assert!(matches!(
            image_source("HTTPS://example.com/a.jpg", "i", &open).unwrap(),
            ImageSource::Url(_)
        ));
    }

    #[test]
    fn base64_tolerates_missing_padding_and_line_breaks() {
        assert_eq!(decode_base64("aGVsbG8", "f").unwrap(), b"hello");
        assert_eq!(decode_base64("aGVs\nbG8=", "f").unwrap(), b"hello");
        let err = decode_base64("***", "input[1]").unwrap_err();
        assert!(err.to_string().starts_with("input[1]: "), "{err}");
    }

    #[test]
    fn items_name_the_field_at_fault() {
        let v: Value = serde_json::json!({"text": 3});
        let err = Item::parse(&v, "input[2]").unwrap_err();
        assert!(err.to_string().starts_with("input[2].text: "), "{err}");
        let v: Value = serde_json::json!({"audio": "x"});
        assert!(Item::parse(&v, "input[0]").is_err());
        assert_eq!(
            Item::parse(&serde_json::json!({"text": "猫"}), "x").unwrap(),
            Item::Text("猫".into())
        );
    }
}
