//! Errors as OpenAI sends them: a status and
//! `{"error": {"message", "type", "param", "code"}}`.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    /// The request field at fault (`messages[0].content[1].image_url.url`), if one is.
    pub param: Option<String>,
    pub code: &'static str,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self { status, message: message.into(), param: None, code }
    }

    /// 400: the request is wrong; `param` names the field.
    pub fn invalid(param: impl Into<String>, message: impl Into<String>) -> Self {
        Self { param: Some(param.into()), ..Self::new(StatusCode::BAD_REQUEST, "invalid_request", message) }
    }

    /// 400 for a request that is not JSON of the expected shape.
    pub fn malformed(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_json", message)
    }

    /// 500: the engine dropped a request without its answer or an error (it stopped).
    pub fn no_answer() -> Self {
        Self::internal("the engine ended the request without an answer")
    }

    /// 400: the prompt does not fit in the model's context.
    pub fn context(message: impl Into<String>) -> Self {
        Self {
            param: Some("messages".into()),
            ..Self::new(StatusCode::BAD_REQUEST, "context_length_exceeded", message)
        }
    }

    pub fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "invalid_api_key",
            "a valid API key is needed: send the header `Authorization: Bearer KEY`",
        )
    }

    pub fn not_found(param: Option<String>, code: &'static str, message: impl Into<String>) -> Self {
        Self { param, ..Self::new(StatusCode::NOT_FOUND, code, message) }
    }

    /// 404 for a `voco:` key the store does not hold.
    pub fn unknown_key(param: &str, key: &[u8; 32]) -> Self {
        Self::not_found(
            Some(param.into()),
            "voco_key_not_found",
            format!(
                "{param}: no image with key {} is in the VoCo store (never sent, or evicted since; POST /v1/voco first)",
                vocollama_model::voco::frame_store::hex(key)
            ),
        )
    }

    pub fn too_large(limit: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "request_too_large",
            format!("the request body is over the limit of {limit} bytes"),
        )
    }

    pub fn busy(queue: usize) -> Self {
        Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            "queue_full",
            format!("the server is busy: {queue} requests are already waiting; try again shortly"),
        )
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message)
    }

    pub fn timeout(seconds: u64) -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "timeout",
            format!("the request ran past the server's limit of {seconds} s"),
        )
    }

    /// 500: the model failed on a request that was valid.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal_error", message)
    }

    /// OpenAI's `type`: what kind of failure, by status.
    pub fn kind(&self) -> &'static str {
        match self.status.as_u16() {
            400 | 404 | 405 | 413 => "invalid_request_error",
            401 => "authentication_error",
            429 => "rate_limit_error",
            503 => "server_busy",
            _ => "server_error",
        }
    }

    pub fn body(&self) -> serde_json::Value {
        json!({"error": {"message": self.message, "type": self.kind(), "param": self.param, "code": self.code}})
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, axum::Json(self.body())).into_response()
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}
