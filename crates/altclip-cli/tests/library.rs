//! `altclip index` / `search` / `dedup` on generated folders with the tiny model.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

mod common;
use common::{altclip, json_lines, model, temp_dir};

/// A distinct synthetic image per `seed`.
fn write_image(path: &Path, seed: u32, width: u32, height: u32) {
    let img = image::RgbImage::from_fn(width, height, |x, y| {
        let v = |k: u32| ((x * (seed + k) + y * (seed * 7 + k * 3) + seed * 31) % 256) as u8;
        image::Rgb([v(1), v(2), v(5)])
    });
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    img.save(path).unwrap();
}

/// `altclip index ROOT --db DB --model (the tiny model)`, to be run by the caller.
fn index_command(root: &Path, db: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_altclip"));
    cmd.args([
        "index",
        root.to_str().unwrap(),
        "--db",
        db.to_str().unwrap(),
        "--model",
        &model(),
    ]);
    cmd
}

fn index(dir: &Path, extra: &[&str]) -> Value {
    let db = dir.join("index.db");
    let m = model();
    let mut args = vec![
        "index",
        dir.to_str().unwrap(),
        "--db",
        db.to_str().unwrap(),
        "--model",
        &m,
        "--json",
    ];
    args.extend(extra);
    let out = altclip(&args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn search(dir: &Path, query: &[&str]) -> Vec<(String, f64)> {
    search_json(dir, query)
        .into_iter()
        .map(|l| {
            (
                l["path"].as_str().unwrap().to_string(),
                l["score"].as_f64().unwrap(),
            )
        })
        .collect()
}

fn paths(hits: &[(String, f64)]) -> Vec<String> {
    let mut p: Vec<String> = hits.iter().map(|h| h.0.clone()).collect();
    p.sort();
    p
}

fn canonical(p: &Path) -> String {
    std::fs::canonicalize(p).unwrap().display().to_string()
}

#[test]
fn reindexing_embeds_only_what_changed() {
    let dir = temp_dir("lib-incremental");
    let lib = dir.join("photos");
    for i in 0..6 {
        write_image(&lib.join(format!("a/{i}.png")), i + 1, 40, 30);
    }
    let r = index(&dir, &[]);
    assert_eq!(
        (r["found"].as_u64(), r["embedded"].as_u64()),
        (Some(6), Some(6)),
        "{r}"
    );
    let r = index(&dir, &[]);
    assert_eq!(
        (r["unchanged"].as_u64(), r["embedded"].as_u64()),
        (Some(6), Some(0)),
        "{r}"
    );

    write_image(&lib.join("b/new.png"), 50, 40, 30); // added
    write_image(&lib.join("a/0.png"), 60, 41, 30); // modified
    std::fs::rename(lib.join("a/1.png"), lib.join("b/renamed.png")).unwrap();
    std::fs::copy(lib.join("a/2.png"), lib.join("b/copy.png")).unwrap();
    std::fs::remove_file(lib.join("a/3.png")).unwrap();
    let r = index(&dir, &["--prune"]);
    assert_eq!(
        r["embedded"], 2,
        "only the added and the modified file: {r}"
    );
    assert_eq!(r["reused"], 2, "the renamed file and the copy: {r}");
    assert_eq!(r["renamed"], 1, "{r}");
    assert_eq!(
        r["removed"], 2,
        "the old name of the renamed file and the deleted file: {r}"
    );

    let hits = search(&dir, &["a photo"]);
    let expected: Vec<String> = [
        "a/0.png",
        "a/2.png",
        "a/4.png",
        "a/5.png",
        "b/copy.png",
        "b/new.png",
        "b/renamed.png",
    ]
    .iter()
    .map(|p| canonical(&lib.join(p)))
    .collect();
    assert_eq!(paths(&hits), expected);

    // Exact and near duplicates: the copy groups with its original.
    let db = dir.join("index.db");
    let out = altclip(&[
        "dedup",
        "--db",
        db.to_str().unwrap(),
        "--threshold",
        "0.9999",
        "--json",
    ]);
    let page = &json_lines(&out)[0];
    let copies: Vec<Vec<&str>> = page["groups"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|g| g["kind"] == "identical")
        .map(|g| {
            let mut paths: Vec<&str> = g["members"]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| m["path"].as_str().unwrap())
                .collect();
            paths.sort();
            paths
        })
        .collect();
    let (two, copy) = (
        canonical(&lib.join("a/2.png")),
        canonical(&lib.join("b/copy.png")),
    );
    assert!(
        copies.contains(&vec![two.as_str(), copy.as_str()]),
        "{page}"
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn search_equals_a_brute_force_ranking_of_embed_output() {
    let dir = temp_dir("lib-bruteforce");
    let lib = dir.join("photos");
    let files: Vec<PathBuf> = (0..8).map(|i| lib.join(format!("{i}.png"))).collect();
    for (i, f) in files.iter().enumerate() {
        write_image(f, i as u32 * 3 + 2, 50, 40);
    }
    let report = index(&dir, &["--vector-dtype", "f32"]);
    // The stages overlap, but none outlasts the run.
    let ms = |k: &str| {
        report["time"][k]
            .as_u64()
            .unwrap_or_else(|| panic!("{k}: {report}"))
    };
    assert!(
        ms("model_ms") <= ms("wall_ms") && ms("waited_ms") <= ms("wall_ms"),
        "{report}"
    );
    let m = model();
    let mut args = vec!["embed", "--model", &m, "--text", "一只在草地上的猫"];
    let names: Vec<String> = files.iter().map(|f| canonical(f)).collect();
    for n in &names {
        args.extend(["--image", n.as_str()]);
    }
    let lines = json_lines(&altclip(&args));
    let vec_of = |l: &Value| -> Vec<f64> {
        l["embedding"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect()
    };
    let text = vec_of(&lines[8]);
    let mut expected: Vec<(String, f64)> = names
        .iter()
        .zip(&lines)
        .map(|(n, l)| {
            (
                n.clone(),
                vec_of(l).iter().zip(&text).map(|(a, b)| a * b).sum(),
            )
        })
        .collect();
    expected.sort_by(|a, b| b.1.total_cmp(&a.1));
    let hits = search(&dir, &["一只在草地上的猫"]);
    assert_eq!(
        hits.iter().map(|h| &h.0).collect::<Vec<_>>(),
        expected.iter().map(|h| &h.0).collect::<Vec<_>>()
    );
    for (h, e) in hits.iter().zip(&expected) {
        assert!((h.1 - e.1).abs() < 1e-5, "{h:?} vs {e:?}");
    }
    // An image query finds itself first.
    let hits = search(&dir, &[names[3].as_str()]);
    assert_eq!(hits[0].0, names[3]);
    assert!((hits[0].1 - 1.0).abs() < 1e-5);

    // Past the ANN threshold, a re-run builds the HNSW graph without
    // re-embedding anything, and searches through it rank the same.
    let exact = search(&dir, &["一只在草地上的猫"]);
    let report = index(&dir, &["--ann-threshold", "4"]);
    assert_eq!(report["embedded"], 0);
    let manifest = dir.join("index.db.hnsw/manifest.json");
    let manifest: Value = serde_json::from_slice(&std::fs::read(manifest).unwrap()).unwrap();
    assert!(manifest["recall"].as_f64().unwrap() >= 0.98, "{manifest}");
    assert_eq!(search(&dir, &["一只在草地上的猫"]), exact);
    assert_eq!(search(&dir, &["一只在草地上的猫", "--exact"]), exact);
    std::fs::remove_dir_all(dir).unwrap();
}

/// A PNG whose header claims 20000×20000 pixels.
fn huge_png_header() -> Vec<u8> {
    fn crc32(bytes: &[u8]) -> u32 {
        let mut crc = !0u32;
        for &b in bytes {
            crc ^= b as u32;
            for _ in 0..8 {
                crc = if crc & 1 != 0 {
                    (crc >> 1) ^ 0xEDB8_8320
                } else {
                    crc >> 1
                };
            }
        }
        !crc
    }
    let chunk = |kind: &[u8], data: &[u8]| {
        let mut c = (data.len() as u32).to_be_bytes().to_vec();
        let body: Vec<u8> = kind.iter().chain(data).copied().collect();
        c.extend(&body);
        c.extend(crc32(&body).to_be_bytes());
        c
    };
    let mut ihdr = 20000u32.to_be_bytes().to_vec();
    ihdr.extend(20000u32.to_be_bytes());
    ihdr.extend([8, 2, 0, 0, 0]);
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    png.extend(chunk(b"IHDR", &ihdr));
    png.extend(chunk(
        b"IDAT",
        &[0x78, 0x9c, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01],
    ));
    png.extend(chunk(b"IEND", &[]));
    png
}

#[test]
fn unreadable_files_are_skipped_with_reasons() {
    let dir = temp_dir("lib-errors");
    let lib = dir.join("photos");
    write_image(&lib.join("good.png"), 7, 40, 30);
    std::fs::write(lib.join("empty.jpg"), b"").unwrap();
    std::fs::write(lib.join("corrupt.png"), b"\x89PNG\r\n\x1a\nnot really").unwrap();
    std::fs::create_dir_all(lib.join("folder.jpg")).unwrap();
    std::fs::write(lib.join("huge.png"), huge_png_header()).unwrap();
    let locked = lib.join("locked.png");
    write_image(&locked, 8, 40, 30);
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o000)).unwrap();
    // root reads anything; only then is the permission case not testable.
    let locked_readable = std::fs::read(&locked).is_ok();

    let r = index(&dir, &[]);
    assert_eq!(r["embedded"], if locked_readable { 2 } else { 1 }, "{r}");
    let db = dir.join("index.db");
    let out = altclip(&["index", "--errors", "--db", db.to_str().unwrap(), "--json"]);
    let errors: Vec<(String, String)> = json_lines(&out)
        .iter()
        .map(|e| {
            (
                e["path"]
                    .as_str()
                    .unwrap()
                    .rsplit('/')
                    .next()
                    .unwrap()
                    .to_string(),
                e["reason"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let reason = |name: &str| {
        errors
            .iter()
            .find(|e| e.0 == name)
            .map(|e| e.1.clone())
            .unwrap_or_else(|| panic!("{name} not recorded: {errors:?}"))
    };
    assert!(reason("empty.jpg").contains("empty"));
    assert!(reason("corrupt.png").contains("cannot decode"));
    assert!(reason("folder.jpg").contains("not a regular file"));
    assert!(
        reason("huge.png").contains("400000000 pixels"),
        "{}",
        reason("huge.png")
    );
    if locked_readable {
        eprintln!("note: running as root, so the unreadable-permission case cannot be provoked");
    } else {
        assert!(reason("locked.png").contains("cannot read"));
    }
    // Unchanged failures are not retried.
    let r = index(&dir, &[]);
    assert_eq!(r["embedded"], 0);
    assert_eq!(
        r["known_errors"].as_u64().unwrap() + r["failed"].as_u64().unwrap(),
        errors.len() as u64,
        "{r}"
    );
    std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_killed_indexer_loses_nothing_and_resumes() {
    let dir = temp_dir("lib-kill");
    let lib = dir.join("photos");
    let n = 200;
    for i in 0..n {
        write_image(&lib.join(format!("{i:03}.png")), i + 1, 320, 240);
    }
    let db = dir.join("index.db");
    let mut child = index_command(&lib, &db)
        .args(["--batch-size", "1"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let count = |db: &Path| -> i64 {
        rusqlite::Connection::open(db)
            .and_then(|c| c.query_row("SELECT COUNT(*) FROM files", [], |r| r.get(0)))
            .unwrap_or(0)
    };
    let start = std::time::Instant::now();
    while count(&db) < 5 && start.elapsed().as_secs() < 60 {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let at_kill = count(&db);
    assert!(at_kill >= 5, "the indexer committed nothing in 60 s");

    let conn = rusqlite::Connection::open(&db).unwrap();
    let status: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(status, "ok");
    drop(conn);

    let out = altclip(&[
        "index",
        lib.to_str().unwrap(),
        "--db",
        db.to_str().unwrap(),
        "--json",
    ]);
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["found"], n);
    assert_eq!(
        r["unchanged"].as_u64().unwrap()
            + r["embedded"].as_u64().unwrap()
            + r["reused"].as_u64().unwrap(),
        n as u64,
        "{r}"
    );
    assert!(
        r["unchanged"].as_i64().unwrap() >= at_kill,
        "committed files were lost: {r}, {at_kill} at kill"
    );
    assert_eq!(count(&db), n as i64, "every file exactly once");
    eprintln!("killed after {at_kill} of {n} files; the re-run: {r}");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn rows_of_another_writer_do_not_shorten_the_results() {
    let dir = temp_dir("lib-foreign");
    for i in 0..4 {
        write_image(&dir.join(format!("photos/{i}.png")), i * 5 + 1, 40, 30);
    }
    index(&dir, &["--vector-dtype", "f32"]);
    // Another writer's rows, each exactly the query: they outrank every image.
    let m = model();
    let query = json_lines(&altclip(&["embed", "--model", &m, "--text", "a cat"]))[0]["embedding"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect::<Vec<f32>>();
    let rows: Vec<(String, Vec<f32>)> = (0..10)
        .map(|i| (format!("foreign{i}"), query.clone()))
        .collect();
    let mut store =
        altclip_index::SqliteVectors::open(&dir.join("index.db"), altclip_index::VectorDtype::F32)
            .unwrap();
    altclip_index::VectorStore::upsert(&mut store, &rows).unwrap();
    drop(store);
    let db = dir.join("index.db");
    let out = altclip(&[
        "search",
        "--db",
        db.to_str().unwrap(),
        "--json",
        "--top",
        "3",
        "a cat",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        json_lines(&out).len(),
        3,
        "three of our images, not 3 minus foreign rows"
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn searching_with_another_model_is_refused() {
    let dir = temp_dir("lib-model");
    write_image(&dir.join("photos/x.png"), 3, 40, 30);
    index(&dir, &[]);
    let db = dir.join("index.db");
    let other = common::fixtures().join("tiny-m18").display().to_string();
    let out = altclip(&[
        "search",
        "--db",
        db.to_str().unwrap(),
        "--model",
        &other,
        "cat",
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("was built with model") && err.contains("tiny-224"),
        "{err}"
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn milvus_store_serves_index_and_search() {
    let Ok(server) = std::env::var("ALTCLIP_TEST_MILVUS_URI") else {
        eprintln!("skipped: ALTCLIP_TEST_MILVUS_URI not set (run scripts/test_milvus.sh)");
        return;
    };
    let hostport = server.trim_start_matches("http://").trim_end_matches('/');
    let uri = format!("milvus://{hostport}/altclip_cli_{}", std::process::id());
    let dir = temp_dir("lib-milvus");
    let lib = dir.join("photos");
    for i in 0..5 {
        write_image(&lib.join(format!("{i}.png")), i * 5 + 1, 40, 30);
    }
    std::fs::copy(lib.join("0.png"), lib.join("copy.png")).unwrap();
    let r = index(&dir, &["--store", &uri]);
    assert_eq!(
        (r["embedded"].as_u64(), r["reused"].as_u64()),
        (Some(5), Some(1)),
        "{r}"
    );
    let in_milvus = search(&dir, &["a photo"]);
    // A filter goes to Milvus as a `key in [...]` expression.
    let filtered = search(&dir, &["a photo", "--path", "*4.png"]);
    assert_eq!(filtered.len(), 1, "{filtered:?}");
    assert!(filtered[0].0.ends_with("/4.png"), "{filtered:?}");

    // The same folder indexed into SQLite ranks the same files the same way.
    let local = temp_dir("lib-milvus-local");
    std::fs::rename(&lib, local.join("photos")).unwrap();
    let _ = std::fs::remove_file(dir.join("index.db"));
    index(&local, &["--vector-dtype", "f32"]);
    let in_sqlite = search(&local, &["a photo"]);
    let names = |hits: &[(String, f64)]| -> Vec<String> {
        hits.iter()
            .map(|h| h.0.rsplit('/').next().unwrap().to_string())
            .collect()
    };
    assert_eq!(names(&in_milvus), names(&in_sqlite));
    for (m, s) in in_milvus.iter().zip(&in_sqlite) {
        assert!((m.1 - s.1).abs() < 1e-4, "{m:?} vs {s:?}");
    }
    std::fs::remove_dir_all(dir).unwrap();
    std::fs::remove_dir_all(local).unwrap();
}

/// What `altclip index --errors --json` prints for `db`.
fn errors_json(db: &Path) -> String {
    let out = altclip(&["index", "--errors", "--db", db.to_str().unwrap(), "--json"]);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `altclip search --json` lines, whole.
fn search_json(dir: &Path, args: &[&str]) -> Vec<Value> {
    let db = dir.join("index.db");
    let mut all = vec!["search", "--db", db.to_str().unwrap(), "--json"];
    if !args.contains(&"--top") {
        all.extend(["--top", "100"]);
    }
    all.extend(args);
    let out = altclip(&all);
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    json_lines(&out)
}

fn haversine_km(a: (f64, f64), b: (f64, f64)) -> f64 {
    let (p1, p2) = (a.0.to_radians(), b.0.to_radians());
    let h = ((p2 - p1) / 2.0).sin().powi(2)
        + p1.cos() * p2.cos() * ((b.1 - a.1).to_radians() / 2.0).sin().powi(2);
    2.0 * 6371.0088 * h.sqrt().asin()
}

/// Every filter gives what a brute-force filter of the unfiltered `--json`
/// output (which carries each photo's metadata) gives, in the same order.
#[test]
fn filters_equal_a_brute_force_filter_of_the_json_output() {
    let dir = temp_dir("lib-filters");
    let photos = dir.join("photos");
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/library");
    for entry in std::fs::read_dir(&fixtures).unwrap() {
        let p = entry.unwrap().path();
        if p.extension().is_some_and(|e| e == "jpg") {
            let to = photos.join(if p.file_name().unwrap() == "shanghai_2023.jpg" {
                "2023/shanghai_2023.jpg".into()
            } else {
                p.file_name().unwrap().to_owned().into_string().unwrap()
            });
            std::fs::create_dir_all(to.parent().unwrap()).unwrap();
            std::fs::copy(&p, &to).unwrap();
        }
    }
    // The photo without EXIF is dated by its modification time.
    let undated = std::fs::File::options()
        .write(true)
        .open(photos.join("noexif.jpg"))
        .unwrap();
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_600_000_000); // 2020-09-13
    undated.set_modified(t).unwrap();
    drop(undated);
    index(&dir, &[]);

    let query = "一张照片";
    let all = search_json(&dir, &[query]);
    assert_eq!(all.len(), 6, "{all:?}");
    let taken = |h: &Value| h["taken"].as_str().unwrap().to_string();
    let noexif = all
        .iter()
        .find(|h| h["path"].as_str().unwrap().ends_with("noexif.jpg"))
        .unwrap();
    assert_eq!(
        (taken(noexif), noexif["taken_from"].as_str()),
        ("2020-09-13T12:26:40".into(), Some("file"))
    );
    let sh = all
        .iter()
        .find(|h| h["path"].as_str().unwrap().ends_with("shanghai_2023.jpg"))
        .unwrap();
    assert_eq!(sh["camera"], "Apple iPhone 13");
    assert_eq!(
        (sh["width"].as_u64(), sh["height"].as_u64()),
        (Some(64), Some(48))
    );

    let paths_of = |hits: &[Value]| -> Vec<String> {
        hits.iter()
            .map(|h| h["path"].as_str().unwrap().to_string())
            .collect()
    };
    let near = |h: &Value, at: (f64, f64), km: f64| match (h["lat"].as_f64(), h["lon"].as_f64()) {
        (Some(lat), Some(lon)) => haversine_km(at, (lat, lon)) <= km,
        _ => false,
    };
    let camera = |h: &Value, text: &str| {
        let t = text.to_lowercase();
        [&h["make"], &h["model"]]
            .iter()
            .any(|v| v.as_str().is_some_and(|s| s.to_lowercase().contains(&t)))
    };
    let cutoff = all[2]["score"].as_f64().unwrap();
    type Keep<'a> = Box<dyn Fn(&Value) -> bool + 'a>;
    let cases: Vec<(Vec<String>, Keep<'_>)> = vec![
        (
            vec!["--after".into(), "2023".into()],
            Box::new(|h| taken(h).as_str() >= "2023"),
        ),
        (
            vec!["--before".into(), "2023-07-14".into()],
            Box::new(|h| taken(h).as_str() < "2023-07-14"),
        ),
        (
            vec![
                "--after".into(),
                "2022-01-01".into(),
                "--before".into(),
                "2024-02-04T00:00".into(),
            ],
            Box::new(|h| ("2022-01-01".."2024-02-04T00:00").contains(&taken(h).as_str())),
        ),
        (
            vec!["--camera".into(), "iphone".into()],
            Box::new(move |h| camera(h, "iphone")),
        ),
        (
            vec!["--camera".into(), "canon eos".into()],
            Box::new(move |h| {
                let t = "canon eos";
                format!(
                    "{} {}",
                    h["make"].as_str().unwrap_or(""),
                    h["model"].as_str().unwrap_or("")
                )
                .to_lowercase()
                .contains(t)
            }),
        ),
        (
            vec!["--path".into(), "*/2023/*".into()],
            Box::new(|h| h["path"].as_str().unwrap().contains("/2023/")),
        ),
        (
            vec!["--near".into(), "31.2,121.5,50".into()],
            Box::new(move |h| near(h, (31.2, 121.5), 50.0)),
        ),
        (
            vec!["--near".into(), "-33.87,151.21,5".into()],
            Box::new(move |h| near(h, (-33.87, 151.21), 5.0)),
        ),
        (
            vec!["--near".into(), "40.7,-74.0,1500".into()],
            Box::new(move |h| near(h, (40.7, -74.0), 1500.0)),
        ),
        (vec!["--kind".into(), "photo".into()], Box::new(|_| true)),
        (vec!["--kind".into(), "video".into()], Box::new(|_| false)),
        (
            vec!["--min-score".into(), format!("{cutoff}")],
            Box::new(move |h| h["score"].as_f64().unwrap() >= cutoff),
        ),
    ];
    for (flags, keep) in &cases {
        let mut args: Vec<&str> = vec![query];
        args.extend(flags.iter().map(String::as_str));
        let got = search_json(&dir, &args);
        let want: Vec<Value> = all.iter().filter(|h| keep(h)).cloned().collect();
        assert_eq!(paths_of(&got), paths_of(&want), "{flags:?}");
    }
    // A filter is applied before the top-k: --top 1 with a filter is the
    // best match among the filtered, not the best overall filtered away.
    let mut args = vec![query, "--camera", "sony", "--top", "1"];
    let got = search_json(&dir, &args);
    assert_eq!(
        paths_of(&got),
        vec![paths_of(
            &all.iter()
                .filter(|h| camera(h, "sony"))
                .cloned()
                .collect::<Vec<_>>()
        )[0]
        .clone()]
    );
    // Newest first among those above the cutoff.
    args = vec![query, "--sort", "date", "--min-score", "-1", "--top", "3"];
    let got = search_json(&dir, &args);
    let mut dates: Vec<String> = all.iter().map(&taken).collect();
    dates.sort();
    dates.reverse();
    assert_eq!(
        got.iter().map(&taken).collect::<Vec<_>>(),
        dates[..3].to_vec()
    );
    // Bad values name the flag.
    for (flag, value) in [
        ("--after", "July"),
        ("--near", "31.2,121.5"),
        ("--min-score", "NaN"),
    ] {
        let db = dir.join("index.db");
        let out = altclip(&["search", "--db", db.to_str().unwrap(), query, flag, value]);
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(flag), "{flag}: {err}");
    }
    std::fs::remove_dir_all(dir).unwrap();
}

/// An index built before metadata was recorded gets it on the next run,
/// without embedding anything again.
#[test]
fn an_index_without_metadata_is_backfilled_without_reembedding() {
    let dir = temp_dir("lib-backfill");
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/library");
    std::fs::create_dir_all(dir.join("p")).unwrap();
    std::fs::copy(
        fixtures.join("beijing_2022.jpg"),
        dir.join("p/beijing_2022.jpg"),
    )
    .unwrap();
    let first = index(&dir, &[]);
    assert_eq!(first["embedded"], 1);
    let db = dir.join("index.db");
    assert_eq!(forget_media(&db), 1);
    let again = index(&dir, &[]);
    assert_eq!(
        (again["embedded"].as_u64(), again["described"].as_u64()),
        (Some(0), Some(1)),
        "{again}"
    );
    let hits = search_json(&dir, &["一张照片", "--camera", "canon"]);
    assert_eq!(hits.len(), 1);
    assert_eq!(index(&dir, &[])["described"], 0);
    std::fs::remove_dir_all(dir).unwrap();
}

/// Empties the media table, as in an index from before it existed.
fn forget_media(db: &Path) -> usize {
    let conn = rusqlite::Connection::open(db).unwrap();
    conn.execute("DELETE FROM media", []).unwrap()
}

/// `altclip index --watch --json` running on `dir`, its reports read on a thread.
struct Watching {
    child: std::process::Child,
    reports: std::sync::mpsc::Receiver<Value>,
}

impl Watching {
    fn start(dir: &Path) -> Self {
        let mut child = index_command(dir, &dir.join("index.db"))
            .args(["--json", "--watch", "--watch-delay", "0.3"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let out = child.stdout.take().unwrap();
        let (tx, reports) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
                let _ = tx.send(serde_json::from_str(&line).unwrap());
            }
        });
        Self { child, reports }
    }

    /// The next batch's report, within a bounded time.
    fn next(&self) -> Value {
        self.reports
            .recv_timeout(std::time::Duration::from_secs(30))
            .expect("no report within 30 s")
    }
}

impl Drop for Watching {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Files added, renamed and deleted while `--watch` runs are in the index
/// (and in searches) after the next batch; the database living inside the
/// watched folder does not set it off.
#[test]
fn watch_mode_follows_additions_renames_and_deletions() {
    let dir = temp_dir("lib-watch");
    for i in 0..3 {
        write_image(&dir.join(format!("{i}.png")), i + 1, 30, 20);
    }
    let w = Watching::start(&dir);
    assert_eq!(w.next()["embedded"], 3);
    let listed = |dir: &Path| paths(&search(dir, &["一只猫"]));

    write_image(&dir.join("sub/new.png"), 9, 30, 20);
    let r = w.next();
    assert_eq!(
        (r["embedded"].as_u64(), r["found"].as_u64()),
        (Some(1), Some(4)),
        "{r}"
    );
    assert!(listed(&dir).contains(&canonical(&dir.join("sub/new.png"))));

    std::fs::rename(dir.join("0.png"), dir.join("renamed.png")).unwrap();
    let r = w.next();
    assert_eq!(
        (
            r["embedded"].as_u64(),
            r["renamed"].as_u64(),
            r["removed"].as_u64()
        ),
        (Some(0), Some(1), Some(1)),
        "{r}"
    );
    std::fs::remove_file(dir.join("1.png")).unwrap();
    let r = w.next();
    assert_eq!(
        (r["removed"].as_u64(), r["found"].as_u64()),
        (Some(1), Some(3)),
        "{r}"
    );
    let now = listed(&dir);
    assert_eq!(
        now,
        [
            canonical(&dir.join("2.png")),
            canonical(&dir.join("renamed.png")),
            canonical(&dir.join("sub/new.png"))
        ]
    );
    // Nothing else happens: no report from the index's own writes.
    assert!(w
        .reports
        .recv_timeout(std::time::Duration::from_secs(2))
        .is_err());
    drop(w);
    std::fs::remove_dir_all(dir).unwrap();
}

/// A SIGKILL in the middle of a watch batch leaves a database that the next
/// plain run completes.
#[test]
fn a_watch_killed_mid_batch_is_completed_by_the_next_run() {
    let dir = temp_dir("lib-watch-kill");
    write_image(&dir.join("first.png"), 1, 30, 20);
    let mut w = Watching::start(&dir);
    assert_eq!(w.next()["embedded"], 1);
    for i in 0..60 {
        write_image(&dir.join(format!("batch/{i}.png")), i + 100, 200, 150);
    }
    // The batch starts 0.3 s after the last write; kill it soon after.
    std::thread::sleep(std::time::Duration::from_millis(700));
    w.child.kill().unwrap(); // SIGKILL
    w.child.wait().unwrap();
    let r = index(&dir, &[]);
    let total = 61;
    assert_eq!(r["found"], total);
    assert_eq!(search(&dir, &["一只猫"]).len(), total, "{r}");
    assert_eq!(index(&dir, &[])["unchanged"], total);
    drop(w);
    std::fs::remove_dir_all(dir).unwrap();
}

/// Whether ffmpeg can be run; without it a video test prints why and skips,
/// unless ALTCLIP_REQUIRE_TOOLS=1 (CI installs it).
fn ffmpeg_or_skip(test: &str) -> bool {
    let found = ["ffmpeg", "ffprobe"].iter().all(|t| {
        Command::new(t)
            .arg("-version")
            .output()
            .is_ok_and(|o| o.status.success())
    });
    if !found {
        assert!(
            std::env::var("ALTCLIP_REQUIRE_TOOLS").as_deref() != Ok("1"),
            "{test}: ffmpeg is not on PATH, and ALTCLIP_REQUIRE_TOOLS=1 makes it mandatory"
        );
        eprintln!("skipped: {test}: ffmpeg is not on PATH (Debian: apt-get install -y ffmpeg)");
    }
    found
}

fn solid(path: &Path, rgb: [u8; 3]) {
    image::RgbImage::from_pixel(64, 48, image::Rgb(rgb))
        .save(path)
        .unwrap();
}

/// A video whose frames from 3 s to 6 s are red is found at 3–5 s by a red
/// image (frames every second), and its metadata is recorded.
#[test]
fn a_video_is_found_at_the_time_of_its_matching_frames() {
    if !ffmpeg_or_skip("a_video_is_found_at_the_time_of_its_matching_frames") {
        return;
    }
    let dir = temp_dir("lib-video");
    let clip = dir.join("lib/clip.mp4");
    std::fs::create_dir_all(clip.parent().unwrap()).unwrap();
    let status = Command::new("ffmpeg")
        .args(["-v", "error", "-y"])
        .args(["-f", "lavfi", "-i", "color=c=gray:s=64x48:d=3:r=10"])
        .args(["-f", "lavfi", "-i", "color=c=red:s=64x48:d=3:r=10"])
        .args(["-f", "lavfi", "-i", "color=c=blue:s=64x48:d=3:r=10"])
        .args([
            "-filter_complex",
            "[0][1][2]concat=n=3:v=1:a=0",
            "-pix_fmt",
            "yuv420p",
        ])
        .arg(&clip)
        .status()
        .unwrap();
    assert!(status.success());
    write_image(&dir.join("lib/photo.png"), 3, 64, 48);
    let report = index(&dir, &["--video-interval", "1"]);
    assert_eq!(
        (report["embedded"].as_u64(), report["frames"].as_u64()),
        (Some(2), Some(9)),
        "{report}"
    );
    // Hidden: not indexed itself.
    let red = dir.join(".query/red.png");
    std::fs::create_dir_all(red.parent().unwrap()).unwrap();
    solid(&red, [255, 0, 0]);
    let hits = search_json(&dir, &[red.to_str().unwrap()]);
    assert_eq!(hits.len(), 2, "one row per file, not per frame: {hits:?}");
    assert_eq!(hits[0]["path"], canonical(&clip));
    let at = hits[0]["at"].as_f64().unwrap();
    assert!((3.0..=5.0).contains(&at), "{at}");
    assert_eq!(
        (hits[0]["kind"].as_str(), hits[0]["duration"].as_f64()),
        (Some("video"), Some(9.0))
    );
    let db = dir.join("index.db");
    let text = altclip(&[
        "search",
        "--db",
        db.to_str().unwrap(),
        red.to_str().unwrap(),
        "-n",
        "1",
    ]);
    let line = String::from_utf8_lossy(&text.stdout).to_string();
    assert!(line.contains("clip.mp4 @ 00:00:0"), "{line}");
    // --kind chooses; a renamed video is not embedded again; a deleted one
    // takes its frames with it.
    assert_eq!(
        search_json(&dir, &[red.to_str().unwrap(), "--kind", "photo"]).len(),
        1
    );
    std::fs::rename(&clip, dir.join("lib/moved.mp4")).unwrap();
    let r = index(&dir, &["--prune", "--video-interval", "1"]);
    assert_eq!(
        (r["embedded"].as_u64(), r["renamed"].as_u64()),
        (Some(0), Some(1)),
        "{r}"
    );
    std::fs::remove_file(dir.join("lib/moved.mp4")).unwrap();
    index(&dir, &["--prune"]);
    let conn = rusqlite::Connection::open(&db).unwrap();
    let left: i64 = conn
        .query_row("SELECT COUNT(*) FROM vectors", [], |r| r.get(0))
        .unwrap();
    assert_eq!(left, 1, "the photo's vector only");
    std::fs::remove_dir_all(dir).unwrap();
}

/// Without ffmpeg, a video is recorded as skipped with the reason and
/// everything else is indexed.
#[test]
fn without_ffmpeg_videos_are_skipped_with_the_reason() {
    let dir = temp_dir("lib-noffmpeg");
    std::fs::create_dir_all(dir.join("lib")).unwrap();
    std::fs::write(dir.join("lib/clip.mp4"), b"not really a video").unwrap();
    write_image(&dir.join("lib/photo.png"), 4, 30, 20);
    let db = dir.join("index.db");
    let empty = dir.join("empty-path");
    std::fs::create_dir_all(&empty).unwrap();
    let out = index_command(&dir.join("lib"), &db)
        .arg("--json")
        .env("PATH", &empty)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (report["embedded"].as_u64(), report["failed"].as_u64()),
        (Some(1), Some(1)),
        "{report}"
    );
    let text = errors_json(&db);
    assert!(
        text.contains("clip.mp4") && text.contains("ffmpeg is not installed"),
        "{text}"
    );
    std::fs::remove_dir_all(dir).unwrap();
}

/// HEIC and AVIF photos are indexed with their EXIF, searched like JPEGs,
/// and a Live Photo's video is left to its still. Without the `avif`
/// feature the AVIF is recorded as failed, naming the feature.
#[test]
fn heic_and_avif_photos_are_indexed_and_live_photo_videos_left_to_their_stills() {
    let dir = temp_dir("lib-heif");
    let lib = dir.join("lib");
    std::fs::create_dir_all(&lib).unwrap();
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures");
    std::fs::copy(
        fixtures.join("library/paris_2025.heic"),
        lib.join("IMG_0001.HEIC"),
    )
    .unwrap();
    // Its motion half: never opened, so any bytes do.
    std::fs::write(lib.join("IMG_0001.MOV"), b"the Live Photo's video").unwrap();
    std::fs::copy(
        fixtures.join("images/heif/photo.avif"),
        lib.join("web.avif"),
    )
    .unwrap();
    write_image(&lib.join("plain.png"), 4, 30, 20);
    let report = index(&dir, &[]);
    let avif = cfg!(feature = "avif") as u64;
    assert_eq!(
        (
            report["found"].as_u64(),
            report["embedded"].as_u64(),
            report["failed"].as_u64(),
            report["live_photo_videos"].as_u64()
        ),
        (Some(3), Some(2 + avif), Some(1 - avif), Some(1)),
        "{report}"
    );
    let hits = search_json(&dir, &["巴黎", "--camera", "iphone 16"]);
    assert_eq!(hits.len(), 1, "{hits:?}");
    let heic = &hits[0];
    assert!(
        heic["path"].as_str().unwrap().ends_with("IMG_0001.HEIC"),
        "{heic}"
    );
    assert_eq!(heic["taken"], "2025-05-01T10:00:00", "{heic}");
    assert_eq!(
        (heic["width"].as_u64(), heic["height"].as_u64()),
        (Some(64), Some(48))
    );
    assert!(
        (heic["lat"].as_f64().unwrap() - 48.8566).abs() < 1e-6,
        "{heic}"
    );
    if cfg!(feature = "avif") {
        let hits = search_json(&dir, &["a photo", "--path", "*.avif"]);
        assert_eq!(hits.len(), 1, "{hits:?}");
        assert_eq!(
            (hits[0]["width"].as_u64(), hits[0]["height"].as_u64()),
            (Some(320), Some(240))
        );
    } else {
        let text = errors_json(&dir.join("index.db"));
        assert!(
            text.contains("web.avif") && text.contains("feature `avif`"),
            "{text}"
        );
    }
    std::fs::remove_dir_all(dir).unwrap();
}

fn dedup_page(dir: &Path, extra: &[&str]) -> Value {
    let db = dir.join("index.db");
    let mut args = vec!["dedup", "--db", db.to_str().unwrap(), "--json"];
    args.extend(extra);
    let out = altclip(&args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    json_lines(&out).remove(0)
}

/// (kind, file names) of each group of a page, names sorted.
fn dedup_groups(page: &Value) -> Vec<(String, Vec<String>)> {
    page["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| {
            let mut names: Vec<String> = g["members"]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| {
                    Path::new(m["path"].as_str().unwrap())
                        .file_name()
                        .unwrap()
                        .to_string_lossy()
                        .into()
                })
                .collect();
            names.sort();
            (g["kind"].as_str().unwrap().to_string(), names)
        })
        .collect()
}

/// With every pair a candidate (threshold -1: the tiny model's embeddings
/// mean nothing), the difference hash and EXIF dates decide: a resized copy
/// is a duplicate, a byte copy identical, a burst a burst, another picture
/// (`pattern.png`, no EXIF) nothing.
#[test]
fn dedup_tells_copies_from_bursts_and_other_pictures_and_pages() {
    let dir = temp_dir("lib-dedup");
    let lib = dir.join("lib");
    std::fs::create_dir_all(&lib).unwrap();
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/library");
    for name in [
        "sydney_2024.jpg",
        "newyork_2024.jpg",
        "beijing_2022.jpg",
        "burst/IMG_0001.jpg",
        "burst/IMG_0002.jpg",
    ] {
        // newyork_2024.jpg is another picture of the same kind (a few dHash
        // bits from sydney's): its different EXIF time keeps it out.
        std::fs::copy(
            fixtures.join(name),
            lib.join(Path::new(name).file_name().unwrap()),
        )
        .unwrap();
    }
    std::fs::copy(
        fixtures.join("beijing_2022.jpg"),
        lib.join("beijing copy.jpg"),
    )
    .unwrap();
    write_image(&lib.join("pattern.png"), 9, 64, 48);
    let sydney = image::open(fixtures.join("sydney_2024.jpg")).unwrap();
    sydney
        .resize_exact(128, 96, image::imageops::FilterType::Lanczos3)
        .save(lib.join("sydney large.png"))
        .unwrap();
    index(&dir, &[]);

    let page = dedup_page(&dir, &["--threshold", "-1"]);
    let names = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    assert_eq!(
        dedup_groups(&page),
        vec![
            (
                "identical".into(),
                names(&["beijing copy.jpg", "beijing_2022.jpg"])
            ),
            (
                "duplicate".into(),
                names(&["sydney large.png", "sydney_2024.jpg"])
            ),
        ],
        "{page}"
    );
    // The larger copy is the one to keep.
    let duplicate = &page["groups"][1];
    assert!(
        duplicate["keep"]
            .as_str()
            .unwrap()
            .ends_with("sydney large.png"),
        "{duplicate}"
    );
    assert!(
        duplicate["members"][1]["distance"].as_u64().unwrap() <= 10,
        "{duplicate}"
    );

    let with_bursts = dedup_page(&dir, &["--threshold", "-1", "--bursts"]);
    assert_eq!(
        dedup_groups(&with_bursts).last(),
        Some(&(
            "burst".to_string(),
            names(&["IMG_0001.jpg", "IMG_0002.jpg"])
        )),
        "{with_bursts}"
    );

    // Pages of one group each.
    let second = dedup_page(
        &dir,
        &[
            "--threshold",
            "-1",
            "--bursts",
            "--page-size",
            "1",
            "--page",
            "2",
        ],
    );
    assert_eq!(
        (second["total"].as_u64(), second["pages"].as_u64()),
        (Some(3), Some(3)),
        "{second}"
    );
    assert_eq!(
        dedup_groups(&second),
        dedup_groups(&with_bursts)[1..2].to_vec()
    );
    let db = dir.join("index.db");
    let past = altclip(&["dedup", "--db", db.to_str().unwrap(), "--page", "9"]);
    assert!(!past.status.success());
    assert!(
        String::from_utf8_lossy(&past.stderr).contains("past the last page"),
        "{past:?}"
    );
    std::fs::remove_dir_all(dir).unwrap();
}
