//! Load generator for a running `altclip serve`: a fixed number of requests
//! from concurrent clients on loopback; prints requests/s, inputs/s, p50/p99
//! latency, refusals and the server's mean batch size as one JSON line.
//!
//! ```sh
//! altclip serve --model tests/fixtures/tiny-224 --port 8080 &
//! cargo run --release -p altclip-server --example load -- \
//!     --url http://127.0.0.1:8080 --kind image --requests 2000 --concurrency 32
//! ```

use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use serde_json::{json, Value};

#[derive(Parser, Debug)]
struct Args {
    /// Base URL of the server.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    url: String,
    /// What each request embeds.
    #[arg(long, default_value = "text", value_parser = ["text", "image"])]
    kind: String,
    /// Requests in total.
    #[arg(long, default_value_t = 1000)]
    requests: usize,
    /// Clients sending at once, each waiting for its answer before the next request.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Inputs per request.
    #[arg(long, default_value_t = 1)]
    inputs: usize,
    /// Image sent by --kind image.
    #[arg(long, default_value = "tests/fixtures/images/photo.jpg")]
    image: String,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 600)]
    timeout: u64,
}

const TEXTS: &[&str] = &[
    "一只在草地上的猫",
    "a photo of a dog running on the beach",
    "海边的日落",
    "a red car parked on a narrow street in the rain",
    "一碗热气腾腾的牛肉面",
    "two children flying a kite in the park",
];

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

/// `altclip_batch_size_{sum,count}{tower="..."}` from a scrape (0 when absent).
fn batch_totals(metrics: &str, tower: &str) -> (f64, f64) {
    let value = |suffix: &str| {
        let key = format!("altclip_batch_size_{suffix}{{tower=\"{tower}\"}} ");
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(&key)?.trim().parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (value("sum"), value("count"))
}

async fn scrape(client: &reqwest::Client, base: &str) -> String {
    client
        .get(format!("{base}/metrics"))
        .send()
        .await
        .and_then(|r| r.error_for_status())
        .unwrap_or_else(|e| panic!("is the server running at {base}? {e}"))
        .text()
        .await
        .unwrap()
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let body = match args.kind.as_str() {
        "image" => {
            let bytes = std::fs::read(&args.image)
                .unwrap_or_else(|e| panic!("--image {}: {e}", args.image));
            let uri = format!(
                "data:application/octet-stream;base64,{}",
                altclip_server::inputs::encode_base64(&bytes)
            );
            json!({"input": vec![uri; args.inputs], "modality": "image"})
        }
        _ => json!({"input": (0..args.inputs).map(|i| TEXTS[i % TEXTS.len()]).collect::<Vec<_>>()}),
    };
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(args.timeout))
        .build()
        .unwrap();
    let base = args.url.trim_end_matches('/').to_string();
    let url = format!("{base}/v1/embeddings");
    let tower = if args.kind == "image" {
        "image"
    } else {
        "text"
    };
    let before = batch_totals(&scrape(&client, &base).await, tower);

    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let body = Arc::new(body);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..args.concurrency.max(1) {
        let (client, url, body, next) = (client.clone(), url.clone(), body.clone(), next.clone());
        let total = args.requests;
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let (mut refused, mut failed) = (0usize, 0usize);
            while next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < total {
                let t = Instant::now();
                match client.post(&url).json(&*body).send().await {
                    Ok(res) if res.status() == 200 => {
                        let _: Value = res.json().await.unwrap();
                        latencies.push(t.elapsed().as_secs_f64());
                    }
                    Ok(res) if res.status() == 429 => refused += 1,
                    Ok(_) | Err(_) => failed += 1,
                }
            }
            (latencies, refused, failed)
        }));
    }
    let mut latencies = Vec::new();
    let (mut refused, mut failed) = (0, 0);
    for t in tasks {
        let (l, r, f) = t.await.unwrap();
        latencies.extend(l);
        refused += r;
        failed += f;
    }
    let elapsed = start.elapsed().as_secs_f64();
    latencies.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let ok = latencies.len();
    let after = batch_totals(&scrape(&client, &base).await, tower);
    let (inputs, batches) = (after.0 - before.0, after.1 - before.1);
    let report = json!({
        "kind": args.kind,
        "requests": args.requests,
        "concurrency": args.concurrency,
        "inputs_per_request": args.inputs,
        "ok": ok,
        "refused_429": refused,
        "failed": failed,
        "seconds": (elapsed * 1000.0).round() / 1000.0,
        "requests_per_s": (ok as f64 / elapsed * 10.0).round() / 10.0,
        "inputs_per_s": ((ok * args.inputs) as f64 / elapsed * 10.0).round() / 10.0,
        "p50_ms": (percentile(&latencies, 0.50) * 1e4).round() / 10.0,
        "p99_ms": (percentile(&latencies, 0.99) * 1e4).round() / 10.0,
        "server_batches": batches,
        "server_mean_batch_size": (batches > 0.0).then(|| (inputs / batches * 100.0).round() / 100.0),
    });
    println!("{report}");
}
