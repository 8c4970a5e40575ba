//! Image preprocessing exactly as transformers' `CLIPImageProcessor` (PIL
//! backend): convert to RGB, resize the shortest edge with Pillow's resampler,
//! center-crop, rescale, normalise, CHW. Every setting comes from
//! `preprocessor_config.json`.

#[cfg(feature = "avif")]
mod avif;
pub mod decode;
mod heif;
mod jpeg;
pub mod resample;

use std::path::Path;

use image::RgbImage;
use serde::Deserialize;

use crate::error::{Error, Result};
pub use decode::{
    decode_rgb, max_file_bytes, open_rgb, read_image_file, to_rgb, DEFAULT_MAX_PIXELS,
    IMAGE_EXTENSIONS, STREAM_WAIT,
};
pub use resample::Filter;

/// The longest side a preprocessor config may resize or crop to.
pub const MAX_CONFIG_SIDE: u32 = 8192;

/// Most pixels the resize step may produce: the decoder's default limit.
pub const MAX_RESIZED_PIXELS: u64 = DEFAULT_MAX_PIXELS;

/// OpenAI CLIP's channel means, transformers' default.
pub const OPENAI_CLIP_MEAN: [f64; 3] = [0.48145466, 0.4578275, 0.40821073];
/// OpenAI CLIP's channel standard deviations, transformers' default.
pub const OPENAI_CLIP_STD: [f64; 3] = [0.26862954, 0.26130258, 0.27577711];

/// `size` / `crop_size` as they appear in preprocessor configs: a bare int or a dict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
enum SizeSpec {
    Int(u32),
    Dict {
        shortest_edge: Option<u32>,
        height: Option<u32>,
        width: Option<u32>,
    },
}

/// How the resize step chooses the output size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResizeTo {
    /// The short side becomes this; the long side keeps the aspect ratio (floored).
    ShortestEdge(u32),
    /// Exactly `(height, width)`.
    Exact { height: u32, width: u32 },
}

/// A float or a per-channel list, as `image_mean` / `image_std` may be written.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum PerChannel {
    One(f64),
    Three([f64; 3]),
}

impl PerChannel {
    fn channels(&self) -> [f64; 3] {
        match self {
            PerChannel::One(v) => [*v; 3],
            PerChannel::Three(v) => *v,
        }
    }
}

#[derive(Debug, Deserialize)]
struct RawConfig {
    size: Option<SizeSpec>,
    crop_size: Option<SizeSpec>,
    do_resize: Option<bool>,
    do_center_crop: Option<bool>,
    do_rescale: Option<bool>,
    do_normalize: Option<bool>,
    do_convert_rgb: Option<bool>,
    resample: Option<i64>,
    rescale_factor: Option<f64>,
    image_mean: Option<PerChannel>,
    image_std: Option<PerChannel>,
}

/// Resolved image settings with `CLIPImageProcessor`'s defaults filled in.
#[derive(Debug, Clone, PartialEq)]
pub struct PreprocessorConfig {
    /// `None` when `do_resize` is false.
    pub resize: Option<ResizeTo>,
    pub filter: Filter,
    /// `(height, width)`; `None` when `do_center_crop` is false.
    pub crop: Option<(u32, u32)>,
    /// `None` when `do_rescale` is false.
    pub rescale_factor: Option<f64>,
    /// `(mean, std)`; `None` when `do_normalize` is false.
    pub normalize: Option<([f64; 3], [f64; 3])>,
}

impl PreprocessorConfig {
    /// CLIP defaults for a square input of `image_size` pixels, used when a
    /// model directory has no `preprocessor_config.json`.
    pub fn clip_default(image_size: u32) -> Self {
        Self {
            resize: Some(ResizeTo::ShortestEdge(image_size)),
            filter: Filter::Bicubic,
            crop: Some((image_size, image_size)),
            rescale_factor: Some(1.0 / 255.0),
            normalize: Some((OPENAI_CLIP_MEAN, OPENAI_CLIP_STD)),
        }
    }

    /// Parses a `preprocessor_config.json`.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let raw: RawConfig = serde_json::from_str(&text).map_err(|e| Error::BadJson {
            path: path.to_path_buf(),
            what: "preprocessor config",
            reason: e.to_string(),
        })?;
        let bad = |reason: String| Error::BadConfig {
            path: path.to_path_buf(),
            reason,
        };
        if raw.do_convert_rgb == Some(false) {
            return Err(bad(
                "do_convert_rgb=false is not supported: the model takes RGB".into(),
            ));
        }
        let resize = match (raw.do_resize.unwrap_or(true), raw.size) {
            (false, _) => None,
            (true, None) => Some(ResizeTo::ShortestEdge(224)),
            (true, Some(SizeSpec::Int(s))) => Some(ResizeTo::ShortestEdge(s)),
            (
                true,
                Some(SizeSpec::Dict {
                    shortest_edge: Some(s),
                    ..
                }),
            ) => Some(ResizeTo::ShortestEdge(s)),
            (
                true,
                Some(SizeSpec::Dict {
                    height: Some(height),
                    width: Some(width),
                    ..
                }),
            ) => Some(ResizeTo::Exact { height, width }),
            (true, Some(other)) => return Err(bad(format!("unsupported `size` {other:?}"))),
        };
        let crop = match (raw.do_center_crop.unwrap_or(true), raw.crop_size) {
            (false, _) => None,
            (true, None) => Some((224, 224)),
            (true, Some(SizeSpec::Int(s))) => Some((s, s)),
            (
                true,
                Some(SizeSpec::Dict {
                    height: Some(h),
                    width: Some(w),
                    ..
                }),
            ) => Some((h, w)),
            (true, Some(other)) => return Err(bad(format!("unsupported `crop_size` {other:?}"))),
        };
        // transformers raises on a zero size; a zero would make empty images here.
        let zero_resize = match resize {
            Some(ResizeTo::ShortestEdge(s)) => s == 0,
            Some(ResizeTo::Exact { height, width }) => height == 0 || width == 0,
            None => false,
        };
        if zero_resize || crop.is_some_and(|(h, w)| h == 0 || w == 0) {
            return Err(bad(format!(
                "`size` {resize:?} and `crop_size` {crop:?} must be at least 1 pixel"
            )));
        }
        let largest = match resize {
            Some(ResizeTo::ShortestEdge(s)) => s,
            Some(ResizeTo::Exact { height, width }) => height.max(width),
            None => 0,
        }
        .max(crop.map_or(0, |(h, w)| h.max(w)));
        if largest > MAX_CONFIG_SIDE {
            return Err(bad(format!(
                "`size` {resize:?} and `crop_size` {crop:?} must be at most {MAX_CONFIG_SIDE} pixels \
                 (a side of {largest} would make every image enormous)"
            )));
        }
        let code = raw.resample.unwrap_or(3);
        let filter = Filter::from_pil(code).ok_or_else(|| {
            bad(format!(
                "resample={code} is not supported; use 3 (bicubic), 2 (bilinear) or 1 (lanczos)"
            ))
        })?;
        let mean = raw
            .image_mean
            .map(|m| m.channels())
            .unwrap_or(OPENAI_CLIP_MEAN);
        let std = raw
            .image_std
            .map(|s| s.channels())
            .unwrap_or(OPENAI_CLIP_STD);
        let finite = |v: &[f64; 3]| v.iter().all(|x| x.is_finite());
        if !finite(&mean) || !finite(&std) || std.contains(&0.0) {
            return Err(bad(format!(
                "image_mean {mean:?} and image_std {std:?} must be finite, and image_std non-zero"
            )));
        }
        Ok(Self {
            resize,
            filter,
            crop,
            rescale_factor: raw
                .do_rescale
                .unwrap_or(true)
                .then(|| raw.rescale_factor.unwrap_or(1.0 / 255.0)),
            normalize: raw.do_normalize.unwrap_or(true).then_some((mean, std)),
        })
    }
}

/// Turns decoded RGB images into normalised CHW pixel values.
#[derive(Debug, Clone)]
pub struct Preprocessor {
    pub config: PreprocessorConfig,
}

impl Preprocessor {
    /// Reads `preprocessor_config.json` from `dir`, or uses CLIP defaults at
    /// `image_size` when the file is absent.
    pub fn from_dir(dir: &Path, image_size: u32) -> Result<Self> {
        let path = dir.join("preprocessor_config.json");
        let config = if path.is_file() {
            PreprocessorConfig::from_file(&path)?
        } else {
            PreprocessorConfig::clip_default(image_size)
        };
        Ok(Self { config })
    }

    /// The `(width, height)` the resize step produces for a `width`×`height`
    /// input, following transformers' `get_resize_output_image_size`.
    pub fn resize_shape(&self, width: u32, height: u32) -> (u32, u32) {
        match self.config.resize {
            None => (width, height),
            Some(ResizeTo::Exact { height, width }) => (width, height),
            Some(ResizeTo::ShortestEdge(s)) => {
                let (short, long) = if width <= height {
                    (width, height)
                } else {
                    (height, width)
                };
                if short == s {
                    return (width, height);
                }
                let new_long = ((s as u64 * long as u64) as f64 / short as f64) as u32;
                if width <= height {
                    (s, new_long)
                } else {
                    (new_long, s)
                }
            }
        }
    }

    /// Refuses a `width`×`height` image whose resize would be enormous: the
    /// shortest-edge resize of a 1×100000 strip is 224×22,400,000 pixels
    /// (15 GB as floats), though the strip itself is tiny.
    pub fn check_size(&self, width: u32, height: u32) -> Result<()> {
        let (w, h) = self.resize_shape(width, height);
        let pixels = w as u64 * h as u64;
        if pixels > MAX_RESIZED_PIXELS {
            return Err(Error::ResizeTooLarge {
                width,
                height,
                resized_width: w,
                resized_height: h,
                limit: MAX_RESIZED_PIXELS,
            });
        }
        Ok(())
    }

    /// The resize step alone, bit-exact with Pillow.
    pub fn resize(&self, img: &RgbImage) -> RgbImage {
        let (w, h) = self.resize_shape(img.width(), img.height());
        resample::resize(img, w, h, self.config.filter)
    }

    /// transformers' `center_crop`: offsets `(d - crop) // 2`; an image smaller
    /// than the crop is first zero-padded, centred with `ceil` offsets.
    pub fn center_crop(&self, img: &RgbImage) -> RgbImage {
        let Some((ch, cw)) = self.config.crop else {
            return img.clone();
        };
        let (w, h) = (img.width() as i64, img.height() as i64);
        let (ch, cw) = (ch as i64, cw as i64);
        let top = (h - ch).div_euclid(2);
        let left = (w - cw).div_euclid(2);
        if top >= 0 && left >= 0 {
            return image::imageops::crop_imm(img, left as u32, top as u32, cw as u32, ch as u32)
                .to_image();
        }
        // Pad to at least the crop size, then crop the padded canvas.
        let (ph, pw) = (h.max(ch), w.max(cw));
        let (pad_top, pad_left) = ((ph - h + 1) / 2, (pw - w + 1) / 2);
        let (top, left) = (top + pad_top, left + pad_left);
        let (y0, y1) = (top.max(0), (top + ch).min(ph));
        let (x0, x1) = (left.max(0), (left + cw).min(pw));
        let mut out = RgbImage::new((x1 - x0) as u32, (y1 - y0) as u32);
        for y in y0..y1 {
            for x in x0..x1 {
                let (sy, sx) = (y - pad_top, x - pad_left);
                if (0..h).contains(&sy) && (0..w).contains(&sx) {
                    out.put_pixel(
                        (x - x0) as u32,
                        (y - y0) as u32,
                        *img.get_pixel(sx as u32, sy as u32),
                    );
                }
            }
        }
        out
    }

    /// The final `(height, width)` of the pixel values for an input size.
    pub fn output_shape(&self, width: u32, height: u32) -> (u32, u32) {
        match self.config.crop {
            Some(hw) => hw,
            None => {
                let (w, h) = self.resize_shape(width, height);
                (h, w)
            }
        }
    }

    /// Resize, crop, rescale and normalise: CHW `f32` values (after
    /// [`Preprocessor::check_size`]).
    pub fn pixel_values(&self, img: &RgbImage) -> Result<Vec<f32>> {
        self.check_size(img.width(), img.height())?;
        let img = self.center_crop(&self.resize(img));
        let (w, h) = (img.width() as usize, img.height() as usize);
        let mut out = vec![0f32; 3 * h * w];
        let scale = self.config.rescale_factor;
        let norm = self
            .config
            .normalize
            .map(|(m, s)| (m.map(|v| v as f32), s.map(|v| v as f32)));
        for (i, p) in img.pixels().enumerate() {
            for c in 0..3 {
                // Rescale in f64 then cast, as numpy does; normalise in f32.
                let mut v = match scale {
                    Some(s) => (p.0[c] as f64 * s) as f32,
                    None => p.0[c] as f32,
                };
                if let Some((mean, std)) = norm {
                    v = (v - mean[c]) / std[c];
                }
                out[c * h * w + i] = v;
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn clip(size: u32, crop: u32) -> Preprocessor {
        let mut config = PreprocessorConfig::clip_default(size);
        config.crop = Some((crop, crop));
        Preprocessor { config }
    }

    #[test]
    fn enormous_sizes_are_refused_at_load_naming_the_file() {
        let dir = std::env::temp_dir().join(format!("altclip-huge-size-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("preprocessor_config.json");
        for config in [
            r#"{"size": {"shortest_edge": 100000}}"#,
            r#"{"size": {"height": 224, "width": 100000}}"#,
            r#"{"do_resize": false, "crop_size": 100000}"#,
        ] {
            std::fs::write(&path, config).unwrap();
            let err = PreprocessorConfig::from_file(&path)
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("preprocessor_config.json") && err.contains("at most 8192"),
                "{config}: {err}"
            );
        }
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn zero_sizes_and_stds_are_refused_naming_the_file() {
        let dir = std::env::temp_dir().join(format!("altclip-zero-size-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("preprocessor_config.json");
        for config in [
            r#"{"size": {"shortest_edge": 0}}"#,
            r#"{"size": 0}"#,
            r#"{"size": {"height": 0, "width": 224}}"#,
            r#"{"crop_size": {"height": 224, "width": 0}}"#,
            r#"{"image_std": [0, 0, 0]}"#,
        ] {
            std::fs::write(&path, config).unwrap();
            let err = PreprocessorConfig::from_file(&path)
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("preprocessor_config.json")
                    && (err.contains("at least 1 pixel") || err.contains("non-zero")),
                "{config}: {err}"
            );
        }
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn shortest_edge_floors_the_long_side() {
        let p = clip(224, 224);
        assert_eq!(p.resize_shape(640, 480), (298, 224));
        assert_eq!(p.resize_shape(480, 640), (224, 298));
        assert_eq!(p.resize_shape(224, 1000), (224, 1000));
        assert_eq!(p.resize_shape(20, 15), (298, 224));
    }

    #[test]
    fn crop_pads_images_smaller_than_the_crop() {
        let p = clip(4, 6);
        let img = RgbImage::from_pixel(4, 5, image::Rgb([9, 9, 9]));
        let out = p.center_crop(&img);
        assert_eq!((out.width(), out.height()), (6, 6));
        // Padding ceil((6-4)/2)=1 left/right and ceil((6-5)/2)=1 on top.
        assert_eq!(out.get_pixel(0, 0).0, [0, 0, 0]);
        assert_eq!(out.get_pixel(1, 1).0, [9, 9, 9]);
        assert_eq!(out.get_pixel(4, 5).0, [9, 9, 9]);
        assert_eq!(out.get_pixel(5, 5).0, [0, 0, 0]);
    }

    #[test]
    fn legacy_int_sizes_parse() {
        let dir = std::env::temp_dir().join(format!("altclip-pp-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("preprocessor_config.json");
        std::fs::write(&path, r#"{"size": 180, "crop_size": 160, "resample": 2, "image_mean": 0.5, "image_std": 0.5}"#).unwrap();
        let c = PreprocessorConfig::from_file(&path).unwrap();
        assert_eq!(c.resize, Some(ResizeTo::ShortestEdge(180)));
        assert_eq!(c.crop, Some((160, 160)));
        assert_eq!(c.filter, Filter::Bilinear);
        assert_eq!(c.normalize, Some(([0.5; 3], [0.5; 3])));
        std::fs::write(&path, r#"{"resample": 0}"#).unwrap();
        let err = PreprocessorConfig::from_file(&path)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("preprocessor_config.json") && err.contains("resample=0"),
            "{err}"
        );
    }
}
