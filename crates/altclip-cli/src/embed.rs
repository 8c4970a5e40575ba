//! `altclip embed`: JSON Lines embeddings for images, then texts.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use altclip::Towers;
use anyhow::Result;
use serde::Serialize;

use crate::common::{
    image_features, load_towers, print_json_line, progress, read_texts_file, ImageArgs, ModelArgs,
};

/// One output line; field order is the documented contract.
#[derive(Serialize)]
struct Line<'a> {
    kind: &'static str,
    input: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    embedding: Option<Vec<f32>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'a str>,
}

impl<'a> Line<'a> {
    fn embedding(kind: &'static str, input: &'a str, embedding: Vec<f32>) -> Self {
        Self {
            kind,
            input,
            embedding: Some(embedding),
            error: None,
        }
    }

    fn error(kind: &'static str, input: &'a str, error: &'a str) -> Self {
        Self {
            kind,
            input,
            embedding: None,
            error: Some(error),
        }
    }
}

/// Embed images and texts as JSON Lines.
///
/// Output lines are `{"kind":"image"|"text","input":...,"embedding":[...]}`,
/// images first in the order given, then texts. An image that cannot be read
/// yields `{"kind":"image","input":...,"error":"..."}` in its place; the rest
/// are still embedded and the exit status is 1 at the end.
#[derive(clap::Args, Debug)]
#[command(
    after_help = "Examples:\n  altclip embed -m BAAI/AltCLIP --image a.jpg --image b.png --text 一只猫\n  \
                        altclip embed -m ./AltCLIP --texts-file captions.txt --raw > text.jsonl"
)]
pub struct Args {
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    images: ImageArgs,
    /// An image file (PNG, JPEG, WebP, GIF, BMP, TIFF). Repeatable.
    #[arg(long = "image", short = 'i')]
    image: Vec<PathBuf>,
    /// A text to embed (any language XLM-R knows). Repeatable.
    #[arg(long = "text", short = 't')]
    text: Vec<String>,
    /// A UTF-8 file with one text per line (`-` reads stdin), embedded after the --text values.
    #[arg(long)]
    texts_file: Option<PathBuf>,
    /// Inputs per forward pass.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u64).range(1..))]
    batch_size: u64,
    /// Print exactly what get_image_features / get_text_features return,
    /// instead of L2-normalised embeddings.
    #[arg(long)]
    raw: bool,
}

pub fn run(args: Args) -> Result<ExitCode> {
    let mut texts = args.text.clone();
    if let Some(path) = &args.texts_file {
        texts.extend(read_texts_file(path)?);
    }
    if args.image.is_empty() && texts.is_empty() {
        anyhow::bail!("nothing to embed: give --image, --text or --texts-file");
    }
    // Only the towers the inputs need: a text-only run skips the vision tower.
    let towers = match (args.image.is_empty(), texts.is_empty()) {
        (true, _) => Towers::Text,
        (false, true) => Towers::Vision,
        (false, false) => Towers::Both,
    };
    let clip = load_towers(&args.model.settings, &args.model.model, towers)?;
    let batch = args.batch_size as usize;
    let finish = |v: Vec<Vec<f32>>| {
        if args.raw {
            v
        } else {
            altclip::normalize_rows(v)
        }
    };
    let mut out = std::io::stdout().lock();
    let mut failed = 0usize;

    let bar = progress(
        args.image.len().div_ceil(batch) + texts.len().div_ceil(batch),
        "embedding",
    );
    for paths in args.image.chunks(batch) {
        let features = image_features(&clip, paths, args.images.max_pixels, None)?;
        let ok: Vec<Vec<f32>> = features
            .iter()
            .filter_map(|r| r.as_ref().ok().cloned())
            .collect();
        let mut embeddings = finish(ok).into_iter();
        for (path, result) in paths.iter().zip(&features) {
            let input = path.display().to_string();
            let line = match result {
                Ok(_) => Line::embedding(
                    "image",
                    &input,
                    embeddings.next().expect("one embedding per decoded image"),
                ),
                Err(e) => {
                    failed += 1;
                    eprintln!("warning: {e}");
                    Line::error("image", &input, e)
                }
            };
            print_json_line(&mut out, &line)?;
        }
        bar.inc(1);
    }
    for chunk in texts.chunks(batch) {
        let refs: Vec<&str> = chunk.iter().map(String::as_str).collect();
        for (text, embedding) in chunk.iter().zip(finish(clip.text_features(&refs)?)) {
            print_json_line(&mut out, &Line::embedding("text", text, embedding))?;
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    out.flush()?;
    if failed > 0 {
        eprintln!(
            "error: {failed} of {} images could not be embedded",
            args.image.len()
        );
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}
