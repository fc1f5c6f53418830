//! FLOPs counted analytically (2 per multiply-add), for the matrix products
//! and attention a stage needs — norms, activations, softmax and RoPE are
//! left out, as the usual transformer counts do. Attention counts only the
//! keys a row may see.

use vocollama_model::checkpoint::config::{ClipVisionConfig, LlamaConfig};

/// The vision stage: patch embedding, the tower's layers up to the selected
/// one (`layers_run`), and the `mlp2x_gelu` projector.
pub fn vision(v: &ClipVisionConfig, layers_run: usize, text_hidden: usize) -> f64 {
    let (d, f) = (v.hidden_size as f64, v.intermediate_size as f64);
    let patches = v.num_patches() as f64;
    let seq = patches + 1.0;
    let patch_embed = 2.0 * (v.num_channels * v.patch_size * v.patch_size) as f64 * d * patches;
    let per_layer = seq * 2.0 * (4.0 * d * d + 2.0 * d * f) + 2.0 * 2.0 * d * seq * seq;
    let projector = 2.0 * patches * (d * text_hidden as f64 + (text_hidden * text_hidden) as f64);
    patch_embed + layers_run as f64 * per_layer + projector
}

/// `new` tokens run causally after `cached` positions, with `logit_rows` rows through `lm_head`.
pub fn llm(c: &LlamaConfig, cached: usize, new: usize, logit_rows: usize) -> f64 {
    let d = c.hidden_size as f64;
    let q = (c.num_attention_heads * c.head_dim) as f64;
    let kv = (c.num_key_value_heads * c.head_dim) as f64;
    let linear = 2.0 * (d * q + 2.0 * d * kv + q * d + 3.0 * d * c.intermediate_size as f64);
    // Row i sees cached + i + 1 keys.
    let (n, k) = (new as f64, cached as f64);
    let keys = n * k + n * (n + 1.0) / 2.0;
    let attention = 2.0 * 2.0 * q * keys;
    c.num_hidden_layers as f64 * (n * linear + attention) + 2.0 * d * (c.vocab_size * logit_rows) as f64
}

/// Bytes of a KV cache of `positions` positions, `bytes` per element.
pub fn kv_bytes(c: &LlamaConfig, positions: usize, bytes: usize) -> u64 {
    (positions * c.num_hidden_layers * 2 * c.num_key_value_heads * c.head_dim * bytes) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vicuna7b() -> LlamaConfig {
        LlamaConfig {
            vocab_size: 32000,
            hidden_size: 4096,
            intermediate_size: 11008,
            num_hidden_layers: 32,
            num_attention_heads: 32,
            num_key_value_heads: 32,
            head_dim: 128,
            rms_norm_eps: 1e-5,
            rope_theta: 1e4,
            max_position_embeddings: 4096,
            tie_word_embeddings: false,
            bos_token_id: None,
            eos_token_id: None,
        }
    }

    #[test]
    fn a_7b_token_costs_twice_its_parameters() {
        // 6.48 G non-embedding parameters → ~13 GFLOP per token (plus attention over one key).
        let per_token = llm(&vicuna7b(), 0, 1, 0);
        assert!((per_token / 2.0 / 6.476e9 - 1.0).abs() < 0.01, "{per_token}");
    }

    #[test]
    fn the_paper_s_kv_cache_sizes() {
        // `docs/design.md` §6: 0.5 MiB per VoCo token in f16; 576 image tokens = 288 MiB.
        assert_eq!(kv_bytes(&vicuna7b(), 1, 2), 512 << 10);
        assert_eq!(kv_bytes(&vicuna7b(), 576, 2), 288 << 20);
    }

    /// PyTorch's `FlopCounterMode` (`tools/make_fixtures.py flops`) on cases
    /// where both counts must agree exactly: full attention, one query row.
    #[test]
    fn counts_equal_pytorch_s_flop_counter() {
        use vocollama_model::checkpoint::config::VisionActivation;
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../assets/fixtures/flop-counts.json");
        let cases: Vec<serde_json::Value> = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let n = |c: &serde_json::Value, k: &str| c[k].as_u64().unwrap_or_else(|| panic!("{k}")) as usize;
        assert_eq!(cases.len(), 4);
        for c in &cases {
            let ours = match c["kind"].as_str().unwrap() {
                "vision" => {
                    let v = ClipVisionConfig {
                        hidden_size: n(c, "hidden_size"),
                        intermediate_size: n(c, "intermediate_size"),
                        num_hidden_layers: n(c, "num_hidden_layers"),
                        num_attention_heads: n(c, "num_attention_heads"),
                        num_channels: 3,
                        image_size: n(c, "image_size"),
                        patch_size: n(c, "patch_size"),
                        hidden_act: VisionActivation::QuickGelu,
                        layer_norm_eps: 1e-5,
                    };
                    vision(&v, n(c, "layers_run"), n(c, "text_hidden"))
                }
                _ => {
                    let l = LlamaConfig {
                        vocab_size: n(c, "vocab_size"),
                        hidden_size: n(c, "hidden_size"),
                        intermediate_size: n(c, "intermediate_size"),
                        num_hidden_layers: n(c, "num_hidden_layers"),
                        num_attention_heads: n(c, "num_attention_heads"),
                        num_key_value_heads: n(c, "num_key_value_heads"),
                        head_dim: n(c, "hidden_size") / n(c, "num_attention_heads"),
                        ..vicuna7b()
                    };
                    llm(&l, n(c, "cached"), 1, 1)
                }
            };
            assert_eq!(ours, n(c, "flops") as f64, "{c}");
        }
    }

    #[test]
    fn causal_attention_counts_a_triangle() {
        let c = LlamaConfig { num_hidden_layers: 1, ..vicuna7b() };
        let attn = |cached, new| llm(&c, cached, new, 0) - new as f64 * llm(&c, 0, 1, 0) + 4.0 * 4096.0 * new as f64;
        // Three rows after two cached keys see 3 + 4 + 5 keys.
        assert!((attn(2, 3) - 4.0 * 4096.0 * 12.0).abs() < 1.0);
    }
}
