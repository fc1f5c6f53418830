#!/usr/bin/env python3
"""Write a full-size VoCo-LLaMA checkpoint with random weights, for proving
the runtime at 7B scale (nothing of it is committed: 14 GB).

    python3 -m venv /var/tmp/venv7b && /var/tmp/venv7b/bin/pip install numpy sentencepiece protobuf
    /var/tmp/venv7b/bin/python tools/make_7b.py --out /var/tmp/7b [--seed 0] [--shards 2] [--layers 32]

`--layers L` writes the first L of the 32 layers (`OUT/voco-llama-7b-Llayers/`):
the `slice7b` shape of `vocollama bench`, whose runtimes are compared per
weight precision (`vocollama bench --model ... --llamacpp`, `tools/bench_llamacpp.py`).

Writes, from the seed, in a few minutes, one tensor in memory at a time:

  OUT/voco-llama-7b/                     the original LLaVA layout a VoCo-LLaMA training run saves:
      config.json                        Vicuna-7B (32 layers, 4096 / 11008, 32 heads, RMSNorm 1e-5,
                                         context 4096), vocab 32001 (`<voco>` = 32000), mlp2x_gelu,
                                         mm_vision_tower "openai/clip-vit-large-patch14-336"
      model-0000K-of-0000S.safetensors   f16, sharded, with model.safetensors.index.json
      tokenizer.model, added_tokens.json, tokenizer_config.json, special_tokens_map.json
                                         a LLaMA-style SentencePiece BPE of 32000 pieces (byte fallback)
  OUT/clip-vit-large-patch14-336/        CLIP ViT-L/14 at 336 px (CLIPVisionModel, 24 layers x 1024), f16,
                                         found by the model as a sibling named like the Hub repository

Weights are N(0, 0.02) (norm scales 1, biases 0), as transformers initialises
LLaMA and CLIP: what the runtime is measured on does not depend on them.
"""
import argparse
import json
import os
import struct

import numpy as np

VOCAB = 32000  # + <voco>
HIDDEN, FFN, LAYERS, HEADS, CONTEXT = 4096, 11008, 32, 32, 4096
CLIP = dict(hidden=1024, ffn=4096, layers=24, heads=16, image=336, patch=14)


def llama_tensors_of(layers):
    """(name, shape) of a Vicuna-7B in the original LLaVA layout, with the mlp2x_gelu projector."""
    out = [("model.embed_tokens.weight", (VOCAB + 1, HIDDEN))]
    for i in range(layers):
        p = f"model.layers.{i}."
        for n in ("q_proj", "k_proj", "v_proj", "o_proj"):
            out.append((p + f"self_attn.{n}.weight", (HIDDEN, HIDDEN)))
        out.append((p + "mlp.gate_proj.weight", (FFN, HIDDEN)))
        out.append((p + "mlp.up_proj.weight", (FFN, HIDDEN)))
        out.append((p + "mlp.down_proj.weight", (HIDDEN, FFN)))
        out.append((p + "input_layernorm.weight", (HIDDEN,)))
        out.append((p + "post_attention_layernorm.weight", (HIDDEN,)))
    out += [("model.norm.weight", (HIDDEN,)), ("lm_head.weight", (VOCAB + 1, HIDDEN))]
    out += [("model.mm_projector.0.weight", (HIDDEN, CLIP["hidden"])), ("model.mm_projector.0.bias", (HIDDEN,)),
            ("model.mm_projector.2.weight", (HIDDEN, HIDDEN)), ("model.mm_projector.2.bias", (HIDDEN,))]
    return out


def clip_tensors():
    d, f = CLIP["hidden"], CLIP["ffn"]
    patches = (CLIP["image"] // CLIP["patch"]) ** 2
    p = "vision_model."
    out = [(p + "embeddings.class_embedding", (d,)),
           (p + "embeddings.patch_embedding.weight", (d, 3, CLIP["patch"], CLIP["patch"])),
           (p + "embeddings.position_embedding.weight", (patches + 1, d)),
           (p + "pre_layrnorm.weight", (d,)), (p + "pre_layrnorm.bias", (d,))]
    for i in range(CLIP["layers"]):
        q = f"{p}encoder.layers.{i}."
        for n in ("q_proj", "k_proj", "v_proj", "out_proj"):
            out += [(q + f"self_attn.{n}.weight", (d, d)), (q + f"self_attn.{n}.bias", (d,))]
        out += [(q + "layer_norm1.weight", (d,)), (q + "layer_norm1.bias", (d,)),
                (q + "mlp.fc1.weight", (f, d)), (q + "mlp.fc1.bias", (f,)),
                (q + "mlp.fc2.weight", (d, f)), (q + "mlp.fc2.bias", (d,)),
                (q + "layer_norm2.weight", (d,)), (q + "layer_norm2.bias", (d,))]
    out += [(p + "post_layernorm.weight", (d,)), (p + "post_layernorm.bias", (d,))]
    return out


def values(rng, name, shape):
    """HF's initialisation in f16: norm weights 1, biases 0, everything else N(0, 0.02)."""
    if "norm" in name and name.endswith(".weight"):
        return np.ones(shape, np.float16)
    if name.endswith(".bias"):
        return np.zeros(shape, np.float16)
    return (rng.standard_normal(shape, dtype=np.float32) * 0.02).astype(np.float16)


def write_safetensors(path, tensors, rng):
    """A safetensors file written tensor by tensor (the header first, from the shapes)."""
    header, offset = {}, 0
    for name, shape in tensors:
        size = 2 * int(np.prod(shape))
        header[name] = {"dtype": "F16", "shape": list(shape), "data_offsets": [offset, offset + size]}
        offset += size
    header["__metadata__"] = {"format": "pt"}
    head = json.dumps(header, separators=(",", ":")).encode()
    head += b" " * (-len(head) % 8)
    with open(path + ".tmp", "wb") as f:
        f.write(struct.pack("<Q", len(head)))
        f.write(head)
        for name, shape in tensors:
            f.write(values(rng, name, shape).tobytes())
    os.replace(path + ".tmp", path)


def write_json(path, obj):
    with open(path, "w") as f:
        json.dump(obj, f, indent=2)


def write_tokenizer(d):
    """A LLaMA-style SentencePiece BPE of 32000 pieces: <unk>, <s>, </s>, the 256
    byte pieces, then word pieces, with <voco> added as 32000."""
    from sentencepiece import sentencepiece_model_pb2 as pb

    m = pb.ModelProto()
    m.trainer_spec.model_type = pb.TrainerSpec.BPE
    m.trainer_spec.vocab_size = VOCAB
    m.trainer_spec.byte_fallback = True
    m.trainer_spec.split_digits = True
    m.normalizer_spec.name = "identity"
    m.normalizer_spec.add_dummy_prefix = True
    m.normalizer_spec.remove_extra_whitespaces = False
    for piece, kind in (("<unk>", pb.ModelProto.SentencePiece.UNKNOWN), ("<s>", pb.ModelProto.SentencePiece.CONTROL),
                        ("</s>", pb.ModelProto.SentencePiece.CONTROL)):
        m.pieces.add(piece=piece, score=0.0, type=kind)
    for b in range(256):
        m.pieces.add(piece=f"<0x{b:02X}>", score=0.0, type=pb.ModelProto.SentencePiece.BYTE)
    letters = "abcdefghijklmnopqrstuvwxyz"
    words = ["\u2581"] + list(letters) + ["\u2581" + c for c in letters]
    words += [a + b for a in letters for b in letters]
    words += ["\u2581" + a + b for a in letters for b in letters]
    words += [a + b + c for a in letters for b in letters for c in letters]
    words += ["\u2581" + a + b + c for a in letters for b in letters for c in letters]
    seen, score = set(), 0.0
    for w in words:
        if len(m.pieces) == VOCAB:
            break
        if w not in seen:
            seen.add(w)
            m.pieces.add(piece=w, score=score, type=pb.ModelProto.SentencePiece.NORMAL)
            score -= 1.0
    assert len(m.pieces) == VOCAB, len(m.pieces)
    with open(os.path.join(d, "tokenizer.model"), "wb") as f:
        f.write(m.SerializeToString())
    write_json(os.path.join(d, "added_tokens.json"), {"<voco>": VOCAB})
    write_json(os.path.join(d, "special_tokens_map.json"),
               {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "pad_token": "<unk>"})
    write_json(os.path.join(d, "tokenizer_config.json"),
               {"tokenizer_class": "LlamaTokenizer", "add_bos_token": True, "add_eos_token": False,
                "legacy": True, "model_max_length": CONTEXT})


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--shards", type=int, default=2)
    ap.add_argument("--layers", type=int, default=LAYERS)
    a = ap.parse_args()
    if not 1 <= a.layers <= LAYERS:
        ap.error(f"--layers: expected 1 to {LAYERS}")
    rng = np.random.default_rng(a.seed)
    model = os.path.join(a.out, "voco-llama-7b" if a.layers == LAYERS else f"voco-llama-7b-{a.layers}layers")
    tower = os.path.join(a.out, "clip-vit-large-patch14-336")
    os.makedirs(model, exist_ok=True)
    os.makedirs(tower, exist_ok=True)

    write_json(os.path.join(tower, "config.json"), {
        "architectures": ["CLIPVisionModel"], "model_type": "clip_vision_model", "torch_dtype": "float16",
        "hidden_size": CLIP["hidden"], "intermediate_size": CLIP["ffn"], "num_hidden_layers": CLIP["layers"],
        "num_attention_heads": CLIP["heads"], "num_channels": 3, "image_size": CLIP["image"],
        "patch_size": CLIP["patch"], "hidden_act": "quick_gelu", "layer_norm_eps": 1e-5, "projection_dim": 768})
    write_json(os.path.join(tower, "preprocessor_config.json"), {
        "crop_size": {"height": 336, "width": 336}, "do_center_crop": True, "do_normalize": True,
        "do_resize": True, "do_rescale": True, "do_convert_rgb": True, "resample": 3, "rescale_factor": 1 / 255,
        "image_mean": [0.48145466, 0.4578275, 0.40821073], "image_std": [0.26862954, 0.26130258, 0.27577711],
        "size": {"shortest_edge": 336}})
    write_safetensors(os.path.join(tower, "model.safetensors"), clip_tensors(), rng)

    write_json(os.path.join(model, "config.json"), {
        "architectures": ["LlavaLlamaForCausalLM"], "model_type": "llava_llama", "torch_dtype": "float16",
        "vocab_size": VOCAB + 1, "hidden_size": HIDDEN, "intermediate_size": FFN, "num_hidden_layers": a.layers,
        "num_attention_heads": HEADS, "num_key_value_heads": HEADS, "max_position_embeddings": CONTEXT,
        "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "hidden_act": "silu", "bos_token_id": 1, "eos_token_id": 2,
        "pad_token_id": 0, "tie_word_embeddings": False, "mm_vision_tower": "openai/clip-vit-large-patch14-336",
        "mm_hidden_size": CLIP["hidden"], "mm_projector_type": "mlp2x_gelu", "mm_vision_select_layer": -2,
        "mm_vision_select_feature": "patch", "mm_use_im_start_end": False, "mm_use_im_patch_token": False,
        "image_aspect_ratio": "pad", "voco_num": 1})
    write_tokenizer(model)
    tensors = llama_tensors_of(a.layers)
    per = -(-len(tensors) // a.shards)
    weight_map = {}
    for k in range(a.shards):
        name = f"model-{k + 1:05d}-of-{a.shards:05d}.safetensors"
        part = tensors[k * per:(k + 1) * per]
        write_safetensors(os.path.join(model, name), part, rng)
        weight_map.update({t: name for t, _ in part})
        print(f"wrote {name}", flush=True)
    total = sum(2 * int(np.prod(s)) for _, s in tensors)
    write_json(os.path.join(model, "model.safetensors.index.json"),
               {"metadata": {"total_size": total}, "weight_map": weight_map})
    print(f"wrote {model} ({total / 1e9:.2f} GB of f16 weights) and {tower}")


if __name__ == "__main__":
    main()
