//! A clip into one VoCo cache (`docs/design.md` §8): frames compressed a
//! batch at a time — only that batch's image tokens exist at once — frames
//! found in a frame store read back instead, and the frame caches joined in
//! time order. A clip whose positions cannot fit in the context is refused
//! before any work.

use image::RgbImage;

use super::budget::FrameBudget;
use super::cache::VocoCache;
use super::compress::{ImageStats, Stage1Prompt, compress};
use super::frame_store::{Entry, FrameStore};
use super::join::FramePositions;
use crate::error::{Error, Result};
use crate::media::preprocess::Pixels;
use crate::model::llava::LlavaModel;
use crate::text::Tokenizer;

/// How a clip is compressed and joined.
#[derive(Clone, Copy)]
pub struct VideoOptions<'a> {
    /// VoCo tokens per frame.
    pub voco_tokens: usize,
    pub positions: FramePositions,
    /// Frames that go through the tower and stage 1 together.
    pub frame_batch: usize,
    /// Frame caches kept by content: frames found there are not recomputed.
    pub store: Option<&'a FrameStore>,
    /// Positions the text after the frames needs (the longest question and its answer).
    pub reserve: usize,
}

/// A compressed clip and what it cost.
pub struct CompressedVideo {
    /// The frames' caches joined in time order.
    pub cache: VocoCache,
    /// Frames run through the tower and stage 1; the rest came from the store.
    pub computed: usize,
    /// Vision and stage-1 time summed over the computed frames; the joined cache's bytes.
    pub stats: ImageStats,
    /// Where the clip's positions go in the context.
    pub budget: FrameBudget,
    /// Why the frame store could not keep the computed frames, if it could not (the
    /// clip is answered all the same: the store only saves work).
    pub store_failed: Option<String>,
}

/// Compress the `count` frames of `frames` (decoded one at a time as the
/// iterator is advanced) into one video cache; `on_frame` hears each frame
/// done (computed or read from the store).
pub fn compress_video(
    model: &LlavaModel,
    tokenizer: &Tokenizer,
    frames: impl IntoIterator<Item = Result<RgbImage>>,
    count: usize,
    options: &VideoOptions,
    on_frame: &mut dyn FnMut(),
) -> Result<CompressedVideo> {
    let n = options.voco_tokens;
    let prompt = Stage1Prompt::new(tokenizer, n)?;
    if options.frame_batch == 0 {
        return Err(Error::Invalid("--frame-batch must be at least 1".into()));
    }
    let context = model.config.llm.max_position_embeddings;
    let budget = FrameBudget::new(tokenizer, context, model.image_tokens(), n)?;
    // Frame after frame, positions grow with the clip: refuse what cannot be answered before any work.
    let fit = budget.voco_frames(options.reserve);
    if options.positions == FramePositions::Sequential && count > fit {
        return Err(Error::Invalid(format!(
            "{count} frames at {n} VoCo tokens each need {} positions with the question and the answer, but the context is {context}: \
             at most {fit} frames fit (take fewer frames, or share their positions)",
            budget.voco_positions(count) + budget.text_after + options.reserve,
        )));
    }
    let mut work = Batches {
        model,
        prompt,
        store: options.store,
        caches: vec![None; count],
        pending: Vec::new(),
        stats: ImageStats::default(),
        computed: 0,
        store_failed: None,
    };
    let mut seen = 0;
    for (slot, frame) in frames.into_iter().enumerate().take(count) {
        let frame = frame?;
        seen += 1;
        let entry = options.store.map(|s| s.entry(&frame, n));
        if let (Some(store), Some(entry)) = (options.store, &entry)
            && let Some(cache) = store.get(entry, &model.device, model.precision.dtype)
        {
            work.caches[slot] = Some(cache);
            on_frame();
            continue;
        }
        work.pending.push((slot, model.preprocess(&frame)?, entry));
        if work.pending.len() == options.frame_batch {
            work.flush(on_frame)?;
        }
    }
    work.flush(on_frame)?;
    if seen != count {
        return Err(Error::Invalid(format!("the clip gave {seen} frames, not the {count} asked for")));
    }
    let Batches { caches, mut stats, computed, store_failed, .. } = work;
    let caches: Vec<VocoCache> = caches.into_iter().map(|c| c.expect("every frame compressed or read")).collect();
    let cache = VocoCache::join(&caches, options.positions, model.llm.inv_freq())?;
    stats.cache_bytes = cache.device_bytes();
    Ok(CompressedVideo { cache, computed, stats, budget, store_failed })
}

/// Frames on their way through stage 1, a batch at a time.
struct Batches<'a> {
    model: &'a LlavaModel,
    prompt: Stage1Prompt,
    store: Option<&'a FrameStore>,
    /// Each frame's cache, by its place in the clip, once computed or read.
    caches: Vec<Option<VocoCache>>,
    /// Frames waiting for the tower: their place, pixels and where the store keeps them.
    pending: Vec<(usize, Pixels, Option<Entry>)>,
    stats: ImageStats,
    computed: usize,
    /// The first failure to write to the store; after it the store is not written to.
    store_failed: Option<String>,
}

impl Batches<'_> {
    /// Compress the waiting frames as one batch (and keep them in the store).
    fn flush(&mut self, on_frame: &mut dyn FnMut()) -> Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let (slots, pixels): (Vec<_>, Vec<Pixels>) =
            std::mem::take(&mut self.pending).into_iter().map(|(slot, pixels, entry)| ((slot, entry), pixels)).unzip();
        let (batch, cost) = compress(self.model, &self.prompt, &pixels)?;
        self.stats.vision_encode += cost.vision_encode;
        self.stats.compress += cost.compress;
        for ((slot, entry), cache) in slots.into_iter().zip(batch) {
            if let (Some(store), Some(entry), None) = (self.store, &entry, &self.store_failed)
                && let Err(e) = store.put(entry, &cache)
            {
                self.store_failed = Some(e.to_string());
            }
            self.caches[slot] = Some(cache);
            self.computed += 1;
            on_frame();
        }
        Ok(())
    }
}
