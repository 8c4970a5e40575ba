//! Seconds per call of the Rust API, for the Python package's overhead
//! benchmark (`bench/python_overhead.py`): a batch of image files read,
//! decoded and preprocessed on rayon's workers and then embedded (what
//! `altclip.AltCLIP.embed_images` does per batch), and a batch of texts.
//!
//! ```text
//! cargo run --release -p altclip --example embed_rate -- MODEL REPS TEXT_BATCH IMAGE...
//! ```
//! Prints one JSON object: `{"images": [s, ...], "texts": [s, ...]}` after
//! one unmeasured warm-up call of each.

use std::time::Instant;

use altclip::preprocess::{max_file_bytes, read_image_file, DEFAULT_MAX_PIXELS};
use altclip::{AltClip, LoadOptions};
use rayon::prelude::*;

fn embed_files(clip: &AltClip, paths: &[String]) -> altclip::Result<Vec<Vec<f32>>> {
    let pixels = paths
        .par_iter()
        .map(|p| {
            let bytes = read_image_file(p.as_ref(), max_file_bytes(DEFAULT_MAX_PIXELS))?;
            clip.preprocess(&clip.decode_image(&bytes, p, DEFAULT_MAX_PIXELS)?)
        })
        .collect::<altclip::Result<Vec<_>>>()?;
    clip.embed_pixels(&pixels)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [model, reps, text_batch, images @ ..] = args.as_slice() else {
        return Err("usage: embed_rate MODEL REPS TEXT_BATCH IMAGE...".into());
    };
    let (reps, text_batch): (usize, usize) = (reps.parse()?, text_batch.parse()?);
    let clip = AltClip::load(model, &LoadOptions::default())?;
    let texts: Vec<String> = (0..text_batch)
        .map(|i| format!("第{i}张照片：a photo of a cat on the grass, number {i}"))
        .collect();
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let time = |f: &dyn Fn() -> altclip::Result<Vec<Vec<f32>>>| -> altclip::Result<Vec<f64>> {
        f()?; // warm-up
        (0..reps)
            .map(|_| {
                let t = Instant::now();
                std::hint::black_box(f()?);
                Ok(t.elapsed().as_secs_f64())
            })
            .collect()
    };
    let images = time(&|| embed_files(&clip, images))?;
    let texts = time(&|| clip.embed_texts(&refs))?;
    println!("{{\"images\": {images:?}, \"texts\": {texts:?}}}");
    Ok(())
}
