//! Parity of the CLIP text tower (the distillation teacher) and its tokenizer
//! with transformers on `tests/fixtures/train/clip-tiny` (made by
//! scripts/make_train_fixtures.py).

use altclip::Device;
use altclip_train::clip_text::{clip_tokenizer, ClipText, ClipTextInputs};

#[path = "../../../tests/support/fixtures.rs"]
mod common;
use common::{fixtures, floats, ids, read_json, rows, strings};

fn teacher_dir() -> std::path::PathBuf {
    fixtures().join("train").join("clip-tiny")
}

fn max_abs(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[test]
fn clip_tokenizer_matches_transformers() {
    let reference = read_json(&teacher_dir().join("reference.json"));
    let texts = strings(&reference["texts"]);
    let texts: Vec<&str> = texts.iter().map(String::as_str).collect();
    let expected = ids(&reference["ids"]);
    let tok = clip_tokenizer(&teacher_dir()).unwrap();
    assert_eq!(tok.encode(&texts).unwrap(), expected);
    // vocab.json + merges.txt alone build the same tokenizer.
    let dir = std::env::temp_dir().join(format!("altclip-clip-tok-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for f in ["vocab.json", "merges.txt", "tokenizer_config.json"] {
        std::fs::copy(teacher_dir().join(f), dir.join(f)).unwrap();
    }
    let from_files = clip_tokenizer(&dir).unwrap();
    assert_eq!(from_files.encode(&texts).unwrap(), expected);
    assert_eq!(from_files.pad_id(), tok.pad_id());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn clip_text_model_matches_transformers() {
    let reference = read_json(&teacher_dir().join("reference.json"));
    let texts = strings(&reference["texts"]);
    let texts: Vec<&str> = texts.iter().map(String::as_str).collect();
    let clip = ClipText::load(&teacher_dir(), &Device::Cpu).unwrap();
    assert_eq!(
        clip.config.text_config.eos_token_id, 2,
        "legacy argmax pooling"
    );
    let out = clip.model.forward(&clip.inputs(&texts).unwrap()).unwrap();

    let pooled: Vec<Vec<f32>> = out.pooler_output.to_vec2().unwrap();
    let expected = rows(&reference["pooler_output"]);
    let worst = pooled
        .iter()
        .zip(&expected)
        .map(|(a, b)| max_abs(a, b))
        .fold(0.0, f32::max);
    eprintln!(
        "pooler_output: max |Δ| {worst:.3e} over {} texts",
        texts.len()
    );
    assert!(worst <= 2e-5, "pooler_output max |Δ| {worst:.3e}");

    let embeds: Vec<Vec<f32>> = clip
        .model
        .project(&out.pooler_output)
        .unwrap()
        .to_vec2()
        .unwrap();
    for (a, b) in embeds.iter().zip(rows(&reference["text_embeds"])) {
        assert!(
            max_abs(a, &b) <= 2e-5,
            "text_embeds max |Δ| {}",
            max_abs(a, &b)
        );
    }

    // The unpadded tokens of the first text, every position.
    let n = ids(&reference["ids"])[0].len();
    let first: Vec<f32> = out
        .last_hidden_state
        .get(0)
        .unwrap()
        .narrow(0, 0, n)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    let d = max_abs(&first, &floats(&reference["last_hidden_state_0"]));
    assert!(d <= 2e-5, "last_hidden_state max |Δ| {d:.3e}");

    // ClipText::pooled is the same thing per text.
    let one = clip.pooled(&texts[..1]).unwrap();
    assert!(max_abs(&one[0], &expected[0]) <= 2e-5);
}

#[test]
fn clip_first_eos_pooling_rule_matches_transformers() {
    let reference = read_json(&teacher_dir().join("reference.json"));
    let texts = strings(&reference["texts"]);
    let texts: Vec<&str> = texts.iter().map(String::as_str).collect();
    let clip = ClipText::load(&teacher_dir(), &Device::Cpu).unwrap();
    let eos = reference["first_eos_token_id"].as_u64().unwrap() as u32;
    let ids = clip.tokenizer.encode(&texts).unwrap();
    let inputs = ClipTextInputs::new(&ids, clip.tokenizer.pad_id(), eos, &Device::Cpu).unwrap();
    let pooled: Vec<Vec<f32>> = clip
        .model
        .forward(&inputs)
        .unwrap()
        .pooler_output
        .to_vec2()
        .unwrap();
    for (a, b) in pooled
        .iter()
        .zip(rows(&reference["pooler_output_first_eos"]))
    {
        assert!(max_abs(a, &b) <= 2e-5, "max |Δ| {}", max_abs(a, &b));
    }
}

#[test]
fn clip_pooling_positions_follow_transformers_rules() {
    let ids = vec![vec![9, 5, 7, 3], vec![9, 4]];
    // Legacy rule: argmax of the padded ids (pad 7 is larger than 4, so the padding wins).
    let legacy = ClipTextInputs::new(&ids, 7, 2, &Device::Cpu).unwrap();
    assert_eq!(
        legacy.pool_positions.to_vec1::<u32>().unwrap(),
        vec![0, 0],
        "9 is the first maximum in both rows"
    );
    let eos = ClipTextInputs::new(&ids, 7, 7, &Device::Cpu).unwrap();
    assert_eq!(eos.pool_positions.to_vec1::<u32>().unwrap(), vec![2, 2]);
    // Causal + padding: row 1 (length 2) lets query 3 see keys 0 and 1 only.
    let mask: Vec<Vec<Vec<f32>>> = eos.mask.squeeze(1).unwrap().to_vec3().unwrap();
    let row1 = &mask[1];
    assert_eq!(
        row1[3].iter().map(|&v| v == 0.0).collect::<Vec<_>>(),
        [true, true, false, false]
    );
    assert_eq!(
        row1[0].iter().map(|&v| v == 0.0).collect::<Vec<_>>(),
        [true, false, false, false]
    );
}
