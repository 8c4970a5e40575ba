//! Prometheus metrics in the text exposition format: requests and latency by
//! route, queue depth, batch sizes, and images and tokens per second.

use std::collections::{BTreeMap, VecDeque};
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Which model tower a batch ran on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Tower {
    Text,
    Image,
}

impl Tower {
    /// The label value.
    pub fn name(self) -> &'static str {
        match self {
            Tower::Text => "text",
            Tower::Image => "image",
        }
    }
}

const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
const BATCH_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0];
/// Throughput gauges average over this window.
const RATE_WINDOW: Duration = Duration::from_secs(10);

/// A cumulative histogram with fixed buckets.
#[derive(Debug, Clone)]
struct Histogram {
    bounds: &'static [f64],
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Self {
        Self {
            bounds,
            counts: vec![0; bounds.len()],
            sum: 0.0,
            count: 0,
        }
    }

    fn observe(&mut self, v: f64) {
        if let Some(i) = self.bounds.iter().position(|b| v <= *b) {
            self.counts[i] += 1;
        }
        self.sum += v;
        self.count += 1;
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        let mut cumulative = 0;
        for (b, c) in self.bounds.iter().zip(&self.counts) {
            cumulative += c;
            let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{b}\"}} {cumulative}");
        }
        let _ = writeln!(
            out,
            "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {}",
            self.count
        );
        let _ = writeln!(out, "{name}_sum{{{labels}}} {}", self.sum);
        let _ = writeln!(out, "{name}_count{{{labels}}} {}", self.count);
    }
}

#[derive(Debug)]
struct TowerStats {
    batch_size: Histogram,
    inference_seconds: Histogram,
    max_batch: u64,
}

impl TowerStats {
    fn new() -> Self {
        Self {
            batch_size: Histogram::new(BATCH_BUCKETS),
            inference_seconds: Histogram::new(LATENCY_BUCKETS),
            max_batch: 0,
        }
    }
}

/// Everything `/metrics` reports; shared by the router and the batcher.
#[derive(Debug)]
pub struct Metrics {
    started: Instant,
    requests: Mutex<BTreeMap<(String, u16), u64>>,
    latency: Mutex<BTreeMap<String, Histogram>>,
    towers: Mutex<BTreeMap<Tower, TowerStats>>,
    images: AtomicU64,
    texts: AtomicU64,
    tokens: AtomicU64,
    in_flight: AtomicU64,
    /// (when, images, tokens) per batch in the last RATE_WINDOW.
    recent: Mutex<VecDeque<(Instant, u64, u64)>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            started: Instant::now(),
            requests: Mutex::default(),
            latency: Mutex::default(),
            towers: Mutex::default(),
            images: AtomicU64::new(0),
            texts: AtomicU64::new(0),
            tokens: AtomicU64::new(0),
            in_flight: AtomicU64::new(0),
            recent: Mutex::default(),
        }
    }
}

/// Queue depths at the time of a scrape.
#[derive(Debug, Clone, Copy, Default)]
pub struct QueueDepth {
    pub text: usize,
    pub image: usize,
}

impl Metrics {
    /// Counts a finished request.
    pub fn record_request(&self, route: &str, status: u16, elapsed: Duration) {
        *lock(&self.requests)
            .entry((route.to_string(), status))
            .or_default() += 1;
        lock(&self.latency)
            .entry(route.to_string())
            .or_insert_with(|| Histogram::new(LATENCY_BUCKETS))
            .observe(elapsed.as_secs_f64());
    }

    /// Counts a forward pass of `size` inputs (and `tokens` real tokens for text).
    pub fn record_batch(&self, tower: Tower, size: usize, tokens: usize, elapsed: Duration) {
        {
            let mut towers = lock(&self.towers);
            let t = towers.entry(tower).or_insert_with(TowerStats::new);
            t.batch_size.observe(size as f64);
            t.inference_seconds.observe(elapsed.as_secs_f64());
            t.max_batch = t.max_batch.max(size as u64);
        }
        let images = if tower == Tower::Image {
            size as u64
        } else {
            0
        };
        match tower {
            Tower::Image => self.images.fetch_add(size as u64, Ordering::Relaxed),
            Tower::Text => self.texts.fetch_add(size as u64, Ordering::Relaxed),
        };
        self.tokens.fetch_add(tokens as u64, Ordering::Relaxed);
        let now = Instant::now();
        let mut recent = lock(&self.recent);
        recent.push_back((now, images, tokens as u64));
        while recent
            .front()
            .is_some_and(|(t, _, _)| now.duration_since(*t) > RATE_WINDOW)
        {
            recent.pop_front();
        }
    }

    /// Marks a request as started; the guard marks it finished when dropped.
    pub fn enter(&self) -> InFlight<'_> {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(self)
    }

    /// The largest batch seen so far on `tower`.
    pub fn max_batch(&self, tower: Tower) -> u64 {
        lock(&self.towers).get(&tower).map_or(0, |t| t.max_batch)
    }

    /// Images and tokens per second over the last ten seconds.
    pub fn rates(&self) -> (f64, f64) {
        let now = Instant::now();
        let window = RATE_WINDOW
            .min(now.duration_since(self.started))
            .as_secs_f64()
            .max(1e-3);
        let recent = lock(&self.recent);
        let (images, tokens) = recent
            .iter()
            .filter(|(t, _, _)| now.duration_since(*t) <= RATE_WINDOW)
            .fold((0, 0), |(i, k), (_, di, dk)| (i + di, k + dk));
        (images as f64 / window, tokens as f64 / window)
    }

    /// The exposition text.
    pub fn render(&self, queue: QueueDepth) -> String {
        let mut out = String::new();
        let w = &mut out;
        let _ = writeln!(
            w,
            "# HELP altclip_requests_total HTTP requests by route and status."
        );
        let _ = writeln!(w, "# TYPE altclip_requests_total counter");
        for ((route, status), n) in lock(&self.requests).iter() {
            let _ = writeln!(
                w,
                "altclip_requests_total{{route=\"{route}\",status=\"{status}\"}} {n}"
            );
        }
        let _ = writeln!(
            w,
            "# HELP altclip_request_duration_seconds Request latency by route."
        );
        let _ = writeln!(w, "# TYPE altclip_request_duration_seconds histogram");
        for (route, h) in lock(&self.latency).iter() {
            h.render(
                w,
                "altclip_request_duration_seconds",
                &format!("route=\"{route}\""),
            );
        }
        let _ = writeln!(
            w,
            "# HELP altclip_requests_in_flight Requests being processed."
        );
        let _ = writeln!(w, "# TYPE altclip_requests_in_flight gauge");
        let _ = writeln!(
            w,
            "altclip_requests_in_flight {}",
            self.in_flight.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            w,
            "# HELP altclip_queue_depth Inputs waiting for a batch, by tower."
        );
        let _ = writeln!(w, "# TYPE altclip_queue_depth gauge");
        let _ = writeln!(w, "altclip_queue_depth{{tower=\"text\"}} {}", queue.text);
        let _ = writeln!(w, "altclip_queue_depth{{tower=\"image\"}} {}", queue.image);
        let towers = lock(&self.towers);
        let _ = writeln!(
            w,
            "# HELP altclip_batch_size Inputs per forward pass, by tower."
        );
        let _ = writeln!(w, "# TYPE altclip_batch_size histogram");
        for (tower, t) in towers.iter() {
            t.batch_size.render(
                w,
                "altclip_batch_size",
                &format!("tower=\"{}\"", tower.name()),
            );
        }
        let _ = writeln!(
            w,
            "# HELP altclip_batch_size_max Largest forward pass so far, by tower."
        );
        let _ = writeln!(w, "# TYPE altclip_batch_size_max gauge");
        for (tower, t) in towers.iter() {
            let _ = writeln!(
                w,
                "altclip_batch_size_max{{tower=\"{}\"}} {}",
                tower.name(),
                t.max_batch
            );
        }
        let _ = writeln!(
            w,
            "# HELP altclip_inference_duration_seconds Forward pass time, by tower."
        );
        let _ = writeln!(w, "# TYPE altclip_inference_duration_seconds histogram");
        for (tower, t) in towers.iter() {
            t.inference_seconds.render(
                w,
                "altclip_inference_duration_seconds",
                &format!("tower=\"{}\"", tower.name()),
            );
        }
        drop(towers);
        let counters = [
            ("altclip_images_total", "Images embedded.", &self.images),
            ("altclip_texts_total", "Texts embedded.", &self.texts),
            (
                "altclip_tokens_total",
                "Text tokens embedded.",
                &self.tokens,
            ),
        ];
        for (name, help, v) in counters {
            let _ = writeln!(w, "# HELP {name} {help}");
            let _ = writeln!(w, "# TYPE {name} counter");
            let _ = writeln!(w, "{name} {}", v.load(Ordering::Relaxed));
        }
        let (images, tokens) = self.rates();
        let _ = writeln!(
            w,
            "# HELP altclip_images_per_second Images embedded per second, last 10 s."
        );
        let _ = writeln!(w, "# TYPE altclip_images_per_second gauge");
        let _ = writeln!(w, "altclip_images_per_second {images:.3}");
        let _ = writeln!(
            w,
            "# HELP altclip_tokens_per_second Tokens embedded per second, last 10 s."
        );
        let _ = writeln!(w, "# TYPE altclip_tokens_per_second gauge");
        let _ = writeln!(w, "altclip_tokens_per_second {tokens:.3}");
        out
    }
}

/// Guard of [`Metrics::enter`].
pub struct InFlight<'a>(&'a Metrics);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Locks a metrics mutex; a panic elsewhere never makes metrics unusable.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_has_cumulative_buckets() {
        let m = Metrics::default();
        m.record_request("/embed", 200, Duration::from_millis(3));
        m.record_request("/embed", 429, Duration::from_millis(1));
        m.record_batch(Tower::Image, 3, 0, Duration::from_millis(20));
        m.record_batch(Tower::Image, 1, 0, Duration::from_millis(10));
        let text = m.render(QueueDepth { text: 2, image: 0 });
        assert!(text.contains("altclip_requests_total{route=\"/embed\",status=\"429\"} 1"));
        assert!(text.contains("altclip_batch_size_bucket{tower=\"image\",le=\"1\"} 1"));
        assert!(text.contains("altclip_batch_size_bucket{tower=\"image\",le=\"4\"} 2"));
        assert!(text.contains("altclip_batch_size_max{tower=\"image\"} 3"));
        assert!(text.contains("altclip_queue_depth{tower=\"text\"} 2"));
        assert!(text.contains("altclip_images_total 4"));
    }
}
