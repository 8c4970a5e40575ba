//! Filters and sorting for searches: by date taken, camera, path, place and
//! kind, chosen in SQL over the manifest before the top-k, a relevance
//! cutoff, and newest-first order. The CLI, the server and Python share it.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};

use rusqlite::types::Value;

use crate::error::{Error, Result};
use crate::media::{distance_km, Media};
use crate::store::VectorStore;
use crate::Index;

/// Which indexed files a search may return. Empty: all of them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Filter {
    /// Taken at or after this ISO date or time (`2023`, `2023-07`, `2023-07-14`, `2023-07-14T18:00`).
    pub after: Option<String>,
    /// Taken before this ISO date or time.
    pub before: Option<String>,
    /// Make or model contains this text (case-insensitive for ASCII).
    pub camera: Option<String>,
    /// The absolute path matches this glob (`*` any characters, `?` one, `[...]` a set; case-sensitive).
    pub path: Option<String>,
    /// Within `km` of (`lat`, `lon`).
    pub near: Option<Near>,
    /// `photo` or `video`.
    pub kind: Option<String>,
}

/// A circle on the globe.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Near {
    pub lat: f64,
    pub lon: f64,
    pub km: f64,
}

/// How results are ordered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Sort {
    /// Best match first.
    #[default]
    Score,
    /// Newest first, among the matches at or above the cutoff.
    Date,
}

/// One search result.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Hit {
    pub path: String,
    /// The content hash (the server's result id).
    #[serde(skip)]
    pub hash: String,
    pub score: f32,
    /// For a video, the time (seconds) of its best-matching frame.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub at: Option<f64>,
    /// Make and model as people name them (see [`Media::camera`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub camera: Option<String>,
    /// `None` for files indexed before metadata was recorded.
    #[serde(flatten)]
    pub media: Option<Media>,
}

impl Filter {
    pub fn is_empty(&self) -> bool {
        *self == Filter::default()
    }
}

/// Checks a date argument and returns it in the stored form's prefix
/// (`2023-07-14T18:00`), which compares as the stored dates do.
pub fn parse_date(s: &str) -> Result<String> {
    let t = s.trim().replace(' ', "T");
    let shape_ok = {
        let b = t.as_bytes();
        let template = b"0000-00-00T00:00:00";
        [4, 7, 10, 13, 16, 19].contains(&b.len())
            && b.iter().zip(template).all(|(c, t)| {
                if *t == b'0' {
                    c.is_ascii_digit()
                } else {
                    c == t
                }
            })
    };
    let field = |r: std::ops::Range<usize>| t.get(r).and_then(|v| v.parse::<u32>().ok());
    let in_range = field(5..7).is_none_or(|m| (1..=12).contains(&m))
        && field(8..10).is_none_or(|d| (1..=31).contains(&d))
        && field(11..13).is_none_or(|h| h <= 23)
        && field(14..16).is_none_or(|m| m <= 59);
    if !shape_ok || !in_range {
        return Err(Error::Invalid(format!(
            "date {s:?}: expected YYYY, YYYY-MM, YYYY-MM-DD or YYYY-MM-DDTHH:MM[:SS]"
        )));
    }
    Ok(t)
}

/// Parses `LAT,LON,KM`.
pub fn parse_near(s: &str) -> Result<Near> {
    let bad = || {
        Error::Invalid(format!(
            "place {s:?}: expected LAT,LON,KM, e.g. 31.23,121.47,5"
        ))
    };
    let parts: Vec<f64> = s
        .split(',')
        .map(|p| p.trim().parse::<f64>())
        .collect::<std::result::Result<_, _>>()
        .map_err(|_| bad())?;
    let [lat, lon, km] = parts[..] else {
        return Err(bad());
    };
    if !(lat.abs() <= 90.0 && lon.abs() <= 180.0 && km.is_finite() && km >= 0.0) {
        return Err(bad());
    }
    Ok(Near { lat, lon, km })
}

/// The content hashes of the files that pass `filter`, with those files.
fn matching(index: &Index, filter: &Filter) -> Result<HashMap<String, Vec<String>>> {
    let mut sql = String::from(
        "SELECT f.path, f.hash, m.lat, m.lon FROM files f LEFT JOIN media m ON m.path = f.path WHERE 1",
    );
    let mut args: Vec<Value> = Vec::new();
    let mut clause = |sql_part: &str, v: Value| {
        sql.push_str(sql_part);
        args.push(v);
    };
    if let Some(a) = &filter.after {
        clause(" AND m.taken >= ?", Value::Text(a.clone()));
    }
    if let Some(b) = &filter.before {
        clause(" AND m.taken < ?", Value::Text(b.clone()));
    }
    if let Some(c) = &filter.camera {
        let pattern = format!(
            "%{}%",
            c.replace('\\', "\\\\")
                .replace('%', "\\%")
                .replace('_', "\\_")
        );
        clause(
            " AND (COALESCE(m.make, '') || ' ' || COALESCE(m.model, '')) LIKE ? ESCAPE '\\'",
            Value::Text(pattern),
        );
    }
    if let Some(p) = &filter.path {
        clause(" AND f.path GLOB ?", Value::Text(p.clone()));
    }
    if let Some(k) = &filter.kind {
        clause(" AND COALESCE(m.kind, 'photo') = ?", Value::Text(k.clone()));
    }
    if let Some(n) = &filter.near {
        // A box in SQL, the circle below.
        let dlat = n.km / 111.0;
        clause(" AND m.lat BETWEEN ?", Value::Real(n.lat - dlat));
        clause(" AND ?", Value::Real(n.lat + dlat));
    }
    let mut stmt = index.conn.prepare(&sql).map_err(|e| index.err(e))?;
    let rows = stmt
        .query_map(rusqlite::params_from_iter(args), |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, Option<f64>>(2)?,
                r.get::<_, Option<f64>>(3)?,
            ))
        })
        .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
        .map_err(|e| index.err(e))?;
    let mut out: HashMap<String, Vec<String>> = HashMap::new();
    for (path, hash, lat, lon) in rows {
        if let Some(n) = &filter.near {
            let (Some(lat), Some(lon)) = (lat, lon) else {
                continue;
            };
            if distance_km((n.lat, n.lon), (lat, lon)) > n.km {
                continue;
            }
        }
        out.entry(hash).or_default().push(path);
    }
    for paths in out.values_mut() {
        paths.sort();
    }
    Ok(out)
}

/// A search's settings besides the query vector.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Search {
    pub top: usize,
    pub filter: Filter,
    /// Results scoring below this are dropped.
    pub min_score: Option<f32>,
    pub sort: Sort,
}

impl Search {
    /// The `top` best, unfiltered.
    pub fn top(top: usize) -> Self {
        Self {
            top,
            ..Self::default()
        }
    }
}

/// The best files for `query` under `search`: files with the same content
/// share its score; with [`Sort::Date`], the newest `top` of those at or
/// above the cutoff (or of the `top` best, without one). For one query: only
/// the manifest rows of the keys the store returns are read (a filter picks
/// its files in SQL), not the whole manifest; a reader that searches again
/// keeps a [`Catalog`] and calls [`search_in`].
pub fn search(
    store: &dyn VectorStore,
    index: &Index,
    query: &[f32],
    search: &Search,
) -> Result<Vec<Hit>> {
    if !search.filter.is_empty() {
        let catalog = Catalog {
            paths: HashMap::new(),
            frames: index.frames()?,
        };
        return search_in(store, index, &catalog, query, search);
    }
    let found = widen(search, |k| {
        let hits = store.search(query, k)?;
        let exhausted = hits.len() < k;
        let catalog = Catalog::of_keys(index, hits.iter().map(|(key, _)| key.as_str()))?;
        // Keys the manifest does not know (another writer's rows) drop out.
        let hits = hits
            .into_iter()
            .filter(|(key, _)| catalog.paths.contains_key(key) || catalog.frames.contains_key(key))
            .collect();
        Ok((
            hits,
            exhausted,
            Lookup {
                paths: Cow::Owned(catalog.paths),
                frames: Cow::Owned(catalog.frames),
            },
        ))
    })?;
    described(index, found, search)
}

/// What the manifest maps vector keys to, for a reader to keep between
/// searches (re-read when [`Index::data_version`] changes).
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    /// Content hash → its files, sorted.
    pub paths: HashMap<String, Vec<String>>,
    /// A video frame's vector key → (the video's content hash, time in ms).
    pub frames: HashMap<String, (String, u64)>,
}

impl Catalog {
    pub fn read(index: &Index) -> Result<Self> {
        Ok(Self {
            paths: index.paths_by_hash()?,
            frames: index.frames()?,
        })
    }

    /// The rows for `keys` only: their files, and for frame keys the frame
    /// and its video's files.
    pub fn of_keys<'k>(index: &Index, keys: impl Iterator<Item = &'k str>) -> Result<Self> {
        let keys: Vec<&str> = keys.collect();
        let frames: HashMap<String, (String, u64)> = rows_in(
            index,
            "SELECT key, hash, t_ms FROM frames WHERE key",
            &keys,
            |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    (r.get::<_, String>(1)?, r.get::<_, i64>(2)? as u64),
                ))
            },
        )?
        .into_iter()
        .collect();
        let hashes: HashSet<&str> = keys
            .iter()
            .map(|k| frames.get(*k).map_or(*k, |(hash, _)| hash.as_str()))
            .collect();
        let hashes: Vec<&str> = hashes.into_iter().collect();
        let mut paths: HashMap<String, Vec<String>> = HashMap::new();
        let files = rows_in(
            index,
            "SELECT path, hash FROM files WHERE hash",
            &hashes,
            |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)),
        )?;
        for (path, hash) in files {
            paths.entry(hash).or_default().push(path);
        }
        for files in paths.values_mut() {
            files.sort();
        }
        Ok(Self { paths, frames })
    }

    /// Indexed files.
    pub fn files(&self) -> usize {
        self.paths.values().map(Vec::len).sum()
    }
}

/// The rows of `select` (ending in the column to match) `IN values`, read
/// 500 values at a time.
fn rows_in<T>(
    index: &Index,
    select: &str,
    values: &[&str],
    row: impl Fn(&rusqlite::Row) -> rusqlite::Result<T>,
) -> Result<Vec<T>> {
    let mut out = Vec::new();
    for chunk in values.chunks(500) {
        let sql = format!("{select} IN ({})", vec!["?"; chunk.len()].join(","));
        let mut stmt = index.conn.prepare(&sql).map_err(|e| index.err(e))?;
        let rows = stmt
            .query_map(rusqlite::params_from_iter(chunk), &row)
            .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
            .map_err(|e| index.err(e))?;
        out.extend(rows);
    }
    Ok(out)
}

/// [`search`] with a catalog the caller keeps.
pub fn search_in(
    store: &dyn VectorStore,
    index: &Index,
    catalog: &Catalog,
    query: &[f32],
    search: &Search,
) -> Result<Vec<Hit>> {
    let filtered;
    let by_hash = if search.filter.is_empty() {
        &catalog.paths
    } else {
        filtered = matching(index, &search.filter)?;
        &filtered
    };
    if by_hash.is_empty() || search.top == 0 {
        return Ok(Vec::new());
    }
    // A video's vectors are its frames': each frame leads to the video's files.
    // The filter's candidates: its files' hashes and their frames, built once.
    let keys: Option<HashSet<String>> = (!search.filter.is_empty()).then(|| {
        let frames = catalog
            .frames
            .iter()
            .filter(|(_, (hash, _))| by_hash.contains_key(hash))
            .map(|(key, _)| key.clone());
        by_hash.keys().cloned().chain(frames).collect()
    });
    let found = widen(search, |k| {
        let hits = match &keys {
            Some(keys) => store.search_among(query, k, keys)?,
            // Everything indexed qualifies: no candidate set to build.
            None => crate::store::search_known(store, query, k, |key| {
                by_hash.contains_key(key) || catalog.frames.contains_key(key)
            })?,
        };
        let exhausted = hits.len() < k;
        let lookup = Lookup {
            paths: Cow::Borrowed(by_hash),
            frames: Cow::Borrowed(&catalog.frames),
        };
        Ok((hits, exhausted, lookup))
    })?;
    described(index, found, search)
}

/// Files found: (path, content hash, score, frame time in ms).
type Found = Vec<(String, String, f32, Option<u64>)>;

/// Where a search's keys lead: content hash → files, frame key → video.
struct Lookup<'c> {
    paths: Cow<'c, HashMap<String, Vec<String>>>,
    frames: Cow<'c, HashMap<String, (String, u64)>>,
}

/// Asks `fetch(k)` for the `k` best keys (with whether the store ran out,
/// and where they lead), widening until `top` distinct files are found (a
/// video's frames count once), or, for newest-first with a cutoff, until
/// the cutoff is passed.
fn widen<'c>(
    search: &Search,
    mut fetch: impl FnMut(usize) -> Result<(Vec<(String, f32)>, bool, Lookup<'c>)>,
) -> Result<Found> {
    let above = |s: f32| search.min_score.is_none_or(|m| s >= m);
    let mut k = search.top;
    loop {
        let (hits, exhausted, catalog) = fetch(k)?;
        let past_cutoff = hits.last().is_some_and(|(_, s)| !above(*s));
        let found = best_per_file(&hits, &catalog.paths, &catalog.frames, &above);
        let enough = match (search.sort, search.min_score) {
            (Sort::Date, Some(_)) => past_cutoff,
            _ => found.len() >= search.top || past_cutoff,
        };
        if exhausted || enough {
            return Ok(found);
        }
        k = k.saturating_mul(4);
    }
}

/// The found files with their metadata, in the order `search` asks for.
fn described(index: &Index, found: Found, search: &Search) -> Result<Vec<Hit>> {
    let media = index.media_of(&found.iter().map(|f| f.0.clone()).collect::<Vec<_>>())?;
    let mut hits: Vec<Hit> = found
        .into_iter()
        .map(|(path, hash, score, at_ms)| Hit {
            camera: media.get(&path).and_then(Media::camera),
            media: media.get(&path).cloned(),
            at: at_ms.map(|ms| ms as f64 / 1000.0),
            path,
            hash,
            score,
        })
        .collect();
    if search.sort == Sort::Date {
        // Undated files last; ties keep the score order.
        hits.sort_by(|a, b| {
            let date = |h: &Hit| h.media.as_ref().map(|m| m.taken.clone());
            date(b).cmp(&date(a))
        });
    }
    hits.truncate(search.top);
    Ok(hits)
}

/// Per file, its best-scoring key at or above the cutoff, in score order:
/// `(path, content hash, score, frame time for a video)`.
fn best_per_file(
    hits: &[(String, f32)],
    by_hash: &HashMap<String, Vec<String>>,
    frames: &HashMap<String, (String, u64)>,
    above: &impl Fn(f32) -> bool,
) -> Vec<(String, String, f32, Option<u64>)> {
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for (key, score) in hits.iter().filter(|(_, s)| above(*s)) {
        let (hash, at) = match frames.get(key) {
            Some((hash, ms)) => (hash.clone(), Some(*ms)),
            None => (key.clone(), None),
        };
        for p in by_hash.get(&hash).into_iter().flatten() {
            if seen.insert(p.clone()) {
                out.push((p.clone(), hash.clone(), *score, at));
            }
        }
    }
    out
}
