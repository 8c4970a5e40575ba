#!/usr/bin/env python3
"""Compare the Rust CLI's embeddings with HF transformers on the same inputs.

    python scripts/compare_cli.py --model tests/fixtures/tiny-224 --binary target/release/altclip \\
        --image tests/fixtures/images/photo.png --image tests/fixtures/images/rgba.png \\
        --text "一只在草地上的猫" --text "a photo of a cat"

Runs ``BINARY embed --model DIR --raw --image I1 --image I2 ... --text T1 --text T2 ...``, which must
print JSON Lines ``{"kind": "image"|"text", "input": ..., "embedding": [...]}`` (images first, then
texts, in argument order), and computes the same embeddings with transformers:

* model: ``AltCLIPModel.from_pretrained(DIR)`` in fp32, eval mode;
* images: ``Image.open`` + ``ImageOps.exif_transpose``, the PIL-backend CLIPImageProcessor of DIR
  (asserted: not torchvision), one image at a time -> ``get_image_features``;
* texts: the XLMRobertaTokenizer of DIR, ``padding=True, truncation=True, max_length=77``
  (``--max-length``) -> ``get_text_features``.

``--raw`` embeddings are the unnormalised projected features; with ``--normalized`` the ``--raw`` flag
is not passed and both sides are L2-normalised.  Prints the cosine similarity and max |delta| per
input and the worst values; exit status 1 if any cosine < --min-cos (0.99999) or max |delta| > --atol
(1e-4), 2 if the binary fails or its output does not match the inputs.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np


def run_binary(args) -> list[dict]:
    cmd = [str(args.binary), "embed", "--model", str(args.model)]
    if not args.normalized:
        cmd.append("--raw")
    if args.max_length is not None:
        cmd += ["--max-length", str(args.max_length)]
    for im in args.image:
        cmd += [f"--image={im}"] if str(im).startswith("-") else ["--image", str(im)]
    for t in args.text:
        cmd += [f"--text={t}"] if t.startswith("-") else ["--text", t]
    cmd += args.extra
    print("running:", " ".join(json.dumps(c, ensure_ascii=False) if " " in c or not c else c for c in cmd),
          file=sys.stderr)
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        print(proc.stdout, end="")
        print(proc.stderr, end="", file=sys.stderr)
        print(f"binary exited with status {proc.returncode}", file=sys.stderr)
        sys.exit(2)
    rows = []
    for line in proc.stdout.splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            print(f"not JSON: {line[:200]}", file=sys.stderr)
            sys.exit(2)
    return rows


def reference(args) -> list[tuple[str, str, np.ndarray]]:
    import torch
    import transformers
    from PIL import Image, ImageOps
    from transformers import AltCLIPModel, AltCLIPProcessor, AutoImageProcessor, XLMRobertaTokenizer
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    model = AltCLIPModel.from_pretrained(args.model, dtype=torch.float32).eval()
    image_processor = AutoImageProcessor.from_pretrained(args.model, backend="pil")
    assert isinstance(image_processor, CLIPImageProcessorPil) and image_processor.backend == "pil", type(image_processor)
    tokenizer = XLMRobertaTokenizer.from_pretrained(args.model)
    proc = AltCLIPProcessor(image_processor=image_processor, tokenizer=tokenizer)
    max_length = 77 if args.max_length is None else args.max_length

    out = []
    with torch.no_grad():
        for im in args.image:
            img = ImageOps.exif_transpose(Image.open(im))
            pv = proc(images=img, return_tensors="pt")["pixel_values"]
            out.append(("image", str(im), model.get_image_features(pixel_values=pv).pooler_output[0].numpy()))
        if args.text:
            enc = proc(text=list(args.text), padding=True, truncation=True, max_length=max_length, return_tensors="pt")
            feats = model.get_text_features(**enc).pooler_output.numpy()
            out += [("text", t, f) for t, f in zip(args.text, feats)]
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, type=Path)
    ap.add_argument("--binary", required=True, type=Path)
    ap.add_argument("--image", action="append", default=[], type=Path, help="repeatable")
    ap.add_argument("--text", action="append", default=[], help="repeatable")
    ap.add_argument("--max-length", type=int, default=None,
                    help="passed to the binary and used for the reference (default: reference 77, binary default)")
    ap.add_argument("--normalized", action="store_true", help="compare L2-normalised embeddings (no --raw)")
    ap.add_argument("--min-cos", type=float, default=0.99999)
    ap.add_argument("--atol", type=float, default=1e-4)
    ap.add_argument("--extra", action="append", default=[], help="extra argument for the binary (repeatable)")
    args = ap.parse_args()
    if not args.image and not args.text:
        ap.error("give at least one --image or --text")

    rows = run_binary(args)
    ref = reference(args)
    if len(rows) != len(ref):
        print(f"binary printed {len(rows)} embeddings, expected {len(ref)}", file=sys.stderr)
        return 2

    worst_cos, worst_abs, failed = 1.0, 0.0, False
    print(f"{'kind':5} {'cosine':>12} {'max|d|':>11} {'|ref|':>9}  input")
    for row, (kind, inp, r) in zip(rows, ref):
        if row.get("kind") != kind:
            print(f"kind mismatch: binary {row.get('kind')!r} vs expected {kind!r} for {inp!r}", file=sys.stderr)
            return 2
        got = np.asarray(row["embedding"], dtype=np.float64)
        exp = r.astype(np.float64)
        if args.normalized:
            exp = exp / np.linalg.norm(exp)
        if got.shape != exp.shape:
            print(f"shape mismatch for {inp!r}: binary {got.shape} vs reference {exp.shape}", file=sys.stderr)
            return 2
        cos = float(got @ exp / (np.linalg.norm(got) * np.linalg.norm(exp)))
        dmax = float(np.abs(got - exp).max())
        bad = cos < args.min_cos or dmax > args.atol
        failed |= bad
        worst_cos, worst_abs = min(worst_cos, cos), max(worst_abs, dmax)
        shown = inp if kind == "image" else json.dumps(inp, ensure_ascii=False)
        if len(shown) > 70:
            shown = shown[:67] + "..."
        print(f"{kind:5} {cos:12.9f} {dmax:11.3e} {np.linalg.norm(exp):9.4f}  {shown}{'  <-- FAIL' if bad else ''}")
    print(f"worst cosine {worst_cos:.9f}  worst max|d| {worst_abs:.3e}  "
          f"(thresholds: cosine >= {args.min_cos}, max|d| <= {args.atol})")
    print("FAIL" if failed else "OK")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
