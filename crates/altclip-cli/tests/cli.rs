//! The `altclip` command-line contract, run against the tiny fixture models.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

mod common;
use common::{altclip, fixtures, image, json_lines, model, temp_dir};

fn norm(v: &Value) -> f64 {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap().powi(2))
        .sum::<f64>()
        .sqrt()
}

#[test]
fn embed_prints_images_then_texts_normalised() {
    let m = model();
    let out = altclip(&[
        "embed",
        "--model",
        &m,
        "--text",
        "一只猫",
        "--image",
        &image("photo.png"),
        "--text",
        "a dog",
        "--image",
        &image("gray.png"),
        "--batch-size",
        "1",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines = json_lines(&out);
    let kinds: Vec<_> = lines.iter().map(|l| l["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["image", "image", "text", "text"]);
    assert_eq!(lines[2]["input"], "一只猫");
    assert_eq!(lines[3]["input"], "a dog");
    assert!(lines[0]["input"].as_str().unwrap().ends_with("photo.png"));
    for l in &lines {
        assert_eq!(l["embedding"].as_array().unwrap().len(), 32);
        assert!((norm(&l["embedding"]) - 1.0).abs() < 1e-5);
    }
}

#[test]
fn embed_raw_matches_reference_features() {
    let m = model();
    let reference: Value = serde_json::from_str(
        &std::fs::read_to_string(fixtures().join("tiny-224/reference.json")).unwrap(),
    )
    .unwrap();
    let text = reference["texts"][0].as_str().unwrap();
    let out = altclip(&["embed", "--model", &m, "--raw", "--text", text]);
    assert!(out.status.success());
    let ours = &json_lines(&out)[0]["embedding"];
    let expected = &reference["text_features"][0];
    for (a, b) in ours
        .as_array()
        .unwrap()
        .iter()
        .zip(expected.as_array().unwrap())
    {
        assert!((a.as_f64().unwrap() - b.as_f64().unwrap()).abs() < 1e-4);
    }
    assert!((norm(ours) - norm(expected)).abs() < 1e-4);
}

#[test]
fn a_bad_image_does_not_take_down_the_batch() {
    let m = model();
    let out = altclip(&[
        "embed",
        "--model",
        &m,
        "--image",
        &image("photo.png"),
        "--image",
        &image("corrupt.png"),
        "--image",
        &image("notimage.png"),
        "--image",
        "/no/such/file.png",
        "--image",
        &image("gray.png"),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let lines = json_lines(&out);
    assert_eq!(lines.len(), 5);
    for i in [0, 4] {
        assert!(lines[i]["embedding"].is_array(), "{}", lines[i]);
    }
    for i in [1, 2, 3] {
        let err = lines[i]["error"].as_str().unwrap();
        assert!(err.contains(lines[i]["input"].as_str().unwrap()), "{err}");
        assert!(lines[i].get("embedding").is_none());
    }
}

#[test]
fn images_over_the_pixel_limit_are_refused() {
    let m = model();
    let out = altclip(&[
        "embed",
        "--model",
        &m,
        "--max-pixels",
        "1000",
        "--image",
        &image("photo.png"),
        "--image",
        &image("small.png"),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let lines = json_lines(&out);
    assert!(
        lines[0]["error"].as_str().unwrap().contains("--max-pixels"),
        "{}",
        lines[0]
    );
    assert!(lines[1]["embedding"].is_array());
}

#[test]
fn a_small_image_with_a_huge_tail_is_refused_unread() {
    // A valid 20x15 PNG followed by 40 MB (sparse): at 1000 pixels the file
    // may have at most 4000 bytes + 16 MiB, so it is refused from its size.
    let m = model();
    let path = std::env::temp_dir().join(format!("altclip-tail-{}.png", std::process::id()));
    std::fs::copy(image("small.png"), &path).unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(40 << 20)
        .unwrap();
    let out = altclip(&[
        "embed",
        "--model",
        &m,
        "--max-pixels",
        "1000",
        "--image",
        path.to_str().unwrap(),
        "--image",
        &image("small.png"),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let lines = json_lines(&out);
    let err = lines[0]["error"].as_str().unwrap();
    assert!(
        err.contains("altclip-tail") && err.contains("over the limit"),
        "{err}"
    );
    assert!(lines[1]["embedding"].is_array(), "{}", lines[1]);
    std::fs::remove_file(path).unwrap();
}

#[test]
fn invalid_utf8_in_texts_file_names_the_line() {
    let m = model();
    let path = std::env::temp_dir().join(format!("altclip-texts-{}.txt", std::process::id()));
    std::fs::write(&path, b"good line\n\xff\xfe bad\n").unwrap();
    let out = altclip(&[
        "embed",
        "--model",
        &m,
        "--texts-file",
        path.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("{}:2", path.display())), "{err}");
    std::fs::remove_file(path).unwrap();
}

#[test]
fn texts_file_lines_are_embedded_in_order() {
    let m = model();
    let path = std::env::temp_dir().join(format!("altclip-texts-ok-{}.txt", std::process::id()));
    std::fs::write(&path, "第一行\r\nsecond\n\nfourth\n").unwrap();
    let out = altclip(&[
        "embed",
        "--model",
        &m,
        "--text",
        "zero",
        "--texts-file",
        path.to_str().unwrap(),
    ]);
    assert!(out.status.success());
    let inputs: Vec<_> = json_lines(&out)
        .iter()
        .map(|l| l["input"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(inputs, ["zero", "第一行", "second", "", "fourth"]);
    std::fs::remove_file(path).unwrap();
}

#[test]
fn tokenize_prints_ids_with_specials_and_no_padding() {
    let m = model();
    let reference: Value = serde_json::from_str(
        &std::fs::read_to_string(fixtures().join("tiny-224/reference.json")).unwrap(),
    )
    .unwrap();
    let texts: Vec<&str> = reference["texts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    let mut args = vec!["tokenize", "--model", &m];
    args.extend(&texts);
    let out = altclip(&args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines = json_lines(&out);
    assert_eq!(lines.len(), texts.len());
    for (line, expected) in lines.iter().zip(reference["input_ids"].as_array().unwrap()) {
        assert_eq!(&line["ids"], expected, "{}", line["text"]);
    }
}

#[test]
fn similarity_is_a_softmax_per_image() {
    let m = model();
    let out = altclip(&[
        "similarity",
        "--model",
        &m,
        "--image",
        &image("photo.png"),
        "--image",
        &image("corrupt.png"),
        "--text",
        "一只猫",
        "--text",
        "a dog",
        "--text",
        "🐱",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let lines = json_lines(&out);
    let probs: Vec<f64> = lines[0]["probs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_f64().unwrap())
        .collect();
    assert_eq!(probs.len(), 3);
    assert!((probs.iter().sum::<f64>() - 1.0).abs() < 1e-5);
    assert!(lines[1]["error"].is_string());
}

/// A tiny PNG whose shortest-edge resize would be 224×22,400,000 pixels is
/// refused in its place; the image beside it is still embedded.
#[test]
fn an_extreme_aspect_ratio_is_refused_without_losing_the_batch() {
    let dir = temp_dir("strip");
    let strip = dir.join("strip.png");
    let file = std::fs::File::create(&strip).unwrap();
    let mut encoder = png::Encoder::new(std::io::BufWriter::new(file), 1, 100_000);
    encoder.set_color(png::ColorType::Grayscale);
    encoder.set_compression(png::Compression::Fast);
    let mut writer = encoder.write_header().unwrap();
    writer.write_image_data(&vec![128u8; 100_000]).unwrap();
    writer.finish().unwrap();
    let m = model();
    let out = altclip(&[
        "embed",
        "--model",
        &m,
        "--image",
        &image("photo.png"),
        "--image",
        strip.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let lines = json_lines(&out);
    assert!(lines[0]["embedding"].is_array(), "{}", lines[0]);
    let err = lines[1]["error"].as_str().unwrap();
    assert!(
        err.contains("strip.png") && err.contains("aspect ratio"),
        "{err}"
    );
    std::fs::remove_dir_all(dir).unwrap();
}

/// `altclip info | true`: the reader goes away before the output is written;
/// the process ends quietly, as Unix tools do, instead of panicking.
#[cfg(unix)]
#[test]
fn a_closed_stdout_ends_the_process_without_a_panic() {
    use std::os::unix::process::ExitStatusExt;
    use std::process::Stdio;
    let mut child = Command::new(env!("CARGO_BIN_EXE_altclip"))
        .args(["info", "--model", &model()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(
        out.status.signal(),
        Some(13),
        "killed by SIGPIPE: {:?}",
        out.status
    );
}

#[test]
fn threads_and_forced_kernels_reach_the_engine() {
    let m = model();
    let run = |envs: &[(&str, &str)], args: &[&str]| -> Value {
        let out = Command::new(env!("CARGO_BIN_EXE_altclip"))
            .args(["info", "--model", &m])
            .args(args)
            .env_remove("ALTCLIP_THREADS")
            .env_remove("ALTCLIP_KERNELS")
            .envs(envs.iter().copied())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    };
    assert_eq!(run(&[], &["--threads", "1"])["threads"], 1);
    assert_eq!(run(&[("ALTCLIP_THREADS", "3")], &[])["threads"], 3);
    assert_eq!(
        run(&[("ALTCLIP_KERNELS", "candle")], &[])["linear_layers"],
        "candle matmul"
    );
    let avx2 = run(&[("ALTCLIP_KERNELS", "avx2")], &[]);
    assert!(
        ["avx2 f32 kernels (packed weights)", "candle matmul"]
            .contains(&avx2["linear_layers"].as_str().unwrap()),
        "{avx2}"
    );
}

#[test]
fn info_reports_origin_parameters_and_config() {
    let m = model();
    let out = altclip(&["info", "--model", &m]);
    assert!(out.status.success());
    let info: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(info["origin"], "local directory");
    assert_eq!(info["embedding_dim"], 32);
    assert_eq!(info["config"]["vision_config"]["patch_size"], 32);
    assert!([
        "avx512f f32 kernels (packed weights)",
        "avx2 f32 kernels (packed weights)",
        "candle matmul"
    ]
    .contains(&info["linear_layers"].as_str().unwrap()));
    assert!(info["parameters"].as_u64().unwrap() > 100_000);
    assert!(info["weights"][0]
        .as_str()
        .unwrap()
        .ends_with("model.safetensors"));
}

#[test]
fn bench_prints_one_json_line_per_case() {
    let m = model();
    for dtype in ["f32", "bf16"] {
        let out = altclip(&[
            "bench",
            "--model",
            &m,
            "--dtype",
            dtype,
            "--image-batch",
            "2",
            "--text-batch",
            "1,3",
            "--text-len",
            "5",
            "--reps",
            "2",
            "--warmup",
            "0",
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let lines = json_lines(&out);
        let whats: Vec<&str> = lines.iter().map(|l| l["what"].as_str().unwrap()).collect();
        let want = [
            "engine".to_string(),
            format!("image_{dtype}_b2"),
            format!("text_{dtype}_b1_L5"),
            format!("text_{dtype}_b3_L5"),
            "load_s".to_string(),
        ];
        assert_eq!(
            whats[..5],
            want.iter().map(String::as_str).collect::<Vec<_>>()
        );
        assert!(lines[0]["threads"].as_u64().unwrap() >= 1);
        for case in &lines[1..4] {
            let rate = case["items_per_s"].as_f64().unwrap();
            let median = case["median_s"].as_f64().unwrap();
            assert!(rate > 0.0 && median > 0.0 && case["p99_s"].as_f64().unwrap() >= median);
            assert!(case["gflops_per_s"].as_f64().unwrap() > 0.0);
        }
    }
}

#[test]
fn unknown_model_errors_say_how_to_fix() {
    let out = Command::new(env!("CARGO_BIN_EXE_altclip"))
        .args(["info", "--model", "nobody/not-a-model"])
        .env("HF_HUB_OFFLINE", "1")
        .env(
            "HF_HUB_CACHE",
            std::env::temp_dir().join("altclip-empty-cache"),
        )
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("nobody/not-a-model") && err.contains("huggingface-cli download"),
        "{err}"
    );

    let out = altclip(&["info", "--model", "./no/such/dir"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("no such directory"));
}

#[test]
fn hub_ids_resolve_through_the_hf_cache() {
    let cache = std::env::temp_dir().join(format!("altclip-hf-cache-{}", std::process::id()));
    let repo = cache.join("models--test-org--tiny-altclip");
    let snapshot = repo.join("snapshots").join("0123abc");
    std::fs::create_dir_all(&snapshot).unwrap();
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    std::fs::write(repo.join("refs").join("main"), "0123abc").unwrap();
    for file in [
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "preprocessor_config.json",
    ] {
        std::fs::copy(fixtures().join("tiny-224").join(file), snapshot.join(file)).unwrap();
    }
    let out = Command::new(env!("CARGO_BIN_EXE_altclip"))
        .args(["info", "--model", "test-org/tiny-altclip"])
        .env("HF_HUB_CACHE", &cache)
        .env("HF_HUB_OFFLINE", "1")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let info: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        info["origin"],
        "Hugging Face cache (test-org/tiny-altclip@main)"
    );
    std::fs::remove_dir_all(cache).unwrap();
}

#[test]
fn texts_file_dash_reads_stdin() {
    use std::io::Write;
    let mut child = Command::new(env!("CARGO_BIN_EXE_altclip"))
        .args(["embed", "--model", &model(), "--texts-file", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all("一只猫\na dog\n".as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let inputs: Vec<_> = json_lines(&out)
        .iter()
        .map(|l| l["input"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(inputs, ["一只猫", "a dog"]);
}

fn eval_data() -> PathBuf {
    fixtures().join("eval/data")
}

fn eval_reference() -> Value {
    serde_json::from_str(&std::fs::read_to_string(fixtures().join("eval/reference.json")).unwrap())
        .unwrap()
}

/// Runs an eval command writing its result to a temp file and returns the result JSON.
fn run_eval(args: &[&str], out: &Path) -> (Output, Value) {
    let mut all: Vec<&str> = args.to_vec();
    all.extend(["--output", out.to_str().unwrap()]);
    let output = altclip(&all);
    let result = serde_json::from_str(&std::fs::read_to_string(out).unwrap_or_else(|_| {
        panic!(
            "no result file; stderr: {}",
            String::from_utf8_lossy(&output.stderr)
        )
    }))
    .unwrap();
    (output, result)
}

/// `altclip eval zeroshot` of the tiny model on `dataset` with the fixture
/// class names and templates, in `language`, plus `extra` flags.
fn eval_zeroshot(dataset: &Path, language: &str, extra: &[&str], out: &Path) -> (Output, Value) {
    let (m, data) = (model(), eval_data());
    let (classnames, templates) = (data.join("classnames.json"), data.join("templates.json"));
    let mut args = vec![
        "eval",
        "zeroshot",
        "--model",
        &m,
        "--dataset",
        dataset.to_str().unwrap(),
        "--classnames",
        classnames.to_str().unwrap(),
        "--templates",
        templates.to_str().unwrap(),
        "--language",
        language,
    ];
    args.extend(extra);
    run_eval(&args, out)
}

/// `altclip eval retrieval` of the tiny model on the fixture images with
/// `captions`, in `language`, plus `extra` flags.
fn eval_retrieval(captions: &Path, language: &str, extra: &[&str], out: &Path) -> (Output, Value) {
    let (m, images) = (model(), eval_data().join("retrieval/images"));
    let mut args = vec![
        "eval",
        "retrieval",
        "--model",
        &m,
        "--images",
        images.to_str().unwrap(),
        "--captions",
        captions.to_str().unwrap(),
        "--language",
        language,
    ];
    args.extend(extra);
    run_eval(&args, out)
}

fn assert_metrics_match(what: &str, ours: &Value, reference: &Value) {
    let ours = ours.as_object().unwrap();
    let reference = reference.as_object().unwrap();
    assert_eq!(
        ours.keys().collect::<Vec<_>>(),
        reference.keys().collect::<Vec<_>>(),
        "{what}"
    );
    for (k, v) in reference {
        match v.as_f64() {
            Some(r) => assert!(
                (ours[k].as_f64().unwrap() - r).abs() < 1e-6,
                "{what}: {k} {} vs {r}",
                ours[k]
            ),
            None => assert!(ours[k].is_null(), "{what}: {k}"),
        }
    }
}

#[test]
fn eval_zeroshot_matches_transformers_and_reports_unreadable_images() {
    let dir = temp_dir("eval-zeroshot");
    let cache = dir.join("cache");
    let data = eval_data();
    let reference = eval_reference();
    let (folder, csv) = (data.join("imagefolder"), data.join("labels.csv"));
    for language in ["en", "zh"] {
        let out = dir.join(format!("folder-{language}.json"));
        let cache_dir = ["--cache-dir", cache.to_str().unwrap()];
        let (output, result) = eval_zeroshot(&folder, language, &cache_dir, &out);
        assert_eq!(
            output.status.code(),
            Some(1),
            "broken.png must make the run fail at the end"
        );
        assert_metrics_match(
            language,
            &result["metrics"],
            &reference["zeroshot"][language]["metrics"],
        );
        assert_eq!(result["task"], "zeroshot_classification");
        // clip_benchmark build reads these keys.
        for key in [
            "dataset",
            "model",
            "pretrained",
            "task",
            "metrics",
            "language",
        ] {
            assert!(!result[key].is_null(), "{key} missing from the result");
        }
        assert_eq!(result["language"], language);
        assert_eq!(result["num_images"], 9);
        assert!(result["unreadable_images"][0]
            .as_str()
            .unwrap()
            .ends_with("broken.png"));
    }
    // The CSV layout of the same samples gives the same numbers, from the cache.
    let out = dir.join("csv.json");
    let cache_dir = ["--cache-dir", cache.to_str().unwrap()];
    let (output, result) = eval_zeroshot(&csv, "en", &cache_dir, &out);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_metrics_match(
        "csv",
        &result["metrics"],
        &reference["zeroshot"]["en"]["metrics"],
    );
    let cached = walk_count(&cache);
    assert_eq!(cached, 9, "one cache entry per distinct readable image");
    std::fs::remove_dir_all(dir).unwrap();
}

fn walk_count(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .map(|p| if p.is_dir() { walk_count(&p) } else { 1 })
        .sum()
}

/// The accuracy guard of `--dtype int8`: the benchmark figures of the tiny
/// model are those of transformers' f32 run.
#[test]
fn eval_figures_hold_under_int8() {
    let dir = temp_dir("eval-int8");
    let data = eval_data();
    let reference = eval_reference();
    let int8 = ["--dtype", "int8", "--no-cache"];
    for language in ["en", "zh"] {
        let out = dir.join(format!("zeroshot-{language}.json"));
        let (_, result) = eval_zeroshot(&data.join("imagefolder"), language, &int8, &out);
        assert_metrics_match(
            &format!("int8 zeroshot {language}"),
            &result["metrics"],
            &reference["zeroshot"][language]["metrics"],
        );
        let out = dir.join(format!("retrieval-{language}.json"));
        let captions = data.join(format!("retrieval/captions_{language}.tsv"));
        let (output, result) = eval_retrieval(&captions, language, &int8, &out);
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert_metrics_match(
            &format!("int8 retrieval {language}"),
            &result["metrics"],
            &reference["retrieval"][language]["metrics"],
        );
    }
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn eval_retrieval_matches_transformers_in_every_caption_format() {
    let dir = temp_dir("eval-retrieval");
    let reference = eval_reference();
    for language in ["en", "zh"] {
        for (file, format) in [
            (format!("karpathy_{language}.json"), "karpathy-json"),
            (
                format!("clip_benchmark_{language}.txt"),
                "clip-benchmark-txt",
            ),
            (format!("coco_{language}.json"), "coco-json"),
            (format!("captions_{language}.tsv"), "tsv"),
        ] {
            let captions = eval_data().join("retrieval").join(&file);
            let out = dir.join(format!("{file}.json"));
            let flags = ["--format", format, "--no-cache"];
            let (output, result) = eval_retrieval(&captions, language, &flags, &out);
            assert!(
                output.status.success(),
                "{file}: {}",
                String::from_utf8_lossy(&output.stderr)
            );
            assert_metrics_match(
                &file,
                &result["metrics"],
                &reference["retrieval"][language]["metrics"],
            );
            assert_eq!(
                result["num_texts"], reference["retrieval"][language]["num_texts"],
                "{file}"
            );
            assert_eq!(result["num_images"], 6, "{file}");
        }
    }
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn eval_limit_takes_a_quick_look() {
    let m = model();
    let dir = temp_dir("eval-limit");
    let captions = eval_data().join("retrieval/karpathy_en.json");
    let images = eval_data().join("retrieval/images");
    let (output, result) = run_eval(
        &[
            "eval",
            "retrieval",
            "--model",
            &m,
            "--images",
            images.to_str().unwrap(),
            "--captions",
            captions.to_str().unwrap(),
            "--limit",
            "2",
            "--no-cache",
        ],
        &dir.join("r.json"),
    );
    assert!(output.status.success());
    assert_eq!(result["num_images"], 2);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn classify_json_matches_transformers_probabilities() {
    let m = model();
    let data = eval_data();
    let reference = eval_reference();
    let images: Vec<String> = reference["classify"]["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| data.join(p.as_str().unwrap()).display().to_string())
        .collect();
    let templates = data.join("templates.json").display().to_string();
    let mut args = vec![
        "classify",
        "--model",
        &m,
        "--labels",
        "bird,cat,dog",
        "--templates",
        &templates,
        "--top-k",
        "3",
        "--json",
    ];
    for i in &images {
        args.extend(["--image", i.as_str()]);
    }
    let out = altclip(&args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines = json_lines(&out);
    assert_eq!(lines.len(), images.len());
    for (line, expected) in lines
        .iter()
        .zip(reference["classify"]["probs"].as_array().unwrap())
    {
        let top = line["top"].as_array().unwrap();
        assert_eq!(top.len(), 3);
        for entry in top {
            let i = entry["index"].as_u64().unwrap() as usize;
            let p = entry["prob"].as_f64().unwrap();
            assert!((p - expected[i].as_f64().unwrap()).abs() < 1e-5, "{line}");
        }
        assert!(top[0]["prob"].as_f64() >= top[1]["prob"].as_f64());
    }
}
