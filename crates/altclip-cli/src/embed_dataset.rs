//! `altclip embed-dataset`: one shard of a bulk embedding job, written in
//! clip-retrieval's layout.

use std::path::PathBuf;
use std::process::ExitCode;

use altclip_index::export::{self, ExportOptions, Shard};
use anyhow::{Context, Result};

use crate::common::{progress, track, ImageArgs, ModelArgs};

/// Embed a folder or list of images (one shard of it) for LAION-style tooling.
///
/// Writes OUT/img_emb/img_emb_I.npy (float16 rows, L2-normalised, in input
/// order), OUT/text_emb/text_emb_I.npy when every image has a caption, and
/// OUT/metadata/metadata_I.parquet (image_path[, caption]) — clip-retrieval's
/// layout, which autofaiss, Milvus bulk import and LAION tooling read. The
/// input is split into N contiguous shards; run each I in 0..N anywhere (a
/// Slurm array task, a Kubernetes indexed job) with the same INPUT and OUT.
/// A shard whose metadata file exists is complete and is skipped, so a failed
/// job can simply be re-run. Images that cannot be read are left out and
/// listed on stderr.
#[derive(clap::Args, Debug)]
#[command(after_help = "Examples:\n  \
    altclip embed-dataset -m BAAI/AltCLIP --input ~/Pictures --out embeddings\n  \
    altclip embed-dataset -m BAAI/AltCLIP --input images.tsv --shard $SLURM_ARRAY_TASK_ID/64 --out /data/emb\n\n\
    INPUT is a folder (images found recursively; name.txt beside name.jpg is its caption)\n\
    or a list file: one image path per line, optionally followed by a TAB and a caption.")]
pub struct Args {
    #[command(flatten)]
    model: ModelArgs,
    /// Folder of images, or a list file (path[TAB caption] per line).
    #[arg(long)]
    input: PathBuf,
    /// Which shard to embed, I/N counting from 0.
    #[arg(long, default_value = "0/1")]
    shard: Shard,
    /// Output folder (shared by all shards).
    #[arg(long)]
    out: PathBuf,
    /// Images per forward pass.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u64).range(1..))]
    batch_size: u64,
    /// Write float32 instead of clip-retrieval's float16.
    #[arg(long)]
    f32: bool,
    /// Redo the shard even if its files are complete.
    #[arg(long)]
    overwrite: bool,
    #[command(flatten)]
    images: ImageArgs,
    /// Print the shard's report as JSON.
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args) -> Result<ExitCode> {
    let items = export::read_input(&args.input)
        .with_context(|| format!("reading --input {}", args.input.display()))?;
    anyhow::ensure!(
        !items.is_empty(),
        "--input {}: no images found (expected a folder of images or a list of image paths)",
        args.input.display()
    );
    let opts = ExportOptions {
        out: args.out.clone(),
        shard: args.shard,
        batch_size: args.batch_size as usize,
        max_pixels: args.images.max_pixels,
        f32: args.f32,
        overwrite: args.overwrite,
    };
    let report = match export::already_complete(items.len(), &opts) {
        // No need to load the model.
        Some(report) => report,
        None => {
            let clip = args.model.load()?;
            let bar = progress(0, "embedding");
            let report = export::export_shard(&clip, &items, &opts, &mut |done, total| {
                track(&bar, done, total)
            })?;
            bar.finish_and_clear();
            report
        }
    };
    for f in &report.failed {
        eprintln!("skipped {}: {}", f.path, f.reason);
    }
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else if report.already_complete {
        println!(
            "shard {}: already complete ({} exists; --overwrite to redo)",
            report.shard,
            export::metadata_path(&args.out, args.shard).display()
        );
    } else {
        println!(
            "shard {}: {} images, {} embedded, {} skipped -> {}",
            report.shard,
            report.items,
            report.embedded,
            report.failed.len(),
            args.out.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}
