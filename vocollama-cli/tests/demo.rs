//! The README's first command: the embedded demo model (the default `--model`)
//! answers the demo questions of `assets/demo/questions.json` correctly.

mod common;

use std::path::PathBuf;

use common::vocollama;

#[test]
fn the_demo_model_answers_its_questions() {
    let demo = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../assets/demo");
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(demo.join("questions.json")).unwrap()).unwrap();
    let questions = meta["questions"].as_array().unwrap();
    assert!(questions.len() >= 5, "a demo question per type");
    for q in questions {
        let image = demo.join(q["image"].as_str().unwrap());
        let question = q["question"].as_str().unwrap();
        let out = vocollama(&["ask", "--json", "--image", image.to_str().unwrap(), question]);
        assert!(out.ok, "{}", out.stderr);
        let line: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
        let answer = line["answer"].as_str().unwrap().trim().trim_end_matches('.').to_lowercase();
        assert_eq!(answer, q["answer"].as_str().unwrap(), "{question} ({})", image.display());
    }
}
