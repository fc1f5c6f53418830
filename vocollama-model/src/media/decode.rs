//! Decoding image files within limits: every decoder (GIF frames included) is
//! given `image`'s `Limits`, so a small file declaring a huge picture is
//! refused before its pixels are allocated, and a JPEG cut short is refused
//! rather than decoded into grey rows.

use std::io::BufReader;
use std::path::Path;

use image::codecs::gif::GifDecoder;
use image::{ImageDecoder, ImageFormat, ImageReader, Limits, RgbImage};

use crate::error::{Error, Result};

/// The widest or tallest image decoded: 16384 pixels, beyond any camera or screen.
pub const MAX_SIDE: u32 = 16384;
/// The most pixels an image may have at any step of preprocessing (decoded,
/// padded to a square, resized): 64 Mpx, 192 MiB as RGB.
pub const MAX_PIXELS: u64 = 64 << 20;

/// The limits every decoder runs under: sides, and the bytes one decoding may allocate.
pub fn limits() -> Limits {
    let mut limits = Limits::default();
    limits.max_image_width = Some(MAX_SIDE);
    limits.max_image_height = Some(MAX_SIDE);
    // RGBA at 8 bits for the largest picture allowed, plus the decoder's own buffers.
    limits.max_alloc = Some(MAX_PIXELS * 4 + (64 << 20));
    limits
}

/// Refuse a `w x h` picture over the pixel budget, naming `what` it is (the image, or a step of preprocessing).
pub fn check_pixels(what: &str, w: u64, h: u64) -> std::result::Result<(), String> {
    match w.checked_mul(h) {
        Some(p) if p <= MAX_PIXELS => Ok(()),
        _ => Err(format!("{what} would be {w} x {h} pixels, over the limit of {MAX_PIXELS} pixels")),
    }
}

/// What went wrong decoding, with the limit named where one was hit.
fn decode_error(e: image::ImageError) -> String {
    match e {
        image::ImageError::Limits(_) => format!(
            "cannot decode image: it exceeds the decoding limits ({MAX_SIDE} pixels a side, {} MiB of pixels)",
            limits().max_alloc.unwrap_or(0) >> 20
        ),
        e => format!("cannot decode image: {e}"),
    }
}

fn image_error(path: &Path, msg: impl Into<String>) -> Error {
    Error::Image { path: path.to_path_buf(), msg: msg.into() }
}

/// Decode the image file at `path` (any format `image` reads) into RGB, within the limits.
pub fn open_rgb(path: &Path) -> Result<RgbImage> {
    let reader = || ImageReader::open(path).and_then(|r| r.with_guessed_format()).map_err(|e| Error::io(path, e));
    // The header first: a picture over the budget is refused before any pixel is decoded.
    let (w, h) = reader()?.into_dimensions().map_err(|e| image_error(path, decode_error(e)))?;
    check_pixels("the image", w as u64, h as u64).map_err(|m| image_error(path, m))?;
    let mut reader = reader()?;
    let format = reader.format();
    reader.limits(limits());
    if format == Some(ImageFormat::Jpeg) {
        // The image's size was checked; its compressed bytes are at most a few bytes a pixel.
        let data = crate::io::bounded::read_bounded(path, MAX_PIXELS * 8)?;
        jpeg_is_whole(&data).map_err(|m| image_error(path, m))?;
    }
    let img = reader.decode().map_err(|e| image_error(path, decode_error(e)))?;
    Ok(img.to_rgb8())
}

/// A JPEG's last scan must end with the end-of-image marker: a file cut short
/// lacks it (inside a scan's data `FF` is always followed by `00` or a restart
/// marker, so `FF D9` there is the real end).
fn jpeg_is_whole(data: &[u8]) -> std::result::Result<(), &'static str> {
    let last_scan = data.windows(2).rposition(|w| w == [0xFF, 0xDA]);
    let whole = last_scan.is_some_and(|s| data[s..].windows(2).any(|w| w == [0xFF, 0xD9]));
    if whole { Ok(()) } else { Err("the JPEG is truncated (no end-of-image marker after its last scan)") }
}

/// Decode an image held in memory (a request's body) in `format`, under the
/// same limits and checks as a file: the header's size first, then the pixels.
pub fn decode_rgb(data: &[u8], format: ImageFormat) -> std::result::Result<RgbImage, String> {
    let reader = || {
        let mut r = ImageReader::new(std::io::Cursor::new(data));
        r.set_format(format);
        r
    };
    let (w, h) = reader().into_dimensions().map_err(decode_error)?;
    check_pixels("the image", w as u64, h as u64)?;
    if format == ImageFormat::Jpeg {
        jpeg_is_whole(data)?;
    }
    let mut reader = reader();
    reader.limits(limits());
    Ok(reader.decode().map_err(decode_error)?.to_rgb8())
}

/// A GIF decoder for `path` under the limits (its logical screen checked before any frame is composited).
pub fn gif_decoder(path: &Path) -> Result<GifDecoder<BufReader<std::fs::File>>> {
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut decoder =
        GifDecoder::new(BufReader::new(file)).map_err(|e| image_error(path, format!("not a GIF: {e}")))?;
    let (w, h) = decoder.dimensions();
    check_pixels("the GIF's screen", w as u64, h as u64).map_err(|m| image_error(path, m))?;
    decoder.set_limits(limits()).map_err(|e| image_error(path, decode_error(e)))?;
    Ok(decoder)
}
