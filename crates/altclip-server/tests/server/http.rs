//! Every route over HTTP on the tiny model, checked against the engine.

use altclip::zeroshot::{Templates, ZeroShotClassifier};
use serde_json::{json, Value};

use crate::common::*;

const TOL: f32 = 1e-5;

#[tokio::test]
async fn openai_embeddings_equal_the_engine_for_texts_and_images() {
    let s = server();
    let texts = ["一只猫", "a photo of a dog", "海边的日落"];
    let (status, body) = post(
        &s.url("/v1/embeddings"),
        &json!({"input": texts, "model": "altclip-test"}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["object"], "list");
    assert_eq!(body["model"], "altclip-test");
    let data = body["data"].as_array().unwrap();
    assert_eq!(data.len(), 3);
    for (i, t) in texts.iter().enumerate() {
        assert_eq!(data[i]["object"], "embedding");
        assert_eq!(data[i]["index"], i);
        let d = max_diff(&floats(&data[i]["embedding"]), &engine_text(t));
        assert!(d < TOL, "{t}: max |Δ| {d}");
    }
    let tokens: usize = engine()
        .tokenize(&texts)
        .unwrap()
        .iter()
        .map(Vec::len)
        .sum();
    assert_eq!(body["usage"]["prompt_tokens"], tokens);
    assert_eq!(body["usage"]["total_tokens"], tokens);

    // Images: data: URIs and bare base64, one PNG and one JPEG.
    let bare = b64(&std::fs::read(image("photo.jpg")).unwrap());
    let (status, body) = post(
        &s.url("/v1/embeddings"),
        &json!({"input": [data_uri("photo.png"), bare], "modality": "image"}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    for (i, name) in ["photo.png", "photo.jpg"].iter().enumerate() {
        let d = max_diff(&floats(&body["data"][i]["embedding"]), &engine_image(name));
        assert!(d < TOL, "{name}: max |Δ| {d}");
    }
    assert_eq!(body["usage"]["images"], 2);

    // A single string, base64 output: little-endian f32 of the same vector.
    let (status, body) = post(
        &s.url("/embeddings"),
        &json!({"input": "一只猫", "encoding_format": "base64", "dimensions": 32}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let bytes = base64::Engine::decode(
        &base64::engine::general_purpose::STANDARD,
        body["data"][0]["embedding"].as_str().unwrap(),
    )
    .unwrap();
    let v: Vec<f32> = bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    assert!(max_diff(&v, &engine_text("一只猫")) < TOL);
}

#[tokio::test]
async fn embed_takes_a_mixed_list_in_order() {
    let s = server();
    let (status, body) = post(
        &s.url("/embed"),
        &json!([{"text": "一只猫"}, {"image": data_uri("gray.png")}, {"text": "a dog"}]),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let data = body["data"].as_array().unwrap();
    let modalities: Vec<&str> = data
        .iter()
        .map(|d| d["modality"].as_str().unwrap())
        .collect();
    assert_eq!(modalities, ["text", "image", "text"]);
    assert!(max_diff(&floats(&data[0]["embedding"]), &engine_text("一只猫")) < TOL);
    assert!(max_diff(&floats(&data[1]["embedding"]), &engine_image("gray.png")) < TOL);
    assert!(max_diff(&floats(&data[2]["embedding"]), &engine_text("a dog")) < TOL);
    assert_eq!(body["dim"], 32);
    // The object form.
    let (status, body) = post(&s.url("/embed"), &json!({"input": [{"text": "x"}]})).await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn classify_equals_the_zero_shot_classifier() {
    let s = server();
    let labels = ["猫", "狗", "bird"];
    let (status, body) = post(
        &s.url("/classify"),
        &json!({"image": data_uri("photo.png"), "labels": labels}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let owned: Vec<String> = labels.iter().map(|s| s.to_string()).collect();
    let reference = ZeroShotClassifier::new(engine(), &owned, &Templates::Auto, 8).unwrap();
    let probs = reference.probabilities(&engine_image("photo.png"));
    let results = body["results"].as_array().unwrap();
    assert_eq!(results.len(), 3);
    let mut previous = f64::INFINITY;
    for r in results {
        let i = r["index"].as_u64().unwrap() as usize;
        assert_eq!(r["label"], labels[i]);
        let p = r["prob"].as_f64().unwrap();
        assert!((p as f32 - probs[i]).abs() < 1e-5, "{r} vs {}", probs[i]);
        assert!(p <= previous, "not sorted: {body}");
        previous = p;
    }
    assert_eq!(
        body["image"]["width"],
        image::image_dimensions(image("photo.png")).unwrap().0
    );

    // English templates and top_k; custom templates.
    let (status, body) = post(
        &s.url("/classify"),
        &json!({"image": data_uri("photo.png"), "labels": labels, "language": "en", "top_k": 1}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["results"].as_array().unwrap().len(), 1);
    let templates = vec!["一张{c}的照片".to_string()];
    let (status, body) = post(
        &s.url("/classify"),
        &json!({"image": data_uri("photo.png"), "labels": labels, "templates": templates}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let reference =
        ZeroShotClassifier::new(engine(), &owned, &Templates::List(templates.clone()), 8).unwrap();
    let probs = reference.probabilities(&engine_image("photo.png"));
    for r in body["results"].as_array().unwrap() {
        let i = r["index"].as_u64().unwrap() as usize;
        assert!((r["prob"].as_f64().unwrap() as f32 - probs[i]).abs() < 1e-5);
    }

    // 64 labels × 17 templates is over the prompt limit: refused before any work.
    let many: Vec<String> = (0..64).map(|i| format!("label {i}")).collect();
    let (status, body) = post(
        &s.url("/classify"),
        &json!({"image": data_uri("small.png"), "labels": many, "templates": vec![templates[0].clone(); 17]}),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["type"], "invalid_request_error");
    assert_eq!(body["error"]["param"], "labels");
}

#[tokio::test]
async fn rank_is_a_softmax_over_the_candidates() {
    let s = server();
    let candidates = ["一只猫", "a dog", "海边的日落"];
    let (status, body) = post(
        &s.url("/rank"),
        &json!({
            "query": {"image": data_uri("photo.png")},
            "candidates": candidates.iter().map(|t| json!({"text": t})).collect::<Vec<_>>(),
        }),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let texts: Vec<Vec<f32>> = candidates.iter().map(|t| engine_text(t)).collect();
    let reference = altclip::softmax_similarity(
        &[engine_image("photo.png")],
        &texts,
        engine().logit_scale(),
        engine().device(),
    )
    .unwrap()
    .remove(0);
    let matches = body["matches"].as_array().unwrap();
    let total: f64 = matches
        .iter()
        .map(|m| m["clip_score"].as_f64().unwrap())
        .sum();
    assert!((total - 1.0).abs() < 1e-5, "{body}");
    for w in matches.windows(2) {
        assert!(w[0]["clip_score"].as_f64() >= w[1]["clip_score"].as_f64());
    }
    for m in matches {
        let i = m["index"].as_u64().unwrap() as usize;
        assert_eq!(m["text"], candidates[i]);
        assert!((m["clip_score"].as_f64().unwrap() as f32 - reference[i]).abs() < 1e-5);
    }
    // Text query against image candidates.
    let (status, body) = post(
        &s.url("/rank"),
        &json!({"query": {"text": "一只猫"}, "candidates": [{"image": data_uri("gray.png")}, {"image": data_uri("photo.png")}]}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["matches"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn search_by_text_image_and_mix_with_thumbnails() {
    let s = server();
    let (photos, _) = library();
    // An indexed image finds itself first (f16 storage: score ≈ 1).
    let (status, body) = post(
        &s.url("/search"),
        &json!({"image": data_uri("wide.png"), "top_k": 3}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let results = body["results"].as_array().unwrap();
    assert_eq!(results.len(), 3);
    let expected = std::fs::canonicalize(photos.join("wide.png")).unwrap();
    assert_eq!(results[0]["path"], expected.display().to_string());
    assert!(results[0]["score"].as_f64().unwrap() > 0.999, "{body}");

    // Chinese text: every indexed image, best first, each with a thumbnail.
    let (status, body) = post(
        &s.url("/search"),
        &json!({"query": "海边的日落", "top_k": 100}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let results = body["results"].as_array().unwrap();
    assert_eq!(results.len(), PHOTOS.len());
    for w in results.windows(2) {
        assert!(w[0]["score"].as_f64() >= w[1]["score"].as_f64(), "{body}");
    }
    // Its first result is the indexed image closest to the engine's text embedding.
    let q = engine_text("海边的日落");
    let best = PHOTOS
        .iter()
        .max_by(|a, b| {
            let dot = |n: &&str| {
                engine_image(n)
                    .iter()
                    .zip(&q)
                    .map(|(x, y)| x * y)
                    .sum::<f32>()
            };
            dot(a).partial_cmp(&dot(b)).unwrap()
        })
        .unwrap();
    assert!(
        results[0]["path"].as_str().unwrap().ends_with(best),
        "{body}"
    );

    let thumb = client()
        .get(s.url(results[0]["thumbnail"].as_str().unwrap()))
        .send()
        .await
        .unwrap();
    assert_eq!(thumb.status(), 200);
    assert_eq!(thumb.headers()["content-type"], "image/jpeg");
    let jpeg = image::load_from_memory(&thumb.bytes().await.unwrap()).unwrap();
    assert!(jpeg.width().max(jpeg.height()) <= 256);

    // A weighted mix of text and an image, in both syntaxes.
    let (status, mix) = post(
        &s.url("/search"),
        &json!({"query": "2:一只猫 - 雪", "terms": [{"image": data_uri("tall.png"), "weight": 0.5}]}),
    )
    .await;
    assert_eq!(status, 200, "{mix}");
    let parts = [
        (2.0, engine_text("一只猫")),
        (-1.0, engine_text("雪")),
        (0.5, engine_image("tall.png")),
    ];
    let mut sum = vec![0f32; 32];
    for (w, v) in &parts {
        for (s, x) in sum.iter_mut().zip(v) {
            *s += w * x;
        }
    }
    let norm = sum.iter().map(|v| v * v).sum::<f32>().sqrt();
    let top = mix["results"][0]["path"].as_str().unwrap();
    let name = top.rsplit('/').next().unwrap();
    let expected: f32 = engine_image(name)
        .iter()
        .zip(&sum)
        .map(|(a, b)| a * b / norm)
        .sum();
    let got = mix["results"][0]["score"].as_f64().unwrap() as f32;
    assert!((got - expected).abs() < 2e-3, "{got} vs {expected}");

    let res = client().get(s.url("/thumb/0123abcd")).send().await.unwrap();
    assert_eq!(res.status(), 404);
    let res = client()
        .get(s.url("/thumb/..%2F..%2Fetc"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
}

#[tokio::test]
async fn operational_routes() {
    let s = server();
    let (status, health) = get_json(&s.url("/health")).await;
    assert_eq!(status, 200);
    assert_eq!(health["status"], "ok");
    let (status, info) = get_json(&s.url("/info")).await;
    assert_eq!(status, 200);
    assert_eq!(info["dim"], 32);
    assert_eq!(info["dtype"], "f32");
    assert_eq!(info["device"], "cpu");
    assert_eq!(info["limits"]["allow_urls"], false);
    assert_eq!(info["index"]["files"], PHOTOS.len());
    assert_eq!(info["batching"]["max_wait_ms"], 5);
    // No immich model name has the tiny model's 32 dimensions.
    assert_eq!(info["immich"]["clip_model_name"], Value::Null);

    let page = client().get(s.url("/")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    assert!(page.text().await.unwrap().contains("id=\"query\""));

    let ping = client().get(s.url("/ping")).send().await.unwrap();
    assert_eq!(ping.text().await.unwrap(), "pong");

    // The OpenAPI document is valid JSON and describes every route.
    let (status, spec) = get_json(&s.url("/openapi.json")).await;
    assert_eq!(status, 200);
    for path in [
        "/v1/embeddings",
        "/embeddings",
        "/embed",
        "/classify",
        "/rank",
        "/search",
        "/thumb/{id}",
        "/predict",
        "/ping",
        "/health",
        "/info",
        "/metrics",
        "/openapi.json",
        "/",
    ] {
        assert!(
            spec["paths"].get(path).is_some(),
            "{path} missing from openapi.json"
        );
    }

    let _ = post(&s.url("/v1/embeddings"), &json!({"input": "metrics"})).await;
    let text = client()
        .get(s.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for needle in [
        "altclip_requests_total{route=\"/v1/embeddings\",status=\"200\"}",
        "altclip_request_duration_seconds_bucket{route=\"/v1/embeddings\",le=\"+Inf\"}",
        "altclip_queue_depth{tower=\"text\"}",
        "altclip_batch_size_count{tower=\"text\"}",
        "altclip_tokens_per_second",
        "altclip_images_per_second",
    ] {
        assert!(text.contains(needle), "{needle} not in\n{text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_lets_requests_in_flight_finish() {
    // A lone input waits up to a second for company: time to stop the server meanwhile.
    let s = TestServer::start(|a| a.max_batch_wait_ms = 1000);
    let url = s.url("/v1/embeddings");
    let in_flight = tokio::spawn(async move { post(&url, &json!({"input": "一只猫"})).await });
    // Stop once the input is queued.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let text = client()
            .get(s.url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        if text.contains("altclip_queue_depth{tower=\"text\"} 1") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the request never reached the queue"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let addr = s.addr;
    // Dropping the server triggers its graceful shutdown and waits for it.
    tokio::task::spawn_blocking(move || drop(s)).await.unwrap();
    let (status, body) = in_flight.await.unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(
        max_diff(
            &floats(&body["data"][0]["embedding"]),
            &engine_text("一只猫")
        ) < TOL
    );
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "still listening after shutdown"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_paths_and_urls_are_read_only_when_allowed() {
    let open = TestServer::start(|a| {
        a.allow_file_paths = true;
        a.allow_urls = true;
    });
    // file:// reads the server's disk.
    let path = std::fs::canonicalize(image("photo.png")).unwrap();
    let (status, body) = post(
        &open.url("/v1/embeddings"),
        &json!({"input": format!("file://{}", path.display()), "modality": "image"}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(
        max_diff(
            &floats(&body["data"][0]["embedding"]),
            &engine_image("photo.png")
        ) < TOL
    );
    // http:// is fetched: here a thumbnail from the other test server, on loopback.
    let (_, found) = post(&server().url("/search"), &json!({"query": "x", "top_k": 1})).await;
    let thumb_url = server().url(found["results"][0]["thumbnail"].as_str().unwrap());
    let jpeg = client()
        .get(&thumb_url)
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let (status, body) = post(
        &open.url("/v1/embeddings"),
        &json!({"input": [thumb_url], "modality": "image"}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let img = altclip::preprocess::decode_rgb(&jpeg, "thumb", u64::MAX).unwrap();
    let want = altclip::normalize_rows(engine().image_features(&[img]).unwrap()).remove(0);
    assert!(max_diff(&floats(&body["data"][0]["embedding"]), &want) < TOL);
    // A missing file and an unreachable URL are the client's problem, named.
    for (input, field) in [
        ("file:///no/such/file.png".to_string(), "input[0]"),
        (server().url("/thumb/0000"), "input[0]"),
    ] {
        let (status, body) = post(
            &open.url("/v1/embeddings"),
            &json!({"input": [input], "modality": "image"}),
        )
        .await;
        assert_eq!(status, 400, "{body}");
        assert_eq!(body["error"]["param"], field);
    }
}

#[tokio::test]
async fn api_key_guards_everything_but_the_page_and_health() {
    let s = TestServer::start(|a| a.api_key = Some("s3cret/+=".into()));
    let c = client();
    let (status, body) = get_json(&s.url("/info")).await;
    assert_eq!(status, 401);
    assert_eq!(body["error"]["type"], "authentication_error");
    let res = c
        .get(s.url("/info"))
        .bearer_auth("s3cret/+=")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let res = c
        .get(s.url("/info"))
        .bearer_auth("wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    let res = c
        .get(s.url("/info?api_key=s3cret%2F%2B%3D"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let res = c
        .post(s.url("/v1/embeddings"))
        .json(&json!({"input": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    for open in ["/", "/health", "/ping"] {
        assert_eq!(
            c.get(s.url(open)).send().await.unwrap().status(),
            200,
            "{open}"
        );
    }
}

/// Sends a raw body; returns (status, JSON body).
async fn raw(url: &str, content_type: &str, body: Vec<u8>) -> (u16, Value) {
    let res = client()
        .post(url)
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .unwrap();
    let status = res.status().as_u16();
    let text = res.text().await.unwrap();
    let json =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{status} not JSON ({e}): {text}"));
    (status, json)
}

#[tokio::test]
async fn malformed_requests_get_4xx_json_naming_the_field_and_the_server_keeps_serving() {
    let s = TestServer::start(|a| {
        a.payload_limit = 200_000;
        a.max_client_batch_size = 4;
        a.max_text_chars = 50;
        a.max_pixels = 100_000;
    });
    let text_b64 = b64(b"just some text, not an image");
    let corrupt = b64(&std::fs::read(image("corrupt.png")).unwrap());
    // 400x300 = 120k pixels, over the limit (the fixtures are at most 76.8k).
    let mut png = Vec::new();
    image::DynamicImage::ImageRgb8(image::RgbImage::new(400, 300))
        .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .unwrap();
    let big = format!("data:image/png;base64,{}", b64(&png));
    let cases: Vec<(&str, Value, u16, &str)> = vec![
        ("/v1/embeddings", json!({"inputs": ["typo"]}), 400, "input"),
        (
            "/v1/embeddings",
            json!({"input": ["a", 3]}),
            400,
            "input[1]",
        ),
        (
            "/v1/embeddings",
            json!({"input": "a", "modality": "audio"}),
            400,
            "modality",
        ),
        (
            "/v1/embeddings",
            json!({"input": "a", "encoding_format": "int8"}),
            400,
            "encoding_format",
        ),
        (
            "/v1/embeddings",
            json!({"input": "a", "dimensions": 16}),
            400,
            "dimensions",
        ),
        (
            "/v1/embeddings",
            json!({"input": [text_b64], "modality": "image"}),
            400,
            "input[0]",
        ),
        (
            "/v1/embeddings",
            json!({"input": [data_uri("small.png"), corrupt], "modality": "image"}),
            400,
            "input[1]",
        ),
        (
            "/v1/embeddings",
            json!({"input": "%%% not base64", "modality": "image"}),
            400,
            "input[0]",
        ),
        (
            "/v1/embeddings",
            json!({"input": "data:text/plain;base64,aGk=", "modality": "image"}),
            400,
            "input[0]",
        ),
        (
            "/v1/embeddings",
            json!({"input": "https://example.com/cat.jpg", "modality": "image"}),
            400,
            "input[0]",
        ),
        (
            "/v1/embeddings",
            json!({"input": "file:///etc/passwd", "modality": "image"}),
            400,
            "input[0]",
        ),
        (
            "/v1/embeddings",
            json!({"input": [big], "modality": "image"}),
            413,
            "input[0]",
        ),
        // Input limits answer 400 invalid_request_error, as OpenAI does.
        (
            "/v1/embeddings",
            json!({"input": ["a", "b", "c", "d", "e"]}),
            400,
            "input",
        ),
        ("/v1/embeddings", json!({"input": []}), 400, "input"),
        ("/v1/embeddings", json!({"input": ""}), 400, "input[0]"),
        (
            "/v1/embeddings",
            json!({"input": "x".repeat(51)}),
            400,
            "input[0]",
        ),
        ("/embed", json!([{"video": "x"}]), 400, "input[0]"),
        (
            "/embed",
            json!([{"text": "a", "image": "b"}]),
            400,
            "input[0]",
        ),
        ("/embed", json!({"nope": 1}), 400, "input"),
        (
            "/classify",
            json!({"image": data_uri("small.png"), "labels": []}),
            400,
            "labels",
        ),
        (
            "/classify",
            json!({"image": data_uri("small.png"), "labels": ["a", " "]}),
            400,
            "labels[1]",
        ),
        (
            "/classify",
            json!({"image": data_uri("small.png"), "labels": ["a"], "templates": ["no slot"]}),
            400,
            "templates[0]",
        ),
        (
            "/classify",
            json!({"image": data_uri("small.png"), "labels": ["a"], "language": "fr"}),
            400,
            "language",
        ),
        (
            "/classify",
            json!({"image": text_b64, "labels": ["a"]}),
            400,
            "image",
        ),
        ("/classify", json!({"labels": ["a"]}), 400, "image"),
        (
            "/rank",
            json!({"query": "cat", "candidates": [{"text": "a"}]}),
            400,
            "query",
        ),
        (
            "/rank",
            json!({"query": {"text": "cat"}, "candidates": [{"text": 1}]}),
            400,
            "candidates[0].text",
        ),
        ("/search", json!({"query": "cat"}), 503, ""),
    ];
    for (path, body, status, param) in &cases {
        let (got, err) = post(&s.url(path), body).await;
        assert_eq!(got, *status, "{path} {body}: {err}");
        let message = err["error"]["message"].as_str().unwrap();
        assert_eq!(err["detail"], message);
        if !param.is_empty() {
            assert!(
                err["error"]["param"]
                    .as_str()
                    .unwrap_or_default()
                    .contains(param)
                    && message.contains(param),
                "{path} {body}: expected the field {param} to be named: {err}"
            );
        }
    }
    // Bodies that are not JSON at all, or too large.
    for (ct, body, status) in [
        ("application/json", b"{\"input\": [".to_vec(), 400),
        ("application/json", b"".to_vec(), 400),
        (
            "application/json",
            b"{\"input\": \"a\"} trailing".to_vec(),
            400,
        ),
        ("text/plain", vec![0xff, 0xfe, 0x00], 400),
        ("application/json", vec![b' '; 300_000], 413),
    ] {
        let (got, err) = raw(&s.url("/v1/embeddings"), ct, body).await;
        assert_eq!(got, status, "{err}");
        assert!(err["error"]["message"].is_string());
    }
    let (got, _) = raw(&s.url("/predict"), "application/json", b"{}".to_vec()).await;
    assert_eq!(got, 400);
    let (got, err) = get_json(&s.url("/no/such/route")).await;
    assert_eq!(got, 404, "{err}");

    // Still serving, correctly.
    let (status, body) = post(&s.url("/v1/embeddings"), &json!({"input": "一只猫"})).await;
    assert_eq!(status, 200, "{body}");
    assert!(
        max_diff(
            &floats(&body["data"][0]["embedding"]),
            &engine_text("一只猫")
        ) < TOL
    );
    let (status, _) = get_json(&s.url("/health")).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn search_filters_choose_the_candidates_and_results_carry_metadata() {
    let s = server();
    let (photos, _) = library();
    let wide = std::fs::canonicalize(photos.join("wide.png")).unwrap();
    let (status, body) = post(
        &s.url("/search"),
        &json!({"query": "海边的日落", "top_k": 5, "path": "*/wide.png"}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let results = body["results"].as_array().unwrap();
    assert_eq!(results.len(), 1, "{body}");
    assert_eq!(results[0]["path"], wide.display().to_string());
    let size = image::image_dimensions(&wide).unwrap();
    assert_eq!(
        (results[0]["width"].as_u64(), results[0]["height"].as_u64()),
        (Some(size.0 as u64), Some(size.1 as u64))
    );
    assert_eq!(results[0]["taken_from"], "file", "{body}");
    assert_eq!(results[0]["kind"], "photo");

    // Every result of an unfiltered search carries its metadata too.
    let (_, all) = post(
        &s.url("/search"),
        &json!({"query": "海边的日落", "top_k": 100}),
    )
    .await;
    assert!(
        all["results"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["taken"].is_string()),
        "{all}"
    );
    // A cutoff above every score leaves nothing; videos are not indexed.
    for filter in [
        json!({"min_score": 1.5}),
        json!({"kind": "video"}),
        json!({"before": "1971"}),
    ] {
        let mut req = json!({"query": "海边的日落"});
        req.as_object_mut()
            .unwrap()
            .extend(filter.as_object().unwrap().clone());
        let (status, body) = post(&s.url("/search"), &req).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(
            body["results"].as_array().unwrap().len(),
            0,
            "{req}: {body}"
        );
    }
    for (field, value) in [
        ("after", json!("July")),
        ("near", json!([95.0, 0.0, 1.0])),
        ("sort", json!("size")),
    ] {
        let mut req = json!({"query": "海边的日落"});
        req[field] = value;
        let (status, body) = post(&s.url("/search"), &req).await;
        assert_eq!(status, 400, "{body}");
        assert!(body.to_string().contains(field), "{field}: {body}");
    }
}

/// A running server sees what an indexer (`altclip index --watch`) commits
/// beside it: renamed, added and deleted files, without a restart.
#[tokio::test]
async fn the_served_index_follows_an_indexer_without_a_restart() {
    let dir = std::env::temp_dir().join(format!("altclip-server-live-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let photos = dir.join("photos");
    std::fs::create_dir_all(&photos).unwrap();
    for name in ["photo.png", "wide.png"] {
        std::fs::copy(image(name), photos.join(name)).unwrap();
    }
    let db = dir.join("index.db");
    index_folder(&photos, &db);
    let s = TestServer::start({
        let db = db.clone();
        move |a| a.db = Some(db)
    });
    let listed = || async {
        let (status, body) =
            post(&s.url("/search"), &json!({"query": "一只猫", "top_k": 10})).await;
        assert_eq!(status, 200, "{body}");
        let mut paths: Vec<String> = body["results"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|r| {
                r["paths"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|p| p.as_str().unwrap().rsplit('/').next().unwrap().to_string())
            })
            .collect();
        paths.sort();
        paths
    };
    assert_eq!(listed().await, ["photo.png", "wide.png"]);
    std::fs::rename(photos.join("wide.png"), photos.join("renamed.png")).unwrap();
    std::fs::copy(image("tall.png"), photos.join("tall.png")).unwrap();
    std::fs::remove_file(photos.join("photo.png")).unwrap();
    index_folder(&photos, &db);
    assert_eq!(listed().await, ["renamed.png", "tall.png"]);
    drop(s);
    std::fs::remove_dir_all(dir).unwrap();
}

/// An indexed video is served for the web page's player, with Range
/// requests (seeking), and found with the time of its best frame.
#[tokio::test]
async fn videos_are_found_at_a_time_and_served_with_ranges() {
    let ffmpeg = std::process::Command::new("ffmpeg")
        .arg("-version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ffmpeg {
        assert!(
            std::env::var("ALTCLIP_REQUIRE_TOOLS").as_deref() != Ok("1"),
            "ffmpeg is not on PATH, and ALTCLIP_REQUIRE_TOOLS=1 makes the video test mandatory"
        );
        eprintln!("skipped: the video route test: ffmpeg is not on PATH (Debian: apt-get install -y ffmpeg)");
        return;
    }
    let dir = std::env::temp_dir().join(format!("altclip-server-video-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let lib = dir.join("lib");
    std::fs::create_dir_all(&lib).unwrap();
    let clip = lib.join("clip.mp4");
    let made = std::process::Command::new("ffmpeg")
        .args([
            "-v",
            "error",
            "-y",
            "-f",
            "lavfi",
            "-i",
            "color=c=red:s=64x48:d=4:r=10",
            "-pix_fmt",
            "yuv420p",
        ])
        .arg(&clip)
        .status()
        .unwrap();
    assert!(made.success());
    std::fs::copy(image("photo.png"), lib.join("photo.png")).unwrap();
    let db = dir.join("index.db");
    let report = index_folder(&lib, &db);
    assert_eq!((report.embedded, report.frames), (2, 2), "{report:?}");
    let s = TestServer::start({
        let db = db.clone();
        move |a| a.db = Some(db)
    });
    let (status, body) = post(
        &s.url("/search"),
        &json!({"query": "红色", "top_k": 5, "kind": "video"}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let hit = &body["results"][0];
    assert_eq!(
        hit["path"],
        std::fs::canonicalize(&clip).unwrap().display().to_string(),
        "{body}"
    );
    assert!(
        hit["at"].as_f64().is_some_and(|t| t == 0.0 || t == 2.0),
        "{body}"
    );
    assert_eq!(hit["duration"].as_f64(), Some(4.0));
    let id = hit["id"].as_str().unwrap();
    let bytes = std::fs::read(&clip).unwrap();
    let res = client()
        .get(s.url(&format!("/video/{id}")))
        .header("Range", "bytes=10-19")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 206);
    assert_eq!(res.bytes().await.unwrap().as_ref(), &bytes[10..20]);
    let thumb = client()
        .get(s.url(&format!("/thumb/{id}")))
        .send()
        .await
        .unwrap();
    assert_eq!(
        thumb.status(),
        200,
        "a video's thumbnail is its first frame"
    );
    // A photo's id is not a video.
    let photo = body["results"].as_array().unwrap().len();
    assert_eq!(photo, 1, "kind=video leaves the photo out");
    let res = client().get(s.url("/video/0123abcd")).send().await.unwrap();
    assert_eq!(res.status(), 404);
    drop(s);
    std::fs::remove_dir_all(dir).unwrap();
}
