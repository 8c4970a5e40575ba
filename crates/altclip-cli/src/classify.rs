//! `altclip classify`: zero-shot labels for images.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use altclip::{Templates, ZeroShotClassifier};
use anyhow::{Context, Result};
use serde::Serialize;

use crate::common::{image_features, print_json_line, progress, ImageArgs, ModelArgs};

/// Zero-shot classification of images against labels you name.
///
/// Each label becomes prompts through templates; a class embedding is the
/// mean of its L2-normalised prompt embeddings, renormalised. Labels may be
/// Chinese, English or both. Probabilities are the softmax over labels of
/// exp(logit_scale)·cosine. Prints a table, or JSON Lines with --json:
/// `{"input":...,"top":[{"label":...,"index":...,"prob":...}]}` per image.
#[derive(clap::Args, Debug)]
#[command(
    after_help = "Examples:\n  altclip classify -m BAAI/AltCLIP --image cat.jpg --labels '猫,狗,bird'\n  \
                        altclip classify -m BAAI/AltCLIP --image a.jpg --labels-file imagenet_zh.txt --templates zh --top-k 5 --json"
)]
pub struct Args {
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    images: ImageArgs,
    /// An image file. Repeatable.
    #[arg(long = "image", short = 'i', required = true)]
    image: Vec<PathBuf>,
    /// Comma-separated labels, e.g. "猫,狗,bird".
    #[arg(long, value_delimiter = ',')]
    labels: Vec<String>,
    /// Labels from a file: one per line, or a JSON list.
    #[arg(long)]
    labels_file: Option<PathBuf>,
    /// Prompt templates: auto (Chinese prompts for Chinese labels, English
    /// otherwise), zh, en, none (the bare label), or a JSON list of strings with {c}.
    #[arg(long, default_value = "auto")]
    templates: String,
    /// How many labels to show per image.
    #[arg(long, default_value_t = 3)]
    top_k: usize,
    /// Print JSON Lines instead of a table.
    #[arg(long)]
    json: bool,
    /// Images or prompts per forward pass.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u64).range(1..))]
    batch_size: u64,
}

#[derive(Serialize)]
struct Line<'a> {
    input: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    top: Option<Vec<altclip::zeroshot::Scored>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'a str>,
}

pub fn run(args: Args) -> Result<ExitCode> {
    let mut labels: Vec<String> = args
        .labels
        .iter()
        .map(|l| l.trim().to_string())
        .filter(|l| !l.is_empty())
        .collect();
    if let Some(path) = &args.labels_file {
        labels.extend(
            altclip::zeroshot::load_classnames(path, "en")
                .with_context(|| format!("reading --labels-file {}", path.display()))?,
        );
    }
    if labels.is_empty() {
        anyhow::bail!("no labels: give --labels \"猫,狗,bird\" or --labels-file FILE");
    }
    let templates = Templates::parse(&args.templates)
        .with_context(|| format!("--templates {}", args.templates))?;
    let clip = args.model.load()?;
    let batch = args.batch_size as usize;
    let classifier = ZeroShotClassifier::new(&clip, &labels, &templates, batch)?;
    let mut out = std::io::stdout().lock();
    let bar = progress(args.image.len(), "classifying");
    let mut failed = 0;
    for paths in args.image.chunks(batch) {
        for (path, result) in
            paths
                .iter()
                .zip(image_features(&clip, paths, args.images.max_pixels, None)?)
        {
            let input = path.display().to_string();
            match result {
                Ok(features) => {
                    let top = classifier.top_k(&features, args.top_k);
                    if !args.json {
                        writeln!(out, "{input}")?;
                        for s in &top {
                            writeln!(out, "  {:>6.2}%  {}", s.prob * 100.0, s.label)?;
                        }
                    } else {
                        print_json_line(
                            &mut out,
                            &Line {
                                input: &input,
                                top: Some(top),
                                error: None,
                            },
                        )?;
                    }
                }
                Err(e) => {
                    failed += 1;
                    eprintln!("warning: {e}");
                    if args.json {
                        print_json_line(
                            &mut out,
                            &Line {
                                input: &input,
                                top: None,
                                error: Some(&e),
                            },
                        )?;
                    } else {
                        writeln!(out, "{input}\n  error: {e}")?;
                    }
                }
            }
            bar.inc(1);
        }
    }
    bar.finish_and_clear();
    Ok(if failed > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}
