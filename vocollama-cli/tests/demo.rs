//! The README's first command: the embedded demo model (the default `--model`)
//! gives, through the CLI, every answer `assets/demo/questions.json` records
//! for its pictures — the right ones and the wrong ones — and the record is
//! honest about which are which.

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;

use common::vocollama;

/// The data's normalisation: lower case, punctuation and articles dropped.
fn normalize(s: &str) -> String {
    let s: String = s.to_lowercase().chars().map(|c| if c.is_alphanumeric() || c == ' ' { c } else { ' ' }).collect();
    s.split_whitespace().filter(|w| !matches!(*w, "a" | "an" | "the")).collect::<Vec<_>>().join(" ")
}

#[test]
fn the_demo_model_gives_its_recorded_answers() {
    let demo = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../assets/demo");
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(demo.join("questions.json")).unwrap()).unwrap();
    let listed = meta["questions"].as_array().unwrap();
    let mut by_image: BTreeMap<&str, Vec<&serde_json::Value>> = BTreeMap::new();
    for q in listed {
        by_image.entry(q["image"].as_str().unwrap()).or_default().push(q);
    }
    assert!(by_image.len() >= 5 && by_image.values().all(|qs| qs.len() >= 4), "several questions per picture");
    for free in ["Where is the", "How many shapes are there?", "Describe the picture."] {
        assert!(listed.iter().any(|q| q["question"].as_str().unwrap().starts_with(free)), "{free}");
    }
    let mut right = 0;
    for (image, qs) in &by_image {
        let path = demo.join(image);
        let mut args = vec!["ask", "--json", "--max-new-tokens", "48", "--image", path.to_str().unwrap()];
        args.extend(qs.iter().map(|q| q["question"].as_str().unwrap()));
        let out = vocollama(&args);
        assert!(out.ok, "{}", out.stderr);
        let lines: Vec<serde_json::Value> = out.stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(lines.len(), qs.len());
        for (q, line) in qs.iter().zip(&lines) {
            let (answer, truth) = (line["answer"].as_str().unwrap().trim(), q["truth"].as_str().unwrap());
            assert_eq!(answer, q["answer"].as_str().unwrap(), "{} ({image})", q["question"]);
            let correct = normalize(answer) == normalize(truth);
            assert_eq!(correct, q["correct"].as_bool().unwrap(), "{} ({image}): {answer} vs {truth}", q["question"]);
            right += usize::from(correct);
        }
    }
    let share = right as f64 / listed.len() as f64;
    assert!((share - meta["listed_accuracy"].as_f64().unwrap()).abs() < 1e-9);
    // The held-out measurement the README quotes is recorded with the command that drew its data.
    let held_out = &meta["held_out"];
    assert!(held_out["command"].as_str().unwrap().contains("--seed"), "{held_out}");
    assert!(held_out["questions"].as_u64().unwrap() >= 1000 && held_out["accuracy"].as_f64().is_some(), "{held_out}");
}
