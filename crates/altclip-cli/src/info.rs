//! `altclip info`: what was loaded, from where.

use std::process::ExitCode;

use altclip::tokenize::TokenizerSource;
use anyhow::Result;
use serde_json::json;

use crate::common::ModelArgs;

/// Show what a model is and where its files came from.
///
/// Prints JSON: the resolved config (with transformers' defaults filled in),
/// parameter count, dtype, preprocessing, tokenizer and weight files, origin
/// (local directory, Hugging Face cache or download) and load time.
#[derive(clap::Args, Debug)]
#[command(after_help = "Example:\n  altclip info -m BAAI/AltCLIP")]
pub struct Args {
    #[command(flatten)]
    model: ModelArgs,
}

pub fn run(args: Args) -> Result<ExitCode> {
    let start = std::time::Instant::now();
    let clip = args.model.load()?;
    let load_s = start.elapsed().as_secs_f64();
    let tokenizer = match clip.tokenizer().source() {
        TokenizerSource::TokenizerJson(p) => json!({"tokenizer_json": p}),
        TokenizerSource::SentencePiece(p) => json!({"sentencepiece": p}),
        TokenizerSource::Bpe(p) => json!({"bpe": p}),
    };
    let pp = &clip.preprocessor().config;
    let info = json!({
        "model": args.model.model,
        "dir": clip.files().dir,
        "origin": clip.files().origin.to_string(),
        "weights": clip.weight_files(),
        "tokenizer": tokenizer,
        "max_length": clip.tokenizer().max_length(),
        "dtype": format!("{:?}", clip.dtype()),
        "device": format!("{:?}", clip.device()),
        "linear_layers": clip.plan().describe(),
        "threads": rayon::current_num_threads(),
        "parameters": clip.model().parameter_count(),
        "embedding_dim": clip.embedding_dim(),
        "logit_scale": clip.logit_scale(),
        "load_seconds": load_s,
        "preprocessor": {
            "resize": format!("{:?}", pp.resize),
            "resample": format!("{:?}", pp.filter),
            "crop": pp.crop,
            "rescale_factor": pp.rescale_factor,
            "normalize": pp.normalize,
        },
        "config": clip.config(),
    });
    println!("{}", serde_json::to_string_pretty(&info)?);
    Ok(ExitCode::SUCCESS)
}
