#!/usr/bin/env python3
"""PyTorch throughput of the distillation step `altclip train distill` runs, for comparison.

    python scripts/bench_train_torch.py --teacher T --student S --data parallel.tsv \
        --batch-size 8 --steps 5 [--threads 2] [--device cpu|cuda]

Same step as the Rust trainer: teacher targets computed first (not timed); each step feeds the
batch's English sentences and their translations to the student's text tower (transformers
AltCLIPModel, dropout off), MSE against the teacher's pooled embedding of the English side,
clip_grad_norm_(1.0), AdamW (weight decay on rank >= 2). Prints one JSON line with the mean
pairs/s over the steps after the first (the first one warms up allocators and kernels).
"""

from __future__ import annotations

import argparse
import json
import time

import torch
from transformers import AltCLIPModel, AutoTokenizer, CLIPModel, CLIPTextModelWithProjection, CLIPTokenizer


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--teacher", required=True)
    ap.add_argument("--student", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0: leave)")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    dev = torch.device(args.device)
    pairs = [line.rstrip("\n").split("\t") for line in open(args.data, encoding="utf-8") if line.strip()]

    cfg = json.load(open(f"{args.teacher}/config.json"))
    cls = CLIPModel if cfg.get("model_type") == "clip" else CLIPTextModelWithProjection
    teacher = cls.from_pretrained(args.teacher).to(dev).eval()
    ttok = CLIPTokenizer.from_pretrained(args.teacher)
    text_model = teacher.text_model
    with torch.no_grad():
        enc = ttok([p[0] for p in pairs], padding=True, truncation=True, max_length=77, return_tensors="pt").to(dev)
        targets = text_model(**enc).pooler_output
    del teacher, text_model

    student = AltCLIPModel.from_pretrained(args.student, attn_implementation="eager").to(dev).eval()
    stok = AutoTokenizer.from_pretrained(args.student)
    for p in student.parameters():
        p.requires_grad_(False)
    named = [(n, p) for n, p in student.named_parameters() if n.startswith("text_model.")]
    for _, p in named:
        p.requires_grad_(True)
    opt = torch.optim.AdamW(
        [{"params": [p for _, p in named if p.ndim >= 2], "weight_decay": 0.1},
         {"params": [p for _, p in named if p.ndim < 2], "weight_decay": 0.0}], lr=1e-4)
    bs = args.batch_size
    times = []
    for step in range(args.steps):
        idx = [(step * bs + i) % len(pairs) for i in range(bs)]
        texts = [pairs[i][0] for i in idx] + [pairs[i][1] for i in idx]
        if dev.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        enc = stok(texts, padding=True, truncation=True, max_length=77, return_tensors="pt").to(dev)
        out = student.text_model(**enc).pooler_output
        loss = torch.nn.functional.mse_loss(out, targets[idx + idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for _, p in named], 1.0)
        opt.step()
        if dev.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    timed = times[1:] or times
    print(json.dumps({
        "device": str(dev), "threads": torch.get_num_threads(), "batch_size": bs, "steps": args.steps,
        "step_seconds": [round(t, 3) for t in times], "pairs_per_s": bs * len(timed) / sum(timed),
        "torch": torch.__version__,
    }))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
