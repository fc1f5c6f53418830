//! Video frames in: a directory of images (natural order), an animated GIF,
//! or a video file through the system's `ffmpeg`; then uniform sampling.

use std::path::{Path, PathBuf};
use std::process::Command;

use image::{AnimationDecoder, RgbImage};

use crate::error::{Error, Result};

/// Which frames to keep.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum FrameSampling {
    /// `K` frames spread uniformly over the whole clip (the centre of K equal parts).
    Count(usize),
    /// Frames per second of clip time.
    Fps(f64),
}

/// A decoded frame and its time in the clip.
#[derive(Debug)]
pub struct Frame {
    pub image: RgbImage,
    pub seconds: f64,
}

fn image_error(path: &Path, msg: impl Into<String>) -> Error {
    Error::Image { path: path.to_path_buf(), msg: msg.into() }
}

/// File names compared with their digit runs as numbers: `f2` before `f10`.
pub fn natural_key(name: &str) -> Vec<(u8, String, u128)> {
    let mut key = Vec::new();
    let mut rest = name;
    while let Some(c) = rest.chars().next() {
        let digits = c.is_ascii_digit();
        let end = rest.find(|ch: char| ch.is_ascii_digit() != digits).unwrap_or(rest.len());
        let (run, tail) = rest.split_at(end);
        key.push(if digits { (0, String::new(), run.parse().unwrap_or(u128::MAX)) } else { (1, run.to_string(), 0) });
        rest = tail;
    }
    key
}

/// Every file of `dir` as a frame, in natural name order, one second apart.
pub fn from_dir(dir: &Path) -> Result<Vec<Frame>> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| Error::io(dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .collect();
    if paths.is_empty() {
        return Err(image_error(dir, "the frame directory holds no files"));
    }
    paths.sort_by_cached_key(|p| natural_key(&p.file_name().unwrap_or_default().to_string_lossy()));
    paths
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let img = image::open(p).map_err(|e| image_error(p, format!("not a decodable image frame: {e}")))?;
            Ok(Frame { image: img.to_rgb8(), seconds: i as f64 })
        })
        .collect()
}

/// The frames of an animated GIF, composited as displayed, with their times.
pub fn from_gif(path: &Path) -> Result<Vec<Frame>> {
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let decoder = image::codecs::gif::GifDecoder::new(std::io::BufReader::new(file))
        .map_err(|e| image_error(path, format!("not a GIF: {e}")))?;
    let mut t = 0.0;
    let mut frames = Vec::new();
    for f in decoder.into_frames() {
        let f = f.map_err(|e| image_error(path, format!("a GIF frame cannot be decoded: {e}")))?;
        let (num, den) = f.delay().numer_denom_ms();
        let seconds = t;
        t += num as f64 / den.max(1) as f64 / 1000.0;
        frames.push(Frame { image: image::DynamicImage::ImageRgba8(f.into_buffer()).to_rgb8(), seconds });
    }
    if frames.is_empty() {
        return Err(image_error(path, "the GIF holds no frames"));
    }
    Ok(frames)
}

/// Frames of a video file, decoded by `ffmpeg` at `fps` into a temporary directory.
pub fn from_video(path: &Path, fps: f64) -> Result<Vec<Frame>> {
    if !path.is_file() {
        return Err(image_error(path, "no such video file"));
    }
    let tmp = std::env::temp_dir().join(format!("vocollama-frames-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
    let out = Command::new("ffmpeg")
        .args(["-v", "error", "-nostdin", "-i"])
        .arg(path)
        .args(["-vf", &format!("fps={fps}"), "-f", "image2"])
        .arg(tmp.join("%08d.png"))
        .output();
    let result = match out {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(image_error(
            path,
            "reading video files needs the `ffmpeg` program, which is not installed (or pass --frames DIR / --gif FILE)",
        )),
        Err(e) => Err(image_error(path, format!("cannot run ffmpeg: {e}"))),
        Ok(o) if !o.status.success() => {
            Err(image_error(path, format!("ffmpeg failed: {}", String::from_utf8_lossy(&o.stderr).trim())))
        }
        Ok(_) => from_dir(&tmp).map(|frames| {
            frames.into_iter().enumerate().map(|(i, f)| Frame { seconds: i as f64 / fps, ..f }).collect()
        }),
    };
    let _ = std::fs::remove_dir_all(&tmp);
    result
}

/// The indices of the frames `sampling` keeps out of frames at `times` (seconds, ascending).
pub fn sample(times: &[f64], sampling: FrameSampling) -> Result<Vec<usize>> {
    let n = times.len();
    match sampling {
        FrameSampling::Count(0) => Err(Error::Invalid("--num-frames must be at least 1".into())),
        FrameSampling::Count(k) if k >= n => Ok((0..n).collect()),
        FrameSampling::Count(k) => Ok((0..k).map(|i| (2 * i + 1) * n / (2 * k)).collect()),
        FrameSampling::Fps(f) if !(f > 0.0 && f.is_finite()) => {
            Err(Error::Invalid(format!("--fps must be a positive number, not {f}")))
        }
        FrameSampling::Fps(f) => {
            // The frame shown at each tick 0, 1/f, 2/f, … of the clip.
            let end = times[n - 1];
            let mut picked = Vec::new();
            let mut j = 0;
            let mut tick = 0usize;
            loop {
                let t = tick as f64 / f;
                if t > end + 1e-9 {
                    break;
                }
                while j + 1 < n && times[j + 1] <= t + 1e-9 {
                    j += 1;
                }
                if picked.last() != Some(&j) {
                    picked.push(j);
                }
                tick += 1;
            }
            Ok(picked)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn natural_order_and_uniform_sampling() {
        let mut names = vec!["f10.png", "f2.png", "f1.png", "a.png"];
        names.sort_by_key(|n| natural_key(n));
        assert_eq!(names, ["a.png", "f1.png", "f2.png", "f10.png"]);
        let times: Vec<f64> = (0..10).map(|i| i as f64 * 0.5).collect();
        assert_eq!(sample(&times, FrameSampling::Count(2)).unwrap(), [2, 7]);
        assert_eq!(sample(&times, FrameSampling::Count(20)).unwrap(), (0..10).collect::<Vec<_>>());
        assert_eq!(sample(&times, FrameSampling::Fps(1.0)).unwrap(), [0, 2, 4, 6, 8]);
        assert!(sample(&times, FrameSampling::Count(0)).unwrap_err().to_string().contains("at least 1"));
        assert!(sample(&times, FrameSampling::Fps(0.0)).is_err());
    }

    #[test]
    fn bad_frame_sources_are_named_errors() {
        let d = tempfile::tempdir().unwrap();
        let err = from_dir(d.path()).unwrap_err().to_string();
        assert!(err.contains("holds no files"), "{err}");
        std::fs::write(d.path().join("notes.txt"), "hello").unwrap();
        let err = from_dir(d.path()).unwrap_err().to_string();
        assert!(err.contains("notes.txt") && err.contains("not a decodable image"), "{err}");
        let gif = d.path().join("empty.gif");
        std::fs::write(&gif, b"GIF89a\x01\x00\x01\x00\x00\x00\x00;").unwrap();
        let err = from_gif(&gif).unwrap_err().to_string();
        assert!(err.contains("empty.gif"), "{err}");
        // Without ffmpeg: a clear error naming the program; with it, ffmpeg's own refusal.
        let err = from_video(&d.path().join("notes.txt"), 1.0).unwrap_err().to_string();
        assert!(err.contains("notes.txt") && err.contains("ffmpeg"), "{err}");
    }

    #[test]
    fn gif_frames_and_their_times() {
        use image::codecs::gif::GifEncoder;
        use image::{Delay, Frame as GifFrame, Rgba, RgbaImage};
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("clip.gif");
        let mut enc = GifEncoder::new(std::fs::File::create(&path).unwrap());
        for i in 0..3u8 {
            let img = RgbaImage::from_pixel(8, 6, Rgba([i * 100, 10, 20, 255]));
            enc.encode_frame(GifFrame::from_parts(img, 0, 0, Delay::from_numer_denom_ms(200, 1))).unwrap();
        }
        drop(enc);
        let frames = from_gif(&path).unwrap();
        assert_eq!(frames.len(), 3);
        assert_eq!(frames.iter().map(|f| f.seconds).collect::<Vec<_>>(), [0.0, 0.2, 0.4]);
        assert!(frames[2].image.get_pixel(0, 0)[0] > 150 && frames[0].image.get_pixel(0, 0)[0] < 50);
    }
}
