//! Metrics and zero-shot classification against the numpy / transformers
//! references of scripts/make_eval_fixtures.py (see tests/fixtures/eval/README.md).

use std::path::PathBuf;

use altclip::preprocess::{open_rgb, DEFAULT_MAX_PIXELS};
use altclip::zeroshot::load_templates;
use altclip::{AltClip, LoadOptions, Templates, ZeroShotClassifier};
use altclip_eval::metrics::{classification_metrics, retrieval_metrics};
use serde_json::Value;

#[path = "../../../tests/support/fixtures.rs"]
mod common;
use common::{fixtures, indices, read_json, rows};

fn eval_fixtures() -> PathBuf {
    fixtures().join("eval")
}

/// References are stored as float32, so compare to that precision.
fn assert_metric(case: &str, name: &str, ours: f64, expected: &Value) {
    let expected = expected
        .as_f64()
        .unwrap_or_else(|| panic!("{case}: no reference for {name}"));
    assert!(
        (ours - expected).abs() < 1e-6,
        "{case}: {name} = {ours}, reference {expected}"
    );
}

#[test]
fn retrieval_metrics_match_the_reference_formulas() {
    let cases = read_json(&eval_fixtures().join("metrics.json"));
    for case in cases["retrieval"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let ours = retrieval_metrics(
            &rows(&case["text_emb"]),
            &rows(&case["image_emb"]),
            &indices(&case["text_to_image"]),
            &indices(&case["ks"]),
        );
        let expected = case["metrics"].as_object().unwrap();
        let names: Vec<&String> = expected.keys().collect();
        let our_names: Vec<&String> = ours.iter().map(|(k, _)| k).collect();
        assert_eq!(our_names, names, "{name}: metric names and order");
        for (metric, value) in &ours {
            assert_metric(name, metric, *value, &expected[metric]);
        }
    }
}

#[test]
fn classification_metrics_match_the_reference_formulas() {
    let cases = read_json(&eval_fixtures().join("metrics.json"));
    for case in cases["classification"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let m = classification_metrics(&rows(&case["logits"]), &indices(&case["targets"]));
        let expected = &case["metrics"];
        assert_metric(name, "acc1", m.acc1, &expected["acc1"]);
        assert_metric(
            name,
            "mean_per_class_recall",
            m.mean_per_class_recall,
            &expected["mean_per_class_recall"],
        );
        match m.acc5 {
            Some(v) => assert_metric(name, "acc5", v, &expected["acc5"]),
            None => assert!(
                expected["acc5"].is_null(),
                "{name}: acc5 should be reported"
            ),
        }
    }
}

fn clip() -> AltClip {
    let model = fixtures().join("tiny-224");
    AltClip::load(model.to_str().unwrap(), &LoadOptions::default()).unwrap()
}

#[test]
fn class_embeddings_logits_and_probabilities_match_transformers() {
    let data = eval_fixtures().join("data");
    let reference = read_json(&eval_fixtures().join("reference.json"));
    let templates = Templates::List(load_templates(&data.join("templates.json")).unwrap());
    let clip = clip();
    for language in ["en", "zh"] {
        let r = &reference["zeroshot"][language];
        let names =
            altclip::zeroshot::load_classnames(&data.join("classnames.json"), language).unwrap();
        let classifier = ZeroShotClassifier::new(&clip, &names, &templates, 4).unwrap();
        for (ours, expected) in classifier
            .class_embeddings()
            .iter()
            .zip(rows(&r["class_embeddings"]))
        {
            let max = ours
                .iter()
                .zip(&expected)
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            assert!(max < 1e-5, "{language}: class embedding differs by {max}");
        }
        let samples: Vec<String> = r["samples"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_str().unwrap().to_string())
            .collect();
        for (sample, expected) in samples.iter().zip(rows(&r["logits"])) {
            let img = open_rgb(&data.join(sample), DEFAULT_MAX_PIXELS).unwrap();
            let features = clip.image_features(&[img]).unwrap().remove(0);
            let logits: Vec<f32> = classifier
                .cosines(&features)
                .iter()
                .map(|c| 100.0 * c)
                .collect();
            let max = logits
                .iter()
                .zip(&expected)
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            assert!(max < 1e-3, "{language} {sample}: logits differ by {max}");
            if language == "en" {
                let i = reference["classify"]["images"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .position(|p| p == sample)
                    .unwrap();
                let probs = classifier.probabilities(&features);
                let expected = &rows(&reference["classify"]["probs"])[i];
                let max = probs
                    .iter()
                    .zip(expected)
                    .map(|(a, b)| (a - b).abs())
                    .fold(0f32, f32::max);
                assert!(max < 1e-5, "{sample}: probabilities differ by {max}");
                let top = classifier.top_k(&features, 2);
                assert_eq!(top[0].index, altclip::embedding::ranking(expected)[0]);
                assert!(top[0].prob >= top[1].prob);
            }
        }
    }
}
