//! Image → pixels, as HF's `CLIPImageProcessor` (PIL backend) and LLaVA's `pad`.
//!
//! The resize is PIL's bicubic resampler reproduced step for step (fixed-point
//! coefficients, two 8-bit passes), so pixels match PIL's, not merely look alike.

use std::path::Path;

use image::RgbImage;
use serde_json::Value;

use crate::error::{Error, Result};
use crate::io::json::read_json;

// CLIP's normalisation constants, digit for digit as HF's `OPENAI_CLIP_MEAN` / `_STD` write them.
pub const CLIP_MEAN: [f32; 3] = [0.481_454_66, 0.457_827_5, 0.408_210_73];
#[allow(clippy::excessive_precision)]
pub const CLIP_STD: [f32; 3] = [0.268_629_54, 0.261_302_58, 0.275_777_11];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resize {
    /// Scale so the shorter side is this long, keeping the aspect ratio.
    ShortestEdge(usize),
    /// Scale to exactly this height and width.
    Exact(usize, usize),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Preprocessor {
    /// LLaVA's `image_aspect_ratio: pad`: expand to a square with the mean colour first.
    pub pad_to_square: bool,
    pub resize: Option<Resize>,
    /// Centre crop `(height, width)`.
    pub crop: Option<(usize, usize)>,
    pub rescale_factor: Option<f64>,
    pub normalize: Option<([f32; 3], [f32; 3])>,
}

/// Pixels `[3, height, width]`, channel-major, ready for the vision tower.
#[derive(Debug, Clone)]
pub struct Pixels {
    pub data: Vec<f32>,
    pub height: usize,
    pub width: usize,
}

impl Preprocessor {
    /// HF's CLIP defaults for a tower of `image_size` pixels.
    pub fn clip_default(image_size: usize, pad_to_square: bool) -> Self {
        Self {
            pad_to_square,
            resize: Some(Resize::ShortestEdge(image_size)),
            crop: Some((image_size, image_size)),
            rescale_factor: Some(1.0 / 255.0),
            normalize: Some((CLIP_MEAN, CLIP_STD)),
        }
    }

    /// Read a `preprocessor_config.json`.
    pub fn from_file(path: &Path, pad_to_square: bool) -> Result<Self> {
        let v = read_json(path)?;
        let err = |field: &str, expected: &str| {
            Error::config(
                path,
                format!("field `{field}`: expected {expected}, found {}", v.get(field).unwrap_or(&Value::Null)),
            )
        };
        let flag = |field: &str| match v.get(field) {
            None | Some(Value::Null) => Ok(true),
            Some(b) => b.as_bool().ok_or_else(|| err(field, "true or false")),
        };
        // A side of at most 4096 pixels: beyond any vision tower, and a size nothing allocates by.
        let dim = |x: &Value| x.as_u64().filter(|&n| n > 0 && n <= 4096).map(|n| n as usize);
        let triple = |field: &str, default: [f32; 3]| -> Result<[f32; 3]> {
            match v.get(field) {
                None | Some(Value::Null) => Ok(default),
                Some(Value::Array(a)) if a.len() == 3 && a.iter().all(Value::is_number) => {
                    Ok([0, 1, 2].map(|i| a[i].as_f64().unwrap() as f32))
                }
                Some(_) => Err(err(field, "a list of 3 numbers")),
            }
        };
        if let Some(r) = v.get("resample").filter(|r| !r.is_null())
            && r.as_u64() != Some(3)
        {
            return Err(err("resample", "3 (bicubic)"));
        }
        let resize = if flag("do_resize")? {
            let size = v.get("size").ok_or_else(|| {
                err("size", "{\"shortest_edge\": N} or {\"height\": H, \"width\": W}, sides 1 to 4096")
            })?;
            Some(if let Some(n) = dim(size) {
                Resize::ShortestEdge(n)
            } else if let Some(n) = size.get("shortest_edge").and_then(dim) {
                Resize::ShortestEdge(n)
            } else if let (Some(h), Some(w)) = (size.get("height").and_then(dim), size.get("width").and_then(dim)) {
                Resize::Exact(h, w)
            } else {
                return Err(err("size", "{\"shortest_edge\": N} or {\"height\": H, \"width\": W}, sides 1 to 4096"));
            })
        } else {
            None
        };
        let crop = if flag("do_center_crop")? {
            let c =
                v.get("crop_size").ok_or_else(|| err("crop_size", "{\"height\": H, \"width\": W}, sides 1 to 4096"))?;
            Some(if let Some(n) = dim(c) {
                (n, n)
            } else if let (Some(h), Some(w)) = (c.get("height").and_then(dim), c.get("width").and_then(dim)) {
                (h, w)
            } else {
                return Err(err("crop_size", "{\"height\": H, \"width\": W}, sides 1 to 4096"));
            })
        } else {
            None
        };
        let rescale_factor = if flag("do_rescale")? {
            Some(match v.get("rescale_factor") {
                None | Some(Value::Null) => 1.0 / 255.0,
                Some(f) => f.as_f64().ok_or_else(|| err("rescale_factor", "a number"))?,
            })
        } else {
            None
        };
        let normalize = if flag("do_normalize")? {
            Some((triple("image_mean", CLIP_MEAN)?, triple("image_std", CLIP_STD)?))
        } else {
            None
        };
        // llava-hf's LlavaImageProcessor says `do_pad`; LLaVA says it in the model config.
        let pad_to_square = pad_to_square || v.get("do_pad").and_then(Value::as_bool).unwrap_or(false);
        Ok(Self { pad_to_square, resize, crop, rescale_factor, normalize })
    }

    /// Decode an image file and preprocess it.
    pub fn load(&self, path: &Path) -> Result<Pixels> {
        let img = super::decode::open_rgb(path)?;
        self.apply(&img).map_err(|e| match e {
            Error::Invalid(msg) => Error::Image { path: path.to_path_buf(), msg },
            e => e,
        })
    }

    /// The sizes of each step for a `w x h` picture: (padded side, resized height and width),
    /// every one checked against the pixel budget before any of them is allocated.
    fn steps(&self, w: usize, h: usize) -> Result<(usize, (usize, usize))> {
        let budget = |what: &str, w: usize, h: usize| {
            super::decode::check_pixels(what, w as u64, h as u64).map_err(Error::Invalid)
        };
        let (w, h) = if self.pad_to_square { (w.max(h), w.max(h)) } else { (w, h) };
        if w == 0 || h == 0 {
            return Err(Error::Invalid("the image has no pixels".into()));
        }
        budget("padded to a square, the image", w, h)?;
        let resized = match self.resize {
            None => (h, w),
            Some(Resize::Exact(h, w)) => (h, w),
            Some(Resize::ShortestEdge(s)) => {
                // HF get_resize_output_image_size(default_to_square=False)
                let (short, long) = if w <= h { (w, h) } else { (h, w) };
                let new_long = (s as f64 * long as f64 / short as f64) as usize;
                if w <= h { (new_long, s) } else { (s, new_long) }
            }
        };
        budget("resized, the image", resized.1, resized.0)?;
        if let Some((ch, cw)) = self.crop {
            budget("the crop", cw, ch)?;
        }
        Ok((w, resized))
    }

    /// Preprocess a decoded picture; one whose padding or resizing would exceed the
    /// pixel budget is refused before that step allocates anything.
    pub fn apply(&self, img: &RgbImage) -> Result<Pixels> {
        let (_, (nh, nw)) = self.steps(img.width() as usize, img.height() as usize)?;
        let mean = self.normalize.map(|(m, _)| m).unwrap_or(CLIP_MEAN);
        let mut img = if self.pad_to_square {
            // LLaVA: tuple(int(x * 255) for x in image_processor.image_mean)
            expand_to_square(img, mean.map(|m| (m as f64 * 255.0) as u8))
        } else {
            img.clone()
        };
        if (nh, nw) != (img.height() as usize, img.width() as usize) {
            img = resize_bicubic(&img, nw, nh);
        }
        let (h, w) = (img.height() as usize, img.width() as usize);
        let (ch, cw) = self.crop.unwrap_or((h, w));
        let (top, left) = crop_origin(h, ch, w, cw);
        let scale = self.rescale_factor;
        let mut data = vec![0f32; 3 * ch * cw];
        for c in 0..3 {
            for y in 0..ch {
                for x in 0..cw {
                    let (sy, sx) = (top + y as i64, left + x as i64);
                    // Outside the image (crop larger than it): HF pads with zeros.
                    let raw = if sy >= 0 && sx >= 0 && (sy as usize) < h && (sx as usize) < w {
                        img.get_pixel(sx as u32, sy as u32)[c]
                    } else {
                        0
                    };
                    // HF: uint8 -> float64 * scale -> float32, then (x - mean) / std in float32.
                    let mut v = match scale {
                        Some(s) => (raw as f64 * s) as f32,
                        None => raw as f32,
                    };
                    if let Some((m, s)) = self.normalize {
                        v = (v - m[c]) / s[c];
                    }
                    data[(c * ch + y) * cw + x] = v;
                }
            }
        }
        Ok(Pixels { data, height: ch, width: cw })
    }
}

/// Top-left corner of HF's centre crop (Python floor division; negative = padding).
fn crop_origin(h: usize, ch: usize, w: usize, cw: usize) -> (i64, i64) {
    ((h as i64 - ch as i64).div_euclid(2), (w as i64 - cw as i64).div_euclid(2))
}

/// LLaVA's `expand2square`: centre the image on a square of `background`.
pub fn expand_to_square(img: &RgbImage, background: [u8; 3]) -> RgbImage {
    let (w, h) = img.dimensions();
    if w == h {
        return img.clone();
    }
    let s = w.max(h);
    let mut out = RgbImage::from_pixel(s, s, image::Rgb(background));
    let (ox, oy) = ((s - w) / 2, (s - h) / 2);
    image::imageops::replace(&mut out, img, ox as i64, oy as i64);
    out
}

// ---- PIL's bicubic resampler (libImaging/Resample.c), 8 bits per channel ----

const PRECISION_BITS: u32 = 32 - 8 - 2;

fn bicubic(x: f64) -> f64 {
    const A: f64 = -0.5;
    let x = x.abs();
    if x < 1.0 {
        ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        (((x - 5.0) * x + 8.0) * x - 4.0) * A
    } else {
        0.0
    }
}

/// Per output pixel: first input index and fixed-point weights.
fn coefficients(in_size: usize, out_size: usize) -> Vec<(usize, Vec<i32>)> {
    let scale = in_size as f64 / out_size as f64;
    let filterscale = scale.max(1.0);
    let support = 2.0 * filterscale;
    (0..out_size)
        .map(|xx| {
            let center = (xx as f64 + 0.5) * scale;
            let ss = 1.0 / filterscale;
            let xmin = ((center - support + 0.5) as i64).max(0) as usize;
            let xmax = ((center + support + 0.5) as i64).min(in_size as i64) as usize;
            let w: Vec<f64> = (xmin..xmax).map(|x| bicubic((x as f64 - center + 0.5) * ss)).collect();
            let total: f64 = w.iter().sum();
            let k = w
                .iter()
                .map(|&v| {
                    let v = if total != 0.0 { v / total } else { v };
                    let f = v * (1u32 << PRECISION_BITS) as f64;
                    if v < 0.0 { (-0.5 + f) as i32 } else { (0.5 + f) as i32 }
                })
                .collect();
            (xmin, k)
        })
        .collect()
}

fn clip8(v: i64) -> u8 {
    (v >> PRECISION_BITS).clamp(0, 255) as u8
}

/// Resize like `PIL.Image.resize(size, Image.BICUBIC)`: horizontal pass, then vertical.
pub fn resize_bicubic(img: &RgbImage, out_w: usize, out_h: usize) -> RgbImage {
    let (w, h) = (img.width() as usize, img.height() as usize);
    let src = img.as_raw();
    let round = 1i64 << (PRECISION_BITS - 1);
    let horizontal = if out_w != w {
        let coeffs = coefficients(w, out_w);
        let mut tmp = vec![0u8; out_w * h * 3];
        for y in 0..h {
            for (x, (xmin, k)) in coeffs.iter().enumerate() {
                for c in 0..3 {
                    let mut acc = round;
                    for (i, &kk) in k.iter().enumerate() {
                        acc += src[(y * w + xmin + i) * 3 + c] as i64 * kk as i64;
                    }
                    tmp[(y * out_w + x) * 3 + c] = clip8(acc);
                }
            }
        }
        tmp
    } else {
        src.clone()
    };
    let out = if out_h != h {
        let coeffs = coefficients(h, out_h);
        let mut out = vec![0u8; out_w * out_h * 3];
        for (y, (ymin, k)) in coeffs.iter().enumerate() {
            for x in 0..out_w {
                for c in 0..3 {
                    let mut acc = round;
                    for (i, &kk) in k.iter().enumerate() {
                        acc += horizontal[((ymin + i) * out_w + x) * 3 + c] as i64 * kk as i64;
                    }
                    out[(y * out_w + x) * 3 + c] = clip8(acc);
                }
            }
        }
        out
    } else {
        horizontal
    };
    RgbImage::from_raw(out_w as u32, out_h as u32, out).expect("buffer sized for the image")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn centre_crop_origin_matches_python_floor_division() {
        assert_eq!(crop_origin(60, 56, 56, 56), (2, 0));
        assert_eq!(crop_origin(61, 56, 56, 56), (2, 0));
        assert_eq!(crop_origin(53, 56, 56, 56), (-2, 0)); // (-3) // 2 == -2
    }

    #[test]
    fn expand_to_square_centres_the_image() {
        let img = RgbImage::from_pixel(4, 2, image::Rgb([9, 9, 9]));
        let sq = expand_to_square(&img, [1, 2, 3]);
        assert_eq!(sq.dimensions(), (4, 4));
        assert_eq!(sq.get_pixel(0, 0).0, [1, 2, 3]);
        assert_eq!(sq.get_pixel(0, 1).0, [9, 9, 9]);
        assert_eq!(sq.get_pixel(3, 3).0, [1, 2, 3]);
    }

    #[test]
    fn old_style_processor_config() {
        // Older configs write sizes as bare integers; means may be integers too.
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("preprocessor_config.json");
        std::fs::write(&p, r#"{"size": 336, "crop_size": 336, "image_mean": [0, 0.5, 1], "resample": 3}"#).unwrap();
        let pre = Preprocessor::from_file(&p, false).unwrap();
        assert_eq!(pre.resize, Some(Resize::ShortestEdge(336)));
        assert_eq!(pre.crop, Some((336, 336)));
        assert_eq!(pre.normalize.unwrap().0, [0.0, 0.5, 1.0]);
        std::fs::write(&p, r#"{"size": 336, "crop_size": 336, "resample": 2}"#).unwrap();
        let e = Preprocessor::from_file(&p, false).unwrap_err().to_string();
        assert!(e.contains("field `resample`: expected 3 (bicubic), found 2"), "{e}");
    }

    #[test]
    fn resize_keeps_a_flat_image_flat() {
        let img = RgbImage::from_pixel(7, 5, image::Rgb([200, 100, 0]));
        let out = resize_bicubic(&img, 13, 3);
        assert!(out.pixels().all(|p| p.0 == [200, 100, 0]));
    }
}
