//! A model's fingerprint: SHA-256 over everything that decides what stage 1
//! computes — the configs, the weight files' identity and the image
//! preprocessing — stamped into every `.voco` file and frame-store key so that
//! another model's cache is refused. Every field is hashed in an explicit,
//! canonical encoding (never a `Debug` string, which may change between
//! versions and would silently invalidate every cache).

use std::path::Path;

use sha2::{Digest, Sha256};

use super::config::{ClipVisionConfig, LlamaConfig, ModelConfig, VisionActivation};
use super::weights::Checkpoint;
use crate::error::Result;
use crate::media::preprocess::{Preprocessor, Resize};

/// The separate tower of a model, as the fingerprint sees it.
pub struct TowerIdentity<'a> {
    pub dir: &'a Path,
    pub checkpoint: &'a Checkpoint,
}

/// The fingerprint of a loaded model: config.json as written, the weight
/// files' identity, the tower's (when it has its own directory) and the preprocessing.
pub fn of_model(
    config: &ModelConfig,
    checkpoint: &Checkpoint,
    tower: Option<TowerIdentity<'_>>,
    preprocessor: Option<&Preprocessor>,
) -> Result<[u8; 32]> {
    let mut h = Sha256::new();
    h.update(b"vocollama model fingerprint v2\0");
    let read = |p: &Path| crate::io::bounded::read_bounded(p, crate::io::bounded::MAX_CONFIG_BYTES);
    h.update(read(&config.path)?);
    checkpoint.identity(&mut h)?;
    if let Some(t) = tower.filter(|t| t.checkpoint.dir != checkpoint.dir) {
        h.update(read(&t.dir.join("config.json"))?);
        t.checkpoint.identity(&mut h)?;
    }
    if let Some(p) = preprocessor {
        preprocessing(&mut h, p);
    }
    Ok(h.finalize().into())
}

/// The fingerprint of a model built from random weights in memory: its seed and shapes.
pub fn of_random(seed: u64, llm: &LlamaConfig, vision: &ClipVisionConfig, preprocessor: &Preprocessor) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"vocollama random model v2\0");
    h.update(seed.to_le_bytes());
    let sizes = [
        llm.vocab_size,
        llm.hidden_size,
        llm.intermediate_size,
        llm.num_hidden_layers,
        llm.num_attention_heads,
        llm.num_key_value_heads,
        llm.head_dim,
        llm.max_position_embeddings,
        usize::from(llm.tie_word_embeddings),
        vision.hidden_size,
        vision.intermediate_size,
        vision.num_hidden_layers,
        vision.num_attention_heads,
        vision.num_channels,
        vision.image_size,
        vision.patch_size,
        usize::from(vision.hidden_act == VisionActivation::Gelu),
    ];
    for v in sizes {
        h.update((v as u64).to_le_bytes());
    }
    for v in [llm.rms_norm_eps, llm.rope_theta, vision.layer_norm_eps] {
        h.update(v.to_le_bytes());
    }
    preprocessing(&mut h, preprocessor);
    h.finalize().into()
}

/// Every field of the preprocessing, tagged, in a fixed order.
fn preprocessing(h: &mut Sha256, p: &Preprocessor) {
    h.update(b"preprocess\0");
    h.update([u8::from(p.pad_to_square)]);
    let sizes: [u64; 2] = match p.resize {
        None => [0, 0],
        Some(Resize::ShortestEdge(s)) => [1, s as u64],
        Some(Resize::Exact(hh, w)) => [2, ((hh as u64) << 32) | w as u64],
    };
    let crop = p.crop.map_or([0, 0], |(hh, w)| [1, ((hh as u64) << 32) | w as u64]);
    for v in sizes.into_iter().chain(crop) {
        h.update(v.to_le_bytes());
    }
    match p.rescale_factor {
        None => h.update([0]),
        Some(f) => {
            h.update([1]);
            h.update(f.to_le_bytes());
        }
    }
    match p.normalize {
        None => h.update([0]),
        Some((mean, std)) => {
            h.update([1]);
            for v in mean.iter().chain(&std) {
                h.update(v.to_le_bytes());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest(p: &Preprocessor) -> [u8; 32] {
        let mut h = Sha256::new();
        preprocessing(&mut h, p);
        h.finalize().into()
    }

    #[test]
    fn every_preprocessing_field_changes_the_fingerprint() {
        let base = Preprocessor::clip_default(336, true);
        let variants = [
            Preprocessor { pad_to_square: false, ..base.clone() },
            Preprocessor { resize: Some(Resize::ShortestEdge(224)), ..base.clone() },
            Preprocessor { resize: Some(Resize::Exact(336, 336)), ..base.clone() },
            Preprocessor { resize: None, ..base.clone() },
            Preprocessor { crop: Some((336, 335)), ..base.clone() },
            Preprocessor { crop: None, ..base.clone() },
            Preprocessor { rescale_factor: Some(1.0 / 256.0), ..base.clone() },
            Preprocessor { rescale_factor: None, ..base.clone() },
            Preprocessor { normalize: Some(([0.5; 3], [0.5; 3])), ..base.clone() },
            Preprocessor { normalize: None, ..base.clone() },
        ];
        let mut seen = vec![digest(&base)];
        for v in &variants {
            let d = digest(v);
            assert!(!seen.contains(&d), "{v:?} hashes like another preprocessing");
            seen.push(d);
        }
        assert_eq!(digest(&base), digest(&base.clone()), "the same preprocessing, the same bytes");
    }

    #[test]
    fn the_encoding_is_pinned() {
        // A change here invalidates every `.voco` file and frame store: bump the version string with it.
        let hex: String = digest(&Preprocessor::clip_default(336, true)).iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, "6e96f220997df38ba7cb263ee1638ac34f809a221b66a529a745beba05e9fa2e");
    }
}
