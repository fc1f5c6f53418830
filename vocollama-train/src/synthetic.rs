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
/// The question types, in the order reports list them: the five of the
/// scenes' attributes, then a short caption of the whole picture.
pub const KINDS: [&str; 6] = ["colour", "shape", "count", "position", "size", "caption"];
/// How answers about one object are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum Answers {
    /// The attribute alone: "red".
    Plain,
    /// The word the question names the object by, then the attribute: "circle red".
    // The colour is then predicted at the token that says `circle`, so one
    // attention step finds the object; with plain answers the small models
    // here must find it and read it in one position, and mostly do not
    // (`docs/results.md`).
    Named,
}

impl Answers {
    pub fn name(self) -> &'static str {
        match self {
            Self::Plain => "plain",
            Self::Named => "named",
        }
    }
}

/// The order of a training conversation's turns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum TurnOrder {
    /// Any order: any question may come first, as every test question does.
    Shuffled,
    /// Shuffled, then the caption moved last. Text after the VoCo tokens sees
    /// the earlier turns, and an earlier caption answers every question about
    /// one object by itself (half of them in shuffled conversations), which
    /// leaves the model little reason to read those answers from the VoCo tokens.
    CaptionLast,
    /// Shuffled, and the caption asked alone in a record of its own about the
    /// same picture. Last in a conversation, the caption learns to repeat the
    /// earlier answers rather than read the VoCo tokens; alone, it can only
    /// read them, as every test question does.
    CaptionApart,
}

impl TurnOrder {
    pub fn name(self) -> &'static str {
        match self {
            Self::Shuffled => "shuffled",
            Self::CaptionLast => "caption-last",
            Self::CaptionApart => "caption-apart",
        }
    }
}

const COUNTS: [&str; 4] = ["zero", "one", "two", "three"];
const QUADRANTS: [&str; 4] = ["top left", "top right", "bottom left", "bottom right"];

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

    /// A question of `kind` with its answer about one of the objects, in one
    /// of several phrasings (shapes and colours are unique in a scene, so
    /// either names an object). Answers are one word, a quadrant ("top left")
    /// or, for `caption`, every object by quadrant; with [`Answers::Named`] an
    /// answer about one object starts with the word the question names it by.
    pub fn question(&self, kind: &str, rng: &mut SplitMix64, answers: Answers) -> Option<(String, String)> {
        let o = *rng.pick(&self.objects);
        let shape = SHAPES[o.shape];
        let colour = COLOURS[o.colour].0;
        // The object named by its shape or by its colour.
        let by_shape = rng.below(2) == 0;
        let thing = if by_shape { format!("the {shape}") } else { format!("the {colour} shape") };
        let thing_word = if by_shape { shape } else { colour };
        let size = if o.big { "big" } else { "small" };
        let phrase = |options: &[String], rng: &mut SplitMix64| rng.pick(options).clone();
        // The question, its answer, and the word it names its object by (if it asks about one).
        let (q, a, named) = match kind {
            "colour" => {
                let q = phrase(
                    &[
                        format!("What colour is the {shape}?"),
                        format!("What color is the {shape}?"),
                        format!("What is the colour of the {shape}?"),
                        format!("Which colour is the {shape}?"),
                    ],
                    rng,
                );
                (q, colour.to_string(), Some(shape))
            }
            "shape" => {
                let q = phrase(
                    &[
                        format!("What shape is the {colour} object?"),
                        format!("What is the {colour} shape?"),
                        format!("Which shape is {colour}?"),
                        format!("What is the {colour} thing?"),
                    ],
                    rng,
                );
                (q, shape.to_string(), Some(colour))
            }
            "count" => {
                let q = phrase(
                    &[
                        "How many shapes are there?".to_string(),
                        "How many objects are there?".to_string(),
                        "How many shapes are in the picture?".to_string(),
                        "Count the shapes.".to_string(),
                    ],
                    rng,
                );
                (q, COUNTS[self.objects.len()].to_string(), None)
            }
            "position" => {
                let (q, a) = match rng.below(3) {
                    0 => (
                        format!("Is {thing} on the left or the right?"),
                        (if o.quadrant.is_multiple_of(2) { "left" } else { "right" }).to_string(),
                    ),
                    1 => (
                        format!("Is {thing} at the top or the bottom?"),
                        (if o.quadrant < 2 { "top" } else { "bottom" }).to_string(),
                    ),
                    _ => (format!("Where is {thing}?"), QUADRANTS[o.quadrant].to_string()),
                };
                (q, a, Some(thing_word))
            }
            "size" => {
                let q = phrase(
                    &[
                        format!("Is {thing} big or small?"),
                        format!("Is {thing} large or small?"),
                        format!("How big is {thing}?"),
                    ],
                    rng,
                );
                (q, size.to_string(), Some(thing_word))
            }
            "caption" => {
                let q = phrase(
                    &[
                        "Describe the picture.".to_string(),
                        "Describe the image.".to_string(),
                        "What is in the picture?".to_string(),
                        "What do you see?".to_string(),
                    ],
                    rng,
                );
                (q, self.caption(), None)
            }
            _ => return None,
        };
        Some(match (answers, named) {
            (Answers::Named, Some(word)) => (q, format!("{word} {a}")),
            _ => (q, a),
        })
    }

    /// Every object, by quadrant: "a big red circle top left and a small blue square bottom right".
    pub fn caption(&self) -> String {
        let mut objects = self.objects.clone();
        objects.sort_by_key(|o| o.quadrant);
        let parts: Vec<String> = objects
            .iter()
            .map(|o| {
                let size = if o.big { "big" } else { "small" };
                format!("a {size} {} {} {}", COLOURS[o.colour].0, SHAPES[o.shape], QUADRANTS[o.quadrant])
            })
            .collect();
        match parts.split_last() {
            Some((last, [])) => last.clone(),
            Some((last, rest)) => format!("{} and {last}", rest.join(", ")),
            None => "nothing".to_string(),
        }
    }

    /// What the tower learns to see, per quadrant (top left, top right, bottom
    /// left, bottom right): colour (0 = empty, else 1 + colour index), shape
    /// (0 = empty, else 1 + shape index) and size (0 = empty, 1 small, 2 big).
    pub fn quadrant_targets(&self) -> [[usize; 3]; 4] {
        let mut t = [[0; 3]; 4];
        for o in &self.objects {
            t[o.quadrant] = [1 + o.colour, 1 + o.shape, 1 + usize::from(o.big)];
        }
        t
    }
}

/// Classes per attribute of [`Scene::quadrant_targets`].
pub const TARGET_CLASSES: [usize; 3] = [1 + COLOURS.len(), 1 + SHAPES.len(), 3];

/// Write `train` + `test` questions and their PNGs under `dir`:
/// `train.json`, `test.json`, `images/`. Each picture gets `per_image`
/// questions (the question types of `kinds` in turn; empty = all): in the
/// training split as the turns of one conversation in a random order, as
/// LLaVA's own data asks several questions per picture; in the test split as
/// one-question records, since evaluation answers a record's first question.
/// `order` orders the turns (or asks the caption in a record of its own);
/// the questions are the same either way.
#[allow(clippy::too_many_arguments)]
pub fn write_dataset(
    dir: &Path,
    train: usize,
    test: usize,
    size: u32,
    seed: u64,
    kinds: &[&str],
    per_image: usize,
    answers: Answers,
    order: TurnOrder,
) -> Result<()> {
    let kinds: Vec<&str> = if kinds.is_empty() { KINDS.to_vec() } else { kinds.to_vec() };
    if let Some(k) = kinds.iter().find(|k| !KINDS.contains(k)) {
        return Err(Error::Invalid(format!("unknown question type `{k}` (expected some of {})", KINDS.join(", "))));
    }
    if per_image == 0 {
        return Err(Error::Invalid("--per-image must be at least 1".into()));
    }
    let images = dir.join("images");
    std::fs::create_dir_all(&images).map_err(|e| Error::io(&images, e))?;
    // Test scenes come from their own stream, so the train split's size does not change them.
    for (split, count, stream) in [("train", train, 1u64), ("test", test, 2u64)] {
        let mut rng = SplitMix64::new(seed ^ stream.wrapping_mul(0xA076_1D64_78BD_642F));
        let mut records = Vec::with_capacity(count);
        for picture in 0..count.div_ceil(per_image) {
            let scene = Scene::random(&mut rng, size);
            let name = format!("images/{split}-{picture:06}.png");
            let path = dir.join(&name);
            scene.render().save(&path).map_err(|e| Error::Image { path: path.clone(), msg: e.to_string() })?;
            let caption = scene.caption();
            let first = picture * per_image;
            let mut asked: Vec<(&str, String, String)> = (first..count.min(first + per_image))
                .map(|i| {
                    let kind = kinds[i % kinds.len()];
                    let (q, a) = scene.question(kind, &mut rng, answers).expect("every kind has a question");
                    (kind, q, a)
                })
                .collect();
            let record = |id: String, turns: &[(&str, String, String)]| Record {
                id: format!("shapes-{split}-{id}"),
                image: Some(name.clone().into()),
                kind: Some(turns[0].0.to_string()),
                scene: Some(caption.clone()),
                turns: turns
                    .iter()
                    .enumerate()
                    .map(|(t, (_, q, a))| (if t == 0 { format!("<image>\n{q}") } else { q.clone() }, a.clone()))
                    .collect(),
            };
            if split == "train" {
                // Any question may come first, as every test question does.
                rng.shuffle(&mut asked);
                if order != TurnOrder::Shuffled {
                    // A stable sort: the other turns keep their shuffled order.
                    asked.sort_by_key(|(kind, _, _)| *kind == "caption");
                }
                let apart = match asked.last() {
                    Some(last) if order == TurnOrder::CaptionApart && last.0 == "caption" && asked.len() > 1 => {
                        asked.pop()
                    }
                    _ => None,
                };
                records.push(record(format!("{picture:06}"), &asked));
                if let Some(caption) = apart {
                    records.push(record(format!("{picture:06}-caption"), std::slice::from_ref(&caption)));
                }
            } else {
                for (k, one) in asked.iter().enumerate() {
                    records.push(record(format!("{:06}", first + k), std::slice::from_ref(one)));
                }
            }
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
                let (q, a) = scene.question(kind, &mut rng.clone(), Answers::Plain).unwrap();
                let words = a.split(' ').count();
                let long = match kind {
                    "caption" => 6 * scene.objects.len() + 1,
                    "position" => 2,
                    _ => 1,
                };
                assert!((q.ends_with('?') || q.ends_with('.')) && words <= long, "{q} -> {a}");
                // Named answers: the same question, the word it names its object by, then the plain answer.
                let (nq, na) = scene.question(kind, &mut rng, Answers::Named).unwrap();
                assert_eq!(nq, q);
                if ["colour", "shape", "position", "size"].contains(&kind) {
                    let (word, rest) = na.split_once(' ').unwrap();
                    assert_eq!(rest, a);
                    let named = |w: &str| q.trim_end_matches('?').split(' ').any(|x| x == w);
                    assert!(
                        named(word) && (SHAPES.contains(&word) || COLOURS.iter().any(|c| c.0 == word)),
                        "{q} -> {na}"
                    );
                } else {
                    assert_eq!(na, a);
                }
            }
            // The caption names each object once, with its quadrant.
            let caption = scene.caption();
            for o in &scene.objects {
                let name = format!("{} {} {}", COLOURS[o.colour].0, SHAPES[o.shape], QUADRANTS[o.quadrant]);
                assert_eq!(caption.matches(&name).count(), 1, "{caption}");
            }
            let t = scene.quadrant_targets();
            assert_eq!(t.iter().filter(|q| q[0] > 0).count(), scene.objects.len());
        }
    }

    #[test]
    fn a_dataset_is_the_same_for_a_seed() {
        let d = tempfile::tempdir().unwrap();
        write_dataset(d.path(), 6, 4, 48, 11, &[], 1, Answers::Plain, TurnOrder::Shuffled).unwrap();
        let a = std::fs::read(d.path().join("train.json")).unwrap();
        let first_test = std::fs::read(d.path().join("images/test-000000.png")).unwrap();
        let e = tempfile::tempdir().unwrap();
        write_dataset(e.path(), 9, 4, 48, 11, &[], 1, Answers::Plain, TurnOrder::Shuffled).unwrap();
        assert_eq!(std::fs::read(e.path().join("images/test-000000.png")).unwrap(), first_test);
        let f = tempfile::tempdir().unwrap();
        write_dataset(f.path(), 6, 4, 48, 11, &[], 1, Answers::Plain, TurnOrder::Shuffled).unwrap();
        assert_eq!(std::fs::read(f.path().join("train.json")).unwrap(), a);
        let records = super::super::data::load_records(&d.path().join("test.json")).unwrap();
        assert_eq!(records.len(), 4);
        assert_eq!(records[2].kind.as_deref(), Some("count"));
        let g = tempfile::tempdir().unwrap();
        write_dataset(g.path(), 3, 0, 48, 11, &["size"], 1, Answers::Plain, TurnOrder::Shuffled).unwrap();
        let records = super::super::data::load_records(&g.path().join("train.json")).unwrap();
        assert!(records.iter().all(|r| r.kind.as_deref() == Some("size")));
        assert!(
            write_dataset(g.path(), 3, 0, 48, 11, &["weight"], 1, Answers::Plain, TurnOrder::Shuffled)
                .unwrap_err()
                .to_string()
                .contains("weight")
        );
        // Several questions per picture: turns of one conversation to train on, one record each to test.
        let h = tempfile::tempdir().unwrap();
        write_dataset(h.path(), 7, 8, 48, 11, &[], 3, Answers::Plain, TurnOrder::Shuffled).unwrap();
        let train = super::super::data::load_records(&h.path().join("train.json")).unwrap();
        assert_eq!(train.iter().map(|r| r.turns.len()).collect::<Vec<_>>(), vec![3, 3, 1]);
        assert!(train[0].turns[0].0.starts_with("<image>\n") && !train[0].turns[1].0.contains("<image>"));
        // Kinds 3, 4, 5 (position, size, caption) in some order; the record is of its first question's kind.
        assert!(["position", "size", "caption"].contains(&train[1].kind.as_deref().unwrap()));
        assert_eq!(train[1].turns.iter().filter(|(_, a)| a.starts_with("a ")).count(), 1, "{:?}", train[1].turns);
        // Each record names what its picture shows: the caption a caption question is answered with.
        let caption = train[1].turns.iter().find(|(_, a)| a.starts_with("a ")).unwrap();
        assert_eq!(train[1].scene.as_ref(), Some(&caption.1));
        let test = super::super::data::load_records(&h.path().join("test.json")).unwrap();
        assert_eq!(test.len(), 8);
        assert!(test.iter().all(|r| r.turns.len() == 1));
        let images: Vec<_> = test.iter().map(|r| r.image.clone().unwrap()).collect();
        assert_eq!(images[0], images[2]);
        assert_eq!(test[0].scene, test[2].scene);
        assert_ne!(images[2], images[3]);
        assert_eq!(std::fs::read_dir(h.path().join("images")).unwrap().count(), 3 + 3);
        assert!(write_dataset(h.path(), 3, 0, 48, 11, &[], 0, Answers::Plain, TurnOrder::Shuffled).is_err());
    }

    #[test]
    fn caption_last_reorders_the_same_turns() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        write_dataset(a.path(), 60, 6, 48, 5, &[], 6, Answers::Named, TurnOrder::Shuffled).unwrap();
        write_dataset(b.path(), 60, 6, 48, 5, &[], 6, Answers::Named, TurnOrder::CaptionLast).unwrap();
        let load = |d: &Path, f: &str| super::super::data::load_records(&d.join(f)).unwrap();
        let plain = |t: &(String, String)| (t.0.trim_start_matches("<image>\n").to_string(), t.1.clone());
        let (shuffled, last) = (load(a.path(), "train.json"), load(b.path(), "train.json"));
        assert_eq!(shuffled.len(), 10);
        let mut moved = 0;
        for (s, l) in shuffled.iter().zip(&last) {
            let (s, l): (Vec<_>, Vec<_>) = (s.turns.iter().map(plain).collect(), l.turns.iter().map(plain).collect());
            let is_caption = |t: &(String, String)| t.1.starts_with("a ");
            assert!(is_caption(l.last().unwrap()), "{l:?}");
            assert_eq!(l.iter().filter(|t| is_caption(t)).count(), 1);
            // The other turns in their shuffled order, then the caption.
            let others: Vec<_> = s.iter().filter(|t| !is_caption(t)).cloned().collect();
            assert_eq!(l[..5], others[..]);
            moved += usize::from(!is_caption(s.last().unwrap()));
        }
        assert!(moved > 0, "no shuffled conversation had its caption elsewhere: the test could not fail");
        assert!(last.iter().all(|r| r.turns[0].0.starts_with("<image>\n")));
        assert_eq!(load(a.path(), "test.json"), load(b.path(), "test.json"));
    }

    #[test]
    fn caption_apart_asks_the_caption_alone_about_the_same_picture() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        write_dataset(a.path(), 60, 6, 48, 5, &[], 6, Answers::Named, TurnOrder::CaptionLast).unwrap();
        write_dataset(b.path(), 60, 6, 48, 5, &[], 6, Answers::Named, TurnOrder::CaptionApart).unwrap();
        let load = |d: &Path, f: &str| super::super::data::load_records(&d.join(f)).unwrap();
        let (last, apart) = (load(a.path(), "train.json"), load(b.path(), "train.json"));
        assert_eq!((last.len(), apart.len()), (10, 20));
        for (l, pair) in last.iter().zip(apart.chunks(2)) {
            let (turns, caption) = (&pair[0], &pair[1]);
            // The same picture and turns: the conversation without its caption, then the caption alone.
            assert_eq!((&turns.image, &caption.image), (&l.image, &l.image));
            assert_eq!(turns.turns[..], l.turns[..5]);
            assert_eq!(caption.kind.as_deref(), Some("caption"));
            assert_eq!(caption.turns.len(), 1);
            assert_eq!(caption.turns[0].1, l.turns[5].1);
            assert_eq!(caption.turns[0].0, format!("<image>\n{}", l.turns[5].0));
            assert_eq!(caption.id, format!("{}-caption", turns.id));
        }
        assert_eq!(load(a.path(), "test.json"), load(b.path(), "test.json"));
    }
}
