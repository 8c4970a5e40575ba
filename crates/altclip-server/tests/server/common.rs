//! Test servers on loopback with the tiny fixture model, an index built from
//! fixture images, and the engine itself for reference values.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use altclip::AltClip;
use altclip_index::indexer::{self, Options};
use altclip_index::{Index, ModelInfo, SqliteVectors, VectorDtype};
use altclip_server::library::sqlite_store;
use altclip_server::{AppState, ServeArgs};
use serde_json::Value;

pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures")
}

pub fn model() -> String {
    fixtures().join("tiny-224").display().to_string()
}

pub fn image(name: &str) -> PathBuf {
    fixtures().join("images").join(name)
}

/// `data:image/...;base64,...` of a fixture image.
pub fn data_uri(name: &str) -> String {
    let bytes = std::fs::read(image(name)).unwrap();
    let ext = name.rsplit('.').next().unwrap();
    let mime = if ext == "jpg" { "jpeg" } else { ext };
    format!("data:image/{mime};base64,{}", b64(&bytes))
}

pub fn b64(bytes: &[u8]) -> String {
    altclip_server::inputs::encode_base64(bytes)
}

/// The engine, for reference embeddings.
pub fn engine() -> &'static AltClip {
    static CLIP: OnceLock<AltClip> = OnceLock::new();
    CLIP.get_or_init(|| AltClip::load(&model(), &Default::default()).unwrap())
}

/// What `altclip embed --text` prints.
pub fn engine_text(text: &str) -> Vec<f32> {
    engine().embed_texts(&[text]).unwrap().remove(0)
}

/// What `altclip embed --image` prints for a fixture image.
pub fn engine_image(name: &str) -> Vec<f32> {
    let img = altclip::preprocess::open_rgb(&image(name), u64::MAX).unwrap();
    altclip::normalize_rows(engine().image_features(&[img]).unwrap()).remove(0)
}

pub fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

pub fn floats(v: &Value) -> Vec<f32> {
    v.as_array()
        .unwrap_or_else(|| panic!("not an array: {v}"))
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

/// The indexed photos: fixture images copied into a scratch folder.
pub const PHOTOS: &[&str] = &[
    "photo.png",
    "gray.png",
    "palette.png",
    "wide.png",
    "tall.png",
    "small.png",
];

/// A scratch folder with [`PHOTOS`] and an index of them, built once.
pub fn library() -> &'static (PathBuf, PathBuf) {
    static LIB: OnceLock<(PathBuf, PathBuf)> = OnceLock::new();
    LIB.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("altclip-server-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let photos = dir.join("photos");
        std::fs::create_dir_all(&photos).unwrap();
        for name in PHOTOS {
            std::fs::copy(image(name), photos.join(name)).unwrap();
        }
        let db = dir.join("index.db");
        let report = index_folder(&photos, &db);
        assert_eq!(report.embedded, PHOTOS.len(), "{report:?}");
        (photos, db)
    })
}

/// Brings the index `db` of `photos` up to date (forgetting deleted files).
pub fn index_folder(photos: &std::path::Path, db: &std::path::Path) -> indexer::Report {
    let clip = engine();
    let info = ModelInfo::describe(clip, &model(), None).unwrap();
    let mut index = Index::open(db).unwrap();
    let mut store = SqliteVectors::open(db, VectorDtype::F16).unwrap();
    let opts = Options {
        roots: vec![photos.to_path_buf()],
        exclude_dirs: Vec::new(),
        prune: true,
        batch_size: 8,
        max_pixels: 100_000_000,
        max_file_bytes: 1 << 30,
        retry_errors: false,
        // Videos too, where ffmpeg is installed.
        video: Some(Default::default()),
    };
    indexer::run(clip, &info, &mut index, &mut store, &opts, &mut |_, _| {}).unwrap()
}

/// A server running on its own thread and runtime until dropped.
pub struct TestServer {
    pub addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl TestServer {
    /// Starts a server with the tiny model; `configure` adjusts the flags.
    pub fn start(configure: impl FnOnce(&mut ServeArgs)) -> Self {
        let mut args = ServeArgs::for_model(&model());
        args.port = 0;
        args.decode_workers = Some(2);
        configure(&mut args);
        let state = Arc::new(AppState::load(&args, sqlite_store()).unwrap());
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                altclip_server::serve_on(listener, state, async {
                    let _ = stopped.await;
                })
                .await
                .unwrap();
            });
        });
        Self {
            addr,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The shared server: default flags, with the index.
pub fn server() -> &'static TestServer {
    static SERVER: OnceLock<TestServer> = OnceLock::new();
    SERVER.get_or_init(|| {
        let db = library().1.clone();
        TestServer::start(move |a| a.db = Some(db))
    })
}

pub fn client() -> reqwest::Client {
    reqwest::Client::new()
}

/// POSTs JSON and returns (status, JSON body).
pub async fn post(url: &str, body: &Value) -> (u16, Value) {
    let res = client().post(url).json(body).send().await.unwrap();
    let status = res.status().as_u16();
    let text = res.text().await.unwrap();
    let json = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{url}: {status} body is not JSON ({e}): {text}"));
    (status, json)
}

pub async fn get_json(url: &str) -> (u16, Value) {
    let res = client().get(url).send().await.unwrap();
    let status = res.status().as_u16();
    (status, res.json().await.unwrap())
}
