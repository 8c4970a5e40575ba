//! What each fuzz target feeds its input to, and what counts as a failure:
//! a panic, an HTTP 500, or a single input that takes longer than
//! [`SLOW_INPUT`]. Errors are the expected answer to hostile input.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use altclip::config::AltClipConfig;
use altclip::preprocess::{decode_rgb, Preprocessor, PreprocessorConfig};
use altclip::text::TextInputs;
use altclip::weights::Weights;
use altclip::{DType, Device, TextTokenizer};
use altclip_server::library::sqlite_store;
use altclip_server::{AppState, ServeArgs};
use axum::body::Body;
use axum::http::{header, Request};
use tower::ServiceExt;

/// An input that takes longer than this is reported as a failure: hostile
/// input must not be able to stall the engine.
pub const SLOW_INPUT: Duration = Duration::from_secs(5);

/// Pixel limit for decoded images (the server's default is 50 M; fuzzing
/// with a smaller one keeps each execution fast without changing the paths).
const MAX_PIXELS: u64 = 4_000_000;

/// The routes the `request` target sends to; the input's first byte picks one.
pub const ROUTES: [&str; 7] = [
    "/v1/embeddings",
    "/embeddings",
    "/embed",
    "/classify",
    "/rank",
    "/search",
    "/predict",
];

/// The multipart boundary of `/predict` inputs.
const BOUNDARY: &str = "XyZ";

/// One parser under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Target {
    /// Image decode (every format) and preprocessing.
    Image,
    /// The tokenizer on arbitrary text, and the encoder's padded inputs.
    Text,
    /// `config.json`.
    Config,
    /// `preprocessor_config.json`.
    Preprocessor,
    /// A `.safetensors` file: header, offsets, tensor reads.
    WeightsSafetensors,
    /// A PyTorch `.bin` zip pickle.
    WeightsBin,
    /// An HTTP request body for each inference route.
    Request,
}

impl Target {
    /// Every target, in the order the bounded run visits them.
    pub const ALL: [Target; 7] = [
        Target::Image,
        Target::Text,
        Target::Config,
        Target::Preprocessor,
        Target::WeightsSafetensors,
        Target::WeightsBin,
        Target::Request,
    ];

    /// The name used for its corpus folder and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Target::Image => "image",
            Target::Text => "text",
            Target::Config => "config",
            Target::Preprocessor => "preprocessor",
            Target::WeightsSafetensors => "weights-safetensors",
            Target::WeightsBin => "weights-bin",
            Target::Request => "request",
        }
    }

    /// Longest input the mutator produces.
    pub fn max_len(self) -> usize {
        match self {
            Target::Image | Target::WeightsBin => 1 << 20,
            _ => 1 << 16,
        }
    }

    /// The seed inputs committed with the crate.
    pub fn corpus_dir(self) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("corpus")
            .join(self.name())
    }
}

/// What the targets need loaded once: the tiny fixture model's tokenizer, a
/// server on it, and a scratch folder for file-based parsers.
pub struct Harness {
    scratch: PathBuf,
    tokenizer: TextTokenizer,
    server: Option<(tokio::runtime::Runtime, axum::Router)>,
}

/// The tiny random-weight model the harness serves.
pub fn fixture_model() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/tiny-224")
}

impl Harness {
    /// Loads the tokenizer; the server starts on the first `request` input.
    pub fn new() -> anyhow::Result<Self> {
        let scratch = std::env::temp_dir().join(format!("altclip-fuzz-{}", std::process::id()));
        std::fs::create_dir_all(&scratch)?;
        Ok(Self {
            scratch,
            tokenizer: TextTokenizer::from_dir(&fixture_model())?,
            server: None,
        })
    }

    /// Runs `data` through `target`. `Err` is a failure (an HTTP 500);
    /// a panic propagates to the caller, which catches it.
    pub fn exec(&mut self, target: Target, data: &[u8]) -> Result<(), String> {
        match target {
            Target::Image => {
                if let Ok(img) = decode_rgb(data, "fuzz", MAX_PIXELS) {
                    let pre = Preprocessor {
                        config: PreprocessorConfig::clip_default(224),
                    };
                    let _ = pre.pixel_values(&img);
                }
            }
            Target::Text => {
                let text = String::from_utf8_lossy(data);
                if let Ok(ids) = self.tokenizer.encode(&[&text]) {
                    let _ = TextInputs::new(&ids, self.tokenizer.pad_id(), &Device::Cpu);
                }
            }
            Target::Config => {
                let _ = AltClipConfig::from_file(&self.write("config.json", data));
            }
            Target::Preprocessor => {
                let _ =
                    PreprocessorConfig::from_file(&self.write("preprocessor_config.json", data));
            }
            Target::WeightsSafetensors => self.read_weights("model.safetensors", data),
            Target::WeightsBin => self.read_weights("pytorch_model.bin", data),
            Target::Request => return self.request(data),
        }
        Ok(())
    }

    fn write(&self, name: &str, data: &[u8]) -> PathBuf {
        let path = self.scratch.join(name);
        std::fs::write(&path, data).expect("writing to the scratch folder");
        path
    }

    /// Opens a weights file and reads every tensor it declares.
    fn read_weights(&self, name: &str, data: &[u8]) {
        let path = self.write(name, data);
        let Ok(w) = Weights::from_file(&path, DType::F32, &Device::Cpu) else {
            return;
        };
        for tensor in w.names() {
            if let Some(shape) = w.shape(&tensor) {
                let _ = w.get_as(&shape, &tensor, DType::F32);
            }
        }
    }

    fn request(&mut self, data: &[u8]) -> Result<(), String> {
        let Some((&route, body)) = data.split_first() else {
            return Ok(());
        };
        let path = ROUTES[route as usize % ROUTES.len()];
        let content_type = if path == "/predict" {
            format!("multipart/form-data; boundary={BOUNDARY}")
        } else {
            "application/json".to_string()
        };
        let request = Request::post(path)
            .header(header::CONTENT_TYPE, content_type)
            .body(Body::from(body.to_vec()))
            .expect("a valid request head");
        let (runtime, router) = self.server()?;
        let response = runtime
            .block_on(router.clone().oneshot(request))
            .map_err(|e| format!("{path}: {e}"))?;
        // 503 is this server's answer for search without an index.
        let status = response.status();
        if status.is_server_error() && status.as_u16() != 503 {
            let body = runtime
                .block_on(axum::body::to_bytes(response.into_body(), 1 << 20))
                .unwrap_or_default();
            return Err(format!(
                "{path} answered {status}: {}",
                String::from_utf8_lossy(&body)
            ));
        }
        Ok(())
    }

    fn server(&mut self) -> Result<&(tokio::runtime::Runtime, axum::Router), String> {
        if self.server.is_none() {
            let mut args = ServeArgs::for_model(&fixture_model().display().to_string());
            args.decode_workers = Some(1);
            args.max_pixels = MAX_PIXELS;
            let state = AppState::load(&args, sqlite_store()).map_err(|e| e.to_string())?;
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            self.server = Some((runtime, altclip_server::router(Arc::new(state))));
        }
        Ok(self.server.as_ref().expect("just set"))
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.scratch);
    }
}
