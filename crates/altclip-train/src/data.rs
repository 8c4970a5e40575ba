//! Training data files: parallel text for distillation, image–text pairs for
//! contrastive learning.

use std::path::{Path, PathBuf};

use altclip::error::{Error, Result};

/// One line of a parallel corpus: an English sentence and its translation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParallelPair {
    pub en: String,
    pub other: String,
}

/// Reads `en<TAB>other` lines (UTF-8; blank lines are skipped). A line
/// without exactly one tab, or with an empty side, is an error naming it.
pub fn read_parallel_tsv(path: &Path) -> Result<Vec<ParallelPair>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let mut pairs = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.trim().is_empty() {
            continue;
        }
        let fields: Vec<&str> = line.split('\t').collect();
        let bad = |why: &str| {
            Err(Error::Invalid(format!(
                "{}:{}: {why}; each line must be `english<TAB>translation`",
                path.display(),
                i + 1
            )))
        };
        if fields.len() != 2 {
            return bad(&format!("{} tab-separated fields", fields.len()));
        }
        let (en, other) = (fields[0].trim(), fields[1].trim());
        if en.is_empty() || other.is_empty() {
            return bad("an empty side");
        }
        pairs.push(ParallelPair {
            en: en.to_string(),
            other: other.to_string(),
        });
    }
    if pairs.is_empty() {
        return Err(Error::Invalid(format!(
            "{} holds no `english<TAB>translation` lines",
            path.display()
        )));
    }
    Ok(pairs)
}

/// One image–caption pair.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageCaption {
    pub image: PathBuf,
    pub caption: String,
}

const IMAGE_EXTENSIONS: [&str; 9] = [
    "jpg", "jpeg", "png", "webp", "gif", "bmp", "tif", "tiff", "jfif",
];

/// Reads image–caption pairs from either
/// - a TSV file of `image<TAB>caption` lines, image paths relative to the
///   file's directory (an image may appear on several lines), or
/// - a directory where each image `NAME.jpg` (any common format) has a caption
///   file `NAME.txt` beside it, one caption per non-empty line; images
///   without one are skipped. Sub-directories are searched too.
///
/// Pairs are returned in file order (TSV) or sorted by path (directory).
pub fn read_image_captions(path: &Path) -> Result<Vec<ImageCaption>> {
    let pairs = if path.is_dir() {
        let mut images = Vec::new();
        collect_images(path, &mut images)?;
        images.sort();
        let mut pairs = Vec::new();
        for image in images {
            let txt = image.with_extension("txt");
            let Ok(text) = std::fs::read_to_string(&txt) else {
                continue;
            };
            for caption in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
                pairs.push(ImageCaption {
                    image: image.clone(),
                    caption: caption.to_string(),
                });
            }
        }
        pairs
    } else {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let base = path.parent().unwrap_or(Path::new("."));
        let mut pairs = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.strip_suffix('\r').unwrap_or(line);
            if line.trim().is_empty() {
                continue;
            }
            let Some((image, caption)) = line.split_once('\t') else {
                return Err(Error::Invalid(format!(
                    "{}:{}: no tab; each line must be `image path<TAB>caption`",
                    path.display(),
                    i + 1
                )));
            };
            let (image, caption) = (image.trim(), caption.trim());
            if image.is_empty() || caption.is_empty() {
                return Err(Error::Invalid(format!(
                    "{}:{}: an empty image path or caption",
                    path.display(),
                    i + 1
                )));
            }
            pairs.push(ImageCaption {
                image: base.join(image),
                caption: caption.to_string(),
            });
        }
        pairs
    };
    if pairs.is_empty() {
        return Err(Error::Invalid(format!(
            "{} holds no image–caption pairs (expected `image<TAB>caption` lines, or a directory \
             of images with a NAME.txt caption file beside each NAME.jpg)",
            path.display()
        )));
    }
    Ok(pairs)
}

fn collect_images(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    for entry in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let path = entry.map_err(|e| Error::io(dir, e))?.path();
        if path.is_dir() {
            collect_images(&path, out)?;
        } else if path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
        {
            out.push(path);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("altclip-data-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn parallel_tsv_is_read_and_bad_lines_are_named() {
        let dir = scratch("tsv");
        let path = dir.join("p.tsv");
        std::fs::write(&path, "a cat\t一只猫\r\n\n a dog \t一只狗\n").unwrap();
        let pairs = read_parallel_tsv(&path).unwrap();
        assert_eq!(pairs.len(), 2);
        assert_eq!(pairs[1].en, "a dog");
        assert_eq!(pairs[1].other, "一只狗");
        std::fs::write(&path, "a cat\t一只猫\nno tab here\n").unwrap();
        let err = read_parallel_tsv(&path).unwrap_err().to_string();
        assert!(
            err.contains("p.tsv:2") && err.contains("1 tab-separated"),
            "{err}"
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn image_captions_from_tsv_and_directory() {
        let dir = scratch("pairs");
        std::fs::write(dir.join("pairs.tsv"), "a.png\t一只猫\nsub/b.jpg\ta dog\n").unwrap();
        let pairs = read_image_captions(&dir.join("pairs.tsv")).unwrap();
        assert_eq!(pairs[1].image, dir.join("sub/b.jpg"));
        assert_eq!(pairs[0].caption, "一只猫");

        std::fs::create_dir_all(dir.join("imgs/sub")).unwrap();
        for f in ["imgs/x.png", "imgs/sub/y.JPG", "imgs/z.png"] {
            std::fs::write(dir.join(f), b"").unwrap();
        }
        std::fs::write(dir.join("imgs/x.txt"), "one\n\ntwo\n").unwrap();
        std::fs::write(dir.join("imgs/sub/y.txt"), "三").unwrap();
        let pairs = read_image_captions(&dir.join("imgs")).unwrap();
        let got: Vec<(&str, &str)> = pairs
            .iter()
            .map(|p| {
                (
                    p.image.file_name().unwrap().to_str().unwrap(),
                    p.caption.as_str(),
                )
            })
            .collect();
        assert_eq!(got, [("y.JPG", "三"), ("x.png", "one"), ("x.png", "two")]);
        std::fs::remove_dir_all(dir).unwrap();
    }
}
