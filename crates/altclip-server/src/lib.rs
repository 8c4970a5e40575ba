//! `altclip serve`: AltCLIP over HTTP.
//!
//! - [`args`]: the flags ([`ServeArgs`]), each also an `ALTCLIP_*` variable.
//! - [`batching`]: the model thread and its per-tower queues (dynamic batching).
//! - [`inputs`]: request items, image references, limits, the decode pool.
//! - [`library`]: the index of `altclip index`, for search and thumbnails.
//! - [`routes`]: OpenAI embeddings, mixed `/embed`, `/classify`, `/rank`,
//!   `/search`, immich's `/predict`, and the operational routes.
//! - [`memory`]: the allocator setting that hands freed images back to the OS.
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
pub mod memory;
pub mod metrics;
pub mod routes;
pub mod state;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

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
///
/// Each connection gets `--header-timeout` for every request's headers, and
/// at most `--max-connections` are open at once; the routes bound the rest
/// (see [`routes`]).
pub async fn serve_on(
    listener: tokio::net::TcpListener,
    state: Arc<AppState>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    memory::return_freed_memory();
    let app = router(state.clone());
    let connections = Arc::new(Semaphore::new(state.limits.max_connections));
    let header_timeout = state.limits.header_timeout;
    let (stop, stopping) = tokio::sync::watch::channel(());
    let mut open = JoinSet::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of descriptors or a reset before accept: keep serving.
                    tracing::warn!("accepting a connection failed: {e}");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let Ok(slot) = connections.clone().try_acquire_owned() else {
            continue; // dropping the stream closes it
        };
        let service = TowerToHyperService::new(app.clone());
        let mut stopping = stopping.clone();
        open.spawn(async move {
            let _slot = slot;
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(header_timeout)
                .serve_connection(TokioIo::new(stream), service);
            let mut conn = std::pin::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => {}
                _ = stopping.changed() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
            }
        });
        while open.try_join_next().is_some() {}
    }
    drop(listener);
    let _ = stop.send(());
    while open.join_next().await.is_some() {}
    let stopping = state.clone();
    tokio::task::spawn_blocking(move || stopping.shutdown())
        .await
        .map_err(std::io::Error::other)
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
