//! Search latency and ANN recall over N random 768-d vectors in the SQLite store.
//!
//!     cargo run --release -p altclip-index --example search_latency -- [N] [QUERIES] [EF...] [--clusters=K]
//!
//! Prints the p50 / p99 latency of one top-10 query by exact scan, then
//! builds the HNSW graph and prints, for each search-time candidate list
//! size EF (default: the store's), recall@10 against the exact results and
//! the latency. The text encoder is not included. Uniformly random vectors
//! are the hardest case for a graph index; real embeddings cluster, which
//! `--clusters=K` imitates: vectors and queries are K random centres plus
//! noise of the same norm.
//!
//! `--filters` also writes a manifest with metadata for the N vectors (dates
//! over ten years, five cameras, GPS on a third, ten folders) and prints the
//! latency of filtered searches (`altclip search --after ...`), by exact scan
//! and through the graph, including the manifest queries. `--no-graph` stops
//! after the exact scan.

use std::time::Instant;

use altclip_index::db::FileRow;
use altclip_index::filter::{self, Filter, Near, Search, Sort};
use altclip_index::{
    ann, AnnPolicy, GraphUse, Index, Media, SqliteVectors, VectorDtype, VectorStore,
};

/// xorshift64*: reproducible pseudo-random numbers without a dependency.
struct Rng(u64);

impl Rng {
    fn next_f32(&mut self) -> f32 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        ((self.0.wrapping_mul(0x2545F4914F6CDD1D) >> 40) as f32 / (1u64 << 24) as f32) - 0.5
    }

    fn next_f64(&mut self) -> f64 {
        f64::from(self.next_f32()) + 0.5
    }

    fn unit_vector(&mut self, dim: usize) -> Vec<f32> {
        normalized((0..dim).map(|_| self.next_f32()).collect())
    }

    /// A uniformly random unit vector, or one near a random centre.
    fn sample(&mut self, centres: &[Vec<f32>], dim: usize) -> Vec<f32> {
        let noise = self.unit_vector(dim);
        if centres.is_empty() {
            return noise;
        }
        let c = &centres[(self.0 % centres.len() as u64) as usize];
        normalized(c.iter().zip(&noise).map(|(a, b)| a + b).collect())
    }
}

fn normalized(v: Vec<f32>) -> Vec<f32> {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.into_iter().map(|x| x / norm).collect()
}

/// p50 and p99 of `times`, in milliseconds.
fn percentiles(mut times: Vec<f64>) -> (f64, f64) {
    times.sort_by(f64::total_cmp);
    let pct = |p: f64| times[((times.len() - 1) as f64 * p).round() as usize];
    (pct(0.5), pct(0.99))
}

/// Runs every query, returning the top-10 keys of each and the latencies.
fn run(store: &SqliteVectors, queries: &[Vec<f32>]) -> (Vec<Vec<String>>, Vec<f64>) {
    queries
        .iter()
        .map(|q| {
            let t = Instant::now();
            let hits = store.search(q, 10).expect("search");
            let ms = t.elapsed().as_secs_f64() * 1e3;
            (hits.into_iter().map(|(k, _)| k).collect(), ms)
        })
        .unzip()
}

/// Manifest rows for the N vectors: file `i` holds vector `i`.
fn write_manifest(
    db: &std::path::Path,
    n: usize,
    rng: &mut Rng,
) -> Result<(), Box<dyn std::error::Error>> {
    let cameras = [
        ("Apple", "iPhone 13"),
        ("Apple", "iPhone 15 Pro"),
        ("Canon", "EOS R5"),
        ("SONY", "ILCE-7M4"),
        ("Google", "Pixel 8"),
    ];
    let mut index = Index::open(db)?;
    for chunk in 0..n.div_ceil(10_000) {
        let rows: Vec<FileRow> = (chunk * 10_000..((chunk + 1) * 10_000).min(n))
            .map(|i| {
                let mut r = |k: f32| ((rng.next_f32() + 0.5) * k) as u32;
                let taken = format!(
                    "{}-{:02}-{:02}T12:00:00",
                    2015 + r(10.0).min(9),
                    1 + r(12.0).min(11),
                    1 + r(28.0).min(27)
                );
                let (make, model) = cameras[i % cameras.len()];
                let (lat, lon) = match i % 3 {
                    0 => (
                        Some(20.0 + rng.next_f64() * 30.0),
                        Some(100.0 + rng.next_f64() * 30.0),
                    ),
                    _ => (None, None),
                };
                FileRow {
                    path: format!("/photos/{}/{i}.jpg", 2015 + i % 10),
                    size: 1,
                    mtime_ns: 0,
                    hash: format!("{i:016x}"),
                    media: Some(Media {
                        kind: "photo".into(),
                        taken,
                        taken_from: "exif".into(),
                        make: Some(make.into()),
                        model: Some(model.into()),
                        lat,
                        lon,
                        width: 4000,
                        height: 3000,
                        duration: None,
                    }),
                }
            })
            .collect();
        index.commit(&rows, &[])?;
    }
    Ok(())
}

/// p50 / p99 of filtered searches, each case with its share of the files.
fn filtered(
    store: &dyn VectorStore,
    db: &std::path::Path,
    queries: &[Vec<f32>],
    label: &str,
) -> Result<(), Box<dyn std::error::Error>> {
    let index = Index::open(db)?;
    let near = Near {
        lat: 35.0,
        lon: 115.0,
        km: 300.0,
    };
    let cases: Vec<(&str, Search)> = vec![
        ("no filter", Search::top(10)),
        (
            "--after 2023",
            Search {
                top: 10,
                filter: Filter {
                    after: Some("2023".into()),
                    ..Filter::default()
                },
                ..Search::default()
            },
        ),
        (
            "--camera canon",
            Search {
                top: 10,
                filter: Filter {
                    camera: Some("canon".into()),
                    ..Filter::default()
                },
                ..Search::default()
            },
        ),
        (
            "--path '/photos/2019/*'",
            Search {
                top: 10,
                filter: Filter {
                    path: Some("/photos/2019/*".into()),
                    ..Filter::default()
                },
                ..Search::default()
            },
        ),
        (
            "--near 35,115,300",
            Search {
                top: 10,
                filter: Filter {
                    near: Some(near),
                    ..Filter::default()
                },
                ..Search::default()
            },
        ),
        (
            "--after 2024-06 --camera iphone",
            Search {
                top: 10,
                filter: Filter {
                    after: Some("2024-06".into()),
                    camera: Some("iphone".into()),
                    ..Filter::default()
                },
                ..Search::default()
            },
        ),
        (
            "--sort date --min-score 0.1",
            Search {
                top: 10,
                min_score: Some(0.1),
                sort: Sort::Date,
                ..Search::default()
            },
        ),
    ];
    for (name, search) in cases {
        let catalog = filter::Catalog::read(&index)?;
        filter::search_in(store, &index, &catalog, &queries[0], &search)?; // warm
        let time = |cached: bool| {
            let times: Vec<f64> = queries
                .iter()
                .map(|q| {
                    let t = Instant::now();
                    let hits = if cached {
                        filter::search_in(store, &index, &catalog, q, &search)
                    } else {
                        filter::search(store, &index, q, &search)
                    };
                    std::hint::black_box(hits.expect("search"));
                    t.elapsed().as_secs_f64() * 1e3
                })
                .collect();
            percentiles(times)
        };
        let ((p50, p99), (c50, c99)) = (time(false), time(true));
        println!(
            "{label}, {name}: p50 {p50:.1} ms, p99 {p99:.1} ms as `altclip search` (reads the \
             manifest); p50 {c50:.1} ms, p99 {c99:.1} ms with the catalog cached (the server)"
        );
    }
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let with_filters = std::env::args().any(|a| a == "--filters");
    let no_graph = std::env::args().any(|a| a == "--no-graph");
    let clusters: usize = std::env::args()
        .find_map(|a| {
            a.strip_prefix("--clusters=")
                .map(|k| k.parse().expect("--clusters=K"))
        })
        .unwrap_or(0);
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let (n, nq, dim) = (
        args.first().copied().unwrap_or(100_000),
        args.get(1).copied().unwrap_or(200),
        768,
    );
    let policy = AnnPolicy {
        threshold: 1,
        ..AnnPolicy::default()
    };
    let efs: Vec<Option<usize>> = match &args[2.min(args.len())..] {
        [] => vec![None],
        efs => efs.iter().map(|&ef| Some(ef)).collect(),
    };
    let dir = std::env::temp_dir().join(format!("altclip-latency-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let db = dir.join("index.db");
    let mut store = SqliteVectors::open(&db, VectorDtype::F16)?
        .with_ann_policy(policy)
        .graph_use(GraphUse::Always);
    let mut rng = Rng(0x9E3779B97F4A7C15);
    let centres: Vec<Vec<f32>> = (0..clusters).map(|_| rng.unit_vector(dim)).collect();
    let start = Instant::now();
    for chunk in 0..n.div_ceil(10_000) {
        let batch: Vec<(String, Vec<f32>)> = (chunk * 10_000..((chunk + 1) * 10_000).min(n))
            .map(|i| (format!("{i:016x}"), rng.sample(&centres, dim)))
            .collect();
        store.upsert(&batch)?;
    }
    println!(
        "wrote {n} vectors in {:.1} s",
        start.elapsed().as_secs_f64()
    );
    let queries: Vec<Vec<f32>> = (0..nq).map(|_| rng.sample(&centres, dim)).collect();
    if with_filters {
        let start = Instant::now();
        write_manifest(&db, n, &mut rng)?;
        println!(
            "wrote the manifest in {:.1} s",
            start.elapsed().as_secs_f64()
        );
    }

    let exact = SqliteVectors::open(&db, VectorDtype::F16)?.graph_use(GraphUse::Never);
    let start = Instant::now();
    exact.search(&queries[0], 10)?; // loads the matrix
    println!(
        "first exact query (loads the matrix) {:.0} ms",
        start.elapsed().as_secs_f64() * 1e3
    );
    let (truth, times) = run(&exact, &queries);
    let (p50, p99) = percentiles(times);
    println!("exact: {n} x {dim}, top 10: p50 {p50:.1} ms, p99 {p99:.1} ms ({nq} queries)");
    if with_filters {
        filtered(&exact, &db, &queries, "exact scan")?;
    }

    if no_graph {
        std::fs::remove_dir_all(dir)?;
        return Ok(());
    }
    let start = Instant::now();
    store.finish(&mut |_, _| {})?;
    println!(
        "HNSW build (M={}, ef_construction={}): {:.1} s",
        policy.params.connectivity,
        policy.params.expansion_add,
        start.elapsed().as_secs_f64()
    );
    assert!(
        store.uses_graph()?,
        "the graph should be fresh after finish"
    );
    let (_, status) = ann::status(&db)?.expect("a graph");
    println!(
        "calibrated ef={} (recall@10 {:.4}, graph {:.1} ms vs scan {:.1} ms per query on the \
         calibration queries: searches {} the graph)",
        status.ef,
        status.recall,
        status.graph_ms,
        status.scan_ms,
        if status.graph_is_faster() {
            "use"
        } else {
            "skip"
        }
    );
    if with_filters {
        store.search(&queries[0], 10)?; // maps the graph
        filtered(&store, &db, &queries, "HNSW")?;
    }
    for ef in efs {
        if let Some(ef) = ef {
            store.set_expansion_search(ef);
        }
        let ef = ef.unwrap_or(status.ef);
        store.search(&queries[0], 10)?; // maps the graph
        let (found, times) = run(&store, &queries);
        let hits: usize = found
            .iter()
            .zip(&truth)
            .map(|(f, t)| f.iter().filter(|k| t.contains(k)).count())
            .sum();
        let (p50, p99) = percentiles(times);
        println!(
            "HNSW ef={ef}: recall@10 {:.4}, p50 {p50:.1} ms, p99 {p99:.1} ms",
            hits as f64 / (10 * nq) as f64
        );
    }
    std::fs::remove_dir_all(dir)?;
    Ok(())
}
