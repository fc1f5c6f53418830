#!/usr/bin/env python3
"""Build tiny random LLaVA-1.5 checkpoints and reference outputs with HF transformers.

Everything under assets/fixtures/ is written by this script (deterministic seeds);
the Rust tests compare against the reference tensors it stores. Run from the
repository root:

    pip install torch transformers safetensors pillow numpy
    python3 tools/make_fixtures.py           # everything (then tools/make_tokenizer.py, then `prompts`)
    python3 tools/make_fixtures.py prompts   # only the real-prompt references
    python3 tools/make_fixtures.py gif       # only images/clip64.gif
    python3 tools/make_fixtures.py flops     # only flop-counts.json
    python3 tools/make_fixtures.py train     # only llava-gqa-bf16/train-reference.safetensors

Fixtures (each LLaVA one has its own reference.safetensors):
  clip-full/           CLIPModel (text + vision), f32 safetensors, preprocessor_config.json
  clip-vision-f16/     CLIPVisionModel, f16 pytorch_model.bin
  llava-gqa-bf16/      original LLaVA layout (llava_llama), GQA, bf16, 2 safetensors shards
                       + index, DeepSpeed vision-tower copies, mm_vision_tower = ../clip-full,
                       image_aspect_ratio pad, mlp2x_gelu
  llava-mha-f16-bin/   original layout (model_type "llava" as liuhaotian's configs), MHA,
                       f16 pytorch_model-*.bin shards + index, rope_theta 5e5, mlp3x_gelu,
                       cls_patch features, tower by hub name (callers pass clip-vision-f16)
  llava-hf/            llava-hf layout (LlavaForConditionalGeneration), f32 safetensors
  llama-tied/          plain LlamaForCausalLM with tied embeddings
  projector-linear.safetensors   a `linear` projector: weight, bias, input, output
  preprocess-336.safetensors     CLIPImageProcessor pixels at 336 px for images/photo.png
  flop-counts.json               PyTorch's FlopCounterMode for a vision stage and LLaMA tokens
  ../images/clip64.gif           a 64-frame animated GIF (a ball crossing the frame) for video
"""
import json
import os
import shutil

import numpy as np
import torch
from PIL import Image
from safetensors.torch import save_file
from transformers import (
    CLIPConfig,
    CLIPImageProcessorPil as CLIPImageProcessor,
    CLIPModel,
    CLIPVisionConfig,
    CLIPVisionModel,
    LlamaConfig,
    LlamaForCausalLM,
    LlavaConfig,
    LlavaForConditionalGeneration,
)

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "assets")
FIX = os.path.join(ROOT, "fixtures")
IMAGES = os.path.join(ROOT, "images")
IMAGE_TOKEN_INDEX = -200

CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]


def randomize(module, seed, scale=0.15):
    """HF's init (std 0.02) gives near-uniform logits; larger weights make parity tests sharp."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if "norm" in name and name.endswith("weight") or "layer_norm" in name and name.endswith("weight") \
                    or "layrnorm" in name and name.endswith("weight"):
                p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(scale * torch.randn(p.shape, generator=g))


def round_to(module, dtype):
    """Round weights through the on-disk dtype so f32 references match a loader that upcasts."""
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(p.to(dtype).to(torch.float32))


def make_images():
    os.makedirs(IMAGES, exist_ok=True)
    rng = np.random.default_rng(7)

    def picture(w, h):
        y, x = np.mgrid[0:h, 0:w].astype(np.float32)
        r = 127 + 120 * np.sin(x / w * 6.0 + y / h * 2.0)
        g = 127 + 120 * np.cos(y / h * 5.0)
        b = (x * 3 + y * 2) % 256
        img = np.stack([r, g, b], -1)
        img[h // 4: h // 2, w // 3: w // 2] = [250, 20, 30]  # a hard-edged block
        img += rng.normal(0, 12, img.shape)
        return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8), "RGB")

    picture(75, 40).save(os.path.join(IMAGES, "wide.png"))    # non-square, smaller than 336
    picture(47, 90).save(os.path.join(IMAGES, "tall.png"))    # non-square, other orientation
    picture(200, 150).save(os.path.join(IMAGES, "photo.png"))  # upscaled at 336


def make_clip_gif():
    """64 frames, 256x192, 100 ms each: a red ball crossing a blue field left to
    right while a green bar grows along the bottom (flat colours: a small file
    whose frames decode to 192 KiB of RGB each)."""
    frames = []
    for t in range(64):
        img = np.zeros((192, 256, 3), np.uint8)
        img[:] = [30, 60, 160]
        y, x = np.mgrid[0:192, 0:256]
        cx = 24 + t * (256 - 48) / 63
        img[(x - cx) ** 2 + (y - 80) ** 2 < 20 ** 2] = [230, 30, 30]
        img[176:188, : 4 * (t + 1)] = [40, 200, 60]
        frames.append(Image.fromarray(img, "RGB").convert("P", palette=Image.Palette.ADAPTIVE, colors=8))
    frames[0].save(os.path.join(IMAGES, "clip64.gif"), save_all=True, append_images=frames[1:], duration=100,
                   loop=0, disposal=1)


def expand2square(img, background):
    """LLaVA's `pad` aspect handling, verbatim in behaviour."""
    w, h = img.size
    if w == h:
        return img
    if w > h:
        out = Image.new(img.mode, (w, w), background)
        out.paste(img, (0, (w - h) // 2))
        return out
    out = Image.new(img.mode, (h, h), background)
    out.paste(img, ((h - w) // 2, 0))
    return out


def processor(size):
    return CLIPImageProcessor(
        do_resize=True, size={"shortest_edge": size}, resample=3, do_center_crop=True,
        crop_size={"height": size, "width": size}, do_rescale=True, rescale_factor=1 / 255,
        do_normalize=True, image_mean=CLIP_MEAN, image_std=CLIP_STD, do_convert_rgb=True)


def pixels(proc, path, pad):
    img = Image.open(path).convert("RGB")
    if pad:
        img = expand2square(img, tuple(int(x * 255) for x in proc.image_mean))
    return proc(images=img, return_tensors="pt")["pixel_values"]


def clip_vision_config(**kw):
    base = dict(hidden_size=48, intermediate_size=96, num_hidden_layers=3, num_attention_heads=4,
                image_size=56, patch_size=14, num_channels=3, hidden_act="quick_gelu",
                layer_norm_eps=1e-5, projection_dim=16)
    base.update(kw)
    return base


def write_processor(dirpath, size):
    processor(size).save_pretrained(dirpath)


def select_features(vision, pix, layer, feature):
    out = vision(pixel_values=pix, output_hidden_states=True)
    h = out.hidden_states[layer]
    return h[:, 1:] if feature == "patch" else h


def gelu_mlp(linears):
    """mlpNx_gelu: Linear, GELU, Linear, GELU, ..., as a torch Sequential (LLaVA's builder)."""
    mods = []
    for i, l in enumerate(linears):
        if i:
            mods.append(torch.nn.GELU())
        mods.append(l)
    return torch.nn.Sequential(*mods)


def llama_config(**kw):
    base = dict(vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=512,
                rms_norm_eps=1e-5, rope_theta=10000.0, bos_token_id=1, eos_token_id=2,
                pad_token_id=0, tie_word_embeddings=False, hidden_act="silu",
                attn_implementation="eager")
    base.update(kw)
    return LlamaConfig(**base)


def llm_ids(seed, n, vocab):
    g = torch.Generator().manual_seed(seed)
    return torch.cat([torch.tensor([1]), torch.randint(3, vocab, (n - 1,), generator=g)])


def splice_logits(llm, embeds_img, ids):
    """LLaVA's prepare_inputs_labels_for_multimodal for one image, batch 1."""
    pos = (ids == IMAGE_TOKEN_INDEX).nonzero()[0, 0].item()
    emb = llm.model.embed_tokens
    seq = torch.cat([emb(ids[:pos]), embeds_img[0], emb(ids[pos + 1:])], 0)[None]
    return llm(inputs_embeds=seq).logits


def original_llava_config(cfg, mm, extra):
    """config.json as the LLaVA code base writes it (transformers 4.3x style, flat)."""
    d = {
        "architectures": ["LlavaLlamaForCausalLM"],
        "model_type": "llava_llama",
        "vocab_size": cfg.vocab_size, "hidden_size": cfg.hidden_size,
        "intermediate_size": cfg.intermediate_size, "num_hidden_layers": cfg.num_hidden_layers,
        "num_attention_heads": cfg.num_attention_heads,
        "num_key_value_heads": cfg.num_key_value_heads,
        "max_position_embeddings": cfg.max_position_embeddings, "rms_norm_eps": cfg.rms_norm_eps,
        "rope_theta": cfg.rope_parameters["rope_theta"], "rope_scaling": None,
        "hidden_act": "silu", "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0,
        "tie_word_embeddings": False, "pretraining_tp": 1, "use_cache": True,
        "torch_dtype": "float16", "freeze_mm_mlp_adapter": False, "mm_patch_merge_type": "flat",
        "mm_use_im_patch_token": False, "mm_use_im_start_end": False, "tune_mm_mlp_adapter": False,
    }
    d.update(mm)
    d.update(extra)
    return d


def save_shards_safetensors(state, dirpath, nshards):
    keys = sorted(state)
    per = (len(keys) + nshards - 1) // nshards
    weight_map = {}
    for s in range(nshards):
        name = f"model-{s + 1:05d}-of-{nshards:05d}.safetensors"
        part = {k: state[k].contiguous() for k in keys[s * per:(s + 1) * per]}
        save_file(part, os.path.join(dirpath, name), metadata={"format": "pt"})
        weight_map.update({k: name for k in part})
    with open(os.path.join(dirpath, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": 0}, "weight_map": weight_map}, f, indent=1)


def save_shards_bin(state, dirpath, nshards):
    keys = sorted(state)
    per = (len(keys) + nshards - 1) // nshards
    weight_map = {}
    for s in range(nshards):
        name = f"pytorch_model-{s + 1:05d}-of-{nshards:05d}.bin"
        part = {k: state[k].contiguous().clone() for k in keys[s * per:(s + 1) * per]}
        torch.save(part, os.path.join(dirpath, name))
        weight_map.update({k: name for k in part})
    with open(os.path.join(dirpath, "pytorch_model.bin.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": 0}, "weight_map": weight_map}, f, indent=1)


def fresh(dirpath):
    shutil.rmtree(dirpath, ignore_errors=True)
    os.makedirs(dirpath)
    return dirpath


def write_json(path, obj):
    with open(path, "w") as f:
        json.dump(obj, f, indent=2)
        f.write("\n")


def reference(dirpath, tensors, meta):
    save_file({k: v.detach().contiguous() for k, v in tensors.items()},
              os.path.join(dirpath, "reference.safetensors"))
    write_json(os.path.join(dirpath, "reference.json"), meta)


# ---------------------------------------------------------------- vision towers

def make_clip_full():
    d = fresh(os.path.join(FIX, "clip-full"))
    cfg = CLIPConfig(text_config=dict(vocab_size=64, hidden_size=32, intermediate_size=64,
                                      num_hidden_layers=1, num_attention_heads=2,
                                      max_position_embeddings=16, projection_dim=16),
                     vision_config=clip_vision_config(), projection_dim=16)
    model = CLIPModel(cfg).eval()
    randomize(model, 11, scale=0.1)
    model.save_pretrained(d, safe_serialization=True)
    write_processor(d, 56)
    return model.vision_model


def make_clip_vision_f16():
    d = fresh(os.path.join(FIX, "clip-vision-f16"))
    cfg = CLIPVisionConfig(**clip_vision_config(num_hidden_layers=4, hidden_size=40,
                                                intermediate_size=80, num_attention_heads=5))
    model = CLIPVisionModel(cfg).eval()
    randomize(model, 12, scale=0.1)
    round_to(model, torch.float16)
    # Hub CLIPVisionModel checkpoints name their tensors "vision_model.*".
    state = {f"vision_model.{k}": v.to(torch.float16) for k, v in model.state_dict().items()}
    torch.save(state, os.path.join(d, "pytorch_model.bin"))
    cfg.save_pretrained(d)
    write_processor(d, 56)
    return model


# ---------------------------------------------------------------- LLaVA, original layout

def make_llava_original(name, vision, clip_dir, llm_cfg, mm, extra, dtype, writer, deepspeed_copies,
                        image, seed):
    d = fresh(os.path.join(FIX, name))
    llm = LlamaForCausalLM(llm_cfg).eval()
    randomize(llm, seed)
    round_to(llm, dtype)
    nproj = 1 if mm["mm_projector_type"] == "linear" else int(mm["mm_projector_type"][3])
    dims = [mm["mm_hidden_size"]] + [llm_cfg.hidden_size] * nproj
    linears = [torch.nn.Linear(dims[i], dims[i + 1]) for i in range(nproj)]
    proj = gelu_mlp(linears).eval()
    randomize(proj, seed + 1)
    round_to(proj, dtype)

    state = {k: v.to(dtype) for k, v in llm.state_dict().items()}
    for k, v in proj.state_dict().items():
        state[f"model.mm_projector.{k}"] = v.to(dtype)
    if deepspeed_copies:
        for k, v in vision.state_dict().items():
            state[f"model.vision_tower.vision_tower.vision_model.{k}"] = v.to(dtype)
    writer(state, d, 2)
    write_json(os.path.join(d, "config.json"), original_llava_config(llm_cfg, mm, extra))

    proc = processor(56)
    pix = pixels(proc, os.path.join(IMAGES, image), pad=mm.get("image_aspect_ratio") == "pad")
    feats = select_features(vision, pix, mm["mm_vision_select_layer"], mm["mm_vision_select_feature"])
    embeds = proj(feats)
    ids = llm_ids(seed + 2, 12, llm_cfg.vocab_size)
    logits = llm(input_ids=ids[None]).logits
    # [BOS, a few text ids, <image>, more text]: the image sits inside the prompt
    lids = torch.cat([ids[:3], torch.tensor([IMAGE_TOKEN_INDEX]), ids[3:9]])
    llava_logits = splice_logits(llm, embeds, lids)
    reference(d, {"pixel_values": pix, "clip_features": feats, "image_embeds": embeds,
                  "llm_input_ids": ids, "llm_logits": logits,
                  "llava_input_ids": lids, "llava_logits": llava_logits},
              {"image": f"images/{image}", "vision_tower": clip_dir})
    return d, llm, embeds


# ---------------------------------------------------------------- VoCo references

def voco_mask(ids_expanded, voco_id):
    """The VoCo attention layout (docs/design.md §4) as an additive 4D mask: causal, and rows after the
    last VoCo token see no key before the first one."""
    L = len(ids_expanded)
    pos = [i for i, t in enumerate(ids_expanded) if t == voco_id]
    allowed = torch.tril(torch.ones(L, L, dtype=torch.bool))
    if pos:
        f, l = pos[0], pos[-1]
        allowed[l + 1:, :f] = False
    mask = torch.zeros(L, L)
    mask[~allowed] = torch.finfo(torch.float32).min
    return mask[None, None]


def masked_logits(llm, embeds_img, ids, voco_id):
    pos = (ids == IMAGE_TOKEN_INDEX).nonzero()[0, 0].item()
    emb = llm.model.embed_tokens
    seq = torch.cat([emb(ids[:pos]), embeds_img[0], emb(ids[pos + 1:])], 0)[None]
    expanded = ids[:pos].tolist() + [IMAGE_TOKEN_INDEX] * embeds_img.shape[1] + ids[pos + 1:].tolist()
    return llm(inputs_embeds=seq, attention_mask=voco_mask(expanded, voco_id)).logits


def make_voco_references(d, llm, embeds, voco_id, seed):
    """A VoCo prompt [BOS, <image>, ▁, \n, <voco>*N, ▁, \n, question...] for N = 1, 2, 8:
    logits of the masked single pass (LlamaForCausalLM with the VoCo layout as a 4D mask, docs/design.md §4)
    and 8 greedy tokens, each step a fresh masked pass over the grown sequence."""
    g = torch.Generator().manual_seed(seed)
    vocab = llm.config.vocab_size
    sp, nl = 29871 % vocab, 13  # stand-ins for "▁" and "<0x0A>"
    question = torch.randint(3, vocab - 1, (9,), generator=g)
    second = torch.randint(3, vocab - 1, (5,), generator=g)
    out = {}
    for n in (1, 2, 8):
        ids = torch.tensor([1, IMAGE_TOKEN_INDEX, sp, nl] + [voco_id] * n + [sp, nl]) 
        ids = torch.cat([ids, question])
        out[f"n{n}_ids"] = ids
        out[f"n{n}_logits"] = masked_logits(llm, embeds, ids, voco_id)
        seq = ids
        greedy = []
        for _ in range(8):
            nxt = masked_logits(llm, embeds, seq, voco_id)[0, -1].argmax()
            greedy.append(nxt.item())
            seq = torch.cat([seq, nxt[None]])
        out[f"n{n}_greedy"] = torch.tensor(greedy)
        # A second turn after the first answer: its logits come from the same masked pass.
        turn2 = torch.cat([seq, torch.tensor([2]), second])
        out[f"n{n}_turn2_ids"] = turn2
        out[f"n{n}_turn2_logits"] = masked_logits(llm, embeds, turn2, voco_id)[:, -(1 + len(second)):]
    # Plain causal mask through the same 4D path equals no mask at all: the mask is honoured as given.
    ids = out["n2_ids"]
    plain = masked_logits(llm, embeds, ids, -1)
    assert torch.allclose(plain, splice_logits(llm, embeds, ids), atol=1e-5)
    assert not torch.allclose(plain, out["n2_logits"], atol=1e-3)
    save_file({k: v.detach().contiguous() for k, v in out.items()}, os.path.join(d, "voco-reference.safetensors"))


# ---------------------------------------------------------------- real prompts (needs make_tokenizer.py)

def load_llava_gqa():
    """llava-gqa-bf16 rebuilt from its files: LLM, projector, and the CLIP tower of clip-full."""
    from safetensors.torch import load_file
    d = os.path.join(FIX, "llava-gqa-bf16")
    state = {}
    for f in sorted(os.listdir(d)):
        if f.startswith("model-") and f.endswith(".safetensors"):
            state.update(load_file(os.path.join(d, f)))
    llm = LlamaForCausalLM(llama_config(num_key_value_heads=2)).eval()
    llm.load_state_dict({k: v.float() for k, v in state.items() if k.startswith(("model.layers", "model.embed",
                                                                               "model.norm", "lm_head"))})
    proj = gelu_mlp([torch.nn.Linear(48, 64), torch.nn.Linear(64, 64)]).eval()
    proj.load_state_dict({k[len("model.mm_projector."):]: v.float() for k, v in state.items()
                          if k.startswith("model.mm_projector.")})
    vision = CLIPModel.from_pretrained(os.path.join(FIX, "clip-full")).eval().vision_model
    return llm, proj, vision


def make_prompt_references():
    """Logits and greedy answers for real templated prompts, tokenized by transformers 4.37
    (tokenizer-reference.json): the VoCo template through the masked pass, and llava_v1
    through the plain causal LLaVA path, for the image wide.png."""
    tok = json.load(open(os.path.join(FIX, "tokenizer-reference.json")))
    llm, proj, vision = load_llava_gqa()
    pix = pixels(processor(56), os.path.join(IMAGES, "wide.png"), pad=True)
    embeds = proj(select_features(vision, pix, -2, "patch"))
    out = {}

    def greedy(ids, step):
        seq, answer = ids, []
        for _ in range(8):
            nxt = step(seq)[0, -1].argmax()
            if nxt.item() == 2:
                break
            answer.append(nxt.item())
            seq = torch.cat([seq, nxt[None]])
        return torch.tensor(answer + [-1] * (8 - len(answer)))  # -1 pads after an EOS

    for name in ("voco_n2", "voco_n1"):
        ids = torch.tensor(tok["prompts"]["legacy"][name])
        out[f"{name}_ids"] = ids
        out[f"{name}_logits"] = masked_logits(llm, embeds, ids, 511)[0, -1]
        out[f"{name}_greedy"] = greedy(ids, lambda seq: masked_logits(llm, embeds, seq, 511))
    ids = torch.tensor(tok["prompts"]["legacy"]["llava_v1"])
    out["llava_v1_ids"] = ids
    out["llava_v1_logits"] = splice_logits(llm, embeds, ids)[0, -1]
    out["llava_v1_greedy"] = greedy(ids, lambda seq: splice_logits(llm, embeds, seq))
    save_file({k: v.detach().contiguous() for k, v in out.items()},
              os.path.join(FIX, "llava-gqa-bf16", "prompt-reference.safetensors"))


def make_train_reference():
    """One training batch through llava-gqa-bf16 as LLaVA trains: two examples of
    different lengths (left-padded into one batch, as vocollama pads), each an image
    between prompt tokens and a labelled answer; the mean cross-entropy over the
    answer tokens, and the gradients of the language model's and the projector's
    weights (the tower is frozen)."""
    llm, proj, vision = load_llava_gqa()
    llm.train()
    pix = torch.stack([pixels(processor(56), os.path.join(IMAGES, n), pad=True)[0] for n in ("wide.png", "tall.png")])
    with torch.no_grad():
        feats = select_features(vision, pix, -2, "patch")
    images = proj(feats)
    p = images.shape[1]
    emb = llm.model.embed_tokens
    rows, labels, out = [], [], {"pixel_values": pix}
    for i, (before, after, answer) in enumerate([(3, 9, 4), (5, 4, 6)]):
        ids = llm_ids(40 + i, before + after + answer, 512)
        ids = torch.cat([ids[:before], torch.tensor([IMAGE_TOKEN_INDEX]), ids[before:]])
        # One label per position of the expanded sequence: the answer's own tokens, -100 elsewhere.
        lab = torch.cat([torch.full((before + p + after,), -100), ids[before + 1 + after:]])
        out[f"ids_{i}"], out[f"labels_{i}"] = ids, lab
        rows.append(torch.cat([emb(ids[:before]), images[i], emb(ids[before + 1:])]))
        labels.append(lab)
    n = max(len(r) for r in rows)
    x = torch.stack([torch.cat([torch.zeros(n - len(r), r.shape[1]), r]) for r in rows])
    mask = torch.tensor([[0] * (n - len(r)) + [1] * len(r) for r in rows])
    positions = torch.tensor([[0] * (n - len(r)) + list(range(len(r))) for r in rows])
    lab = torch.stack([torch.cat([torch.full((n - len(l),), -100), l]) for l in labels])
    loss = llm(inputs_embeds=x, attention_mask=mask, position_ids=positions, labels=lab).loss
    loss.backward()
    out["loss"] = loss.detach().reshape(1)
    for name, w in [("lm_head.weight", llm.lm_head.weight), ("model.embed_tokens.weight", llm.model.embed_tokens.weight),
                    ("model.layers.0.self_attn.q_proj.weight", llm.model.layers[0].self_attn.q_proj.weight),
                    ("model.layers.0.self_attn.k_proj.weight", llm.model.layers[0].self_attn.k_proj.weight),
                    ("model.layers.1.mlp.down_proj.weight", llm.model.layers[1].mlp.down_proj.weight),
                    ("model.norm.weight", llm.model.norm.weight),
                    ("model.mm_projector.0.weight", proj[0].weight), ("model.mm_projector.2.bias", proj[2].bias)]:
        out[f"grad.{name}"] = w.grad
    save_file({k: v.detach().contiguous() for k, v in out.items()},
              os.path.join(FIX, "llava-gqa-bf16", "train-reference.safetensors"))


# ---------------------------------------------------------------- llava-hf layout

def make_llava_hf():
    d = fresh(os.path.join(FIX, "llava-hf"))
    image_token = 511
    cfg = LlavaConfig(vision_config=CLIPVisionConfig(**clip_vision_config()),
                      text_config=llama_config(num_key_value_heads=2).to_dict(),
                      image_token_index=image_token, projector_hidden_act="gelu",
                      vision_feature_layer=-2, vision_feature_select_strategy="default")
    cfg.text_config._attn_implementation = "eager"
    cfg.vision_config._attn_implementation = "eager"
    model = LlavaForConditionalGeneration(cfg).eval()
    randomize(model, 31)
    # The Hub's llava-hf checkpoints use the pre-4.52 names: write those.
    state = {}
    for k, v in model.state_dict().items():
        k2 = (k.replace("model.language_model.", "language_model.model.")
               .replace("model.vision_tower.", "vision_tower.")
               .replace("model.multi_modal_projector.", "multi_modal_projector."))
        if k2.startswith("vision_tower.") and not k2.startswith("vision_tower.vision_model."):
            k2 = "vision_tower.vision_model." + k2[len("vision_tower."):]
        if k2.startswith("lm_head."):
            k2 = "language_model." + k2
        state[k2] = v.contiguous()
    save_file(state, os.path.join(d, "model.safetensors"), metadata={"format": "pt"})
    cfg.save_pretrained(d)
    conf = json.load(open(os.path.join(d, "config.json")))
    write_processor(d, 56)

    proc = processor(56)
    pix = pixels(proc, os.path.join(IMAGES, "tall.png"), pad=False)
    vt = model.model.vision_tower
    feats = select_features(vt, pix, -2, "patch")
    embeds = model.model.multi_modal_projector(feats)
    npatch = feats.shape[1]
    ids = llm_ids(41, 10, 500)
    lm = model.lm_head
    text_model = model.model.language_model
    logits = lm(text_model(input_ids=ids[None]).last_hidden_state)
    hf_ids = torch.cat([ids[:2], torch.full((npatch,), image_token), ids[2:]])
    llava_logits = model(input_ids=hf_ids[None], pixel_values=pix).logits
    lids = torch.cat([ids[:2], torch.tensor([IMAGE_TOKEN_INDEX]), ids[2:]])
    reference(d, {"pixel_values": pix, "clip_features": feats, "image_embeds": embeds,
                  "llm_input_ids": ids, "llm_logits": logits,
                  "llava_input_ids": lids, "llava_logits": llava_logits},
              {"image": "images/tall.png", "vision_tower": None, "config_model_type": conf["model_type"]})


def make_llama_tied():
    d = fresh(os.path.join(FIX, "llama-tied"))
    cfg = llama_config(tie_word_embeddings=True, num_key_value_heads=1, num_hidden_layers=3,
                       rope_theta=1000.0)
    model = LlamaForCausalLM(cfg).eval()
    randomize(model, 51)
    model.save_pretrained(d, safe_serialization=True)
    ids = llm_ids(52, 16, cfg.vocab_size)
    reference(d, {"llm_input_ids": ids, "llm_logits": model(input_ids=ids[None]).logits}, {})


def make_projector_linear():
    lin = torch.nn.Linear(48, 64)
    randomize(lin, 61)
    x = torch.randn(1, 16, 48, generator=torch.Generator().manual_seed(62))
    save_file({"model.mm_projector.weight": lin.weight.detach().contiguous(),
               "model.mm_projector.bias": lin.bias.detach().contiguous(),
               "input": x, "output": lin(x).detach()},
              os.path.join(FIX, "projector-linear.safetensors"))


def make_preprocess_336():
    proc = processor(336)
    out = {}
    for name, pad in [("photo", False), ("photo_pad", True)]:
        out[name] = pixels(proc, os.path.join(IMAGES, "photo.png"), pad=pad)[0].to(torch.float16)
    for img in ["wide", "tall"]:
        out[f"{img}_pad_56"] = pixels(processor(56), os.path.join(IMAGES, f"{img}.png"), pad=True)[0]
        out[f"{img}_56"] = pixels(processor(56), os.path.join(IMAGES, f"{img}.png"), pad=False)[0]
    save_file(out, os.path.join(FIX, "preprocess.safetensors"))


def make_flop_counts():
    """PyTorch's FlopCounterMode on the cases where it and vocollama's analytic
    count must agree exactly: CLIP's vision stage (full attention) and one
    LLaMA token after K cached positions (one query row sees every key)."""
    from torch.utils.flop_counter import FlopCounterMode
    import inspect
    from transformers import CLIPVisionConfig, CLIPVisionModel, DynamicCache, LlamaForCausalLM
    cache_kw = "cache" if "cache" in inspect.signature(LlamaForCausalLM.forward).parameters else "past_key_values"

    def counted(fn):
        with FlopCounterMode(display=False) as fc:
            fn()
        return int(fc.get_total_flops())

    cases = []
    vision = dict(hidden_size=64, intermediate_size=256, num_hidden_layers=3, num_attention_heads=4,
                  image_size=64, patch_size=8)
    tower = CLIPVisionModel(CLIPVisionConfig(**clip_vision_config(**vision))).eval()
    body = getattr(tower, "vision_model", tower)
    body.encoder.layers = body.encoder.layers[:-1]  # layer -2, as LLaVA selects
    projector = torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.GELU(), torch.nn.Linear(128, 128))
    pix = torch.randn(1, 3, 64, 64)
    flops = counted(lambda: projector(tower(pixel_values=pix, output_hidden_states=True).hidden_states[-1][:, 1:]))
    cases.append({"kind": "vision", **vision, "layers_run": 2, "text_hidden": 128, "flops": flops})
    for kv_heads, cached in [(2, 0), (2, 40), (4, 100)]:
        llm_shape = dict(vocab_size=300, hidden_size=128, intermediate_size=352, num_hidden_layers=3,
                         num_attention_heads=4, num_key_value_heads=kv_heads)
        llm = LlamaForCausalLM(llama_config(**llm_shape)).eval()
        cache = DynamicCache()
        if cached:
            llm(input_ids=torch.randint(0, 300, (1, cached)), use_cache=True, **{cache_kw: cache})
        flops = counted(lambda: llm(input_ids=torch.tensor([[5]]), use_cache=True, logits_to_keep=1, **{cache_kw: cache}))
        cases.append({"kind": "llm_token", **llm_shape, "cached": cached, "flops": flops})
    write_json(os.path.join(FIX, "flop-counts.json"), cases)


def main():
    torch.manual_seed(0)
    os.makedirs(FIX, exist_ok=True)
    make_images()
    make_clip_gif()
    with torch.no_grad():
        clip_full = make_clip_full()
        clip_f16 = make_clip_vision_f16()
        d, llm, embeds = make_llava_original(
            "llava-gqa-bf16", clip_full, "clip-full",
            llama_config(num_key_value_heads=2),
            {"mm_vision_tower": "../clip-full", "mm_hidden_size": 48, "mm_projector_type": "mlp2x_gelu",
             "mm_vision_select_layer": -2, "mm_vision_select_feature": "patch",
             "image_aspect_ratio": "pad"},
            {"voco_num": 2, "torch_dtype": "bfloat16"}, torch.bfloat16, save_shards_safetensors, True, "wide.png", 21)
        make_voco_references(d, llm, embeds, 511, 71)
        make_llava_original(
            "llava-mha-f16-bin", clip_f16, "clip-vision-f16",
            llama_config(rope_theta=500000.0, num_hidden_layers=3),
            {"mm_vision_tower": "openai/clip-vit-large-patch14-336", "mm_hidden_size": 40,
             "mm_projector_type": "mlp3x_gelu", "mm_vision_select_layer": -2,
             "mm_vision_select_feature": "cls_patch", "image_aspect_ratio": "pad"},
            {"model_type": "llava"}, torch.float16, save_shards_bin, False, "tall.png", 25)
        make_llava_hf()
        make_llama_tied()
        make_projector_linear()
        make_preprocess_336()
        make_prompt_references()
        make_flop_counts()
        with torch.enable_grad():
            make_train_reference()
    print("fixtures written to", FIX)


if __name__ == "__main__":
    import sys
    if sys.argv[1:] == ["prompts"]:  # only the prompt references, from the files on disk
        with torch.no_grad():
            make_prompt_references()
    elif sys.argv[1:] == ["gif"]:
        make_clip_gif()
    elif sys.argv[1:] == ["train"]:
        make_train_reference()
    elif sys.argv[1:] == ["flops"]:
        with torch.no_grad():
            make_flop_counts()
    else:
        main()
