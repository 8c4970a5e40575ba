//! AVIF stills (AV1-coded HEIF), decoded to what Pillow's AVIF plugin gives.
//!
//! avif-parse finds the primary image and its alpha plane in the container;
//! rav1d (the Rust port of dav1d, which Pillow's libavif also uses) decodes
//! the AV1 frames; the YUV→RGB step is libavif's own: its float formula,
//! bilinear chroma upsampling (9/16, 3/16, 3/16, 1/16), rounding to 8 bits.
//! Pillow's wheels convert through libyuv's fixed-point tables instead, so
//! a few channel values differ by one or two levels (see the README).

use std::ptr::NonNull;

use rav1d::include::dav1d::data::Dav1dData;
use rav1d::include::dav1d::dav1d::{Dav1dContext, Dav1dSettings};
use rav1d::include::dav1d::headers::*;
use rav1d::include::dav1d::picture::Dav1dPicture;
use rav1d::src::lib::{
    dav1d_close, dav1d_data_create, dav1d_data_unref, dav1d_default_settings, dav1d_get_picture,
    dav1d_open, dav1d_picture_unref, dav1d_send_data,
};

use super::heif::Decoded;

/// Decodes an AVIF file's primary image (and alpha). `check_size(width,
/// height)` runs on the AV1 sequence header's size before any frame is
/// decoded.
pub(super) fn decode<E>(
    bytes: &[u8],
    check_size: impl Fn(u32, u32) -> Result<(), E>,
) -> Result<Result<Decoded, String>, E> {
    let avif = match avif_parse::read_avif(&mut std::io::Cursor::new(bytes)) {
        Ok(a) => a,
        Err(e) => return Ok(Err(format!("cannot read the AVIF container: {e}"))),
    };
    let meta = match avif.primary_item_metadata() {
        Ok(m) => m,
        Err(e) => return Ok(Err(format!("cannot read the AV1 sequence header: {e}"))),
    };
    let (width, height) = (meta.max_frame_width.get(), meta.max_frame_height.get());
    check_size(width, height)?;
    let frame_limit = width.saturating_mul(height);
    let color = match Frame::decode(&avif.primary_item, frame_limit) {
        Ok(f) => f,
        Err(e) => return Ok(Err(format!("cannot decode the AVIF image: {e}"))),
    };
    let alpha = match avif.alpha_item.as_deref() {
        None => None,
        Some(item) => match Frame::decode(item, frame_limit) {
            Ok(f) => Some(f),
            Err(e) => return Ok(Err(format!("cannot decode the AVIF alpha plane: {e}"))),
        },
    };
    Ok(color.to_rgb(alpha.as_ref()))
}

/// One decoded AV1 frame, its planes copied out of the decoder.
struct Frame {
    width: usize,
    height: usize,
    depth: u32,
    /// Chroma subsampling shifts (x, y); `None` for monochrome.
    subsampling: Option<(usize, usize)>,
    matrix: Dav1dMatrixCoefficients,
    full_range: bool,
    /// Y, then U and V (empty when monochrome), as 16-bit samples.
    planes: [Vec<u16>; 3],
}

impl Frame {
    fn decode(av1: &[u8], frame_limit: u32) -> Result<Frame, String> {
        let mut decoder = Decoder::open(frame_limit)?;
        let picture = decoder.decode(av1)?;
        Frame::copy(&picture.0)
    }

    fn copy(p: &Dav1dPicture) -> Result<Frame, String> {
        let (width, height) = (p.p.w as usize, p.p.h as usize);
        let depth = p.p.bpc as u32;
        if width == 0 || height == 0 || !(8..=12).contains(&depth) {
            return Err(format!("a {width}x{height} frame of {depth}-bit samples"));
        }
        let subsampling = match p.p.layout {
            DAV1D_PIXEL_LAYOUT_I400 => None,
            DAV1D_PIXEL_LAYOUT_I420 => Some((1, 1)),
            DAV1D_PIXEL_LAYOUT_I422 => Some((1, 0)),
            DAV1D_PIXEL_LAYOUT_I444 => Some((0, 0)),
            other => return Err(format!("unknown pixel layout {other}")),
        };
        // SAFETY: a picture the decoder returned keeps its sequence header alive.
        let header = p.seq_hdr.map(|h| unsafe { h.as_ref() });
        let matrix = header.map_or(DAV1D_MC_UNKNOWN, |h| h.mtrx);
        let full_range = header.is_some_and(|h| h.color_range != 0);
        let plane = |n: usize, w: usize, h: usize| -> Result<Vec<u16>, String> {
            let data = p.data[n].ok_or("a plane is missing")?;
            let stride = p.stride[usize::from(n != 0)];
            let bytes = if depth > 8 { 2 } else { 1 };
            if stride <= 0 || (stride as usize) < w * bytes {
                return Err(format!("plane {n} has stride {stride} for width {w}"));
            }
            let stride = stride as usize;
            let mut out = Vec::with_capacity(w * h);
            for row in 0..h {
                // SAFETY: rav1d allocates `stride` bytes for each of the
                // plane's `h` rows, and the picture outlives this copy.
                let line = unsafe {
                    std::slice::from_raw_parts(
                        data.as_ptr().cast::<u8>().add(row * stride),
                        w * bytes,
                    )
                };
                if bytes == 1 {
                    out.extend(line.iter().map(|&v| v as u16));
                } else {
                    out.extend(
                        line.chunks_exact(2)
                            .map(|v| u16::from_ne_bytes([v[0], v[1]])),
                    );
                }
            }
            Ok(out)
        };
        let luma = plane(0, width, height)?;
        let [u, v] = match subsampling {
            None => [Vec::new(), Vec::new()],
            Some((sx, sy)) => {
                let (cw, ch) = ((width + sx) >> sx, (height + sy) >> sy);
                [plane(1, cw, ch)?, plane(2, cw, ch)?]
            }
        };
        Ok(Frame {
            width,
            height,
            depth,
            subsampling,
            matrix,
            full_range,
            planes: [luma, u, v],
        })
    }

    /// libavif's `avifImageYUVToRGB` to 8-bit RGB(A) with bilinear chroma:
    /// through libyuv's integer code where libavif uses it (8-bit samples, a
    /// matrix libyuv has constants for), else libavif's float formula.
    fn to_rgb(&self, alpha: Option<&Frame>) -> Result<Decoded, String> {
        if let Some(a) = alpha {
            if (a.width, a.height) != (self.width, self.height) {
                return Err(format!(
                    "the alpha plane is {}x{}, the image {}x{}",
                    a.width, a.height, self.width, self.height
                ));
            }
        }
        let channels = if alpha.is_some() { 4 } else { 3 };
        let mut pixels = Vec::with_capacity(self.width * self.height * channels);
        let libyuv = LibYuv::constants(self.matrix, self.full_range).filter(|_| self.depth == 8);
        let mut rgb_row = vec![[0u8; 3]; self.width];
        for j in 0..self.height {
            match libyuv {
                Some(k) => self.libyuv_row(&k, j, &mut rgb_row),
                None => {
                    for (i, px) in rgb_row.iter_mut().enumerate() {
                        *px = self.float_pixel(i, j);
                    }
                }
            }
            for (i, rgb) in rgb_row.iter().enumerate() {
                pixels.extend(rgb);
                if let Some(a) = alpha {
                    pixels.push(a.alpha_at(j * self.width + i));
                }
            }
        }
        Ok(Decoded {
            width: self.width as u32,
            height: self.height as u32,
            pixels,
            alpha: alpha.is_some(),
        })
    }

    /// Row `j` as libyuv's `I4xxToRGB24MatrixFilter` (bilinear) converts it:
    /// chroma upsampled in integers, then its fixed-point YUV→RGB.
    fn libyuv_row(&self, k: &LibYuv, j: usize, out: &mut [[u8; 3]]) {
        let luma = &self.planes[0][j * self.width..][..self.width];
        let y1 = |y: u16| (((y as u32 * 0x0101) * k.yg as u32) >> 16) as i32 + k.yb;
        let Some(ss) = self.subsampling else {
            for (px, &y) in out.iter_mut().zip(luma) {
                *px = [((y1(y) >> 6).clamp(0, 255)) as u8; 3];
            }
            return;
        };
        let [u, v] = [1, 2].map(|p| self.upsampled_row(p, ss, j));
        for (((px, &y), &u), &v) in out.iter_mut().zip(luma).zip(&u).zip(&v) {
            let (y, u, v) = (y1(y), u as i32 - 128, v as i32 - 128);
            let b = y + u * k.ub;
            let g = y - (u * k.ug + v * k.vg);
            let r = y + v * k.vr;
            *px = [r, g, b].map(|c| (c >> 6).clamp(0, 255) as u8);
        }
    }

    /// Chroma plane `p` at full width for luma row `j`, upsampled as libyuv
    /// does it: (9a + 3b + 3c + d + 8) >> 4 over the nearest sample and its
    /// neighbours towards the pixel (4:2:0), (3a + b + 2) >> 2 (4:2:2).
    fn upsampled_row(&self, p: usize, (sx, sy): (usize, usize), j: usize) -> Vec<u16> {
        let (cw, ch) = ((self.width + sx) >> sx, (self.height + sy) >> sy);
        let cj = j >> sy;
        let nj = if sy == 0 { cj } else { neighbour(cj, j, ch) };
        let (near, far) = (
            &self.planes[p][cj * cw..][..cw],
            &self.planes[p][nj * cw..][..cw],
        );
        (0..self.width)
            .map(|i| {
                let ci = i >> sx;
                let ni = if sx == 0 { ci } else { neighbour(ci, i, cw) };
                let (a, b, c, d) = (
                    near[ci] as u32,
                    near[ni] as u32,
                    far[ci] as u32,
                    far[ni] as u32,
                );
                match (sx, sy) {
                    (0, 0) => a,
                    (1, 0) => (3 * a + b + 2) >> 2,
                    _ => (9 * a + 3 * b + 3 * c + d + 8) >> 4,
                }
                .min(255) as u16
            })
            .collect()
    }

    /// libavif's float path at (i, j).
    fn float_pixel(&self, i: usize, j: usize) -> [u8; 3] {
        let y_of = |v: u16| self.luma_unit(v);
        let uv_of = |v: u16| self.chroma_unit(v);
        let (kr, kb) = coefficients(self.matrix);
        let kg = 1.0 - kr - kb;
        let to8 = |c: f32| (c.clamp(0.0, 1.0) * 255.0).round() as u8;
        let y = y_of(self.planes[0][j * self.width + i]);
        let Some(ss) = self.subsampling else {
            return [y, y, y].map(to8);
        };
        // GBR stored as YUV (identity matrix): the planes are G, B, R.
        let identity = self.matrix == DAV1D_MC_IDENTITY;
        let [cb, cr] = self.chroma_taps(ss, i, j).map(|taps| {
            let total: u32 = taps.iter().map(|&(w, _)| w).sum();
            taps.iter()
                .map(|&(w, s)| w as f32 / total as f32 * if identity { y_of(s) } else { uv_of(s) })
                .sum::<f32>()
        });
        let rgb = if identity {
            [cr, y, cb]
        } else {
            let r = y + 2.0 * (1.0 - kr) * cr;
            let b = y + 2.0 * (1.0 - kb) * cb;
            let g = y - (2.0 * (kr * (1.0 - kr) * cr + kb * (1.0 - kb) * cb)) / kg;
            [r, g, b]
        };
        rgb.map(to8)
    }

    /// The chroma samples (weight, U or V sample) that bilinear upsampling
    /// mixes at luma pixel (i, j): the nearest sample 9, its neighbours
    /// towards (i, j) 3 and 3, the diagonal 1 (4:2:0); 3 and 1 (4:2:2).
    /// Edges repeat their sample, as libyuv and libavif do.
    /// Unused taps have weight 0.
    fn chroma_taps(&self, (sx, sy): (usize, usize), i: usize, j: usize) -> [[(u32, u16); 4]; 2] {
        let (cw, ch) = ((self.width + sx) >> sx, (self.height + sy) >> sy);
        let (ci, cj) = (i >> sx, j >> sy);
        let (ni, nj) = (neighbour(ci, i, cw), neighbour(cj, j, ch));
        let taps = match (sx, sy) {
            (0, 0) => [(1, ci, cj), (0, ci, cj), (0, ci, cj), (0, ci, cj)],
            (1, 0) => [(3, ci, cj), (1, ni, cj), (0, ci, cj), (0, ci, cj)],
            _ => [(9, ci, cj), (3, ni, cj), (3, ci, nj), (1, ni, nj)],
        };
        [1, 2].map(|p| taps.map(|(w, x, y)| (w, self.planes[p][y * cw + x])))
    }

    /// The alpha plane's sample as 8 bits (limited-range alpha widened).
    fn alpha_at(&self, index: usize) -> u8 {
        (self.luma_unit(self.planes[0][index]) * 255.0).round() as u8
    }

    /// A luma (or alpha) sample in 0..=1, by the frame's depth and range.
    fn luma_unit(&self, v: u16) -> f32 {
        let scale = (1u32 << (self.depth - 8)) as f32;
        let (bias, range) = if self.full_range {
            (0.0, ((1u32 << self.depth) - 1) as f32)
        } else {
            (16.0 * scale, 219.0 * scale)
        };
        ((v as f32 - bias) / range).clamp(0.0, 1.0)
    }

    /// A chroma sample in -0.5..=0.5, by the frame's depth and range.
    fn chroma_unit(&self, v: u16) -> f32 {
        let range = if self.full_range {
            ((1u32 << self.depth) - 1) as f32
        } else {
            224.0 * (1u32 << (self.depth - 8)) as f32
        };
        ((v as f32 - (1u32 << (self.depth - 1)) as f32) / range).clamp(-0.5, 0.5)
    }
}

/// The chroma sample that bilinear upsampling mixes with sample `c` at luma
/// position `luma`: the next one for an odd position, the previous for an
/// even one; edges repeat their sample.
fn neighbour(c: usize, luma: usize, len: usize) -> usize {
    if luma & 1 == 1 {
        (c + 1).min(len - 1)
    } else {
        c.saturating_sub(1)
    }
}

/// libyuv's fixed-point YUV→RGB constants (`row_common.cc`, 6 fractional
/// bits) for the matrices libavif hands to libyuv.
#[derive(Clone, Copy)]
struct LibYuv {
    yg: i32,
    yb: i32,
    ub: i32,
    ug: i32,
    vg: i32,
    vr: i32,
}

impl LibYuv {
    fn constants(matrix: Dav1dMatrixCoefficients, full_range: bool) -> Option<LibYuv> {
        let (limited, full) = (
            |ub, ug, vg, vr| (18997, -1160, ub, ug, vg, vr),
            |ub, ug, vg, vr| (16320, 32, ub, ug, vg, vr),
        );
        let (yg, yb, ub, ug, vg, vr) = match (matrix, full_range) {
            (DAV1D_MC_BT601 | DAV1D_MC_BT470BG | DAV1D_MC_UNKNOWN, false) => {
                limited(128, 25, 52, 102)
            }
            (DAV1D_MC_BT601 | DAV1D_MC_BT470BG | DAV1D_MC_UNKNOWN, true) => full(113, 22, 46, 90),
            (DAV1D_MC_BT709, false) => limited(128, 14, 34, 115),
            (DAV1D_MC_BT709, true) => full(119, 12, 30, 101),
            (DAV1D_MC_BT2020_NCL, false) => (19003, -1160, 128, 12, 42, 107),
            (DAV1D_MC_BT2020_NCL, true) => full(120, 11, 37, 94),
            _ => return None,
        };
        Some(LibYuv {
            yg,
            yb,
            ub,
            ug,
            vg,
            vr,
        })
    }
}

/// (Kr, Kb) of the matrix coefficients, as libavif's table; unspecified and
/// unknown ones are BT.601's.
fn coefficients(matrix: Dav1dMatrixCoefficients) -> (f32, f32) {
    match matrix {
        DAV1D_MC_BT709 => (0.2126, 0.0722),
        DAV1D_MC_FCC => (0.30, 0.11),
        DAV1D_MC_SMPTE240 => (0.212, 0.087),
        DAV1D_MC_BT2020_NCL | DAV1D_MC_BT2020_CL => (0.2627, 0.0593),
        _ => (0.299, 0.114),
    }
}

/// A rav1d decoding context for one still, closed on drop.
struct Decoder(Option<Dav1dContext>);

/// A decoded picture, released on drop.
struct Picture(Dav1dPicture);

impl Drop for Picture {
    fn drop(&mut self) {
        // SAFETY: the picture came from dav1d_get_picture and is released once.
        unsafe { dav1d_picture_unref(Some(NonNull::from(&mut self.0))) };
    }
}

impl Drop for Decoder {
    fn drop(&mut self) {
        // SAFETY: the context came from dav1d_open; dav1d_close takes None after.
        unsafe { dav1d_close(Some(NonNull::from(&mut self.0))) };
    }
}

impl Decoder {
    fn open(frame_limit: u32) -> Result<Decoder, String> {
        let mut settings = std::mem::MaybeUninit::<Dav1dSettings>::uninit();
        // SAFETY: dav1d_default_settings fills every field.
        let mut settings = unsafe {
            dav1d_default_settings(NonNull::from(&mut settings).cast());
            settings.assume_init()
        };
        // Tiles and frame rows in parallel, as Pillow's dav1d does (its
        // default of one thread per CPU).
        settings.n_threads =
            std::thread::available_parallelism().map_or(1, |n| n.get().min(16)) as i32;
        settings.max_frame_delay = 1;
        // libavif asks dav1d for film grain, so the pixels carry it.
        settings.apply_grain = 1;
        // A frame larger than the sequence header's maximum is corrupt.
        settings.frame_size_limit = frame_limit;
        let mut context = None;
        // SAFETY: both pointers are valid for the call.
        let result = unsafe {
            dav1d_open(
                Some(NonNull::from(&mut context)),
                Some(NonNull::from(&mut settings)),
            )
        };
        check(result.0, "cannot start the AV1 decoder")?;
        Ok(Decoder(context))
    }

    /// Sends one AVIF item (a temporal unit) and returns its last picture:
    /// a layered item's final layer is the whole image.
    fn decode(&mut self, av1: &[u8]) -> Result<Picture, String> {
        let context = self.0.ok_or("the AV1 decoder is closed")?;
        let mut data = Dav1dData::default();
        // SAFETY: dav1d_data_create allocates `av1.len()` bytes that we fill;
        // data_unref releases what send_data did not take.
        let sent = unsafe {
            let buffer = dav1d_data_create(Some(NonNull::from(&mut data)), av1.len());
            if buffer.is_null() {
                return Err("out of memory for the AV1 data".into());
            }
            std::ptr::copy_nonoverlapping(av1.as_ptr(), buffer, av1.len());
            let result = dav1d_send_data(Some(context), Some(NonNull::from(&mut data)));
            dav1d_data_unref(Some(NonNull::from(&mut data)));
            result.0
        };
        // EAGAIN: a picture is waiting to be taken before more data fits.
        if sent != -libc::EAGAIN {
            check(sent, "the AV1 data is corrupt")?;
        }
        let mut last = None;
        loop {
            let mut picture = Picture(Dav1dPicture::default());
            // SAFETY: the context is open and the picture is ours to fill.
            let got =
                unsafe { dav1d_get_picture(Some(context), Some(NonNull::from(&mut picture.0))) }.0;
            if got != 0 {
                // `picture` is still empty; releasing it is a no-op.
                return match last {
                    Some(p) => Ok(p),
                    None => Err(error_text(got, "no frame was decoded")),
                };
            }
            last = Some(picture);
        }
    }
}

fn check(result: i32, what: &str) -> Result<(), String> {
    if result == 0 {
        Ok(())
    } else {
        Err(error_text(result, what))
    }
}

fn error_text(result: i32, what: &str) -> String {
    format!(
        "{what} (rav1d error {})",
        std::io::Error::from_raw_os_error(-result)
    )
}
