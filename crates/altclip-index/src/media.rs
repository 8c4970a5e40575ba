//! What a photo says about itself: when it was taken (EXIF, else the file's
//! modification time), the camera, where (GPS) and its size. Read at index
//! time from the bytes the indexer already holds, and stored beside the
//! manifest for filters (`filter.rs`).

use std::io::Cursor;

use exif::{In, Reader, Tag, Value};

/// One file's metadata, as the `media` table holds it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Media {
    /// `photo` or `video`.
    pub kind: String,
    /// When it was taken, ISO 8601 without a zone (`2023-07-14T18:03:11`):
    /// EXIF's local camera time, or the file's modification time in UTC.
    pub taken: String,
    /// `exif` or `file`: where `taken` came from.
    pub taken_from: String,
    pub make: Option<String>,
    pub model: Option<String>,
    /// Degrees, north and east positive.
    pub lat: Option<f64>,
    pub lon: Option<f64>,
    /// Pixels, as displayed (after EXIF orientation).
    pub width: u32,
    pub height: u32,
    /// Seconds, for a video.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration: Option<f64>,
}

impl Media {
    /// The camera as people name it: make and model, without the make
    /// repeated when the model already starts with it ("Apple iPhone 13").
    pub fn camera(&self) -> Option<String> {
        match (&self.make, &self.model) {
            (Some(make), Some(model)) if model.starts_with(make.as_str()) => Some(model.clone()),
            (Some(make), Some(model)) => Some(format!("{make} {model}")),
            (one, other) => one.clone().or_else(|| other.clone()),
        }
    }
}

/// Reads a photo's metadata from its file bytes; `mtime_ns` dates it when
/// EXIF has no date, `(width, height)` is its displayed size. Malformed EXIF
/// is ignored: the photo is indexed with what can be read.
pub fn read(bytes: &[u8], mtime_ns: i64, (width, height): (u32, u32)) -> Media {
    let exif = std::panic::catch_unwind(|| {
        Reader::new()
            .read_from_container(&mut Cursor::new(bytes))
            .ok()
    })
    .ok()
    .flatten();
    let text = |tag| {
        exif.as_ref()
            .and_then(|e| ascii(e.get_field(tag, In::PRIMARY)?))
    };
    let date = text(Tag::DateTimeOriginal)
        .or_else(|| text(Tag::DateTimeDigitized))
        .or_else(|| text(Tag::DateTime))
        .and_then(|d| exif_date(&d));
    let (taken, taken_from) = match date {
        Some(d) => (d, "exif"),
        None => (file_time(mtime_ns), "file"),
    };
    let coordinate = |value, reference, negative: &str| -> Option<f64> {
        let e = exif.as_ref()?;
        let Value::Rational(parts) = &e.get_field(value, In::PRIMARY)?.value else {
            return None;
        };
        let [d, m, s] = parts.get(..3)?.try_into().ok()?;
        let degrees = [d, m, s]
            .iter()
            .zip([1.0, 60.0, 3600.0])
            .map(|(r, unit): (&exif::Rational, f64)| r.to_f64() / unit)
            .sum::<f64>();
        let sign = match ascii(e.get_field(reference, In::PRIMARY)?) {
            Some(r) if r.eq_ignore_ascii_case(negative) => -1.0,
            _ => 1.0,
        };
        Some(sign * degrees).filter(|v| v.is_finite())
    };
    let lat = coordinate(Tag::GPSLatitude, Tag::GPSLatitudeRef, "S").filter(|v| v.abs() <= 90.0);
    let lon = coordinate(Tag::GPSLongitude, Tag::GPSLongitudeRef, "W").filter(|v| v.abs() <= 180.0);
    Media {
        kind: "photo".into(),
        taken,
        taken_from: taken_from.into(),
        make: text(Tag::Make),
        model: text(Tag::Model),
        // A position needs both halves.
        lat: lon.and(lat),
        lon: lat.and(lon),
        width,
        height,
        duration: None,
    }
}

/// An ASCII field's first string, trimmed of the NULs and spaces cameras pad with.
fn ascii(field: &exif::Field) -> Option<String> {
    let Value::Ascii(strings) = &field.value else {
        return None;
    };
    let s = String::from_utf8_lossy(strings.first()?);
    let s = s.trim_matches(|c: char| c == '\0' || c.is_whitespace());
    (!s.is_empty()).then(|| s.to_string())
}

/// EXIF's `2023:07:14 18:03:11` as `2023-07-14T18:03:11`; `None` for the
/// blank or impossible dates cameras write when their clock was never set.
fn exif_date(s: &str) -> Option<String> {
    let b = s.as_bytes();
    if b.len() < 19
        || !b[..19].iter().enumerate().all(|(i, c)| match i {
            4 | 7 => *c == b':' || *c == b'-',
            10 => *c == b' ' || *c == b'T',
            13 | 16 => *c == b':',
            _ => c.is_ascii_digit(),
        })
    {
        return None;
    }
    let num = |r: std::ops::Range<usize>| s[r].parse::<u32>().ok();
    let (y, mo, d, h, mi, se) = (
        num(0..4)?,
        num(5..7)?,
        num(8..10)?,
        num(11..13)?,
        num(14..16)?,
        num(17..19)?,
    );
    if y < 1800 || !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || se > 60
    {
        return None;
    }
    Some(format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{se:02}"))
}

/// A modification time (ns since the epoch) as an ISO 8601 UTC time.
pub fn file_time(mtime_ns: i64) -> String {
    let secs = mtime_ns.div_euclid(1_000_000_000);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Howard Hinnant's days-to-civil: the proleptic Gregorian date of a day
/// count since 1970-01-01.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// Great-circle distance in kilometres (haversine, mean Earth radius).
pub fn distance_km((lat1, lon1): (f64, f64), (lat2, lon2): (f64, f64)) -> f64 {
    let (p1, p2) = (lat1.to_radians(), lat2.to_radians());
    let dp = p2 - p1;
    let dl = (lon2 - lon1).to_radians();
    let a = (dp / 2.0).sin().powi(2) + p1.cos() * p2.cos() * (dl / 2.0).sin().powi(2);
    2.0 * 6371.0088 * a.sqrt().min(1.0).asin()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exif_dates_are_checked_and_reformatted() {
        assert_eq!(
            exif_date("2023:07:14 18:03:11").as_deref(),
            Some("2023-07-14T18:03:11")
        );
        assert_eq!(
            exif_date("2023-07-14T18:03:11+02:00").as_deref(),
            Some("2023-07-14T18:03:11")
        );
        for bad in [
            "0000:00:00 00:00:00",
            "    :  :     :  :  ",
            "2023:13:01 00:00:00",
            "2023:07:14",
        ] {
            assert_eq!(exif_date(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn file_times_are_utc_calendar_dates() {
        assert_eq!(file_time(0), "1970-01-01T00:00:00");
        assert_eq!(
            file_time(1_700_000_000 * 1_000_000_000),
            "2023-11-14T22:13:20"
        );
        assert_eq!(
            file_time(951_782_400 * 1_000_000_000),
            "2000-02-29T00:00:00"
        );
        assert_eq!(file_time(-1_000_000_000), "1969-12-31T23:59:59");
    }

    #[test]
    fn distances_are_great_circle_kilometres() {
        let beijing = (39.9042, 116.4074);
        let shanghai = (31.2304, 121.4737);
        let d = distance_km(beijing, shanghai);
        assert!((d - 1067.0).abs() < 5.0, "{d}");
        assert_eq!(distance_km(beijing, beijing), 0.0);
    }

    /// The fixtures' EXIF, as Pillow wrote it (scripts/make_library_fixtures.py).
    #[test]
    fn exif_dates_cameras_and_places_are_read_as_written() {
        let dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/library");
        let expected: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.join("expected.json")).unwrap()).unwrap();
        for (name, want) in expected.as_object().unwrap() {
            let bytes = std::fs::read(dir.join(name)).unwrap();
            let m = read(&bytes, 0, (64, 48));
            let text = |k: &str| want[k].as_str().map(str::to_string);
            match text("taken") {
                Some(t) => assert_eq!(
                    (m.taken.clone(), m.taken_from.as_str()),
                    (t, "exif"),
                    "{name}"
                ),
                None => assert_eq!(
                    (m.taken.as_str(), m.taken_from.as_str()),
                    ("1970-01-01T00:00:00", "file")
                ),
            }
            assert_eq!(
                (m.make.clone(), m.model.clone()),
                (text("make"), text("model")),
                "{name}"
            );
            for (got, key) in [(m.lat, "lat"), (m.lon, "lon")] {
                match want[key].as_f64() {
                    Some(w) => assert!(
                        (got.unwrap() - w).abs() < 1e-6,
                        "{name} {key}: {got:?} vs {w}"
                    ),
                    None => assert_eq!(got, None, "{name} {key}"),
                }
            }
        }
    }

    #[test]
    fn a_file_without_exif_is_dated_by_its_modification_time() {
        let m = read(b"not an image", 1_700_000_000 * 1_000_000_000, (4, 3));
        assert_eq!(
            (m.taken.as_str(), m.taken_from.as_str()),
            ("2023-11-14T22:13:20", "file")
        );
        assert_eq!((m.make, m.lat, m.width, m.height), (None, None, 4, 3));
    }
}
