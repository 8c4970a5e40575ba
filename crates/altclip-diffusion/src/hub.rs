//! `--model` for a diffusers pipeline: a local folder, or a Hub id such as
//! `BAAI/AltDiffusion` found in the Hugging Face cache or downloaded.

use std::path::{Path, PathBuf};

use altclip::hub::{hub_cache_dir, offline};

use crate::error::{Error, Result};

/// The files a pipeline folder needs, each from the first name present.
const FILES: [&[&str]; 10] = [
    &["scheduler/scheduler_config.json"],
    &["text_encoder/config.json"],
    &[
        "text_encoder/model.safetensors",
        "text_encoder/pytorch_model.bin",
    ],
    &[
        "tokenizer/tokenizer.json",
        "tokenizer/sentencepiece.bpe.model",
    ],
    &["unet/config.json"],
    &[
        "unet/diffusion_pytorch_model.safetensors",
        "unet/diffusion_pytorch_model.bin",
    ],
    &["vae/config.json"],
    &[
        "vae/diffusion_pytorch_model.safetensors",
        "vae/diffusion_pytorch_model.bin",
    ],
    &["tokenizer/tokenizer_config.json"],
    &["tokenizer/special_tokens_map.json"],
];

/// Resolves `model` to a pipeline folder (see the module docs).
pub fn resolve(model: &str, revision: Option<&str>) -> Result<PathBuf> {
    let path = Path::new(model);
    if path.is_dir() {
        return Ok(path.to_path_buf());
    }
    let not_found = |reason: String| {
        Error::Unsupported(format!(
            "model `{model}`: {reason}; expected a local diffusers folder, or a Hub id such as \
             BAAI/AltDiffusion (cache: {})",
            hub_cache_dir().display()
        ))
    };
    if model.split('/').count() != 2 {
        return Err(not_found(
            "no such folder, and not a Hub id of the form org/name".into(),
        ));
    }
    let revision = revision.unwrap_or("main");
    let repo = hub_cache_dir().join(format!("models--{}", model.replace('/', "--")));
    let commit = std::fs::read_to_string(repo.join("refs").join(revision))
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| revision.to_string());
    let snapshot = repo.join("snapshots").join(commit);
    if snapshot.join("model_index.json").is_file() {
        return Ok(snapshot);
    }
    if offline() {
        return Err(not_found(
            "not in the cache and HF_HUB_OFFLINE is set".into(),
        ));
    }
    download(model, revision).map_err(not_found)
}

fn download(id: &str, revision: &str) -> std::result::Result<PathBuf, String> {
    use hf_hub::api::sync::ApiBuilder;
    use hf_hub::{Repo, RepoType};

    let api = ApiBuilder::from_env()
        .with_cache_dir(hub_cache_dir())
        .build()
        .map_err(|e| e.to_string())?;
    let repo = api.repo(Repo::with_revision(
        id.into(),
        RepoType::Model,
        revision.into(),
    ));
    let index = repo.get("model_index.json").map_err(|e| e.to_string())?;
    for (i, names) in FILES.iter().enumerate() {
        let got = names.iter().any(|n| repo.get(n).is_ok());
        // The last two (tokenizer settings) are optional.
        if !got && i < FILES.len() - 2 {
            return Err(format!("the repository has none of {names:?}"));
        }
    }
    Ok(index
        .parent()
        .ok_or("cache path without a parent")?
        .to_path_buf())
}
