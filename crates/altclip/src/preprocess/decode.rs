//! Decoding image files into the RGB image the preprocessor starts from:
//! format sniffing, a pixel limit checked before the full frame is decoded,
//! EXIF orientation, and transformers' RGB conversion.

use std::fs::File;
use std::io::{Cursor, Read};
use std::path::Path;
use std::time::Duration;

use image::{DynamicImage, ImageDecoder, ImageFormat, ImageReader, Limits, RgbImage, RgbaImage};

use super::heif::Heif;
use crate::error::{Error, Result};

/// File extensions of the image formats the decoder reads, lower case.
pub const IMAGE_EXTENSIONS: &[&str] = &[
    "jpg", "jpeg", "png", "webp", "gif", "bmp", "tif", "tiff", "heic", "heif", "hif", "avif",
];

/// Images above this many pixels are refused unless the caller raises the limit.
pub const DEFAULT_MAX_PIXELS: u64 = 100_000_000;

/// How long [`read_image_file`] waits for the first byte from a FIFO or other
/// stream: `<(cmd)` starts writing at once, a FIFO nobody opens never does.
pub const STREAM_WAIT: Duration = Duration::from_secs(60);

/// Most bytes an image file may have at `max_pixels`: four per pixel (a
/// compressed image is smaller than its 8-bit RGBA pixels) plus 16 MiB of
/// metadata, so a small image with a huge tail is never read whole.
pub fn max_file_bytes(max_pixels: u64) -> u64 {
    max_pixels.saturating_mul(4).saturating_add(16 << 20)
}

/// Most bytes a decoder may allocate at `max_pixels`: 16-bit RGBA output, plus
/// 64 MiB of working memory. A frame larger than its GIF's screen, or a huge
/// PNG chunk, is refused by this rather than allocated.
fn max_decode_bytes(max_pixels: u64) -> u64 {
    max_pixels.saturating_mul(8).saturating_add(64 << 20)
}

/// Reads and decodes an image file of at most [`max_file_bytes`]`(max_pixels)`
/// bytes. See [`read_image_file`] and [`decode_rgb`].
pub fn open_rgb(path: &Path, max_pixels: u64) -> Result<RgbImage> {
    let bytes = read_image_file(path, max_file_bytes(max_pixels))?;
    decode_rgb(&bytes, &path.display().to_string(), max_pixels)
}

/// Reads a file of at most `max_bytes`, refusing a larger one before reading
/// it. A FIFO, pipe or device is read as it streams, up to the same limit, and
/// fails if no data arrives within [`STREAM_WAIT`].
pub fn read_image_file(path: &Path, max_bytes: u64) -> Result<Vec<u8>> {
    read_bounded(path, max_bytes, STREAM_WAIT)
}

fn read_bounded(path: &Path, max_bytes: u64, wait: Duration) -> Result<Vec<u8>> {
    let fail = |reason: String| Error::Image {
        input: path.display().to_string(),
        reason,
    };
    let meta = std::fs::metadata(path).map_err(|e| fail(format!("cannot read file: {e}")))?;
    if meta.is_dir() {
        return Err(fail("is a directory, not an image file".into()));
    }
    if meta.is_file() && meta.len() > max_bytes {
        return Err(fail(format!(
            "file is {} bytes, over the limit of {max_bytes} bytes for an image of the allowed pixel count",
            meta.len()
        )));
    }
    let file = open_stream(path, !meta.is_file(), wait).map_err(|e| fail(e.to_string()))?;
    let mut bytes = Vec::new();
    file.take(max_bytes.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(|e| fail(format!("cannot read file: {e}")))?;
    if bytes.len() as u64 > max_bytes {
        return Err(fail(format!(
            "more than {max_bytes} bytes arrived, over the limit for an image of the allowed pixel count"
        )));
    }
    Ok(bytes)
}

/// Opens `path`; a stream (`!regular`) is opened without blocking and then
/// waited on for at most `wait`, since opening a FIFO blocks until a writer
/// comes, which may be never.
#[cfg(unix)]
fn open_stream(path: &Path, stream: bool, wait: Duration) -> std::io::Result<File> {
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::OpenOptionsExt;
    if !stream {
        return File::open(path);
    }
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)?;
    let fd = file.as_raw_fd();
    let mut poll = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    let ms = wait.as_millis().min(i32::MAX as u128) as i32;
    loop {
        // SAFETY: one valid pollfd for a descriptor `file` owns.
        let ready = unsafe { libc::poll(&mut poll, 1, ms) };
        if ready > 0 {
            break;
        }
        if ready == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!(
                    "no data arrived within {} s (a FIFO that nobody writes to?)",
                    wait.as_secs_f64()
                ),
            ));
        }
        let err = std::io::Error::last_os_error();
        if err.kind() != std::io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
    // Back to blocking reads for the rest of the stream.
    // SAFETY: fcntl on a descriptor `file` owns.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        if flags < 0 || libc::fcntl(fd, libc::F_SETFL, flags & !libc::O_NONBLOCK) < 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(file)
}

#[cfg(not(unix))]
fn open_stream(path: &Path, _stream: bool, _wait: Duration) -> std::io::Result<File> {
    File::open(path)
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
    if let Some(kind) = super::heif::sniff(bytes) {
        return decode_heif(bytes, kind, name, max_pixels);
    }
    let mut reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| fail(e.to_string()))?;
    let reader_format = reader.format();
    if reader_format.is_none() {
        return Err(fail(
            "not a recognised image format (expected PNG, JPEG, WebP, GIF, BMP, TIFF, HEIC or AVIF)"
                .into(),
        ));
    }
    if reader_format == Some(ImageFormat::Jpeg) {
        let rgb = super::jpeg::decode(bytes, |width, height| {
            check_pixels(name, width, height, max_pixels)
        })?
        .map_err(&fail)?;
        // The image crate reads EXIF (it may not parse every JPEG: then none).
        let orientation = reader
            .into_decoder()
            .ok()
            .and_then(|mut d| d.orientation().ok());
        return finish(DynamicImage::ImageRgb8(rgb), orientation, &fail);
    }
    // Our pixel limit is the policy; the decoders' allocations follow from it
    // (the crate's fixed default would refuse large images a user allowed).
    let mut limits = Limits::no_limits();
    limits.max_alloc = Some(max_decode_bytes(max_pixels));
    reader.limits(limits);
    let mut decoder = reader.into_decoder().map_err(|e| {
        fail(format!(
            "cannot decode: {e} (is the file truncated or corrupt?)"
        ))
    })?;
    let (width, height) = decoder.dimensions();
    check_pixels(name, width, height, max_pixels)?;
    let orientation = decoder.orientation().ok();
    let img = DynamicImage::from_decoder(decoder).map_err(|e| match e {
        image::ImageError::Limits(_) => fail(format!(
            "decoding would need more than {} bytes, too many for a {width}x{height} image \
             (a frame larger than the image, or a huge chunk?)",
            max_decode_bytes(max_pixels)
        )),
        e => undecodable(&e),
    })?;
    finish(img, orientation, &fail)
}

/// A HEIC or AVIF still as Pillow opens it with pillow-heif or its AVIF
/// plugin: the container's rotation is already applied, so EXIF orientation
/// is not applied again.
fn decode_heif(bytes: &[u8], kind: Heif, name: &str, max_pixels: u64) -> Result<RgbImage> {
    let fail = |reason: String| Error::Image {
        input: name.to_string(),
        reason,
    };
    let check_size = |width, height| check_pixels(name, width, height, max_pixels);
    let decoded = match kind {
        Heif::Hevc => super::heif::decode_hevc(bytes, check_size)?,
        Heif::Av1 => decode_av1(bytes, check_size)?,
    }
    .map_err(&fail)?;
    let img = if decoded.alpha {
        RgbaImage::from_raw(decoded.width, decoded.height, decoded.pixels).map(DynamicImage::from)
    } else {
        RgbImage::from_raw(decoded.width, decoded.height, decoded.pixels).map(DynamicImage::from)
    }
    .ok_or_else(|| fail("the decoder returned too few pixels for the image's size".into()))?;
    finish(img, None, &fail)
}

#[cfg(feature = "avif")]
use super::avif::decode as decode_av1;

/// Without the `avif` feature an AVIF file is refused, naming the feature.
#[cfg(not(feature = "avif"))]
fn decode_av1<E>(
    _bytes: &[u8],
    _check_size: impl Fn(u32, u32) -> std::result::Result<(), E>,
) -> std::result::Result<std::result::Result<super::heif::Decoded, String>, E> {
    Ok(Err(
        "AVIF support was left out of this build (rebuild with the cargo feature `avif`)".into(),
    ))
}

/// Refuses a `width`×`height` image over `max_pixels`, before decoding it.
fn check_pixels(name: &str, width: u32, height: u32, max_pixels: u64) -> Result<()> {
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
    Ok(())
}

/// EXIF orientation, then the RGB conversion.
fn finish(
    mut img: DynamicImage,
    orientation: Option<image::metadata::Orientation>,
    fail: &dyn Fn(String) -> Error,
) -> Result<RgbImage> {
    if let Some(o) = orientation {
        img.apply_orientation(o);
    }
    if img.width() == 0 || img.height() == 0 {
        return Err(fail("image has no pixels".into()));
    }
    Ok(to_rgb(img))
}

/// transformers' `convert_to_rgb` on the mode Pillow opens the file in: RGB
/// stays as it is; every other mode goes to RGBA and is alpha-composited over
/// opaque white with Pillow's integer arithmetic (`Image.alpha_composite`),
/// then the alpha is dropped.
///
/// 16-bit samples follow Pillow's PNG reader, not a rescale: 16-bit RGB(A)
/// and grey+alpha are read as 8-bit from each sample's high byte (grey+alpha
/// as RGBA), and 16-bit grey is mode `I;16`, whose conversion to RGBA clips
/// at 255.
pub fn to_rgb(img: DynamicImage) -> RgbImage {
    let high = |v: u16| (v >> 8) as u8;
    match img {
        DynamicImage::ImageRgb8(rgb) => rgb,
        DynamicImage::ImageLuma8(gray) => DynamicImage::ImageLuma8(gray).to_rgb8(),
        DynamicImage::ImageRgb16(rgb) => RgbImage::from_fn(rgb.width(), rgb.height(), |x, y| {
            image::Rgb(rgb.get_pixel(x, y).0.map(high))
        }),
        DynamicImage::ImageRgba16(rgba) => {
            composite_over_white(&RgbaImage::from_fn(rgba.width(), rgba.height(), |x, y| {
                image::Rgba(rgba.get_pixel(x, y).0.map(high))
            }))
        }
        DynamicImage::ImageLumaA16(la) => {
            composite_over_white(&RgbaImage::from_fn(la.width(), la.height(), |x, y| {
                let [l, a] = la.get_pixel(x, y).0.map(high);
                image::Rgba([l, l, l, a])
            }))
        }
        DynamicImage::ImageLuma16(gray) => {
            RgbImage::from_fn(gray.width(), gray.height(), |x, y| {
                let l = gray.get_pixel(x, y).0[0].min(255) as u8;
                image::Rgb([l, l, l])
            })
        }
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

    /// A GIF whose 320x240 screen holds one 65535x65535 frame.
    fn gif_with_a_huge_frame() -> Vec<u8> {
        let mut gif = b"GIF89a".to_vec();
        gif.extend([64, 1, 240, 0, 0, 0, 0]); // screen 320x240, no global palette
        gif.extend([0x2c, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0x80]); // frame, 2-colour palette
        gif.extend([0, 0, 0, 255, 255, 255]);
        gif.extend([2, 2, 0x4c, 0x01, 0, 0x3b]); // LZW data, trailer
        gif
    }

    #[test]
    fn a_frame_larger_than_its_screen_is_refused_not_allocated() {
        let err = decode_rgb(&gif_with_a_huge_frame(), "huge.gif", DEFAULT_MAX_PIXELS)
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("huge.gif:") && err.contains("decoding would need more than"),
            "{err}"
        );
    }

    fn temp_dir(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("altclip-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn files_over_the_byte_limit_are_refused_before_reading() {
        let dir = temp_dir("byte-limit");
        let path = dir.join("tail.png");
        std::fs::write(&path, vec![0u8; 4096]).unwrap();
        let err = read_image_file(&path, 1000).unwrap_err().to_string();
        assert!(
            err.contains("tail.png") && err.contains("file is 4096 bytes"),
            "{err}"
        );
        assert_eq!(read_image_file(&path, 4096).unwrap().len(), 4096);
        assert!(max_file_bytes(DEFAULT_MAX_PIXELS) < 1 << 30);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[cfg(unix)]
    #[test]
    fn a_fifo_without_a_writer_times_out_and_one_with_a_writer_is_read() {
        use std::ffi::CString;
        use std::os::unix::ffi::OsStrExt;
        let dir = temp_dir("fifo");
        let path = dir.join("in.png");
        let c = CString::new(path.as_os_str().as_bytes()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let start = std::time::Instant::now();
        let err = read_bounded(&path, 1 << 20, Duration::from_millis(200))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("in.png") && err.contains("no data arrived"),
            "{err}"
        );
        assert!(start.elapsed() < Duration::from_secs(10));

        let writer_path = path.clone();
        let writer = std::thread::spawn(move || std::fs::write(writer_path, b"0123456789"));
        let got = read_bounded(&path, 1 << 20, Duration::from_secs(30)).unwrap();
        writer.join().unwrap().unwrap();
        assert_eq!(got, b"0123456789");
        let writer_path = path.clone();
        let writer = std::thread::spawn(move || std::fs::write(writer_path, [7u8; 5000]));
        let err = read_bounded(&path, 100, Duration::from_secs(30)).unwrap_err();
        drop(writer.join());
        assert!(
            err.to_string().contains("more than 100 bytes arrived"),
            "{err}"
        );
        std::fs::remove_dir_all(dir).unwrap();
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
