//! `altclip similarity`: each image's softmax over the texts.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use serde::Serialize;

use crate::common::{image_features, print_json_line, ImageArgs, ModelArgs};

/// One output line per image.
#[derive(Serialize)]
struct Line<'a> {
    input: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    texts: Option<&'a [String]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    probs: Option<Vec<f32>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'a str>,
}

/// Score images against candidate texts (softmax per image).
///
/// Prints the probabilities over the texts that transformers'
/// `logits_per_image.softmax(-1)` gives: one
/// `{"input":...,"texts":[...],"probs":[...]}` per image, in order. An image
/// that cannot be read yields `{"input":...,"error":"..."}` and exit status 1.
#[derive(clap::Args, Debug)]
#[command(
    after_help = "Example:\n  altclip similarity -m BAAI/AltCLIP --image cats.png --text 一张猫的照片 --text 一张狗的照片"
)]
pub struct Args {
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    images: ImageArgs,
    /// An image file. Repeatable.
    #[arg(long = "image", short = 'i', required = true)]
    image: Vec<PathBuf>,
    /// A candidate text. Repeatable.
    #[arg(long = "text", short = 't', required = true)]
    text: Vec<String>,
}

pub fn run(args: Args) -> Result<ExitCode> {
    let clip = args.model.load()?;
    let refs: Vec<&str> = args.text.iter().map(String::as_str).collect();
    let texts = clip.embed_texts(&refs)?;
    let features = image_features(&clip, &args.image, args.images.max_pixels, None)?;
    let ok: Vec<Vec<f32>> = features
        .iter()
        .filter_map(|r| r.as_ref().ok().cloned())
        .collect();
    let images = altclip::normalize_rows(ok);
    let probs = altclip::softmax_similarity(&images, &texts, clip.logit_scale(), clip.device())?;
    let mut probs = probs.into_iter();
    let mut out = std::io::stdout().lock();
    let mut failed = 0;
    for (path, result) in args.image.iter().zip(&features) {
        let input = path.display().to_string();
        let line = match result {
            Ok(_) => Line {
                input: &input,
                texts: Some(&args.text),
                probs: probs.next(),
                error: None,
            },
            Err(e) => {
                failed += 1;
                eprintln!("warning: {e}");
                Line {
                    input: &input,
                    texts: None,
                    probs: None,
                    error: Some(e),
                }
            }
        };
        print_json_line(&mut out, &line)?;
    }
    Ok(if failed > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}
