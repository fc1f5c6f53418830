#!/usr/bin/env python3
"""Can a small LLaMA trained from scratch find the object a question names?

An independent check of the miniatures' limit in PyTorch/transformers (no
vocollama code in the model or the training): a from-scratch
`LlamaForCausalLM` of a model directory's shape, with an mlp2x_gelu
projector, learns colour questions ("What colour is the circle?") about the
synthetic scenes, from two kinds of patch features:

  tower   the model's (pretrained) tiny CLIP tower, LLaVA's selected layer;
  onehot  exact features: each patch holds the colour, shape and size of the
          object in its quadrant as one-hot codes (zeros when empty);

and with two answer forms after "ASSISTANT:":

  attribute  "red"         the colour alone;
  named      "circle red"  the word that names the object, then the colour.

The colour task is also written as LLaVA records with named answers
(`WORK/data/named-{train,test}.json`), for `vocollama train` and `vocollama
eval` to learn the same task. Held-out accuracy is reported over all
questions and by the number of objects in the picture; "present" is how often the answer is the colour of some object
in the picture. Answering the right colour when there are several objects
needs the lookup the question asks for.

    python3 tools/binding.py --model WORK/seed-1/tower --work /var/tmp/binding

Needs torch and transformers (the reference venv) and the vocollama binary
(for the data: `vocollama data shapes --kinds caption,colour --per-image 2`,
whose captions give each picture's exact objects).
"""
import argparse
import json
import os
import subprocess
import time

import numpy as np
import torch
from PIL import Image
from safetensors.torch import load_file
from tokenizers import Tokenizer
from transformers import CLIPImageProcessor, CLIPVisionModel, LlamaConfig, LlamaForCausalLM

import demo

COLOURS = ["red", "green", "blue", "yellow"]
SHAPES = ["circle", "square", "triangle"]


def objects(caption):
    """A caption's objects (parsed as the demo reads them) by quadrant index: {quadrant: (colour, shape, big)}."""
    return {demo.QUADRANTS.index(q): (COLOURS.index(c), SHAPES.index(sh), size == "big")
            for size, c, sh, q in demo.objects(caption)}


def pictures(path):
    """Per picture: its objects (from the caption turn) and its colour question and answer."""
    by_image = {}
    for r in json.load(open(path)):
        turns = r["conversations"]
        for q, a in zip(turns[::2], turns[1::2]):
            q = q["value"].replace("<image>\n", "")
            entry = by_image.setdefault(r["image"], {})
            if a["value"].startswith("a "):
                entry["objects"] = objects(a["value"])
            else:
                entry["question"], entry["answer"] = q, a["value"]
    return [(image, e["objects"], e["question"], e["answer"]) for image, e in by_image.items()]


def onehot(objs, side):
    f = torch.zeros(side * side, 9)
    for p in range(side * side):
        q = (p // side) // (side // 2) * 2 + (p % side) // (side // 2)
        if q in objs:
            c, s, big = objs[q]
            f[p, c], f[p, 4 + s], f[p, 7 + int(big)] = 1, 1, 1
    return f


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True, help="a model directory: its LLaMA shape, tokenizer and vision_tower/")
    ap.add_argument("--work", default="/var/tmp/vocollama-binding")
    ap.add_argument("--vocollama", default=os.environ.get("VOCOLLAMA", "vocollama"))
    ap.add_argument("--train", type=int, default=16000, help="questions (half captions, half colour questions)")
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--prompt", choices=["short", "voco"], default="short",
                    help="short: `<s>USER: <image>\\n{q} ASSISTANT:`; voco: the miniatures' own prompt, VoCo-LLaMA's "
                         "template with its system prompt and one <voco> token between the image and the question")
    ap.add_argument("--only", help="one row, e.g. tower/named")
    ap.add_argument("--init-from", help="start the language model and the projector from this vocollama model "
                                        "directory's weights (e.g. a `vocollama init` model) instead of transformers' init")
    ap.add_argument("--out", help="write the results as JSON here")
    a = ap.parse_args()
    torch.manual_seed(a.seed)
    np.random.seed(a.seed)
    data = os.path.join(a.work, "data")
    if not os.path.exists(os.path.join(data, "test.json")):
        subprocess.run([a.vocollama, "data", "shapes", "--out", data, "--train", str(a.train), "--test", "1200",
                        "--kinds", "caption,colour", "--per-image", "2", "--seed", str(a.seed)], check=True)
    cfg = json.load(open(os.path.join(a.model, "config.json")))
    tok = Tokenizer.from_file(os.path.join(a.model, "tokenizer.json"))
    ids = lambda s: tok.encode(s, add_special_tokens=False).ids
    vt = os.path.join(a.model, "vision_tower")
    tower, proc = CLIPVisionModel.from_pretrained(vt).eval(), CLIPImageProcessor.from_pretrained(vt)
    side = tower.config.image_size // tower.config.patch_size
    if a.prompt == "voco":
        # voco_vicuna_v1 as the miniatures train on it: `<s><image>\n<voco>\n{system} USER: {q} ASSISTANT: {a}</s>`.
        system = ("A chat between a curious user and an artificial intelligence assistant of the image. "
                  "The assistant gives helpful, detailed, and polite answers to the user's questions.")
        before, between = [], f"\n<voco>\n{system} USER: "
    else:
        before, between = ids("USER:"), "\n"

    def load(split):
        pics = pictures(os.path.join(data, f"{split}.json"))
        feats = {"onehot": torch.stack([onehot(o, side) for _, o, _, _ in pics])}
        px = torch.cat([proc(images=Image.open(os.path.join(data, i)).convert("RGB"), return_tensors="pt")["pixel_values"]
                        for i, _, _, _ in pics])
        with torch.no_grad():
            # LLaVA's selected layer, patches only (the tower directory keeps only the layers up to it).
            layer = cfg.get("mm_vision_select_layer", -2)
            feats["tower"] = torch.cat([tower(px[k:k + 256], output_hidden_states=True).hidden_states[layer][:, 1:]
                                        for k in range(0, len(px), 256)])
        questions = [ids(f"{between}{q} ASSISTANT:") for _, _, q, _ in pics]
        # Colour questions name the object by its shape, the question's last word.
        named = [q.rstrip("?").split()[-1] for _, _, q, _ in pics]
        answers = {"named": [ids(f"{n} {ans}") for n, (_, _, _, ans) in zip(named, pics)],
                   "attribute": [ids(ans) for _, _, _, ans in pics]}
        # The same task as LLaVA records with named answers, for `vocollama train` / `vocollama eval`.
        records = [{"id": f"{split}-{k:06}", "image": image, "type": "colour",
                    "conversations": [{"from": "human", "value": f"<image>\n{q}"},
                                      {"from": "gpt", "value": f"{n} {ans}"}]}
                   for k, (n, (image, _, q, ans)) in enumerate(zip(named, pics))]
        with open(os.path.join(data, f"named-{split}.json"), "w") as f:
            json.dump(records, f, indent=1)
        present = [[COLOURS[c] for c, _, _ in o.values()] for _, o, _, _ in pics]
        return feats, questions, answers, present, [len(o) for _, o, _, _ in pics]

    train, test = load("train"), load("test")
    prefix = [cfg.get("bos_token_id", 1)] + before
    eos = cfg.get("eos_token_id", 2)
    # The original LLaVA layout names the LLaMA's tensors as transformers does.
    start_from = load_file(os.path.join(a.init_from, "model.safetensors")) if a.init_from else None
    results = []
    for features in ["tower", "onehot"]:
        for form in ["attribute", "named"]:
            if a.only and a.only != f"{features}/{form}":
                continue
            torch.manual_seed(a.seed)
            h = cfg["hidden_size"]
            llm = LlamaForCausalLM(LlamaConfig(
                vocab_size=cfg["vocab_size"], hidden_size=h, intermediate_size=cfg["intermediate_size"],
                num_hidden_layers=cfg["num_hidden_layers"], num_attention_heads=cfg["num_attention_heads"],
                num_key_value_heads=cfg["num_key_value_heads"], max_position_embeddings=cfg["max_position_embeddings"],
                rope_theta=cfg.get("rope_theta", 10000.0), rms_norm_eps=cfg["rms_norm_eps"]))
            d = train[0][features].shape[-1]
            proj = torch.nn.Sequential(torch.nn.Linear(d, h), torch.nn.GELU(), torch.nn.Linear(h, h))
            if start_from:
                llm.load_state_dict({k: v.float() for k, v in start_from.items()
                                     if not k.startswith("model.mm_projector")})
                for i in (0, 2):
                    proj[i].weight.data = start_from[f"model.mm_projector.{i}.weight"].float()
                    proj[i].bias.data = start_from[f"model.mm_projector.{i}.bias"].float()
            params = list(llm.parameters()) + list(proj.parameters())
            opt = torch.optim.AdamW(params, lr=a.lr, weight_decay=0.0)
            sched = torch.optim.lr_scheduler.LambdaLR(
                opt, lambda s: min(1.0, (s + 1) / 50) * 0.5 * (1 + np.cos(np.pi * s / a.steps)))

            def batch(split, idx):
                feats, questions, answers = split[0][features], split[1], split[2][form]
                embs, labels = [], []
                for i in idx:
                    text = questions[i] + answers[i] + [eos]
                    embs.append(torch.cat([llm.model.embed_tokens(torch.tensor(prefix)), proj(feats[i]),
                                           llm.model.embed_tokens(torch.tensor(text))]))
                    labels.append([-100] * (len(prefix) + feats[i].shape[0] + len(questions[i])) + answers[i] + [eos])
                n = max(len(e) for e in embs)
                emb = torch.stack([torch.cat([e, torch.zeros(n - len(e), h)]) for e in embs])
                lab = torch.tensor([l + [-100] * (n - len(l)) for l in labels])
                mask = torch.tensor([[1] * len(e) + [0] * (n - len(e)) for e in embs])
                return emb, lab, mask

            start = time.time()
            for step in range(a.steps):
                emb, lab, mask = batch(train, np.random.randint(0, len(train[1]), a.batch_size))
                loss = llm(inputs_embeds=emb, attention_mask=mask, labels=lab).loss
                opt.zero_grad()
                loss.backward()
                torch.nn.utils.clip_grad_norm_(params, 1.0)
                opt.step()
                sched.step()
            # Exact match of every answer token (what greedy decoding would produce).
            right, colour_present, by_count = 0, 0, {}
            with torch.no_grad():
                for k in range(0, len(test[1]), 64):
                    idx = list(range(k, min(k + 64, len(test[1]))))
                    emb, lab, mask = batch(test, idx)
                    guess = llm(inputs_embeds=emb, attention_mask=mask).logits.argmax(-1)
                    for row, i in enumerate(idx):
                        at = (lab[row, 1:] != -100).nonzero().flatten()
                        said = guess[row, at].tolist()
                        ok = said == lab[row, 1:][at].tolist()
                        colour = tok.decode(said[:-1]).split()[-1:] or [""]
                        right += ok
                        colour_present += colour[0] in test[3][i]
                        n = test[4][i]
                        by_count.setdefault(n, [0, 0])
                        by_count[n][0] += ok
                        by_count[n][1] += 1
            total = len(test[1])
            row = {"features": features, "answer": form, "accuracy": right / total, "present": colour_present / total,
                   "by_objects": {n: c / t for n, (c, t) in sorted(by_count.items())}, "seconds": time.time() - start,
                   "prompt": a.prompt, "init_from": a.init_from}
            results.append(row)
            print(json.dumps(row), flush=True)
    print("\n| patch features | answer | held-out accuracy | 1 / 2 / 3 objects | colour of some object present |")
    print("| --- | --- | ---: | --- | ---: |")
    for r in results:
        counts = " / ".join(f"{100 * v:.0f}" for v in r["by_objects"].values())
        print(f"| {r['features']} | {r['answer']} | {100 * r['accuracy']:.1f} % | {counts} % | {100 * r['present']:.1f} % |")
    if a.out:
        with open(a.out, "w") as f:
            json.dump({"steps": a.steps, "batch_size": a.batch_size, "lr": a.lr, "seed": a.seed, "model": a.model,
                       "results": results}, f, indent=1)


if __name__ == "__main__":
    main()
