"""A load generator for `vocollama serve`: N concurrent clients over HTTP,
each asking streamed questions about images until a request count or a time
limit is reached; reports throughput, latency percentiles, errors and the
VoCo store's hit rate. Python's standard library only.

    python3 tools/load_serve.py --url http://127.0.0.1:8080 --clients 8 --requests 64 \
        --images assets/demo/images --max-tokens 32 [--duration 120] [--api-key KEY] [--json OUT.json]

`tokens_per_second` is generated tokens over the run's wall time (stage 1 and
prefills included); `decode_tokens_per_second` is the server's decode steps
alone (tokens fed over the steps' time, from /metrics): the rate batching
multiplies. Each request picks an image (round robin over --images, a directory or files)
and a question; `--same-image` sends the first image only (every request after
the first is a store hit). A single client (--clients 1) measures one stream.
"""

import argparse
import base64
import http.client
import json
import pathlib
import re
import statistics
import threading
import time
import urllib.parse

QUESTIONS = [
    "What colour is the circle?",
    "How many shapes are there?",
    "Describe the picture.",
    "Where is the square?",
    "What shape is the biggest one?",
]


def percentile(values, q):
    if not values:
        return float("nan")
    values = sorted(values)
    k = (len(values) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(values) - 1)
    return values[lo] + (values[hi] - values[lo]) * (k - lo)


class Load:
    def __init__(self, args):
        self.args = args
        u = urllib.parse.urlparse(args.url)
        self.host, self.port = u.hostname, u.port or 80
        paths = []
        for p in args.images:
            p = pathlib.Path(p)
            paths += sorted(q for q in p.iterdir() if q.suffix.lower() in (".png", ".jpg", ".jpeg")) if p.is_dir() else [p]
        if not paths:
            raise SystemExit("load_serve: --images: no PNG or JPEG files")
        if args.same_image:
            paths = paths[:1]
        self.images = []
        for p in paths:
            mime = "image/png" if p.suffix.lower() == ".png" else "image/jpeg"
            self.images.append(f"data:{mime};base64," + base64.b64encode(p.read_bytes()).decode())
        self.lock = threading.Lock()
        self.next = 0
        self.results = []
        self.deadline = time.monotonic() + args.duration

    def headers(self):
        h = {"Content-Type": "application/json"}
        if self.args.api_key:
            h["Authorization"] = f"Bearer {self.args.api_key}"
        return h

    def take(self):
        with self.lock:
            if self.next >= self.args.requests or time.monotonic() > self.deadline:
                return None
            self.next += 1
            return self.next - 1

    def one(self, i):
        body = {
            "messages": [{"role": "user", "content": [
                {"type": "text", "text": QUESTIONS[i % len(QUESTIONS)]},
                {"type": "image_url", "image_url": {"url": self.images[i % len(self.images)]}},
            ]}],
            "max_tokens": self.args.max_tokens,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        start = time.monotonic()
        first = None
        usage = None
        conn = http.client.HTTPConnection(self.host, self.port, timeout=600)
        try:
            conn.request("POST", "/v1/chat/completions", json.dumps(body), self.headers())
            r = conn.getresponse()
            if r.status != 200:
                return {"ok": False, "error": f"{r.status} {r.read()[:200]!r}", "latency": time.monotonic() - start}
            for line in r:
                line = line.strip()
                if not line.startswith(b"data: ") or line == b"data: [DONE]":
                    continue
                chunk = json.loads(line[6:])
                if "error" in chunk:
                    return {"ok": False, "error": chunk["error"]["message"], "latency": time.monotonic() - start}
                if first is None and any(c.get("delta", {}).get("content") for c in chunk.get("choices", [])):
                    first = time.monotonic() - start
                if chunk.get("usage"):
                    usage = chunk["usage"]
        except OSError as e:
            return {"ok": False, "error": str(e), "latency": time.monotonic() - start}
        finally:
            conn.close()
        return {
            "ok": True,
            "latency": time.monotonic() - start,
            "first_token": first,
            "tokens": usage["completion_tokens"],
            "cached": usage["prompt_tokens_details"]["cached_tokens"] > 0,
        }

    def client(self):
        while (i := self.take()) is not None:
            r = self.one(i)
            with self.lock:
                self.results.append(r)

    def metric(self, name):
        conn = http.client.HTTPConnection(self.host, self.port, timeout=60)
        conn.request("GET", "/metrics", headers=self.headers())
        text = conn.getresponse().read().decode()
        m = re.search(rf"^{name} (\S+)$", text, re.M)
        return float(m.group(1)) if m else float("nan")

    def run(self):
        batch0 = self.metric("vocollama_decode_batch_max")
        tokens0 = self.metric("vocollama_decode_step_tokens_total")
        seconds0 = self.metric("vocollama_decode_step_seconds_total")
        start = time.monotonic()
        threads = [threading.Thread(target=self.client) for _ in range(self.args.clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.monotonic() - start
        step_tokens = self.metric("vocollama_decode_step_tokens_total") - tokens0
        step_seconds = self.metric("vocollama_decode_step_seconds_total") - seconds0
        ok = [r for r in self.results if r["ok"]]
        tokens = sum(r["tokens"] for r in ok)
        lat = [r["latency"] for r in ok]
        ttft = [r["first_token"] for r in ok if r["first_token"] is not None]
        return {
            "clients": self.args.clients,
            "requests": len(self.results),
            "errors": len(self.results) - len(ok),
            "error_examples": [r["error"] for r in self.results if not r["ok"]][:3],
            "seconds": wall,
            "completion_tokens": tokens,
            "tokens_per_second": tokens / wall if wall > 0 else 0.0,
            "requests_per_second": len(ok) / wall if wall > 0 else 0.0,
            "decode_tokens_per_second": step_tokens / step_seconds if step_seconds > 0 else 0.0,
            "decode_seconds": step_seconds,
            "latency_p50_s": percentile(lat, 0.5),
            "latency_p99_s": percentile(lat, 0.99),
            "first_token_p50_s": percentile(ttft, 0.5),
            "first_token_p99_s": percentile(ttft, 0.99),
            "store_hit_rate": (sum(r["cached"] for r in ok) / len(ok)) if ok else 0.0,
            "mean_tokens_per_request": statistics.mean([r["tokens"] for r in ok]) if ok else 0.0,
            "decode_batch_max": max(batch0, self.metric("vocollama_decode_batch_max")),
        }


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", default="http://127.0.0.1:8080")
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--requests", type=int, default=64, help="requests in all, at most")
    p.add_argument("--duration", type=float, default=600, help="seconds; no request starts after this")
    p.add_argument("--images", nargs="+", default=["assets/demo/images"])
    p.add_argument("--same-image", action="store_true")
    p.add_argument("--max-tokens", type=int, default=32)
    p.add_argument("--api-key")
    p.add_argument("--json", help="also write the report here")
    args = p.parse_args()
    if args.clients < 1 or args.requests < 1 or args.max_tokens < 1:
        raise SystemExit("load_serve: --clients, --requests and --max-tokens must be at least 1")
    report = Load(args).run()
    for k, v in report.items():
        print(f"{k:26} {v:.3f}" if isinstance(v, float) else f"{k:26} {v}")
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
