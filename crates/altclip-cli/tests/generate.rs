//! `altclip generate` on the tiny random AltDiffusion pipeline.

mod common;
use common::{altclip, fixtures, temp_dir};

fn text_chunks(path: &std::path::Path) -> Vec<(String, String)> {
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(path).unwrap()));
    let reader = decoder.read_info().unwrap();
    reader
        .info()
        .utf8_text
        .iter()
        .map(|c| (c.keyword.clone(), c.get_text().unwrap()))
        .collect()
}

#[test]
fn writes_seeded_pngs_with_the_prompt_in_their_metadata() {
    let out = temp_dir("generate");
    let model = fixtures().join("diffusion/tiny-altdiffusion");
    let run_into = |out: &std::path::Path, extra: &[&str]| {
        let mut args = vec![
            "generate",
            "--model",
            model.to_str().unwrap(),
            "一只穿着宇航服的猫，油画",
            "--width",
            "16",
            "--height",
            "16",
            "--steps",
            "2",
            "--out",
            out.to_str().unwrap(),
        ];
        args.extend(extra);
        altclip(&args)
    };
    let run = |extra: &[&str]| run_into(&out, extra);
    let o = run(&["-n", "2", "--seed", "7", "--scheduler", "euler-a"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let first = out.join("000-seed7.png");
    assert!(out.join("001-seed8.png").is_file());
    let meta = text_chunks(&first);
    assert!(
        meta.contains(&("prompt".into(), "一只穿着宇航服的猫，油画".into())),
        "{meta:?}"
    );
    assert!(meta.contains(&("seed".into(), "7".into())), "{meta:?}");
    let img = image::open(&first).unwrap();
    assert_eq!((img.width(), img.height()), (16, 16));

    // Same seed, same image.
    let again = temp_dir("generate-again");
    let o = run_into(&again, &["--seed", "7", "--scheduler", "euler-a"]);
    assert!(o.status.success());
    assert_eq!(image::open(again.join("000-seed7.png")).unwrap(), img);

    let bf16 = run(&["--dtype", "bf16"]);
    assert!(!bf16.status.success());
    assert!(String::from_utf8_lossy(&bf16.stderr).contains("use --dtype f32 or f16"));
    let f16 = run(&["--dtype", "f16", "--seed", "100"]);
    assert!(
        f16.status.success(),
        "{}",
        String::from_utf8_lossy(&f16.stderr)
    );
    let bad = run(&["--scheduler", "heun"]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("expected pndm, ddim, euler-a or dpm++"));
    let missing = altclip(&[
        "generate",
        "--model",
        "/nonexistent/dir",
        "x",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("/nonexistent/dir"));
    std::fs::remove_dir_all(out).unwrap();
    std::fs::remove_dir_all(again).unwrap();
}
