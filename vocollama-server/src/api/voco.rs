//! `POST /v1/voco` (this server's own): `{"image": "data:image/...;base64,..."}`
//! in, the image's key in the VoCo store out — compressed now, or found there.
//! `{"type": "image_url", "image_url": {"url": "voco:KEY"}}` then refers to it.

use axum::body::Body;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::chat::{body, decode_images, parse_json, respond};
use super::error::ApiError;
use super::image_url::{Image, parse_url};
use crate::AppState;
use vocollama_model::voco::frame_store::hex;

pub(crate) async fn store_image(State(s): State<AppState>, raw: Body) -> Response {
    s.metrics.request("voco");
    respond(&s, compress(&s, raw).await)
}

async fn compress(s: &AppState, raw: Body) -> Result<Response, ApiError> {
    let raw = body(s, raw).await?;
    let value = parse_json(&raw)?;
    let url = value
        .get("image")
        .and_then(Value::as_str)
        .ok_or_else(|| ApiError::invalid("image", "image: expected a data URL string (data:image/png;base64,...)"))?;
    let source = parse_url(url, "image")?;
    let image = decode_images(s, vec![source]).await?.remove(0);
    let Image::Pixels { rgb, key } = image else {
        return Err(ApiError::invalid("image", "image: expected a data URL; a voco: key is already stored"));
    };
    let c = s.engine.compress(rgb, key).await?;
    Ok(axum::Json(json!({
        "key": hex(&c.key),
        "url": format!("voco:{}", hex(&c.key)),
        "voco_tokens": c.voco_tokens,
        "bytes": c.bytes,
        "cached": c.cached,
        "stage1_ms": c.stage1.as_secs_f64() * 1e3,
    }))
    .into_response())
}
