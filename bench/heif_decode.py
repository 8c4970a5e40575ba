#!/usr/bin/env python3
"""HEIC and AVIF decode time against Pillow (pillow-heif; Pillow's AVIF plugin), in one run.

    pip install pillow==13.0.0 numpy==2.4.6 pillow-heif==1.8.1
    cargo build --release -p altclip --example decode_rate --features avif
    python bench/heif_decode.py [--size 4032x3024] [--reps 5]

Writes a photo-like picture (gradients, edges and noise) of the given size as HEIC (pillow-heif,
quality 90) and AVIF (Pillow, quality 90) into a temporary directory, then times the median of
`--reps` decodes of each file to RGB: Pillow's `Image.open(...).convert("RGB")`, and ours through
`examples/decode_rate.rs` (the engine's `decode_rgb`, what the indexer runs per file). Both sides
use their decoders' default threads. Run it on an idle machine.
"""

import argparse
import re
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import pillow_heif
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "target/release/examples/decode_rate"


def picture(width: int, height: int) -> Image.Image:
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    rgb = np.stack([128 + 90 * np.sin(x / (97 + 31 * i) + y / (71 + 17 * i)) for i in range(3)], -1)
    rgb[(x.astype(int) // 256 + y.astype(int) // 256) % 2 == 0] *= 0.7  # edges
    rgb += rng.normal(0, 6, rgb.shape).astype(np.float32)
    return Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8), "RGB")


def pillow_ms(path: Path, reps: int) -> float:
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        Image.open(path).convert("RGB")
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1e3


def ours_ms(path: Path, reps: int) -> float:
    out = subprocess.run([str(EXAMPLE), str(path), str(reps)], check=True, capture_output=True, text=True).stdout
    return float(re.search(r"decode ([0-9.]+) ms", out).group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", default="4032x3024")
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args()
    width, height = map(int, args.size.split("x"))
    pillow_heif.register_heif_opener()
    cpu = next(l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name"))
    print(f"CPU: {cpu}; {width}x{height}; median of {args.reps}")
    with tempfile.TemporaryDirectory() as tmp:
        src = picture(width, height)
        for ext in ["heic", "avif"]:
            path = Path(tmp) / f"photo.{ext}"
            src.save(path, quality=90)
            theirs, ours = pillow_ms(path, args.reps), ours_ms(path, args.reps)
            print(f"{ext}: {path.stat().st_size / 1e6:.1f} MB; Pillow {theirs:.0f} ms, ours {ours:.0f} ms, "
                  f"Pillow / ours {theirs / ours:.2f}x")


if __name__ == "__main__":
    main()
