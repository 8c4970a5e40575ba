//! `altclip train distill` / `altclip train contrastive` on the tiny fixtures:
//! both phases end to end, the outputs served by `altclip embed`, the log,
//! the teacher cache, and resuming after a crash.

use std::path::{Path, PathBuf};

use serde_json::Value;

mod common;
use common::{altclip, fixtures, json_lines, model, temp_dir};

/// `count` synthetic English/Chinese pairs.
fn write_parallel(path: &Path, count: usize) {
    let objs = [
        ("cat", "猫"),
        ("dog", "狗"),
        ("car", "汽车"),
        ("bird", "鸟"),
        ("horse", "马"),
    ];
    let places = [
        ("on the grass", "在草地上"),
        ("in the park", "在公园里"),
        ("on the beach", "在海边"),
        ("in the snow", "在雪地里"),
    ];
    let mut lines = String::new();
    for (i, ((oe, oz), (pe, pz))) in objs
        .iter()
        .flat_map(|o| places.iter().map(move |p| (o, p)))
        .enumerate()
    {
        if i == count {
            break;
        }
        lines.push_str(&format!("a {oe} {pe}\t一只{oz}{pz}\n"));
    }
    std::fs::write(path, lines).unwrap();
}

fn teacher() -> String {
    fixtures()
        .join("train")
        .join("clip-tiny")
        .display()
        .to_string()
}

fn log_lines(out: &Path) -> Vec<Value> {
    std::fs::read_to_string(out.join("train_log.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn run_ok(args: &[&str]) -> std::process::Output {
    let out = altclip(args);
    assert!(
        out.status.success(),
        "altclip {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn distill_args(data: &str, out: &str, extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = [
        "train",
        "distill",
        "--teacher",
        &teacher(),
        "--student",
        &model(),
        "--data",
        data,
        "--out",
        out,
        "--batch-size",
        "4",
        "--lr",
        "1e-3",
        "--warmup-steps",
        "2",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

fn strs(args: &[String]) -> Vec<&str> {
    args.iter().map(String::as_str).collect()
}

#[test]
fn both_phases_end_to_end_and_served_by_embed() {
    let dir = temp_dir("train-e2e");
    let data = dir.join("parallel.tsv");
    write_parallel(&data, 16);
    let out1 = dir.join("phase1");
    let (data_s, out1_s) = (data.display().to_string(), out1.display().to_string());

    let run = run_ok(&strs(&distill_args(
        &data_s,
        &out1_s,
        &["--epochs", "2", "--eval-data", &data_s],
    )));
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(stderr.contains("computed and cached"), "{stderr}");
    let summary: Value = serde_json::from_slice(&run.stdout).unwrap();
    assert_eq!(summary["steps"], 8);
    assert!(summary["eval"]["mse_translated"].as_f64().unwrap() > 0.0);
    for f in [
        "config.json",
        "model.safetensors",
        "preprocessor_config.json",
        "tokenizer.json",
    ] {
        assert!(out1.join(f).is_file(), "{f}");
    }
    // One log line per step (loss, lr, grad norm), then the final evaluation.
    let log = log_lines(&out1);
    assert_eq!(log.len(), 9);
    for (i, line) in log[..8].iter().enumerate() {
        assert_eq!(line["step"], i as u64 + 1);
        for key in ["loss", "lr", "grad_norm", "samples_per_s"] {
            assert!(line[key].as_f64().unwrap().is_finite(), "{key} in {line}");
        }
    }
    assert_eq!(log[0]["lr"], 0.0, "warm-up starts at 0");
    assert!(log[8]["eval"]["cosine_en_translated"].is_number());

    // The distilled model serves embeddings.
    let embed = run_ok(&["embed", "--model", &out1_s, "--text", "一只猫在草地上"]);
    let lines = json_lines(&embed);
    assert_eq!(lines[0]["embedding"].as_array().unwrap().len(), 32);

    // Phase 2 on that model: mixed zh/en captions of the fixture images.
    let images = fixtures().join("images");
    let pairs = dir.join("pairs.tsv");
    let captions = [
        ("photo.png", "一张照片"),
        ("noise.png", "random noise"),
        ("gray.png", "一张灰色的图片"),
        ("small.png", "a tiny picture"),
    ];
    let tsv: String = captions
        .iter()
        .map(|(f, c)| format!("{}\t{c}\n", images.join(f).display()))
        .collect();
    std::fs::write(&pairs, tsv).unwrap();
    let out2 = dir.join("phase2");
    let (pairs_s, out2_s) = (pairs.display().to_string(), out2.display().to_string());
    let cache_s = dir.join("image-cache").display().to_string();
    let run = run_ok(&[
        "train",
        "contrastive",
        "--model",
        &out1_s,
        "--data",
        &pairs_s,
        "--eval-data",
        &pairs_s,
        "--out",
        &out2_s,
        "--batch-size",
        "4",
        "--steps",
        "3",
        "--lr",
        "1e-3",
        "--warmup-steps",
        "0",
        "--cache-dir",
        &cache_s,
    ]);
    let summary: Value = serde_json::from_slice(&run.stdout).unwrap();
    assert_eq!(summary["steps"], 3);
    assert!(summary["eval"]["mean_recall"].as_f64().is_some());
    assert_eq!(log_lines(&out2).len(), 4);
    let before = json_lines(&run_ok(&[
        "embed",
        "--model",
        &out1_s,
        "--text",
        "一张照片",
    ]));
    let after = json_lines(&run_ok(&[
        "embed",
        "--model",
        &out2_s,
        "--text",
        "一张照片",
    ]));
    assert_ne!(
        before[0]["embedding"], after[0]["embedding"],
        "training moved the text side"
    );
    let image = images.join("photo.png").display().to_string();
    let before = json_lines(&run_ok(&["embed", "--model", &out1_s, "--image", &image]));
    let after = json_lines(&run_ok(&["embed", "--model", &out2_s, "--image", &image]));
    assert_eq!(
        before[0]["embedding"], after[0]["embedding"],
        "the image tower is frozen"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn resume_after_a_crash_replays_the_log_and_reuses_the_teacher_cache() {
    let dir = temp_dir("train-resume");
    let data = dir.join("parallel.tsv");
    write_parallel(&data, 12);
    let full = dir.join("full");
    let data_s = data.display().to_string();
    let full_s = full.display().to_string();
    let extra = [
        "--epochs",
        "2",
        "--save-every",
        "2",
        "--keep-checkpoints",
        "5",
    ];
    run_ok(&strs(&distill_args(&data_s, &full_s, &extra)));
    let strip = |mut lines: Vec<Value>| -> Vec<Value> {
        for l in &mut lines {
            l.as_object_mut().unwrap().remove("samples_per_s");
        }
        lines
    };
    let expected = strip(log_lines(&full));
    assert_eq!(expected.len(), 6);

    // A copy of the run as it stood when it died after step 3: the last
    // checkpoint is step 2, the log already holds step 3.
    let crashed = dir.join("crashed");
    copy_dir(&full, &crashed);
    for later in ["step-00000004", "step-00000006"] {
        std::fs::remove_dir_all(crashed.join("checkpoints").join(later)).unwrap();
    }
    std::fs::remove_file(crashed.join("model.safetensors")).unwrap();
    let log: Vec<String> = std::fs::read_to_string(crashed.join("train_log.jsonl"))
        .unwrap()
        .lines()
        .take(3)
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(crashed.join("train_log.jsonl"), log.concat()).unwrap();
    let crashed_s = crashed.display().to_string();

    // Without --resume the directory is refused.
    let refused = altclip(&strs(&distill_args(&data_s, &crashed_s, &extra)));
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--resume"));

    // The same number of lines with one edited is other data: refused.
    let edited = dir.join("edited.tsv");
    let text = std::fs::read_to_string(&data).unwrap();
    std::fs::write(&edited, text.replacen('\t', " (edited)\t", 1)).unwrap();
    let args = distill_args(
        &edited.display().to_string(),
        &crashed_s,
        &[&extra[..], &["--resume"]].concat(),
    );
    let refused = altclip(&strs(&args));
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("other training settings") && stderr.contains("data"),
        "{stderr}"
    );

    let args = distill_args(&data_s, &crashed_s, &[&extra[..], &["--resume"]].concat());
    let run = run_ok(&strs(&args));
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(stderr.contains("resuming from step 2"), "{stderr}");
    assert!(stderr.contains("from the cache"), "{stderr}");
    assert_eq!(strip(log_lines(&crashed)), expected);
    assert_eq!(
        std::fs::read(full.join("model.safetensors")).unwrap(),
        std::fs::read(crashed.join("model.safetensors")).unwrap(),
        "the resumed run ends with identical weights"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bad_training_input_is_explained() {
    let dir = temp_dir("train-bad");
    let data = dir.join("bad.tsv");
    std::fs::write(&data, "a cat\t一只猫\nno tab on this line\n").unwrap();
    let out = dir.join("out").display().to_string();
    let run = altclip(&strs(&distill_args(&data.display().to_string(), &out, &[])));
    assert!(!run.status.success());
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(stderr.contains("bad.tsv:2"), "{stderr}");

    // A CLIP model is not an AltCLIP student.
    write_parallel(&data, 8);
    let mut args = distill_args(&data.display().to_string(), &out, &[]);
    let student = args.iter().position(|a| a == "--student").unwrap() + 1;
    args[student] = teacher();
    let run = altclip(&strs(&args));
    assert!(!run.status.success());
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(stderr.contains("cannot be a student"), "{stderr}");
    std::fs::remove_dir_all(&dir).unwrap();
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let path: PathBuf = entry.unwrap().path();
        let target = to.join(path.file_name().unwrap());
        if path.is_dir() {
            copy_dir(&path, &target);
        } else {
            std::fs::copy(&path, &target).unwrap();
        }
    }
}
