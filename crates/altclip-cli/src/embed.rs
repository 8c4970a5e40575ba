//! `altclip embed`: JSON Lines embeddings for images, then texts.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use serde_json::json;

use crate::common::{
    load_images, print_json_line, progress, read_texts_file, ImageArgs, ModelArgs,
};

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
    let clip = args.model.load()?;
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
        let decoded = load_images(paths, args.images.max_pixels);
        let ok: Vec<_> = decoded
            .iter()
            .filter_map(|r| r.as_ref().ok().cloned())
            .collect();
        let mut embeddings = finish(clip.image_features(&ok)?).into_iter();
        for (path, result) in paths.iter().zip(&decoded) {
            let input = path.display().to_string();
            let line = match result {
                Ok(_) => json!({"kind": "image", "input": input, "embedding": embeddings.next()}),
                Err(e) => {
                    failed += 1;
                    eprintln!("warning: {e}");
                    json!({"kind": "image", "input": input, "error": e})
                }
            };
            print_json_line(&mut out, &line)?;
        }
        bar.inc(1);
    }
    for chunk in texts.chunks(batch) {
        let refs: Vec<&str> = chunk.iter().map(String::as_str).collect();
        for (text, embedding) in chunk.iter().zip(finish(clip.text_features(&refs)?)) {
            print_json_line(
                &mut out,
                &json!({"kind": "text", "input": text, "embedding": embedding}),
            )?;
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
