//! A fuzzing campaign: every seed as it is, then mutants of random seeds
//! until the time budget is spent. Failing inputs are saved for replay.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::mutate::{mutate, Rng};
use crate::targets::{Harness, Target, SLOW_INPUT};

/// Most failing inputs saved per campaign; the rest are only counted.
const MAX_SAVED: usize = 20;

/// One failing input.
#[derive(Debug, Clone)]
pub struct Failure {
    /// What went wrong: the panic message and place, the 500, or the time.
    pub message: String,
    /// Where the input was saved (replay with `altclip-fuzz --replay`).
    pub input: PathBuf,
}

/// What a campaign did.
#[derive(Debug, Clone)]
pub struct Stats {
    pub target: Target,
    /// Inputs run, seeds included.
    pub executions: u64,
    /// Seed inputs found in the corpus.
    pub seeds: usize,
    /// Failing inputs, at most [`MAX_SAVED`] of them.
    pub failures: Vec<Failure>,
    /// Failing inputs in all.
    pub failed: u64,
    pub elapsed: Duration,
}

/// The files of `dir` (sorted, so runs are reproducible).
pub fn read_corpus(dir: &Path) -> std::io::Result<Vec<Vec<u8>>> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .collect();
    paths.sort();
    paths.iter().map(std::fs::read).collect()
}

/// The message of the last panic, with its location, set by the hook that
/// [`fuzz`] installs (the default hook would print every caught panic).
static LAST_PANIC: Mutex<Option<String>> = Mutex::new(None);

/// Replaces the panic hook with one that records the message for
/// [`run_one`] instead of printing it.
pub fn capture_panics() {
    std::panic::set_hook(Box::new(|info| {
        *LAST_PANIC.lock().unwrap_or_else(|e| e.into_inner()) = Some(info.to_string());
    }));
}

/// Fuzzes `target` for `budget`, saving failing inputs under `out`.
pub fn fuzz(
    harness: &mut Harness,
    target: Target,
    budget: Duration,
    seed: u64,
    out: &Path,
) -> anyhow::Result<Stats> {
    let seeds = read_corpus(&target.corpus_dir())?;
    anyhow::ensure!(
        !seeds.is_empty(),
        "no seed inputs in {}",
        target.corpus_dir().display()
    );
    let previous_hook = std::panic::take_hook();
    capture_panics();
    let mut stats = Stats {
        target,
        executions: 0,
        seeds: seeds.len(),
        failures: Vec::new(),
        failed: 0,
        elapsed: Duration::ZERO,
    };
    let mut rng = Rng::new(seed);
    let start = Instant::now();
    let mut next_seed = 0;
    // An input that aborts the process (a panic that cannot unwind, a stack
    // overflow) leaves no failure behind; the input in flight is kept here.
    let in_flight = out.join(target.name()).join("in-flight");
    std::fs::create_dir_all(out.join(target.name()))?;
    while next_seed < seeds.len() || start.elapsed() < budget {
        let input = if next_seed < seeds.len() {
            next_seed += 1;
            seeds[next_seed - 1].clone()
        } else {
            let mut d = seeds[rng.below(seeds.len())].clone();
            mutate(&mut d, &mut rng, &seeds, target.max_len());
            d
        };
        stats.executions += 1;
        std::fs::write(&in_flight, &input)?;
        if let Some(message) = run_one(harness, target, &input) {
            stats.failed += 1;
            if stats.failures.len() < MAX_SAVED {
                let path = save(out, target, &input)?;
                stats.failures.push(Failure {
                    message,
                    input: path,
                });
            }
        }
    }
    std::fs::remove_file(&in_flight)?;
    std::panic::set_hook(previous_hook);
    stats.elapsed = start.elapsed();
    Ok(stats)
}

/// Runs one input; `Some(message)` when it failed.
pub fn run_one(harness: &mut Harness, target: Target, input: &[u8]) -> Option<String> {
    let start = Instant::now();
    let outcome = catch_unwind(AssertUnwindSafe(|| harness.exec(target, input)));
    let took = start.elapsed();
    match outcome {
        Err(_) => Some(
            LAST_PANIC
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take()
                .unwrap_or_else(|| "panic".into()),
        ),
        Ok(Err(message)) => Some(message),
        Ok(Ok(())) if took > SLOW_INPUT => Some(format!(
            "one input took {:.1} s (limit {} s)",
            took.as_secs_f64(),
            SLOW_INPUT.as_secs()
        )),
        Ok(Ok(())) => None,
    }
}

/// Saves `input` as `out/<target>/<hash>`, named by its FNV-1a hash.
fn save(out: &Path, target: Target, input: &[u8]) -> std::io::Result<PathBuf> {
    let hash = input.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
        (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
    });
    let dir = out.join(target.name());
    std::fs::create_dir_all(&dir)?;
    let path = dir.join(format!("{hash:016x}"));
    std::fs::write(&path, input)?;
    Ok(path)
}
