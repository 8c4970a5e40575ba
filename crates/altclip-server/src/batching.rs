//! Dynamic batching across requests.
//!
//! Handlers put tokenized texts and preprocessed images on per-tower queues
//! and await their rows. One dedicated thread owns the model (candle is
//! synchronous): it takes the tower whose oldest input has waited longest,
//! lets the batch fill for at most `max_wait` from that input's arrival, and
//! runs one forward pass for up to `max_batch_size` inputs — for text, also
//! at most `max_batch_tokens` padded tokens.

use std::collections::VecDeque;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Instant;

use altclip::AltClip;
use tokio::sync::oneshot;

use crate::args::BatchConfig;
use crate::error::ApiError;
use crate::metrics::{Metrics, QueueDepth, Tower};

/// One embedding, or the error of its batch.
type Row = Result<Vec<f32>, String>;
type Reply = oneshot::Sender<Row>;

/// One queued input.
struct Pending<T> {
    input: T,
    reply: Reply,
    since: Instant,
}

#[derive(Default)]
struct Queues {
    text: VecDeque<Pending<Vec<u32>>>,
    image: VecDeque<Pending<Vec<f32>>>,
    closed: bool,
}

struct Shared {
    queues: Mutex<Queues>,
    wake: Condvar,
    config: BatchConfig,
    metrics: Arc<Metrics>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Queues> {
        self.queues.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The model thread and its queues.
pub struct Batcher {
    shared: Arc<Shared>,
    worker: Mutex<Option<JoinHandle<()>>>,
}

enum Job {
    Text(Vec<Pending<Vec<u32>>>),
    Image(Vec<Pending<Vec<f32>>>),
}

impl Batcher {
    /// Starts the model thread.
    pub fn start(clip: Arc<AltClip>, config: BatchConfig, metrics: Arc<Metrics>) -> Self {
        let shared = Arc::new(Shared {
            queues: Mutex::default(),
            wake: Condvar::new(),
            config,
            metrics,
        });
        let thread_shared = shared.clone();
        let worker = std::thread::Builder::new()
            .name("altclip-model".into())
            .spawn(move || work(&thread_shared, &clip))
            .expect("spawning the model thread");
        Self {
            shared,
            worker: Mutex::new(Some(worker)),
        }
    }

    /// The batching settings.
    pub fn config(&self) -> BatchConfig {
        self.shared.config
    }

    /// L2-normalised embeddings of tokenized texts (special tokens included).
    pub async fn embed_tokens(&self, ids: Vec<Vec<u32>>) -> Result<Vec<Vec<f32>>, ApiError> {
        let receivers = self.enqueue(ids, |q| &mut q.text)?;
        collect(receivers).await
    }

    /// L2-normalised embeddings of preprocessed images (`[3, H, W]` each, flattened).
    pub async fn embed_pixels(&self, pixels: Vec<Vec<f32>>) -> Result<Vec<Vec<f32>>, ApiError> {
        let receivers = self.enqueue(pixels, |q| &mut q.image)?;
        collect(receivers).await
    }

    /// Inputs waiting per tower.
    pub fn depth(&self) -> QueueDepth {
        let q = self.shared.lock();
        QueueDepth {
            text: q.text.len(),
            image: q.image.len(),
        }
    }

    /// Refuses new work, finishes what is queued and stops the model thread.
    pub fn shutdown(&self) {
        self.shared.lock().closed = true;
        self.shared.wake.notify_all();
        let handle = self.worker.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(handle) = handle {
            let _ = handle.join();
        }
    }

    fn enqueue<T>(
        &self,
        inputs: Vec<T>,
        queue: impl Fn(&mut Queues) -> &mut VecDeque<Pending<T>>,
    ) -> Result<Vec<oneshot::Receiver<Row>>, ApiError> {
        let now = Instant::now();
        let mut receivers = Vec::with_capacity(inputs.len());
        {
            let mut q = self.shared.lock();
            if q.closed {
                return Err(shutting_down());
            }
            let target = queue(&mut q);
            for input in inputs {
                let (reply, rx) = oneshot::channel();
                target.push_back(Pending {
                    input,
                    reply,
                    since: now,
                });
                receivers.push(rx);
            }
        }
        self.shared.wake.notify_one();
        Ok(receivers)
    }
}

impl Drop for Batcher {
    fn drop(&mut self) {
        self.shutdown();
    }
}

async fn collect(receivers: Vec<oneshot::Receiver<Row>>) -> Result<Vec<Vec<f32>>, ApiError> {
    let mut rows = Vec::with_capacity(receivers.len());
    for rx in receivers {
        rows.push(
            rx.await
                .map_err(|_| model_failed())?
                .map_err(ApiError::Internal)?,
        );
    }
    Ok(rows)
}

fn shutting_down() -> ApiError {
    ApiError::Unavailable("the server is shutting down".into())
}

fn model_failed() -> ApiError {
    ApiError::Internal("the model thread failed on this batch".into())
}

/// How many texts of these lengths, from the front, fit one batch (at least one).
pub fn text_batch_len(lengths: impl Iterator<Item = usize>, config: &BatchConfig) -> usize {
    let mut n = 0;
    let mut longest = 0;
    for len in lengths {
        let l = longest.max(len);
        if n > 0 && (n >= config.max_batch_size || l * (n + 1) > config.max_batch_tokens) {
            break;
        }
        longest = l;
        n += 1;
    }
    n
}

fn next_job(shared: &Shared) -> Option<Job> {
    let config = &shared.config;
    let mut q = shared.lock();
    loop {
        let text = q.text.front().map(|p| p.since);
        let image = q.image.front().map(|p| p.since);
        let (tower, oldest) = match (text, image) {
            (None, None) if q.closed => return None,
            (None, None) => {
                q = shared.wake.wait(q).unwrap_or_else(|e| e.into_inner());
                continue;
            }
            (Some(t), Some(i)) if i < t => (Tower::Image, i),
            (Some(t), _) => (Tower::Text, t),
            (None, Some(i)) => (Tower::Image, i),
        };
        let take = match tower {
            Tower::Text => text_batch_len(q.text.iter().map(|p| p.input.len()), config),
            Tower::Image => q.image.len().min(config.max_batch_size),
        };
        let waiting = match tower {
            Tower::Text => q.text.len(),
            Tower::Image => q.image.len(),
        };
        let full = take >= config.max_batch_size || take < waiting;
        let deadline = oldest + config.max_wait;
        let now = Instant::now();
        if !full && !q.closed && now < deadline {
            q = shared
                .wake
                .wait_timeout(q, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
            continue;
        }
        return Some(match tower {
            Tower::Text => Job::Text(q.text.drain(..take).collect()),
            Tower::Image => Job::Image(q.image.drain(..take).collect()),
        });
    }
}

fn work(shared: &Shared, clip: &AltClip) {
    while let Some(job) = next_job(shared) {
        // A panic inside candle must not take the server down: the batch's
        // replies are dropped (their requests get a 500) and the loop goes on.
        let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| match job {
            Job::Text(batch) => run_text(shared, clip, batch),
            Job::Image(batch) => run_images(shared, clip, batch),
        }));
        if outcome.is_err() {
            tracing::error!("the model panicked on a batch; its requests failed");
        }
    }
}

fn run_text(shared: &Shared, clip: &AltClip, batch: Vec<Pending<Vec<u32>>>) {
    let start = Instant::now();
    let (ids, replies): (Vec<Vec<u32>>, Vec<Reply>) =
        batch.into_iter().map(|p| (p.input, p.reply)).unzip();
    let tokens = ids.iter().map(Vec::len).sum();
    let result = clip.embed_token_ids(&ids);
    shared
        .metrics
        .record_batch(Tower::Text, replies.len(), tokens, start.elapsed());
    answer(replies, result);
}

fn run_images(shared: &Shared, clip: &AltClip, batch: Vec<Pending<Vec<f32>>>) {
    let start = Instant::now();
    let (pixels, replies): (Vec<Vec<f32>>, Vec<Reply>) =
        batch.into_iter().map(|p| (p.input, p.reply)).unzip();
    let result = clip.embed_pixels(&pixels);
    shared
        .metrics
        .record_batch(Tower::Image, replies.len(), 0, start.elapsed());
    answer(replies, result);
}

fn answer(replies: Vec<Reply>, result: altclip::Result<Vec<Vec<f32>>>) {
    match result {
        Ok(rows) => {
            for (reply, row) in replies.into_iter().zip(rows) {
                let _ = reply.send(Ok(row));
            }
        }
        Err(e) => {
            let message = e.to_string();
            for reply in replies {
                let _ = reply.send(Err(message.clone()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn config(size: usize, tokens: usize) -> BatchConfig {
        BatchConfig {
            max_batch_size: size,
            max_batch_tokens: tokens,
            max_wait: Duration::ZERO,
        }
    }

    #[test]
    fn text_batches_respect_count_and_padded_token_budget() {
        // 4 texts of 10 tokens: 40 padded tokens fit a budget of 40.
        assert_eq!(
            text_batch_len([10, 10, 10, 10].into_iter(), &config(8, 40)),
            4
        );
        // A long text raises the padding of everything before it.
        assert_eq!(
            text_batch_len([10, 10, 30, 10].into_iter(), &config(8, 80)),
            2
        );
        assert_eq!(text_batch_len([10; 9].into_iter(), &config(3, 1000)), 3);
        // One text over the budget still goes alone.
        assert_eq!(text_batch_len([500, 5].into_iter(), &config(8, 100)), 1);
        assert_eq!(text_batch_len(std::iter::empty(), &config(8, 100)), 0);
    }
}
