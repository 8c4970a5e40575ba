//! HEIF stills: telling HEIC (HEVC-coded) and AVIF (AV1-coded) files apart by
//! their `ftyp` brands, and decoding HEIC as pillow-heif does.
//!
//! pillow-heif hands Pillow what libheif decodes: the primary image, with the
//! container's rotation, mirroring and crop applied (its EXIF orientation is
//! then reset, so nothing is rotated twice), RGB, or RGBA when it has alpha.
//! zune-heic is a pure-Rust decoder whose RGB is libheif's byte for byte.

/// Which codec a HEIF file's primary image uses, from its `ftyp` box.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Heif {
    /// HEVC (H.265): `.heic`, what iPhones and most cameras write.
    Hevc,
    /// AV1: `.avif`.
    Av1,
}

/// The codec named by the `ftyp` box at the start of `bytes`, if it is a
/// HEIF still image. The major brand decides; a generic one (`mif1`) is
/// resolved by the compatible brands.
pub(super) fn sniff(bytes: &[u8]) -> Option<Heif> {
    let size = u32::from_be_bytes(bytes.get(..4)?.try_into().ok()?) as usize;
    if bytes.get(4..8)? != b"ftyp" || size < 16 {
        return None;
    }
    let brands = bytes.get(8..size.min(bytes.len()))?;
    // The major brand, then (after the minor version) the compatible ones.
    let mut names = brands
        .get(..4)?
        .chunks_exact(4)
        .chain(brands.get(8..).unwrap_or(&[]).chunks_exact(4));
    let mut generic = false;
    names
        .try_fold((), |(), brand| match brand {
            b"avif" | b"avis" => Err(Heif::Av1),
            b"heic" | b"heix" | b"heim" | b"heis" | b"hevc" | b"hevx" => Err(Heif::Hevc),
            b"mif1" | b"msf1" | b"miaf" => {
                generic = true;
                Ok(())
            }
            _ => Ok(()),
        })
        .err()
        // A plain `mif1` file names no codec; libheif then looks at the item, and
        // almost every such file in the wild is HEVC.
        .or(generic.then_some(Heif::Hevc))
}

/// Pixels decoded from a HEIF still: 8-bit RGB or RGBA, row-major.
pub(super) struct Decoded {
    pub width: u32,
    pub height: u32,
    pub pixels: Vec<u8>,
    pub alpha: bool,
}

/// Longest side of a HEIC canvas, as libheif's default security limit.
#[cfg(feature = "heic")]
const MAX_SIDE: usize = 32768;

/// Decodes a HEIC file's primary image. `check_size(width, height)` runs on
/// the header's dimensions before any pixel is decoded.
#[cfg(feature = "heic")]
pub(super) fn decode_hevc<E>(
    bytes: &[u8],
    check_size: impl Fn(u32, u32) -> Result<(), E>,
) -> Result<Result<Decoded, String>, E> {
    use zune_heic::zune_core::bytestream::ZCursor;
    use zune_heic::zune_core::colorspace::ColorSpace;
    use zune_heic::zune_core::options::DecoderOptions;
    use zune_heic::HeifDecoder;

    let undecodable = |e: zune_heic::HeicErrors| {
        Ok(Err(format!(
            "cannot decode the HEIC image: {e:?} (is the file truncated or corrupt?)"
        )))
    };
    // The pixel limit on the output is ours (checked below). The decoder's
    // side limit bounds the canvas it fills before cropping, which a hostile
    // crop box can make far larger than the output; libheif (and so
    // pillow-heif) refuses sides over 32768 too.
    let options = DecoderOptions::default()
        .hvec_set_use_videotoolbox(false)
        .set_max_width(MAX_SIDE)
        .set_max_height(MAX_SIDE);
    let mut decoder = HeifDecoder::new_with_options(ZCursor::new(bytes), options);
    if let Err(e) = decoder.decode_headers() {
        return undecodable(e);
    }
    let (Some(width), Some(height)) = (decoder.width(), decoder.height()) else {
        return Ok(Err("the HEIC file has no image size".into()));
    };
    let (Ok(width), Ok(height)) = (u32::try_from(width), u32::try_from(height)) else {
        return Ok(Err(format!(
            "the HEIC image is {width}x{height}, too large"
        )));
    };
    check_size(width, height)?;
    let colorspace = decoder.colorspace();
    let pixels = match decoder.decode() {
        Ok(p) => p,
        Err(e) => return undecodable(e),
    };
    let (pixels, alpha) = match colorspace {
        Some(ColorSpace::RGB) => (pixels, false),
        Some(ColorSpace::RGBA) => (pixels, true),
        // libheif's greyscale goes to Pillow as RGB (pillow-heif asks for RGB).
        Some(ColorSpace::Luma) => (pixels.iter().flat_map(|&l| [l, l, l]).collect(), false),
        Some(ColorSpace::LumaA) => (
            pixels
                .chunks_exact(2)
                .flat_map(|p| [p[0], p[0], p[0], p[1]])
                .collect(),
            true,
        ),
        other => {
            return Ok(Err(format!(
                "the HEIC image decodes to {other:?}, which is not read"
            )))
        }
    };
    let expected = width as usize * height as usize * if alpha { 4 } else { 3 };
    if pixels.len() != expected {
        return Ok(Err(format!(
            "the HEIC decoder returned {} bytes for a {width}x{height} image",
            pixels.len()
        )));
    }
    Ok(Ok(Decoded {
        width,
        height,
        pixels,
        alpha,
    }))
}

/// Without the `heic` feature a HEIC file is refused, naming the feature.
#[cfg(not(feature = "heic"))]
pub(super) fn decode_hevc<E>(
    _bytes: &[u8],
    _check_size: impl Fn(u32, u32) -> Result<(), E>,
) -> Result<Result<Decoded, String>, E> {
    Ok(Err(
        "HEIC support was left out of this build (rebuild with the cargo feature `heic`)".into(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ftyp(major: &[u8; 4], compatible: &[&[u8; 4]]) -> Vec<u8> {
        let size = 16 + 4 * compatible.len();
        let mut b = (size as u32).to_be_bytes().to_vec();
        b.extend(b"ftyp");
        b.extend(major);
        b.extend([0; 4]);
        compatible.iter().for_each(|c| b.extend(*c));
        b
    }

    #[test]
    fn brands_name_the_codec() {
        assert_eq!(sniff(&ftyp(b"heic", &[b"mif1"])), Some(Heif::Hevc));
        assert_eq!(sniff(&ftyp(b"avif", &[b"mif1", b"miaf"])), Some(Heif::Av1));
        assert_eq!(sniff(&ftyp(b"mif1", &[b"avif"])), Some(Heif::Av1));
        assert_eq!(sniff(&ftyp(b"mif1", &[b"heic"])), Some(Heif::Hevc));
        assert_eq!(sniff(&ftyp(b"mif1", &[])), Some(Heif::Hevc));
        // An MP4 or QuickTime movie is not a still.
        assert_eq!(sniff(&ftyp(b"isom", &[b"mp41"])), None);
        assert_eq!(sniff(&ftyp(b"qt  ", &[])), None);
        assert_eq!(sniff(b"\x89PNG\r\n\x1a\n"), None);
        assert_eq!(sniff(&[0, 0, 0]), None);
        // A size field past the end of the file reads what is there.
        let mut short = ftyp(b"heic", &[]);
        short[3] = 200;
        assert_eq!(sniff(&short), Some(Heif::Hevc));
    }
}
