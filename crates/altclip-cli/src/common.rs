//! Flags and helpers shared by the subcommands.

use std::io::Write;
use std::path::{Path, PathBuf};

use altclip::args::ModelSettings;
use altclip::cache::{content_hash, EmbeddingCache};
use altclip::preprocess::{max_file_bytes, read_image_file, DEFAULT_MAX_PIXELS};
use altclip::{AltClip, LoadOptions, TextTokenizer, Towers};
use anyhow::{Context, Result};
use image::RgbImage;

/// How to find and run the model.
#[derive(clap::Args, Debug, Clone)]
pub struct ModelArgs {
    /// Model directory in Hugging Face layout, or a Hub id such as BAAI/AltCLIP.
    #[arg(long, short = 'm', env = "ALTCLIP_MODEL")]
    pub model: String,
    #[command(flatten)]
    pub settings: ModelSettings,
}

/// Loads `model` (a directory or Hub id) with `settings`.
pub fn load_model(settings: &ModelSettings, model: &str) -> Result<AltClip> {
    load_towers(settings, model, Towers::Both)
}

/// [`load_model`] with only `towers` (a text query needs no vision tower).
pub fn load_towers(settings: &ModelSettings, model: &str, towers: Towers) -> Result<AltClip> {
    let start = std::time::Instant::now();
    let opts = LoadOptions {
        towers,
        ..settings.load_options()
    };
    let clip = AltClip::load(model, &opts).with_context(|| format!("loading model `{model}`"))?;
    tracing::info!(
        "loaded {} ({}) in {:.2}s",
        clip.files().dir.display(),
        clip.files().origin,
        start.elapsed().as_secs_f64()
    );
    Ok(clip)
}

impl ModelArgs {
    /// Loads the tokenizer alone (no weights).
    pub fn load_tokenizer(&self) -> Result<TextTokenizer> {
        AltClip::load_tokenizer(&self.model, &self.settings.load_options())
            .with_context(|| format!("loading the tokenizer of `{}`", self.model))
    }

    /// Loads the model.
    pub fn load(&self) -> Result<AltClip> {
        load_model(&self.settings, &self.model)
    }
}

/// Image input limits.
#[derive(clap::Args, Debug)]
pub struct ImageArgs {
    /// Refuse images with more pixels than this, before decoding them.
    #[arg(long, default_value_t = DEFAULT_MAX_PIXELS, env = "ALTCLIP_MAX_PIXELS")]
    pub max_pixels: u64,
}

/// Reads one text per line from a file, or from stdin when `path` is `-`;
/// invalid UTF-8 is an error naming the line.
pub fn read_texts_file(path: &Path) -> Result<Vec<String>> {
    let bytes = if path == Path::new("-") {
        let mut buf = Vec::new();
        std::io::Read::read_to_end(&mut std::io::stdin(), &mut buf)
            .context("reading texts from stdin")?;
        buf
    } else {
        std::fs::read(path).with_context(|| format!("reading --texts-file {}", path.display()))?
    };
    let mut lines: Vec<&[u8]> = bytes.split(|&b| b == b'\n').collect();
    if lines.last().is_some_and(|l| l.is_empty()) {
        lines.pop();
    }
    lines
        .into_iter()
        .enumerate()
        .map(|(i, line)| {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            String::from_utf8(line.to_vec()).map_err(|e| {
                anyhow::anyhow!(
                    "{}:{}: invalid UTF-8 at byte {} of the line; save the file as UTF-8",
                    path.display(),
                    i + 1,
                    e.utf8_error().valid_up_to()
                )
            })
        })
        .collect()
}

/// What the parallel stage made of one input file.
enum Prepared {
    Cached(Vec<f32>),
    /// Decoded image and its content hash (when caching).
    Decoded(RgbImage, Option<String>),
    Failed(String),
}

/// Reads, hashes, looks up and decodes one file.
fn prepare(
    path: &Path,
    clip: &AltClip,
    max_pixels: u64,
    cache: Option<&EmbeddingCache>,
) -> Prepared {
    let name = path.display().to_string();
    let bytes = match read_image_file(path, max_file_bytes(max_pixels)) {
        Ok(b) => b,
        Err(e) => return Prepared::Failed(e.to_string()),
    };
    let hash = cache.map(|_| content_hash(&bytes));
    if let (Some(cache), Some(hash)) = (cache, &hash) {
        if let Some(v) = cache.get(hash) {
            return Prepared::Cached(v);
        }
    }
    match clip.decode_image(&bytes, &name, max_pixels) {
        Ok(img) => Prepared::Decoded(img, hash),
        Err(e @ altclip::Error::TooManyPixels { .. }) => {
            Prepared::Failed(format!("{e}; raise --max-pixels if you trust this file"))
        }
        Err(e) => Prepared::Failed(e.to_string()),
    }
}

/// Image features (unnormalised) per path, as one batch. Files are read and
/// decoded on the rayon pool; with a cache, known files skip decoding and the
/// model. A file that cannot be read or decoded keeps its place as an error
/// message, so one bad input never fails the batch.
pub fn image_features(
    clip: &AltClip,
    paths: &[PathBuf],
    max_pixels: u64,
    cache: Option<&EmbeddingCache>,
) -> Result<Vec<std::result::Result<Vec<f32>, String>>> {
    use rayon::prelude::*;
    let mut prepared: Vec<Prepared> = paths
        .par_iter()
        .map(|p| prepare(p, clip, max_pixels, cache))
        .collect();
    let mut images = Vec::new();
    for item in &mut prepared {
        if let Prepared::Decoded(img, _) = item {
            images.push(std::mem::take(img));
        }
    }
    let mut features = clip.image_features(&images)?.into_iter();
    prepared
        .into_iter()
        .map(|item| {
            Ok(match item {
                Prepared::Cached(v) => Ok(v),
                Prepared::Failed(e) => Err(e),
                Prepared::Decoded(_, hash) => {
                    let v = features.next().expect("one feature row per decoded image");
                    if let (Some(cache), Some(hash)) = (cache, hash) {
                        cache.put(&hash, &v).with_context(|| {
                            format!("writing the embedding cache in {}", cache.dir().display())
                        })?;
                    }
                    Ok(v)
                }
            })
        })
        .collect()
}

/// Writes one JSON value per line to stdout.
pub fn print_json_line(out: &mut impl Write, value: &impl serde::Serialize) -> Result<()> {
    serde_json::to_writer(&mut *out, value)?;
    out.write_all(b"\n")?;
    Ok(())
}

/// Moves a bar made with `progress(0, ..)` once the total is known; the bar
/// appears only for more than one item.
pub fn track(bar: &indicatif::ProgressBar, done: usize, total: usize) {
    if bar.length() != Some(total as u64) {
        bar.set_length(total as u64);
        if total > 1 {
            bar.set_draw_target(indicatif::ProgressDrawTarget::stderr());
        }
    }
    bar.set_position(done as u64);
}

/// A progress bar on stderr for jobs of more than one item, hidden when
/// stderr is not a terminal.
pub fn progress(total: usize, what: &str) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(total as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} {msg} [{bar:30}] {pos}/{len} ({per_sec}, ETA {eta})",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    bar.set_message(what.to_string());
    if total <= 1 {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    bar
}
