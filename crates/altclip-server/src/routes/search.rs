//! `POST /search` over the index of `altclip index` (text, image, or a
//! weighted mix) and `GET /thumb/{id}` for the results' thumbnails.

use axum::extract::{Path, State};
use axum::http::header;
use axum::response::IntoResponse;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use altclip_index::filter::{self, Filter, Search, Sort};
use altclip_index::query::{self, Term};

use super::{JsonBody, Shared};
use crate::error::ApiError;
use crate::inputs::{kind, Item};
use crate::state::no_index;

/// Most results per search.
pub const MAX_TOP_K: usize = 1000;

/// The `/search` request. Every part given is summed into one query.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SearchRequest {
    /// Text in the syntax of `altclip search`: `海边的日落`, or a weighted mix
    /// such as `2:一只猫 + 草地 - 雪`.
    #[serde(default)]
    pub query: Option<String>,
    /// An image to search by (data: URI or base64).
    #[serde(default)]
    pub image: Option<String>,
    /// Weighted items: `[{"text": "一只猫", "weight": 2}, {"image": "...", "weight": -1}]`.
    #[serde(default)]
    pub terms: Vec<Value>,
    /// Results to return (default 20).
    #[serde(default)]
    pub top_k: Option<usize>,
    /// Filters, as `altclip search` has them: taken at or after / before an
    /// ISO date or time, camera text, a glob over the path, `[lat, lon, km]`,
    /// `photo` or `video`, a score cutoff, and `score` or `date` order.
    #[serde(default)]
    pub after: Option<String>,
    #[serde(default)]
    pub before: Option<String>,
    #[serde(default)]
    pub camera: Option<String>,
    #[serde(default)]
    pub path: Option<String>,
    #[serde(default)]
    pub near: Option<[f64; 3]>,
    #[serde(default)]
    pub kind: Option<String>,
    #[serde(default)]
    pub min_score: Option<f32>,
    #[serde(default)]
    pub sort: Option<String>,
}

/// The request's filters and order, checked.
fn filters(req: &SearchRequest, top: usize) -> Result<Search, ApiError> {
    let bad = |field: &str, e: altclip_index::Error| {
        let m = e.to_string();
        ApiError::bad(field, m)
    };
    let date = |field: &str, v: &Option<String>| {
        v.as_deref()
            .map(|d| filter::parse_date(d).map_err(|e| bad(field, e)))
            .transpose()
    };
    let near = req
        .near
        .map(|[lat, lon, km]| {
            filter::parse_near(&format!("{lat},{lon},{km}")).map_err(|e| bad("near", e))
        })
        .transpose()?;
    if let Some(k) = req
        .kind
        .as_deref()
        .filter(|k| *k != "photo" && *k != "video")
    {
        return Err(ApiError::bad(
            "kind",
            format!("{k:?}: expected \"photo\" or \"video\""),
        ));
    }
    if req.min_score.is_some_and(|s| !s.is_finite()) {
        return Err(ApiError::bad("min_score", "expected a number"));
    }
    let sort = match req.sort.as_deref() {
        None | Some("score") => Sort::Score,
        Some("date") => Sort::Date,
        Some(other) => {
            return Err(ApiError::bad(
                "sort",
                format!("{other:?}: expected \"score\" or \"date\""),
            ))
        }
    };
    Ok(Search {
        top,
        filter: Filter {
            after: date("after", &req.after)?,
            before: date("before", &req.before)?,
            camera: req.camera.clone(),
            path: req.path.clone(),
            near,
            kind: req.kind.clone(),
        },
        min_score: req.min_score,
        sort,
    })
}

/// Splits a query string into the words `query::parse` takes: `+` and `-`
/// standing alone are operators, the words between them one term each.
pub fn words(query: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut term: Vec<&str> = Vec::new();
    let flush = |term: &mut Vec<&str>, out: &mut Vec<String>| {
        if !term.is_empty() {
            let t = term.join(" ");
            let t = t
                .strip_prefix('"')
                .and_then(|t| t.strip_suffix('"'))
                .map_or(t.clone(), str::to_string);
            out.push(t);
            term.clear();
        }
    };
    for word in query.split_whitespace() {
        if word == "+" || word == "-" {
            flush(&mut term, &mut out);
            out.push(word.to_string());
        } else {
            term.push(word);
        }
    }
    flush(&mut term, &mut out);
    out
}

/// The request's terms as (weight, item, the request field it came from).
fn parts(
    req: &SearchRequest,
    allow_file_paths: bool,
) -> Result<Vec<(f32, Item, String)>, ApiError> {
    let mut parts = Vec::new();
    if let Some(q) = req.query.as_deref().filter(|q| !q.trim().is_empty()) {
        let parsed = query::parse(&words(q)).map_err(|e| {
            let m = e.to_string();
            ApiError::bad("query", m.strip_prefix("query: ").unwrap_or(&m).to_string())
        })?;
        for p in parsed {
            let item = match p.term {
                Term::Text(t) => Item::Text(t),
                Term::Image(path) if allow_file_paths => {
                    Item::Image(format!("file://{}", path.display()))
                }
                // Without --allow-file-paths a term is text even when a
                // file of that name exists on the server.
                Term::Image(path) => Item::Text(path.display().to_string()),
            };
            parts.push((p.weight, item, "query".to_string()));
        }
    }
    if let Some(image) = &req.image {
        parts.push((1.0, Item::Image(image.clone()), "image".to_string()));
    }
    for (i, t) in req.terms.iter().enumerate() {
        let field = format!("terms[{i}]");
        let weight = match t.get("weight") {
            None => 1.0,
            Some(Value::Number(n)) => n.as_f64().unwrap_or(1.0) as f32,
            Some(other) => {
                return Err(ApiError::bad(
                    format!("{field}.weight"),
                    format!("expected a number, got {}", kind(other)),
                ))
            }
        };
        let mut item = t.clone();
        if let Some(obj) = item.as_object_mut() {
            obj.remove("weight");
        }
        parts.push((weight, Item::parse(&item, &field)?, field));
    }
    if parts.is_empty() {
        return Err(ApiError::bad(
            "query",
            "nothing to search for: give `query`, `image` or `terms`",
        ));
    }
    Ok(parts)
}

/// `POST /search`.
pub async fn search(
    State(state): State<Shared>,
    JsonBody(req): JsonBody<SearchRequest>,
) -> Result<Json<Value>, ApiError> {
    let library = state.library.as_ref().ok_or_else(no_index)?;
    let k = req.top_k.unwrap_or(20);
    if k == 0 || k > MAX_TOP_K {
        return Err(ApiError::bad("top_k", format!("give 1 to {MAX_TOP_K}")));
    }
    let search = filters(&req, k)?;
    let parts = parts(&req, state.limits.allow_file_paths)?;
    let mut weights = Vec::new();
    let mut items = Vec::new();
    let mut fields = Vec::new();
    for (w, item, field) in parts {
        weights.push(w);
        items.push(item);
        fields.push(field);
    }
    // Inputs are embedded as one list `part[i]`; errors name the request field.
    let embedded = state.embed(items, "part").await.map_err(|e| {
        e.map_param(|p| {
            fields
                .iter()
                .enumerate()
                .find_map(|(i, f)| {
                    let name = format!("part[{i}]");
                    p.strip_prefix(&name).map(|rest| format!("{f}{rest}"))
                })
                .unwrap_or_else(|| {
                    if p == "part" {
                        "terms".into()
                    } else {
                        p.to_string()
                    }
                })
        })
    })?;
    let terms = weights
        .iter()
        .zip(&embedded.vectors)
        .map(|(w, v)| (*w, v.as_slice()));
    let sum = altclip::embedding::weighted_sum(terms, state.clip.embedding_dim())
        .ok_or_else(|| ApiError::bad("query", "the terms cancel out"))?;
    let hits = library.search(sum, search).await?;
    let results: Vec<Value> = hits
        .into_iter()
        .map(|h| {
            let mut r = json!({
                "id": h.id,
                "score": h.score,
                "path": h.path,
                "paths": h.paths,
                "thumbnail": format!("/thumb/{}", h.id),
            });
            if let (Some(at), Some(obj)) = (h.at, r.as_object_mut()) {
                obj.insert("at".into(), json!(at));
            }
            if let (Some(m), Some(obj)) = (&h.media, r.as_object_mut()) {
                obj.insert("camera".into(), json!(m.camera()));
                if let Ok(Value::Object(fields)) = serde_json::to_value(m) {
                    obj.extend(fields);
                }
            }
            r
        })
        .collect();
    Ok(Json(json!({"model": state.model_name, "results": results})))
}

/// `GET /video/{id}`: an indexed video's file, with Range requests, for the
/// web page's player (which starts at a search hit's time).
pub async fn video(
    State(state): State<Shared>,
    Path(id): Path<String>,
    request: axum::extract::Request,
) -> Result<axum::response::Response, ApiError> {
    use tower::ServiceExt;
    if id.is_empty() || id.len() > 128 || !id.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(ApiError::bad("id", "not a content id from /search"));
    }
    let library = state.library.as_ref().ok_or_else(no_index)?;
    let path = library
        .path_of(id.clone())
        .await?
        .filter(|p| altclip_index::video::is_video_name(p))
        .ok_or_else(|| ApiError::NotFound(format!("no indexed video has id {id}")))?;
    let served = tower_http::services::ServeFile::new(path)
        .oneshot(request)
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok(served.map(axum::body::Body::new))
}

/// `GET /thumb/{id}`: a JPEG of at most 256 px per side.
pub async fn thumb(
    State(state): State<Shared>,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    if id.is_empty() || id.len() > 128 || !id.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(ApiError::bad("id", "not a content id from /search"));
    }
    let jpeg = state.thumbnail(id).await?;
    Ok((
        [
            (header::CONTENT_TYPE, "image/jpeg"),
            (header::CACHE_CONTROL, "private, max-age=3600"),
        ],
        jpeg.as_ref().clone(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_strings_split_into_terms_and_operators() {
        assert_eq!(words("海边的日落"), vec!["海边的日落"]);
        assert_eq!(
            words("2:一只猫 + a green lawn - \"雪\""),
            vec!["2:一只猫", "+", "a green lawn", "-", "雪"]
        );
        assert_eq!(words("  "), Vec::<String>::new());
    }

    #[test]
    fn parts_mix_query_image_and_weighted_terms() {
        let req: SearchRequest = serde_json::from_value(json!({
            "query": "2:猫 - 雪", "image": "AAAA", "terms": [{"text": "dog", "weight": 0.5}]
        }))
        .unwrap();
        let p = parts(&req, false).unwrap();
        assert_eq!(p.len(), 4);
        assert_eq!(p[0], (2.0, Item::Text("猫".into()), "query".into()));
        assert_eq!(p[1], (-1.0, Item::Text("雪".into()), "query".into()));
        assert_eq!(p[2], (1.0, Item::Image("AAAA".into()), "image".into()));
        assert_eq!(p[3], (0.5, Item::Text("dog".into()), "terms[0]".into()));
        let bad: SearchRequest =
            serde_json::from_value(json!({"terms": [{"text": "x", "weight": "heavy"}]})).unwrap();
        let err = parts(&bad, false).unwrap_err();
        assert!(err.to_string().starts_with("terms[0].weight: "), "{err}");
        // A term naming a server file stays text without --allow-file-paths.
        let file: SearchRequest = serde_json::from_value(json!({"query": "Cargo.toml"})).unwrap();
        assert_eq!(
            parts(&file, false).unwrap()[0].1,
            Item::Text("Cargo.toml".into())
        );
    }
}
