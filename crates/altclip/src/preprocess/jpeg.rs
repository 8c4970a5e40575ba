//! JPEG pixels as Pillow decodes them. Pillow uses libjpeg-turbo with its
//! defaults: the ISLOW integer IDCT, fancy (triangular) chroma upsampling and
//! libjpeg's fixed-point YCbCr→RGB. mozjpeg's decoder is libjpeg-turbo's, built
//! here from vendored source by a C compiler, so its RGB is the same bytes;
//! the `image` crate's decoder differs by a few levels on about a fifth of them.

use image::RgbImage;
use mozjpeg::ColorSpace;

/// Decodes a JPEG to RGB as Pillow and `convert_to_rgb` do. A file that ends
/// before its end-of-image marker is refused, as Pillow refuses it ("image
/// file is truncated"), and so is one whose samples are not 8-bit. Four-component files (CMYK, and Adobe YCCK, which
/// libjpeg turns into CMYK) are read as Pillow reads them, inverted (Adobe's
/// convention, which Pillow always assumes), then converted by [`cmyk_to_rgb`].
/// `check_size(width, height)` runs on the header's dimensions before any
/// pixel is decoded.
pub(super) fn decode<E>(
    bytes: &[u8],
    check_size: impl Fn(u32, u32) -> Result<(), E>,
) -> Result<Result<RgbImage, String>, E> {
    let truncated = || {
        Ok(Err(
            "the JPEG is truncated (no end-of-image marker after its image data)".into(),
        ))
    };
    let Some(header) = read_header(bytes) else {
        return truncated();
    };
    // An 8-bit libjpeg (Pillow's, and ours) cannot read 12- or 16-bit
    // samples; Pillow says "cannot identify image file".
    if let Some(bits @ (0..=7 | 9..)) = header.precision {
        return Ok(Err(format!(
            "the JPEG has {bits}-bit samples; only 8-bit JPEGs can be read (Pillow cannot open them either)"
        )));
    }
    if !has_end_of_image(bytes, &header) {
        return truncated();
    }
    let mut refused = None;
    // libjpeg reports errors by unwinding out of its callbacks; mozjpeg turns
    // most into `io::Error`, and the rest end here.
    let decoded = std::panic::catch_unwind(std::panic::AssertUnwindSafe(
        || -> std::io::Result<Option<RgbImage>> {
            let d = mozjpeg::Decompress::new_mem(bytes)?;
            let (w, h) = (d.width() as u32, d.height() as u32);
            if let Err(e) = check_size(w, h) {
                refused = Some(e);
                return Ok(None);
            }
            let four = matches!(d.color_space(), ColorSpace::JCS_CMYK | ColorSpace::JCS_YCCK);
            let rgb: Vec<u8> = if four {
                let mut started = d.to_colorspace(ColorSpace::JCS_CMYK)?;
                let cmyk: Vec<[u8; 4]> = started.read_scanlines()?;
                started.finish()?;
                cmyk.iter()
                    .flat_map(|p| cmyk_to_rgb(p.map(|v| 255 - v)))
                    .collect()
            } else {
                let mut started = d.rgb()?;
                let pixels: Vec<[u8; 3]> = started.read_scanlines()?;
                started.finish()?;
                pixels.into_flattened()
            };
            Ok(RgbImage::from_raw(w, h, rgb))
        },
    ));
    if let Some(e) = refused {
        return Err(e);
    }
    Ok(match decoded {
        Ok(Ok(Some(img))) => Ok(img),
        Ok(Ok(None)) => Err("the JPEG's size does not match its pixels".into()),
        Ok(Err(e)) => Err(format!("cannot decode the JPEG: {e}")),
        Err(payload) => Err(match panic_message(payload.as_ref()) {
            Some(why) => format!("cannot decode the JPEG: {why}"),
            None => "cannot decode the JPEG (libjpeg gave up on it: corrupt?)".into(),
        }),
    })
}

/// Pillow's `cmyk2rgb` (`Convert.c`): each channel is `nk - nk·c/255` with
/// `nk = 255 - k`, the product rounded as its `MULDIV255` does.
fn cmyk_to_rgb([c, m, y, k]: [u8; 4]) -> [u8; 3] {
    let nk = 255 - k as u32;
    let muldiv255 = |a: u32| {
        let t = a * nk + 128;
        ((t >> 8) + t) >> 8
    };
    [c, m, y].map(|v| (nk - muldiv255(v as u32)) as u8)
}

/// What the markers before the first scan say: the frame's sample precision
/// and where the entropy-coded data begins. `None` when they run past the
/// end of the file or the file is not a JPEG.
struct Header {
    precision: Option<u8>,
    scan_data: usize,
}

/// Walks the segments before the first scan by their lengths (an EXIF
/// thumbnail's markers sit inside its segment and are skipped).
fn read_header(b: &[u8]) -> Option<Header> {
    if b.len() < 4 || b[..2] != [0xFF, 0xD8] {
        return None;
    }
    let (mut i, mut precision) = (2, None);
    loop {
        while b.get(i) == Some(&0xFF) && b.get(i + 1) == Some(&0xFF) {
            i += 1; // fill bytes
        }
        let (Some(&0xFF), Some(&marker)) = (b.get(i), b.get(i + 1)) else {
            return None;
        };
        if matches!(marker, 0x01 | 0xD0..=0xD7) {
            i += 2; // markers without a length
            continue;
        }
        let len = b
            .get(i + 2..i + 4)
            .map(|l| u16::from_be_bytes([l[0], l[1]]) as usize)?;
        // SOF0..SOF15, less DHT (C4), JPG (C8) and DAC (CC).
        if matches!(marker, 0xC0..=0xCF) && !matches!(marker, 0xC4 | 0xC8 | 0xCC) {
            precision = precision.or(b.get(i + 4).copied());
        }
        i += 2 + len;
        if marker == 0xDA {
            return Some(Header {
                precision,
                scan_data: i,
            });
        }
    }
}

/// Whether an end-of-image marker follows the first scan's header: in
/// entropy-coded data a 0xFF byte is always followed by 0x00 or a marker, so
/// `FF D9` there is the end of the image.
fn has_end_of_image(b: &[u8], header: &Header) -> bool {
    b.get(header.scan_data..)
        .is_some_and(|rest| rest.windows(2).any(|w| w == [0xFF, 0xD9]))
}

/// The message libjpeg unwound with, when mozjpeg passed it on.
fn panic_message(payload: &(dyn std::any::Any + Send)) -> Option<&str> {
    payload
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| payload.downcast_ref::<&str>().copied())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_limit(_: u32, _: u32) -> Result<(), ()> {
        Ok(())
    }

    fn jpeg(width: u32, height: u32) -> Vec<u8> {
        let img = RgbImage::from_fn(width, height, |x, y| {
            image::Rgb([x as u8 * 9, y as u8 * 7, 90])
        });
        let mut out = Vec::new();
        image::DynamicImage::ImageRgb8(img)
            .write_to(
                &mut std::io::Cursor::new(&mut out),
                image::ImageFormat::Jpeg,
            )
            .unwrap();
        out
    }

    #[test]
    fn whole_files_decode_and_truncated_ones_are_refused() {
        let whole = jpeg(24, 16);
        let img = decode(&whole, no_limit).unwrap().unwrap();
        assert_eq!(img.dimensions(), (24, 16));
        for cut in [whole.len() - 2, whole.len() / 2, 40] {
            let err = decode(&whole[..cut], no_limit).unwrap().unwrap_err();
            assert!(err.contains("truncated"), "{cut}: {err}");
        }
        // Bytes after the end-of-image marker are ignored, as libjpeg does.
        let mut tail = whole.clone();
        tail.extend_from_slice(b"trailing bytes");
        assert_eq!(decode(&tail, no_limit).unwrap().unwrap(), img);
        let refused = decode(
            &whole,
            |w, h| if w * h > 100 { Err((w, h)) } else { Ok(()) },
        );
        assert_eq!(refused.unwrap_err(), (24, 16));
    }

    #[test]
    fn garbage_after_a_jpeg_header_is_an_error_not_a_crash() {
        let mut bad = jpeg(24, 16);
        let sos = bad.windows(2).position(|w| w == [0xFF, 0xDA]).unwrap();
        for b in &mut bad[20..sos] {
            *b = 0x5A; // the tables, overwritten
        }
        assert!(decode(&bad, no_limit).unwrap().is_err());
    }
}
