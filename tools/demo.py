#!/usr/bin/env python3
"""Make `assets/demo/` from a trained VoCo model: the model (without its
optimizer state), ten held-out pictures, and `questions.json` with several
questions about each picture — the data's own kinds and natural ones
("Where is the circle?", "How many shapes are there?", "Describe the
picture.") — with the truth, the model's greedy answer through
`vocollama ask`, right or wrong, and the model's accuracy on a held-out set
drawn with a seed it never saw (`vocollama eval`).

    python3 tools/demo.py --model WORK/voco-8 --seed 77

The pictures come from that held-out set; the truths from its captions,
which name every object with its size, colour, shape and quadrant.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile

ROOT = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
QUADRANTS = ["top left", "top right", "bottom left", "bottom right"]
COUNTS = ["zero", "one", "two", "three"]


def objects(caption):
    """'a big red circle top left and a small blue square bottom right' -> [(size, colour, shape, quadrant)]."""
    out = []
    for part in caption.replace(" and ", ", ").split(", "):
        words = part.split()
        assert words[0] == "a" and len(words) == 6, caption
        out.append((words[1], words[2], words[3], " ".join(words[4:])))
    return out


def questions(objs, named=True):
    """Questions about a picture with their true answers (`named`: restating the word
    the question names its object by, as `data shapes --answers named` writes them)."""
    qs = [("How many shapes are there?", COUNTS[len(objs)]), ("Describe the picture.", caption(objs))]
    say = (lambda word, a: f"{word} {a}") if named else (lambda word, a: a)
    for size, colour, shape, quadrant in objs:
        qs += [(f"Where is the {shape}?", say(shape, quadrant)), (f"What colour is the {shape}?", say(shape, colour)),
               (f"What shape is the {colour} object?", say(colour, shape)),
               (f"Is the {shape} big or small?", say(shape, size))]
    return qs


def caption(objs):
    parts = [f"a {s} {c} {sh} {q}" for s, c, sh, q in sorted(objs, key=lambda o: QUADRANTS.index(o[3]))]
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def normalize(s):
    s = "".join(c if c.isalnum() or c == " " else " " for c in s.lower())
    return " ".join(w for w in s.split() if w not in ("a", "an", "the"))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--vocollama", default=os.environ.get("VOCOLLAMA", "vocollama"))
    ap.add_argument("--model", required=True)
    ap.add_argument("--seed", default="77", help="seed of the held-out set (one the model never saw)")
    ap.add_argument("--test", default="1000")
    ap.add_argument("--pictures", type=int, default=10)
    ap.add_argument("--answers", choices=["named", "plain"], default="named", help="the answer form the model learned")
    ap.add_argument("--demo", default=os.path.join(ROOT, "assets", "demo"))
    a = ap.parse_args()
    work = tempfile.mkdtemp(prefix="vocollama-demo-")
    data = os.path.join(work, "data")
    v = lambda *args: subprocess.run([a.vocollama, *args], check=True, capture_output=True, text=True).stdout
    v("data", "shapes", "--out", data, "--train", "0", "--test", a.test, "--per-image", "1", "--answers", a.answers,
      "--seed", a.seed)
    report = os.path.join(work, "eval.json")
    v("eval", "--model", a.model, "--data", os.path.join(data, "test.json"), "--compression", "voco",
      "--max-new-tokens", "48", "--out", report)
    ev = json.load(open(report))
    records = json.load(open(os.path.join(data, "test.json")))

    # The first pictures of the held-out set that are described by a caption record (their truth).
    tmp = a.demo + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(os.path.join(tmp, "images"))
    shutil.copytree(a.model, os.path.join(tmp, "model"),
                    ignore=shutil.ignore_patterns("optimizer.bpk", "trainer_state.json", "checkpoint-*"))
    cfg = json.load(open(os.path.join(a.model, "config.json")))
    listed, right, total = [], 0, 0
    captions = [r for r in records if r["type"] == "caption"][: a.pictures]
    for i, r in enumerate(captions, 1):
        name = f"images/scene-{i:02}.png"
        shutil.copy(os.path.join(data, r["image"]), os.path.join(tmp, name))
        qs = questions(objects(r["conversations"][1]["value"]), a.answers == "named")
        out = v("ask", "--model", os.path.join(tmp, "model"), "--image", os.path.join(tmp, name), "--json",
                "--max-new-tokens", "48", *[q for q, _ in qs])
        answers = [json.loads(line)["answer"] for line in out.splitlines() if line.strip()]
        assert len(answers) == len(qs), out
        for (q, truth), answer in zip(qs, answers):
            ok = normalize(answer) == normalize(truth)
            right += ok
            total += 1
            listed.append({"image": name, "question": q, "answer": answer.strip(), "truth": truth, "correct": ok})
    meta = {
        "model": os.path.basename(os.path.normpath(a.model)),
        "voco_tokens": cfg.get("voco_num"),
        "held_out": {"command": f"vocollama data shapes --train 0 --test {a.test} --per-image 1 --answers {a.answers} "
                                f"--seed {a.seed}",
                     "questions": ev["total"], "accuracy": ev["accuracy"],
                     "by_type": {k: v["accuracy"] for k, v in ev["by_type"].items()}},
        "note": "every question below is asked through `vocollama ask`; `answer` is the model's greedy answer "
                "(right or wrong), `truth` the picture's; the demo test checks each answer",
        "listed_accuracy": right / total,
        "questions": listed,
    }
    with open(os.path.join(tmp, "questions.json"), "w") as f:
        json.dump(meta, f, indent=1)
    shutil.rmtree(a.demo, ignore_errors=True)
    os.rename(tmp, a.demo)
    shutil.rmtree(work, ignore_errors=True)
    print(f"wrote {a.demo}: held-out accuracy {100 * ev['accuracy']:.1f} % ({ev['total']} questions, seed {a.seed}); "
          f"{right}/{total} listed questions right")


if __name__ == "__main__":
    sys.exit(main())
