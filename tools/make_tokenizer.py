#!/usr/bin/env python3
"""Train a tiny LLaMA-style SentencePiece tokenizer and write the text references.

The Rust tokenizer is checked against the tokenizers that LLaVA and VoCo-LLaMA
actually use: `sentencepiece` itself, transformers' slow `LlamaTokenizer`
(LLaVA loads `use_fast=False`), and the `tokenizer.json` that transformers'
converter writes. Run with the transformers version of those code bases:

    python3 -m venv /tmp/hf437 && /tmp/hf437/bin/pip install "transformers==4.37.2" sentencepiece protobuf
    /tmp/hf437/bin/python tools/make_tokenizer.py

Writes:
  assets/fixtures/tokenizer/         tokenizer.model (BPE, byte fallback, split digits, as LLaMA's)
                                     + added_tokens.json (<voco> = 511), tokenizer_config.json,
                                     special_tokens_map.json, tokenizer.json (converted)
  assets/fixtures/tokenizer-reference.json   ids and decodes of a test corpus, VoCo and llava_v1
                                     prompts through LLaVA's tokenizer_image_token
  assets/fixtures/llava-gqa-bf16/    the slow files (original LLaVA checkpoints ship tokenizer.model)
  assets/fixtures/llava-hf/          tokenizer.json with <image> = 511 (as llava-hf checkpoints)
"""
import json
import os
import random
import shutil
import tempfile

import sentencepiece as spm
from transformers import LlamaTokenizer, LlamaTokenizerFast

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "assets", "fixtures")
OUT = os.path.join(ROOT, "tokenizer")
VOCAB = 511  # <voco> (or <image> for llava-hf) is added as id 511: the fixtures' vocabulary is 512
IMAGE_TOKEN_INDEX = -200

VOCO_SYSTEM = ("A chat between a curious user and an artificial intelligence assistant of the image. "
               "The assistant gives helpful, detailed, and polite answers to the user's questions.")
LLAVA_SYSTEM = ("A chat between a curious human and an artificial intelligence assistant. "
                "The assistant gives helpful, detailed, and polite answers to the human's questions.")


def corpus_lines():
    rng = random.Random(5)
    colours = ["red", "green", "blue", "yellow", "purple", "orange", "black", "white"]
    shapes = ["circle", "square", "triangle", "star", "cross", "ring"]
    where = ["left", "right", "top", "bottom", "centre", "middle"]
    lines = [VOCO_SYSTEM, LLAVA_SYSTEM, "USER: ASSISTANT:", "Describe the image in detail."]
    for _ in range(3000):
        c, s, w = rng.choice(colours), rng.choice(shapes), rng.choice(where)
        n = rng.randint(0, 120)
        lines.append(rng.choice([
            f"USER: What colour is the {s}? ASSISTANT: The {s} is {c}.",
            f"How many {s}s are there? There are {n} {s}s in the picture.",
            f"Is the {c} {s} on the {w}? Yes, the {c} {s} is on the {w} of the image.",
            f"The {s} at ({n}, {n * 3}) measures {n / 7:.2f} cm; it costs ${n}.",
            f"Where is the {s}?\nIt is at the {w}.\tA café sits nearby, naïve élan.",
        ]))
    return lines


def train(dirpath):
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as f:
        f.write("\n".join(corpus_lines()))
        text = f.name
    # LLaMA's trainer settings, scaled down.
    spm.SentencePieceTrainer.train(
        input=text, model_prefix=os.path.join(dirpath, "tokenizer"), model_type="bpe",
        vocab_size=VOCAB, character_coverage=1.0, byte_fallback=True, split_digits=True,
        allow_whitespace_only_pieces=True, remove_extra_whitespaces=False,
        normalization_rule_name="identity", add_dummy_prefix=True, unk_id=0, bos_id=1, eos_id=2,
        pad_id=-1, num_threads=1, seed_sentencepiece_size=100000, shuffle_input_sentence=False,
        minloglevel=2)
    os.remove(text)
    os.remove(os.path.join(dirpath, "tokenizer.vocab"))
    # The model records its training input's path: a fixed name keeps the file reproducible.
    from transformers.convert_slow_tokenizer import import_protobuf
    path = os.path.join(dirpath, "tokenizer.model")
    proto = import_protobuf().ModelProto()
    proto.ParseFromString(open(path, "rb").read())
    proto.trainer_spec.input[:] = ["corpus.txt"]
    open(path, "wb").write(proto.SerializeToString())


def write_json(path, obj):
    with open(path, "w") as f:
        json.dump(obj, f, indent=2, ensure_ascii=False)
        f.write("\n")


def slow_files(dirpath, extra_token, legacy):
    """The files LLaVA's training script saves next to tokenizer.model, the extra token
    added as `tokenizer.add_tokens([token], special_tokens=True)` does."""
    write_json(os.path.join(dirpath, "added_tokens.json"), {extra_token: VOCAB})
    special = {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "pad_token": "<unk>"}
    write_json(os.path.join(dirpath, "special_tokens_map.json"), special)
    added = {str(i): {"content": c, "lstrip": False, "normalized": False, "rstrip": False,
                      "single_word": False, "special": True}
             for i, c in ((0, "<unk>"), (1, "<s>"), (2, "</s>"), (VOCAB, extra_token))}
    cfg = {"add_bos_token": True, "add_eos_token": False, "added_tokens_decoder": added,
           "clean_up_tokenization_spaces": False, "model_max_length": 512, "padding_side": "right",
           "tokenizer_class": "LlamaTokenizer", "sp_model_kwargs": {}, **special}
    if legacy is not None:
        cfg["legacy"] = legacy
    write_json(os.path.join(dirpath, "tokenizer_config.json"), cfg)


def save_fast(src, dst, extra_token):
    with tempfile.TemporaryDirectory() as d:
        shutil.copy(os.path.join(src, "tokenizer.model"), d)
        fast = LlamaTokenizerFast.from_pretrained(d, from_slow=True, legacy=True)
        fast.add_tokens([extra_token], special_tokens=True)
        assert fast.convert_tokens_to_ids(extra_token) == VOCAB
        fast.save_pretrained(d)
        shutil.copy(os.path.join(d, "tokenizer.json"), dst)


def load_slow(dirpath, legacy):
    tok = LlamaTokenizer.from_pretrained(dirpath, legacy=legacy)
    assert len(tok) == VOCAB + 1, len(tok)
    return tok


def tokenizer_image_token(prompt, tokenizer):
    """LLaVA's mm_utils.tokenizer_image_token, verbatim in behaviour."""
    chunks = [tokenizer(chunk).input_ids for chunk in prompt.split("<image>")]
    out, offset = [], 0
    if chunks and chunks[0] and chunks[0][0] == tokenizer.bos_token_id:
        offset = 1
        out.append(chunks[0][0])
    sep = [IMAGE_TOKEN_INDEX] * (offset + 1)
    for i, x in enumerate(chunks):
        if i:
            out.extend(sep[offset:])
        out.extend(x[offset:])
    return out


def two_style(system, turns):
    """conversation.py SeparatorStyle.TWO (vicuna_v1): sep " ", sep2 "</s>"."""
    ret = system + " "
    for q, a in turns:
        ret += "USER: " + q + " "
        ret += "ASSISTANT:" if a is None else "ASSISTANT: " + a + "</s>"
    return ret


def voco_prompt(turns, n):
    return "<image>\n" + "<voco>" * n + "\n" + two_style(VOCO_SYSTEM, turns).replace("\n", "")


def llava_prompt(turns):
    turns = [("<image>\n" + turns[0][0], turns[0][1])] + turns[1:]
    return two_style(LLAVA_SYSTEM, turns)


CORPUS = [
    "", " ", "  ", "hello", "Hello world", " leading space", "trailing space ", "double  space",
    "three   spaces and\ttab", "line\nbreak", "\n", "\n\nA", "ends with newline\n",
    "digits 0123456789 and 3.14159 and 1,000,000", "x=42;y=-7", "2024-11-28T17:00:00Z",
    "café naïve élan", "Ünïcödé çharacters: ß ø å", "日本語のテキスト", "emoji 😀🚀 and ❤️",
    "Ελληνικά и кириллица", "mixed 東京 Tokyo 123",
    "<voco>", "<voco><voco>", "a<voco>b", " <voco> ", "\n<voco><voco>\nA chat",
    "text</s>more", "</s>USER: hi", "<s>literal bos", "<unk> unknown",
    "▁already▁escaped", "What colour is the circle? ASSISTANT: The circle is red.",
    "\x00\x01 control \x7f bytes", "tab\tsep\tvalues", "UPPER lower MiXeD",
]


def encode_cases(tok):
    return [tok(t).input_ids for t in CORPUS]


def main():
    os.makedirs(ROOT, exist_ok=True)
    shutil.rmtree(OUT, ignore_errors=True)
    os.makedirs(OUT)
    train(OUT)
    sp = spm.SentencePieceProcessor(model_file=os.path.join(OUT, "tokenizer.model"))
    assert sp.get_piece_size() == VOCAB

    # transformers' converter writes the tokenizer.json of the same tokenizer (legacy, as LLaMA's).
    save_fast(OUT, OUT, "<voco>")
    slow_files(OUT, "<voco>", None)

    with tempfile.TemporaryDirectory() as d:
        shutil.copy(os.path.join(OUT, "tokenizer.model"), d)
        slow_files(d, "<voco>", False)
        nonlegacy = load_slow(d, False)
    legacy = load_slow(OUT, True)
    from transformers import PreTrainedTokenizerFast
    fast = PreTrainedTokenizerFast(tokenizer_file=os.path.join(OUT, "tokenizer.json"), bos_token="<s>",
                                   eos_token="</s>", unk_token="<unk>")
    voco = legacy.convert_tokens_to_ids("<voco>")
    assert voco == VOCAB and fast.convert_tokens_to_ids("<voco>") == VOCAB

    rng = random.Random(9)
    decode_ids = [[rng.randrange(3, VOCAB) for _ in range(rng.randint(1, 24))] for _ in range(40)]
    # Byte-fallback pieces that form multi-byte characters, and broken sequences.
    byte = lambda b: sp.piece_to_id(f"<0x{b:02X}>")
    decode_ids += [[byte(b) for b in "é😀".encode()], [byte(0xE6), byte(0x97)], [byte(0xFF), byte(0x41)]]

    turns1 = [("What colour is the\ncircle?", None)]
    turns2 = [("What colour is the\ncircle?", "It is red."), ("And the square?", None)]
    prompts = {}
    for name, tok in (("legacy", legacy), ("nonlegacy", nonlegacy), ("fast", fast)):
        prompts[name] = {
            "voco_n2": tokenizer_image_token(voco_prompt(turns1, 2), tok),
            "voco_n2_turn2": tokenizer_image_token(voco_prompt(turns2, 2), tok),
            "voco_n1": tokenizer_image_token(voco_prompt(turns1, 1), tok),
            "llava_v1": tokenizer_image_token(llava_prompt(turns1), tok),
            "llava_v1_turn2": tokenizer_image_token(llava_prompt(turns2), tok),
        }
    ref = {
        "corpus": CORPUS,
        "sentencepiece": [sp.encode(t) for t in CORPUS],
        "legacy": encode_cases(legacy),
        "nonlegacy": encode_cases(nonlegacy),
        "fast": encode_cases(fast),
        "decode_ids": decode_ids,
        "sentencepiece_decode": [sp.decode(ids) for ids in decode_ids],
        "fast_decode": [fast.decode(ids, skip_special_tokens=True) for ids in decode_ids],
        "turns": {"turn1": turns1, "turn2": turns2},
        "prompt_text": {"voco_n2": voco_prompt(turns1, 2), "voco_n2_turn2": voco_prompt(turns2, 2),
                        "llava_v1": llava_prompt(turns1), "llava_v1_turn2": llava_prompt(turns2)},
        "prompts": prompts,
    }
    # The converted tokenizer.json agrees with the slow tokenizer away from added tokens
    # (around them the two differ in transformers itself; each has its own reference).
    for c, a, b in zip(CORPUS, ref["fast"], ref["legacy"]):
        assert a == b or "<" in c, (c, a, b)
    write_json(os.path.join(ROOT, "tokenizer-reference.json"), ref)

    gqa = os.path.join(ROOT, "llava-gqa-bf16")
    if os.path.isdir(gqa):
        shutil.copy(os.path.join(OUT, "tokenizer.model"), gqa)
        slow_files(gqa, "<voco>", None)
    hf = os.path.join(ROOT, "llava-hf")
    if os.path.isdir(hf):
        save_fast(OUT, hf, "<image>")
    print("tokenizer fixtures written to", OUT)


if __name__ == "__main__":
    main()
