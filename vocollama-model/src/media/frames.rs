//! Video frames in: a directory of images (natural order), an animated GIF,
//! or a video file through the system's `ffmpeg`; then uniform sampling.
//! Frames are decoded only when taken, one at a time.

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

/// Where a clip's frames are decoded from.
enum Source {
    /// One image file per frame.
    Files(Vec<PathBuf>),
    Gif(PathBuf),
    /// Frames `ffmpeg` wrote; the directory is removed when the clip is dropped.
    Decoded(#[allow(dead_code)] tempfile::TempDir, Vec<PathBuf>),
}

/// A clip whose frames are known by time but decoded only when asked for,
/// one at a time: memory stays flat in the clip's length.
pub struct Clip {
    source: Source,
    /// Each frame's time in the clip, seconds, ascending.
    pub times: Vec<f64>,
}

impl Clip {
    /// Every file of `dir` as a frame, in natural name order, one second
    /// apart. Each file's header is checked now, so a stray non-image fails
    /// before any work.
    pub fn from_dir(dir: &Path) -> Result<Clip> {
        let paths = image_files(dir)?;
        Ok(Clip { times: (0..paths.len()).map(|i| i as f64).collect(), source: Source::Files(paths) })
    }

    /// The frames of an animated GIF with their display times (one decoding
    /// pass for the times, frames decoded again when taken).
    pub fn from_gif(path: &Path) -> Result<Clip> {
        let mut t = 0.0;
        let mut times = Vec::new();
        for f in gif_frames(path)? {
            let (num, den) = f?.delay().numer_denom_ms();
            times.push(t);
            t += num as f64 / den.max(1) as f64 / 1000.0;
        }
        if times.is_empty() {
            return Err(image_error(path, "the GIF holds no frames"));
        }
        Ok(Clip { times, source: Source::Gif(path.to_path_buf()) })
    }

    /// A video file decoded by `ffmpeg` at `fps` into a temporary directory.
    pub fn from_video(path: &Path, fps: f64) -> Result<Clip> {
        if !path.is_file() {
            return Err(image_error(path, "no such video file"));
        }
        let tmp = tempfile::Builder::new().prefix("vocollama-frames-").tempdir().map_err(|e| Error::io(path, e))?;
        let out = Command::new("ffmpeg")
            .args(["-v", "error", "-nostdin", "-i"])
            .arg(path)
            .args(["-vf", &format!("fps={fps}"), "-f", "image2"])
            .arg(tmp.path().join("%08d.png"))
            .output();
        match out {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(image_error(
                path,
                "reading video files needs the `ffmpeg` program, which is not installed (or pass --frames DIR / --gif FILE)",
            )),
            Err(e) => Err(image_error(path, format!("cannot run ffmpeg: {e}"))),
            Ok(o) if !o.status.success() => {
                Err(image_error(path, format!("ffmpeg failed: {}", String::from_utf8_lossy(&o.stderr).trim())))
            }
            Ok(_) => {
                let paths = image_files(tmp.path())
                    .map_err(|_| image_error(path, "ffmpeg decoded no frames from this video"))?;
                Ok(Clip {
                    times: (0..paths.len()).map(|i| i as f64 / fps).collect(),
                    source: Source::Decoded(tmp, paths),
                })
            }
        }
    }

    /// Frames in the clip.
    pub fn len(&self) -> usize {
        self.times.len()
    }

    pub fn is_empty(&self) -> bool {
        self.times.is_empty()
    }

    /// The frames at `picked` (ascending indices), decoded one at a time as the iterator is advanced.
    pub fn frames<'a>(&'a self, picked: &'a [usize]) -> Box<dyn Iterator<Item = Result<RgbImage>> + 'a> {
        match &self.source {
            Source::Files(paths) | Source::Decoded(_, paths) => {
                Box::new(picked.iter().map(|&i| super::decode::open_rgb(&paths[i])))
            }
            Source::Gif(path) => {
                let frames = match gif_frames(path) {
                    Ok(f) => f,
                    Err(e) => return Box::new(std::iter::once(Err(e))),
                };
                let mut wanted = picked.iter().copied().peekable();
                Box::new(
                    frames
                        .enumerate()
                        .filter_map(move |(i, f)| {
                            (wanted.peek() == Some(&i)).then(|| {
                                wanted.next();
                                f.map(|f| image::DynamicImage::ImageRgba8(f.into_buffer()).to_rgb8())
                            })
                        })
                        .take(picked.len()),
                )
            }
        }
    }
}

/// The files of `dir` in natural order, each with an image header.
fn image_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| Error::io(dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .collect();
    if paths.is_empty() {
        return Err(image_error(dir, "the frame directory holds no files"));
    }
    paths.sort_by_cached_key(|p| natural_key(&p.file_name().unwrap_or_default().to_string_lossy()));
    for p in &paths {
        image::ImageReader::open(p)
            .map_err(|e| Error::io(p, e))?
            .with_guessed_format()
            .map_err(|e| Error::io(p, e))?
            .into_dimensions()
            .map_err(|e| image_error(p, format!("not a decodable image frame: {e}")))?;
    }
    Ok(paths)
}

/// A GIF's frames as composited for display, decoded lazily.
fn gif_frames(path: &Path) -> Result<impl Iterator<Item = Result<image::Frame>>> {
    let decoder = super::decode::gif_decoder(path)?;
    let path = path.to_path_buf();
    Ok(decoder
        .into_frames()
        .map(move |f| f.map_err(|e| image_error(&path, format!("a GIF frame cannot be decoded: {e}")))))
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
            // The frames shown at the ticks 0, 1/f, 2/f, … of the clip: frame j is on screen
            // over [times[j], times[j + 1]) (the last one at its own time only), and is kept
            // when a tick falls there — found per frame, so the work is the clip's length
            // however fine the ticks.
            let eps = 1e-9;
            let end = times[n - 1];
            let picked = (0..n)
                .filter(|&j| {
                    let lo = times[j] - eps;
                    let first_tick = (lo * f).ceil().max(0.0) / f;
                    match times.get(j + 1) {
                        Some(&next) => first_tick < next - eps && first_tick <= end + eps,
                        None => first_tick <= end + eps,
                    }
                })
                .collect();
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

    /// The frames shown at each tick, by walking the ticks (the definition; slow for fine ticks).
    fn walk_ticks(times: &[f64], f: f64) -> Vec<usize> {
        let (mut picked, mut j, mut tick) = (Vec::new(), 0, 0usize);
        loop {
            let t = tick as f64 / f;
            if t > times[times.len() - 1] + 1e-9 {
                return picked;
            }
            while j + 1 < times.len() && times[j + 1] <= t + 1e-9 {
                j += 1;
            }
            if picked.last() != Some(&j) {
                picked.push(j);
            }
            tick += 1;
        }
    }

    #[test]
    fn fps_sampling_equals_the_ticks_and_costs_the_clip_not_the_rate() {
        let uneven: Vec<f64> = [0.0, 0.04, 0.1, 0.5, 0.52, 1.3, 2.0, 2.01, 3.5].to_vec();
        let even: Vec<f64> = (0..50).map(|i| i as f64 / 30.0).collect();
        for times in [&uneven, &even] {
            for f in [0.3, 1.0, 2.5, 10.0, 29.97, 30.0, 100.0, 1000.0] {
                assert_eq!(sample(times, FrameSampling::Fps(f)).unwrap(), walk_ticks(times, f), "fps {f}");
            }
        }
        // A rate of 1e12 would walk 3.5e12 ticks: it keeps every frame at once.
        let all = sample(&uneven, FrameSampling::Fps(1e12)).unwrap();
        assert_eq!(all, (0..uneven.len()).collect::<Vec<_>>());
        assert!(sample(&uneven, FrameSampling::Fps(f64::INFINITY)).is_err());
    }

    #[test]
    fn bad_frame_sources_are_named_errors() {
        let d = tempfile::tempdir().unwrap();
        let err = Clip::from_dir(d.path()).err().unwrap().to_string();
        assert!(err.contains("holds no files"), "{err}");
        std::fs::write(d.path().join("notes.txt"), "hello").unwrap();
        let err = Clip::from_dir(d.path()).err().unwrap().to_string();
        assert!(err.contains("notes.txt") && err.contains("not a decodable image"), "{err}");
        let gif = d.path().join("empty.gif");
        std::fs::write(&gif, b"GIF89a\x01\x00\x01\x00\x00\x00\x00;").unwrap();
        let err = Clip::from_gif(&gif).err().unwrap().to_string();
        assert!(err.contains("empty.gif"), "{err}");
        // Without ffmpeg: a clear error naming the program; with it, ffmpeg's own refusal.
        let err = Clip::from_video(&d.path().join("notes.txt"), 1.0).err().unwrap().to_string();
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
        let clip = Clip::from_gif(&path).unwrap();
        assert_eq!(clip.len(), 3);
        assert_eq!(clip.times, [0.0, 0.2, 0.4]);
        let frames: Vec<RgbImage> = clip.frames(&[0, 2]).collect::<Result<_>>().unwrap();
        assert_eq!(frames.len(), 2);
        assert!(frames[1].get_pixel(0, 0)[0] > 150 && frames[0].get_pixel(0, 0)[0] < 50);
    }
}
