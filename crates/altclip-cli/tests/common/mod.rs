//! Helpers shared by the CLI test binaries.
#![allow(dead_code)] // each test binary uses its own subset

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures")
}

pub fn model() -> String {
    fixtures().join("tiny-224").display().to_string()
}

pub fn image(name: &str) -> String {
    fixtures().join("images").join(name).display().to_string()
}

pub fn altclip(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_altclip"))
        .args(args)
        .env_remove("ALTCLIP_MODEL")
        .output()
        .expect("run altclip")
}

pub fn json_lines(out: &Output) -> Vec<Value> {
    String::from_utf8(out.stdout.clone())
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// A fresh scratch directory for one test.
pub fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("altclip-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
