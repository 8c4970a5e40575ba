#!/usr/bin/env python3
"""Side-by-side speed of `altclip bench` and transformers' AltCLIPModel, interleaved.

    python bench/compare_pytorch.py --model /tmp/altclip-full --make-model      # creates it once (~3.5 GB)
    python bench/compare_pytorch.py --model /tmp/altclip-full --dtype bf16 --rounds 2

Both sides load the same weights and run the same shapes (random inputs: cost does not depend on
values) with the same thread count. For every round and case, our binary runs the case in a fresh
process (`altclip bench ... --json`, load not timed), then PyTorch runs it in this process; the
per-side figure is the median over rounds of each run's median. Prints one row per case with the
ratio ours/PyTorch in items/s, and, for ours, the time from process start to the first text
embedding (measured first, before PyTorch starts: one untimed run to fill the page cache, then the
median of three) and the peak RSS against the weight bytes.

PyTorch side: fp32 `get_image_features(pixel_values)` / `get_text_features(input_ids,
attention_mask)` under `torch.inference_mode()`; `--dtype bf16` wraps them in
`torch.autocast("cpu", dtype=torch.bfloat16)` (what a PyTorch user does on CPU). Ours: the same
dtype via `--dtype`. Run it on an otherwise idle machine: a concurrent build halves the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

DEFAULT_CASES = "image:1,image:8,text:1x16,text:32x16,text:8x77"


def parse_cases(spec: str) -> list[tuple[str, int, int]]:
    """`image:B` and `text:BxL` items -> (kind, batch, length)."""
    cases = []
    for item in spec.split(","):
        kind, _, shape = item.strip().partition(":")
        if kind == "image":
            cases.append(("image", int(shape), 0))
        elif kind == "text":
            b, _, l = shape.partition("x")
            cases.append(("text", int(b), int(l)))
        else:
            sys.exit(f"--cases {item!r}: expected image:B or text:BxL")
    return cases


def case_name(kind: str, batch: int, length: int, dtype: str) -> str:
    return f"image_{dtype}_b{batch}" if kind == "image" else f"text_{dtype}_b{batch}_L{length}"


def ours(args, kind: str, batch: int, length: int) -> dict:
    cmd = [
        str(args.binary), "bench", "--model", str(args.model), "--dtype", args.dtype,
        "--reps", str(args.reps), "--warmup", "1", "--json",
        "--image-batch", str(batch if kind == "image" else 0),
        "--text-batch", str(batch if kind == "text" else 0),
        "--text-len", str(max(length, 2)),
    ]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env(args)).stdout
    lines = [json.loads(l) for l in out.splitlines() if l.strip()]
    want = case_name(kind, batch, length, args.dtype)
    row = next(l for l in lines if l["what"] == want)
    row["peak_rss_mb"] = next(l["value"] for l in lines if l["what"] == "peak_rss_mb")
    row["linear_layers"] = next((l["linear_layers"] for l in lines if l["what"] == "engine"), "?")
    return row


def env(args) -> dict:
    e = dict(os.environ)
    e["RAYON_NUM_THREADS"] = str(args.threads)
    e.pop("ALTCLIP_MODEL", None)
    return e


def first_embedding_s(args) -> float:
    """Wall time of `altclip embed --text`: process start to the first embedding printed."""
    start = time.perf_counter()
    subprocess.run(
        [str(args.binary), "embed", "--model", str(args.model), "--text", "一只猫", "--dtype", args.dtype],
        check=True, capture_output=True, env=env(args),
    )
    return time.perf_counter() - start


class Torch:
    def __init__(self, args):
        import torch
        from transformers import AltCLIPModel

        torch.set_num_threads(args.threads)
        self.torch = torch
        self.model = AltCLIPModel.from_pretrained(str(args.model), dtype=torch.float32).eval()
        self.cfg = self.model.config
        self.args = args

    def run(self, kind: str, batch: int, length: int) -> dict:
        torch = self.torch
        g = torch.Generator().manual_seed(batch * 1000 + length)
        if kind == "image":
            side = self.cfg.vision_config.image_size
            x = torch.rand(batch, 3, side, side, generator=g) * 4 - 2
            fn = lambda: self.model.get_image_features(pixel_values=x)
        else:
            t = self.cfg.text_config
            ids = torch.randint(5, t.vocab_size - 1, (batch, length), generator=g)
            ids[:, 0], ids[:, -1] = t.bos_token_id, t.eos_token_id
            mask = torch.ones_like(ids)
            fn = lambda: self.model.get_text_features(input_ids=ids, attention_mask=mask)
        times = []
        for i in range(self.args.reps + 1):
            start = time.perf_counter()
            with torch.inference_mode():
                if self.args.dtype == "bf16":
                    with torch.autocast("cpu", dtype=torch.bfloat16):
                        fn()
                else:
                    fn()
            if i > 0:  # the first is warm-up
                times.append(time.perf_counter() - start)
        med = statistics.median(times)
        return {"items_per_s": batch / med, "median_s": med}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=Path, required=True, help="model directory (Hugging Face layout)")
    p.add_argument("--make-model", action="store_true",
                   help="create a full-size random BAAI/AltCLIP-shaped model at --model if it is missing")
    p.add_argument("--binary", type=Path, default=ROOT / "target/release/altclip",
                   help="our binary (default: target/release/altclip; build with cargo build --release)")
    p.add_argument("--dtype", choices=["f32", "bf16"], default="f32")
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--cases", default=DEFAULT_CASES, help=f"comma-separated (default {DEFAULT_CASES})")
    p.add_argument("--rounds", type=int, default=2, help="interleaved rounds per case")
    p.add_argument("--reps", type=int, default=3, help="timed forward passes per run")
    p.add_argument("--json", action="store_true", help="print JSON lines instead of a table")
    args = p.parse_args()

    if not (args.model / "config.json").is_file():
        if not args.make_model:
            sys.exit(f"{args.model}: no config.json; pass --make-model to create a random full-size model there")
        subprocess.run([sys.executable, str(ROOT / "scripts/make_random_model.py"), "--full-size",
                        "--seed", "0", "--out", str(args.model)], check=True)
    if not args.binary.is_file():
        sys.exit(f"{args.binary}: not found; run `cargo build --release -p altclip-cli` first")

    # Before PyTorch starts, so that its idle OpenMP threads and its copy of
    # the weights do not weigh on the measurement: one untimed run brings the
    # file into the page cache (disk speed is not ours), then the median of 3.
    cold = first_embedding_s(args)
    first = statistics.median(first_embedding_s(args) for _ in range(3))

    torch_side = Torch(args)
    rows = []
    for kind, batch, length in parse_cases(args.cases):
        mine, theirs, rss, engine = [], [], 0.0, "?"
        for _ in range(args.rounds):
            o = ours(args, kind, batch, length)
            mine.append(o["items_per_s"])
            rss = max(rss, o["peak_rss_mb"])
            engine = o["linear_layers"]
            theirs.append(torch_side.run(kind, batch, length)["items_per_s"])
        a, b = statistics.median(mine), statistics.median(theirs)
        rows.append({"what": case_name(kind, batch, length, args.dtype), "ours_items_per_s": a,
                     "pytorch_items_per_s": b, "ratio": a / b, "ours_peak_rss_mb": rss,
                     "ours_linear_layers": engine})
        if args.json:
            print(json.dumps(rows[-1]), flush=True)
        else:
            print(f"{rows[-1]['what']:<22} ours {a:8.2f}/s  pytorch {b:8.2f}/s  ratio {a / b:5.2f}x", flush=True)

    weights = sum(f.stat().st_size for f in args.model.glob("*.safetensors")) / 2**20
    rss = max(r["ours_peak_rss_mb"] for r in rows)
    engine = rows[-1]["ours_linear_layers"]
    summary = {"what": "summary", "threads": args.threads, "dtype": args.dtype,
               "first_embedding_s": first, "first_embedding_uncached_s": cold, "ours_peak_rss_mb": rss, "weights_mb": weights,
               "rss_over_weights": rss / weights if weights else None, "ours_linear_layers": engine}
    if args.json:
        print(json.dumps(summary))
    else:
        print(f"process start to first text embedding: {first:.2f} s with the weights in the page cache "
              f"(first run: {cold:.2f} s); peak RSS {rss:.0f} MB = "
              f"{rss / weights:.2f} x weights ({weights:.0f} MB); {args.threads} threads; linear layers: {engine}")


if __name__ == "__main__":
    main()
