#!/usr/bin/env python3
"""llama.cpp beside vocollama: the LLaMA part of a model directory (the same
weights vocollama measures) written as GGUF at F32, F16, Q8_0 and Q4_0, and
timed through llama.cpp on every core. Run by `vocollama bench --model DIR
--llamacpp`, with the Python that `tools/setup_llamacpp.sh` sets up from the
package registries (llama-cpp-python 0.3.36 built from source for this CPU,
gguf 0.19.0):

    python tools/bench_llamacpp.py --model DIR --dtypes f32,f16,q8,q4 --work WORKDIR \\
        --short 64 --long 643 --decode 16 --reps 3 --out report.json

The GGUF holds the model's LLaMA weights as they are (q_proj and k_proj
permuted to llama.cpp's rotary layout, as its converter does). As vocollama
quantizes, q8/q4 quantize the linear layers of the decoder blocks (GGML's
Q8_0 / Q4_0: blocks of 32 along the input, one f16 scale each) and keep the
embedding and the output head in f16. The prompt ids are arbitrary (the cost
does not depend on them). Reported per dtype: the prefill of `--short` and of
`--long` tokens (a question; a prompt the size of an image's), and greedy
decoding after the short prefill, in ms (medians of `--reps` after a warm-up).
"""
import argparse
import json
import os
import struct
import sys
import time

import numpy as np

DTYPES = {"f32": "F32", "f16": "F16", "q8": "Q8_0", "q4": "Q4_0"}


def read_safetensors(paths):
    """name -> (dtype, shape, memmap slice) over the model's safetensors files."""
    out = {}
    kinds = {"F16": np.float16, "F32": np.float32, "BF16": np.uint16}
    for path in paths:
        with open(path, "rb") as f:
            (n,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(n))
        raw = np.memmap(path, dtype=np.uint8, mode="r")
        base = 8 + n
        for name, h in header.items():
            if name == "__metadata__":
                continue
            a, b = h["data_offsets"]
            out[name] = (h["dtype"], h["shape"], raw[base + a:base + b], kinds[h["dtype"]])
    return out


def as_f32(entry):
    dtype, shape, raw, kind = entry
    a = raw.view(kind)
    if dtype == "BF16":
        a = (a.astype(np.uint32) << 16).view(np.float32)
    return a.astype(np.float32).reshape(shape)


def permute(w, heads):
    """HF's rotate-half q/k rows into llama.cpp's interleaved pairs (its converter's permute)."""
    return w.reshape(heads, 2, w.shape[0] // heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def write_gguf(model, path, dtype):
    import gguf

    config = json.load(open(os.path.join(model, "config.json")))
    index = os.path.join(model, "model.safetensors.index.json")
    if os.path.exists(index):
        files = sorted(set(json.load(open(index))["weight_map"].values()))
    else:
        files = ["model.safetensors"]
    t = read_safetensors([os.path.join(model, f) for f in files])
    d, layers = config["hidden_size"], config["num_hidden_layers"]
    heads = config["num_attention_heads"]
    kv_heads = config.get("num_key_value_heads", heads)
    vocab = config["vocab_size"]
    w = gguf.GGUFWriter(path + ".tmp", "llama")
    w.add_context_length(config.get("max_position_embeddings", 4096))
    w.add_embedding_length(d)
    w.add_block_count(layers)
    w.add_feed_forward_length(config["intermediate_size"])
    w.add_rope_dimension_count(d // heads)
    w.add_head_count(heads)
    w.add_head_count_kv(kv_heads)
    w.add_layer_norm_rms_eps(config.get("rms_norm_eps", 1e-5))
    w.add_rope_freq_base(config.get("rope_theta", 10000.0))
    w.add_file_type({"F32": 0, "F16": 1, "Q8_0": 7, "Q4_0": 2}[dtype])
    # A vocabulary of the model's size (the ids are what is timed, not the text).
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)]
    tokens += [f"t{i}" for i in range(vocab - len(tokens))]
    types = [2, 3, 3] + [6] * 256 + [1] * (vocab - 259)
    w.add_tokenizer_model("llama")
    w.add_token_list(tokens)
    w.add_token_scores([0.0] * vocab)
    w.add_token_types(types)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    q = {"Q8_0": gguf.GGMLQuantizationType.Q8_0, "Q4_0": gguf.GGMLQuantizationType.Q4_0}.get(dtype)
    float_type = np.float32 if dtype == "F32" else np.float16

    def add(name, a, linear):
        if linear and q is not None:
            w.add_tensor(name, gguf.quants.quantize(a, q), raw_dtype=q)
        elif a.ndim == 1:
            w.add_tensor(name, a.astype(np.float32))
        else:
            w.add_tensor(name, a.astype(float_type))

    add("token_embd.weight", as_f32(t["model.embed_tokens.weight"]), False)
    for i in range(layers):
        p = f"model.layers.{i}."
        add(f"blk.{i}.attn_norm.weight", as_f32(t[p + "input_layernorm.weight"]), False)
        add(f"blk.{i}.attn_q.weight", permute(as_f32(t[p + "self_attn.q_proj.weight"]), heads), True)
        add(f"blk.{i}.attn_k.weight", permute(as_f32(t[p + "self_attn.k_proj.weight"]), kv_heads), True)
        add(f"blk.{i}.attn_v.weight", as_f32(t[p + "self_attn.v_proj.weight"]), True)
        add(f"blk.{i}.attn_output.weight", as_f32(t[p + "self_attn.o_proj.weight"]), True)
        add(f"blk.{i}.ffn_norm.weight", as_f32(t[p + "post_attention_layernorm.weight"]), False)
        add(f"blk.{i}.ffn_gate.weight", as_f32(t[p + "mlp.gate_proj.weight"]), True)
        add(f"blk.{i}.ffn_up.weight", as_f32(t[p + "mlp.up_proj.weight"]), True)
        add(f"blk.{i}.ffn_down.weight", as_f32(t[p + "mlp.down_proj.weight"]), True)
    add("output_norm.weight", as_f32(t["model.norm.weight"]), False)
    add("output.weight", as_f32(t["lm_head.weight"]), False)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    os.replace(path + ".tmp", path)


def ids(n, vocab):
    return [300 + (i * 37) % min(20000, vocab - 300) for i in range(n)]


def median(v):
    v = sorted(v)
    return v[len(v) // 2]


def bench(path, a, vocab):
    import llama_cpp

    threads = os.cpu_count()
    t0 = time.perf_counter()
    llm = llama_cpp.Llama(
        model_path=path, n_ctx=a.long + a.decode + 16, n_batch=a.long + 16, n_ubatch=512,
        n_threads=threads, n_threads_batch=threads, logits_all=False, verbose=False)
    load_s = time.perf_counter() - t0

    def prefill(n):
        llm.reset()
        t = time.perf_counter()
        llm.eval(ids(n, vocab))
        return (time.perf_counter() - t) * 1e3

    def decode():
        llm.reset()
        llm.eval(ids(a.short, vocab))
        t = time.perf_counter()
        for i in range(a.decode):
            llm.eval([int(np.argmax(llm.scores[llm.n_tokens - 1]))])
        return (time.perf_counter() - t) * 1e3 / a.decode

    row = {"load_s": load_s, "threads": threads}
    for key, f in (("prefill_short_ms", lambda: prefill(a.short)), ("prefill_long_ms", lambda: prefill(a.long)),
                   ("decode_ms", decode)):
        f()  # warm-up
        row[key] = median([f() for _ in range(a.reps)])
    del llm
    return row


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--dtypes", default="f32,f16,q8,q4")
    ap.add_argument("--work", required=True, help="where the GGUF files are written (kept for the next run)")
    ap.add_argument("--short", type=int, default=64)
    ap.add_argument("--long", type=int, default=643)
    ap.add_argument("--decode", type=int, default=16)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    try:
        import llama_cpp
    except ImportError:
        sys.exit("error: llama_cpp is not installed in this Python: run tools/setup_llamacpp.sh")
    config = json.load(open(os.path.join(a.model, "config.json")))
    os.makedirs(a.work, exist_ok=True)
    stamp = max(os.path.getmtime(os.path.join(a.model, f)) for f in os.listdir(a.model))
    rows = []
    for key in a.dtypes.split(","):
        dtype = DTYPES[key]
        path = os.path.join(a.work, f"{os.path.basename(os.path.normpath(a.model))}-{dtype}.gguf")
        if not os.path.exists(path) or os.path.getmtime(path) < stamp:
            print(f"llama.cpp: writing {path}", flush=True)
            write_gguf(a.model, path, dtype)
        print(f"llama.cpp: {dtype}", flush=True)
        row = bench(path, a, config["vocab_size"])
        size = os.path.getsize(path)
        embedding = config["vocab_size"] * config["hidden_size"] * (4 if dtype == "F32" else 2)
        row.update(dtype=key, gguf_type=dtype, file_bytes=size, weight_bytes=size - embedding)
        rows.append(row)
    info = llama_cpp.llama_print_system_info().decode(errors="replace").strip()
    report = {"llama_cpp_python": llama_cpp.__version__, "system_info": info, "short": a.short, "long": a.long,
              "decode": a.decode, "rows": rows}
    with open(a.out, "w") as f:
        json.dump(report, f, indent=2)


if __name__ == "__main__":
    main()
