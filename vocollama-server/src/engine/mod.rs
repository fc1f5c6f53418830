//! The engine: one thread owns the model and serves every request. Requests
//! wait in a bounded queue (full: 429); each is admitted when the batch has
//! room. Its images are found in the VoCo store, or compressed (stage 1) on a
//! second thread while the batch goes on decoding; then its prompt is
//! prefilled and it decodes with every other active request, one batched
//! forward per token ([`vocollama_model::infer::batch::DecodeBatch`]), one
//! admission between two steps so prefills interleave with decoding. A
//! request whose client went away, or past its deadline, leaves the batch at
//! the next step.

mod stream;
mod worker;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use image::RgbImage;
use tokio::sync::{mpsc, oneshot};
use vocollama_model::{LlavaModel, SamplingConfig, Tokenizer};

use crate::api::ApiError;
use crate::api::image_url::Image;
use crate::metrics::Metrics;
use crate::store::VocoStore;

/// A chat completion, parsed and with its images decoded.
pub struct ChatJob {
    /// A system prompt in place of the template's own.
    pub system: Option<String>,
    pub turns: Vec<(String, Option<String>)>,
    pub images: Vec<Image>,
    pub sampling: SamplingConfig,
    pub max_tokens: Option<usize>,
    pub stop: Vec<String>,
    /// When the request stops, answered or not (its arrival plus `--request-timeout`).
    pub deadline: Instant,
    /// `--request-timeout`, for the error that says it was reached.
    pub timeout: std::time::Duration,
}

/// What a chat completion reports, in order: `Started` (or `Failed`), then
/// `Text` pieces, then `Done` (or `Failed`).
#[derive(Debug)]
pub enum Event {
    Started(Started),
    Text(String),
    Done(Done),
    Failed(ApiError),
}

#[derive(Debug, Clone, Copy)]
pub struct Started {
    /// The positions the prompt stands for: each image's stage-1 prompt and the conversation's text.
    pub prompt_tokens: usize,
    /// Of those, the ones whose computation came from the VoCo store.
    pub cached_tokens: usize,
    pub images: usize,
    /// Images found in the VoCo store (the others were compressed for this request).
    pub images_from_store: usize,
    /// Stage 1 (vision tower and compression) of the images not in the store.
    pub stage1: Duration,
    /// The conversation's text after the VoCo cache.
    pub prefill: Duration,
    pub prefill_tokens: usize,
}

#[derive(Debug, Clone, Copy)]
pub struct Done {
    /// OpenAI's `finish_reason`: `stop` or `length`.
    pub finish_reason: &'static str,
    pub completion_tokens: usize,
    pub decode: Duration,
}

/// `POST /v1/voco`'s answer.
#[derive(Debug, Clone, Copy)]
pub struct Compressed {
    pub key: [u8; 32],
    pub voco_tokens: usize,
    pub bytes: usize,
    /// Whether it was already in the store.
    pub cached: bool,
    pub stage1: Duration,
}

pub(crate) enum Job {
    Chat(Box<ChatJob>, mpsc::UnboundedSender<Event>),
    Compress { image: RgbImage, key: [u8; 32], reply: oneshot::Sender<Result<Compressed, ApiError>> },
}

/// The handle requests are submitted through.
#[derive(Clone)]
pub struct Engine {
    jobs: mpsc::Sender<Job>,
    queue: usize,
}

/// How the engine runs.
#[derive(Debug, Clone, Copy)]
pub struct EngineConfig {
    /// Requests decoded together at most.
    pub max_batch: usize,
    /// Requests waiting for room at most (beyond: 429).
    pub queue: usize,
    /// VoCo tokens per image.
    pub voco_tokens: usize,
}

impl Engine {
    /// Start the engine's thread, which owns `model` until every handle is dropped.
    pub fn start(
        model: LlavaModel,
        tokenizer: Tokenizer,
        store: Arc<Mutex<VocoStore>>,
        metrics: Arc<Metrics>,
        config: EngineConfig,
    ) -> std::io::Result<Self> {
        let (jobs, rx) = mpsc::channel(config.queue.max(1));
        std::thread::Builder::new()
            .name("vocollama-engine".into())
            .spawn(move || worker::run(&model, &tokenizer, &store, &metrics, config, rx))?;
        Ok(Self { jobs, queue: config.queue })
    }

    /// Requests waiting to be admitted.
    pub fn queued(&self) -> usize {
        self.jobs.max_capacity() - self.jobs.capacity()
    }

    fn submit(&self, job: Job) -> Result<(), ApiError> {
        self.jobs.try_send(job).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => ApiError::busy(self.queue),
            mpsc::error::TrySendError::Closed(_) => ApiError::unavailable("the model's engine has stopped"),
        })
    }

    /// Queue a chat completion; its events arrive on the receiver.
    pub fn chat(&self, job: ChatJob) -> Result<mpsc::UnboundedReceiver<Event>, ApiError> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.submit(Job::Chat(Box::new(job), tx))?;
        Ok(rx)
    }

    /// Queue the compression of an image into the store.
    pub async fn compress(&self, image: RgbImage, key: [u8; 32]) -> Result<Compressed, ApiError> {
        let (reply, rx) = oneshot::channel();
        self.submit(Job::Compress { image, key, reply })?;
        rx.await.map_err(|_| ApiError::unavailable("the model's engine has stopped"))?
    }
}
