//! `vocollama serve`: an OpenAI-compatible local server whose image memory is
//! VoCo caches.
//!
//! `POST /v1/chat/completions` answers conversations about images sent as
//! data URLs, streamed as server-sent events or not. Every image is compressed
//! once (stage 1) into a VoCo cache kept in the [`store`] under the SHA-256 of
//! the model, N and its pixels; any later request with the same picture —
//! another turn, another client, another question — is answered from the
//! cache without recomputing the image (`usage.prompt_tokens_details.cached_tokens`
//! says how many prompt positions that saved). `POST /v1/voco` stores an
//! image and returns its key, and `voco:KEY` refers to it, so a client sends
//! a picture once. Several images in one message are the frames of a clip.
//! The [`engine`] decodes every active request together, one batched forward
//! per token. `/` is a chat page, `/metrics` Prometheus counters.

pub mod api;
mod auth;
pub mod engine;
pub mod metrics;
mod page;
mod routes;
pub mod store;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use vocollama_model::voco::FrameStore;
use vocollama_model::{LlavaModel, Tokenizer};

use engine::{Engine, EngineConfig};
use metrics::Metrics;
use store::VocoStore;

/// How the server runs.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub addr: SocketAddr,
    /// Every API request needs `Authorization: Bearer KEY` when set.
    pub api_key: Option<String>,
    /// Requests decoded together at most.
    pub max_batch: usize,
    /// Requests waiting beyond the batch at most (more: 429).
    pub queue: usize,
    /// Largest request body, in bytes (more: 413).
    pub max_body: usize,
    /// A request still running after this long ends with an error.
    pub request_timeout: Duration,
    /// Bytes of VoCo caches kept in memory.
    pub cache_memory: u64,
    /// A directory of `.voco` files backing the store (kept across restarts).
    pub cache_dir: Option<PathBuf>,
    /// VoCo tokens per image.
    pub voco_tokens: usize,
    /// The name `/v1/models` lists and requests give as `model`.
    pub model_id: String,
}

/// What every handler shares.
pub(crate) struct State {
    pub engine: Engine,
    pub store: Arc<Mutex<VocoStore>>,
    pub metrics: Arc<Metrics>,
    pub config: ServerConfig,
    pub fingerprint: [u8; 32],
    /// When the server started (seconds since the Unix epoch), OpenAI's `created` of the model.
    pub created: u64,
}

pub(crate) type AppState = Arc<State>;

/// Seconds since the Unix epoch.
pub(crate) fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Serve `model` until interrupted (Ctrl-C or SIGTERM). `ready` gets the
/// address once the socket listens (port 0 picks a free one).
pub fn serve(
    config: ServerConfig,
    model: LlavaModel,
    tokenizer: Tokenizer,
    ready: impl FnOnce(SocketAddr),
) -> Result<(), String> {
    let disk = match &config.cache_dir {
        Some(dir) => Some(FrameStore::open(dir, model.cache_spec()).map_err(|e| format!("--cache-dir: {e}"))?),
        None => None,
    };
    let store = Arc::new(Mutex::new(VocoStore::new(config.cache_memory, disk)));
    let metrics = Arc::new(Metrics::default());
    let fingerprint = model.fingerprint;
    let engine_config =
        EngineConfig { max_batch: config.max_batch, queue: config.queue, voco_tokens: config.voco_tokens };
    let engine = Engine::start(model, tokenizer, store.clone(), metrics.clone(), engine_config)
        .map_err(|e| format!("cannot start the engine: {e}"))?;
    let addr = config.addr;
    let state = Arc::new(State { engine, store, metrics, config, fingerprint, created: now() });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the server's runtime: {e}"))?;
    runtime.block_on(async move {
        let listener =
            tokio::net::TcpListener::bind(addr).await.map_err(|e| format!("cannot listen on {addr}: {e}"))?;
        ready(listener.local_addr().map_err(|e| e.to_string())?);
        axum::serve(listener, routes::router(state))
            .with_graceful_shutdown(shutdown())
            .await
            .map_err(|e| format!("the server stopped: {e}"))
    })
}

/// Ctrl-C, or SIGTERM where there is one.
async fn shutdown() {
    let interrupt = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = interrupt => {}
        () = terminate => {}
    }
}
