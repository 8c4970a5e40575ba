//! The trainable text tower: gradients reach every parameter, and the
//! training forward pass is the inference one.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use altclip::weights::Weights;
use altclip::{AltClip, DType, Device, LoadOptions};
use altclip_train::{Student, StudentKind, StudentOptions};
use candle_core::Tensor;

#[path = "../../../tests/support/fixtures.rs"]
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
    let inference = clip.model().text_features(&inputs).unwrap();
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

// ---------------------------------------------------------------------------
// Training machinery against PyTorch (tests/fixtures/train, made by
// scripts/make_train_fixtures.py).
// ---------------------------------------------------------------------------

use altclip_train::clip_text::ClipText;
use altclip_train::contrastive::{CaptionSet, ContrastiveObjective};
use altclip_train::data::ParallelPair;
use altclip_train::distill::{DistillObjective, DistillSet, PairMode};
use altclip_train::optim::AdamWConfig;
use altclip_train::schedule::{Decay, LrSchedule};
use altclip_train::{Objective, TrainConfig, Trainer};
use common::{floats, ids, read_json, rows};
use serde_json::Value;

fn train_fixtures() -> PathBuf {
    fixtures().join("train")
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("altclip-train-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn config_from(hp: &Value, batch_size: usize) -> TrainConfig {
    TrainConfig {
        batch_size,
        grad_accumulation: hp["accumulation"].as_u64().unwrap() as usize,
        epochs: 1,
        max_steps: Some(hp["total_steps"].as_u64().unwrap()),
        lr: hp["lr"].as_f64().unwrap(),
        warmup_steps: hp["warmup_steps"].as_u64().unwrap(),
        decay: match hp["schedule"].as_str().unwrap() {
            "cosine" => Decay::Cosine,
            _ => Decay::Linear,
        },
        optimizer: AdamWConfig {
            beta1: hp["beta1"].as_f64().unwrap(),
            beta2: hp["beta2"].as_f64().unwrap(),
            eps: hp["eps"].as_f64().unwrap(),
            weight_decay: hp["weight_decay"].as_f64().unwrap(),
        },
        clip_grad_norm: Some(hp["clip_grad_norm"].as_f64().unwrap()),
        seed: 0,
        data: String::new(),
        save_every: None,
        eval_every: None,
        keep_checkpoints: 2,
    }
}

/// Worst relative error of our per-tensor update (after − before) against
/// PyTorch's, the worst absolute error of any updated weight, and the worst
/// absolute error in the attention key biases (see below).
fn compare_updated_weights(student: &Student, after: &Path, reference: &Value) -> (f64, f32, f32) {
    let before = Weights::from_dir(&fixtures().join("tiny-224"), DType::F32, &Device::Cpu).unwrap();
    let after = candle_core::safetensors::load(after, &Device::Cpu).unwrap();
    let word_rows: Vec<u32> = common::indices(&reference["word_rows"])
        .into_iter()
        .map(|i| i as u32)
        .collect();
    let pos_rows: Vec<u32> = common::indices(&reference["position_rows"])
        .into_iter()
        .map(|i| i as u32)
        .collect();
    let trained = common::strings(&reference["trained"]);
    let named = student.named_vars();
    assert_eq!(
        named.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>(),
        trained,
        "the same tensors are trained"
    );
    let (mut worst_rel, mut worst_abs, mut worst_key_bias) = (0.0f64, 0.0f32, 0.0f32);
    for (name, var) in named {
        let select = |t: &Tensor, rows: &[u32]| {
            let idx = Tensor::new(rows, &Device::Cpu).unwrap();
            t.index_select(&idx, 0).unwrap()
        };
        let (ours, init, theirs) = if name.ends_with("word_embeddings.weight")
            || name.ends_with("position_embeddings.weight")
        {
            let rows = if name.ends_with("word_embeddings.weight") {
                &word_rows
            } else {
                &pos_rows
            };
            let shape = before.shape(&name).unwrap();
            (
                select(var.as_tensor(), rows),
                select(&before.get(&shape, &name).unwrap(), rows),
                after[&format!("{name}.rows")].clone(),
            )
        } else {
            let shape = before.shape(&name).unwrap();
            (
                var.as_tensor().clone(),
                before.get(&shape, &name).unwrap(),
                after[&name].clone(),
            )
        };
        let flat = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let (ours, init, theirs) = (flat(&ours), flat(&init), flat(&theirs));
        let mut diff2 = 0.0f64;
        let mut upd2 = 0.0f64;
        let mut abs = 0.0f32;
        for ((o, i), t) in ours.iter().zip(&init).zip(&theirs) {
            abs = abs.max((o - t).abs());
            diff2 += ((o - t) as f64).powi(2);
            upd2 += ((t - i) as f64).powi(2);
        }
        assert!(upd2 > 0.0, "{name}: PyTorch did not update it");
        // The exact gradient of an attention key bias is zero (softmax is
        // shift-invariant per query); both frameworks feed float noise of
        // ~1e-9 into Adam, which scales it to lr-sized steps of either sign.
        // Such tensors are held to a bound of a few learning rates only.
        if name.ends_with("attention.self.key.bias") {
            worst_key_bias = worst_key_bias.max(abs);
        } else {
            worst_rel = worst_rel.max((diff2 / upd2).sqrt());
            worst_abs = worst_abs.max(abs);
        }
    }
    (worst_rel, worst_abs, worst_key_bias)
}

/// Three steps of `per_step` examples, against PyTorch's logged steps and
/// its weights after them (`{what}_after.safetensors`).
fn assert_three_steps_match(
    what: &str,
    student: &Student,
    objective: &dyn Objective,
    examples: usize,
    per_step: usize,
    reference: &Value,
) {
    let hp = &reference["hyper_parameters"];
    let out = scratch(&format!("{what}-parity"));
    let mut trainer = Trainer::new(student, examples, config_from(hp, per_step), &out).unwrap();
    let logs: Vec<_> = (0..3)
        .map(|s| {
            let batch: Vec<usize> = (s * per_step..(s + 1) * per_step).collect();
            trainer.train_step(objective, &batch).unwrap()
        })
        .collect();
    assert_steps_match(what, &logs, reference);
    let after = train_fixtures().join(format!("{what}_after.safetensors"));
    let (rel, abs, key_bias) = compare_updated_weights(student, &after, reference);
    eprintln!(
        "{what}: updated weights max |Δ| {abs:.3e}, worst per-tensor update error {rel:.3e}, \
         key biases max |Δ| {key_bias:.3e}"
    );
    let lr = hp["lr"].as_f64().unwrap() as f32;
    assert!(abs <= 2e-5 && rel <= 1e-3, "abs {abs:.3e} rel {rel:.3e}");
    assert!(key_bias <= 3.0 * lr, "key biases {key_bias:.3e}");
}

fn assert_steps_match(what: &str, logs: &[altclip_train::StepLog], reference: &Value) {
    let losses = floats(&reference["losses"]);
    let norms = floats(&reference["grad_norms"]);
    let lrs = floats(&reference["lrs"]);
    for (i, log) in logs.iter().enumerate() {
        let rel = |a: f64, b: f32| (a - b as f64).abs() / (b as f64).abs().max(1e-12);
        eprintln!(
            "{what} step {}: loss {:.7} (torch {:.7}), grad norm {:.6} (torch {:.6}), lr {:.3e}",
            i + 1,
            log.loss,
            losses[i],
            log.grad_norm,
            norms[i],
            log.lr
        );
        assert!(
            rel(log.loss, losses[i]) < 2e-5,
            "{what} step {}: loss",
            i + 1
        );
        assert!(
            rel(log.grad_norm, norms[i]) < 2e-4,
            "{what} step {}: grad norm",
            i + 1
        );
        assert!(rel(log.lr, lrs[i]) < 1e-6 || (log.lr == 0.0 && lrs[i] == 0.0));
    }
}

#[test]
fn schedules_match_transformers() {
    let reference = read_json(&train_fixtures().join("schedules.json"));
    for (name, case) in reference.as_object().unwrap() {
        let schedule = LrSchedule {
            base_lr: case["base"].as_f64().unwrap(),
            warmup_steps: case["warmup"].as_u64().unwrap(),
            total_steps: case["total"].as_u64().unwrap(),
            decay: if name.starts_with("cosine") {
                Decay::Cosine
            } else {
                Decay::Linear
            },
        };
        for (step, lr) in floats(&case["lrs"]).into_iter().enumerate() {
            let ours = schedule.lr(step as u64) as f32;
            assert!(
                (ours - lr).abs() <= 1e-7,
                "{name} step {step}: {ours} vs {lr}"
            );
        }
    }
}

#[test]
fn distillation_steps_match_pytorch() {
    let reference = read_json(&train_fixtures().join("distill.json"));
    let teacher = ClipText::load(&train_fixtures().join("clip-tiny"), &Device::Cpu).unwrap();
    let student = altclip_student(false);
    let pairs: Vec<ParallelPair> = reference["pairs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| ParallelPair {
            en: p[0].as_str().unwrap().into(),
            other: p[1].as_str().unwrap().into(),
        })
        .collect();
    // Both tokenizers agree with transformers on these sentences.
    for (i, p) in pairs.iter().enumerate() {
        let s = student.tokenizer.encode(&[&p.en, &p.other]).unwrap();
        assert_eq!(s, ids(&reference["student_ids"][i]));
        assert_eq!(
            teacher.tokenizer.encode(&[&p.en]).unwrap()[0],
            ids(&reference["teacher_ids"])[i]
        );
    }
    // Our teacher reproduces the recorded targets; the recorded ones drive the steps.
    let english: Vec<&str> = pairs.iter().map(|p| p.en.as_str()).collect();
    let ours = teacher.pooled(&english).unwrap();
    let targets = rows(&reference["teacher_targets"]);
    for (a, b) in ours.iter().zip(&targets) {
        let d = a
            .iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f32::max);
        assert!(d <= 2e-5, "teacher target max |Δ| {d}");
    }
    let targets = Tensor::new(targets, &Device::Cpu).unwrap();
    let objective = DistillObjective {
        train: DistillSet::new(&student, &pairs, targets).unwrap(),
        dev: None,
        mode: PairMode::Both,
        eval_batch_size: 8,
    };
    let per_step = 2 * reference["hyper_parameters"]["pairs_per_micro_batch"]
        .as_u64()
        .unwrap() as usize;
    assert_three_steps_match(
        "distill",
        &student,
        &objective,
        pairs.len(),
        per_step,
        &reference,
    );
}

#[test]
fn contrastive_steps_match_pytorch() {
    let reference = read_json(&train_fixtures().join("contrastive.json"));
    let student = altclip_student(true);
    let captions: Vec<String> = reference["captions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c[1].as_str().unwrap().to_string())
        .collect();
    for (i, c) in captions.iter().enumerate() {
        assert_eq!(
            student.tokenizer.encode(&[c]).unwrap()[0],
            ids(&reference["ids"])[i]
        );
    }
    let features = rows(&reference["image_features"]);
    let objective = ContrastiveObjective {
        train: CaptionSet::new(
            &student,
            &captions,
            (0..captions.len()).collect(),
            &features,
        )
        .unwrap(),
        dev: None,
        scale: reference["logit_scale"].as_f64().unwrap().exp(),
        eval_batch_size: 8,
    };
    let bs = reference["hyper_parameters"]["batch_size"]
        .as_u64()
        .unwrap() as usize;
    assert_three_steps_match(
        "contrastive",
        &student,
        &objective,
        captions.len(),
        bs,
        &reference,
    );
}

// ---------------------------------------------------------------------------
// A toy run: learning happens, and a resumed run replays the uninterrupted one.
// ---------------------------------------------------------------------------

/// 240 synthetic English/Chinese sentence pairs, deterministic.
fn toy_pairs() -> Vec<ParallelPair> {
    let adjs = [
        ("red", "红色的"),
        ("small", "小"),
        ("big", "大"),
        ("black", "黑色的"),
        ("white", "白色的"),
        ("cute", "可爱的"),
    ];
    let objs = [
        ("cat", "猫"),
        ("dog", "狗"),
        ("car", "汽车"),
        ("bird", "鸟"),
        ("horse", "马"),
        ("boat", "船"),
        ("tree", "树"),
        ("flower", "花"),
    ];
    let places = [
        ("on the grass", "在草地上"),
        ("in the park", "在公园里"),
        ("on the beach", "在海边"),
        ("in the snow", "在雪地里"),
        ("on the table", "在桌子上"),
    ];
    let mut pairs = Vec::new();
    for (ae, az) in adjs {
        for (oe, oz) in objs {
            for (pe, pz) in places {
                pairs.push(ParallelPair {
                    en: format!("a {ae} {oe} {pe}"),
                    other: format!("一只{az}{oz}{pz}"),
                });
            }
        }
    }
    altclip_train::rng::Rng::new(11).shuffle(&mut pairs);
    pairs
}

fn toy_objective(
    student: &Student,
    teacher: &ClipText,
    pairs: &[ParallelPair],
    dev: usize,
) -> DistillObjective {
    let english: Vec<&str> = pairs.iter().map(|p| p.en.as_str()).collect();
    let targets = Tensor::new(teacher.pooled(&english).unwrap(), &Device::Cpu).unwrap();
    let n = pairs.len() - dev;
    DistillObjective {
        train: DistillSet::new(student, &pairs[..n], targets.narrow(0, 0, n).unwrap()).unwrap(),
        dev: (dev > 0).then(|| {
            DistillSet::new(student, &pairs[n..], targets.narrow(0, n, dev).unwrap()).unwrap()
        }),
        mode: PairMode::Both,
        eval_batch_size: 64,
    }
}

#[test]
fn toy_distillation_learns() {
    let teacher = ClipText::load(&train_fixtures().join("clip-tiny"), &Device::Cpu).unwrap();
    let dir = xlmr_dir("toy");
    let opts = StudentOptions {
        project_dim: Some(48),
        with_text_projection: false,
        seed: 1,
    };
    let student = Student::load(&dir, &opts, &Device::Cpu).unwrap();
    let pairs = toy_pairs();
    let objective = toy_objective(&student, &teacher, &pairs, 40);
    let before = objective.evaluate(&student).unwrap().unwrap();
    // What predicting the mean teacher vector of the training pairs scores on dev:
    // learning must beat it, not just find the mean.
    let english: Vec<&str> = pairs.iter().map(|p| p.en.as_str()).collect();
    let targets = Tensor::new(teacher.pooled(&english).unwrap(), &Device::Cpu).unwrap();
    let mean = targets.narrow(0, 0, 200).unwrap().mean_keepdim(0).unwrap();
    let baseline: f32 = targets
        .narrow(0, 200, 40)
        .unwrap()
        .broadcast_sub(&mean)
        .unwrap()
        .sqr()
        .unwrap()
        .mean_all()
        .unwrap()
        .to_scalar()
        .unwrap();
    eprintln!("  dev MSE of the mean teacher vector: {baseline:.4}");
    let config = TrainConfig {
        batch_size: 8,
        epochs: 15,
        lr: 2e-3,
        warmup_steps: 20,
        decay: Decay::Cosine,
        optimizer: AdamWConfig {
            weight_decay: 0.01,
            ..AdamWConfig::default()
        },
        clip_grad_norm: Some(1.0),
        seed: 3,
        ..TrainConfig::default()
    };
    let out = scratch("toy");
    let mut trainer = Trainer::new(&student, objective.len(), config, &out).unwrap();
    let start = std::time::Instant::now();
    trainer.run(&objective, &mut |_| true).unwrap();
    let elapsed = start.elapsed().as_secs_f64();
    let after = objective.evaluate(&student).unwrap().unwrap();
    let f = |v: &Value, k: &str| v[k].as_f64().unwrap();
    eprintln!(
        "toy distillation, {} steps of 8 pairs in {elapsed:.1}s ({:.0} pairs/s):",
        trainer.step(),
        trainer.step() as f64 * 8.0 / elapsed
    );
    for k in [
        "mse_en",
        "mse_translated",
        "cosine_en_translated",
        "cosine_translated_teacher",
        "translation_to_en_recall@1",
    ] {
        eprintln!("  {k}: {:.4} -> {:.4}", f(&before, k), f(&after, k));
    }
    // Validation MSE falls by a large factor and well below the mean-vector baseline.
    assert!(f(&after, "mse_en") * 8.0 < f(&before, "mse_en"));
    assert!(f(&after, "mse_translated") * 8.0 < f(&before, "mse_translated"));
    assert!(f(&after, "mse_translated") * 2.5 < baseline as f64);
    // Unseen translations land on the teacher's embedding of their English side...
    assert!(f(&before, "cosine_translated_teacher") < 0.3);
    assert!(f(&after, "cosine_translated_teacher") > 0.9);
    // ...close to the student's own embedding of it, and retrievable by it.
    assert!(f(&after, "cosine_en_translated") > f(&before, "cosine_en_translated"));
    assert!(
        f(&after, "translation_to_en_recall@1") > f(&before, "translation_to_en_recall@1") + 0.3
    );
    std::fs::remove_dir_all(&dir).unwrap();
    std::fs::remove_dir_all(&out).unwrap();
}

#[test]
fn resumed_run_replays_the_uninterrupted_one() {
    let teacher = ClipText::load(&train_fixtures().join("clip-tiny"), &Device::Cpu).unwrap();
    let pairs: Vec<ParallelPair> = toy_pairs().into_iter().take(40).collect();
    let config = TrainConfig {
        batch_size: 8,
        grad_accumulation: 2,
        epochs: 2,
        lr: 1e-3,
        warmup_steps: 2,
        save_every: Some(3),
        seed: 9,
        ..TrainConfig::default()
    };
    let read_log = |dir: &Path| -> Vec<Value> {
        std::fs::read_to_string(dir.join(altclip_train::trainer::LOG_FILE))
            .unwrap()
            .lines()
            .map(|l| {
                let mut v: Value = serde_json::from_str(l).unwrap();
                v.as_object_mut().unwrap().remove("samples_per_s");
                v
            })
            .collect()
    };
    let params = |s: &Student| -> Vec<Vec<f32>> {
        s.named_vars()
            .iter()
            .map(|(_, v)| v.as_tensor().flatten_all().unwrap().to_vec1().unwrap())
            .collect()
    };

    // Uninterrupted: 10 steps (2 epochs of 5).
    let full = scratch("resume-full");
    let student = altclip_student(false);
    let objective = toy_objective(&student, &teacher, &pairs, 0);
    let mut trainer = Trainer::new(&student, pairs.len(), config.clone(), &full).unwrap();
    trainer.run(&objective, &mut |_| true).unwrap();
    assert_eq!(trainer.step(), 10);
    let expected_log = read_log(&full);
    let expected_params = params(&student);

    // Interrupted after step 7 (last checkpoint at 6), then resumed by a new process.
    let cut = scratch("resume-cut");
    let student = altclip_student(false);
    let mut trainer = Trainer::new(&student, pairs.len(), config.clone(), &cut).unwrap();
    trainer
        .run(
            &objective,
            &mut |e| !matches!(e, altclip_train::Event::Step { log, .. } if log.step == 7),
        )
        .unwrap();
    assert_eq!(trainer.step(), 7);
    // A fresh run into the same directory is refused.
    let student = altclip_student(false);
    let mut fresh = Trainer::new(&student, pairs.len(), config.clone(), &cut).unwrap();
    let err = fresh.run(&objective, &mut |_| true).unwrap_err();
    // The library names the data; the CLI adds the --resume advice (tests/cli train).
    assert!(
        matches!(&err, altclip_train::Error::CheckpointsExist(dir) if dir.starts_with(&cut)),
        "{err}"
    );
    // Resuming with another seed is refused, naming the setting.
    let other = TrainConfig {
        seed: 10,
        ..config.clone()
    };
    let mut wrong = Trainer::new(&student, pairs.len(), other, &cut).unwrap();
    let err = wrong.resume().unwrap_err().to_string();
    assert!(err.contains("seed (checkpoint 9, now 10)"), "{err}");

    let student = altclip_student(false);
    let objective = toy_objective(&student, &teacher, &pairs, 0);
    let mut trainer = Trainer::new(&student, pairs.len(), config, &cut).unwrap();
    assert_eq!(trainer.resume().unwrap(), Some(6));
    trainer.run(&objective, &mut |_| true).unwrap();
    assert_eq!(
        read_log(&cut),
        expected_log,
        "the loss curve is replayed exactly"
    );
    assert_eq!(
        params(&student),
        expected_params,
        "the final weights are identical"
    );
    let kept: Vec<_> = std::fs::read_dir(cut.join("checkpoints"))
        .unwrap()
        .collect();
    assert_eq!(kept.len(), 2, "only the newest checkpoints are kept");
    std::fs::remove_dir_all(&full).unwrap();
    std::fs::remove_dir_all(&cut).unwrap();
}

// ---------------------------------------------------------------------------
// Export: the trained student as an AltCLIP model directory.
// ---------------------------------------------------------------------------

use altclip_train::export::{export_altclip, ExportPlan};

fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar()
        .unwrap()
}

#[test]
fn distilled_xlmr_student_exports_as_altclip_with_the_teachers_image_side() {
    let teacher_dir = train_fixtures().join("clip-tiny");
    let dir = xlmr_dir("export");
    let opts = StudentOptions {
        project_dim: Some(48),
        with_text_projection: false,
        seed: 4,
    };
    let student = Student::load(&dir, &opts, &Device::Cpu).unwrap();
    let out = scratch("export-distill");
    let plan = ExportPlan::for_distill(&student, &teacher_dir).unwrap();
    export_altclip(&out, &student, &plan).unwrap();
    for f in [
        "config.json",
        "model.safetensors",
        "preprocessor_config.json",
        "tokenizer.json",
        "sentencepiece.bpe.model",
    ] {
        assert!(out.join(f).is_file(), "{f}");
    }
    let clip = AltClip::load(out.to_str().unwrap(), &LoadOptions::default()).unwrap();
    assert_eq!(clip.config().text_config.project_dim, 48);
    assert_eq!(clip.config().vision_config.image_size, 32);
    // Text: the student's pooled vector through the teacher's text_projection.
    let inputs = student.inputs(&TEXTS).unwrap();
    let teacher_w = Weights::from_dir(&teacher_dir, DType::F32, &Device::Cpu).unwrap();
    let projection = teacher_w.get(&[32, 48], "text_projection.weight").unwrap();
    let expected = student
        .pooled(&inputs)
        .unwrap()
        .matmul(&projection.t().unwrap())
        .unwrap();
    let got = clip.model().text_features(&inputs).unwrap();
    assert!(max_diff(&expected, &got) < 1e-5);
    // Image side: the teacher's tensors, unchanged.
    let exported = Weights::from_dir(&out, DType::F32, &Device::Cpu).unwrap();
    for key in teacher_w.names() {
        if key.starts_with("vision_model.")
            || key == "visual_projection.weight"
            || key == "logit_scale"
        {
            let shape = teacher_w.shape(&key).unwrap();
            assert_eq!(
                max_diff(
                    &teacher_w.get(&shape, &key).unwrap(),
                    &exported.get(&shape, &key).unwrap()
                ),
                0.0,
                "{key}"
            );
        }
    }
    assert!(!exported
        .names()
        .iter()
        .any(|n| n.contains("pooler") || n.contains("lm_head")));
    std::fs::remove_dir_all(&dir).unwrap();
    std::fs::remove_dir_all(&out).unwrap();
}

#[test]
fn contrastive_student_exports_with_its_own_image_side() {
    let student = altclip_student(true);
    // Move the weights so that the export visibly carries the trained values.
    for (_, var) in student.named_vars() {
        var.set(&(var.as_tensor() * 1.01).unwrap()).unwrap();
    }
    let out = scratch("export-contrastive");
    let plan = ExportPlan::for_contrastive(&student).unwrap();
    export_altclip(&out, &student, &plan).unwrap();
    let clip = AltClip::load(out.to_str().unwrap(), &LoadOptions::default()).unwrap();
    let inputs = student.inputs(&TEXTS).unwrap();
    let got = clip.model().text_features(&inputs).unwrap();
    assert!(max_diff(&student.text_features(&inputs).unwrap(), &got) < 1e-5);
    let original = AltClip::load(
        fixtures().join("tiny-224").to_str().unwrap(),
        &LoadOptions::default(),
    )
    .unwrap();
    assert_eq!(clip.logit_scale(), original.logit_scale());
    let img =
        altclip::preprocess::open_rgb(&fixtures().join("images/photo.png"), u64::MAX).unwrap();
    assert_eq!(
        clip.image_features(std::slice::from_ref(&img)).unwrap(),
        original.image_features(&[img]).unwrap()
    );
    std::fs::remove_dir_all(&out).unwrap();
}
