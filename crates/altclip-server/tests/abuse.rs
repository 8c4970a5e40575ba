//! A bounded load-and-abuse test on loopback: clients that declare bodies
//! they never send, upload at a crawl, or dribble their headers run alongside
//! honest clients. The honest ones are all served (never 429), the abusive
//! ones get 408 or a closed connection, and memory returns to within 20% of
//! its idle size afterwards.
//!
//! A test binary of its own, so that no other test shares the process whose
//! resident memory it measures.

use std::sync::Arc;
use std::time::{Duration, Instant};

use altclip_server::memory::resident_bytes;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[allow(dead_code)]
#[path = "server/common.rs"]
mod common;
use common::*;

/// How long any abuser may go unanswered before the test fails.
const PATIENCE: Duration = Duration::from_secs(30);

/// The task's result, or a failure naming `what` if it runs past [`PATIENCE`].
async fn within<T>(what: &str, task: tokio::task::JoinHandle<T>) -> T {
    tokio::time::timeout(PATIENCE, task)
        .await
        .unwrap_or_else(|_| panic!("{what}: no answer within {PATIENCE:?}"))
        .unwrap()
}

/// As many abusers as there are request slots: before the fix, they held all.
const SLOTS: usize = 16;
const HONEST: usize = 19;

/// Reads until the server answers or closes; returns the status line
/// (empty when the connection was closed without an answer).
async fn answer_to(stream: &mut (impl AsyncReadExt + Unpin)) -> String {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    loop {
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                if buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    break;
                }
            }
        }
    }
    String::from_utf8_lossy(&buf)
        .lines()
        .next()
        .unwrap_or("")
        .to_string()
}

fn embeddings_head(addr: std::net::SocketAddr, length: u64) -> String {
    format!(
        "POST /v1/embeddings HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Content-Length: {length}\r\n\r\n"
    )
}

/// Declares a body of `length` bytes and sends none of it.
async fn silent_body(addr: std::net::SocketAddr, length: u64) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(embeddings_head(addr, length).as_bytes())
        .await
        .unwrap();
    answer_to(&mut s).await
}

/// Sends a valid body one byte every 100 ms, for longer than the body timeout.
async fn crawling_body(addr: std::net::SocketAddr) -> String {
    let body = json!({"input": "a crawl of a request, one byte at a time"}).to_string();
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(embeddings_head(addr, body.len() as u64).as_bytes())
        .await
        .unwrap();
    let (mut read, mut write) = s.into_split();
    let writer = tokio::spawn(async move {
        for b in body.bytes() {
            if write.write_all(&[b]).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    let line = answer_to(&mut read).await;
    writer.abort();
    line
}

/// Sends a header line a byte at a time and never finishes the headers.
async fn dribbled_headers(addr: std::net::SocketAddr) -> Duration {
    let start = Instant::now();
    let mut s = TcpStream::connect(addr).await.unwrap();
    for b in b"POST /v1/embeddings HTTP/1.1\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa" {
        if s.write_all(&[*b]).await.is_err() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut buf = [0u8; 256];
    let _ = tokio::time::timeout(Duration::from_secs(20), s.read(&mut buf)).await;
    start.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_and_silent_clients_time_out_while_honest_ones_are_served() {
    let s = Arc::new(TestServer::start(|a| {
        a.max_concurrent_requests = SLOTS as u64;
        a.header_timeout = 1;
        a.body_timeout = 2;
        a.request_timeout = 60;
    }));
    let addr = s.addr;
    let want = engine_text("一只猫");
    // A large image for the memory check: decoded, it is tens of MB.
    let big = {
        let img = image::RgbImage::from_fn(2400, 1800, |x, y| {
            image::Rgb([(x % 251) as u8, (y % 241) as u8, ((x * y) % 239) as u8])
        });
        let mut png = Vec::new();
        image::DynamicImage::ImageRgb8(img)
            .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
            .unwrap();
        format!("data:image/png;base64,{}", b64(&png))
    };
    let honest = |text: &'static str| {
        let url = s.url("/v1/embeddings");
        async move { post(&url, &json!({ "input": text })).await }
    };
    let embed_big = || {
        let url = s.url("/embed");
        let body = json!({ "input": [{ "image": big.clone() }] });
        async move { post(&url, &body).await }
    };
    // Warm up, then take the idle size.
    assert_eq!(honest("一只猫").await.0, 200);
    assert_eq!(embed_big().await.0, 200);
    let idle = resident_bytes();

    let declared_huge = tokio::spawn(silent_body(addr, 1_000_000_000_000));
    let silent: Vec<_> = (0..SLOTS)
        .map(|_| tokio::spawn(silent_body(addr, 1000)))
        .collect();
    let crawling: Vec<_> = (0..SLOTS)
        .map(|_| tokio::spawn(crawling_body(addr)))
        .collect();
    let dribbling: Vec<_> = (0..4)
        .map(|_| tokio::spawn(dribbled_headers(addr)))
        .collect();
    // Let every abuser connect and start before the honest clients come.
    tokio::time::sleep(Duration::from_millis(300)).await;

    let mut served = 0;
    for i in 0..HONEST {
        let (status, body) = if i % 6 == 5 {
            embed_big().await
        } else {
            honest("一只猫").await
        };
        assert_eq!(
            status, 200,
            "honest request {i} refused while abusers wait: {body}"
        );
        if i % 6 != 5 {
            let got = floats(&body["data"][0]["embedding"]);
            assert!(max_diff(&got, &want) < 1e-5, "honest request {i}");
        }
        served += 1;
    }
    assert_eq!(served, HONEST);

    let line = within("a body declared at 1 TB", declared_huge).await;
    assert!(line.contains(" 413 "), "a body declared at 1 TB: {line}");
    for task in silent {
        let line = within("a declared body never sent", task).await;
        assert!(
            line.contains(" 408 "),
            "a declared body never sent: {line:?}"
        );
    }
    for task in crawling {
        let line = within("a body sent at 10 bytes/s", task).await;
        assert!(
            line.contains(" 408 "),
            "a body sent at 10 bytes/s: {line:?}"
        );
    }
    for task in dribbling {
        let waited = within("headers that never end", task).await;
        assert!(
            waited < Duration::from_secs(10),
            "headers that never end held the connection for {waited:?}"
        );
    }

    // Memory: the large decodes are handed back once the load is over.
    if let (Some(idle), Some(after)) = (idle, resident_bytes()) {
        let ratio = after as f64 / idle as f64;
        println!("resident memory: {idle} bytes idle, {after} after the load ({ratio:.2}x)");
        assert!(
            ratio <= 1.2,
            "resident memory {after} bytes after the load, {idle} when idle ({ratio:.2}x)"
        );
    } else {
        println!("skipped: the memory check needs /proc/self/statm (Linux)");
    }
}
