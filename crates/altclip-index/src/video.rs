//! Videos through an installed `ffmpeg` and `ffprobe` (found on `PATH`):
//! the duration, size and creation time from ffprobe, then one frame every
//! `interval` seconds (at most `max_frames`, spread over the whole video),
//! each a PNG that is decoded like any image.

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// File extensions indexed as videos.
pub const VIDEO_EXTENSIONS: &[&str] = &["mp4", "mov", "m4v", "mkv", "webm", "avi", "3gp"];

/// A frame larger than this (PNG bytes) is refused.
const MAX_FRAME_BYTES: usize = 64 << 20;
/// ffmpeg or ffprobe taking longer than this on one call is stopped.
const TOOL_TIMEOUT: Duration = Duration::from_secs(120);

/// Which frames of a video are embedded.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sampling {
    /// Seconds between frames.
    pub interval: f64,
    /// At most this many frames per video; a longer video gets them spread
    /// evenly over its length.
    pub max_frames: usize,
}

impl Default for Sampling {
    fn default() -> Self {
        Self {
            interval: 2.0,
            max_frames: 100,
        }
    }
}

/// What ffprobe says about a video.
#[derive(Debug, Clone, PartialEq)]
pub struct Probe {
    pub duration: f64,
    pub width: u32,
    pub height: u32,
    /// The container's `creation_time` tag, as ISO 8601 without a zone.
    pub created: Option<String>,
}

/// Whether the path names a video.
pub fn is_video_name(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| VIDEO_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
}

/// `Err(why)` when ffmpeg or ffprobe cannot be run (checked once).
pub fn tools() -> Result<(), String> {
    static FOUND: OnceLock<Result<(), String>> = OnceLock::new();
    FOUND
        .get_or_init(|| {
            for tool in ["ffmpeg", "ffprobe"] {
                let ok = Command::new(tool)
                    .arg("-version")
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status()
                    .is_ok_and(|s| s.success());
                if !ok {
                    return Err(format!(
                        "video skipped: {tool} is not installed (videos need ffmpeg and ffprobe on PATH)"
                    ));
                }
            }
            Ok(())
        })
        .clone()
}

/// Runs a tool to completion within [`TOOL_TIMEOUT`], keeping at most
/// `limit` bytes of its output.
fn run(mut cmd: Command, limit: usize) -> Result<Vec<u8>, String> {
    let name = cmd.get_program().to_string_lossy().into_owned();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {name}: {e}"))?;
    let mut out = child.stdout.take().expect("piped");
    let mut err = child.stderr.take().expect("piped");
    let reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let read = out.by_ref().take(limit as u64 + 1).read_to_end(&mut buf);
        std::io::copy(&mut out, &mut std::io::sink()).ok(); // let the tool finish
        read.map(|_| buf)
    });
    let errors = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = err.by_ref().take(4096).read_to_end(&mut buf);
        std::io::copy(&mut err, &mut std::io::sink()).ok();
        String::from_utf8_lossy(&buf).trim().to_string()
    });
    let start = Instant::now();
    let status = loop {
        match child.try_wait().map_err(|e| format!("{name}: {e}"))? {
            Some(status) => break status,
            None if start.elapsed() > TOOL_TIMEOUT => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "{name} took more than {} s",
                    TOOL_TIMEOUT.as_secs()
                ));
            }
            None => std::thread::sleep(Duration::from_millis(5)),
        }
    };
    let out = reader
        .join()
        .map_err(|_| format!("{name}: reader failed"))?;
    let out = out.map_err(|e| format!("{name}: {e}"))?;
    let message = errors.join().unwrap_or_default();
    if !status.success() {
        return Err(format!(
            "{name} failed: {}",
            message.lines().next().unwrap_or("no message")
        ));
    }
    if out.len() > limit {
        return Err(format!("{name} wrote more than {limit} bytes"));
    }
    Ok(out)
}

/// Duration, size and creation time of the video at `path`.
pub fn probe(path: &Path) -> Result<Probe, String> {
    let mut cmd = Command::new("ffprobe");
    cmd.args(["-v", "error", "-select_streams", "v:0"])
        .args([
            "-show_entries",
            "stream=width,height:format=duration:format_tags=creation_time",
        ])
        .args(["-of", "json"])
        .arg(path);
    let out = run(cmd, 1 << 20)?;
    let v: serde_json::Value =
        serde_json::from_slice(&out).map_err(|e| format!("ffprobe's answer is not JSON: {e}"))?;
    let stream = v["streams"].get(0).ok_or("no video stream")?;
    let dim = |k: &str| {
        stream[k]
            .as_u64()
            .filter(|&d| d > 0 && d <= 1 << 16)
            .map(|d| d as u32)
    };
    let (Some(width), Some(height)) = (dim("width"), dim("height")) else {
        return Err("the video stream has no size".into());
    };
    let duration = v["format"]["duration"]
        .as_str()
        .and_then(|d| d.parse::<f64>().ok())
        .filter(|d| d.is_finite() && *d >= 0.0)
        .ok_or("the video has no duration")?;
    let created = v["format"]["tags"]["creation_time"]
        .as_str()
        .filter(|t| t.len() >= 19)
        .map(|t| t[..19].replace(' ', "T"))
        .filter(|t| !t.starts_with("1970") && !t.starts_with("1904"));
    Ok(Probe {
        duration,
        width,
        height,
        created,
    })
}

/// The frame times, in milliseconds, for a video of `duration` seconds.
pub fn timestamps(duration: f64, sampling: &Sampling) -> Vec<u64> {
    let interval = sampling.interval.max(0.001);
    let every = (duration / interval).ceil().max(1.0) as usize;
    let n = every.min(sampling.max_frames.max(1));
    let step = if n == every {
        interval
    } else {
        duration / n as f64
    };
    (0..n)
        .map(|i| (i as f64 * step * 1000.0).round() as u64)
        .collect()
}

/// The frame at `ms` as PNG bytes, scaled down to at most 640 px wide
/// (the model sees 224).
pub fn frame_png(path: &Path, ms: u64) -> Result<Vec<u8>, String> {
    let mut cmd = Command::new("ffmpeg");
    cmd.args([
        "-v",
        "error",
        "-nostdin",
        "-ss",
        &format!("{:.3}", ms as f64 / 1000.0),
        "-i",
    ])
    .arg(path)
    .args([
        "-frames:v",
        "1",
        "-vf",
        "scale='min(640,iw)':-2",
        "-f",
        "image2pipe",
        "-c:v",
        "png",
        "-",
    ]);
    let png = run(cmd, MAX_FRAME_BYTES)?;
    if png.is_empty() {
        return Err(format!("no frame at {}", clock(ms)));
    }
    Ok(png)
}

/// `ms` as `HH:MM:SS`.
pub fn clock(ms: u64) -> String {
    let s = ms / 1000;
    format!("{:02}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_follow_the_interval_up_to_the_limit() {
        let s = Sampling {
            interval: 2.0,
            max_frames: 100,
        };
        assert_eq!(timestamps(7.0, &s), [0, 2000, 4000, 6000]);
        assert_eq!(timestamps(0.5, &s), [0]);
        let few = Sampling {
            interval: 1.0,
            max_frames: 4,
        };
        assert_eq!(timestamps(100.0, &few), [0, 25_000, 50_000, 75_000]);
        assert_eq!(clock(92_500), "00:01:32");
        assert_eq!(clock(3_600_000 + 61_000), "01:01:01");
    }
}
