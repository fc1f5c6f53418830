//! The routes, and the small endpoints: models, health, metrics.

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::json;
use tower_http::trace::TraceLayer;

use crate::api::{ApiError, chat, voco};
use crate::{AppState, auth, page};

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/", get(page::index))
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .route("/v1/models", get(models))
        .route("/v1/models/{id}", get(model))
        .route("/v1/chat/completions", post(chat::completions))
        .route("/v1/voco", post(voco::store_image))
        .fallback(not_found)
        .method_not_allowed_fallback(wrong_method)
        .layer(axum::middleware::from_fn_with_state(state.clone(), auth::require_key))
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}

async fn not_found(uri: Uri) -> Response {
    ApiError::not_found(None, "not_found", format!("no such endpoint: {}", uri.path())).into_response()
}

async fn wrong_method(method: axum::http::Method, uri: Uri) -> Response {
    let mut e = ApiError::not_found(None, "method_not_allowed", format!("{} does not take {method}", uri.path()));
    e.status = StatusCode::METHOD_NOT_ALLOWED;
    e.into_response()
}

async fn health(State(s): State<AppState>) -> Response {
    s.metrics.request("health");
    axum::Json(json!({"status": "ok", "model": s.config.model_id})).into_response()
}

fn model_object(s: &AppState) -> serde_json::Value {
    json!({"id": s.config.model_id, "object": "model", "created": s.created, "owned_by": "vocollama"})
}

async fn models(State(s): State<AppState>) -> Response {
    s.metrics.request("models");
    axum::Json(json!({"object": "list", "data": [model_object(&s)]})).into_response()
}

async fn model(State(s): State<AppState>, Path(id): Path<String>) -> Response {
    s.metrics.request("models");
    if id != s.config.model_id {
        s.metrics.error("model_not_found");
        return ApiError::not_found(
            Some("model".into()),
            "model_not_found",
            format!("model `{id}` is not served here; this server serves `{}`", s.config.model_id),
        )
        .into_response();
    }
    axum::Json(model_object(&s)).into_response()
}

async fn metrics(State(s): State<AppState>) -> Response {
    s.metrics.request("metrics");
    let store = s.store.lock().expect("store").stats();
    let text = s.metrics.render(store, s.engine.queued());
    (StatusCode::OK, [(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}
