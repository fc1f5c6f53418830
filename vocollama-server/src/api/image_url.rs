//! Image URLs as clients send them: `data:image/png;base64,...` (PNG, JPEG,
//! WebP, GIF), or `voco:KEY` for an image already in the VoCo store
//! (`POST /v1/voco`). Nothing is fetched from the network.

use base64::Engine;
use image::{ImageFormat, RgbImage};
use vocollama_model::media::decode::decode_rgb;

use super::error::ApiError;

/// Where an image of a request comes from.
#[derive(Debug)]
pub enum ImageSource {
    /// Encoded image bytes from a data URL.
    Data { bytes: Vec<u8>, format: ImageFormat, param: String },
    /// A key of the VoCo store.
    Key { key: [u8; 32], param: String },
}

/// An image of a request, ready for the engine: decoded pixels with their
/// store key, or a store key alone.
#[derive(Debug)]
pub enum Image {
    Pixels { rgb: RgbImage, key: [u8; 32] },
    Key { key: [u8; 32], param: String },
}

impl Image {
    pub fn key(&self) -> [u8; 32] {
        match self {
            Image::Pixels { key, .. } | Image::Key { key, .. } => *key,
        }
    }
}

/// A key in hexadecimal (64 digits) back to bytes.
pub fn parse_key(hex: &str) -> Option<[u8; 32]> {
    if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let mut key = [0u8; 32];
    for (i, k) in key.iter_mut().enumerate() {
        *k = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(key)
}

/// Read `url` (the field `param`) without decoding the picture yet.
pub fn parse_url(url: &str, param: &str) -> Result<ImageSource, ApiError> {
    if let Some(hex) = url.strip_prefix("voco:") {
        let key = parse_key(hex).ok_or_else(|| {
            ApiError::invalid(param, format!("{param}: a voco: key is 64 hexadecimal digits (from POST /v1/voco)"))
        })?;
        return Ok(ImageSource::Key { key, param: param.into() });
    }
    let Some(rest) = url.strip_prefix("data:") else {
        let scheme = url.split(':').next().unwrap_or("");
        return Err(ApiError::invalid(
            param,
            format!(
                "{param}: `{scheme}:` URLs are not fetched; send the image as a data:image/...;base64 URL or a voco: key"
            ),
        ));
    };
    let (meta, payload) = rest
        .split_once(',')
        .ok_or_else(|| ApiError::invalid(param, format!("{param}: a data URL needs a comma before its data")))?;
    let mime = meta.strip_suffix(";base64").ok_or_else(|| {
        ApiError::invalid(param, format!("{param}: only base64 data URLs are taken (data:image/png;base64,...)"))
    })?;
    let format = match mime.to_ascii_lowercase().as_str() {
        "image/png" => ImageFormat::Png,
        "image/jpeg" | "image/jpg" => ImageFormat::Jpeg,
        "image/webp" => ImageFormat::WebP,
        "image/gif" => ImageFormat::Gif,
        other => {
            return Err(ApiError::invalid(
                param,
                format!(
                    "{param}: `{other}` is not an image type this server reads (image/png, image/jpeg, image/webp, image/gif)"
                ),
            ));
        }
    };
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(payload.trim())
        .map_err(|e| ApiError::invalid(param, format!("{param}: the data URL's base64 is invalid: {e}")))?;
    Ok(ImageSource::Data { bytes, format, param: param.into() })
}

impl ImageSource {
    /// Decode the picture (under the decoding limits: a decompression bomb is
    /// refused from its header) and key it for the model `fingerprint` at `n` VoCo tokens.
    pub fn decode(self, fingerprint: &[u8; 32], n: usize) -> Result<Image, ApiError> {
        match self {
            ImageSource::Key { key, param } => Ok(Image::Key { key, param }),
            ImageSource::Data { bytes, format, param } => {
                let rgb = decode_rgb(&bytes, format).map_err(|e| ApiError::invalid(&param, format!("{param}: {e}")))?;
                let key = vocollama_model::voco::frame_store::key(fingerprint, &rgb, n);
                Ok(Image::Pixels { rgb, key })
            }
        }
    }
}
