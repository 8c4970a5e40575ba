//! Command-line flags of `altclip serve`; each one can also be set from an
//! `ALTCLIP_*` environment variable.

use std::path::PathBuf;
use std::time::Duration;

use altclip::args::ModelSettings;
use altclip::LoadOptions;

/// Serve AltCLIP over HTTP: embeddings, classification, search and a web page.
///
/// Routes: POST /v1/embeddings (OpenAI-compatible, text or images), /embed,
/// /classify, /rank, /search; POST /predict and GET /ping (immich's
/// machine-learning API); GET /health, /info, /metrics, /openapi.json,
/// /thumb/{id} and the web page at /. Requests for the same tower are batched
/// together; past --max-concurrent-requests the server answers 429.
#[derive(clap::Args, Debug, Clone)]
#[command(
    after_help = "Examples:\n  altclip serve --model BAAI/AltCLIP --db ~/Pictures/.altclip/index.db\n  \
                  ALTCLIP_PORT=3003 altclip serve --model BAAI/AltCLIP --host 0.0.0.0\n  \
                  curl localhost:8080/v1/embeddings -d '{\"input\":[\"一只猫\",\"a dog\"]}'"
)]
pub struct ServeArgs {
    /// Model directory or Hub id (default: the model the --db index was built with).
    #[arg(long, short = 'm', env = "ALTCLIP_MODEL")]
    pub model: Option<String>,
    #[command(flatten)]
    pub settings: ModelSettings,
    /// Index database built by `altclip index`, for POST /search and GET /thumb.
    #[arg(long, env = "ALTCLIP_DB")]
    pub db: Option<PathBuf>,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1", env = "ALTCLIP_HOST")]
    pub host: String,
    /// Port to listen on (0 picks a free one).
    #[arg(long, default_value_t = 8080, env = "ALTCLIP_PORT")]
    pub port: u16,
    /// Require `Authorization: Bearer KEY` on every route except /, /health and /ping.
    #[arg(long, env = "ALTCLIP_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// Name reported as `model` in responses (default: the --model value).
    #[arg(long, env = "ALTCLIP_SERVED_MODEL_NAME")]
    pub served_model_name: Option<String>,

    /// Most inputs per forward pass, per tower; 1 turns cross-request batching off.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u64).range(1..), env = "ALTCLIP_MAX_BATCH_SIZE")]
    pub max_batch_size: u64,
    /// Most padded tokens (texts × longest text) in one text batch.
    #[arg(long, default_value_t = 8192, value_parser = clap::value_parser!(u64).range(1..), env = "ALTCLIP_MAX_BATCH_TOKENS")]
    pub max_batch_tokens: u64,
    /// How long the oldest queued input may wait for a batch to fill, in milliseconds.
    #[arg(long, default_value_t = 5, env = "ALTCLIP_MAX_BATCH_WAIT_MS")]
    pub max_batch_wait_ms: u64,
    /// Requests processed at once; more are refused with 429.
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u64).range(1..), env = "ALTCLIP_MAX_CONCURRENT_REQUESTS")]
    pub max_concurrent_requests: u64,
    /// Threads that decode and preprocess images (default: the number of cores).
    #[arg(long, env = "ALTCLIP_DECODE_WORKERS")]
    pub decode_workers: Option<usize>,

    /// Close a connection whose request headers have not all arrived within
    /// this many seconds (slow clients cannot hold connections open).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..), env = "ALTCLIP_HEADER_TIMEOUT")]
    pub header_timeout: u64,
    /// Answer 408 when a request body has not all arrived within this many
    /// seconds. Bodies are read before a request counts against
    /// --max-concurrent-requests, so a slow upload never holds a slot.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..), env = "ALTCLIP_BODY_TIMEOUT")]
    pub body_timeout: u64,
    /// Answer 503 (with Retry-After) when an admitted request has not been
    /// answered within this many seconds.
    #[arg(long, default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..), env = "ALTCLIP_REQUEST_TIMEOUT")]
    pub request_timeout: u64,
    /// Most request-body bytes held in memory at once, over all requests
    /// still arriving or in flight; uploads wait for room (within
    /// --body-timeout). At least --payload-limit.
    #[arg(long, default_value_t = 256 * 1024 * 1024, env = "ALTCLIP_MAX_BODY_BYTES")]
    pub max_body_bytes: usize,
    /// Most open connections; more are closed as soon as they are accepted.
    #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(u64).range(1..), env = "ALTCLIP_MAX_CONNECTIONS")]
    pub max_connections: u64,

    /// Largest request body, in bytes.
    #[arg(long, default_value_t = 20 * 1024 * 1024, env = "ALTCLIP_PAYLOAD_LIMIT")]
    pub payload_limit: usize,
    /// Most inputs (texts, images, labels or candidates) in one request.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..), env = "ALTCLIP_MAX_CLIENT_BATCH_SIZE")]
    pub max_client_batch_size: u64,
    /// Longest text accepted, in characters (texts are truncated to --max-length tokens anyway).
    #[arg(long, default_value_t = 10_000, env = "ALTCLIP_MAX_TEXT_CHARS")]
    pub max_text_chars: usize,
    /// Refuse images with more pixels than this, before decoding them.
    #[arg(long, default_value_t = 50_000_000, env = "ALTCLIP_MAX_PIXELS")]
    pub max_pixels: u64,
    /// Accept `file://` image references, read from the server's disk.
    #[arg(long, env = "ALTCLIP_ALLOW_FILE_PATHS")]
    pub allow_file_paths: bool,
    /// Accept http(s):// image references, fetched by the server.
    #[arg(long, env = "ALTCLIP_ALLOW_URLS")]
    pub allow_urls: bool,
}

impl ServeArgs {
    /// Defaults for `model` with every other flag at its default, as the
    /// command line would give them.
    pub fn for_model(model: &str) -> Self {
        use clap::Parser;
        #[derive(clap::Parser)]
        struct Wrapper {
            #[command(flatten)]
            args: ServeArgs,
        }
        let mut args = Wrapper::parse_from(["altclip-serve"]).args;
        args.model = Some(model.to_string());
        args
    }

    /// How the model is loaded.
    pub fn load_options(&self) -> LoadOptions {
        self.settings.load_options()
    }

    /// The batching settings.
    pub fn batching(&self) -> BatchConfig {
        BatchConfig {
            max_batch_size: self.max_batch_size as usize,
            max_batch_tokens: self.max_batch_tokens as usize,
            max_wait: Duration::from_millis(self.max_batch_wait_ms),
        }
    }

    /// The per-request limits.
    pub fn limits(&self) -> Limits {
        Limits {
            payload_limit: self.payload_limit,
            max_items: self.max_client_batch_size as usize,
            max_text_chars: self.max_text_chars,
            max_pixels: self.max_pixels,
            max_concurrent_requests: self.max_concurrent_requests as usize,
            header_timeout: Duration::from_secs(self.header_timeout),
            body_timeout: Duration::from_secs(self.body_timeout),
            request_timeout: Duration::from_secs(self.request_timeout),
            max_body_bytes: self.max_body_bytes.max(self.payload_limit),
            max_connections: self.max_connections as usize,
            allow_file_paths: self.allow_file_paths,
            allow_urls: self.allow_urls,
        }
    }
}

/// How inputs are packed into forward passes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct BatchConfig {
    /// Most inputs per forward pass.
    pub max_batch_size: usize,
    /// Most padded tokens per text batch.
    pub max_batch_tokens: usize,
    /// How long the oldest input waits for company.
    #[serde(rename = "max_wait_ms", serialize_with = "millis")]
    pub max_wait: Duration,
}

fn millis<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(d.as_millis() as u64)
}

/// What one request may ask for.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Limits {
    /// Largest body in bytes.
    pub payload_limit: usize,
    /// Most inputs per request.
    pub max_items: usize,
    /// Longest text in characters.
    pub max_text_chars: usize,
    /// Largest image in pixels, checked before decoding.
    pub max_pixels: u64,
    /// Requests in flight before 429.
    pub max_concurrent_requests: usize,
    /// `file://` image references allowed.
    pub allow_file_paths: bool,
    /// `http(s)://` image references allowed.
    pub allow_urls: bool,
    /// Time for a request's headers to arrive.
    #[serde(rename = "header_timeout_s", serialize_with = "secs")]
    pub header_timeout: Duration,
    /// Time for a request's body to arrive.
    #[serde(rename = "body_timeout_s", serialize_with = "secs")]
    pub body_timeout: Duration,
    /// Time from admission to the answer.
    #[serde(rename = "request_timeout_s", serialize_with = "secs")]
    pub request_timeout: Duration,
    /// Body bytes held at once, over all requests.
    pub max_body_bytes: usize,
    /// Open connections at once.
    pub max_connections: usize,
}

fn secs<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_safe() {
        let args = ServeArgs::for_model("m");
        assert_eq!(args.model.as_deref(), Some("m"));
        assert_eq!(args.host, "127.0.0.1");
        assert!(!args.allow_file_paths && !args.allow_urls && args.api_key.is_none());
        assert_eq!(args.batching().max_batch_size, 32);
    }
}
