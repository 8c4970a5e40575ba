//! A bounded load test on loopback: many concurrent clients, a fixed number
//! of requests; every answer is the right vector or a 429, the queue stays
//! within the admission bound, and batches of more than one input form.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use serde_json::json;

use crate::common::*;

const CLIENTS: usize = 48;
const REQUESTS_PER_CLIENT: usize = 4;
const MAX_CONCURRENT: usize = 8;

/// A sample's value; 0 for a labelled series not yet present.
fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_clients_get_correct_vectors_or_429_and_batches_form() {
    // Requests wait up to 100 ms for company, so the eight admitted at once
    // share forward passes and everyone beyond them is refused.
    let s = Arc::new(TestServer::start(|a| {
        a.max_concurrent_requests = MAX_CONCURRENT as u64;
        a.max_batch_size = 32;
        a.max_batch_wait_ms = 100;
        a.max_client_batch_size = 2;
    }));
    let texts = ["一只猫", "a dog", "海边的日落", "a red car on the street"];
    let images = ["photo.png", "gray.png"];
    let expected_texts: Vec<Vec<f32>> = texts.iter().map(|t| engine_text(t)).collect();
    let expected_images: Vec<Vec<f32>> = images.iter().map(|n| engine_image(n)).collect();
    let image_uris: Vec<String> = images.iter().map(|n| data_uri(n)).collect();
    let expected = Arc::new((expected_texts, expected_images));
    let uris = Arc::new(image_uris);
    let ok = Arc::new(AtomicUsize::new(0));
    let refused = Arc::new(AtomicUsize::new(0));
    let running = Arc::new(AtomicBool::new(true));

    // Sample the queue while the load runs: it never exceeds what the
    // admitted requests can hold.
    let sampler = {
        let (s, running) = (s.clone(), running.clone());
        tokio::spawn(async move {
            let mut deepest = 0.0f64;
            while running.load(Ordering::Relaxed) {
                let text = client()
                    .get(s.url("/metrics"))
                    .send()
                    .await
                    .unwrap()
                    .text()
                    .await
                    .unwrap();
                let depth = metric(&text, "altclip_queue_depth{tower=\"text\"}")
                    + metric(&text, "altclip_queue_depth{tower=\"image\"}");
                deepest = deepest.max(depth);
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
            deepest
        })
    };

    let start = std::time::Instant::now();
    let mut tasks = Vec::new();
    for c in 0..CLIENTS {
        let (s, expected, uris, ok, refused) = (
            s.clone(),
            expected.clone(),
            uris.clone(),
            ok.clone(),
            refused.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let http = client();
            for r in 0..REQUESTS_PER_CLIENT {
                let n = c * REQUESTS_PER_CLIENT + r;
                let (body, want) = if n % 3 == 2 {
                    let i = n % uris.len();
                    (
                        json!({"input": [uris[i]], "modality": "image"}),
                        &expected.1[i],
                    )
                } else {
                    let i = n % texts.len();
                    (json!({"input": texts[i]}), &expected.0[i])
                };
                let res = http
                    .post(s.url("/v1/embeddings"))
                    .json(&body)
                    .send()
                    .await
                    .unwrap();
                let status = res.status().as_u16();
                let retry_after = res.headers().get("retry-after").cloned();
                let v: serde_json::Value = res.json().await.unwrap();
                match status {
                    200 => {
                        let d = max_diff(&floats(&v["data"][0]["embedding"]), want);
                        assert!(d < 1e-4, "request {n}: wrong vector (max |Δ| {d})");
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    429 => {
                        assert_eq!(v["error"]["type"], "overloaded", "{v}");
                        assert_eq!(retry_after.as_ref().map(|h| h.as_bytes()), Some(&b"1"[..]));
                        refused.fetch_add(1, Ordering::Relaxed);
                    }
                    other => panic!("request {n}: unexpected {other}: {v}"),
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let elapsed = start.elapsed();
    running.store(false, Ordering::Relaxed);
    let deepest = sampler.await.unwrap();
    let (ok, refused) = (ok.load(Ordering::Relaxed), refused.load(Ordering::Relaxed));
    eprintln!("load: {ok} ok, {refused} refused with 429 in {elapsed:?}; deepest queue {deepest}");
    assert_eq!(ok + refused, CLIENTS * REQUESTS_PER_CLIENT);
    assert!(ok >= MAX_CONCURRENT, "too few answered: {ok}");
    assert!(
        refused > 0,
        "no request was refused past --max-concurrent-requests"
    );
    assert!(
        deepest <= (MAX_CONCURRENT * 2) as f64,
        "queue grew to {deepest}"
    );

    let text = client()
        .get(s.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let biggest = metric(&text, "altclip_batch_size_max{tower=\"text\"}")
        .max(metric(&text, "altclip_batch_size_max{tower=\"image\"}"));
    assert!(
        biggest > 1.0,
        "no batch of more than one input formed:\n{text}"
    );
    assert_eq!(
        metric(
            &text,
            "altclip_requests_total{route=\"/v1/embeddings\",status=\"429\"}"
        ) as usize,
        refused
    );
    // The server still answers once the load is over.
    let (status, _) = post(&s.url("/v1/embeddings"), &json!({"input": "still here"})).await;
    assert_eq!(status, 200);
}
