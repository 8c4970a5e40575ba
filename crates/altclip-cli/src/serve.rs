//! `altclip serve`: the HTTP server of the altclip-server crate.

use std::process::ExitCode;

use altclip_index::VectorDtype;
use anyhow::Result;

use crate::library::open_store;

/// Runs the server until SIGTERM or Ctrl-C. The index's vectors are read
/// from the store it recorded, as `altclip search` reads them (the index
/// database with its HNSW graph, or a Milvus collection).
pub fn run(args: altclip_server::ServeArgs) -> Result<ExitCode> {
    altclip_server::run(
        args,
        Box::new(|index, dim| {
            open_store(&None, index, VectorDtype::F16, dim, false).map_err(|e| format!("{e:#}"))
        }),
    )?;
    Ok(ExitCode::SUCCESS)
}
