//! `altclip-fuzz`: runs fuzzing campaigns, or replays saved failing inputs.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use altclip_fuzz::{fuzz, run_one, Harness, Target};
use anyhow::{Context, Result};
use clap::Parser;

/// Fuzz AltCLIP's input parsers (images, text, configs, weights, HTTP
/// requests) with mutants of the seeds in crates/altclip-fuzz/corpus.
///
/// Failing inputs (panics, HTTP 500s, inputs slower than 5 s) are saved
/// under --out and printed; replay one with --replay after a fix.
#[derive(Parser, Debug)]
#[command(
    after_help = "Examples:\n  cargo run -p altclip-fuzz --release -- --seconds 600\n  \
                  cargo run -p altclip-fuzz --release -- image request --seconds 300 --seed 7\n  \
                  cargo run -p altclip-fuzz --release -- image --replay target/fuzz/image/0123abcd"
)]
struct Args {
    /// Targets to fuzz, one after another (default: all).
    #[arg(value_enum)]
    targets: Vec<Target>,
    /// Seconds per target.
    #[arg(long, default_value_t = 60)]
    seconds: u64,
    /// PRNG seed: the same seed and corpus give the same inputs.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Folder for failing inputs.
    #[arg(long, default_value = "target/fuzz")]
    out: PathBuf,
    /// Run this one input through the (single) target instead of fuzzing.
    #[arg(long)]
    replay: Option<PathBuf>,
}

fn main() -> Result<ExitCode> {
    let args = Args::parse();
    let targets = if args.targets.is_empty() {
        Target::ALL.to_vec()
    } else {
        args.targets.clone()
    };
    let mut harness = Harness::new().context("loading the fixture model")?;
    if let Some(path) = &args.replay {
        let [target] = targets[..] else {
            anyhow::bail!(
                "--replay needs exactly one target, e.g. `altclip-fuzz image --replay FILE`"
            );
        };
        let input = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        altclip_fuzz::run::capture_panics();
        return Ok(match run_one(&mut harness, target, &input) {
            Some(message) => {
                eprintln!("{}: fails: {message}", path.display());
                ExitCode::FAILURE
            }
            None => {
                eprintln!("{}: ok", path.display());
                ExitCode::SUCCESS
            }
        });
    }
    let mut failed = 0;
    for target in targets {
        let stats = fuzz(
            &mut harness,
            target,
            Duration::from_secs(args.seconds),
            args.seed,
            &args.out,
        )?;
        println!(
            "{}: {} executions ({} seeds) in {:.0} s, {:.0}/s, {} failing",
            target.name(),
            stats.executions,
            stats.seeds,
            stats.elapsed.as_secs_f64(),
            stats.executions as f64 / stats.elapsed.as_secs_f64(),
            stats.failed
        );
        for f in &stats.failures {
            println!("  {}: {}", f.input.display(), f.message);
        }
        failed += stats.failed;
    }
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
