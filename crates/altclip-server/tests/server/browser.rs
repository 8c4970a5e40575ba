//! The web page in a real browser: headless Chromium over WebDriver
//! (Debian's `chromium` + `chromium-driver`). It types a Chinese query and
//! sees thumbnails load, then uploads an image and sees its classification.
//!
//! Without chromedriver this test fails, saying how to install it; with
//! ALTCLIP_SKIP_BROWSER=1 it is skipped with a printed reason.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::{json, Value};

use crate::common::*;

fn on_path(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| PathBuf::from(d).join(name))
        .find(|p| p.is_file())
}

/// Kills chromedriver when the test ends, however it ends.
struct Driver(Child);

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_chromedriver(path: &PathBuf) -> (Driver, u16) {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new(path)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", path.display()));
    let driver = Driver(child);
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "chromedriver did not listen on {port}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    (driver, port)
}

/// Polls a script until it returns true, or fails with the last value.
async fn wait_until(c: &fantoccini::Client, script: &str, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let v = c.execute(script, vec![]).await.unwrap();
        if v == Value::Bool(true) {
            return;
        }
        if Instant::now() > deadline {
            let status = c
                .execute(
                    "return document.getElementById('status').textContent",
                    vec![],
                )
                .await
                .unwrap();
            panic!("timed out waiting for {what}; page status: {status}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web_page_searches_in_chinese_and_classifies_an_uploaded_image() {
    if std::env::var("ALTCLIP_SKIP_BROWSER").as_deref() == Ok("1") {
        eprintln!("skipping the browser test: ALTCLIP_SKIP_BROWSER=1");
        return;
    }
    let Some(chromedriver) = on_path("chromedriver") else {
        let why = "chromedriver is not on PATH (Debian: `apt-get install -y chromium \
                   chromium-driver`, which .ci/run does)";
        // CI installs the tools and sets ALTCLIP_REQUIRE_TOOLS=1, so there a
        // missing tool fails instead of skipping.
        assert!(
            std::env::var("ALTCLIP_REQUIRE_TOOLS").as_deref() != Ok("1"),
            "{why}, and ALTCLIP_REQUIRE_TOOLS=1 makes the browser test mandatory"
        );
        eprintln!("skipped: the browser test: {why}");
        return;
    };
    let s = server();
    let (_driver, port) = start_chromedriver(&chromedriver);
    let mut chrome = json!({
        "args": [
            "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--window-size=1200,900"
        ]
    });
    if let Some(binary) = on_path("chromium") {
        chrome["binary"] = json!(binary);
    }
    let caps = json!({"goog:chromeOptions": chrome});
    let c = ClientBuilder::new(HttpConnector::new())
        .capabilities(caps.as_object().unwrap().clone())
        .connect(&format!("http://127.0.0.1:{port}"))
        .await
        .expect("a Chromium session over WebDriver");

    c.goto(&s.url("/")).await.unwrap();
    // The header shows the server's info once /info answered.
    wait_until(
        &c,
        "return document.getElementById('info').textContent.includes('indexed images')",
        "the info line",
    )
    .await;

    // Search in Chinese: a grid of thumbnails that really loaded.
    let query = c.find(Locator::Id("query")).await.unwrap();
    query.send_keys("海边的日落").await.unwrap();
    assert_eq!(
        query.prop("value").await.unwrap().as_deref(),
        Some("海边的日落")
    );
    c.find(Locator::Id("search"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let all_loaded = format!(
        "const imgs = [...document.querySelectorAll('#results figure.hit img')];
         return imgs.length === {} && imgs.every(i => i.complete && i.naturalWidth > 0);",
        PHOTOS.len()
    );
    wait_until(&c, &all_loaded, "the result thumbnails").await;
    let scores = c
        .execute(
            "return [...document.querySelectorAll('#results .score')].map(e => parseFloat(e.textContent));",
            vec![],
        )
        .await
        .unwrap();
    let scores: Vec<f64> = scores
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    assert!(
        scores.windows(2).all(|w| w[0] >= w[1]),
        "scores not best first: {scores:?}"
    );

    // The filters reach /search: no videos are indexed, so "videos only" finds nothing.
    c.execute(
        "document.getElementById('kind').value = 'video'; document.getElementById('search').click(); return true;",
        vec![],
    )
    .await
    .unwrap();
    wait_until(
        &c,
        "return document.getElementById('status').textContent.startsWith('0 results')",
        "the filtered search",
    )
    .await;
    c.execute(
        "document.getElementById('kind').value = ''; return true;",
        vec![],
    )
    .await
    .unwrap();

    // Upload an image to classify against typed labels.
    c.find(Locator::Id("mode-classify"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    c.find(Locator::Id("labels"))
        .await
        .unwrap()
        .send_keys("猫, 狗, 鸟")
        .await
        .unwrap();
    let photo = std::fs::canonicalize(image("photo.png")).unwrap();
    c.find(Locator::Id("file"))
        .await
        .unwrap()
        .send_keys(photo.to_str().unwrap())
        .await
        .unwrap();
    wait_until(
        &c,
        "return document.querySelectorAll('#classes li').length === 3",
        "the classification",
    )
    .await;
    let shown = c
        .execute(
            "return [...document.querySelectorAll('#classes li')].map(li => [li.querySelector('.label').textContent, parseFloat(li.querySelector('.prob').textContent)]);",
            vec![],
        )
        .await
        .unwrap();
    let mut labels: Vec<String> = Vec::new();
    let mut total = 0.0;
    for row in shown.as_array().unwrap() {
        labels.push(row[0].as_str().unwrap().to_string());
        total += row[1].as_f64().unwrap();
    }
    labels.sort();
    let mut typed = vec!["猫", "狗", "鸟"];
    typed.sort();
    assert_eq!(labels, typed);
    assert!(
        (total - 100.0).abs() < 0.5,
        "probabilities add up to {total}%"
    );
    c.close().await.unwrap();
}
