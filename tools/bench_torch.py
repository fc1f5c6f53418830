#!/usr/bin/env python3
"""The benchmark stages of `vocollama bench` in PyTorch + transformers, on the
same shapes with random weights: vision encode (CLIP tower through the
selected layer −2, then the mlp2x_gelu projector), stage 1 (compress into N
VoCo tokens, keeping only their keys/values), and one question of T tokens
answered as baseline (whole sequence), full caching (image KV cached) and
VoCo (N-token cache), each followed by greedy decoding. PyTorch eager mode
with transformers' default attention (SDPA), in --dtype (f32 unless told:
the dtype `vocollama bench` runs its random-weight shapes in).

Run by `vocollama bench --torch`, which passes the shapes; writes JSON (--out).
"""
import argparse
import copy
import inspect
import json
import statistics
import time

import torch
import transformers
from torch.utils.flop_counter import FlopCounterMode
from transformers import CLIPVisionConfig, CLIPVisionModel, DynamicCache, LlamaConfig, LlamaForCausalLM

BOS, SPACE, NEWLINE = 1, 29871, 13
# transformers 5.x renamed `past_key_values` to `cache` (argument and output).
CACHE = "cache" if "cache" in inspect.signature(LlamaForCausalLM.forward).parameters else "past_key_values"


def ints(s):
    return [int(x) for x in s.split(",")]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--vision", required=True, help="image,patch,hidden,ffn,layers,heads")
    ap.add_argument("--llm", required=True, help="hidden,ffn,layers,heads,kv_heads,vocab")
    ap.add_argument("--text", type=int, default=64)
    ap.add_argument("--decode", type=int, default=16)
    ap.add_argument("--voco", type=int, default=1)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--gemm", type=int, default=2048)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="f32", choices=["f32", "f16", "bf16"])
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    dev = torch.device(a.device)
    dtype = {"f32": torch.float32, "f16": torch.float16, "bf16": torch.bfloat16}[a.dtype]
    torch.manual_seed(0)

    image, patch, vh, vffn, vlayers, vheads = ints(a.vision)
    hidden, ffn, layers, heads, kv_heads, vocab = ints(a.llm)
    vcfg = CLIPVisionConfig(hidden_size=vh, intermediate_size=vffn, num_hidden_layers=vlayers,
                            num_attention_heads=vheads, image_size=image, patch_size=patch, hidden_act="quick_gelu")
    tower = CLIPVisionModel(vcfg)
    # LLaVA takes layer −2's output; the last layer never contributes, so it is not run (as vocollama does).
    body = getattr(tower, "vision_model", tower)  # transformers 5 flattened CLIPVisionModel
    body.encoder.layers = body.encoder.layers[:-1]
    projector = torch.nn.Sequential(torch.nn.Linear(vh, hidden), torch.nn.GELU(), torch.nn.Linear(hidden, hidden))
    lcfg = LlamaConfig(vocab_size=vocab, hidden_size=hidden, intermediate_size=ffn, num_hidden_layers=layers,
                       num_attention_heads=heads, num_key_value_heads=kv_heads, max_position_embeddings=4096,
                       rms_norm_eps=1e-5, rope_theta=10000.0, tie_word_embeddings=False)
    llm = LlamaForCausalLM(lcfg)
    tower, projector, llm = (m.to(dev, dtype).eval() for m in (tower, projector, llm))

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize()

    def timed(fn, reps=a.reps):
        fn()
        sync()
        ms = []
        for _ in range(reps):
            t = time.perf_counter()
            fn()
            sync()
            ms.append((time.perf_counter() - t) * 1e3)
        return statistics.median(ms)

    def counted(fn):
        with FlopCounterMode(display=False) as fc:
            fn()
        return float(fc.get_total_flops())

    pixels = torch.randn(1, 3, image, image, device=dev, dtype=dtype)
    embed = llm.get_input_embeddings()
    ids = lambda xs: torch.tensor([xs], device=dev)
    text = ids([300 + (i * 37) % 20000 for i in range(a.text)])
    voco_id = vocab - 1

    def encode():
        feats = tower(pixel_values=pixels, output_hidden_states=True).hidden_states[-1][:, 1:]
        return projector(feats)

    def sequence(img, tail):
        return torch.cat([embed(ids([BOS])), img, embed(ids([SPACE, NEWLINE])), tail], dim=1)

    out = {"torch": torch.__version__, "transformers": transformers.__version__, "device": a.device,
           "dtype": str(dtype).replace("torch.", ""), "threads": torch.get_num_threads()}
    with torch.inference_mode():
        out["vision_ms"] = timed(encode)
        img = encode()
        prefix = 1 + img.shape[1] + 2
        voco_tail = embed(ids([voco_id] * a.voco))

        def stage1():
            past = getattr(llm.model(inputs_embeds=sequence(img, voco_tail), use_cache=True), CACHE)
            cache = DynamicCache()
            for i, layer in enumerate(past.layers):
                cache.update(layer.keys[:, :, prefix:].clone(), layer.values[:, :, prefix:].clone(), i)
            return cache

        out["stage1_ms"] = timed(stage1)
        voco_cache = stage1()
        prefix_cache = getattr(llm(inputs_embeds=sequence(img, img[:, :0]), use_cache=True), CACHE)

        def question(c, cached, start):
            """Run the question on `c` in place (`cached` entries, next position `start`); logits on the host."""
            return llm(input_ids=text, **{CACHE: c}, position_ids=torch.arange(start, start + a.text, device=dev)[None],
                       cache_position=torch.arange(cached, cached + a.text, device=dev), use_cache=True,
                       logits_to_keep=1).logits.cpu()

        def ask(cache, cached, start):
            """The question after a copy of `cache`: the copy, grown by the question."""
            c = copy.deepcopy(cache)
            question(c, cached, start)
            return c

        def prefilled(cache, cached, start):
            """Median ms of the question's prefill (the cache copy is not timed)."""
            def run():
                c = copy.deepcopy(cache)
                sync()
                t = time.perf_counter()
                question(c, cached, start)
                sync()
                return (time.perf_counter() - t) * 1e3
            run()
            return statistics.median([run() for _ in range(a.reps)])

        def answered(cache, cached, start):
            """Question prefill, then decoding after it (as vocollama measures)."""
            return {"prefill_ms": prefilled(cache, cached, start),
                    "decode_ms": decode_tokens(llm, ask(cache, cached, start), cached + a.text, start + a.text, a, dev, sync)}

        def baseline():
            return llm(inputs_embeds=sequence(img, embed(text)), use_cache=True, logits_to_keep=1)

        whole = getattr(baseline(), CACHE)
        out["baseline"] = {"prefill_ms": timed(lambda: baseline().logits.cpu()),
                           "decode_ms": decode_tokens(llm, whole, prefix + a.text, prefix + a.text, a, dev, sync)}
        out["full_caching"] = answered(prefix_cache, prefix, prefix)
        out["voco"] = answered(voco_cache, a.voco, prefix + a.voco)

        def count_question(cache, cached, start):
            c = copy.deepcopy(cache)
            return counted(lambda: question(c, cached, start))

        out["counted_flops"] = {"vision": counted(encode), "baseline_prefill": counted(baseline),
                                "full_caching_prefill": count_question(prefix_cache, prefix, prefix),
                                "voco_prefill": count_question(voco_cache, a.voco, prefix + a.voco)}
        n = a.gemm
        x, y = torch.randn(n, n, device=dev, dtype=torch.float32), torch.randn(n, n, device=dev, dtype=torch.float32)
        out["gemm_gflops"] = 2 * n ** 3 / (timed(lambda: x @ y, max(a.reps, 3)) * 1e-3) / 1e9
    with open(a.out, "w") as f:
        json.dump(out, f, indent=1)


def decode_tokens(llm, cache, cached, start, a, dev, sync):
    """ms per greedily decoded token continuing `cache`, median over reps runs (one warm-up)."""
    per = []
    for _ in range(a.reps + 1):
        c = copy.deepcopy(cache)
        nxt = torch.tensor([[BOS]], device=dev)
        n, p = cached, start
        sync()
        t = time.perf_counter()
        for _ in range(a.decode):
            o = llm(input_ids=nxt, **{CACHE: c}, position_ids=torch.tensor([[p]], device=dev),
                    cache_position=torch.tensor([n], device=dev), use_cache=True, logits_to_keep=1)
            nxt = o.logits[:, -1].argmax(-1, keepdim=True)
            nxt.cpu()
            n, p = n + 1, p + 1
        sync()
        per.append((time.perf_counter() - t) * 1e3 / a.decode)
    return statistics.median(per[1:])


if __name__ == "__main__":
    main()
