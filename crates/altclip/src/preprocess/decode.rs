//! Decoding image files into the RGB image the preprocessor starts from:
//! format sniffing, a pixel limit checked before the full frame is decoded,
//! EXIF orientation, and transformers' RGB conversion.

use std::io::Cursor;
use std::path::Path;

use image::{DynamicImage, ImageDecoder, ImageReader, RgbImage, RgbaImage};

use crate::error::{Error, Result};

/// File extensions of the image formats the decoder reads, lower case.
pub const IMAGE_EXTENSIONS: &[&str] = &["jpg", "jpeg", "png", "webp", "gif", "bmp", "tif", "tiff"];

/// Images above this many pixels are refused unless the caller raises the limit.
pub const DEFAULT_MAX_PIXELS: u64 = 100_000_000;

/// Reads and decodes an image file. See [`decode_rgb`].
pub fn open_rgb(path: &Path, max_pixels: u64) -> Result<RgbImage> {
    let bytes = std::fs::read(path).map_err(|e| Error::Image {
        input: path.display().to_string(),
        reason: format!("cannot read file: {e}"),
    })?;
    decode_rgb(&bytes, &path.display().to_string(), max_pixels)
}

/// Decodes PNG, JPEG, WebP, GIF (first frame), BMP or TIFF bytes into RGB.
/// The header's dimensions are checked against `max_pixels` before any pixel
/// data is decoded; EXIF orientation is applied as `ImageOps.exif_transpose`
/// does, then non-RGB images are converted as [`to_rgb`] describes.
/// `name` is only used in error messages. A panic inside a decoder (a
/// hostile file can trigger one) is an error naming the input, so no caller
/// has to guard against it.
pub fn decode_rgb(bytes: &[u8], name: &str, max_pixels: u64) -> Result<RgbImage> {
    std::panic::catch_unwind(|| decode_unguarded(bytes, name, max_pixels)).unwrap_or_else(|_| {
        Err(Error::Image {
            input: name.to_string(),
            reason: "the image decoder crashed on this input".to_string(),
        })
    })
}

fn decode_unguarded(bytes: &[u8], name: &str, max_pixels: u64) -> Result<RgbImage> {
    let fail = |reason: String| Error::Image {
        input: name.to_string(),
        reason,
    };
    let undecodable = |e: &image::ImageError| {
        fail(format!(
            "cannot decode: {e} (is the file truncated or corrupt?)"
        ))
    };
    let mut reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| fail(e.to_string()))?;
    if reader.format().is_none() {
        return Err(fail(
            "not a recognised image format (expected PNG, JPEG, WebP, GIF, BMP or TIFF)".into(),
        ));
    }
    // Our own pixel limit is the policy; the crate's allocation limit would
    // otherwise refuse large images the user explicitly allowed.
    reader.no_limits();
    let mut decoder = reader.into_decoder().map_err(|e| {
        fail(format!(
            "cannot decode: {e} (is the file truncated or corrupt?)"
        ))
    })?;
    let (width, height) = decoder.dimensions();
    let pixels = width as u64 * height as u64;
    if pixels > max_pixels {
        return Err(Error::TooManyPixels {
            input: name.to_string(),
            width,
            height,
            pixels,
            limit: max_pixels,
        });
    }
    let orientation = decoder.orientation().ok();
    let mut img = DynamicImage::from_decoder(decoder).map_err(|e| undecodable(&e))?;
    if let Some(o) = orientation {
        img.apply_orientation(o);
    }
    if img.width() == 0 || img.height() == 0 {
        return Err(fail("image has no pixels".into()));
    }
    Ok(to_rgb(img))
}

/// transformers' `convert_to_rgb`: RGB stays as it is; every other mode goes
/// to RGBA and is alpha-composited over opaque white with Pillow's integer
/// arithmetic (`Image.alpha_composite`), then the alpha is dropped.
pub fn to_rgb(img: DynamicImage) -> RgbImage {
    match img {
        DynamicImage::ImageRgb8(rgb) => rgb,
        DynamicImage::ImageLuma8(gray) => DynamicImage::ImageLuma8(gray).to_rgb8(),
        other => composite_over_white(&other.to_rgba8()),
    }
}

/// Pillow's `AlphaComposite.c` with an opaque white destination.
fn composite_over_white(src: &RgbaImage) -> RgbImage {
    const PRECISION_BITS: u32 = 7;
    let shift_div_255 = |a: u32| ((a >> 8) + a) >> 8;
    let mut out = RgbImage::new(src.width(), src.height());
    for (o, p) in out.pixels_mut().zip(src.pixels()) {
        let [r, g, b, a] = p.0.map(u32::from);
        if a == 0 {
            o.0 = [255, 255, 255];
            continue;
        }
        let blend = 255 * (255 - a);
        let outa255 = a * 255 + blend;
        let coef1 = a * 255 * 255 * (1 << PRECISION_BITS) / outa255;
        let coef2 = 255 * (1 << PRECISION_BITS) - coef1;
        let mix = |s: u32| {
            let t = s * coef1 + 255 * coef2;
            (shift_div_255(t + (0x80 << PRECISION_BITS)) >> PRECISION_BITS) as u8
        };
        o.0 = [mix(r), mix(g), mix(b)];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opaque_rgba_is_unchanged_and_transparent_becomes_white() {
        let mut src = RgbaImage::new(2, 1);
        src.put_pixel(0, 0, image::Rgba([10, 20, 30, 255]));
        src.put_pixel(1, 0, image::Rgba([10, 20, 30, 0]));
        let out = composite_over_white(&src);
        assert_eq!(out.get_pixel(0, 0).0, [10, 20, 30]);
        assert_eq!(out.get_pixel(1, 0).0, [255, 255, 255]);
    }

    #[test]
    fn garbage_is_an_error_naming_the_input() {
        let err = decode_rgb(b"definitely not an image", "notes.txt", DEFAULT_MAX_PIXELS)
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("notes.txt:"), "{err}");
    }

    #[test]
    fn pixel_limit_is_checked_before_decoding() {
        let img = RgbImage::new(40, 30);
        let mut png = Vec::new();
        DynamicImage::ImageRgb8(img)
            .write_to(&mut Cursor::new(&mut png), image::ImageFormat::Png)
            .unwrap();
        let err = decode_rgb(&png, "big.png", 1000).unwrap_err();
        assert!(
            matches!(err, Error::TooManyPixels { pixels: 1200, .. }),
            "{err}"
        );
        assert!(decode_rgb(&png, "big.png", 1200).is_ok());
    }
}
