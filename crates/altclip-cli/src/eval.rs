//! `altclip eval`: zero-shot classification and retrieval benchmarks with
//! CLIP_benchmark's metrics and result schema.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use altclip::cache::{default_root, model_key, EmbeddingCache};
use altclip::zeroshot::load_classnames;
use altclip::{AltClip, Templates, ZeroShotClassifier};
use altclip_eval::datasets::{load_captions, CaptionFormat, ClassificationDataset};
use altclip_eval::runner::{self, ImageFeatures, Outcome, Report};
use anyhow::{Context, Result};

use crate::common::{image_features, progress, ImageArgs, ModelArgs};

/// Benchmarks: zero-shot classification or image–text retrieval.
#[derive(clap::Subcommand, Debug)]
pub enum Command {
    Zeroshot(ZeroshotArgs),
    Retrieval(RetrievalArgs),
}

/// Settings every evaluation shares.
#[derive(clap::Args, Debug)]
pub struct Common {
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    images: ImageArgs,
    /// Language of class names, templates and captions (recorded in the result).
    #[arg(long, default_value = "en", value_parser = ["en", "zh"])]
    language: String,
    /// Inputs per forward pass.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u64).range(1..))]
    batch_size: u64,
    /// Evaluate at most N images (evenly spread for classification) for a quick look.
    #[arg(long)]
    limit: Option<usize>,
    /// Name recorded in the result (default: the dataset's file or directory name).
    #[arg(long)]
    dataset_name: Option<String>,
    /// Where to write the JSON result (default: altclip_<task>_<dataset>_<language>.json).
    #[arg(long, short = 'o')]
    output: Option<PathBuf>,
    /// Root of the image-feature cache.
    #[arg(long, env = "ALTCLIP_CACHE_DIR")]
    cache_dir: Option<PathBuf>,
    /// Do not read or write cached image features.
    #[arg(long)]
    no_cache: bool,
}

/// Zero-shot classification: acc1, acc5 and mean per-class recall.
///
/// The dataset is an ImageFolder tree (DIR/<class>/<image>, classes in sorted
/// order) or a CSV with a header and rows `path,label`. Logits are
/// 100 × cosine between the image and class embeddings, as CLIP_benchmark
/// computes them.
#[derive(clap::Args, Debug)]
#[command(
    after_help = "Example:\n  altclip eval zeroshot -m BAAI/AltCLIP --dataset imagenet/val --classnames cn_classnames.json \\\n      --templates cn_zeroshot_classification_templates.json --language zh"
)]
pub struct ZeroshotArgs {
    #[command(flatten)]
    common: Common,
    /// ImageFolder directory or `path,label` CSV.
    #[arg(long)]
    dataset: PathBuf,
    /// Class names: JSON list, JSON {"en": [...], "zh": [...]}, or one per line.
    /// Optional for ImageFolder (directory names are used).
    #[arg(long)]
    classnames: Option<PathBuf>,
    /// zh, en, none, or a JSON list of templates with {c} (default: the --language set).
    #[arg(long)]
    templates: Option<String>,
}

/// Zero-shot retrieval: text→image and image→text recall@K and their mean.
///
/// `image_retrieval_recall@K` is, over captions, whether the caption's image
/// is in the top K; `text_retrieval_recall@K` is, over images, whether any of
/// the image's captions is in the top K.
#[derive(clap::Args, Debug)]
#[command(
    after_help = "Examples:\n  altclip eval retrieval -m BAAI/AltCLIP --images flickr30k-images \\\n      --captions flickr30k_test_karpathy.txt --format clip-benchmark-txt --language en\n  \
                        altclip eval retrieval -m BAAI/AltCLIP --images flickr30k-images \\\n      --captions flickr30k_test_zh.txt --format clip-benchmark-txt --language zh"
)]
pub struct RetrievalArgs {
    #[command(flatten)]
    common: Common,
    /// Directory the caption file's image names are relative to.
    #[arg(long)]
    images: PathBuf,
    /// Caption file.
    #[arg(long)]
    captions: PathBuf,
    /// Caption file format (default: guessed from the extension and content).
    #[arg(long, value_parser = ["karpathy-json", "clip-benchmark-txt", "coco-json", "tsv"])]
    format: Option<String>,
    /// Karpathy split to evaluate.
    #[arg(long, default_value = "test")]
    split: String,
    /// Recall cut-offs.
    #[arg(long, value_delimiter = ',', default_value = "1,5,10")]
    recall_k: Vec<usize>,
}

pub fn run(command: Command) -> Result<ExitCode> {
    match command {
        Command::Zeroshot(args) => zeroshot(args),
        Command::Retrieval(args) => retrieval(args),
    }
}

fn open_cache(common: &Common, clip: &AltClip) -> Result<Option<EmbeddingCache>> {
    if common.no_cache {
        return Ok(None);
    }
    let root = common.cache_dir.clone().unwrap_or_else(default_root);
    let cache = EmbeddingCache::open(&root, &model_key(clip)?).with_context(|| {
        format!(
            "opening the embedding cache under {} (or pass --no-cache)",
            root.display()
        )
    })?;
    Ok(Some(cache))
}

/// Features of every image, with a progress bar; failures keep their place.
fn embed_images(
    clip: &AltClip,
    paths: &[PathBuf],
    common: &Common,
    cache: Option<&EmbeddingCache>,
) -> Result<Vec<ImageFeatures>> {
    let bar = progress(paths.len(), "images");
    let mut out = Vec::with_capacity(paths.len());
    for chunk in paths.chunks(common.batch_size as usize) {
        out.extend(image_features(
            clip,
            chunk,
            common.images.max_pixels,
            cache,
        )?);
        bar.inc(chunk.len() as u64);
    }
    bar.finish_and_clear();
    let failed: Vec<&String> = out.iter().filter_map(|r| r.as_ref().err()).collect();
    for e in &failed {
        eprintln!("warning: {e}");
    }
    Ok(out)
}

fn text_features(clip: &AltClip, texts: &[String], batch: usize) -> altclip::Result<Vec<Vec<f32>>> {
    let bar = progress(texts.len(), "texts");
    let mut out = Vec::with_capacity(texts.len());
    for chunk in texts.chunks(batch) {
        let refs: Vec<&str> = chunk.iter().map(String::as_str).collect();
        out.extend(clip.text_features(&refs)?);
        bar.inc(chunk.len() as u64);
    }
    bar.finish_and_clear();
    Ok(out)
}

fn dataset_name(explicit: &Option<String>, path: &Path) -> String {
    explicit.clone().unwrap_or_else(|| {
        path.file_stem()
            .map(|s| s.to_string_lossy().to_string())
            .unwrap_or_else(|| "dataset".into())
    })
}

/// The result record of a run that took `seconds` over `inputs` images.
fn report(
    outcome: Outcome,
    common: &Common,
    dataset: String,
    task: &'static str,
    seconds: f64,
    inputs: usize,
) -> Report {
    Report {
        dataset,
        model: common.model.model.clone(),
        pretrained: (common.model.settings.revision.clone())
            .unwrap_or_else(|| common.model.model.clone()),
        task,
        language: common.language.clone(),
        metrics: outcome.metrics,
        num_images: outcome.num_images,
        num_texts: outcome.num_texts,
        unreadable_images: outcome
            .unreadable
            .iter()
            .map(|p| p.display().to_string())
            .collect(),
        seconds,
        images_per_second: inputs as f64 / seconds,
    }
}

/// Writes the JSON result and prints a table; exit status 1 when images were unreadable.
fn finish(report: Report, common: &Common) -> Result<ExitCode> {
    let path = common.output.clone().unwrap_or_else(|| {
        PathBuf::from(format!(
            "altclip_{}_{}_{}.json",
            report.task, report.dataset, report.language
        ))
    });
    let json = serde_json::to_string_pretty(&report)?;
    std::fs::write(&path, json + "\n").with_context(|| format!("writing {}", path.display()))?;
    println!(
        "{} · {} · {} · {}",
        report.dataset, report.task, report.language, report.model
    );
    for (name, value) in &report.metrics {
        match value.as_f64() {
            Some(v) => println!("  {name:<28} {:>7.2}", v * 100.0),
            None => println!("  {name:<28} {:>7}", "n/a"),
        }
    }
    println!(
        "  {} images, {} texts, {:.1} s ({:.2} images/s)",
        report.num_images, report.num_texts, report.seconds, report.images_per_second
    );
    if !report.unreadable_images.is_empty() {
        println!(
            "  {} unreadable images were left out (listed in the result file)",
            report.unreadable_images.len()
        );
    }
    println!("result written to {}", path.display());
    Ok(if report.unreadable_images.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn zeroshot(args: ZeroshotArgs) -> Result<ExitCode> {
    let common = &args.common;
    let language = common.language.as_str();
    let (mut dataset, classnames) = if args.dataset.is_dir() {
        let dataset = ClassificationDataset::image_folder(&args.dataset)?;
        let names = match &args.classnames {
            Some(path) => load_classnames(path, language)?,
            None => dataset.folder_classes.clone().unwrap_or_default(),
        };
        (dataset, names)
    } else {
        let path = args
            .classnames
            .as_ref()
            .context("a CSV dataset needs --classnames FILE")?;
        let names = load_classnames(path, language)?;
        (ClassificationDataset::csv(&args.dataset, &names)?, names)
    };
    dataset.check_classes(&classnames)?;
    if let Some(limit) = common.limit {
        dataset.limit(limit);
    }
    let templates =
        Templates::parse(args.templates.as_deref().unwrap_or(language)).with_context(|| {
            format!(
                "--templates {}",
                args.templates.as_deref().unwrap_or(language)
            )
        })?;

    let clip = common.model.load()?;
    let cache = open_cache(common, &clip)?;
    let start = Instant::now();
    let classifier =
        ZeroShotClassifier::new(&clip, &classnames, &templates, common.batch_size as usize)?;
    let paths: Vec<PathBuf> = dataset.samples.iter().map(|s| s.0.clone()).collect();
    let features = embed_images(&clip, &paths, common, cache.as_ref())?;
    let outcome =
        runner::zeroshot_classification(&classifier, &dataset.samples, features, &args.dataset)?;
    let seconds = start.elapsed().as_secs_f64();
    let name = dataset_name(&common.dataset_name, &args.dataset);
    let task = "zeroshot_classification";
    finish(
        report(outcome, common, name, task, seconds, paths.len()),
        common,
    )
}

fn retrieval(args: RetrievalArgs) -> Result<ExitCode> {
    let common = &args.common;
    let format = args.format.as_deref().and_then(CaptionFormat::parse);
    let mut dataset =
        load_captions(&args.captions, format, &args.images, &args.split).map_err(|e| match e {
            altclip_eval::Error::UnknownCaptionFormat { .. } => {
                anyhow::anyhow!("{e}; pass --format")
            }
            e => e.into(),
        })?;
    if let Some(limit) = common.limit {
        dataset.limit(limit);
    }
    anyhow::ensure!(
        args.recall_k.iter().all(|&k| k > 0),
        "--recall-k values must be at least 1"
    );

    let clip = common.model.load()?;
    let cache = open_cache(common, &clip)?;
    let start = Instant::now();
    let features = embed_images(&clip, &dataset.images, common, cache.as_ref())?;
    let batch = common.batch_size as usize;
    let outcome = runner::zeroshot_retrieval(
        &dataset,
        features,
        &mut |texts| text_features(&clip, texts, batch),
        &args.recall_k,
        &args.images,
    )?;
    let seconds = start.elapsed().as_secs_f64();
    let name = dataset_name(&common.dataset_name, &args.captions);
    let task = "zeroshot_retrieval";
    finish(
        report(outcome, common, name, task, seconds, dataset.images.len()),
        common,
    )
}
