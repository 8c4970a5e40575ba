//! `altclip embed-dataset`: sharded output in clip-retrieval's layout.

use std::path::Path;

use parquet::file::reader::{FileReader, SerializedFileReader};
use parquet::record::RowAccessor;
use serde_json::Value;

mod common;
use common::{altclip, json_lines, model, temp_dir};

/// Rows of a float16 `.npy` matrix, checking its header.
fn read_npy_f16(path: &Path, dim: usize) -> Vec<Vec<f32>> {
    let bytes = std::fs::read(path).unwrap();
    assert_eq!(&bytes[..8], b"\x93NUMPY\x01\x00", "{}", path.display());
    let hlen = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
    let header = std::str::from_utf8(&bytes[10..10 + hlen]).unwrap();
    let data = &bytes[10 + hlen..];
    let rows = data.len() / (2 * dim);
    assert!(
        header.contains(&format!(
            "'descr': '<f2', 'fortran_order': False, 'shape': ({rows}, {dim})"
        )),
        "{header}"
    );
    data.chunks_exact(2 * dim)
        .map(|r| {
            r.chunks_exact(2)
                .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect()
        })
        .collect()
}

/// The string columns of a parquet file, by name.
fn read_parquet(path: &Path) -> Vec<(String, Vec<String>)> {
    let reader = SerializedFileReader::new(std::fs::File::open(path).unwrap()).unwrap();
    let schema = reader.metadata().file_metadata().schema_descr_ptr();
    let names: Vec<String> = schema
        .columns()
        .iter()
        .map(|c| c.name().to_string())
        .collect();
    let mut cols: Vec<(String, Vec<String>)> = names.into_iter().map(|n| (n, Vec::new())).collect();
    for row in reader.get_row_iter(None).unwrap() {
        let row = row.unwrap();
        for (i, (_, values)) in cols.iter_mut().enumerate() {
            values.push(row.get_string(i).unwrap().clone());
        }
    }
    cols
}

fn embed_dataset(args: &[&str]) -> Value {
    let m = model();
    let mut all = vec![
        "embed-dataset",
        "--model",
        &m,
        "--json",
        "--batch-size",
        "2",
    ];
    all.extend(args);
    let out = altclip(&all);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn shards_match_embed_output_in_clip_retrieval_layout() {
    let dir = temp_dir("embed-dataset");
    let photos = dir.join("photos");
    std::fs::create_dir_all(&photos).unwrap();
    let mut names = Vec::new();
    for i in 0..5u32 {
        let img = image::RgbImage::from_fn(40 + i, 30, |x, y| {
            image::Rgb([(x * 9 + i * 50) as u8, (y * 7) as u8, (x * y + i) as u8])
        });
        let path = photos.join(format!("img{i}.png"));
        img.save(&path).unwrap();
        std::fs::write(
            path.with_extension("txt"),
            format!("第{i}张图片 photo {i}\n"),
        )
        .unwrap();
        names.push(path);
    }
    std::fs::write(photos.join("broken.jpg"), b"not a jpeg").unwrap();
    std::fs::write(photos.join("broken.txt"), "坏的").unwrap();
    let out = dir.join("emb");
    let (input, out_s) = (photos.to_str().unwrap(), out.to_str().unwrap());

    let r0 = embed_dataset(&["--input", input, "--shard", "0/2", "--out", out_s]);
    let r1 = embed_dataset(&["--input", input, "--shard", "1/2", "--out", out_s]);
    // Sorted input: broken.jpg, img0..img4; shard 0 takes the first three.
    assert_eq!(
        (r0["items"].as_u64(), r0["embedded"].as_u64()),
        (Some(3), Some(2))
    );
    assert_eq!(
        (r1["items"].as_u64(), r1["embedded"].as_u64()),
        (Some(3), Some(3))
    );
    assert!(r0["failed"][0]["path"]
        .as_str()
        .unwrap()
        .ends_with("broken.jpg"));

    // A shard with no readable image writes nothing, as clip-retrieval does
    // for an empty partition (shard 0 of 6 is broken.jpg alone).
    let empty = dir.join("emb-empty");
    let e = embed_dataset(&[
        "--input",
        input,
        "--shard",
        "0/6",
        "--out",
        empty.to_str().unwrap(),
    ]);
    assert_eq!(
        (e["items"].as_u64(), e["embedded"].as_u64()),
        (Some(1), Some(0))
    );
    for sub in ["img_emb", "text_emb", "metadata"] {
        let files = std::fs::read_dir(empty.join(sub)).map_or(0, |d| d.count());
        assert_eq!(files, 0, "{sub} of an empty shard");
    }

    let m = model();
    let mut args = vec!["embed", "--model", m.as_str()];
    let paths: Vec<String> = names.iter().map(|p| p.display().to_string()).collect();
    let captions: Vec<String> = (0..5).map(|i| format!("第{i}张图片 photo {i}")).collect();
    for p in &paths {
        args.extend(["--image", p.as_str()]);
    }
    for c in &captions {
        args.extend(["--text", c.as_str()]);
    }
    let reference: Vec<Vec<f64>> = json_lines(&altclip(&args))
        .iter()
        .map(|l| {
            l["embedding"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap())
                .collect()
        })
        .collect();
    let dim = reference[0].len();

    let mut images = Vec::new();
    let mut texts = Vec::new();
    let mut meta_paths = Vec::new();
    let mut meta_captions = Vec::new();
    for shard in ["0", "1"] {
        images.extend(read_npy_f16(
            &out.join(format!("img_emb/img_emb_{shard}.npy")),
            dim,
        ));
        texts.extend(read_npy_f16(
            &out.join(format!("text_emb/text_emb_{shard}.npy")),
            dim,
        ));
        let cols = read_parquet(&out.join(format!("metadata/metadata_{shard}.parquet")));
        assert_eq!(cols[0].0, "image_path");
        assert_eq!(cols[1].0, "caption");
        meta_paths.extend(cols[0].1.clone());
        meta_captions.extend(cols[1].1.clone());
    }
    assert_eq!(meta_paths, paths);
    assert_eq!(meta_captions, captions);
    for (got, want) in images.iter().chain(&texts).zip(&reference) {
        let err = got
            .iter()
            .zip(want)
            .map(|(a, b)| (*a as f64 - b).abs())
            .fold(0.0, f64::max);
        assert!(
            err < 1e-3,
            "float16 rows differ from `altclip embed` by {err}"
        );
    }
    assert_eq!(images.len() + texts.len(), reference.len());

    // A complete shard is not redone; --overwrite redoes it.
    let again = embed_dataset(&["--input", input, "--shard", "1/2", "--out", out_s]);
    assert_eq!(again["already_complete"], true);
    let redo = embed_dataset(&[
        "--input",
        input,
        "--shard",
        "1/2",
        "--out",
        out_s,
        "--overwrite",
    ]);
    assert_eq!(redo["embedded"].as_u64(), Some(3));
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_list_file_without_captions_writes_images_only() {
    let dir = temp_dir("embed-dataset-list");
    let img = image::RgbImage::from_fn(20, 20, |x, y| image::Rgb([x as u8 * 10, y as u8 * 10, 7]));
    img.save(dir.join("a.png")).unwrap();
    std::fs::write(dir.join("list.txt"), "# my images\na.png\n\n").unwrap();
    let out = dir.join("emb");
    let list = dir.join("list.txt");
    let r = embed_dataset(&[
        "--input",
        list.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(r["embedded"].as_u64(), Some(1));
    assert!(out.join("img_emb/img_emb_0.npy").is_file());
    assert!(!out.join("text_emb").exists());
    let cols = read_parquet(&out.join("metadata/metadata_0.parquet"));
    assert_eq!(cols.len(), 1);
    assert!(cols[0].1[0].ends_with("a.png"));

    let missing = altclip(&[
        "embed-dataset",
        "--model",
        &model(),
        "--input",
        "/nonexistent/list.txt",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(!missing.status.success());
    let err = String::from_utf8_lossy(&missing.stderr);
    assert!(err.contains("/nonexistent/list.txt"), "{err}");
    std::fs::remove_dir_all(dir).unwrap();
}
