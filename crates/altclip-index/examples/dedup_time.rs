//! Time of `altclip dedup`'s comparison over N random 768-d vectors (one
//! file each, no metadata): the all-pairs embedding scan, which dominates a
//! large library's run. Every tenth vector is a near copy of the one before,
//! so a tenth of the files pair up and are grouped (every difference hash is
//! given as equal; decoding the files is not timed).
//!
//!     cargo run --release -p altclip-index --example dedup_time -- [N]

use std::collections::HashMap;
use std::time::Instant;

use altclip_index::dedup::{self, Library, Options};

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .map_or(20_000, |a| a.parse().expect("N"));
    let dim = 768;
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 40) as f32 / (1u64 << 24) as f32 - 0.5
    };
    let normalised = |v: Vec<f32>| {
        let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        v.into_iter().map(|x| x / norm).collect::<Vec<f32>>()
    };
    let mut vectors: Vec<(String, Vec<f32>)> = Vec::with_capacity(n);
    for i in 0..n {
        let v = if i % 10 == 9 {
            let base = &vectors[i - 1].1;
            normalised(base.iter().map(|x| x + 0.001 * next()).collect())
        } else {
            normalised((0..dim).map(|_| next()).collect())
        };
        vectors.push((format!("{i:064x}"), v));
    }
    let paths: HashMap<String, Vec<String>> = vectors
        .iter()
        .map(|(k, _)| (k.clone(), vec![format!("/photos/{k}.jpg")]))
        .collect();
    let (frames, media) = (HashMap::new(), HashMap::new());
    let library = Library {
        vectors: &vectors,
        paths_by_hash: &paths,
        frames: &frames,
        media: &media,
    };
    let start = Instant::now();
    let groups =
        dedup::groups(&library, &Options::default(), &|_| Some(0), &|_, _| {}).expect("dedup");
    println!(
        "{n} x {dim}: {} pairs compared in {:.1} s, {} groups",
        n * (n - 1) / 2,
        start.elapsed().as_secs_f64(),
        groups.len()
    );
}
