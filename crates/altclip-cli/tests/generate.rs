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
    // The defaults below, each unless `extra` sets it.
    let run_into = |out: &std::path::Path, extra: &[&str]| {
        let mut args = vec![
            "generate",
            "--model",
            model.to_str().unwrap(),
            "一只穿着宇航服的猫，油画",
            "--out",
            out.to_str().unwrap(),
        ];
        for (flag, value) in [("--width", "16"), ("--height", "16"), ("--steps", "2")] {
            if !extra.contains(&flag) {
                args.extend([flag, value]);
            }
        }
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

    // The metadata names the scheduler as --scheduler takes it.
    assert!(
        meta.contains(&("scheduler".into(), "euler-a".into())),
        "{meta:?}"
    );

    // bf16 runs where a bf16 kernel does, and is refused with the reason elsewhere.
    let bf16 = run(&["--dtype", "bf16", "--seed", "100"]);
    match altclip_kernels::Kernel::select(altclip_kernels::Precision::Bf16) {
        Some(_) => assert!(
            bf16.status.success(),
            "{}",
            String::from_utf8_lossy(&bf16.stderr)
        ),
        None => {
            assert!(!bf16.status.success());
            assert!(String::from_utf8_lossy(&bf16.stderr).contains("use --dtype f32"));
        }
    }
    let f16 = run(&["--dtype", "f16"]);
    assert!(!f16.status.success());
    assert!(String::from_utf8_lossy(&f16.stderr).contains("f32 or bf16"));

    // Values that cannot run are refused before anything is written.
    for (flag, value, says) in [
        ("--guidance", "nan", "not a finite number"),
        ("-n", "0", "0 is not in 1..=10000"),
        ("--steps", "1000", "use fewer steps"),
    ] {
        let empty = temp_dir("generate-refused");
        let o = run_into(&empty, &[flag, value]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            !o.status.success() && err.contains(says),
            "{flag} {value}: {err}"
        );
        assert_eq!(std::fs::read_dir(&empty).map(|d| d.count()).unwrap_or(0), 0);
        let _ = std::fs::remove_dir_all(empty);
    }

    // img2img: the init image's size (21×19 rounded down to 20×18), recorded in the metadata.
    let init = model.join("init.png");
    let o = run(&[
        "--init-image",
        init.to_str().unwrap(),
        "--strength",
        "0.5",
        "--steps",
        "4",
        "--seed",
        "9",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let path = out.join("000-seed9.png");
    let img = image::open(&path).unwrap();
    assert_eq!((img.width(), img.height()), (20, 18));
    assert!(text_chunks(&path).contains(&("strength".into(), "0.5".into())));
    let o = run(&["--init-image", init.to_str().unwrap(), "--strength", "1.5"]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("outside (0, 1]"));
    let o = run(&["--init-image", "/nonexistent/init.png"]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("/nonexistent/init.png"));
    let o = run(&["--strength", "0.5"]);
    assert!(
        !o.status.success(),
        "--strength without --init-image is refused"
    );

    // Tiled decoding of a 24×24 image (12×12 latents, 2×2 tiles of 8).
    let o = run(&[
        "--width",
        "24",
        "--height",
        "24",
        "--vae-tiling",
        "--seed",
        "11",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(image::open(out.join("000-seed11.png")).unwrap().width(), 24);
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
