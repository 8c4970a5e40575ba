//! Writing files so that a killed run never leaves a truncated one under
//! its final name, and naming the file in I/O errors.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// An I/O error on `path`.
pub(crate) fn io_err(path: &Path, e: std::io::Error) -> Error {
    Error::Io {
        path: path.to_path_buf(),
        source: e,
    }
}

/// Runs `write` on `path` + `.tmp`, then renames that into place.
pub(crate) fn write_atomically(path: &Path, write: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let mut tmp = path.as_os_str().to_os_string();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    write(&tmp)?;
    std::fs::rename(&tmp, path).map_err(|e| io_err(path, e))
}

/// [`write_atomically`] for bytes already in memory.
pub(crate) fn write_bytes_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomically(path, |tmp| {
        std::fs::write(tmp, bytes).map_err(|e| io_err(tmp, e))
    })
}
