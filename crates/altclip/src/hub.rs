//! Finding a model's files: a local directory, the Hugging Face cache, or a
//! download through `hf-hub`.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::weights::{shard_files, WEIGHT_FILES};

/// Where a model's files came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// A directory given on the command line.
    LocalDir,
    /// A snapshot already present in the Hugging Face cache.
    HubCache { id: String, revision: String },
    /// Files fetched from the Hub during this call (now cached).
    Downloaded { id: String, revision: String },
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Origin::LocalDir => write!(f, "local directory"),
            Origin::HubCache { id, revision } => write!(f, "Hugging Face cache ({id}@{revision})"),
            Origin::Downloaded { id, revision } => {
                write!(f, "downloaded from the Hub ({id}@{revision})")
            }
        }
    }
}

/// A directory laid out like a Hub snapshot, plus where it came from.
#[derive(Debug, Clone)]
pub struct ModelDir {
    pub dir: PathBuf,
    pub origin: Origin,
}

/// The Hugging Face hub cache directory, honouring `HF_HUB_CACHE` and `HF_HOME`
/// the way `huggingface_hub` does.
pub fn hub_cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("HF_HUB_CACHE") {
        return PathBuf::from(dir);
    }
    if let Some(home) = std::env::var_os("HF_HOME") {
        return PathBuf::from(home).join("hub");
    }
    user_cache_dir().join("huggingface").join("hub")
}

/// `$XDG_CACHE_HOME`, else `~/.cache`: where per-user caches live.
pub fn user_cache_dir() -> PathBuf {
    std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(|| PathBuf::from(".cache"))
}

/// True when `HF_HUB_OFFLINE` (or `TRANSFORMERS_OFFLINE`) forbids downloads.
pub fn offline() -> bool {
    ["HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"].iter().any(|k| {
        std::env::var(k)
            .map(|v| matches!(v.as_str(), "1" | "true" | "TRUE" | "yes" | "ON" | "on"))
            .unwrap_or(false)
    })
}

/// Resolves a model name: an existing directory, or a Hub id such as `BAAI/AltCLIP`
/// (looked up in the cache first, downloaded unless `HF_HUB_OFFLINE` is set).
pub fn resolve(model: &str, revision: Option<&str>) -> Result<ModelDir> {
    resolve_in(model, revision, &hub_cache_dir(), offline())
}

/// [`resolve`] with an explicit cache directory and network policy.
pub fn resolve_in(
    model: &str,
    revision: Option<&str>,
    cache: &Path,
    offline: bool,
) -> Result<ModelDir> {
    let path = Path::new(model);
    if path.is_dir() {
        return Ok(ModelDir {
            dir: path.to_path_buf(),
            origin: Origin::LocalDir,
        });
    }
    if !looks_like_hub_id(model) {
        return Err(Error::Invalid(format!(
            "model `{model}`: no such directory, and it is not a Hub id of the form `org/name` \
             (e.g. BAAI/AltCLIP)"
        )));
    }
    let revision = revision.unwrap_or("main");
    if let Some(dir) = cached_snapshot(cache, model, revision) {
        return Ok(ModelDir {
            dir,
            origin: Origin::HubCache {
                id: model.to_string(),
                revision: revision.to_string(),
            },
        });
    }
    if offline {
        return Err(Error::ModelNotFound {
            id: model.to_string(),
            cache: cache.to_path_buf(),
            reason: "HF_HUB_OFFLINE is set".to_string(),
        });
    }
    download(model, revision, cache).map_err(|reason| Error::ModelNotFound {
        id: model.to_string(),
        cache: cache.to_path_buf(),
        reason,
    })
}

fn looks_like_hub_id(s: &str) -> bool {
    let parts: Vec<&str> = s.split('/').collect();
    parts.len() == 2
        && parts.iter().all(|p| {
            !p.is_empty()
                && !p.starts_with('.')
                && p.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        })
}

/// The snapshot directory for `id@revision` in the cache, if it holds a usable model.
/// `revision` is a branch or tag (looked up in `refs/`) or a commit hash.
pub fn cached_snapshot(cache: &Path, id: &str, revision: &str) -> Option<PathBuf> {
    let repo = cache.join(format!("models--{}", id.replace('/', "--")));
    let commit = std::fs::read_to_string(repo.join("refs").join(revision))
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| revision.to_string());
    let dir = repo.join("snapshots").join(commit);
    (dir.join("config.json").is_file() && has_weights(&dir)).then_some(dir)
}

/// True when `dir` holds weights in one of the formats the loader reads.
pub fn has_weights(dir: &Path) -> bool {
    WEIGHT_FILES.iter().any(|f| dir.join(f).is_file())
}

fn download(id: &str, revision: &str, cache: &Path) -> std::result::Result<ModelDir, String> {
    use hf_hub::api::sync::ApiBuilder;
    use hf_hub::{Repo, RepoType};

    let api = ApiBuilder::from_env()
        .with_cache_dir(cache.to_path_buf())
        .build()
        .map_err(|e| e.to_string())?;
    let repo = api.repo(Repo::with_revision(
        id.to_string(),
        RepoType::Model,
        revision.to_string(),
    ));
    let config = repo.get("config.json").map_err(|e| e.to_string())?;
    let dir = config
        .parent()
        .ok_or("cache path without a parent")?
        .to_path_buf();
    // Optional files: absent ones are simply not in the repository.
    for file in [
        "preprocessor_config.json",
        "tokenizer_config.json",
        "special_tokens_map.json",
    ] {
        let _ = repo.get(file);
    }
    if repo.get("tokenizer.json").is_err() {
        repo.get("sentencepiece.bpe.model")
            .map_err(|e| format!("no tokenizer.json or sentencepiece.bpe.model: {e}"))?;
    }
    let weights_ok = if repo.get("model.safetensors").is_ok() {
        true
    } else if let Ok(index) = repo.get("model.safetensors.index.json") {
        for shard in shard_files(&index).map_err(|e| e.to_string())? {
            let name = shard
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default();
            repo.get(name).map_err(|e| format!("{name}: {e}"))?;
        }
        true
    } else {
        repo.get("pytorch_model.bin").is_ok()
    };
    if !weights_ok {
        return Err(format!(
            "{id} has no model.safetensors, sharded safetensors or pytorch_model.bin"
        ));
    }
    Ok(ModelDir {
        dir,
        origin: Origin::Downloaded {
            id: id.to_string(),
            revision: revision.to_string(),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hub_ids_are_recognised() {
        assert!(looks_like_hub_id("BAAI/AltCLIP"));
        assert!(looks_like_hub_id("BAAI/AltCLIP-m18"));
        assert!(!looks_like_hub_id("./models/x"));
        assert!(!looks_like_hub_id("/abs/path"));
        assert!(!looks_like_hub_id("a/b/c"));
        assert!(!looks_like_hub_id("AltCLIP"));
    }

    #[test]
    fn cache_layout_is_resolved_through_refs() {
        let cache = std::env::temp_dir().join(format!("altclip-hub-{}", std::process::id()));
        let repo = cache.join("models--BAAI--AltCLIP");
        let snap = repo.join("snapshots").join("abc123");
        std::fs::create_dir_all(&snap).unwrap();
        std::fs::create_dir_all(repo.join("refs")).unwrap();
        std::fs::write(repo.join("refs").join("main"), "abc123\n").unwrap();
        assert_eq!(cached_snapshot(&cache, "BAAI/AltCLIP", "main"), None);
        std::fs::write(snap.join("config.json"), "{}").unwrap();
        std::fs::write(snap.join("pytorch_model.bin"), "").unwrap();
        assert_eq!(
            cached_snapshot(&cache, "BAAI/AltCLIP", "main"),
            Some(snap.clone())
        );
        assert_eq!(
            cached_snapshot(&cache, "BAAI/AltCLIP", "abc123"),
            Some(snap)
        );
        assert_eq!(cached_snapshot(&cache, "BAAI/AltCLIP", "other"), None);
        let found = resolve_in("BAAI/AltCLIP", None, &cache, true).unwrap();
        assert_eq!(
            found.origin,
            Origin::HubCache {
                id: "BAAI/AltCLIP".into(),
                revision: "main".into()
            }
        );
        let err = resolve_in("nobody/missing", None, &cache, true)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("nobody/missing") && err.contains("huggingface-cli download"),
            "{err}"
        );
        std::fs::remove_dir_all(&cache).unwrap();
    }
}
