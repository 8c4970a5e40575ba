//! `altclip serve`: AltCLIP over HTTP.
//!
//! - [`args`]: the flags ([`ServeArgs`]), each also an `ALTCLIP_*` variable.
//! - [`batching`]: the model thread and its per-tower queues (dynamic batching).
//! - [`inputs`]: request items, image references, limits, the decode pool.
//! - [`library`]: the index of `altclip index`, for search and thumbnails.
//! - [`routes`]: OpenAI embeddings, mixed `/embed`, `/classify`, `/rank`,
//!   `/search`, immich's `/predict`, and the operational routes.
//! - [`metrics`]: Prometheus text; [`error`]: JSON errors naming the field.
//!
//! ```no_run
//! # async fn demo() -> Result<(), altclip_server::StartError> {
//! let args = altclip_server::ServeArgs::for_model("BAAI/AltCLIP");
//! altclip_server::serve(args, altclip_server::library::sqlite_store()).await
//! # }
//! ```

pub mod args;
pub mod batching;
pub mod error;
pub mod inputs;
pub mod library;
pub mod metrics;
pub mod routes;
pub mod state;

use std::future::Future;
use std::sync::Arc;

pub use args::ServeArgs;
pub use error::ApiError;
pub use library::StoreOpener;
pub use routes::router;
pub use state::{AppState, StartError};

/// Loads the model (and index), listens on `--host:--port` and serves until
/// SIGTERM or Ctrl-C; requests in flight finish before it returns.
pub async fn serve(args: ServeArgs, opener: StoreOpener) -> Result<(), StartError> {
    let addr = format!("{}:{}", args.host, args.port);
    let state = tokio::task::spawn_blocking(move || AppState::load(&args, opener))
        .await
        .map_err(|e| StartError::Io(std::io::Error::other(e)))??;
    let listener = tokio::net::TcpListener::bind(&addr)
        .await
        .map_err(|source| StartError::Bind { addr, source })?;
    let local = listener.local_addr()?;
    eprintln!("altclip: serving {} on http://{local}/", state.model_name);
    serve_on(listener, Arc::new(state), shutdown_signal()).await?;
    eprintln!("altclip: stopped");
    Ok(())
}

/// Serves `state` on a bound listener until `shutdown` completes, then lets
/// requests in flight finish and stops the model thread.
pub async fn serve_on(
    listener: tokio::net::TcpListener,
    state: Arc<AppState>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = router(state.clone());
    let result = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await;
    let stopping = state.clone();
    tokio::task::spawn_blocking(move || stopping.shutdown())
        .await
        .map_err(std::io::Error::other)?;
    result
}

/// Builds a multi-threaded runtime and runs [`serve`] on it: what the
/// `altclip serve` command calls.
pub fn run(args: ServeArgs, opener: StoreOpener) -> Result<(), StartError> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(serve(args, opener))
}

/// Completes on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    eprintln!("altclip: shutting down; finishing requests in flight");
}
