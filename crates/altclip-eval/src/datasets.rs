//! Evaluation datasets on disk: image classification (ImageFolder tree or a
//! `path,label` CSV) and image–caption retrieval (Karpathy JSON,
//! CLIP_benchmark text, COCO captions JSON, or TSV).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use altclip::preprocess::IMAGE_EXTENSIONS;

use crate::error::{Error, Result};

fn is_image(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
}

fn is_hidden(path: &Path) -> bool {
    path.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with('.'))
}

fn sorted_entries(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| Error::io(dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| !is_hidden(p))
        .collect();
    entries.sort();
    Ok(entries)
}

/// Labelled images for zero-shot classification.
#[derive(Debug, Clone, PartialEq)]
pub struct ClassificationDataset {
    /// `(image path, class index)` in dataset order.
    pub samples: Vec<(PathBuf, usize)>,
    /// Class names from the directory names (ImageFolder only).
    pub folder_classes: Option<Vec<String>>,
}

impl ClassificationDataset {
    /// An ImageFolder tree: one sub-directory per class, classes indexed in
    /// sorted directory-name order (as torchvision does), files sorted.
    pub fn image_folder(root: &Path) -> Result<Self> {
        let classes: Vec<PathBuf> = sorted_entries(root)?
            .into_iter()
            .filter(|p| p.is_dir())
            .collect();
        if classes.is_empty() {
            return Err(Error::Dataset {
                path: root.to_path_buf(),
                reason: "no class sub-directories; an ImageFolder dataset is DIR/<class>/<image>"
                    .into(),
            });
        }
        let mut samples = Vec::new();
        for (index, dir) in classes.iter().enumerate() {
            for file in sorted_entries(dir)?
                .into_iter()
                .filter(|p| p.is_file() && is_image(p))
            {
                samples.push((file, index));
            }
        }
        let names = classes
            .iter()
            .map(|p| {
                p.file_name()
                    .unwrap_or_default()
                    .to_string_lossy()
                    .replace('_', " ")
            })
            .collect();
        Ok(Self {
            samples,
            folder_classes: Some(names),
        })
    }

    /// A CSV with a header and rows `path,label`; paths are relative to the
    /// CSV's directory, labels are class indices or exact class names.
    pub fn csv(path: &Path, classnames: &[String]) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let base = path.parent().unwrap_or(Path::new("."));
        let mut samples = Vec::new();
        for (n, line) in text.lines().enumerate().skip(1) {
            let line = line.trim_end_matches('\r');
            if line.trim().is_empty() {
                continue;
            }
            let bad = |reason: String| Error::Line {
                path: path.to_path_buf(),
                line: n + 1,
                reason,
            };
            let (file, label) = line
                .rsplit_once(',')
                .ok_or_else(|| bad("expected `path,label`".into()))?;
            let label = label.trim();
            let index = match label.parse::<usize>() {
                Ok(i) if i < classnames.len() => i,
                Ok(i) => {
                    return Err(bad(format!(
                        "label {i} is out of range: there are {} classes",
                        classnames.len()
                    )))
                }
                Err(_) => classnames.iter().position(|c| c == label).ok_or_else(|| {
                    bad(format!(
                        "label {label:?} is neither a class index nor a class name"
                    ))
                })?,
            };
            samples.push((base.join(file.trim()), index));
        }
        Ok(Self {
            samples,
            folder_classes: None,
        })
    }

    /// Checks that every label has a name in `classnames`.
    pub fn check_classes(&self, classnames: &[String]) -> Result<()> {
        match self.samples.iter().map(|s| s.1).max() {
            Some(max) if max >= classnames.len() => Err(Error::ClassCount {
                classes: max + 1,
                names: classnames.len(),
            }),
            _ => Ok(()),
        }
    }

    /// Evenly spaced samples, at most `limit`, so that a quick look still
    /// covers every class of a sorted dataset.
    pub fn limit(&mut self, limit: usize) {
        let n = self.samples.len();
        if limit < n {
            self.samples = (0..limit)
                .map(|i| self.samples[i * n / limit].clone())
                .collect();
        }
    }
}

/// Images and their captions for retrieval.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RetrievalDataset {
    pub images: Vec<PathBuf>,
    /// Captions per image, in the same order as `images`.
    pub captions: Vec<Vec<String>>,
}

/// Caption file layouts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CaptionFormat {
    /// `{"images":[{"filename","split","sentences":[{"raw"}]}]}` (Karpathy splits).
    KarpathyJson,
    /// CLIP_benchmark's text files: a header line, then `name.jpg,caption`.
    ClipBenchmarkTxt,
    /// COCO captions: `{"images":[{"id","file_name"}],"annotations":[{"image_id","caption"}]}`.
    CocoJson,
    /// `image<TAB>caption` per line, no header.
    Tsv,
}

impl CaptionFormat {
    /// Parses `karpathy-json`, `clip-benchmark-txt`, `coco-json` or `tsv`.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "karpathy-json" => CaptionFormat::KarpathyJson,
            "clip-benchmark-txt" => CaptionFormat::ClipBenchmarkTxt,
            "coco-json" => CaptionFormat::CocoJson,
            "tsv" => CaptionFormat::Tsv,
            _ => return None,
        })
    }

    /// Guesses the format from the file: `.tsv`, `.txt`, or for JSON whether
    /// it has COCO `annotations`.
    pub fn guess(path: &Path, text: &str) -> Option<Self> {
        match path.extension()?.to_str()? {
            "tsv" => Some(CaptionFormat::Tsv),
            "txt" | "csv" => Some(CaptionFormat::ClipBenchmarkTxt),
            "json" if text.contains("\"annotations\"") => Some(CaptionFormat::CocoJson),
            "json" => Some(CaptionFormat::KarpathyJson),
            _ => None,
        }
    }
}

/// Groups `(image name, caption)` pairs by image, in order of first appearance.
fn group(pairs: impl IntoIterator<Item = (String, String)>, images_dir: &Path) -> RetrievalDataset {
    let mut index: HashMap<String, usize> = HashMap::new();
    let mut out = RetrievalDataset::default();
    for (name, caption) in pairs {
        let i = *index.entry(name.clone()).or_insert_with(|| {
            out.images.push(images_dir.join(&name));
            out.captions.push(Vec::new());
            out.images.len() - 1
        });
        out.captions[i].push(caption);
    }
    out
}

/// Loads captions; image names are resolved against `images_dir`. For
/// Karpathy files only images of `split` are kept.
pub fn load_captions(
    path: &Path,
    format: Option<CaptionFormat>,
    images_dir: &Path,
    split: &str,
) -> Result<RetrievalDataset> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let format = format
        .or_else(|| CaptionFormat::guess(path, &text))
        .ok_or_else(|| Error::UnknownCaptionFormat {
            path: path.to_path_buf(),
        })?;
    let bad_json = |e: serde_json::Error| Error::BadJson {
        path: path.to_path_buf(),
        what: "caption file",
        reason: e.to_string(),
    };
    let dataset = match format {
        CaptionFormat::KarpathyJson => {
            group(karpathy_pairs(&text, split).map_err(bad_json)?, images_dir)
        }
        CaptionFormat::CocoJson => coco_dataset(&text, images_dir).map_err(bad_json)?,
        CaptionFormat::ClipBenchmarkTxt => group(
            line_pairs(path, &text, 1, "name.jpg,caption", |line| {
                image_name_end(line).map(|at| (&line[..at], &line[at + 1..]))
            })?,
            images_dir,
        ),
        CaptionFormat::Tsv => group(
            line_pairs(path, &text, 0, "image<TAB>caption", |line| {
                line.split_once('\t')
            })?,
            images_dir,
        ),
    };
    if dataset.images.is_empty() {
        return Err(Error::Dataset {
            path: path.to_path_buf(),
            reason: "no images with captions found".into(),
        });
    }
    Ok(dataset)
}

/// `(image name, caption)` pairs of a Karpathy-split JSON, for images of `split`.
fn karpathy_pairs(text: &str, split: &str) -> serde_json::Result<Vec<(String, String)>> {
    #[derive(serde::Deserialize)]
    struct Sentence {
        raw: String,
    }
    #[derive(serde::Deserialize)]
    struct Image {
        filename: String,
        #[serde(default)]
        filepath: Option<String>,
        #[serde(default)]
        split: Option<String>,
        sentences: Vec<Sentence>,
    }
    #[derive(serde::Deserialize)]
    struct File {
        images: Vec<Image>,
    }
    let file: File = serde_json::from_str(text)?;
    Ok(file
        .images
        .into_iter()
        .filter(|i| i.split.as_deref().is_none_or(|s| s == split))
        .flat_map(|i| {
            let name = match &i.filepath {
                Some(dir) if !dir.is_empty() => format!("{dir}/{}", i.filename),
                _ => i.filename.clone(),
            };
            i.sentences.into_iter().map(move |s| (name.clone(), s.raw))
        })
        .collect())
}

/// The images of a COCO captions JSON that have captions, in file order.
fn coco_dataset(text: &str, images_dir: &Path) -> serde_json::Result<RetrievalDataset> {
    #[derive(serde::Deserialize)]
    struct Image {
        id: u64,
        file_name: String,
    }
    #[derive(serde::Deserialize)]
    struct Annotation {
        image_id: u64,
        caption: String,
    }
    #[derive(serde::Deserialize)]
    struct File {
        images: Vec<Image>,
        annotations: Vec<Annotation>,
    }
    let file: File = serde_json::from_str(text)?;
    let mut by_id: HashMap<u64, Vec<String>> = HashMap::new();
    for a in file.annotations {
        by_id.entry(a.image_id).or_default().push(a.caption);
    }
    let mut out = RetrievalDataset::default();
    for image in file.images {
        if let Some(captions) = by_id.remove(&image.id) {
            out.images.push(images_dir.join(&image.file_name));
            out.captions.push(captions);
        }
    }
    Ok(out)
}

/// `(image name, caption)` per non-blank line after `skip` header lines,
/// split by `split`; a line it cannot split is an error naming `expected`.
fn line_pairs<'a>(
    path: &Path,
    text: &'a str,
    skip: usize,
    expected: &str,
    split: impl Fn(&'a str) -> Option<(&'a str, &'a str)>,
) -> Result<Vec<(String, String)>> {
    let mut pairs = Vec::new();
    for (n, line) in text.lines().enumerate().skip(skip) {
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() {
            continue;
        }
        let (name, caption) = split(line).ok_or_else(|| Error::Line {
            path: path.to_path_buf(),
            line: n + 1,
            reason: format!("expected `{expected}`"),
        })?;
        pairs.push((name.to_string(), caption.to_string()));
    }
    Ok(pairs)
}

/// Byte index of the comma that ends the image name in a CLIP_benchmark line:
/// the first comma right after an image extension (captions may contain
/// commas, and CLIP_benchmark itself splits on `.jpg,`), else the first comma.
fn image_name_end(line: &str) -> Option<usize> {
    let lower = line.to_ascii_lowercase();
    IMAGE_EXTENSIONS
        .iter()
        .filter_map(|ext| lower.find(&format!(".{ext},")).map(|i| i + ext.len() + 1))
        .min()
        .or_else(|| line.find(','))
}

impl RetrievalDataset {
    /// Keeps the first `limit` images and their captions.
    pub fn limit(&mut self, limit: usize) {
        self.images.truncate(limit);
        self.captions.truncate(limit);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clip_benchmark_lines_split_after_the_image_name() {
        let line = "1000092795.jpg,Two young guys, with shaggy hair, look at their hands.";
        let at = image_name_end(line).unwrap();
        assert_eq!(&line[..at], "1000092795.jpg");
        assert_eq!(image_name_end("a.PNG,x,y"), Some(5));
    }

    #[test]
    fn limit_spreads_over_classes() {
        let mut d = ClassificationDataset {
            samples: (0..9)
                .map(|i| (PathBuf::from(format!("{i}.png")), i / 3))
                .collect(),
            folder_classes: None,
        };
        d.limit(3);
        let classes: Vec<usize> = d.samples.iter().map(|s| s.1).collect();
        assert_eq!(classes, vec![0, 1, 2]);
    }
}
