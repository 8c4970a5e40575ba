//! `altclip serve`: the HTTP server of the altclip-server crate.

use std::process::ExitCode;

use anyhow::Result;

/// Runs the server until SIGTERM or Ctrl-C. The index's vectors are read
/// from its database (see `altclip_server::library::sqlite_store`).
pub fn run(args: altclip_server::ServeArgs) -> Result<ExitCode> {
    altclip_server::run(args, altclip_server::library::sqlite_store())?;
    Ok(ExitCode::SUCCESS)
}
