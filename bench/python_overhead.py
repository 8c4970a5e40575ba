"""Python overhead of the `altclip` package against the Rust API, in one run on one machine.

Times `AltCLIP.embed_images` on a batch of image files (8 by default) and `embed_texts` on a
batch of texts (32), against the same calls in Rust (crates/altclip/examples/embed_rate.rs:
decode and preprocess on rayon's workers, then the model; the texts are the same strings).
Rounds alternate Rust and Python; each side reports its median over all rounds.

    cargo build --release -p altclip --example embed_rate
    pip install ./crates/altclip-python pillow
    python bench/python_overhead.py --model /tmp/altclip-full

Run it on an idle machine: nothing else building or running.
"""
import argparse
import json
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

import altclip

ROOT = Path(__file__).resolve().parent.parent


def texts(n: int):
    # The strings embed_rate.rs makes.
    return [f"第{i}张照片：a photo of a cat on the grass, number {i}" for i in range(n)]


def photos(out: Path, n: int, size=(1600, 1200)):
    from PIL import Image

    rng = np.random.default_rng(0)
    w, h = size
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    paths = []
    for i in range(n):
        rgb = np.stack([128 + 100 * np.sin(x / (40 + i)), 128 + 90 * np.cos((x + y) / 60), 60 + 0 * x], -1)
        rgb += rng.normal(0, 8, rgb.shape).astype(np.float32)
        path = out / f"photo{i}.jpg"
        Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8)).save(path, quality=90)
        paths.append(str(path))
    return paths


def python_side(model, paths, batch, reps):
    def timed(fn):
        fn()  # warm-up
        out = []
        for _ in range(reps):
            t = time.perf_counter()
            fn()
            out.append(time.perf_counter() - t)
        return out

    return {
        "images": timed(lambda: model.embed_images(paths, batch_size=len(paths))),
        "texts": timed(lambda: model.embed_texts(batch, batch_size=len(batch))),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True)
    p.add_argument("--images", type=int, default=8, help="images per batch")
    p.add_argument("--texts", type=int, default=32, help="texts per batch")
    p.add_argument("--reps", type=int, default=3, help="timed calls per side per round")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--rust", default=str(ROOT / "target/release/examples/embed_rate"))
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        paths = photos(Path(tmp), args.images)
        batch = texts(args.texts)
        model = altclip.AltCLIP(args.model)
        times = {"rust": {"images": [], "texts": []}, "python": {"images": [], "texts": []}}
        for _ in range(args.rounds):
            out = subprocess.run([args.rust, args.model, str(args.reps), str(args.texts), *paths], check=True,
                                 capture_output=True, text=True).stdout
            for k, v in json.loads(out).items():
                times["rust"][k] += v
            for k, v in python_side(model, paths, batch, args.reps).items():
                times["python"][k] += v
    for case, label in [("images", f"{args.images} image files"), ("texts", f"{args.texts} texts")]:
        rust = statistics.median(times["rust"][case])
        py = statistics.median(times["python"][case])
        print(f"{label}: Rust {rust * 1e3:.1f} ms, Python {py * 1e3:.1f} ms, "
              f"overhead {100 * (py / rust - 1):+.2f}% (medians of {len(times['rust'][case])})")


if __name__ == "__main__":
    main()
