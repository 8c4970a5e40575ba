//! Exact-search latency over N random 768-d vectors in the SQLite store.
//!
//!     cargo run --release -p altclip-index --example search_latency -- [N] [QUERIES]
//!
//! Prints the time to load the matrix and the p50 / p99 latency of one query
//! (the vector scan and top-10 selection; the text encoder is not included).

use altclip_index::{SqliteVectors, VectorDtype, VectorStore};

/// xorshift64*: reproducible pseudo-random numbers without a dependency.
struct Rng(u64);

impl Rng {
    fn next_f32(&mut self) -> f32 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        ((self.0.wrapping_mul(0x2545F4914F6CDD1D) >> 40) as f32 / (1u64 << 24) as f32) - 0.5
    }

    fn unit_vector(&mut self, dim: usize) -> Vec<f32> {
        let v: Vec<f32> = (0..dim).map(|_| self.next_f32()).collect();
        let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        v.into_iter().map(|x| x / norm).collect()
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let (n, queries, dim) = (
        args.first().copied().unwrap_or(100_000),
        args.get(1).copied().unwrap_or(200),
        768,
    );
    let dir = std::env::temp_dir().join(format!("altclip-latency-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let mut store = SqliteVectors::open(&dir.join("index.db"), VectorDtype::F16)?;
    let mut rng = Rng(0x9E3779B97F4A7C15);
    let start = std::time::Instant::now();
    for chunk in 0..n.div_ceil(10_000) {
        let batch: Vec<(String, Vec<f32>)> = (chunk * 10_000..((chunk + 1) * 10_000).min(n))
            .map(|i| (format!("{i:016x}"), rng.unit_vector(dim)))
            .collect();
        store.upsert(&batch)?;
    }
    println!(
        "wrote {n} vectors in {:.1} s",
        start.elapsed().as_secs_f64()
    );
    let start = std::time::Instant::now();
    store.search(&rng.unit_vector(dim), 10)?; // loads the matrix
    println!(
        "first query (loads the matrix) {:.0} ms",
        start.elapsed().as_secs_f64() * 1e3
    );
    let mut times: Vec<f64> = (0..queries)
        .map(|_| {
            let q = rng.unit_vector(dim);
            let t = std::time::Instant::now();
            store.search(&q, 10).expect("search");
            t.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    times.sort_by(f64::total_cmp);
    let pct = |p: f64| times[((times.len() - 1) as f64 * p).round() as usize];
    println!(
        "exact search, {n} x {dim}, top 10: p50 {:.1} ms, p99 {:.1} ms ({queries} queries)",
        pct(0.5),
        pct(0.99)
    );
    std::fs::remove_dir_all(dir)?;
    Ok(())
}
