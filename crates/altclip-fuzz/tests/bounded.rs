//! The bounded fuzzing run of `cargo test`: every target for a few seconds
//! (`ALTCLIP_FUZZ_SECONDS`, default 8; under two minutes in all), no failures.

use std::time::Duration;

use altclip_fuzz::{fuzz, Harness, Target};

#[test]
fn every_target_survives_a_bounded_run() {
    let seconds: u64 = std::env::var("ALTCLIP_FUZZ_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(8);
    let out = std::env::temp_dir().join(format!("altclip-fuzz-out-{}", std::process::id()));
    let mut harness = Harness::new().unwrap();
    let mut report = Vec::new();
    for target in Target::ALL {
        let stats = fuzz(&mut harness, target, Duration::from_secs(seconds), 1, &out).unwrap();
        println!(
            "{}: {} executions ({} seeds), {} failing",
            target.name(),
            stats.executions,
            stats.seeds,
            stats.failed
        );
        assert!(
            stats.executions > stats.seeds as u64,
            "{}: no mutants ran",
            target.name()
        );
        for f in &stats.failures {
            report.push(format!(
                "{}: {} ({})",
                target.name(),
                f.message,
                f.input.display()
            ));
        }
    }
    assert!(report.is_empty(), "failing inputs:\n{}", report.join("\n"));
}
