//! Image inputs as the Python layer hands them over, and their decoding to
//! pixel values on rayon's workers.

use altclip::preprocess::{max_file_bytes, read_image_file};
use altclip::AltClip;
use image::RgbImage;
use pyo3::pybacked::{PyBackedBytes, PyBackedStr};
use pyo3::FromPyObject;
use rayon::prelude::*;

/// One image: a decoded RGB array `(width, height, bytes)`, an encoded file's
/// bytes, or a path. Python's `bytes` stay borrowed, without a copy.
#[derive(FromPyObject)]
pub enum Item {
    Rgb(u32, u32, PyBackedBytes),
    Encoded(PyBackedBytes),
    Path(PyBackedStr),
}

impl Item {
    fn kind(&self) -> String {
        match self {
            Item::Rgb(w, h, _) => format!("{h}x{w}x3 array"),
            Item::Encoded(_) => "bytes".into(),
            Item::Path(p) => p.to_string(),
        }
    }
}

/// Pixel values per item, in order, or `image I (WHAT): why` per failure,
/// where `I` is the item's index in the caller's list.
pub fn pixel_values(
    clip: &AltClip,
    items: &[Item],
    indices: &[usize],
    max_pixels: u64,
) -> Vec<Result<Vec<f32>, String>> {
    items
        .par_iter()
        .zip(indices)
        .map(|(item, &i)| {
            decode(clip, item, max_pixels)
                .and_then(|img| clip.preprocess(&img))
                .map_err(|e| format!("image {i} ({}): {}", item.kind(), reason(e)))
        })
        .collect()
}

fn decode(clip: &AltClip, item: &Item, max_pixels: u64) -> altclip::Result<RgbImage> {
    match item {
        Item::Path(path) => {
            let bytes = read_image_file(std::path::Path::new(&**path), max_file_bytes(max_pixels))?;
            clip.decode_image(&bytes, path, max_pixels)
        }
        Item::Encoded(bytes) => clip.decode_image(bytes, "bytes", max_pixels),
        Item::Rgb(w, h, bytes) => {
            let invalid = |why: String| altclip::Error::Image {
                input: "array".into(),
                reason: why,
            };
            let pixels = u64::from(*w) * u64::from(*h);
            if pixels == 0 || pixels > max_pixels {
                return Err(invalid(format!(
                    "{w}x{h} pixels: expected between 1 and {max_pixels}"
                )));
            }
            RgbImage::from_raw(*w, *h, bytes.to_vec()).ok_or_else(|| {
                invalid(format!(
                    "{} bytes for {w}x{h} RGB pixels (expected {})",
                    bytes.len(),
                    pixels * 3
                ))
            })
        }
    }
}

/// The engine's message without the input name, which the caller states.
fn reason(e: altclip::Error) -> String {
    match e {
        altclip::Error::Image { reason, .. } => reason,
        other => other.to_string(),
    }
}
