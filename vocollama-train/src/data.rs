//! Training and evaluation records in LLaVA's JSON format: a list of
//! `{"id", "image", "conversations": [{"from": "human"|"gpt", "value"}...]}`
//! with `<image>` in the first human turn; an optional `"type"` names the
//! question type for per-type accuracy.

use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use vocollama_model::io::atomic_write::write_atomic;
use vocollama_model::io::json::read_json_capped;
use vocollama_model::{Error, Result};

#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    pub id: String,
    /// Relative to the JSON file's directory (or absolute).
    pub image: Option<PathBuf>,
    pub kind: Option<String>,
    /// What the picture shows, when the data set knows it (`data shapes` writes
    /// the scene's caption): for breaking results down by scene, never trained on.
    pub scene: Option<String>,
    /// (human, gpt) turns in order; the first human turn holds `<image>` when there is an image.
    pub turns: Vec<(String, String)>,
}

impl Record {
    /// The first question without the `<image>` marker and the newline LLaVA puts after it.
    pub fn question(&self, turn: usize) -> String {
        let q = &self.turns[turn].0;
        q.replace("<image>\n", "").replace("\n<image>", "").replace("<image>", "").trim().to_string()
    }
}

fn bad(path: &Path, msg: String) -> Error {
    Error::Invalid(format!("{}: {msg}", path.display()))
}

/// Read a LLaVA-style JSON list.
pub fn load_records(path: &Path) -> Result<Vec<Record>> {
    // A LLaVA training set is one JSON file (~1 GiB for LLaVA-665k).
    let value = read_json_capped(path, 8 << 30)?;
    let list = value.as_array().ok_or_else(|| bad(path, "expected a JSON list of records".into()))?;
    list.iter()
        .enumerate()
        .map(|(i, r)| {
            let field = |name: &str| r.get(name).and_then(Value::as_str).map(str::to_string);
            let id = r
                .get("id")
                .map(|v| v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string()))
                .unwrap_or_else(|| i.to_string());
            let convs = r
                .get("conversations")
                .and_then(Value::as_array)
                .ok_or_else(|| bad(path, format!("record {i} ({id}): no `conversations` list")))?;
            let mut turns = Vec::new();
            for (j, pair) in convs.chunks(2).enumerate() {
                let role = |k: usize| pair.get(k).and_then(|m| m.get("from")).and_then(Value::as_str);
                let text = |k: usize| pair.get(k).and_then(|m| m.get("value")).and_then(Value::as_str);
                match (role(0), text(0), role(1), text(1)) {
                    (Some("human"), Some(q), Some("gpt"), Some(a)) => turns.push((q.to_string(), a.to_string())),
                    _ => {
                        return Err(bad(
                            path,
                            format!("record {i} ({id}): turn {j} must be a `human` message then a `gpt` message"),
                        ));
                    }
                }
            }
            if turns.is_empty() {
                return Err(bad(path, format!("record {i} ({id}): no turns")));
            }
            Ok(Record {
                id,
                image: field("image").map(PathBuf::from),
                kind: field("type"),
                scene: field("scene"),
                turns,
            })
        })
        .collect()
}

/// Write records as a LLaVA-style JSON list (atomically).
pub fn save_records(path: &Path, records: &[Record]) -> Result<()> {
    let list: Vec<Value> = records
        .iter()
        .map(|r| {
            let mut v = json!({
                "id": r.id,
                "conversations": r.turns.iter().flat_map(|(q, a)| [
                    json!({"from": "human", "value": q}),
                    json!({"from": "gpt", "value": a}),
                ]).collect::<Vec<_>>(),
            });
            if let Some(img) = &r.image {
                v["image"] = json!(img.to_string_lossy());
            }
            if let Some(k) = &r.kind {
                v["type"] = json!(k);
            }
            if let Some(s) = &r.scene {
                v["scene"] = json!(s);
            }
            v
        })
        .collect();
    let text = serde_json::to_string_pretty(&list).expect("records serialise");
    write_atomic(path, text.as_bytes())
}

/// Exact match after normalisation: lower case, punctuation and articles dropped, spaces collapsed.
pub fn normalize_answer(s: &str) -> String {
    let s: String = s.to_lowercase().chars().map(|c| if c.is_alphanumeric() || c == ' ' { c } else { ' ' }).collect();
    s.split_whitespace().filter(|w| !matches!(*w, "a" | "an" | "the")).collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_bad_records_are_named() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("data.json");
        let r = Record {
            id: "x1".into(),
            image: Some("images/a.png".into()),
            kind: Some("colour".into()),
            scene: Some("a big red circle top left".into()),
            turns: vec![("<image>\nWhat colour?".into(), "Red.".into()), ("And now?".into(), "blue".into())],
        };
        save_records(&p, std::slice::from_ref(&r)).unwrap();
        assert_eq!(load_records(&p).unwrap(), vec![r.clone()]);
        assert_eq!(r.question(0), "What colour?");
        std::fs::write(&p, r#"[{"id": 7, "conversations": [{"from": "gpt", "value": "hi"}]}]"#).unwrap();
        let err = load_records(&p).unwrap_err().to_string();
        assert!(err.contains("data.json") && err.contains("record 0 (7)") && err.contains("human"), "{err}");
        assert_eq!(normalize_answer(" The Red."), "red");
        assert_eq!(normalize_answer("Two"), normalize_answer("two!"));
    }
}
