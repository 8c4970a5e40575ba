//! Sharded bulk embedding in clip-retrieval's output layout, so that any
//! scheduler (a Slurm array, a Kubernetes indexed job) can run the shards
//! and autofaiss, Milvus or LAION tooling can ingest them:
//!
//! ```text
//! OUT/img_emb/img_emb_{i}.npy        float16 (or float32) rows, L2-normalised
//! OUT/text_emb/text_emb_{i}.npy      the same for captions, when there are any
//! OUT/metadata/metadata_{i}.parquet  image_path [, caption], one row per embedding
//! ```
//!
//! `{i}` is zero-padded to the digits of the shard count, as clip-retrieval
//! does. The parquet file is written last, so its presence marks a complete
//! shard: a re-run skips complete shards and redoes an interrupted one.

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use altclip::preprocess::{max_file_bytes, read_image_file};
use altclip::AltClip;
use image::RgbImage;
use parquet::data_type::{ByteArray, ByteArrayType};
use parquet::file::properties::WriterProperties;
use parquet::file::writer::SerializedFileWriter;
use parquet::schema::parser::parse_message_type;
use serde::Serialize;

use crate::error::{Error, Result};
use crate::files::{io_err, write_atomically, write_bytes_atomically};
use crate::pipeline::pipelined;
use crate::walk::find_images;

/// One image to embed, with its caption if the input has one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    pub image: PathBuf,
    pub caption: Option<String>,
}

/// The items of a folder (images found recursively, hidden entries skipped,
/// sorted; a `name.txt` beside `name.jpg` is its caption, as in
/// clip-retrieval's files format) or of a list file (one image path per
/// line, optionally followed by a TAB and a caption; relative paths are
/// relative to the list's folder; blank lines and `#` comments skipped).
pub fn read_input(input: &Path) -> Result<Vec<Item>> {
    if input.is_dir() {
        return find_images(&[input.to_path_buf()], &[])
            .into_iter()
            .filter(|f| f.is_file)
            .map(|f| {
                let txt = f.path.with_extension("txt");
                let caption = match std::fs::read_to_string(&txt) {
                    Ok(t) => Some(t.trim().to_string()),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
                    Err(e) => return Err(io_err(&txt, e)),
                };
                Ok(Item {
                    image: f.path,
                    caption,
                })
            })
            .collect();
    }
    let text = std::fs::read_to_string(input).map_err(|e| io_err(input, e))?;
    let base = input.parent().unwrap_or(Path::new("."));
    Ok(text
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|line| {
            let (path, caption) = match line.split_once('\t') {
                Some((p, c)) => (p, Some(c.trim().to_string())),
                None => (line, None),
            };
            Item {
                image: base.join(path.trim()),
                caption,
            }
        })
        .collect())
}

/// Shard `index` of `count` (written `i/N`, counting from 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub index: usize,
    pub count: usize,
}

impl std::str::FromStr for Shard {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let bad = || format!("{s:?}: expected I/N with 0 <= I < N, e.g. 0/8");
        let (i, n) = s.split_once('/').ok_or_else(bad)?;
        let (index, count) = (
            i.trim().parse().map_err(|_| bad())?,
            n.trim().parse().map_err(|_| bad())?,
        );
        if index >= count {
            return Err(bad());
        }
        Ok(Self { index, count })
    }
}

impl Shard {
    /// The contiguous slice of `len` items this shard embeds.
    pub fn range(&self, len: usize) -> Range<usize> {
        (self.index * len / self.count)..((self.index + 1) * len / self.count)
    }

    /// The file-name suffix: the index zero-padded to the digits of the count.
    pub fn suffix(&self) -> String {
        let digits = self.count.ilog10() as usize + 1;
        format!("{:0digits$}", self.index)
    }
}

/// How a shard is embedded and written.
#[derive(Debug, Clone)]
pub struct ExportOptions {
    pub out: PathBuf,
    pub shard: Shard,
    pub batch_size: usize,
    pub max_pixels: u64,
    /// Write float32 rather than clip-retrieval's float16.
    pub f32: bool,
    /// Redo a shard whose files are already complete.
    pub overwrite: bool,
}

/// An image that could not be embedded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Failure {
    pub path: String,
    pub reason: String,
}

/// What a shard run did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ExportReport {
    pub shard: String,
    /// Items in this shard.
    pub items: usize,
    /// Rows written (items minus failures).
    pub embedded: usize,
    /// The shard was complete already and was left as it was.
    pub already_complete: bool,
    pub failed: Vec<Failure>,
    /// Files written.
    pub files: Vec<PathBuf>,
}

/// The metadata file whose presence marks shard `shard` of `out` complete.
pub fn metadata_path(out: &Path, shard: Shard) -> PathBuf {
    out.join("metadata")
        .join(format!("metadata_{}.parquet", shard.suffix()))
}

/// The report of a shard that is complete already (its metadata file
/// exists and `opts.overwrite` is off), or `None` if it needs a run.
pub fn already_complete(items: usize, opts: &ExportOptions) -> Option<ExportReport> {
    (metadata_path(&opts.out, opts.shard).is_file() && !opts.overwrite).then(|| ExportReport {
        shard: format!("{}/{}", opts.shard.index, opts.shard.count),
        items: opts.shard.range(items).len(),
        already_complete: true,
        ..Default::default()
    })
}

/// Embeds shard `opts.shard` of `items` and writes its files, unless it is
/// [`already_complete`]; `on_progress(done, total)` counts images.
pub fn export_shard(
    clip: &AltClip,
    items: &[Item],
    opts: &ExportOptions,
    on_progress: &mut dyn FnMut(usize, usize),
) -> Result<ExportReport> {
    if let Some(report) = already_complete(items.len(), opts) {
        return Ok(report);
    }
    let shard = &items[opts.shard.range(items.len())];
    let suffix = opts.shard.suffix();
    let mut report = ExportReport {
        shard: format!("{}/{}", opts.shard.index, opts.shard.count),
        items: shard.len(),
        ..Default::default()
    };
    let meta_path = metadata_path(&opts.out, opts.shard);

    let total = shard.len();
    on_progress(0, total);
    let max_pixels = opts.max_pixels;
    let load = |item: &Item| -> std::result::Result<RgbImage, String> {
        let bytes =
            read_image_file(&item.image, max_file_bytes(max_pixels)).map_err(|e| e.to_string())?;
        clip.decode_image(&bytes, &item.image.display().to_string(), max_pixels)
            .map_err(|e| e.to_string())
    };
    let mut kept: Vec<&Item> = Vec::new();
    let mut image_rows: Vec<Vec<f32>> = Vec::new();
    let mut done = 0;
    pipelined(
        shard.iter().collect(),
        opts.batch_size,
        |item| (item, load(item)),
        |batch: Vec<(&Item, std::result::Result<RgbImage, String>)>| -> Result<()> {
            done += batch.len();
            let mut images = Vec::new();
            for (item, loaded) in batch {
                match loaded {
                    Ok(img) => {
                        kept.push(item);
                        images.push(img);
                    }
                    Err(reason) => report.failed.push(Failure {
                        path: item.image.display().to_string(),
                        reason,
                    }),
                }
            }
            if !images.is_empty() {
                image_rows.extend(clip.embed_images(&images)?);
            }
            on_progress(done, total);
            Ok(())
        },
    )?;
    report.embedded = kept.len();
    // Like clip-retrieval, an empty partition writes no files: a 0-row .npy
    // beside a caption-less parquet breaks readers such as embedding_reader.
    if kept.is_empty() {
        return Ok(report);
    }

    let dim = clip.embedding_dim();
    let dirs = ["img_emb", "text_emb", "metadata"].map(|d| opts.out.join(d));
    let captions: Option<Vec<&str>> = kept
        .iter()
        .map(|i| i.caption.as_deref())
        .collect::<Option<_>>()
        .filter(|c: &Vec<&str>| !c.is_empty());
    let img_path = dirs[0].join(format!("img_emb_{suffix}.npy"));
    create_dir(&dirs[0])?;
    write_npy(&img_path, &image_rows, dim, opts.f32)?;
    report.files.push(img_path);
    if let Some(captions) = &captions {
        let mut text_rows = Vec::with_capacity(captions.len());
        for chunk in captions.chunks(opts.batch_size.max(1)) {
            text_rows.extend(clip.embed_texts(chunk)?);
        }
        let text_path = dirs[1].join(format!("text_emb_{suffix}.npy"));
        create_dir(&dirs[1])?;
        write_npy(&text_path, &text_rows, dim, opts.f32)?;
        report.files.push(text_path);
    }
    let paths: Vec<String> = kept.iter().map(|i| i.image.display().to_string()).collect();
    let mut columns = vec![("image_path", paths)];
    if let Some(captions) = captions {
        columns.push(("caption", captions.iter().map(|c| c.to_string()).collect()));
    }
    create_dir(&dirs[2])?;
    write_parquet(&meta_path, &columns)?;
    report.files.push(meta_path);
    Ok(report)
}

fn create_dir(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| io_err(dir, e))
}

/// A NumPy `.npy` (format 1.0) file of `rows`, as float16 or float32.
pub fn write_npy(path: &Path, rows: &[Vec<f32>], dim: usize, f32: bool) -> Result<()> {
    let descr = if f32 { "<f4" } else { "<f2" };
    let mut header = format!(
        "{{'descr': '{descr}', 'fortran_order': False, 'shape': ({}, {dim}), }}",
        rows.len()
    );
    // Magic (6) + version (2) + length (2) + header + newline, padded to 64.
    let unpadded = 10 + header.len() + 1;
    header.push_str(&" ".repeat(unpadded.next_multiple_of(64) - unpadded));
    header.push('\n');
    let mut bytes = Vec::with_capacity(10 + header.len() + rows.len() * dim * 4);
    bytes.extend_from_slice(b"\x93NUMPY\x01\x00");
    bytes.extend_from_slice(&(header.len() as u16).to_le_bytes());
    bytes.extend_from_slice(header.as_bytes());
    for row in rows {
        if row.len() != dim {
            return Err(Error::Invalid(format!(
                "{}: a row has {} values, expected {dim}",
                path.display(),
                row.len()
            )));
        }
        for &x in row {
            if f32 {
                bytes.extend_from_slice(&x.to_le_bytes());
            } else {
                bytes.extend_from_slice(&half::f16::from_f32(x).to_le_bytes());
            }
        }
    }
    write_bytes_atomically(path, &bytes)
}

/// A parquet file of UTF-8 string columns of equal length.
pub fn write_parquet(path: &Path, columns: &[(&str, Vec<String>)]) -> Result<()> {
    let fail = |e: parquet::errors::ParquetError| {
        Error::Invalid(format!("{}: cannot write parquet: {e}", path.display()))
    };
    let fields: String = columns
        .iter()
        .map(|(name, _)| format!("REQUIRED BYTE_ARRAY {name} (UTF8); "))
        .collect();
    let schema =
        Arc::new(parse_message_type(&format!("message schema {{ {fields}}}")).map_err(fail)?);
    write_atomically(path, |tmp| {
        let file = std::fs::File::create(tmp).map_err(|e| io_err(tmp, e))?;
        let props = Arc::new(
            WriterProperties::builder()
                .set_compression(parquet::basic::Compression::SNAPPY)
                .build(),
        );
        let mut writer = SerializedFileWriter::new(file, schema, props).map_err(fail)?;
        let mut group = writer.next_row_group().map_err(fail)?;
        let mut values = columns.iter();
        while let Some(mut column) = group.next_column().map_err(fail)? {
            let (_, strings) = values.next().expect("one value list per schema column");
            let data: Vec<ByteArray> = strings
                .iter()
                .map(|s| ByteArray::from(s.as_str()))
                .collect();
            column
                .typed::<ByteArrayType>()
                .write_batch(&data, None, None)
                .map_err(fail)?;
            column.close().map_err(fail)?;
        }
        group.close().map_err(fail)?;
        writer.close().map_err(fail)?;
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_partition_the_items_and_pad_like_clip_retrieval() {
        let shards: Vec<Shard> = (0..3).map(|i| format!("{i}/3").parse().unwrap()).collect();
        let ranges: Vec<Range<usize>> = shards.iter().map(|s| s.range(10)).collect();
        assert_eq!(ranges, vec![0..3, 3..6, 6..10]);
        assert_eq!("7/12".parse::<Shard>().unwrap().suffix(), "07");
        assert_eq!("0/1".parse::<Shard>().unwrap().suffix(), "0");
        assert_eq!("99/100".parse::<Shard>().unwrap().suffix(), "099");
        for bad in ["3/3", "1", "a/2", "-1/2"] {
            assert!(bad.parse::<Shard>().is_err(), "{bad}");
        }
    }

    #[test]
    fn npy_header_is_aligned_and_describes_the_data() {
        let dir = std::env::temp_dir().join(format!("altclip-npy-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("a.npy");
        write_npy(
            &path,
            &[vec![1.0, -2.0, 0.5], vec![0.0, 3.0, 1.0]],
            3,
            false,
        )
        .unwrap();
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(&bytes[..8], b"\x93NUMPY\x01\x00");
        let hlen = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
        assert_eq!((10 + hlen) % 64, 0);
        let header = std::str::from_utf8(&bytes[10..10 + hlen]).unwrap();
        assert!(header.starts_with("{'descr': '<f2', 'fortran_order': False, 'shape': (2, 3), }"));
        assert!(header.ends_with('\n'));
        let data = &bytes[10 + hlen..];
        assert_eq!(data.len(), 2 * 3 * 2);
        assert_eq!(half::f16::from_le_bytes([data[2], data[3]]).to_f32(), -2.0);
        std::fs::remove_dir_all(dir).unwrap();
    }
}
