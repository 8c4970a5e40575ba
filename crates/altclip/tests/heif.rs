//! HEIC and AVIF pixels against what Pillow opens from the same files
//! (`scripts/make_heif_fixtures.py`: pillow-heif 1.8.1 with libheif 1.23.6 for
//! HEIC, Pillow 13's AVIF plugin for AVIF; its PNG beside each file).

use std::path::PathBuf;

use altclip::preprocess::{decode_rgb, open_rgb, DEFAULT_MAX_PIXELS};
use altclip::Error;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/images/heif")
        .join(name)
}

/// (largest |Δ| of a channel, share of channel values that differ).
fn difference(name: &str) -> (u8, f64) {
    let ours = open_rgb(&fixture(name), DEFAULT_MAX_PIXELS).unwrap();
    // The reference PNG goes through the same RGB conversion (alpha over white).
    let pillow = open_rgb(&fixture(&format!("{name}.png")), DEFAULT_MAX_PIXELS).unwrap();
    assert_eq!(ours.dimensions(), pillow.dimensions(), "{name}");
    let pairs = ours.as_raw().iter().zip(pillow.as_raw());
    let max = pairs.clone().map(|(a, b)| a.abs_diff(*b)).max().unwrap();
    let differing = pairs.filter(|(a, b)| a != b).count();
    let share = differing as f64 / ours.as_raw().len() as f64;
    println!(
        "{name}: max |Δ| {max}, {:.3}% of channel values differ",
        100.0 * share
    );
    (max, share)
}

/// zune-heic's RGB is libheif 1.17's (nearest-neighbour chroma); the libheif
/// 1.23 in pillow-heif's wheels rounds a few values the other way.
#[test]
fn heic_pixels_are_within_one_level_of_pillow_heif() {
    for name in [
        "photo.heic",
        "rgba.heic",
        "small.heic",
        "tall.heic",
        "rotated.heic",
    ] {
        let (max, share) = difference(name);
        assert!(max <= 1 && share < 0.1, "{name}: max |Δ| {max}, {share}");
    }
}

#[test]
fn heic_rotation_is_applied_once() {
    let img = open_rgb(&fixture("rotated.heic"), DEFAULT_MAX_PIXELS).unwrap();
    // The source is 320x240; its orientation 6 was stored as a container rotation.
    assert_eq!(img.dimensions(), (240, 320));
}

#[cfg(feature = "avif")]
#[test]
fn avif_pixels_equal_pillow() {
    for name in ["photo.avif", "rgba.avif", "small.avif", "tall.avif"] {
        assert_eq!(difference(name), (0, 0.0), "{name}");
    }
}

/// The AVIF files of the tests below, where this build reads AVIF.
const AVIF: &[&str] = if cfg!(feature = "avif") {
    &["photo.avif", "rgba.avif"]
} else {
    &[]
};

#[cfg(not(feature = "avif"))]
#[test]
fn without_the_avif_feature_avif_files_are_refused_by_name() {
    let bytes = std::fs::read(fixture("photo.avif")).unwrap();
    match decode_rgb(&bytes, "photo.avif", DEFAULT_MAX_PIXELS) {
        Err(Error::Image { input, reason }) => {
            assert_eq!(input, "photo.avif");
            assert!(reason.contains("feature `avif`"), "{reason}");
        }
        other => panic!("{:?}", other.map(|i| i.dimensions())),
    }
}

#[test]
fn damaged_heif_files_are_errors_naming_the_input() {
    for name in ["photo.heic", "rgba.heic"].iter().chain(AVIF) {
        let bytes = std::fs::read(fixture(name)).unwrap();
        for cut in [40, bytes.len() / 3, bytes.len() - 10] {
            let label = format!("{name}[..{cut}]");
            match decode_rgb(&bytes[..cut], &label, DEFAULT_MAX_PIXELS) {
                Err(Error::Image { input, reason }) => {
                    assert_eq!(input, label);
                    assert!(!reason.is_empty());
                }
                other => panic!("{label}: {:?}", other.map(|i| i.dimensions())),
            }
        }
    }
}

#[test]
fn the_pixel_limit_is_checked_before_decoding() {
    for name in ["photo.heic"].iter().chain(&AVIF[..AVIF.len().min(1)]) {
        let bytes = std::fs::read(fixture(name)).unwrap();
        match decode_rgb(&bytes, name, 1000) {
            Err(Error::TooManyPixels { width, height, .. }) => {
                assert_eq!(width as u64 * height as u64, 320 * 240, "{name}")
            }
            other => panic!("{name}: {:?}", other.map(|i| i.dimensions())),
        }
    }
}
