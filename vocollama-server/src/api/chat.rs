//! `POST /v1/chat/completions`: the request checked and its images decoded
//! here, the answer from the engine, returned whole or streamed as OpenAI's
//! server-sent events (`chat.completion.chunk` objects, then `data: [DONE]`).

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use axum::body::Body;
use axum::extract::State;
use axum::response::sse::{Event as SseEvent, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use serde_json::{Value, json};
use tokio::sync::mpsc::UnboundedReceiver;

use super::error::ApiError;
use super::image_url::Image;
use super::request::ChatRequest;
use crate::engine::{ChatJob, Done, Event, Started};
use crate::{AppState, now};

/// Bytes read past `--max-body` before a 413 is sent: a client that sends a
/// body too large gets the 413 instead of a connection closed while it writes.
const DRAIN: usize = 64 << 20;

/// The request body, or 413 / 400 in OpenAI's shape. Beyond the limit the
/// rest is read and dropped (up to [`DRAIN`] bytes more), never kept.
pub(crate) async fn body(s: &AppState, body: Body) -> Result<Vec<u8>, ApiError> {
    let limit = s.config.max_body;
    let mut stream = body.into_data_stream();
    let (mut kept, mut total) = (Vec::new(), 0usize);
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| ApiError::malformed(format!("cannot read the request body: {e}")))?;
        total = total.saturating_add(chunk.len());
        if total <= limit {
            kept.extend_from_slice(&chunk);
        } else {
            kept = Vec::new();
            if total > limit.saturating_add(DRAIN) {
                break;
            }
        }
    }
    if total > limit {
        return Err(ApiError::too_large(limit));
    }
    Ok(kept)
}

/// A handler's outcome as its response, an error counted by its code.
pub(crate) fn respond(s: &AppState, outcome: Result<Response, ApiError>) -> Response {
    outcome.unwrap_or_else(|e| {
        s.metrics.error(e.code);
        e.into_response()
    })
}

/// A request body as JSON.
pub(crate) fn parse_json(body: &[u8]) -> Result<Value, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError::malformed(format!("the request body is not valid JSON: {e}")))
}

pub(crate) async fn completions(State(s): State<AppState>, raw: Body) -> Response {
    s.metrics.request("chat_completions");
    respond(&s, answer(&s, raw).await)
}

/// Images decoded off the async threads; keys of the VoCo store checked before queueing.
pub(crate) async fn decode_images(
    s: &AppState,
    sources: Vec<super::image_url::ImageSource>,
) -> Result<Vec<Image>, ApiError> {
    let (fingerprint, n) = (s.fingerprint, s.config.voco_tokens);
    let images = tokio::task::spawn_blocking(move || {
        sources.into_iter().map(|src| src.decode(&fingerprint, n)).collect::<Result<Vec<_>, _>>()
    })
    .await
    .map_err(|e| ApiError::internal(format!("decoding the images failed: {e}")))??;
    for image in &images {
        if let Image::Key { key, param } = image
            && !s.store.lock().expect("store").contains(key)
        {
            return Err(ApiError::unknown_key(param, key));
        }
    }
    Ok(images)
}

async fn answer(s: &AppState, raw: Body) -> Result<Response, ApiError> {
    let raw = body(s, raw).await?;
    let request = ChatRequest::parse(&raw, &s.config.model_id)?;
    drop(raw);
    let received = Instant::now();
    let images = decode_images(s, request.images).await?;
    let job = ChatJob {
        system: request.system,
        turns: request.turns,
        images,
        sampling: request.sampling,
        max_tokens: request.max_tokens,
        stop: request.stop,
        deadline: received + s.config.request_timeout,
        timeout: s.config.request_timeout,
    };
    let mut events = s.engine.chat(job)?;
    let started = match events.recv().await {
        Some(Event::Started(started)) => started,
        Some(Event::Failed(e)) => return Err(e),
        _ => return Err(ApiError::no_answer()),
    };
    let reply = Reply { id: completion_id(), created: now(), model: s.config.model_id.clone(), started };
    if request.stream {
        return Ok(stream(s.clone(), reply, events, request.include_usage));
    }
    let mut text = String::new();
    loop {
        match events.recv().await {
            Some(Event::Text(t)) => text.push_str(&t),
            Some(Event::Done(done)) => {
                let mut body = reply.object("chat.completion");
                body["choices"] = json!([{
                    "index": 0,
                    "message": {"role": "assistant", "content": text},
                    "logprobs": null,
                    "finish_reason": done.finish_reason,
                }]);
                body["usage"] = reply.usage(&done);
                body["timings"] = reply.timings(&done);
                return Ok(axum::Json(body).into_response());
            }
            Some(Event::Failed(e)) => return Err(e),
            Some(Event::Started(_)) | None => {
                return Err(ApiError::no_answer());
            }
        }
    }
}

fn completion_id() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
    format!("chatcmpl-{:08x}{:08x}", nanos, NEXT.fetch_add(1, Ordering::Relaxed))
}

/// What every object of one answer repeats.
struct Reply {
    id: String,
    created: u64,
    model: String,
    started: Started,
}

impl Reply {
    fn object(&self, object: &str) -> Value {
        json!({"id": self.id, "object": object, "created": self.created, "model": self.model})
    }

    fn usage(&self, done: &Done) -> Value {
        json!({
            "prompt_tokens": self.started.prompt_tokens,
            "completion_tokens": done.completion_tokens,
            "total_tokens": self.started.prompt_tokens + done.completion_tokens,
            "prompt_tokens_details": {"cached_tokens": self.started.cached_tokens},
        })
    }

    /// What the answer cost (not in OpenAI's objects; clients ignore fields they do not know).
    fn timings(&self, done: &Done) -> Value {
        let ms = |d: std::time::Duration| d.as_secs_f64() * 1e3;
        let st = &self.started;
        json!({
            "images": st.images,
            "images_from_store": st.images_from_store,
            "stage1_ms": ms(st.stage1),
            "prefill_tokens": st.prefill_tokens,
            "prefill_ms": ms(st.prefill),
            "decode_tokens": done.completion_tokens,
            "decode_ms": ms(done.decode),
            "decode_tokens_per_second": done.completion_tokens as f64 / done.decode.as_secs_f64().max(1e-9),
        })
    }

    fn chunk(&self, delta: Value, finish_reason: Option<&str>) -> Value {
        let mut c = self.object("chat.completion.chunk");
        c["choices"] = json!([{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish_reason}]);
        c
    }
}

/// The answer as server-sent events: the role, the text as it comes, the
/// finish reason (with the timings), the usage if asked for, `[DONE]`. An
/// error after the first event is sent as an `{"error": ...}` event.
fn stream(s: AppState, reply: Reply, events: UnboundedReceiver<Event>, include_usage: bool) -> Response {
    let first = SseEvent::default().data(reply.chunk(json!({"role": "assistant", "content": ""}), None).to_string());
    let state = (events, VecDeque::from([first]), false, reply);
    let body = futures_util::stream::unfold(state, move |(mut events, mut queue, mut over, reply)| {
        let s = s.clone();
        async move {
            loop {
                if let Some(e) = queue.pop_front() {
                    return Some((Ok::<_, Infallible>(e), (events, queue, over, reply)));
                }
                if over {
                    return None;
                }
                let data = |v: Value| SseEvent::default().data(v.to_string());
                match events.recv().await {
                    Some(Event::Text(t)) => queue.push_back(data(reply.chunk(json!({"content": t}), None))),
                    Some(Event::Done(done)) => {
                        let mut last = reply.chunk(json!({}), Some(done.finish_reason));
                        last["timings"] = reply.timings(&done);
                        queue.push_back(data(last));
                        if include_usage {
                            let mut usage = reply.object("chat.completion.chunk");
                            usage["choices"] = json!([]);
                            usage["usage"] = reply.usage(&done);
                            queue.push_back(data(usage));
                        }
                        queue.push_back(SseEvent::default().data("[DONE]"));
                        over = true;
                    }
                    Some(Event::Failed(e)) => {
                        s.metrics.error(e.code);
                        queue.push_back(data(e.body()));
                        over = true;
                    }
                    Some(Event::Started(_)) | None => {
                        let e = ApiError::no_answer();
                        s.metrics.error(e.code);
                        queue.push_back(data(e.body()));
                        over = true;
                    }
                }
            }
        }
    });
    Sse::new(body).into_response()
}
