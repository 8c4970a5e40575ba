//! The trainable text tower: gradients reach every parameter, and the
//! training forward pass is the inference one.

use std::collections::HashMap;
use std::path::PathBuf;

use altclip::train::{Student, StudentKind, StudentOptions};
use altclip::weights::Weights;
use altclip::{AltClip, DType, Device, LoadOptions};
use candle_core::Tensor;

mod common;
use common::fixtures;

const TEXTS: [&str; 4] = [
    "a photo of a cat",
    "一只在草地上的猫",
    "一张 photo of 猫 and a dog 🐶",
    "x",
];

fn altclip_student(with_text_projection: bool) -> Student {
    let opts = StudentOptions {
        project_dim: Some(48),
        with_text_projection,
        seed: 0,
    };
    Student::load(&fixtures().join("tiny-224"), &opts, &Device::Cpu).unwrap()
}

/// A plain XLM-R checkpoint (XLMRobertaForMaskedLM layout: `roberta.*`, a
/// pooler and an LM head the student must ignore) cut out of tiny-224.
fn xlmr_dir(name: &str) -> PathBuf {
    let src = fixtures().join("tiny-224");
    let dir = std::env::temp_dir().join(format!("altclip-xlmr-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let w = Weights::from_dir(&src, DType::F32, &Device::Cpu).unwrap();
    let mut tensors = HashMap::new();
    for key in w.names() {
        if let Some(rest) = key.strip_prefix("text_model.roberta.") {
            let shape = w.shape(&key).unwrap();
            tensors.insert(format!("roberta.{rest}"), w.get(&shape, &key).unwrap());
        }
    }
    tensors.insert(
        "roberta.pooler.dense.weight".into(),
        Tensor::ones((64, 64), DType::F32, &Device::Cpu).unwrap(),
    );
    tensors.insert(
        "lm_head.bias".into(),
        Tensor::ones(1002, DType::F32, &Device::Cpu).unwrap(),
    );
    candle_core::safetensors::save(&tensors, dir.join("model.safetensors")).unwrap();
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(src.join("config.json")).unwrap()).unwrap();
    let mut text = config["text_config"].clone();
    text["model_type"] = "xlm-roberta".into();
    text["architectures"] = serde_json::json!(["XLMRobertaForMaskedLM"]);
    text.as_object_mut().unwrap().remove("project_dim");
    std::fs::write(dir.join("config.json"), text.to_string()).unwrap();
    for f in ["tokenizer.json", "sentencepiece.bpe.model"] {
        std::fs::copy(src.join(f), dir.join(f)).unwrap();
    }
    dir
}

fn assert_all_gradients_nonzero(student: &Student, output: &Tensor) {
    let target = output.ones_like().unwrap().affine(0.5, 0.0).unwrap();
    let loss = (output - target)
        .unwrap()
        .sqr()
        .unwrap()
        .mean_all()
        .unwrap();
    let grads = loss.backward().unwrap();
    let named = student.named_vars();
    assert!(!named.is_empty());
    for (name, var) in &named {
        let g = grads
            .get(var.as_tensor())
            .unwrap_or_else(|| panic!("{name}: no gradient"));
        let sum: f32 = g.abs().unwrap().sum_all().unwrap().to_scalar().unwrap();
        assert!(sum > 0.0 && sum.is_finite(), "{name}: gradient sum {sum}");
    }
}

#[test]
fn every_altclip_parameter_receives_a_nonzero_gradient() {
    let student = altclip_student(true);
    let inputs = student.inputs(&TEXTS).unwrap();
    let out = student.text_features(&inputs).unwrap();
    assert_all_gradients_nonzero(&student, &out);
    // 2 layers × 16 tensors + 5 embedding tensors + pre_LN (2) + transformation (2) + text_projection.
    assert_eq!(student.named_vars().len(), 2 * 16 + 5 + 2 + 2 + 1);
}

#[test]
fn every_xlmr_parameter_receives_a_nonzero_gradient() {
    let dir = xlmr_dir("grad");
    let opts = StudentOptions {
        project_dim: Some(48),
        with_text_projection: false,
        seed: 0,
    };
    let student = Student::load(&dir, &opts, &Device::Cpu).unwrap();
    assert_eq!(student.kind, StudentKind::XlmRoberta);
    let names: Vec<String> = student.named_vars().into_iter().map(|(n, _)| n).collect();
    assert!(
        names.iter().all(|n| n.starts_with("text_model.")),
        "{names:?}"
    );
    assert!(!names
        .iter()
        .any(|n| n.contains("pooler") || n.contains("lm_head")));
    let out = student.pooled(&student.inputs(&TEXTS).unwrap()).unwrap();
    assert_eq!(out.dims(), &[4, 48]);
    assert_all_gradients_nonzero(&student, &out);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn fresh_head_follows_transformers_init_and_the_seed() {
    let dir = xlmr_dir("init");
    let load = |seed| {
        let opts = StudentOptions {
            project_dim: Some(48),
            with_text_projection: false,
            seed,
        };
        Student::load(&dir, &opts, &Device::Cpu).unwrap()
    };
    let get = |s: &Student, name: &str| -> Vec<f32> {
        let vars = s.vars.data().lock().unwrap();
        vars[name]
            .as_tensor()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap()
    };
    let (a, b, c) = (load(1), load(1), load(2));
    let w = get(&a, "text_model.transformation.weight");
    assert_eq!(w, get(&b, "text_model.transformation.weight"));
    assert_ne!(w, get(&c, "text_model.transformation.weight"));
    let std = (w.iter().map(|x| x * x).sum::<f32>() / w.len() as f32).sqrt();
    assert!((std - 0.02).abs() < 0.002, "std {std}");
    assert!(get(&a, "text_model.pre_LN.weight")
        .iter()
        .all(|&x| x == 1.0));
    assert!(get(&a, "text_model.pre_LN.bias").iter().all(|&x| x == 0.0));
    assert!(get(&a, "text_model.transformation.bias")
        .iter()
        .all(|&x| x == 0.0));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn student_variables_are_the_checkpoint_keys() {
    let student = altclip_student(true);
    let w = Weights::from_dir(&fixtures().join("tiny-224"), DType::F32, &Device::Cpu).unwrap();
    let mut expected: Vec<String> = w
        .names()
        .into_iter()
        .filter(|n| n.starts_with("text_model.") || n == "text_projection.weight")
        .collect();
    expected.sort();
    let names: Vec<String> = student.named_vars().into_iter().map(|(n, _)| n).collect();
    assert_eq!(names, expected);
}

#[test]
fn training_forward_is_the_inference_forward() {
    let clip = AltClip::load(
        fixtures().join("tiny-224").to_str().unwrap(),
        &LoadOptions::default(),
    )
    .unwrap();
    let student = altclip_student(true);
    let inputs = student.inputs(&TEXTS).unwrap();
    let inference = clip.model.text_features(&inputs).unwrap();
    let training = student.text_features(&inputs).unwrap();
    assert!(!inference.track_op() && training.track_op());
    let diff: f32 = (inference - training)
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar()
        .unwrap();
    assert!(diff <= 1e-5, "max |Δ| {diff:.3e}");
}

#[test]
fn mismatched_student_width_is_explained() {
    let opts = StudentOptions {
        project_dim: Some(768),
        with_text_projection: false,
        seed: 0,
    };
    let err = Student::load(&fixtures().join("tiny-224"), &opts, &Device::Cpu)
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("project_dim is 48") && err.contains("768"),
        "{err}"
    );
    let teacher = fixtures().join("train").join("clip-tiny");
    let err = Student::load(&teacher, &opts, &Device::Cpu)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("model_type `clip`"), "{err}");
}
