//! Round trip through a real Milvus server (milvus-lite or standalone).
//!
//! Set `ALTCLIP_TEST_MILVUS_URI=http://127.0.0.1:PORT` to run it;
//! `scripts/test_milvus.sh` starts a milvus-lite server and does so.

use altclip_index::VectorStore;
use altclip_milvus::MilvusStore;

const DIM: usize = 8;

/// `milvus://host:port/<fresh collection>` from the `http://host:port` in
/// the environment, or `None` when the variable is unset.
fn test_uri() -> Option<String> {
    let raw = std::env::var("ALTCLIP_TEST_MILVUS_URI").ok()?;
    let hostport = raw
        .trim()
        .trim_start_matches("http://")
        .trim_start_matches("milvus://")
        .trim_end_matches('/');
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    Some(format!(
        "milvus://{hostport}/altclip_test_{}_{nanos}",
        std::process::id()
    ))
}

fn key(c: char) -> String {
    c.to_string().repeat(64)
}

fn normalised(v: &[f32]) -> Vec<f32> {
    let mut v = v.to_vec();
    v.resize(DIM, 0.0);
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.iter().map(|x| x / n).collect()
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

#[test]
fn round_trip() {
    let Some(uri) = test_uri() else {
        println!("skipped: ALTCLIP_TEST_MILVUS_URI not set (run scripts/test_milvus.sh)");
        return;
    };
    println!("milvus round trip against {uri}");
    let mut store = MilvusStore::connect(&uri, DIM).expect("connect and create the collection");

    let data = vec![
        (key('a'), normalised(&[1.0, 0.0, 0.0])),
        (key('b'), normalised(&[0.0, 1.0, 0.0])),
        (key('c'), normalised(&[0.6, 0.8, 0.0])),
        (key('d'), normalised(&[0.0, 0.0, 1.0])),
        (key('e'), normalised(&[0.5, 0.5, 0.5, 0.5])),
    ];
    store.upsert(&data).expect("upsert");
    assert_eq!(store.count().unwrap(), 5);

    let present = store
        .contains(&[key('a'), key('z'), key('e'), "0\"1\\2".into()])
        .expect("contains");
    assert_eq!(present, vec![true, false, true, false]);

    let query = normalised(&[0.1, 1.0, 0.0]);
    let hits = store.search(&query, 3).expect("search");
    println!("search hits: {hits:?}");
    assert_eq!(hits.len(), 3);
    assert_eq!(hits[0].0, key('b'), "nearest is b");
    assert_eq!(hits[1].0, key('c'));
    for (k, score) in &hits {
        let v = &data.iter().find(|(dk, _)| dk == k).unwrap().1;
        assert!(
            (score - dot(v, &query)).abs() < 1e-4,
            "{k}: score {score} vs inner product {}",
            dot(v, &query)
        );
    }
    assert!(hits.windows(2).all(|w| w[0].1 >= w[1].1), "best first");

    store.remove(&[key('b'), key('z')]).expect("remove");
    assert_eq!(
        store.contains(&[key('a'), key('b')]).unwrap(),
        vec![true, false]
    );
    let hits = store.search(&query, 10).expect("search after remove");
    println!("after remove: {:?}", keys_of(&hits));
    assert_eq!(hits.len(), 4);
    assert_eq!(hits[0].0, key('c'), "b is gone, c is nearest");
    assert!(hits.iter().all(|(k, _)| *k != key('b')));

    // Replace a's vector: it becomes the best match for the query.
    store.upsert(&[(key('a'), query.clone())]).expect("replace");
    let hits = store.search(&query, 2).expect("search after replace");
    println!("after replace: {hits:?}");
    assert_eq!(hits[0].0, key('a'));
    assert!((hits[0].1 - 1.0).abs() < 1e-4);
    assert_eq!(store.count().unwrap(), 4);

    let all = store.all().expect("all");
    assert_eq!(keys_of(&all), vec![key('a'), key('c'), key('d'), key('e')]);
    for (k, v) in &all {
        let want = if *k == key('a') {
            query.clone()
        } else {
            data.iter().find(|(dk, _)| dk == k).unwrap().1.clone()
        };
        assert!(
            v.iter().zip(&want).all(|(x, y)| (x - y).abs() < 1e-6),
            "{k}"
        );
    }

    // A second connection reuses the collection; a wrong dimension is refused.
    let again = MilvusStore::connect(&uri, DIM).expect("reconnect");
    assert_eq!(again.count().unwrap(), 4);
    let err = MilvusStore::connect(&uri, DIM + 1).unwrap_err().to_string();
    println!("wrong dimension: {err}");
    assert!(err.contains("dimensional"), "{err}");
    assert!(store.search(&[1.0; DIM + 1], 1).is_err());

    store.drop_collection().expect("drop the test collection");
    println!("milvus round trip: ok");
}

#[test]
fn large_batches_and_paging() {
    // 768 dimensions, as AltCLIP: upserts go out in several messages and
    // `all()` reads several key-ordered pages.
    const DIM: usize = 768;
    const N: usize = 1500;
    let Some(uri) = test_uri() else {
        println!("skipped: ALTCLIP_TEST_MILVUS_URI not set (run scripts/test_milvus.sh)");
        return;
    };
    let mut store = MilvusStore::connect(&uri, DIM).expect("connect");
    let vectors: Vec<(String, Vec<f32>)> = (0..N)
        .map(|i| {
            let mut v = vec![0.0; DIM];
            v[i % DIM] = 1.0;
            v[(i * 7 + 1) % DIM] += 0.5;
            (
                format!("{:064x}", i * 2_654_435_761 % 1_000_003),
                normalised_n(&v),
            )
        })
        .collect();
    let start = std::time::Instant::now();
    store.upsert(&vectors).expect("upsert");
    println!("upserted {N} x {DIM} in {:?}", start.elapsed());
    assert_eq!(store.count().unwrap(), N as u64);
    let start = std::time::Instant::now();
    let all = store.all().expect("all");
    println!("read back {} in {:?}", all.len(), start.elapsed());
    let mut want = vectors.clone();
    want.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(keys_of(&all), keys_of(&want));
    assert!(all.iter().zip(&want).all(|(a, b)| a.1 == b.1));
    let hits = store.search(&vectors[42].1, 5).expect("search");
    assert_eq!(hits[0].0, vectors[42].0);

    // A filter's matches, searched through `key in [...]` expressions: the
    // same ranking as a brute-force scan of the subset, including for a
    // subset far from the query (no plain top-k would reach it), and for
    // one of more keys than one expression holds. (Scores are compared
    // rank by rank: the vectors tie often, so keys of equal score may swap.)
    let query = &vectors[42].1;
    for subset in [
        vec![7usize, 500, 1499],
        (0..N).filter(|i| i % 5 != 2).collect(),
    ] {
        let keys: std::collections::HashSet<String> =
            subset.iter().map(|&i| vectors[i].0.clone()).collect();
        let mut want: Vec<(String, f32)> = subset
            .iter()
            .map(|&i| (vectors[i].0.clone(), dot(query, &vectors[i].1)))
            .collect();
        want.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        let got = store
            .search_among(query, 10, &keys)
            .expect("filtered search");
        assert_eq!(got.len(), 10.min(subset.len()));
        assert!(got.iter().all(|(k, _)| keys.contains(k)), "{got:?}");
        for ((gk, gs), (_, ws)) in got.iter().zip(&want) {
            assert!((gs - ws).abs() < 1e-4, "{gk}: {gs} vs {ws}");
        }
    }
    store.drop_collection().expect("drop");
}

fn normalised_n(v: &[f32]) -> Vec<f32> {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.iter().map(|x| x / n).collect()
}

#[test]
fn unreachable_server_names_the_uri() {
    if std::env::var("ALTCLIP_TEST_MILVUS_URI").is_err() {
        println!("skipped: ALTCLIP_TEST_MILVUS_URI not set (run scripts/test_milvus.sh)");
        return;
    }
    // Port 1 on loopback: nothing listens there.
    let err = MilvusStore::connect("milvus://127.0.0.1:1/nothing_here", DIM)
        .unwrap_err()
        .to_string();
    println!("unreachable: {err}");
    assert!(err.contains("milvus://127.0.0.1:1/nothing_here"), "{err}");
    assert!(err.contains("Is the server running"), "{err}");
}

fn keys_of<T>(hits: &[(String, T)]) -> Vec<String> {
    hits.iter().map(|(k, _)| k.clone()).collect()
}
