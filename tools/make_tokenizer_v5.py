#!/usr/bin/env python3
"""Write the fixture tokenizer as transformers 5 saves it, with its reference ids.

A VoCo-LLaMA directory saved by transformers 5.x holds tokenizer.json (with
`<voco>`) and a tokenizer_config.json naming the tokenizers backend, and no
added_tokens.json; the tokenizer.model of the original checkpoint often stays
beside them. vocollama must load it as transformers 5's AutoTokenizer does.
Run with transformers 5 (after tools/make_tokenizer.py, whose files it reads):

    python3 -m venv /tmp/hf5 && /tmp/hf5/bin/pip install "transformers>=5,<6" sentencepiece protobuf
    /tmp/hf5/bin/python tools/make_tokenizer_v5.py

Writes:
  assets/fixtures/tokenizer-v5/        save_pretrained of llava-gqa-bf16's tokenizer by transformers 5,
                                       plus the original tokenizer.model (no added_tokens.json)
  assets/fixtures/tokenizer-v5/reference.json   AutoTokenizer ids of the corpus of
                                       tools/make_tokenizer.py, with the transformers version
"""
import json
import os
import shutil
import sys
import tempfile

import transformers
from transformers import AutoTokenizer

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_tokenizer import CORPUS, ROOT, voco_prompt  # noqa: E402

# The tokenizer of the VoCo fixture model (its `<voco>` is a special token), as a VoCo-LLaMA
# training run saves it with transformers 4.37.
SRC = os.path.join(ROOT, "llava-gqa-bf16")
FILES = ["tokenizer.model", "added_tokens.json", "special_tokens_map.json", "tokenizer_config.json"]
OUT = os.path.join(ROOT, "tokenizer-v5")


def main():
    assert int(transformers.__version__.split(".")[0]) >= 5, "run with transformers 5"
    shutil.rmtree(OUT, ignore_errors=True)
    with tempfile.TemporaryDirectory() as d:
        for f in FILES:
            shutil.copy(os.path.join(SRC, f), d)
        AutoTokenizer.from_pretrained(d).save_pretrained(OUT)
    assert not os.path.exists(os.path.join(OUT, "added_tokens.json"))
    shutil.copy(os.path.join(SRC, "tokenizer.model"), OUT)
    tok = AutoTokenizer.from_pretrained(OUT)
    prompts = [voco_prompt([("What colour is the <voco> circle?", None)], 2),
               voco_prompt([("Where is it?", "At the top.</s>"), ("And </s>USER: now?", None)], 1)]
    ref = {
        "transformers": transformers.__version__,
        "class": type(tok).__name__,
        "voco": tok.convert_tokens_to_ids("<voco>"),
        "corpus": CORPUS,
        "ids": [tok(t).input_ids for t in CORPUS],
        "prompts": prompts,
        "prompt_ids": [tok(p).input_ids for p in prompts],
    }
    with open(os.path.join(OUT, "reference.json"), "w") as f:
        json.dump(ref, f, ensure_ascii=False, indent=1)
    print(f"{OUT}: {sorted(os.listdir(OUT))}, <voco> = {ref['voco']}, transformers {ref['transformers']}")


if __name__ == "__main__":
    main()
