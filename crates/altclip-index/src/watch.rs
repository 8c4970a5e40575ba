//! Watching folders for `altclip index --watch`: file-system notifications
//! (inotify on Linux), gathered until the folders have been quiet for a
//! moment, so that a copy of a thousand photos is one indexing batch.

use std::collections::BTreeSet;
use std::path::{Component, Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use notify::{RecursiveMode, Watcher as _};

use crate::error::{Error, Result};

/// Recursive watches on a set of folders.
pub struct Watcher {
    // Dropping it ends the notifications.
    _watcher: notify::RecommendedWatcher,
    events: mpsc::Receiver<notify::Result<notify::Event>>,
    roots: Vec<PathBuf>,
    ignore: Vec<PathBuf>,
}

impl Watcher {
    /// Watches `roots` recursively. Changes under `ignore` (the index's own
    /// files, when they live inside a root) and under hidden names, which
    /// the indexer skips, do not count.
    pub fn new(roots: &[PathBuf], ignore: Vec<PathBuf>) -> Result<Self> {
        let (tx, events) = mpsc::channel();
        let mut watcher = notify::recommended_watcher(move |e| {
            let _ = tx.send(e);
        })
        .map_err(|e| Error::Invalid(format!("cannot watch for changes: {e}")))?;
        for root in roots {
            watcher.watch(root, RecursiveMode::Recursive).map_err(|e| {
                Error::Invalid(format!(
                    "cannot watch {}: {e} (a large tree may need a higher fs.inotify.max_user_watches)",
                    root.display()
                ))
            })?;
        }
        Ok(Self {
            _watcher: watcher,
            events,
            roots: roots.to_vec(),
            ignore,
        })
    }

    /// Waits for a change under the roots, then until `quiet` passes without
    /// another; returns the changed paths. `None` if notifications stopped.
    pub fn next_batch(&self, quiet: Duration) -> Result<Option<Vec<PathBuf>>> {
        let mut changed = BTreeSet::new();
        // The first relevant change, however long it takes.
        while changed.is_empty() {
            match self.events.recv() {
                Ok(event) => self.collect(event, &mut changed)?,
                Err(_) => return Ok(None),
            }
        }
        let mut last = Instant::now();
        loop {
            let left = quiet.saturating_sub(last.elapsed());
            match self.events.recv_timeout(left) {
                Ok(event) => {
                    let before = changed.len();
                    self.collect(event, &mut changed)?;
                    if changed.len() > before {
                        last = Instant::now();
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => break,
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
        }
        Ok(Some(changed.into_iter().collect()))
    }

    fn collect(
        &self,
        event: notify::Result<notify::Event>,
        into: &mut BTreeSet<PathBuf>,
    ) -> Result<()> {
        let event =
            event.map_err(|e| Error::Invalid(format!("watching for changes failed: {e}")))?;
        if event.kind.is_access() {
            return Ok(());
        }
        into.extend(event.paths.into_iter().filter(|p| self.relevant(p)));
        Ok(())
    }

    fn relevant(&self, path: &Path) -> bool {
        if self.ignore.iter().any(|i| path.starts_with(i)) {
            return false;
        }
        let Some(root) = self.roots.iter().find(|r| path.starts_with(r)) else {
            return false;
        };
        let hidden = |c: Component| matches!(c, Component::Normal(n) if n.to_string_lossy().starts_with('.'));
        !path
            .strip_prefix(root)
            .is_ok_and(|rest| rest.components().any(hidden))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_are_batched_and_the_index_and_hidden_files_ignored() {
        let dir = std::env::temp_dir().join(format!("altclip-watch-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join(".altclip")).unwrap();
        let dir = std::fs::canonicalize(&dir).unwrap();
        let w = Watcher::new(std::slice::from_ref(&dir), vec![dir.join("own.db")]).unwrap();
        let writer = {
            let dir = dir.clone();
            std::thread::spawn(move || {
                std::fs::write(dir.join("own.db"), b"index").unwrap();
                std::fs::write(dir.join(".altclip/index.db"), b"index").unwrap();
                for i in 0..3 {
                    std::fs::write(dir.join(format!("{i}.jpg")), b"x").unwrap();
                    std::thread::sleep(Duration::from_millis(50));
                }
            })
        };
        let batch = w.next_batch(Duration::from_millis(400)).unwrap().unwrap();
        writer.join().unwrap();
        let names: BTreeSet<String> = batch
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            names,
            ["0.jpg", "1.jpg", "2.jpg"].map(String::from).into(),
            "{batch:?}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
