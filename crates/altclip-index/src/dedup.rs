//! Duplicate groups: files with identical content first, then the same
//! picture stored twice (resized, re-encoded, re-exported), told apart from
//! bursts and look-alikes.
//!
//! Embeddings alone cannot do that: a burst of shots, or two photos of the
//! same beach, are as close in CLIP space as a photo and its resized copy. So
//! a pair of photos whose cosine passes the threshold is a duplicate only if
//! their difference hashes (dHash, 64 bits of the picture's coarse structure)
//! also agree; and if both carry EXIF dates that differ, they are two shots
//! of a burst, not one photo twice. Videos are compared on their duration and
//! on every sampled frame, so two clips that open on the same black frame
//! stay apart.

use std::collections::{BTreeMap, HashMap, HashSet};

use image::RgbImage;
use rayon::prelude::*;

use candle_core::{Device, Tensor};

use crate::error::{Error, Result};
use crate::media::Media;
use crate::store::dot;

/// What a dedup run compares, as the index and the store hold it.
pub struct Library<'a> {
    /// Every stored vector: a photo's under its content hash, a video's
    /// frames under their own keys (see `frames`). Normalised.
    pub vectors: &'a [(String, Vec<f32>)],
    /// Indexed files per content hash.
    pub paths_by_hash: &'a HashMap<String, Vec<String>>,
    /// Video frame rows: vector key → (video content hash, time in ms).
    pub frames: &'a HashMap<String, (String, u64)>,
    /// Metadata by path.
    pub media: &'a HashMap<String, Media>,
}

/// How close counts as the same.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// Cosine similarity at or above which two photos (or two videos' frames)
    /// are candidates.
    pub threshold: f32,
    /// Most differing dHash bits (of 64) for two photos to be one picture.
    pub max_distance: u32,
    /// Also report bursts: duplicates by picture whose EXIF times differ.
    pub bursts: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            threshold: 0.95,
            max_distance: 10,
            bursts: false,
        }
    }
}

/// Why a group's files belong together.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// Byte-identical files.
    Identical,
    /// One picture (or clip) stored as different files.
    Duplicate,
    /// Shots of one scene taken moments apart: alike, but each its own photo.
    Burst,
}

/// One file of a group, compared with the group's `keep` file.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Member {
    pub path: String,
    /// Cosine similarity of the embeddings (for videos, the mean over frames).
    pub similarity: f32,
    /// Differing dHash bits, where both pictures could be read.
    pub distance: Option<u32>,
    pub taken: Option<String>,
    pub width: Option<u32>,
    pub height: Option<u32>,
    /// Seconds, for videos.
    pub duration: Option<f64>,
}

/// A set of files that are one photo or clip (or, for bursts, one moment).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Group {
    pub kind: Kind,
    /// The file to keep: the most pixels, then the earliest date, then the
    /// first path.
    pub keep: String,
    /// Every file of the group, `keep` first.
    pub members: Vec<Member>,
}

/// The dHash of a picture: its grey levels at 9×8, one bit per horizontal
/// neighbour pair (is the left one darker?).
pub fn dhash(image: &RgbImage) -> u64 {
    let grey = image::DynamicImage::ImageRgb8(image.clone()).to_luma8();
    let small = image::imageops::resize(&grey, 9, 8, image::imageops::FilterType::Triangle);
    let mut bits = 0u64;
    for y in 0..8 {
        for x in 0..8 {
            let left = small.get_pixel(x, y).0[0];
            let right = small.get_pixel(x + 1, y).0[0];
            bits = bits << 1 | u64::from(left < right);
        }
    }
    bits
}

/// Something dedup compares: a photo (one vector) or a video (its frames).
enum Item<'a> {
    Photo(&'a [f32]),
    Video(Vec<(u64, &'a [f32])>),
}

/// Groups `library`'s files. `picture_hash(path)` gives a photo's dHash (see
/// [`dhash`]), or `None` when it cannot be read; it is asked only for photos
/// that an embedding pairs. `on_progress(done, total)` follows the pair scan.
pub fn groups(
    library: &Library,
    options: &Options,
    picture_hash: &(dyn Fn(&str) -> Option<u64> + Sync),
    on_progress: &(dyn Fn(usize, usize) + Sync),
) -> Result<Vec<Group>> {
    let items = collect_items(library);
    let hashes: Vec<&str> = items.keys().copied().collect();
    let pairs = candidate_pairs(&hashes, &items, options.threshold, on_progress)?;

    let first_path = |h: &str| library.paths_by_hash[h][0].as_str();
    let paired: HashSet<&str> = pairs.iter().flat_map(|&(a, b, _)| [a, b]).collect();
    let dhashes: HashMap<&str, Option<u64>> = paired
        .into_par_iter()
        .filter(|h| matches!(items[h], Item::Photo(_)))
        .map(|h| (h, picture_hash(first_path(h))))
        .collect();
    let media = |h: &str| library.media.get(first_path(h));
    let mut kinds: Vec<(Kind, &str, &str, u32, f32)> = pairs
        .iter()
        .filter_map(|&(a, b, similarity)| {
            let kind = pair_kind(a, b, &items, &dhashes, &media, options)?;
            let distance = bits_apart(&dhashes, a, b).unwrap_or(64);
            Some((kind, a, b, distance, similarity))
        })
        .collect();
    // The closest pairs join first, so where a group may not take a file
    // (see UnionFind::union) it is the more distant one that stays out.
    kinds.sort_by(|x, y| {
        (x.3, y.4)
            .partial_cmp(&(y.3, x.4))
            .unwrap_or(std::cmp::Ordering::Equal)
    });
    let exif_date = |h: &str| {
        media(h)
            .filter(|m| m.taken_from == "exif")
            .map(|m| m.taken.clone())
    };
    let dates: Vec<Option<String>> = hashes.iter().map(|h| exif_date(h)).collect();
    let mut duplicates = UnionFind::new(&hashes, dates);
    let mut bursts = UnionFind::new(&hashes, vec![None; hashes.len()]);
    for &(kind, a, b, _, _) in &kinds {
        match kind {
            Kind::Duplicate => duplicates.union(a, b),
            Kind::Burst if options.bursts => bursts.union(a, b),
            _ => {}
        }
    }

    let describe =
        |kind, members: Vec<&str>| describe_group(kind, &members, library, &items, &dhashes);
    let mut out = Vec::new();
    let mut in_duplicate = HashSet::new();
    for members in duplicates.components() {
        in_duplicate.extend(members.iter().copied());
        out.push(describe(Kind::Duplicate, members));
    }
    for (hash, paths) in library.paths_by_hash {
        if paths.len() > 1 && !in_duplicate.contains(hash.as_str()) {
            out.push(describe(Kind::Identical, vec![hash.as_str()]));
        }
    }
    for members in bursts.components() {
        out.push(describe(Kind::Burst, members));
    }
    out.sort_by(|a, b| (a.kind, &a.keep).cmp(&(b.kind, &b.keep)));
    Ok(out)
}

/// The indexed photos and videos by content hash. Rows of other writers and
/// frames of forgotten videos are left out, so they cannot bridge two files.
fn collect_items<'a>(library: &'a Library) -> BTreeMap<&'a str, Item<'a>> {
    let mut items = BTreeMap::new();
    let mut videos: HashMap<&str, Vec<(u64, &[f32])>> = HashMap::new();
    for (key, vector) in library.vectors {
        if let Some((hash, ms)) = library.frames.get(key) {
            if library.paths_by_hash.contains_key(hash) {
                videos
                    .entry(hash.as_str())
                    .or_default()
                    .push((*ms, vector.as_slice()));
            }
        } else if let Some((hash, _)) = library.paths_by_hash.get_key_value(key) {
            items.insert(hash.as_str(), Item::Photo(vector.as_slice()));
        }
    }
    for (hash, mut frames) in videos {
        frames.sort_by_key(|&(ms, _)| ms);
        items.insert(hash, Item::Video(frames));
    }
    items
}

/// Rows of photo vectors compared at once: a 2048 × 2048 tile of scores.
const BLOCK: usize = 2048;

/// Pairs (a, b, cosine) of items of one kind whose embeddings pass
/// `threshold`: photos by their vectors, compared a tile at a time as
/// matrix products, videos by their mean frame cosine.
fn candidate_pairs<'a>(
    hashes: &[&'a str],
    items: &BTreeMap<&'a str, Item>,
    threshold: f32,
    on_progress: &(dyn Fn(usize, usize) + Sync),
) -> Result<Vec<(&'a str, &'a str, f32)>> {
    let (mut photos, mut videos) = (Vec::new(), Vec::new());
    for &h in hashes {
        match &items[h] {
            Item::Photo(v) => photos.push((h, *v)),
            Item::Video(frames) => videos.push((h, frames)),
        }
    }
    let mut pairs = Vec::new();
    for (i, (a, x)) in videos.iter().enumerate() {
        for (b, y) in &videos[i + 1..] {
            if let Some(similarity) = mean_frame_similarity(x, y, threshold) {
                pairs.push((*a, *b, similarity));
            }
        }
    }
    let Some(dim) = photos.first().map(|(_, v)| v.len()) else {
        return Ok(pairs);
    };
    if let Some((h, v)) = photos.iter().find(|(_, v)| v.len() != dim) {
        return Err(Error::Invalid(format!(
            "the vector of {h} has {} values, the others {dim}",
            v.len()
        )));
    }
    let n = photos.len();
    let matrix: Vec<f32> = photos.iter().flat_map(|(_, v)| v.iter().copied()).collect();
    let matrix = Tensor::from_vec(matrix, (n, dim), &Device::Cpu).map_err(backend)?;
    let rows = |start: usize| -> Result<Tensor> {
        matrix
            .narrow(0, start, BLOCK.min(n - start))
            .map_err(backend)
    };
    for bi in (0..n).step_by(BLOCK) {
        let a = rows(bi)?;
        for bj in (bi..n).step_by(BLOCK) {
            let b = rows(bj)?;
            let scores = a.matmul(&b.t().map_err(backend)?).map_err(backend)?;
            let cols = scores.dim(1).map_err(backend)?;
            let scores = scores
                .flatten_all()
                .and_then(|s| s.to_vec1::<f32>())
                .map_err(backend)?;
            for (r, row) in scores.chunks_exact(cols).enumerate() {
                let i = bi + r;
                for (c, &s) in row.iter().enumerate() {
                    let j = bj + c;
                    if j > i && s >= threshold {
                        pairs.push((photos[i].0, photos[j].0, s));
                    }
                }
            }
        }
        on_progress((bi + BLOCK).min(n), n);
    }
    Ok(pairs)
}

fn backend(e: candle_core::Error) -> Error {
    Error::Backend(format!("comparing the embeddings: {e}"))
}

/// The mean cosine of two videos' frames at the same times, if they have
/// the same number of frames (the same length, sampled alike) and every
/// frame pair passes `threshold`: one shared opening frame is not enough.
fn mean_frame_similarity(a: &[(u64, &[f32])], b: &[(u64, &[f32])], threshold: f32) -> Option<f32> {
    if a.len() != b.len() || a.is_empty() {
        return None;
    }
    let cosines: Vec<f32> = a.iter().zip(b).map(|((_, x), (_, y))| dot(x, y)).collect();
    cosines
        .iter()
        .all(|&c| c >= threshold)
        .then(|| cosines.iter().sum::<f32>() / cosines.len() as f32)
}

/// Whether a candidate pair is one picture, a burst, or only alike (`None`).
fn pair_kind<'m>(
    a: &str,
    b: &str,
    items: &BTreeMap<&str, Item>,
    dhashes: &HashMap<&str, Option<u64>>,
    media: &dyn Fn(&str) -> Option<&'m Media>,
    options: &Options,
) -> Option<Kind> {
    let (ma, mb) = (media(a), media(b));
    if let (Item::Video(_), Item::Video(_)) = (&items[a], &items[b]) {
        let duration = |m: Option<&Media>| m.and_then(|m| m.duration);
        return match (duration(ma), duration(mb)) {
            (Some(x), Some(y)) if (x - y).abs() <= (0.01 * x.max(y)).max(0.5) => {
                Some(Kind::Duplicate)
            }
            _ => None,
        };
    }
    let same_picture = match bits_apart(dhashes, a, b) {
        Some(bits) => bits <= options.max_distance,
        // Unreadable now: the recorded shape and date have to agree instead.
        _ => match (ma, mb) {
            (Some(x), Some(y)) => {
                aspect_agrees(x, y)
                    && x.taken_from == "exif"
                    && y.taken_from == "exif"
                    && x.taken == y.taken
            }
            _ => false,
        },
    };
    if !same_picture {
        return None;
    }
    fn dated(m: Option<&Media>) -> Option<&str> {
        m.filter(|m| m.taken_from == "exif")
            .map(|m| m.taken.as_str())
    }
    match (dated(ma), dated(mb)) {
        (Some(x), Some(y)) if x != y => {
            let apart = seconds(x).zip(seconds(y)).map(|(x, y)| (x - y).abs());
            apart
                .is_some_and(|s| s <= BURST_SECONDS)
                .then_some(Kind::Burst)
        }
        _ => Some(Kind::Duplicate),
    }
}

/// Most seconds between two shots of one burst.
const BURST_SECONDS: i64 = 60;

/// Seconds since 1970 of an ISO time as the index records it
/// (`2023-07-14T18:03:11`), by the proleptic Gregorian calendar.
fn seconds(iso: &str) -> Option<i64> {
    let field = |range: std::ops::Range<usize>| iso.get(range)?.parse::<i64>().ok();
    let (y, m, d) = (field(0..4)?, field(5..7)?, field(8..10)?);
    let (hh, mm, ss) = (field(11..13)?, field(14..16)?, field(17..19)?);
    // Howard Hinnant's days_from_civil.
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + hh * 3600 + mm * 60 + ss)
}

/// The dHash bits in which photos `a` and `b` differ, where both could be read.
fn bits_apart(dhashes: &HashMap<&str, Option<u64>>, a: &str, b: &str) -> Option<u32> {
    match (dhashes.get(a), dhashes.get(b)) {
        (Some(Some(x)), Some(Some(y))) => Some((x ^ y).count_ones()),
        _ => None,
    }
}

/// Whether two pictures have the same shape (within 1%): a resized copy
/// keeps its aspect ratio.
fn aspect_agrees(a: &Media, b: &Media) -> bool {
    let ratio = |m: &Media| m.width as f64 / m.height.max(1) as f64;
    (ratio(a) / ratio(b) - 1.0).abs() < 0.01
}

fn describe_group(
    kind: Kind,
    hashes: &[&str],
    library: &Library,
    items: &BTreeMap<&str, Item>,
    dhashes: &HashMap<&str, Option<u64>>,
) -> Group {
    // Bursts list one file per shot; the others list every copy.
    let files: Vec<(&str, &str)> = hashes
        .iter()
        .flat_map(|&h| {
            let paths = &library.paths_by_hash[h];
            let take = if kind == Kind::Burst { 1 } else { paths.len() };
            paths[..take].iter().map(move |p| (h, p.as_str()))
        })
        .collect();
    let media = |p: &str| library.media.get(p);
    let rank = |&(_, p): &(&str, &str)| {
        let m = media(p);
        let pixels = m.map_or(0, |m| m.width as u64 * m.height as u64);
        (
            std::cmp::Reverse(pixels),
            m.map(|m| m.taken.clone()),
            p.to_string(),
        )
    };
    let keep = *files
        .iter()
        .min_by_key(|f| rank(f))
        .expect("a group has files");
    let similarity = |h: &str| match (&items.get(keep.0), &items.get(h)) {
        (Some(Item::Photo(x)), Some(Item::Photo(y))) => dot(x, y),
        (Some(Item::Video(x)), Some(Item::Video(y))) => {
            mean_frame_similarity(x, y, f32::NEG_INFINITY).unwrap_or(0.0)
        }
        _ => 1.0,
    };
    let distance = |h: &str| bits_apart(dhashes, keep.0, h);
    let mut members: Vec<Member> = files
        .iter()
        .map(|&(h, p)| {
            let m = media(p);
            Member {
                path: p.to_string(),
                // Vectors stored as f16 can make a product a hair over 1.
                similarity: if h == keep.0 {
                    1.0
                } else {
                    similarity(h).clamp(-1.0, 1.0)
                },
                distance: if h == keep.0 { Some(0) } else { distance(h) },
                taken: m.map(|m| m.taken.clone()),
                width: m.map(|m| m.width),
                height: m.map(|m| m.height),
                duration: m.and_then(|m| m.duration),
            }
        })
        .collect();
    members.sort_by_key(|m| (m.path != keep.1, m.path.clone()));
    Group {
        kind,
        keep: keep.1.to_string(),
        members,
    }
}

/// Union-find over content hashes, where a set never holds two different
/// EXIF times: a copy without EXIF must not bridge two shots into one photo.
struct UnionFind<'a> {
    index: HashMap<&'a str, usize>,
    names: Vec<&'a str>,
    parent: Vec<usize>,
    joined: Vec<bool>,
    /// Per root, the EXIF time its set holds, if any.
    date: Vec<Option<String>>,
}

impl<'a> UnionFind<'a> {
    fn new(names: &[&'a str], date: Vec<Option<String>>) -> Self {
        UnionFind {
            index: names.iter().enumerate().map(|(i, &n)| (n, i)).collect(),
            names: names.to_vec(),
            parent: (0..names.len()).collect(),
            joined: vec![false; names.len()],
            date,
        }
    }

    fn root(&mut self, mut i: usize) -> usize {
        while self.parent[i] != i {
            self.parent[i] = self.parent[self.parent[i]];
            i = self.parent[i];
        }
        i
    }

    /// Joins the sets of `a` and `b`, unless their EXIF times differ.
    fn union(&mut self, a: &str, b: &str) {
        let (a, b) = (self.index[a], self.index[b]);
        let (ra, rb) = (self.root(a), self.root(b));
        if ra == rb {
            return;
        }
        let date = match (self.date[ra].take(), self.date[rb].take()) {
            (Some(x), Some(y)) if x != y => {
                (self.date[ra], self.date[rb]) = (Some(x), Some(y));
                return;
            }
            (x, y) => x.or(y),
        };
        self.joined[a] = true;
        self.joined[b] = true;
        let (keep, child) = (ra.min(rb), ra.max(rb));
        self.parent[child] = keep;
        self.date[keep] = date;
    }

    /// The sets of more than one name.
    fn components(mut self) -> Vec<Vec<&'a str>> {
        let mut by_root: BTreeMap<usize, Vec<&'a str>> = BTreeMap::new();
        for i in 0..self.names.len() {
            if self.joined[i] {
                let r = self.root(i);
                by_root.entry(r).or_default().push(self.names[i]);
            }
        }
        by_root.into_values().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn photo(taken: &str, from: &str, width: u32, height: u32) -> Media {
        Media {
            kind: "photo".into(),
            taken: taken.into(),
            taken_from: from.into(),
            make: None,
            model: None,
            lat: None,
            lon: None,
            width,
            height,
            duration: None,
        }
    }

    fn video(duration: f64) -> Media {
        Media {
            kind: "video".into(),
            duration: Some(duration),
            ..photo("2024-01-01T00:00:00", "video", 640, 360)
        }
    }

    fn unit(angle: f32) -> Vec<f32> {
        vec![angle.cos(), angle.sin()]
    }

    /// Photos: `a` and its resized copy `a-small` (one picture), `b` and `b2`
    /// (a burst: same picture hash, EXIF times a second apart), `c` (alike
    /// in CLIP space, but another picture), `d` twice on disk. Videos: `v1`
    /// and `v2` (the same clip), `v3` (same opening frame, then different).
    #[test]
    fn identical_duplicates_bursts_and_look_alikes_are_told_apart() {
        let vectors: Vec<(String, Vec<f32>)> = vec![
            ("a".into(), unit(0.0)),
            ("a-small".into(), unit(0.01)),
            ("c".into(), unit(0.02)),
            ("b".into(), unit(1.0)),
            ("b2".into(), unit(1.01)),
            ("d".into(), unit(2.0)),
            ("v1@0".into(), unit(3.0)),
            ("v1@2000".into(), unit(3.5)),
            ("v2@0".into(), unit(3.0)),
            ("v2@2000".into(), unit(3.505)),
            ("v3@0".into(), unit(3.0)),
            ("v3@2000".into(), unit(4.5)),
        ];
        let mut paths_by_hash: HashMap<String, Vec<String>> = HashMap::new();
        let mut media = HashMap::new();
        let mut add = |hash: &str, paths: &[&str], m: Media| {
            paths_by_hash.insert(hash.into(), paths.iter().map(|p| p.to_string()).collect());
            for p in paths {
                media.insert(p.to_string(), m.clone());
            }
        };
        add(
            "a",
            &["a.jpg"],
            photo("2023-05-01T10:00:00", "exif", 4000, 3000),
        );
        add(
            "a-small",
            &["a-small.jpg"],
            photo("2023-05-01T10:00:00", "exif", 800, 600),
        );
        add(
            "c",
            &["c.jpg"],
            photo("2023-05-01T10:00:00", "exif", 4000, 3000),
        );
        add(
            "b",
            &["b.jpg"],
            photo("2023-05-02T09:00:00", "exif", 4000, 3000),
        );
        add(
            "b2",
            &["b2.jpg"],
            photo("2023-05-02T09:00:01", "exif", 4000, 3000),
        );
        add(
            "d",
            &["d.jpg", "d copy.jpg"],
            photo("2020-01-01T00:00:00", "file", 10, 10),
        );
        add("v1", &["v1.mp4"], video(4.0));
        add("v2", &["v2.mov"], video(4.02));
        add("v3", &["v3.mp4"], video(4.0));
        let frames: HashMap<String, (String, u64)> = vectors
            .iter()
            .filter_map(|(k, _)| {
                let (hash, ms) = k.split_once('@')?;
                Some((k.clone(), (hash.to_string(), ms.parse().unwrap())))
            })
            .collect();
        let library = Library {
            vectors: &vectors,
            paths_by_hash: &paths_by_hash,
            frames: &frames,
            media: &media,
        };
        let picture = |path: &str| match path {
            "a.jpg" => Some(0b1111_0000),
            "a-small.jpg" => Some(0b1111_0001),
            "c.jpg" => Some(!0b1111_0000),
            "b.jpg" | "b2.jpg" => Some(42),
            _ => None,
        };
        let options = Options {
            threshold: 0.99,
            ..Options::default()
        };
        let summary = |groups: Vec<Group>| {
            groups
                .into_iter()
                .map(|g| {
                    (
                        g.kind,
                        g.members.into_iter().map(|m| m.path).collect::<Vec<_>>(),
                    )
                })
                .collect::<Vec<_>>()
        };
        let found = summary(groups(&library, &options, &picture, &|_, _| {}).unwrap());
        assert_eq!(
            found,
            vec![
                (
                    Kind::Identical,
                    vec!["d copy.jpg".to_string(), "d.jpg".to_string()]
                ),
                (
                    Kind::Duplicate,
                    vec!["a.jpg".to_string(), "a-small.jpg".to_string()]
                ),
                (
                    Kind::Duplicate,
                    vec!["v1.mp4".to_string(), "v2.mov".to_string()]
                ),
            ]
        );
        let with_bursts = Options {
            bursts: true,
            ..options
        };
        let found = summary(groups(&library, &with_bursts, &picture, &|_, _| {}).unwrap());
        assert_eq!(
            found.last(),
            Some(&(Kind::Burst, vec!["b.jpg".to_string(), "b2.jpg".to_string()]))
        );
    }

    #[test]
    fn iso_times_are_counted_in_seconds() {
        assert_eq!(seconds("1970-01-01T00:00:00"), Some(0));
        assert_eq!(seconds("2023-07-14T18:03:11"), Some(1_689_357_791));
        assert_eq!(seconds("2024-02-29T00:00:01"), Some(1_709_164_801));
        assert_eq!(seconds("2024-02"), None);
    }

    #[test]
    fn dhash_survives_resizing_and_tells_pictures_apart() {
        let picture = |w: u32, h: u32, flip: bool| {
            RgbImage::from_fn(w, h, |x, y| {
                let (u, v) = (x as f32 / w as f32, y as f32 / h as f32);
                let u = if flip { 1.0 - u } else { u };
                let l = (128.0 + 100.0 * (6.0 * u + 3.0 * v * v).sin()) as u8;
                image::Rgb([l, l / 2, 255 - l])
            })
        };
        let big = dhash(&picture(640, 480, false));
        let small = dhash(&picture(160, 120, false));
        let other = dhash(&picture(640, 480, true));
        assert!(
            (big ^ small).count_ones() <= 4,
            "{}",
            (big ^ small).count_ones()
        );
        assert!(
            (big ^ other).count_ones() > 20,
            "{}",
            (big ^ other).count_ones()
        );
    }
}
