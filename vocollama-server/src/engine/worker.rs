//! The engine's thread: admit a request, step the batch, repeat. Stage 1 of
//! pictures not in the store runs on a second thread meanwhile, so the
//! requests decoding are not held up while a new picture is compressed; the
//! request joins the batch when its caches are ready.

use std::sync::{Arc, Mutex, mpsc as sync_mpsc};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use vocollama_model::infer::batch::DecodeBatch;
use vocollama_model::model::llava::expand_ids;
use vocollama_model::text::{StreamDecoder, Template, prompt_ids};
use vocollama_model::voco::compress;
use vocollama_model::{
    FramePositions, GenerateOptions, LlavaModel, Sampler, SamplingConfig, Session, Stage1Prompt, Tokenizer, VocoCache,
};

use super::stream::{Active, StopFilter};
use super::{ChatJob, Compressed, EngineConfig, Event, Job, Started};
use crate::api::ApiError;
use crate::api::image_url::Image;
use crate::metrics::Metrics;
use crate::store::VocoStore;

/// Frames compressed in one batch (as `vocollama video`'s default).
const FRAME_BATCH: usize = 4;

struct Engine<'m> {
    model: &'m LlavaModel,
    tokenizer: &'m Tokenizer,
    store: &'m Mutex<VocoStore>,
    metrics: &'m Metrics,
    stage1: Stage1Prompt,
    /// Positions one image's stage-1 prompt takes.
    stage1_len: usize,
    voco_tokens: usize,
    /// A clip's prompt ids through the VoCo tokens (an image's are `stage1`'s).
    clip_prefix: Vec<i64>,
    stop_ids: Vec<u32>,
}

pub(super) fn run(
    model: &LlavaModel,
    tokenizer: &Tokenizer,
    store: &Arc<Mutex<VocoStore>>,
    metrics: &Arc<Metrics>,
    config: EngineConfig,
    mut jobs: mpsc::Receiver<Job>,
) {
    let n = config.voco_tokens;
    // The stage-1 prompt is the image prompt's ids through its VoCo tokens; a clip's differ in the system prompt.
    let prepared = Stage1Prompt::new(tokenizer, n).and_then(|stage1| {
        let (ids, end) = Template::VocoVideo { voco_tokens: n }.first_turn_ids(tokenizer, "")?;
        Ok((stage1, ids[..end].to_vec()))
    });
    let (stage1, clip_prefix) = match prepared {
        Ok(p) => p,
        Err(e) => {
            tracing::error!("the engine cannot start: {e}");
            return;
        }
    };
    let engine = Engine {
        model,
        tokenizer,
        store,
        metrics,
        stage1_len: expand_ids(stage1.ids(), model.image_tokens()).len(),
        stage1,
        voco_tokens: n,
        clip_prefix,
        stop_ids: GenerateOptions::new(tokenizer, model, SamplingConfig::default(), 0).stop,
    };
    std::thread::scope(|scope| {
        let (work, work_rx) = sync_mpsc::channel::<Job>();
        let (done, ready) = sync_mpsc::channel::<Resolved>();
        let compressor = &engine;
        std::thread::Builder::new()
            .name("vocollama-stage1".into())
            .spawn_scoped(scope, move || {
                for w in work_rx {
                    match w {
                        Job::Compress { image, key, reply } => {
                            let _ = reply.send(compressor.compress_one(image, key));
                        }
                        Job::Chat(job, events) => {
                            let images = compressor.resolve(&job.images);
                            if done.send(Resolved { job, events, images }).is_err() {
                                return;
                            }
                        }
                    }
                }
            })
            .expect("start the stage-1 thread");
        let mut batch = DecodeBatch::new(model);
        let mut active: Vec<Active> = Vec::new();
        // Requests on the stage-1 thread: they count toward the batch's room.
        let mut waiting = 0usize;
        loop {
            while let Ok(r) = ready.try_recv() {
                waiting -= 1;
                engine.start(r, &mut batch, &mut active);
            }
            if active.len() + waiting < config.max_batch {
                let job = if active.is_empty() && waiting == 0 {
                    match jobs.blocking_recv() {
                        Some(job) => Some(job),
                        None => break,
                    }
                } else {
                    jobs.try_recv().ok()
                };
                if let Some(job) = job {
                    engine.admit(job, &work, &mut waiting, &mut batch, &mut active);
                }
            }
            engine.metrics.set_active(active.len());
            if !active.is_empty() {
                engine.step(&mut batch, &mut active);
            } else if waiting > 0 {
                // Nothing to decode: wait for the stage-1 thread (a new request is looked at every 5 ms).
                if let Ok(r) = ready.recv_timeout(Duration::from_millis(5)) {
                    waiting -= 1;
                    engine.start(r, &mut batch, &mut active);
                }
            }
        }
        // Dropping `work` ends the stage-1 thread; the scope waits for it.
    });
}

/// Why a request leaves the batch.
enum End {
    /// Answered: OpenAI's `finish_reason`.
    Finished(&'static str),
    /// Its client went away.
    Cancelled,
    Failed(ApiError),
}

/// A request whose images the stage-1 thread resolved.
struct Resolved {
    job: Box<ChatJob>,
    events: mpsc::UnboundedSender<Event>,
    images: Result<Images, ApiError>,
}

/// A request's images as one VoCo cache's parts, and what getting them cost.
struct Images {
    caches: Vec<VocoCache>,
    /// Images found in the store.
    from_store: usize,
    stage1: Duration,
}

impl<'m> Engine<'m> {
    /// A queued request: images all in the store (or a `voco:` key to refuse) are
    /// resolved here and the request starts; others, and `/v1/voco`, go to the stage-1 thread.
    fn admit(
        &self,
        job: Job,
        work: &sync_mpsc::Sender<Job>,
        waiting: &mut usize,
        batch: &mut DecodeBatch<'m>,
        active: &mut Vec<Active<'m>>,
    ) {
        if let Job::Chat(chat, events) = job {
            let held = {
                let store = self.store.lock().expect("store");
                chat.images.iter().all(|i| matches!(i, Image::Key { .. }) || store.contains(&i.key()))
            };
            if held {
                let images = self.resolve(&chat.images);
                self.start(Resolved { job: chat, events, images }, batch, active);
            } else if work.send(Job::Chat(chat, events)).is_ok() {
                *waiting += 1;
            }
        } else {
            let _ = work.send(job);
        }
    }

    /// A request whose images are resolved: prefilled and into the batch, or failed.
    fn start(&self, r: Resolved, batch: &mut DecodeBatch<'m>, active: &mut Vec<Active<'m>>) {
        let Resolved { job, events, images } = r;
        if events.is_closed() {
            self.metrics.cancelled();
            return;
        }
        // Its time ran out while it waited.
        if Instant::now() > job.deadline {
            let _ = events.send(Event::Failed(ApiError::timeout(job.timeout.as_secs())));
            return;
        }
        match images.and_then(|images| self.prepare(*job, images, events.clone())) {
            Ok((session, a)) => {
                batch.join(session);
                active.push(a);
            }
            Err(e) => {
                let _ = events.send(Event::Failed(e));
            }
        }
    }

    /// `POST /v1/voco`: the image's cache in the store (compressed unless it is there).
    fn compress_one(&self, image: image::RgbImage, key: [u8; 32]) -> Result<Compressed, ApiError> {
        let start = Instant::now();
        // The lock is let go before a miss compresses (which locks to store the cache).
        let found = self.store.lock().expect("store").get(&key, &self.model.device, self.model.precision.dtype);
        let (cache, cached) = match found {
            Some(c) => (c, true),
            None => (self.compress_images(&[(key, &image)])?.remove(0), false),
        };
        Ok(Compressed {
            key,
            voco_tokens: cache.len(),
            bytes: cache.device_bytes(),
            cached,
            stage1: if cached { Default::default() } else { start.elapsed() },
        })
    }

    /// Stage 1 of pictures not in the store, a few at a time; each cache is stored.
    fn compress_images(&self, images: &[([u8; 32], &image::RgbImage)]) -> Result<Vec<VocoCache>, ApiError> {
        let mut out = Vec::with_capacity(images.len());
        for chunk in images.chunks(FRAME_BATCH) {
            let pixels = chunk
                .iter()
                .map(|(_, rgb)| self.model.preprocess(rgb))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| ApiError::invalid("messages", e.to_string()))?;
            let (caches, _) =
                compress(self.model, &self.stage1, &pixels).map_err(|e| ApiError::internal(e.to_string()))?;
            self.metrics.compressed(chunk.len());
            let mut store = self.store.lock().expect("store");
            for ((key, _), cache) in chunk.iter().zip(caches) {
                if let Err(e) = store.put(*key, &cache) {
                    tracing::warn!("{e}");
                }
                out.push(cache);
            }
        }
        Ok(out)
    }

    /// Each image's cache from the store, or compressed now (all misses together).
    fn resolve(&self, images: &[Image]) -> Result<Images, ApiError> {
        let start = Instant::now();
        let mut caches: Vec<Option<VocoCache>> = Vec::with_capacity(images.len());
        let mut missing = Vec::new();
        for (i, image) in images.iter().enumerate() {
            let found =
                self.store.lock().expect("store").get(&image.key(), &self.model.device, self.model.precision.dtype);
            match (found, image) {
                (Some(c), _) => caches.push(Some(c)),
                (None, Image::Pixels { rgb, key }) => {
                    caches.push(None);
                    missing.push((i, *key, rgb));
                }
                (None, Image::Key { param, key }) => return Err(ApiError::unknown_key(param, key)),
            }
        }
        let from_store = images.len() - missing.len();
        let pictures: Vec<([u8; 32], &image::RgbImage)> = missing.iter().map(|(_, k, r)| (*k, *r)).collect();
        for ((i, _, _), cache) in missing.iter().zip(self.compress_images(&pictures)?) {
            caches[*i] = Some(cache);
        }
        let stage1 = if missing.is_empty() { Duration::ZERO } else { start.elapsed() };
        Ok(Images {
            caches: caches.into_iter().map(|c| c.expect("every image resolved")).collect(),
            from_store,
            stage1,
        })
    }

    /// The images' caches as one, the prompt prefilled: the session and the request's decoding state.
    fn prepare(
        &self,
        job: ChatJob,
        images: Images,
        events: mpsc::UnboundedSender<Event>,
    ) -> Result<(Session<'m>, Active<'m>), ApiError> {
        let Images { caches, from_store, stage1 } = images;
        let n = self.voco_tokens;
        let (cache, template, prefix) = match caches.len() {
            1 => {
                (caches.into_iter().next().expect("one"), Template::VocoVicunaV1 { voco_tokens: n }, self.stage1.ids())
            }
            _ => (
                VocoCache::join(&caches, FramePositions::Sequential, self.model.llm.inv_freq())
                    .map_err(|e| ApiError::internal(e.to_string()))?,
                Template::VocoVideo { voco_tokens: n },
                self.clip_prefix.as_slice(),
            ),
        };

        // The whole conversation tokenized as one prompt; the part after the VoCo tokens is fed.
        let turns: Vec<(&str, Option<&str>)> = job.turns.iter().map(|(q, a)| (q.as_str(), a.as_deref())).collect();
        let internal = |e: vocollama_model::Error| ApiError::internal(e.to_string());
        let ids = prompt_ids(&template.prompt_parts_with_system(job.system.as_deref(), &turns), self.tokenizer)
            .map_err(internal)?;
        if !ids.starts_with(prefix) {
            return Err(ApiError::invalid(
                "messages[0].content",
                "messages[0].content: the tokenizer joins the question to the image part of the prompt",
            ));
        }
        let text = &ids[prefix.len()..];
        let context = self.model.config.llm.max_position_embeddings;
        let needed = cache.next_position() + text.len();
        if needed >= context {
            return Err(ApiError::context(format!(
                "messages: the conversation needs {needed} positions (with {} images of {} VoCo tokens) and one to answer, but the model's context is {context} tokens",
                job.images.len(),
                self.voco_tokens
            )));
        }
        let mut session = Session::from_voco(self.model, &cache).map_err(internal)?;
        let prefill_start = Instant::now();
        let logits = session.next_logits(text, &[]).map_err(internal)?;
        let prefill = prefill_start.elapsed();

        let images = job.images.len();
        let started = Started {
            prompt_tokens: images * self.stage1_len + text.len(),
            cached_tokens: from_store * self.stage1_len,
            images,
            images_from_store: from_store,
            stage1,
            prefill,
            prefill_tokens: text.len(),
        };
        self.metrics.started(&started);
        let _ = events.send(Event::Started(started));
        let room = context - session.position();
        let active = Active {
            events,
            sampler: Sampler::new(job.sampling),
            context: [prefix, text].concat(),
            decoder: StreamDecoder::new(self.tokenizer),
            stop: StopFilter::new(job.stop),
            generated: 0,
            limit: job.max_tokens.unwrap_or(usize::MAX).min(room),
            logits,
            deadline: job.deadline,
            timeout: job.timeout,
            decode_started: Instant::now(),
        };
        Ok((session, active))
    }

    /// One token for every active request, then one batched forward for those that go on.
    fn step(&self, batch: &mut DecodeBatch<'m>, active: &mut Vec<Active<'m>>) {
        let now = Instant::now();
        let mut feed = Vec::with_capacity(active.len());
        let mut generated = 0;
        // Per request: `None` goes on, `Some(end)` leaves the batch.
        let mut ends: Vec<Option<End>> = Vec::with_capacity(active.len());
        for a in active.iter_mut() {
            if a.events.is_closed() {
                ends.push(Some(End::Cancelled));
                continue;
            }
            if now > a.deadline {
                ends.push(Some(End::Failed(ApiError::timeout(a.timeout.as_secs()))));
                continue;
            }
            let id = a.sampler.sample(&a.logits, &a.context) as u32;
            if self.stop_ids.contains(&id) {
                ends.push(Some(End::Finished("stop")));
                continue;
            }
            a.context.push(i64::from(id));
            a.generated += 1;
            generated += 1;
            let piece = a.decoder.push(id).unwrap_or_default();
            let (text, stopped) = a.stop.push(&piece);
            a.send_text(text);
            if stopped {
                ends.push(Some(End::Finished("stop")));
            } else if a.generated >= a.limit {
                ends.push(Some(End::Finished("length")));
            } else {
                ends.push(None);
                feed.push(i64::from(id));
            }
        }
        self.metrics.generated(generated);
        // Those that end leave together: the batch's caches are copied once.
        batch.retain(&ends.iter().map(Option::is_none).collect::<Vec<_>>());
        let mut going_on = Vec::with_capacity(feed.len());
        for (a, end) in active.drain(..).zip(ends) {
            match end {
                None => going_on.push(a),
                Some(End::Finished(reason)) => a.finish(reason),
                Some(End::Cancelled) => self.metrics.cancelled(),
                Some(End::Failed(e)) => {
                    let _ = a.events.send(Event::Failed(e));
                }
            }
        }
        *active = going_on;
        if active.is_empty() {
            return;
        }
        let start = Instant::now();
        match batch.step(&feed) {
            Ok(logits) => {
                for (a, l) in active.iter_mut().zip(logits) {
                    a.logits = l;
                }
                self.metrics.step(active.len(), start.elapsed());
            }
            Err(e) => {
                tracing::error!("a decode step failed: {e}");
                for a in active.drain(..).rev() {
                    let _ = a.events.send(Event::Failed(ApiError::internal(e.to_string())));
                }
                *batch = DecodeBatch::new(self.model);
            }
        }
    }
}
