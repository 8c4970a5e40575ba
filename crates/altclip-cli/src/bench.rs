//! `altclip bench`: throughput and latency of the two towers on random
//! inputs, one JSON line per case, so that runs can be compared by script.

use std::process::ExitCode;
use std::time::Instant;

use altclip::config::{TextConfig, VisionConfig};
use altclip::text::TextInputs;
use altclip::AltClip;
use anyhow::{Context, Result};
use serde::Serialize;

use crate::common::ModelArgs;

/// Measure the speed of the model's towers on this machine.
///
/// Loads the model once, then for each case runs `--warmup` untimed and
/// `--reps` timed forward passes on random inputs (cost does not depend on
/// values): image batches of `--image-batch` 224-px images (preprocessing
/// excluded) and text batches of `--text-batch` sequences of exactly
/// `--text-len` tokens. Prints one JSON line per case
/// (`{"what":"image_f32_b8","items_per_s":..,"median_s":..,"p99_s":..,"gflops_per_s":..}`),
/// then `load_s` and `peak_rss_mb`. `bench/compare_pytorch.py` runs the same
/// cases through transformers, interleaved, and prints the ratios.
#[derive(clap::Args, Debug)]
#[command(after_help = "Examples:\n  \
    altclip bench --model BAAI/AltCLIP\n  \
    altclip bench --model BAAI/AltCLIP --dtype bf16 --image-batch 8 --text-batch 32 --text-len 16 --reps 5\n  \
    altclip bench --model BAAI/AltCLIP --image-batch 0 --text-batch 1 --text-len 16   # one query's latency")]
pub struct Args {
    #[command(flatten)]
    model: ModelArgs,
    /// Image batch sizes to measure, comma-separated (0 or empty: none).
    #[arg(long, value_delimiter = ',', default_value = "1,8")]
    image_batch: Vec<usize>,
    /// Text batch sizes to measure, comma-separated (0 or empty: none).
    #[arg(long, value_delimiter = ',', default_value = "1,32")]
    text_batch: Vec<usize>,
    /// Text lengths in tokens, special tokens included, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "16,77")]
    text_len: Vec<usize>,
    /// Timed repetitions per case.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..))]
    reps: u64,
    /// Untimed repetitions per case before timing.
    #[arg(long, default_value_t = 1)]
    warmup: u64,
    /// Accepted for symmetry with other commands; output is always JSON Lines.
    #[arg(long)]
    json: bool,
}

/// One measured case.
#[derive(Debug, Serialize)]
struct Case {
    what: String,
    items_per_s: f64,
    median_s: f64,
    p99_s: f64,
    /// Model arithmetic per second (multiply-add = 2 FLOP).
    gflops_per_s: f64,
}

/// One scalar measurement.
#[derive(Debug, Serialize)]
struct Value {
    what: &'static str,
    value: f64,
}

/// FLOP of one transformer layer over `t` tokens of width `d`, MLP width `i`.
fn layer_flops(t: f64, d: f64, i: f64) -> f64 {
    // Q, K, V, O projections; scores and weighted sum; two MLP matmuls.
    2.0 * t * (4.0 * d * d + 2.0 * d * i) + 2.0 * 2.0 * t * t * d
}

/// FLOP of `get_image_features` for one image.
fn image_flops(v: &VisionConfig, projection: usize) -> f64 {
    let patches = (v.image_size / v.patch_size).pow(2) as f64;
    let (d, i) = (v.hidden_size as f64, v.intermediate_size as f64);
    let embed = 2.0 * patches * (v.num_channels * v.patch_size * v.patch_size) as f64 * d;
    embed
        + v.num_hidden_layers as f64 * layer_flops(patches + 1.0, d, i)
        + 2.0 * d * projection as f64
}

/// FLOP of `get_text_features` for one text of `len` tokens.
fn text_flops(t: &TextConfig, projection: usize, len: usize) -> f64 {
    let (d, i) = (t.hidden_size as f64, t.intermediate_size as f64);
    t.num_hidden_layers as f64 * layer_flops(len as f64, d, i)
        + 2.0 * d * t.project_dim as f64
        + 2.0 * t.project_dim as f64 * projection as f64
}

/// Median and 99th percentile of `times`.
fn percentiles(mut times: Vec<f64>) -> (f64, f64) {
    times.sort_by(f64::total_cmp);
    let at = |p: f64| times[((times.len() - 1) as f64 * p).round() as usize];
    (at(0.5), at(0.99))
}

/// Times `run` after `warmup` untimed calls.
fn measure(warmup: u64, reps: u64, mut run: impl FnMut() -> Result<()>) -> Result<Vec<f64>> {
    for _ in 0..warmup {
        run()?;
    }
    (0..reps)
        .map(|_| {
            let start = Instant::now();
            run()?;
            Ok(start.elapsed().as_secs_f64())
        })
        .collect()
}

fn case(what: String, items: usize, flops_per_item: f64, times: Vec<f64>) -> Case {
    let (median_s, p99_s) = percentiles(times);
    Case {
        what,
        items_per_s: items as f64 / median_s,
        median_s,
        p99_s,
        gflops_per_s: items as f64 * flops_per_item / median_s / 1e9,
    }
}

/// Deterministic pseudo-random values in `[0, 1)`: inputs only need a shape.
fn noise(n: usize, seed: u64) -> impl Iterator<Item = f32> {
    let mut s = seed | 1;
    (0..n).map(move |_| {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        (s >> 40) as f32 / (1u64 << 24) as f32
    })
}

/// Peak resident memory of this process (Linux), in MiB.
fn peak_rss_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

fn image_case(clip: &AltClip, args: &Args, tag: &str, batch: usize) -> Result<Case> {
    let v = &clip.config().vision_config;
    let side = v.image_size;
    let pixels: Vec<f32> = noise(batch * 3 * side * side, batch as u64)
        .map(|x| x * 4.0 - 2.0)
        .collect();
    let pixels = candle_core::Tensor::from_vec(pixels, (batch, 3, side, side), clip.device())?
        .to_dtype(clip.plan().activations)?;
    let times = measure(args.warmup, args.reps, || {
        clip.model()
            .image_features(&pixels)?
            .to_dtype(candle_core::DType::F32)?;
        Ok(())
    })?;
    Ok(case(
        format!("image_{tag}_b{batch}"),
        batch,
        image_flops(v, clip.config().projection_dim),
        times,
    ))
}

fn text_case(clip: &AltClip, args: &Args, tag: &str, batch: usize, len: usize) -> Result<Case> {
    let t = &clip.config().text_config;
    anyhow::ensure!(
        (2..=t.max_position_embeddings - 2).contains(&len),
        "--text-len {len}: expected 2..={} for this model",
        t.max_position_embeddings - 2
    );
    // <s> w ... w </s>, with w drawn from the ordinary vocabulary.
    let ids: Vec<Vec<u32>> = (0..batch)
        .map(|b| {
            let body = noise(len - 2, (b * 7919 + len) as u64)
                .map(|x| 5 + (x * (t.vocab_size - 6) as f32) as u32);
            std::iter::once(t.bos_token_id)
                .chain(body)
                .chain(std::iter::once(t.eos_token_id))
                .collect()
        })
        .collect();
    let inputs = TextInputs::new(&ids, t.pad_token_id, clip.device())?;
    let times = measure(args.warmup, args.reps, || {
        clip.model()
            .text_features(&inputs)?
            .to_dtype(candle_core::DType::F32)?;
        Ok(())
    })?;
    Ok(case(
        format!("text_{tag}_b{batch}_L{len}"),
        batch,
        text_flops(t, clip.config().projection_dim, len),
        times,
    ))
}

/// Which code paths ran, so that figures from different machines compare.
#[derive(Serialize)]
struct Engine {
    what: &'static str,
    linear_layers: &'static str,
    threads: usize,
}

fn print<T: Serialize>(line: &T) -> Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{}", serde_json::to_string(line)?)?;
    out.flush()?;
    Ok(())
}

pub fn run(args: Args) -> Result<ExitCode> {
    let tag = args.model.settings.dtype.name();
    let start = Instant::now();
    let clip = args.model.load()?;
    let load_s = start.elapsed().as_secs_f64();
    print(&Engine {
        what: "engine",
        linear_layers: clip.plan().describe(),
        threads: rayon::current_num_threads(),
    })?;
    for &b in args.image_batch.iter().filter(|&&b| b > 0) {
        print(&image_case(&clip, &args, tag, b).with_context(|| format!("image batch {b}"))?)?;
    }
    for &b in args.text_batch.iter().filter(|&&b| b > 0) {
        for &len in &args.text_len {
            let c = text_case(&clip, &args, tag, b, len)
                .with_context(|| format!("text batch {b} × {len} tokens"))?;
            print(&c)?;
        }
    }
    print(&Value {
        what: "load_s",
        value: load_s,
    })?;
    if let Some(mb) = peak_rss_mb() {
        print(&Value {
            what: "peak_rss_mb",
            value: mb,
        })?;
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flop_counts_match_the_issue_estimates() {
        // ViT-L/14 at 224 px ≈ 162 GFLOP per image; XLM-R-large ≈ 0.6 GFLOP
        // per token, so ≈ 9.7 GFLOP per 16-token text.
        let vit_l = VisionConfig {
            hidden_size: 1024,
            intermediate_size: 4096,
            num_hidden_layers: 24,
            num_attention_heads: 16,
            patch_size: 14,
            ..VisionConfig::default()
        };
        let image = image_flops(&vit_l, 768);
        let text = text_flops(&TextConfig::default(), 768, 16);
        assert!((image / 1e9 - 162.0).abs() < 5.0, "{}", image / 1e9);
        assert!((text / 1e9 - 9.7).abs() < 0.5, "{}", text / 1e9);
    }
}
