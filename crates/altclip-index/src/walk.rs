//! Finding the images under the indexed folders.

use std::path::{Path, PathBuf};

use altclip::preprocess::IMAGE_EXTENSIONS;

/// Shell-style match of a whole name against `pattern` (`*` and `?`).
pub fn wildcard_match(pattern: &str, name: &str) -> bool {
    let (p, n): (Vec<char>, Vec<char>) = (pattern.chars().collect(), name.chars().collect());
    // Classic two-pointer match with backtracking to the last `*`.
    let (mut i, mut j, mut star, mut mark) = (0, 0, None, 0);
    while j < n.len() {
        if i < p.len() && (p[i] == '?' || p[i] == n[j]) {
            i += 1;
            j += 1;
        } else if i < p.len() && p[i] == '*' {
            star = Some(i);
            mark = j;
            i += 1;
        } else if let Some(s) = star {
            i = s + 1;
            mark += 1;
            j = mark;
        } else {
            return false;
        }
    }
    p[i..].iter().all(|&c| c == '*')
}

/// `path` made absolute: canonical when it exists, else joined to the
/// working directory.
pub fn absolute(path: &Path) -> PathBuf {
    std::fs::canonicalize(path).unwrap_or_else(|_| {
        std::env::current_dir()
            .map(|d| d.join(path))
            .unwrap_or_else(|_| path.to_path_buf())
    })
}

fn hidden(name: &str) -> bool {
    name.starts_with('.')
}

/// A candidate file: an image by extension, or a path that is not a regular
/// file but is named like one (reported rather than silently ignored).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    pub path: PathBuf,
    pub is_file: bool,
}

/// Walks `roots` recursively, skipping hidden entries and directories whose
/// name matches one of `exclude_dirs`; returns image-named entries, sorted.
pub fn find_images(roots: &[PathBuf], exclude_dirs: &[String]) -> Vec<Found> {
    find_media(roots, exclude_dirs, false)
}

/// [`find_images`], and video-named entries too when `videos` is set.
pub fn find_media(roots: &[PathBuf], exclude_dirs: &[String], videos: bool) -> Vec<Found> {
    let mut out = Vec::new();
    for root in roots {
        let walker = walkdir::WalkDir::new(root)
            .follow_links(false)
            .into_iter()
            .filter_entry(|e| {
                let name = e.file_name().to_string_lossy();
                e.depth() == 0
                    || !(hidden(&name)
                        || (e.file_type().is_dir()
                            && exclude_dirs.iter().any(|p| wildcard_match(p, &name))))
            });
        for entry in walker.filter_map(|e| e.ok()) {
            if entry.depth() == 0 && entry.file_type().is_dir() {
                continue;
            }
            if is_image_name(entry.path()) || (videos && crate::video::is_video_name(entry.path()))
            {
                out.push(Found {
                    path: entry.path().to_path_buf(),
                    is_file: entry.file_type().is_file(),
                });
            }
        }
    }
    out.sort_by(|a, b| a.path.cmp(&b.path));
    out.dedup();
    out
}

/// Splits the motion halves of Live Photos off `found`: a `.mov` beside a
/// HEIC or JPEG still of the same name (`IMG_0001.MOV` with `IMG_0001.HEIC`)
/// is the few seconds an iPhone records around the still, which the still
/// already stands for. Returns (what to index, the motion halves).
pub fn split_live_photos(found: Vec<Found>) -> (Vec<Found>, Vec<Found>) {
    const STILLS: &[&str] = &["heic", "heif", "jpg", "jpeg"];
    let key = |path: &Path, extensions: &[&str]| {
        let ext = path.extension()?.to_str()?.to_ascii_lowercase();
        extensions.contains(&ext.as_str()).then(|| {
            (
                path.parent().map(Path::to_path_buf),
                path.file_stem().map(|s| s.to_string_lossy().to_lowercase()),
            )
        })
    };
    let stills: std::collections::HashSet<_> =
        found.iter().filter_map(|f| key(&f.path, STILLS)).collect();
    found
        .into_iter()
        .partition(|f| !key(&f.path, &["mov"]).is_some_and(|k| stills.contains(&k)))
}

fn is_image_name(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn live_photo_videos_are_split_from_their_stills() {
        let found = |p: &str| Found {
            path: PathBuf::from(p),
            is_file: true,
        };
        let all = [
            "/a/IMG_0001.HEIC",
            "/a/IMG_0001.MOV",
            "/a/IMG_0002.JPG",
            "/a/img_0002.mov",
            "/a/IMG_0003.MOV",
            "/b/IMG_0001.MOV",
            "/a/IMG_0004.png",
            "/a/IMG_0004.mov",
            "/a/IMG_0005.heic",
            "/a/IMG_0005.mp4",
        ];
        let (kept, motion) = split_live_photos(all.iter().map(|p| found(p)).collect());
        let paths = |v: Vec<Found>| {
            v.into_iter()
                .map(|f| f.path.display().to_string())
                .collect::<Vec<_>>()
        };
        assert_eq!(paths(motion), ["/a/IMG_0001.MOV", "/a/img_0002.mov"]);
        assert_eq!(kept.len(), all.len() - 2);
    }

    #[test]
    fn wildcards() {
        assert!(wildcard_match("node_modules", "node_modules"));
        assert!(wildcard_match("*.tmp", "a.tmp"));
        assert!(wildcard_match("cache*", "cache-2024"));
        assert!(wildcard_match("a?c", "abc"));
        assert!(!wildcard_match("a?c", "abbc"));
        assert!(!wildcard_match("*.tmp", "a.tmpx"));
    }
}
