//! `--api-key`: every API request carries `Authorization: Bearer KEY`,
//! compared in constant time. The chat page and `/health` are open (the page
//! asks for the key and sends it with its own requests).

use axum::extract::{Request, State};
use axum::http::header::AUTHORIZATION;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use subtle::ConstantTimeEq;

use crate::AppState;
use crate::api::ApiError;

pub async fn require_key(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let Some(key) = &state.config.api_key else { return next.run(request).await };
    let open = matches!(request.uri().path(), "/" | "/health");
    let given = request
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if open || bool::from(given.as_bytes().ct_eq(key.as_bytes())) {
        return next.run(request).await;
    }
    state.metrics.error("invalid_api_key");
    ApiError::unauthorized().into_response()
}
