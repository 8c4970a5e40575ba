//! immich's /predict and /ping, replaying recorded requests byte for byte
//! (tests/fixtures/immich, made by make_requests.py the way immich's server
//! and Node's fetch build them).

use std::path::Path;

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::common::*;

fn recorded(name: &str) -> Vec<u8> {
    std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/immich")
            .join(name),
    )
    .unwrap()
}

/// Sends raw HTTP/1.1 bytes; returns (status, content-type, body).
async fn replay(server: &TestServer, request: &[u8]) -> (u16, String, Vec<u8>) {
    let mut stream = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    stream.write_all(request).await.unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let (head_end, content_length) = loop {
        let n = stream.read(&mut chunk).await.unwrap();
        assert!(n > 0, "connection closed before the response headers");
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..i]).to_string();
            let len = head
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse::<usize>().unwrap())
                })
                .expect("a content-length");
            break (i + 4, len);
        }
    };
    while buf.len() < head_end + content_length {
        let n = stream.read(&mut chunk).await.unwrap();
        assert!(n > 0, "connection closed mid-body");
        buf.extend_from_slice(&chunk[..n]);
    }
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    let content_type = head
        .lines()
        .find_map(|l| {
            l.split_once(':')
                .filter(|(k, _)| k.eq_ignore_ascii_case("content-type"))
        })
        .map(|(_, v)| v.trim().to_string())
        .unwrap_or_default();
    (
        status,
        content_type,
        buf[head_end..head_end + content_length].to_vec(),
    )
}

fn keys(v: &Value) -> Vec<&str> {
    let mut k: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    k.sort();
    k
}

/// immich reads `clip` as a string holding a JSON array.
fn clip_embedding(v: &Value) -> Vec<f32> {
    let s = v["clip"]
        .as_str()
        .unwrap_or_else(|| panic!("clip is not a string: {v}"));
    floats(&serde_json::from_str::<Value>(s).unwrap())
}

#[tokio::test]
async fn recorded_visual_request_gets_immichs_response_shape() {
    let s = server();
    let (status, content_type, body) = replay(s, &recorded("predict-visual.http")).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!(content_type, "application/json");
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(keys(&v), ["clip", "imageHeight", "imageWidth"]);
    assert_eq!(
        (v["imageWidth"].as_u64(), v["imageHeight"].as_u64()),
        (Some(320), Some(240))
    );
    let embedding = clip_embedding(&v);
    assert_eq!(embedding.len(), 32);
    assert!(max_diff(&embedding, &engine_image("photo.jpg")) < 1e-5);
}

#[tokio::test]
async fn recorded_textual_request_gets_immichs_response_shape() {
    let s = server();
    let (status, _, body) = replay(s, &recorded("predict-textual.http")).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(keys(&v), ["clip"]);
    assert!(max_diff(&clip_embedding(&v), &engine_text("海边的日落")) < 1e-5);
}

#[tokio::test]
async fn predict_refuses_what_immich_would_refuse() {
    let s = server();
    let form = |entries: &str| reqwest::multipart::Form::new().text("entries", entries.to_string());
    let visual = r#"{"clip":{"visual":{"modelName":"ViT-L-14__openai"}}}"#;
    let cases = [
        // Neither image nor text: 400, as immich's service answers.
        (form(visual), 400, "image"),
        // No entries, or entries that are not immich's shape: 422.
        (reqwest::multipart::Form::new().text("text", "猫"), 422, "entries"),
        (form("{not json").text("text", "猫"), 422, "entries"),
        (form(r#"{"clip":{"visual":{}}}"#).text("text", "猫"), 422, "entries.clip.visual.modelName"),
        (
            form(r#"{"facial-recognition":{"detection":{"modelName":"buffalo_l","options":{"minScore":0.7}},"recognition":{"modelName":"buffalo_l"}}}"#)
                .part("image", reqwest::multipart::Part::bytes(std::fs::read(image("small.png")).unwrap())),
            422,
            "entries.facial-recognition",
        ),
        // A textual request whose text is not UTF-8.
        (
            form(r#"{"clip":{"textual":{"modelName":"ViT-L-14__openai"}}}"#)
                .part("text", reqwest::multipart::Part::bytes(vec![0x61, 0xff, 0xfe, 0x62])),
            400,
            "text",
        ),
        // A visual request with text only, and a non-image file.
        (form(visual).text("text", "猫"), 400, "image"),
        (
            form(visual).part("image", reqwest::multipart::Part::bytes(b"not an image".to_vec()).file_name("blob")),
            400,
            "image",
        ),
    ];
    for (form, status, param) in cases {
        let res = client()
            .post(s.url("/predict"))
            .multipart(form)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status().as_u16(), status);
        let err: Value = res.json().await.unwrap();
        assert_eq!(err["error"]["param"], param, "{err}");
        assert!(err["detail"].as_str().unwrap().starts_with(param), "{err}");
    }
    // immich's health check.
    let res = client().get(s.url("/ping")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.text().await.unwrap(), "pong");
    // And the service still answers.
    let res = client()
        .post(s.url("/predict"))
        .multipart(
            form(r#"{"clip":{"textual":{"modelName":"ViT-L-14__openai"}}}"#).text("text", "a dog"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let v: Value = res.json().await.unwrap();
    assert!(
        max_diff(&clip_embedding(&v), &engine_text("a dog")) < 1e-5,
        "{}",
        json!(v)
    );
}
