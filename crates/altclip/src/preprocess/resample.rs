//! A bit-exact port of Pillow's `libImaging/Resample.c` for 8-bit RGB:
//! separable convolution with support scaled by the downscale factor,
//! coefficients in 22-bit fixed point, Pillow 13's choice of which pass runs
//! first, and a rounded `u8` image between the passes. `image` and `fast_image_resize` differ from
//! Pillow by up to 5 levels, which is why this exists.

use image::RgbImage;

/// Pillow's resampling filters (the values of `PIL.Image.Resampling`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Filter {
    /// `Image.BILINEAR` (2): triangle, support 1.
    Bilinear,
    /// `Image.BICUBIC` (3): Keys cubic with a = -0.5, support 2.
    Bicubic,
    /// `Image.LANCZOS` (1): Lanczos-3.
    Lanczos,
}

impl Filter {
    /// Maps the integer stored in `preprocessor_config.json` (`resample`).
    pub fn from_pil(code: i64) -> Option<Self> {
        match code {
            1 => Some(Filter::Lanczos),
            2 => Some(Filter::Bilinear),
            3 => Some(Filter::Bicubic),
            _ => None,
        }
    }

    fn support(self) -> f64 {
        match self {
            Filter::Bilinear => 1.0,
            Filter::Bicubic => 2.0,
            Filter::Lanczos => 3.0,
        }
    }

    fn eval(self, x: f64) -> f64 {
        match self {
            Filter::Bilinear => {
                let x = x.abs();
                if x < 1.0 {
                    1.0 - x
                } else {
                    0.0
                }
            }
            Filter::Bicubic => {
                const A: f64 = -0.5;
                let x = x.abs();
                if x < 1.0 {
                    ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
                } else if x < 2.0 {
                    (((x - 5.0) * x + 8.0) * x - 4.0) * A
                } else {
                    0.0
                }
            }
            Filter::Lanczos => {
                let sinc = |x: f64| {
                    if x == 0.0 {
                        1.0
                    } else {
                        let x = x * std::f64::consts::PI;
                        x.sin() / x
                    }
                };
                if (-3.0..3.0).contains(&x) {
                    sinc(x) * sinc(x / 3.0)
                } else {
                    0.0
                }
            }
        }
    }
}

const PRECISION_BITS: u32 = 32 - 8 - 2;

/// Per-output-pixel source window and fixed-point weights along one axis.
struct Coeffs {
    /// `(first source index, number of taps)` per output pixel.
    bounds: Vec<(usize, usize)>,
    /// `ksize` weights per output pixel.
    weights: Vec<i32>,
    ksize: usize,
}

/// Pillow's `precompute_coeffs` + `normalize_coeffs_8bpc` for the box `[0, in_size)`.
fn coeffs(in_size: usize, out_size: usize, filter: Filter) -> Coeffs {
    let scale = in_size as f64 / out_size as f64;
    let filterscale = scale.max(1.0);
    let support = filter.support() * filterscale;
    let ksize = support.ceil() as usize * 2 + 1;
    let mut bounds = Vec::with_capacity(out_size);
    let mut weights = vec![0i32; out_size * ksize];
    let mut k = vec![0f64; ksize];
    for xx in 0..out_size {
        let center = (xx as f64 + 0.5) * scale;
        let ss = 1.0 / filterscale;
        // `(int)` in C truncates toward zero; the +0.5 makes it round.
        let xmin = ((center - support + 0.5) as i64).max(0) as usize;
        let xmax = ((center + support + 0.5) as i64).min(in_size as i64) as usize - xmin;
        let mut ww = 0.0;
        for (x, kx) in k.iter_mut().enumerate().take(xmax) {
            let w = filter.eval((x as f64 + xmin as f64 - center + 0.5) * ss);
            *kx = w;
            ww += w;
        }
        for x in 0..xmax {
            let w = if ww != 0.0 { k[x] / ww } else { k[x] };
            let fixed = w * (1u32 << PRECISION_BITS) as f64;
            weights[xx * ksize + x] = if w < 0.0 {
                (fixed - 0.5) as i32
            } else {
                (fixed + 0.5) as i32
            };
        }
        bounds.push((xmin, xmax));
    }
    Coeffs {
        bounds,
        weights,
        ksize,
    }
}

#[inline]
fn clip8(acc: i64) -> u8 {
    (acc >> PRECISION_BITS).clamp(0, 255) as u8
}

const ROUND: i64 = 1 << (PRECISION_BITS - 1);

/// Resamples rows `rows` of a `width`-pixel-wide RGB buffer to `out_w` pixels.
fn horizontal(
    src: &[u8],
    width: usize,
    rows: std::ops::Range<usize>,
    out_w: usize,
    c: &Coeffs,
) -> Vec<u8> {
    let mut out = vec![0u8; rows.len() * out_w * 3];
    for (ty, y) in rows.enumerate() {
        let row = &src[y * width * 3..(y + 1) * width * 3];
        for xx in 0..out_w {
            let (xmin, n) = c.bounds[xx];
            let k = &c.weights[xx * c.ksize..xx * c.ksize + n];
            let mut acc = [ROUND; 3];
            for (i, &w) in k.iter().enumerate() {
                let p = &row[(xmin + i) * 3..(xmin + i) * 3 + 3];
                for ch in 0..3 {
                    acc[ch] += p[ch] as i64 * w as i64;
                }
            }
            let o = (ty * out_w + xx) * 3;
            for ch in 0..3 {
                out[o + ch] = clip8(acc[ch]);
            }
        }
    }
    out
}

/// Resamples a `width`-pixel-wide RGB buffer whose first row is source row
/// `row_offset` to `out_h` rows.
fn vertical(src: &[u8], width: usize, row_offset: usize, out_h: usize, c: &Coeffs) -> Vec<u8> {
    let mut out = vec![0u8; width * out_h * 3];
    for yy in 0..out_h {
        let (ymin, n) = c.bounds[yy];
        let ymin = ymin - row_offset;
        let k = &c.weights[yy * c.ksize..yy * c.ksize + n];
        for xx in 0..width {
            let mut acc = [ROUND; 3];
            for (i, &w) in k.iter().enumerate() {
                let o = ((ymin + i) * width + xx) * 3;
                for ch in 0..3 {
                    acc[ch] += src[o + ch] as i64 * w as i64;
                }
            }
            let o = (yy * width + xx) * 3;
            for ch in 0..3 {
                out[o + ch] = clip8(acc[ch]);
            }
        }
    }
    out
}

/// Resizes an RGB image to `width`×`height` exactly as Pillow 13's
/// `Image.resize((width, height), filter, reducing_gap=None)` does.
pub fn resize(src: &RgbImage, width: u32, height: u32, filter: Filter) -> RgbImage {
    let (in_w, in_h) = (src.width() as usize, src.height() as usize);
    let (out_w, out_h) = (width as usize, height as usize);
    if out_w == 0 || out_h == 0 {
        return RgbImage::new(width, height);
    }
    let (need_h, need_v) = (in_w != out_w, in_h != out_h);
    let horiz = coeffs(in_w, out_w, filter);
    let vert = coeffs(in_h, out_h, filter);
    // Pillow runs the vertical pass first when the height shrinks by more
    // than twice as many pixels as the width does; the order changes rounding.
    let (dx, dy) = (in_w as i64 - out_w as i64, in_h as i64 - out_h as i64);
    let horizontal_first = !(dy > 0 && dy > dx * 2);
    let pixels = if horizontal_first {
        // Only the source rows the vertical pass reads go through the first pass.
        let rows = if need_v {
            let last = vert.bounds[out_h - 1];
            vert.bounds[0].0..last.0 + last.1
        } else {
            0..in_h
        };
        let offset = rows.start;
        let (tmp, w) = if need_h {
            (horizontal(src.as_raw(), in_w, rows, out_w, &horiz), out_w)
        } else {
            (src.as_raw().clone(), in_w)
        };
        if need_v {
            vertical(&tmp, w, if need_h { offset } else { 0 }, out_h, &vert)
        } else {
            tmp
        }
    } else {
        let tmp = vertical(src.as_raw(), in_w, 0, out_h, &vert);
        if need_h {
            horizontal(&tmp, in_w, 0..out_h, out_w, &horiz)
        } else {
            tmp
        }
    };
    RgbImage::from_raw(width, height, pixels).expect("buffer matches size")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_image_stays_constant() {
        let src = RgbImage::from_pixel(37, 23, image::Rgb([200, 10, 128]));
        for (w, h) in [(10, 7), (80, 50), (37, 5), (3, 23)] {
            let out = resize(&src, w, h, Filter::Bicubic);
            assert_eq!((out.width(), out.height()), (w, h));
            assert!(out.pixels().all(|p| p.0 == [200, 10, 128]));
        }
    }

    #[test]
    fn weights_sum_to_one_in_fixed_point() {
        for (i, o) in [(640, 224), (20, 224), (1000, 999)] {
            let c = coeffs(i, o, Filter::Bicubic);
            for xx in 0..o {
                let s: i64 = c.weights[xx * c.ksize..(xx + 1) * c.ksize]
                    .iter()
                    .map(|&w| w as i64)
                    .sum();
                assert!(
                    (s - (1 << PRECISION_BITS)).abs() <= c.ksize as i64,
                    "{i}->{o}: {s}"
                );
            }
        }
    }
}
