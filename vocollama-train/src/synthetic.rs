//! Synthetic visual question answering: scenes of coloured shapes in the
//! quadrants of a canvas, with questions about colour, shape, count,
//! position and size that have one-word answers. Seeded, so a split is
//! the same on every machine; written as LLaVA-style JSON + PNGs so the same
//! loader trains on it and on real LLaVA data.

use std::path::Path;

use image::{Rgb, RgbImage};
use vocollama_model::rng::SplitMix64;
use vocollama_model::{Error, Result};

use crate::data::{Record, save_records};

pub const COLOURS: [(&str, [u8; 3]); 4] =
    [("red", [220, 40, 40]), ("green", [40, 170, 60]), ("blue", [40, 80, 220]), ("yellow", [235, 205, 30])];
pub const SHAPES: [&str; 3] = ["circle", "square", "triangle"];
/// The question types, in the order reports list them.
pub const KINDS: [&str; 5] = ["colour", "shape", "count", "position", "size"];
const COUNTS: [&str; 4] = ["zero", "one", "two", "three"];

/// One shape in a scene: its colour and shape index, quadrant (0 top-left,
/// 1 top-right, 2 bottom-left, 3 bottom-right) and whether it is big.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Object {
    pub colour: usize,
    pub shape: usize,
    pub quadrant: usize,
    pub big: bool,
}

#[derive(Debug, Clone)]
pub struct Scene {
    pub size: u32,
    pub objects: Vec<Object>,
    /// Seed of the background noise and the exact placement inside quadrants.
    pub seed: u64,
}

impl Scene {
    /// 1–3 objects of distinct colours and shapes, in distinct quadrants.
    pub fn random(rng: &mut SplitMix64, size: u32) -> Scene {
        let count = 1 + rng.below(3);
        let mut colours = [0, 1, 2, 3];
        let mut shapes = [0, 1, 2];
        let mut quadrants = [0, 1, 2, 3];
        rng.shuffle(&mut colours);
        rng.shuffle(&mut shapes);
        rng.shuffle(&mut quadrants);
        let objects = (0..count)
            .map(|i| Object { colour: colours[i], shape: shapes[i], quadrant: quadrants[i], big: rng.below(2) == 1 })
            .collect();
        Scene { size, objects, seed: rng.next_u64() }
    }

    /// The picture: a light, slightly noisy background and the shapes.
    pub fn render(&self) -> RgbImage {
        let s = self.size as f32;
        let mut rng = SplitMix64::new(self.seed);
        let mut img = RgbImage::from_fn(self.size, self.size, |_, _| {
            let n = (rng.below(17) as i32 - 8) as f32;
            let v = (235.0 + n) as u8;
            Rgb([v, v, v])
        });
        for o in &self.objects {
            // Centre jittered inside the quadrant, radius by size.
            let r = if o.big { 0.19 * s } else { 0.10 * s };
            let room = 0.25 * s - r - 1.0;
            let jx = (rng.next_f64() as f32 * 2.0 - 1.0) * room.max(0.0) * 0.6;
            let jy = (rng.next_f64() as f32 * 2.0 - 1.0) * room.max(0.0) * 0.6;
            let cx = if o.quadrant % 2 == 0 { 0.25 * s } else { 0.75 * s } + jx;
            let cy = if o.quadrant < 2 { 0.25 * s } else { 0.75 * s } + jy;
            let colour = Rgb(COLOURS[o.colour].1);
            for y in 0..self.size {
                for x in 0..self.size {
                    let (dx, dy) = (x as f32 + 0.5 - cx, y as f32 + 0.5 - cy);
                    let inside = match SHAPES[o.shape] {
                        "circle" => dx * dx + dy * dy <= r * r,
                        "square" => dx.abs() <= 0.85 * r && dy.abs() <= 0.85 * r,
                        // Pointing up: the half-width grows from the apex to the base.
                        _ => dy >= -r && dy <= 0.8 * r && dx.abs() <= (dy + r) / 1.8 * 1.15,
                    };
                    if inside {
                        img.put_pixel(x, y, colour);
                    }
                }
            }
        }
        img
    }

    /// A question of `kind` with its one-word answer about one of the objects
    /// (shapes and colours are unique in a scene, so either names an object:
    /// the colour question names the shape, the others name the colour).
    pub fn question(&self, kind: &str, rng: &mut SplitMix64) -> Option<(String, String)> {
        let o = *rng.pick(&self.objects);
        let shape = SHAPES[o.shape];
        let colour = COLOURS[o.colour].0;
        Some(match kind {
            "colour" => (format!("What colour is the {shape}?"), colour.to_string()),
            "shape" => (format!("What shape is the {colour} object?"), shape.to_string()),
            "count" => ("How many shapes are there?".to_string(), COUNTS[self.objects.len()].to_string()),
            "position" if rng.below(2) == 0 => (
                format!("Is the {colour} shape on the left or the right?"),
                (if o.quadrant.is_multiple_of(2) { "left" } else { "right" }).to_string(),
            ),
            "position" => (
                format!("Is the {colour} shape at the top or the bottom?"),
                (if o.quadrant < 2 { "top" } else { "bottom" }).to_string(),
            ),
            "size" => {
                (format!("Is the {colour} shape big or small?"), (if o.big { "big" } else { "small" }).to_string())
            }
            _ => return None,
        })
    }
}

/// Write `train` + `test` records (one question per image, the question
/// types of `kinds` in turn; empty = all) and their PNGs under `dir`:
/// `train.json`, `test.json`, `images/`.
pub fn write_dataset(dir: &Path, train: usize, test: usize, size: u32, seed: u64, kinds: &[&str]) -> Result<()> {
    let kinds: Vec<&str> = if kinds.is_empty() { KINDS.to_vec() } else { kinds.to_vec() };
    if let Some(k) = kinds.iter().find(|k| !KINDS.contains(k)) {
        return Err(Error::Invalid(format!("unknown question type `{k}` (expected some of {})", KINDS.join(", "))));
    }
    let images = dir.join("images");
    std::fs::create_dir_all(&images).map_err(|e| Error::io(&images, e))?;
    // Test scenes come from their own stream, so the train split's size does not change them.
    for (split, count, stream) in [("train", train, 1u64), ("test", test, 2u64)] {
        let mut rng = SplitMix64::new(seed ^ stream.wrapping_mul(0xA076_1D64_78BD_642F));
        let mut records = Vec::with_capacity(count);
        for i in 0..count {
            let scene = Scene::random(&mut rng, size);
            let kind = kinds[i % kinds.len()];
            let (q, a) = scene.question(kind, &mut rng).expect("every kind has a question");
            let name = format!("images/{split}-{i:06}.png");
            let path = dir.join(&name);
            scene.render().save(&path).map_err(|e| Error::Image { path: path.clone(), msg: e.to_string() })?;
            records.push(Record {
                id: format!("shapes-{split}-{i:06}"),
                image: Some(name.into()),
                kind: Some(kind.to_string()),
                turns: vec![(format!("<image>\n{q}"), a)],
            });
        }
        save_records(&dir.join(format!("{split}.json")), &records)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scenes_answer_what_they_show() {
        let mut rng = SplitMix64::new(3);
        for _ in 0..50 {
            let scene = Scene::random(&mut rng, 64);
            let img = scene.render();
            for o in &scene.objects {
                // The quadrant's pixels hold the object's colour; the others' never do.
                let (x0, y0) = (if o.quadrant % 2 == 0 { 0 } else { 32 }, if o.quadrant < 2 { 0 } else { 32 });
                let c = Rgb(COLOURS[o.colour].1);
                let mut here = 0;
                for y in 0..64 {
                    for x in 0..64 {
                        if *img.get_pixel(x, y) == c {
                            assert!(
                                (x0..x0 + 32).contains(&x) && (y0..y0 + 32).contains(&y),
                                "colour outside its quadrant"
                            );
                            here += 1;
                        }
                    }
                }
                let area = if o.big { 80 } else { 20 };
                assert!(here >= area, "{:?}: {here} pixels", o);
            }
            for kind in KINDS {
                let (q, a) = scene.question(kind, &mut rng).unwrap();
                assert!(q.ends_with('?') && !a.contains(' '), "{q} -> {a}");
            }
        }
    }

    #[test]
    fn a_dataset_is_the_same_for_a_seed() {
        let d = tempfile::tempdir().unwrap();
        write_dataset(d.path(), 6, 4, 48, 11, &[]).unwrap();
        let a = std::fs::read(d.path().join("train.json")).unwrap();
        let first_test = std::fs::read(d.path().join("images/test-000000.png")).unwrap();
        let e = tempfile::tempdir().unwrap();
        write_dataset(e.path(), 9, 4, 48, 11, &[]).unwrap();
        assert_eq!(std::fs::read(e.path().join("images/test-000000.png")).unwrap(), first_test);
        let f = tempfile::tempdir().unwrap();
        write_dataset(f.path(), 6, 4, 48, 11, &[]).unwrap();
        assert_eq!(std::fs::read(f.path().join("train.json")).unwrap(), a);
        let records = super::super::data::load_records(&d.path().join("test.json")).unwrap();
        assert_eq!(records.len(), 4);
        assert_eq!(records[2].kind.as_deref(), Some("count"));
        let g = tempfile::tempdir().unwrap();
        write_dataset(g.path(), 3, 0, 48, 11, &["size"]).unwrap();
        let records = super::super::data::load_records(&g.path().join("train.json")).unwrap();
        assert!(records.iter().all(|r| r.kind.as_deref() == Some("size")));
        assert!(write_dataset(g.path(), 3, 0, 48, 11, &["weight"]).unwrap_err().to_string().contains("weight"));
    }
}
