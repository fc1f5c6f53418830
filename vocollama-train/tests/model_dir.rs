//! Model directories are written whole and never over what is not ours: a
//! user's directory or file is refused and left as it was, a failed save
//! leaves the previous model as it was, and a save over an earlier model
//! keeps what else that directory held (the run's checkpoints).

mod common;

use std::fs;
use std::path::Path;

use burn::tensor::Device;
use common::*;
use vocollama_model::checkpoint::config::ImagePooling;
use vocollama_model::model::random::preset;
use vocollama_model::{Error, LlavaModel, LoadOptions};
use vocollama_train::checkpoint::{save_llava, save_llava_with};
use vocollama_train::init::init_model;

fn init(out: &Path, seed: u64) -> vocollama_model::Result<usize> {
    init_model(out, &preset("tiny").unwrap(), &fixture("tokenizer"), 1, ImagePooling::None, None, seed)
}

/// Names in `dir` that start with a dot: the temporary directories of a save.
fn hidden(dir: &Path) -> Vec<String> {
    fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect()
}

#[test]
fn a_users_directory_or_file_is_refused_and_left_alone() {
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("photos");
    fs::create_dir(&dir).unwrap();
    fs::write(dir.join("holiday.jpg"), b"precious").unwrap();
    let err = init(&dir, 1).unwrap_err().to_string();
    assert!(err.contains("photos") && err.contains("not a model directory written by vocollama"), "{err}");
    assert!(err.contains("holiday.jpg") && !err.contains('\n'), "{err}");
    assert_eq!(fs::read(dir.join("holiday.jpg")).unwrap(), b"precious");
    assert_eq!(fs::read_dir(&dir).unwrap().count(), 1, "nothing added to the user's directory");

    let file = work.path().join("notes.txt");
    fs::write(&file, b"mine").unwrap();
    let err = init(&file, 1).unwrap_err().to_string();
    assert!(err.contains("notes.txt") && err.contains("not a directory"), "{err}");
    assert_eq!(fs::read(&file).unwrap(), b"mine");

    #[cfg(unix)]
    {
        let link = work.path().join("link");
        std::os::unix::fs::symlink(&dir, &link).unwrap();
        let err = init(&link, 1).unwrap_err().to_string();
        assert!(err.contains("not a directory"), "a link is not replaced: {err}");
        assert!(fs::symlink_metadata(&link).unwrap().file_type().is_symlink());
    }
    assert!(hidden(work.path()).is_empty(), "no temporary directory left: {:?}", hidden(work.path()));
}

#[test]
fn a_failed_save_leaves_the_previous_model_whole() {
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("model");
    init(&out, 1).unwrap();
    let before = fs::read(out.join("model.safetensors")).unwrap();
    let device = Device::flex();
    let other = work.path().join("other");
    init(&other, 2).unwrap();
    let model = LlavaModel::load(&other, &LoadOptions::default(), &device).unwrap();
    let failing = |_: &Path| -> vocollama_model::Result<()> { Err(Error::Invalid("the disk is full".into())) };
    let err = save_llava_with(&model, &out, &serde_json::Map::new(), &failing).unwrap_err().to_string();
    assert!(err.contains("the disk is full"), "{err}");
    assert_eq!(fs::read(out.join("model.safetensors")).unwrap(), before, "the previous weights are untouched");
    assert!(LlavaModel::load(&out, &LoadOptions::default(), &device).is_ok(), "the previous model still loads");
    assert!(hidden(work.path()).is_empty(), "no temporary directory left: {:?}", hidden(work.path()));
}

#[test]
fn a_save_over_an_earlier_model_keeps_what_else_its_directory_held() {
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("model");
    // What `train --save-every` leaves before the final model: checkpoints only.
    init(&out.join("checkpoint-3"), 1).unwrap();
    init(&out, 1).unwrap();
    fs::write(out.join("README.txt"), b"notes about this run").unwrap();
    let device = Device::flex();
    init(&work.path().join("other"), 2).unwrap();
    let model = LlavaModel::load(&work.path().join("other"), &LoadOptions::default(), &device).unwrap();
    save_llava(&model, &out, &serde_json::Map::new()).unwrap();
    assert_eq!(
        fs::read(out.join("model.safetensors")).unwrap(),
        fs::read(work.path().join("other/model.safetensors")).unwrap(),
        "the new weights are in place"
    );
    assert!(out.join("checkpoint-3/model.safetensors").is_file(), "the checkpoint stays");
    assert_eq!(fs::read(out.join("README.txt")).unwrap(), b"notes about this run");
    assert!(hidden(work.path()).is_empty(), "no temporary directory left: {:?}", hidden(work.path()));
    // The directory written is ours: saving again is allowed, and it still loads.
    save_llava(&model, &out, &serde_json::Map::new()).unwrap();
    assert!(LlavaModel::load(&out, &LoadOptions::default(), &device).is_ok());
}
